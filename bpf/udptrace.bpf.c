// SPDX-License-Identifier: GPL-2.0
/*
 * udptrace's BPF programs. Three backends share everything but the hooks that
 * see sends and receives: the length tracepoints (Linux 6.3+), fexit on
 * udp_sendmsg/udp_recvmsg and their IPv6 twins (BPF trampolines), or kprobes
 * on the same functions. Packet events come from the kernel's IP transmit and
 * UDP enqueue functions, or from cgroup_skb hooks; drops from the kfree_skb
 * tracepoint. Every event goes to its CPU's ring buffer, or, for `udptrace count`,
 * into an in-kernel table instead.
 *
 * Sends and receives come from the sock_send_length / sock_recv_length
 * tracepoints, which fire once per datagram after the protocol's sendmsg or
 * recvmsg returns. They give the socket but not the peer of an unconnected
 * send or receive: the cgroup sock_addr hooks, which run earlier in the same
 * thread with that address, leave it in `peer_by_tid` for them. Connects are
 * seen by the connect4/6 hooks, which run before the kernel binds and routes
 * the socket; the event is completed at the socket's next send, receive or
 * close, when the socket holds the addresses the kernel chose. (A hook on
 * syscall exit would see them sooner, but enabling it puts every syscall of
 * every task on the kernel's slow path: a third of a UDP flood's throughput.)
 * Closes come from cgroup/sock_release.
 *
 * This file holds the programs, by what they trace and by backend; the code
 * they share is in the headers below, one concern each.
 */

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "udptrace.h"
#include "args.h"
#include "task.h"
#include "addrs.h"
#include "filter.h"
#include "emit.h"
#include "sock_state.h"
#include "peer.h"
#include "connect.h"
#include "sender.h"
#include "datagram.h"
#include "packet.h"
#include "drop_cause.h"

char LICENSE[] SEC("license") = "GPL";

/* Sends and receives: the programs of each backend. */

/*
 * Tracepoint backend (Linux 6.3+): the length tracepoints of every socket.
 * They also stand in for a function the fentry or kprobe backend cannot hook
 * on this kernel, for that function's family only.
 */

/*
 * Sockets the length tracepoints report, by family (enum family_bit): all for
 * the tracepoint backend; for fentry and kprobe, those whose function this
 * kernel lacks.
 */
const volatile __u8 tp_send_families = FAMILY_BIT_V4 | FAMILY_BIT_V6;
const volatile __u8 tp_recv_families = FAMILY_BIT_V4 | FAMILY_BIT_V6;

static __always_inline bool udp_of_families(struct sock *sk, __u8 families)
{
	__u16 family = sk->__sk_common.skc_family;

	return sk->sk_protocol == IPPROTO_UDP &&
	       ((family == AF_INET && (families & FAMILY_BIT_V4)) ||
	        (family == AF_INET6 && (families & FAMILY_BIT_V6)));
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(tp_send_length, struct sock *sk, int ret, int flags)
{
	if (!udp_of_families(sk, tp_send_families))
		return 0;
	return on_datagram(sk, ret, UDP_EVENT_SEND, 0);
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(tp_recv_length, struct sock *sk, int ret, int flags)
{
	if (!udp_of_families(sk, tp_recv_families))
		return 0;
	return on_recv(sk, ret, flags);
}

/*
 * Where the hooked functions' arguments are on this kernel (bpf/args.h),
 * written from its BTF before load; these defaults are Linux 6.1's.
 */
const volatile struct fn_args udp_sendmsg_args = { .sk = 0, .ret = 3 };
const volatile struct fn_args udpv6_sendmsg_args = { .sk = 0, .ret = 3 };
const volatile struct fn_args udp_recvmsg_args = { .sk = 0, .flags = 3, .ret = 5 };
const volatile struct fn_args udpv6_recvmsg_args = { .sk = 0, .flags = 3, .ret = 5 };
const volatile struct fn_args skb_consume_udp_args = { .sk = 0, .skb = 1, .len = 2 };
const volatile struct fn_args ip_send_skb_args = { .skb = 1 };
const volatile struct fn_args ip6_send_skb_args = { .skb = 0 };
const volatile struct fn_args udp_enqueue_args = { .sk = 0, .skb = 1 };
const volatile struct fn_args icmp_send_args = { .skb = 0, .icmp_type = 1, .icmp_code = 2 };
const volatile struct fn_args icmp6_send_args = { .skb = 0, .icmp_type = 1, .icmp_code = 2 };
const volatile struct fn_args checksum_complete_args = { .skb = 0, .ret = 1 };

/*
 * fentry backend: fexit on the protocol's own functions, with their result.
 * An IPv6 socket sending to an IPv4-mapped peer passes udpv6_sendmsg and then
 * udp_sendmsg: each function counts only sockets of its own family, so such a
 * send is counted once.
 */
static __always_inline bool is_udp_of(struct sock *sk, __u16 family)
{
	return sk->sk_protocol == IPPROTO_UDP && sk->__sk_common.skc_family == family;
}

SEC("fexit/udp_sendmsg")
int fexit_udp_sendmsg(void *ctx)
{
	struct sock *sk = (struct sock *)fn_arg(ctx, udp_sendmsg_args.sk);

	if (!is_udp_of(sk, AF_INET))
		return 0;
	return on_datagram(sk, (int)fn_arg(ctx, udp_sendmsg_args.ret), UDP_EVENT_SEND, 0);
}

SEC("fexit/udpv6_sendmsg")
int fexit_udpv6_sendmsg(void *ctx)
{
	struct sock *sk = (struct sock *)fn_arg(ctx, udpv6_sendmsg_args.sk);

	if (!is_udp_of(sk, AF_INET6))
		return 0;
	return on_datagram(sk, (int)fn_arg(ctx, udpv6_sendmsg_args.ret), UDP_EVENT_SEND, 0);
}

SEC("fexit/udp_recvmsg")
int fexit_udp_recvmsg(void *ctx)
{
	struct sock *sk = (struct sock *)fn_arg(ctx, udp_recvmsg_args.sk);

	if (!is_udp_of(sk, AF_INET))
		return 0;
	return on_recv(sk, (int)fn_arg(ctx, udp_recvmsg_args.ret),
		       (int)fn_arg(ctx, udp_recvmsg_args.flags));
}

SEC("fexit/udpv6_recvmsg")
int fexit_udpv6_recvmsg(void *ctx)
{
	struct sock *sk = (struct sock *)fn_arg(ctx, udpv6_recvmsg_args.sk);

	if (!is_udp_of(sk, AF_INET6))
		return 0;
	return on_recv(sk, (int)fn_arg(ctx, udpv6_recvmsg_args.ret),
		       (int)fn_arg(ctx, udpv6_recvmsg_args.flags));
}

/* The datagram each receive hands over, for its sender (sender.h). */
SEC("fentry/skb_consume_udp")
int fentry_skb_consume_udp(void *ctx)
{
	struct sock *sk = (struct sock *)fn_arg(ctx, skb_consume_udp_args.sk);
	struct sk_buff *skb = (struct sk_buff *)fn_arg(ctx, skb_consume_udp_args.skb);

	if (sk->sk_protocol != IPPROTO_UDP)
		return 0;
	note_dequeued_sender(sock_cookie(sk, true), skb,
			     (int)fn_arg(ctx, skb_consume_udp_args.len));
	return 0;
}

/*
 * kprobe backend: the same functions through kprobes, for kernels without BPF
 * trampolines. The entry probe keeps the arguments for the return probe, per
 * thread and function (udpv6_sendmsg calls udp_sendmsg for IPv4-mapped peers).
 */
enum { FN_UDP_SEND = 1, FN_UDP6_SEND, FN_UDP_RECV, FN_UDP6_RECV, FN_CHECKSUM, FN_ENQUEUE };

struct call_args {
	struct sock *sk;
	struct sk_buff *skb;
	int flags;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64); /* function << 32 | tid */
	__type(value, struct call_args);
} args_by_call SEC(".maps");

static __always_inline __u64 call_key(__u32 fn)
{
	return ((__u64)fn << 32) | (__u32)bpf_get_current_pid_tgid();
}

/*
 * A call's datagram and socket, for its return probe: by thread, or by CPU
 * in a softirq on an idle CPU (thread 0 on every CPU).
 */
static __always_inline __u64 call_key_of(__u32 fn)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();

	return ((__u64)fn << 32) | (tid ? tid : 0x80000000 | bpf_get_smp_processor_id());
}

static __always_inline void enter_with(__u32 fn, struct sock *sk, __u64 skb)
{
	struct call_args args = { .sk = sk, .skb = (struct sk_buff *)skb };
	__u64 key = call_key_of(fn);

	bpf_map_update_elem(&args_by_call, &key, &args, BPF_ANY);
}

/* The arguments entry left for this return (taken), or false. */
static __always_inline bool leave_with(__u32 fn, struct call_args *out)
{
	__u64 key = call_key_of(fn);
	struct call_args *args = bpf_map_lookup_elem(&args_by_call, &key);

	if (!args)
		return false;
	*out = *args;
	bpf_map_delete_elem(&args_by_call, &key);
	return true;
}

static __always_inline int enter(__u32 fn, struct sock *sk, int flags, __u16 family)
{
	struct call_args args = { .sk = sk, .flags = flags };
	__u64 key = call_key(fn);

	if (BPF_CORE_READ(sk, sk_protocol) != IPPROTO_UDP ||
	    BPF_CORE_READ(sk, __sk_common.skc_family) != family)
		return 0;
	/*
	 * This thread's previous call whose return probe never ran may have been
	 * an event; a call whose return cannot be followed is a lost one, if
	 * selected.
	 */
	if (bpf_map_lookup_elem(&args_by_call, &key) && task_wanted(bpf_get_current_pid_tgid()))
		stat_inc(UDP_STAT_RETURN_MISSED);
	if (bpf_map_update_elem(&args_by_call, &key, &args, BPF_ANY) &&
	    task_wanted(bpf_get_current_pid_tgid()))
		stat_inc(UDP_STAT_LOST);
	return 0;
}

static __always_inline int leave(__u32 fn, int ret)
{
	__u64 key = call_key(fn);
	struct call_args *args = bpf_map_lookup_elem(&args_by_call, &key);
	__u8 kind = UDP_EVENT_SEND;
	struct call_args a;

	if (!args)
		return 0;
	a = *args;
	bpf_map_delete_elem(&args_by_call, &key);
	/* One inlined copy of the datagram path: two would not fit the stack. */
	if (fn == FN_UDP_RECV || fn == FN_UDP6_RECV) {
		__u32 stat = recv_not_event(ret, a.flags);

		if (stat != UDP_STAT_MAX) {
			count_not_event(a.sk, stat, false);
			return 0;
		}
		kind = UDP_EVENT_RECV;
	}
	return on_datagram_of(a.sk, ret, kind, a.flags, false);
}

SEC("kprobe/udp_sendmsg")
int kp_udp_sendmsg(void *ctx)
{
	return enter(FN_UDP_SEND, (struct sock *)kprobe_arg(ctx, udp_sendmsg_args.sk), 0, AF_INET);
}

SEC("kretprobe/udp_sendmsg")
int BPF_KRETPROBE(krp_udp_sendmsg, int ret)
{
	return leave(FN_UDP_SEND, ret);
}

SEC("kprobe/udpv6_sendmsg")
int kp_udpv6_sendmsg(void *ctx)
{
	return enter(FN_UDP6_SEND, (struct sock *)kprobe_arg(ctx, udpv6_sendmsg_args.sk), 0,
		     AF_INET6);
}

SEC("kretprobe/udpv6_sendmsg")
int BPF_KRETPROBE(krp_udpv6_sendmsg, int ret)
{
	return leave(FN_UDP6_SEND, ret);
}

SEC("kprobe/udp_recvmsg")
int kp_udp_recvmsg(void *ctx)
{
	return enter(FN_UDP_RECV, (struct sock *)kprobe_arg(ctx, udp_recvmsg_args.sk),
		     (int)kprobe_arg(ctx, udp_recvmsg_args.flags), AF_INET);
}

SEC("kretprobe/udp_recvmsg")
int BPF_KRETPROBE(krp_udp_recvmsg, int ret)
{
	return leave(FN_UDP_RECV, ret);
}

SEC("kprobe/udpv6_recvmsg")
int kp_udpv6_recvmsg(void *ctx)
{
	return enter(FN_UDP6_RECV, (struct sock *)kprobe_arg(ctx, udpv6_recvmsg_args.sk),
		     (int)kprobe_arg(ctx, udpv6_recvmsg_args.flags), AF_INET6);
}

SEC("kretprobe/udpv6_recvmsg")
int BPF_KRETPROBE(krp_udpv6_recvmsg, int ret)
{
	return leave(FN_UDP6_RECV, ret);
}

SEC("kprobe/skb_consume_udp")
int kp_skb_consume_udp(void *ctx)
{
	struct sock *sk = (struct sock *)kprobe_arg(ctx, skb_consume_udp_args.sk);

	if (BPF_CORE_READ(sk, sk_protocol) != IPPROTO_UDP)
		return 0;
	note_dequeued_sender(probed_cookie(sk),
			     (struct sk_buff *)kprobe_arg(ctx, skb_consume_udp_args.skb),
			     (int)kprobe_arg(ctx, skb_consume_udp_args.len));
	return 0;
}

/* The cgroup hooks every backend shares: owners, peers, connects and closes. */

/*
 * A UDP socket is created: its creator owns it. This also gives the socket
 * its cookie now, which kprobes cannot ask for later, and is the one place
 * that knows the socket's queue from its start (attached after the hook that
 * notes queued datagrams).
 */
SEC("cgroup/sock_create")
int sock_create(struct bpf_sock *ctx)
{
	struct sock_state *st;
	__u64 cookie;

	if (ctx->protocol == IPPROTO_UDP) {
		cookie = bpf_get_socket_cookie(ctx);
		st = sock_state_of(cookie);
		if (st) {
			/* Sure, nothing pending, in an epoch of its own. */
			st->senders.word = SENDERS_EPOCH_ONE;
			st->life.from_creation = 1;
		}
	}
	return 1;
}

/*
 * The UDP sockets that exist as tracing starts, run over every network
 * namespace after every hook is attached (sockets created from then on meet
 * sock_create): each gets its cookie now, for hooks that can only read one
 * (kprobes) and for seed_owners.
 */
SEC("iter/udp")
int give_cookies(struct bpf_iter__udp *ctx)
{
	struct sock *sk = (struct sock *)ctx->udp_sk;

	if (sk && tracing_socket_cookie)
		bpf_get_socket_cookie(sk);
	return 0;
}

/* Iterators may ask for the socket of a file (Linux 5.11+). */
const volatile bool iter_sock_from_file = true;

#define S_IFMT 00170000
#define S_IFSOCK 0140000

/*
 * Then each of those sockets is owned by the first process found holding it.
 * The socket is reached through its file, a pointer that recent kernels no
 * longer let helpers take: its cookie, given above, is read, not asked for.
 */
SEC("iter/task_file")
int seed_owners(struct bpf_iter__task_file *ctx)
{
	struct task_struct *task = ctx->task;
	struct file *file = ctx->file;
	struct sock_state *st;
	struct socket *sock;
	struct sock *sk;
	__u64 cookie;

	if (!task || !file)
		return 0;
	if (iter_sock_from_file) {
		sock = bpf_sock_from_file(file);
		sk = sock ? sock->sk : NULL;
	} else {
		/* What sock_from_file() does: a socket's inode, its struct socket. */
		sock = (BPF_CORE_READ(file, f_inode, i_mode) & S_IFMT) == S_IFSOCK
			       ? BPF_CORE_READ(file, private_data)
			       : NULL;
		sk = sock ? BPF_CORE_READ(sock, sk) : NULL;
	}
	if (!sk || BPF_CORE_READ(sk, sk_protocol) != IPPROTO_UDP)
		return 0;
	cookie = BPF_CORE_READ(sk, __sk_common.skc_cookie.counter);
	if (!cookie)
		return 0; /* not in a namespace give_cookies ran in */
	st = new_sock_state_of(cookie);
	if (!st)
		return 0; /* known already, or the table is full */
	st->owner.pid_tgid = (__u64)task->tgid << 32 | (__u32)task->pid;
	read_task(task, &st->owner);
	return 0;
}

SEC("cgroup/sendmsg4")
int sendmsg4(struct bpf_sock_addr *ctx)
{
	return remember_peer(ctx, false);
}

SEC("cgroup/sendmsg6")
int sendmsg6(struct bpf_sock_addr *ctx)
{
	return remember_peer(ctx, true);
}

SEC("cgroup/recvmsg4")
int recvmsg4(struct bpf_sock_addr *ctx)
{
	return remember_peer(ctx, false);
}

SEC("cgroup/recvmsg6")
int recvmsg6(struct bpf_sock_addr *ctx)
{
	return remember_peer(ctx, true);
}

SEC("cgroup/connect4")
int connect4(struct bpf_sock_addr *ctx)
{
	return remember_connect(ctx, false);
}

SEC("cgroup/connect6")
int connect6(struct bpf_sock_addr *ctx)
{
	return remember_connect(ctx, true);
}

/*
 * The release hook's context may not read the socket's addresses, but it is
 * the struct sock itself, so read them through bpf_probe_read.
 */
SEC("cgroup/sock_release")
int sock_release(struct bpf_sock *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct sock_counters cnt = {};
	struct sock_life life = {};
	struct sock_state *st;
	struct sock_addrs a;
	__u64 cookie;

	if (ctx->protocol != IPPROTO_UDP || (ctx->family != AF_INET && ctx->family != AF_INET6))
		return 1;
	probe_sock_addrs((struct sock *)ctx, &a);
	cookie = bpf_get_socket_cookie(ctx);
	finish_connect(cookie, &a);
	st = bpf_map_lookup_elem(&sock_states, &cookie);
	if (st) {
		cnt = st->counters;
		life = st->life;
	}
	bpf_map_delete_elem(&sock_states, &cookie);
	if (kind_wanted(UDP_EVENT_CLOSE) && task_wanted(pid_tgid) && addrs_wanted(&a))
		emit_close(cookie, &a, &cnt, &life);
	return 1;
}

/* Packet events: the programs of each backend. */

/* fentry backend: the IP transmit functions UDP ends in, and UDP's enqueue. */
SEC("fentry/ip_send_skb")
int fentry_ip_send_skb(void *ctx)
{
	return on_transmit((struct sk_buff *)fn_arg(ctx, ip_send_skb_args.skb), true);
}

SEC("fentry/ip6_send_skb")
int fentry_ip6_send_skb(void *ctx)
{
	return on_transmit((struct sk_buff *)fn_arg(ctx, ip6_send_skb_args.skb), true);
}

SEC("fentry/__udp_enqueue_schedule_skb")
int fentry_udp_enqueue(void *ctx)
{
	return on_enqueue((struct sock *)fn_arg(ctx, udp_enqueue_args.sk),
			  (struct sk_buff *)fn_arg(ctx, udp_enqueue_args.skb), true);
}

/* kprobe backend: the same. */
SEC("kprobe/ip_send_skb")
int kp_ip_send_skb(void *ctx)
{
	return on_transmit((struct sk_buff *)kprobe_arg(ctx, ip_send_skb_args.skb), false);
}

SEC("kprobe/ip6_send_skb")
int kp_ip6_send_skb(void *ctx)
{
	return on_transmit((struct sk_buff *)kprobe_arg(ctx, ip6_send_skb_args.skb), false);
}

/* Where kfree_skb gives no reason: UDP's enqueue's arguments, for its return (drop_cause.h). */
const volatile bool note_refusals = false;

SEC("kprobe/__udp_enqueue_schedule_skb")
int kp_udp_enqueue(void *ctx)
{
	struct sock *sk = (struct sock *)kprobe_arg(ctx, udp_enqueue_args.sk);
	__u64 skb = kprobe_arg(ctx, udp_enqueue_args.skb);

	if (note_refusals)
		enter_with(FN_ENQUEUE, sk, skb);
	return on_enqueue(sk, (struct sk_buff *)skb, false);
}

/*
 * Tracepoint backend, and where the functions above are missing: cgroup_skb
 * hooks on the root cgroup. Egress sees a socket's datagram as IP hands it
 * to the device; ingress sees it as the socket filter runs, after UDP's
 * header, length and (for short datagrams) checksum checks.
 */
static __always_inline bool skb_of_udp_sock(struct __sk_buff *skb)
{
	struct bpf_sock *sk = skb->sk;

	if (!sk)
		return false;
	sk = bpf_sk_fullsock(sk); /* protocol and type are only readable here */
	return sk && sk->protocol == IPPROTO_UDP && sk->type == SOCK_DGRAM;
}

/* cgroup_skb programs may call bpf_get_current_task_btf. */
const volatile bool cgroup_skb_task_btf = false;

SEC("cgroup_skb/egress")
int packet_egress(struct __sk_buff *skb)
{
	struct payload_src src = {};
	struct task_ctx t;
	struct pkt p = {};

	if (!skb_of_udp_sock(skb) || !parse_skb_data(skb, &p))
		return 1;
	p.gso_segs = skb->gso_segs;
	/*
	 * current_task(), but before Linux 6.18 cgroup_skb may not ask for the
	 * task's uid or name: read them from the task_struct where the kernel
	 * lets it, else take the socket's uid and read the name.
	 */
	t.ts_ns = 0;
	t.pid_tgid = bpf_get_current_pid_tgid();
	if (cgroup_skb_task_btf) {
		read_task_btf(&t);
	} else {
		t.cgroup_id = bpf_get_current_cgroup_id();
		t.uid = bpf_get_socket_uid(skb);
		BPF_CORE_READ_INTO(&t.comm, (struct task_struct *)bpf_get_current_task(), comm);
		t.in_cgroup = current_in_cgroup();
	}
	p.netns = ctx_netns(skb);
	ctx_payload(&src, skb, &p);
	emit_packet(UDP_EVENT_PACKET_SEND, false, bpf_get_socket_cookie(skb), &p, 0, &t, &src);
	return 1; /* never interfere with the traffic */
}

/* A datagram the socket refused after ingress noted its sender. */
SEC("tp_btf/udp_fail_queue_rcv_skb")
int BPF_PROG(udp_fail_queue, int rc, struct sock *sk)
{
	__u64 cookie = sock_cookie(sk, true);

	unnote_refused(cookie);
	void_refused(cookie, sk);
	return 0;
}

/* Ingress also sees deliveries for packet events and drops (else only senders). */
const volatile bool ingress_deliveries = true;

/* The socket an arriving datagram is for, where ingress can see the kernel's sk_buff. */
static __always_inline struct sock *ingress_sock(struct __sk_buff *ctx)
{
	if (!bpf_ksym_exists(bpf_cast_to_kern_ctx))
		return NULL;
	return ((struct sk_buff *)bpf_cast_to_kern_ctx(ctx))->sk;
}

SEC("cgroup_skb/ingress")
int packet_ingress(struct __sk_buff *skb)
{
	/* The headers, only where something reads them. */
	bool wanted = ingress_deliveries && kind_wanted(UDP_EVENT_PACKET_RECV);
	bool headers = senders_from_queue || wanted;
	struct payload_src src = {};
	struct sock_state *st = NULL;
	struct pkt p = {};
	__u64 cookie;

	if (!skb_of_udp_sock(skb) || (headers && !parse_skb_data(skb, &p)))
		return 1;
	cookie = bpf_get_socket_cookie(skb);
	/* One lookup of the socket's state for its senders, queue and owner. */
	if (senders_from_queue || wanted || (ingress_deliveries && track_sockets))
		st = sock_state_of_known(cookie);
	if (senders_from_queue)
		note_queued_sender(st, ingress_sock(skb), &p);
	if (queue_waits) {
		struct bpf_sock *bsk = skb->sk;

		note_arrival(cookie, bsk ? bpf_sk_fullsock(bsk) : NULL, ingress_sock(skb));
	}
	if (ingress_deliveries) {
		/* The context is the kernel's sk_buff, as kfree_skb will see it. */
		note_delivery((__u64)(long)skb, cookie);
		ingress_rcvqueue(skb, st);
		if (wanted) {
			p.netns = ctx_netns(skb);
			ctx_payload(&src, skb, &p);
			packet_received(cookie, st, &p, &src);
		}
	}
	return 1;
}

/*
 * Drops: every UDP datagram the kernel frees as dropped, with the reason.
 * Arriving ones (skb_iif set) belong to the socket they were for.
 */

/* The kfree_skb tracepoint passes a reason (Linux 5.17+) and the receiving socket (6.11+). */
const volatile bool kfree_skb_has_reason = true;
const volatile bool kfree_skb_has_rx_sk = false;

SEC("tp_btf/kfree_skb")
int kfree_skb(__u64 *ctx)
{
	struct sk_buff *skb = (struct sk_buff *)ctx[0];
	struct payload_src src = {};
	int reason;
	struct delivery *d;
	struct task_ctx t;
	struct sock *sk;
	struct pkt p = {};
	__u32 zero = 0;
	__u64 cookie;
	bool inbound;

	reason = reason_not_specified;
	if (kfree_skb_has_reason)
		reason = (int)ctx[2];
	/* A raw socket's copy of a UDP datagram is not a UDP datagram dropped. */
	sk = BPF_CORE_READ(skb, sk);
	if ((sk && !udp_sock(sk)) || !parse_skb(skb, &p))
		return 0;
	inbound = BPF_CORE_READ(skb, skb_iif) != 0;
	if (!sk && inbound && kfree_skb_has_rx_sk)
		sk = (struct sock *)ctx[3];
	cookie = probed_cookie(sk);
	d = bpf_map_lookup_elem(&last_delivery, &zero);
	if (!kfree_skb_has_reason) {
		reason = drop_cause_of((__u64)skb, reason, &cookie);
	} else if (!cookie && d && d->skb == (__u64)skb &&
		   (reason == reason_rcvbuff || reason == reason_proto_mem)) {
		cookie = d->cookie;
		d->skb = 0;
	}
	note_sock_drop(cookie, reason == reason_rcvbuff, skb);
	p.netns = sk ? sock_netns(sk, false) : BPF_CORE_READ(skb, dev, nd_net.net, ns.inum);
	if (inbound)
		owner_of(cookie, &t);
	else
		current_task(&t);
	if (payload_room)
		skb_payload(&src, skb, &p);
	emit_packet(UDP_EVENT_DROP, inbound, cookie, &p, reason, &t, &src);
	return 0;
}

/*
 * Drop reasons where kfree_skb gives none (drop_cause.h), on the fentry
 * backend and the kprobe backend.
 */
SEC("fentry/__icmp_send")
int fentry_icmp_send(void *ctx)
{
	note_icmp(fn_arg(ctx, icmp_send_args.skb), (int)fn_arg(ctx, icmp_send_args.icmp_type),
		  (int)fn_arg(ctx, icmp_send_args.icmp_code), false);
	return 0;
}

SEC("fentry/icmp6_send")
int fentry_icmp6_send(void *ctx)
{
	note_icmp(fn_arg(ctx, icmp6_send_args.skb), (__u8)fn_arg(ctx, icmp6_send_args.icmp_type),
		  (__u8)fn_arg(ctx, icmp6_send_args.icmp_code), true);
	return 0;
}

SEC("fexit/__udp_enqueue_schedule_skb")
int fexit_udp_enqueue(void *ctx)
{
	struct sock *sk = (struct sock *)fn_arg(ctx, udp_enqueue_args.sk);

	note_enqueued(fn_arg(ctx, udp_enqueue_args.skb), (int)fn_arg(ctx, udp_enqueue_args.ret),
		      probed_cookie(sk));
	return 0;
}

SEC("fexit/__skb_checksum_complete")
int fexit_checksum_complete(void *ctx)
{
	if ((__u16)fn_arg(ctx, checksum_complete_args.ret))
		note_drop_cause(fn_arg(ctx, checksum_complete_args.skb), reason_udp_csum, 0);
	return 0;
}

SEC("kprobe/__icmp_send")
int kp_icmp_send(void *ctx)
{
	note_icmp(kprobe_arg(ctx, icmp_send_args.skb),
		  (int)kprobe_arg(ctx, icmp_send_args.icmp_type),
		  (int)kprobe_arg(ctx, icmp_send_args.icmp_code), false);
	return 0;
}

SEC("kprobe/icmp6_send")
int kp_icmp6_send(void *ctx)
{
	note_icmp(kprobe_arg(ctx, icmp6_send_args.skb),
		  (__u8)kprobe_arg(ctx, icmp6_send_args.icmp_type),
		  (__u8)kprobe_arg(ctx, icmp6_send_args.icmp_code), true);
	return 0;
}

SEC("kprobe/__skb_checksum_complete")
int kp_checksum_complete(void *ctx)
{
	enter_with(FN_CHECKSUM, NULL, kprobe_arg(ctx, checksum_complete_args.skb));
	return 0;
}

SEC("kretprobe/__skb_checksum_complete")
int BPF_KRETPROBE(krp_checksum_complete, int ret)
{
	struct call_args args;

	if (leave_with(FN_CHECKSUM, &args) && (__u16)ret)
		note_drop_cause((__u64)args.skb, reason_udp_csum, 0);
	return 0;
}

SEC("kretprobe/__udp_enqueue_schedule_skb")
int BPF_KRETPROBE(krp_udp_enqueue, int ret)
{
	struct call_args args;

	if (leave_with(FN_ENQUEUE, &args))
		note_enqueued((__u64)args.skb, ret, probed_cookie(args.sk));
	return 0;
}

/* Not used by the programs: keep the wire types in BTF so the skeleton generates them. */
struct udp_event udp_event_layout;
enum udp_event_kind udp_event_kind_layout;
enum udp_stat udp_stat_layout;
enum count_field count_field_layout;
enum family_bit family_bit_layout;
struct count_key count_key_layout;
struct count_value count_value_layout;
enum compact_key_bits compact_key_bits_layout;
enum count_slots_size count_slots_size_layout;
enum count_slot_state count_slot_state_layout;
struct count_slot count_slot_layout;
enum hist_kind hist_kind_layout;
enum hist_buckets hist_buckets_layout;
struct hist_value hist_value_layout;
struct udp_close_event udp_close_event_layout;
struct sock_state sock_state_layout;
