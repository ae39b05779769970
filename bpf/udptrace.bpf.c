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
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "udptrace.h"

#define EAGAIN 11
#define EEXIST 17
#define MSG_PEEK 2

char LICENSE[] SEC("license") = "GPL";

/* Filters, written into .rodata before load; unset ones are pruned by the verifier. */
const volatile __u32 filter_pid = 0;
const volatile bool filter_comm_on = false;
const volatile char filter_comm[TASK_COMM_LEN] = {};
const volatile __u8 filter_family = 0; /* AF_INET, AF_INET6 or 0 */
const volatile __u16 filter_port = 0; /* either side */
const volatile bool filter_addr_on = false;
const volatile __u8 filter_addr[16] = {}; /* IPv4 as IPv4-mapped */
const volatile __u8 filter_addr_mask[16] = {};
const volatile __u8 event_kinds = 0xff; /* bit (1 << kind) */
const volatile bool emit_eagain = false;
/*
 * Sockets the length tracepoints report, by family (enum family_bit): all for
 * the tracepoint backend; for fentry and kprobe, those whose function this
 * kernel lacks.
 */
const volatile __u8 tp_send_families = FAMILY_BIT_V4 | FAMILY_BIT_V6;
const volatile __u8 tp_recv_families = FAMILY_BIT_V4 | FAMILY_BIT_V6;
/* The sock_addr hooks that note a sendto()/recvfrom() peer are attached. */
const volatile bool peers_of_sends = true;
const volatile bool peers_of_recvs = true;
/* Pending bytes in a CPU's ring buffer that make the producer wake the consumer. */
const volatile __u64 wakeup_bytes = 64 * 1024;
/* Aggregate events into `counts` by these fields (enum count_field) instead of emitting them. */
const volatile bool count_mode = false;
const volatile __u8 count_keys = 0;
/* The kfree_skb tracepoint passes the receiving socket (Linux 6.11+). */
const volatile bool kfree_skb_has_rx_sk = false;
/* cgroup_skb programs may call bpf_get_current_task_btf. */
const volatile bool cgroup_skb_task_btf = false;
/* This kernel's codes for the drops of a socket that refused a datagram. */
const volatile __u32 reason_rcvbuff = 0xffffffff;
const volatile __u32 reason_proto_mem = 0xffffffff;

/*
 * One ring buffer per CPU, created and put in place by user space: a shared
 * one makes every event take the same lock, and a sender and its receiver on
 * two CPUs bounce it between their caches. User space merges the rings in
 * time order.
 */
struct event_ring {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096); /* a template: each CPU's ring is sized from user space */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1); /* one slot per possible CPU, set from user space */
	__type(key, __u32);
	__array(values, struct event_ring);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, UDP_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

/* A task as an event reports it. */
struct task_ctx {
	__u64 ts_ns;
	__u64 pid_tgid;
	__u64 cgroup_id;
	__u32 uid;
	char comm[TASK_COMM_LEN];
};

/*
 * What udptrace keeps per socket: its counters, and its owner (the task that
 * created it, or held it when tracing began), which received packets and
 * drops are attributed to.
 */
struct sock_state {
	struct sock_counters counters;
	struct task_ctx owner;
};

/* Keyed by socket cookie; deleted on close. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u64);
	__type(value, struct sock_state);
} sock_states SEC(".maps");

static const struct sock_state new_sock_state = {};

/*
 * `udptrace count`'s table, per CPU: a sender and its receiver on two CPUs
 * often count under the same key, and one shared value would bounce between
 * their caches on every datagram.
 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct count_key);
	__type(value, struct count_value);
} counts SEC(".maps");

/* Count mode builds an event and its key here, not in ring-buffer space or on the stack. */
struct count_scratch {
	struct udp_event event;
	struct count_key key;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct count_scratch);
} scratch SEC(".maps");

/*
 * The address a sock_addr hook saw, waiting for the tracepoint in the same
 * thread; `cookie` is zero once taken.
 */
struct peer {
	__u64 cookie;
	__u8 addr[16];
	__u16 port;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32); /* tid */
	__type(value, struct peer);
} peer_by_tid SEC(".maps");

/* A connect() call: who made it, and to where. */
struct connect_call {
	struct task_ctx caller;
	__u8 addr[16];
	__u16 port;
};

/*
 * connect() calls the filters select, by socket, until the socket's next
 * event reports them. Only selected callers are stored, so other processes'
 * idle connected sockets cannot crowd out the traced ones; a call that finds
 * the table full is counted (UDP_STAT_CONNECT_FULL).
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64); /* socket cookie */
	__type(value, struct connect_call);
} connect_by_sock SEC(".maps");

/* Lets the datagram path skip the lookup while no connect() is pending. */
__u64 connects_pending = 0;

struct sock_addrs {
	__u8 family;
	__u8 laddr[16];
	__u8 raddr[16];
	__u16 lport;
	__u16 rport;
};

static __always_inline void stat_inc(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &idx);

	if (v)
		*v += 1;
}

static __always_inline void v4_mapped(__u8 dst[16], __be32 v4)
{
	__builtin_memset(dst, 0, 10);
	dst[10] = 0xff;
	dst[11] = 0xff;
	__builtin_memcpy(dst + 12, &v4, 4);
}

static __always_inline bool addr_in_filter(const __u8 addr[16])
{
	for (int i = 0; i < 16; i++)
		if ((addr[i] & filter_addr_mask[i]) != filter_addr[i])
			return false;
	return true;
}

static __always_inline bool comm_matches(const char comm[TASK_COMM_LEN])
{
	for (int i = 0; i < TASK_COMM_LEN; i++) {
		if (comm[i] != filter_comm[i])
			return false;
		if (!comm[i])
			break;
	}
	return true;
}

/* Filters that depend only on the current task. */
static __always_inline bool task_wanted(__u64 pid_tgid)
{
	if (filter_pid && (pid_tgid >> 32) != filter_pid)
		return false;
	if (filter_comm_on) {
		char comm[TASK_COMM_LEN];

		bpf_get_current_comm(comm, sizeof(comm));
		if (!comm_matches(comm))
			return false;
	}
	return true;
}

/* task_wanted() for a task seen earlier. */
static __always_inline bool stored_task_wanted(const struct task_ctx *t)
{
	if (filter_pid && (t->pid_tgid >> 32) != filter_pid)
		return false;
	return !filter_comm_on || comm_matches(t->comm);
}

static __always_inline void current_task(struct task_ctx *t)
{
	t->ts_ns = bpf_ktime_get_ns();
	t->pid_tgid = bpf_get_current_pid_tgid();
	t->cgroup_id = bpf_get_current_cgroup_id();
	t->uid = (__u32)bpf_get_current_uid_gid();
	bpf_get_current_comm(t->comm, sizeof(t->comm));
}

static __always_inline bool addrs_wanted(const struct sock_addrs *a)
{
	if (filter_family && a->family != filter_family)
		return false;
	if (filter_port && a->lport != filter_port && a->rport != filter_port)
		return false;
	if (filter_addr_on && !addr_in_filter(a->laddr) && !addr_in_filter(a->raddr))
		return false;
	return true;
}

static __always_inline bool kind_wanted(__u8 kind)
{
	return event_kinds & (1 << kind);
}

/* Whether a filter on the task or the addresses is set (constant after load). */
static __always_inline bool filtering(void)
{
	return filter_pid || filter_comm_on || filter_family || filter_port || filter_addr_on;
}

/* Addresses of a socket as it stands; the remote is unset for unconnected sockets. */
static __always_inline void read_sock_addrs(struct sock *sk, struct sock_addrs *a)
{
	a->family = sk->__sk_common.skc_family;
	a->lport = sk->__sk_common.skc_num;
	a->rport = bpf_ntohs(sk->__sk_common.skc_dport);
	if (a->family == AF_INET6) {
		__builtin_memcpy(a->laddr, &sk->__sk_common.skc_v6_rcv_saddr, 16);
		__builtin_memcpy(a->raddr, &sk->__sk_common.skc_v6_daddr, 16);
	} else {
		v4_mapped(a->laddr, sk->__sk_common.skc_rcv_saddr);
		v4_mapped(a->raddr, sk->__sk_common.skc_daddr);
	}
}

/* Same, through bpf_probe_read for a socket pointer the verifier does not know. */
static __always_inline void probe_sock_addrs(struct sock *sk, struct sock_addrs *a)
{
	__be32 v4;

	a->family = BPF_CORE_READ(sk, __sk_common.skc_family);
	a->lport = BPF_CORE_READ(sk, __sk_common.skc_num);
	a->rport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	if (a->family == AF_INET6) {
		BPF_CORE_READ_INTO(&a->laddr, sk, __sk_common.skc_v6_rcv_saddr);
		BPF_CORE_READ_INTO(&a->raddr, sk, __sk_common.skc_v6_daddr);
	} else {
		v4 = BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr);
		v4_mapped(a->laddr, v4);
		v4 = BPF_CORE_READ(sk, __sk_common.skc_daddr);
		v4_mapped(a->raddr, v4);
	}
}

/*
 * The verifier lets each hook read only its own family's address fields:
 * user_ip4 in the *4 hooks (also on IPv6 sockets talking to IPv4-mapped
 * peers), user_ip6 in the *6 hooks.
 */
static __always_inline void addr_from_sock_addr(struct bpf_sock_addr *ctx, bool v6, struct peer *p)
{
	if (v6) {
		__u32 *dst = (__u32 *)p->addr;

		dst[0] = ctx->user_ip6[0];
		dst[1] = ctx->user_ip6[1];
		dst[2] = ctx->user_ip6[2];
		dst[3] = ctx->user_ip6[3];
	} else {
		v4_mapped(p->addr, ctx->user_ip4);
	}
	p->port = bpf_ntohs(ctx->user_port);
}

/*
 * A new socket's state, for its caller to give an owner; NULL if the socket
 * has one already (NOEXIST: another CPU may have just created it) or the
 * table is full.
 */
static __always_inline struct sock_state *new_sock_state_of(__u64 cookie)
{
	if (bpf_map_update_elem(&sock_states, &cookie, &new_sock_state, BPF_NOEXIST))
		return NULL;
	return bpf_map_lookup_elem(&sock_states, &cookie);
}

/* The socket's state, created with the current task as its owner if new. */
static __always_inline struct sock_state *sock_state_of(__u64 cookie)
{
	struct sock_state *st = bpf_map_lookup_elem(&sock_states, &cookie);

	if (st)
		return st;
	st = new_sock_state_of(cookie);
	if (st) {
		current_task(&st->owner);
		return st;
	}
	st = bpf_map_lookup_elem(&sock_states, &cookie);
	if (!st)
		stat_inc(UDP_STAT_COUNTERS_FULL);
	return st;
}

/* Adds one datagram to a socket's counters and returns them. */
static __always_inline struct sock_counters account(__u64 cookie, __u8 kind, __s32 bytes)
{
	struct sock_counters zero = {}, *c;
	struct sock_state *st = sock_state_of(cookie);

	if (!st)
		return zero;
	c = &st->counters;
	if (bytes >= 0) {
		if (kind == UDP_EVENT_SEND) {
			__sync_fetch_and_add(&c->tx_bytes, bytes);
			__sync_fetch_and_add(&c->tx_packets, 1);
		} else if (kind == UDP_EVENT_RECV) {
			__sync_fetch_and_add(&c->rx_bytes, bytes);
			__sync_fetch_and_add(&c->rx_packets, 1);
		}
	}
	return *c;
}

static __always_inline struct sock_counters counters_of(__u64 cookie)
{
	struct sock_counters zero = {};
	struct sock_state *st = bpf_map_lookup_elem(&sock_states, &cookie);

	return st ? st->counters : zero;
}

/* An event's size in the ring buffer, with the record header. */
#define RINGBUF_RECORD_BYTES (sizeof(struct udp_event) + 8)

/* This CPU's ring buffer (a program does not migrate while it runs). */
static __always_inline void *this_cpu_ring(void)
{
	__u32 cpu = bpf_get_smp_processor_id();

	return bpf_map_lookup_elem(&events, &cpu);
}

/*
 * Where to build the next event: space in this CPU's ring buffer (`*ring`,
 * for event_done()), or the count-mode scratch.
 */
static __always_inline struct udp_event *event_slot(void **ring)
{
	struct udp_event *e = NULL;
	__u32 zero = 0;

	*ring = NULL;
	if (count_mode) {
		struct count_scratch *cs = bpf_map_lookup_elem(&scratch, &zero);

		return cs ? &cs->event : NULL;
	}
	*ring = this_cpu_ring();
	if (*ring)
		e = bpf_ringbuf_reserve(*ring, sizeof(*e), 0);
	if (!e)
		stat_inc(UDP_STAT_LOST);
	return e;
}

static __always_inline bool is_inbound(const struct udp_event *e)
{
	return e->kind == UDP_EVENT_RECV || e->kind == UDP_EVENT_PACKET_RECV ||
	       (e->kind == UDP_EVENT_DROP && e->detail.packet.inbound);
}

/* Adds the event built in `cs` to `counts` under the fields count_keys selects. */
static __always_inline void count_event(struct count_scratch *cs)
{
	const struct udp_event *e = &cs->event;
	struct count_value one = { .events = 1 }, *v;
	struct count_key *k = &cs->key;
	bool in = is_inbound(e);

	__builtin_memset(k, 0, sizeof(*k));
	if (e->ret > 0)
		one.bytes = e->ret;
	if (count_keys & COUNT_SADDR)
		__builtin_memcpy(k->saddr, in ? e->raddr : e->laddr, 16);
	if (count_keys & COUNT_DADDR)
		__builtin_memcpy(k->daddr, in ? e->laddr : e->raddr, 16);
	if (count_keys & (COUNT_SADDR | COUNT_DADDR))
		k->family = e->family;
	if (count_keys & COUNT_SPORT)
		k->sport = in ? e->rport : e->lport;
	if (count_keys & COUNT_DPORT)
		k->dport = in ? e->lport : e->rport;
	if (count_keys & COUNT_PID)
		k->pid = e->pid;
	if (count_keys & COUNT_COMM)
		__builtin_memcpy(k->comm, e->comm, sizeof(k->comm));
	if (count_keys & COUNT_EVENT)
		k->kind = e->kind;
	if ((count_keys & COUNT_REASON) && e->kind == UDP_EVENT_DROP) {
		k->reason = e->detail.packet.drop_reason;
		k->is_drop = 1;
	}
	v = bpf_map_lookup_elem(&counts, k);
	if (!v) {
		/* A new key: this CPU's copy starts at `one`, the others at zero. */
		if (bpf_map_update_elem(&counts, k, &one, BPF_NOEXIST) == 0)
			return;
		/* Another CPU added the key first, or the table is full. */
		v = bpf_map_lookup_elem(&counts, k);
		if (!v) {
			stat_inc(UDP_STAT_COUNT_FULL);
			return;
		}
	}
	__sync_fetch_and_add(&v->events, 1);
	__sync_fetch_and_add(&v->bytes, one.bytes);
}

/* Hands a built event to user space through `ring`, or counts it. */
static __always_inline void event_done(struct udp_event *e, void *ring)
{
	__u64 flags = BPF_RB_NO_WAKEUP, avail = 0;

	if (count_mode) {
		/* The event is the first member of its count_scratch. */
		count_event((struct count_scratch *)e);
		return;
	}
	/*
	 * Wake the consumer once, as the pending data crosses wakeup_bytes. Waking
	 * it again for every event while it catches up would cost an interrupt
	 * each (a self-IPI; a VM exit under virtualisation) and tell it nothing.
	 * A crossing missed in a race with a nested program waits for the drain
	 * timer.
	 */
	if (ring)
		avail = bpf_ringbuf_query(ring, BPF_RB_AVAIL_DATA);
	if (avail >= wakeup_bytes && avail < wakeup_bytes + RINGBUF_RECORD_BYTES)
		flags = BPF_RB_FORCE_WAKEUP;
	bpf_ringbuf_submit(e, flags);
}

/* An event's socket part: all but its time, task and detail. */
static __always_inline void fill_socket(struct udp_event *e, __u8 kind, __u64 cookie,
					const struct sock_addrs *a, __s32 ret)
{
	e->sock_cookie = cookie;
	e->ret = ret;
	__builtin_memcpy(e->laddr, a->laddr, 16);
	__builtin_memcpy(e->raddr, a->raddr, 16);
	e->lport = a->lport;
	e->rport = a->rport;
	e->kind = kind;
	e->family = a->family;
	e->pad[0] = 0;
	e->pad[1] = 0;
}

/* An event's task part, from a task seen earlier. */
static __always_inline void fill_task(struct udp_event *e, const struct task_ctx *t)
{
	e->cgroup_id = t->cgroup_id;
	e->uid = t->uid;
	e->pid = t->pid_tgid >> 32;
	e->tid = (__u32)t->pid_tgid;
	__builtin_memcpy(e->comm, t->comm, sizeof(e->comm));
}

/*
 * The current task's cgroup, uid and name, read straight from its task_struct
 * (tracing programs, and cgroup_skb where the kernel allows it): a few loads
 * instead of three helper calls, each with its own walk (cgroup, credentials)
 * or string copy, which together cost a fifth of a socket event. The values
 * are the helpers': the default hierarchy's cgroup id, the subjective uid as
 * the initial namespace sees it.
 */
static __always_inline void read_task(struct task_struct *task, __u64 *cgroup_id, __u32 *uid,
				      char comm[TASK_COMM_LEN])
{
	*cgroup_id = task->cgroups->dfl_cgrp->kn->id;
	*uid = task->cred->uid.val;
	__builtin_memcpy(comm, task->comm, TASK_COMM_LEN);
}

static __always_inline void read_task_btf(__u64 *cgroup_id, __u32 *uid, char comm[TASK_COMM_LEN])
{
	read_task(bpf_get_current_task_btf(), cgroup_id, uid, comm);
}

static __always_inline void current_task_btf(struct task_ctx *t)
{
	t->ts_ns = bpf_ktime_get_ns();
	t->pid_tgid = bpf_get_current_pid_tgid();
	read_task_btf(&t->cgroup_id, &t->uid, t->comm);
}

/* An event's task part: the current task's. */
static __always_inline void fill_current_task(struct udp_event *e)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();

	e->pid = pid_tgid >> 32;
	e->tid = (__u32)pid_tgid;
	if (count_mode) {
		/* Of the task, only the pid and name can be a count's key. */
		if (count_keys & COUNT_COMM)
			bpf_get_current_comm(e->comm, sizeof(e->comm));
		return;
	}
	e->ts_ns = bpf_ktime_get_ns();
	e->cgroup_id = bpf_get_current_cgroup_id();
	e->uid = (__u32)bpf_get_current_uid_gid();
	bpf_get_current_comm(e->comm, sizeof(e->comm));
}

/* Emits an event of `task`, seen earlier, or else of the current task. */
static __always_inline void emit(__u8 kind, __u64 cookie, const struct sock_addrs *a,
				 const struct sock_counters *cnt, __s32 ret,
				 const struct task_ctx *task)
{
	void *ring;
	struct udp_event *e = event_slot(&ring);

	if (!e)
		return;
	if (task) {
		e->ts_ns = task->ts_ns;
		fill_task(e, task);
	} else {
		fill_current_task(e);
	}
	e->detail.counters = *cnt;
	fill_socket(e, kind, cookie, a, ret);
	event_done(e, ring);
}

/*
 * Reports a connect() noted by the hook, now that the socket shows its
 * outcome: connected (a remote port is set) or not (the call failed).
 */
static __always_inline void finish_connect(__u64 cookie, const struct sock_addrs *a)
{
	struct sock_counters cnt;
	struct connect_call *call;
	struct sock_addrs tried;

	if (!connects_pending)
		return;
	call = bpf_map_lookup_elem(&connect_by_sock, &cookie);
	if (!call)
		return;
	/* The caller passed the task filters when the call was stored. */
	if (!a->rport) {
		/* Filtered as the socket and the peer it tried to reach. */
		tried = *a;
		__builtin_memcpy(tried.raddr, call->addr, 16);
		tried.rport = call->port;
		if (addrs_wanted(&tried))
			stat_inc(UDP_STAT_CONNECT_FAILED);
	} else if (addrs_wanted(a)) {
		cnt = counters_of(cookie);
		emit(UDP_EVENT_CONNECT, cookie, a, &cnt, 0, &call->caller);
	}
	/* Only the CPU whose delete succeeds settles the count. */
	if (bpf_map_delete_elem(&connect_by_sock, &cookie) == 0)
		__sync_fetch_and_add(&connects_pending, -1);
}

/*
 * A send or receive has returned on a UDP socket. `trusted`: `sk` is a
 * BTF-typed pointer (tracepoints, fentry) rather than one read from a
 * register (kprobes), which must go through bpf_probe_read and cannot ask
 * for a cookie; theirs is the one the kernel already gave the socket.
 */
static __always_inline int on_datagram_of(struct sock *sk, int ret, __u8 kind, bool trusted)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)pid_tgid;
	bool btf_task = trusted && !count_mode;
	struct sock_counters cnt;
	struct task_ctx task;
	struct sock_addrs a;
	struct peer *peer;
	__u64 cookie;

	cookie = trusted ? bpf_get_socket_cookie(sk) : BPF_CORE_READ(sk, __sk_common.skc_cookie.counter);
	/*
	 * Tracing programs read the task here, on the one path all events share:
	 * where the paths have forked, the verifier walks task_struct's BTF once
	 * per path, and loading took 20 ms longer per program.
	 */
	if (btf_task)
		current_task_btf(&task);
	if (trusted)
		read_sock_addrs(sk, &a);
	else
		probe_sock_addrs(sk, &a);
	/* Before the peer below replaces what the socket itself is connected to. */
	finish_connect(cookie, &a);
	/* An address given by the caller (sendto) or returned to it (recvfrom). */
	peer = NULL;
	if (kind == UDP_EVENT_SEND ? peers_of_sends : peers_of_recvs)
		peer = bpf_map_lookup_elem(&peer_by_tid, &tid);
	if (peer && peer->cookie) {
		if (peer->cookie == cookie) {
			__builtin_memcpy(a.raddr, peer->addr, 16);
			a.rport = peer->port;
		}
		peer->cookie = 0; /* taken */
	}
	if (!count_mode)
		cnt = account(cookie, kind, ret);
	else /* counted events carry no socket counters */
		__builtin_memset(&cnt, 0, sizeof(cnt));
	if (!kind_wanted(kind) || !task_wanted(pid_tgid) || !addrs_wanted(&a))
		return 0;
	emit(kind, cookie, &a, &cnt, ret, btf_task ? &task : NULL);
	return 0;
}

static __always_inline int on_datagram(struct sock *sk, int ret, __u8 kind)
{
	return on_datagram_of(sk, ret, kind, true);
}

/*
 * A receive has returned: peeks and (by default) EAGAIN are counted, not
 * events. Returns the stat that counts this one, or UDP_STAT_MAX for an event.
 */
static __always_inline __u32 recv_not_event(int ret, int flags)
{
	if (flags & MSG_PEEK)
		return UDP_STAT_RECV_PEEK;
	if (ret == -EAGAIN && !emit_eagain)
		return UDP_STAT_RECV_EAGAIN;
	return UDP_STAT_MAX;
}

/*
 * Counts a receive that is not an event if the filters select it, as they
 * would its event. Without filters (the verifier prunes the rest) it costs a
 * busy-polling server's EAGAIN no more than the count itself.
 */
static __always_inline void count_not_event(struct sock *sk, __u32 stat, bool trusted)
{
	struct sock_addrs a;

	if (!kind_wanted(UDP_EVENT_RECV))
		return;
	if (filtering()) {
		if (!task_wanted(bpf_get_current_pid_tgid()))
			return;
		if (trusted)
			read_sock_addrs(sk, &a);
		else
			probe_sock_addrs(sk, &a);
		if (!addrs_wanted(&a))
			return;
	}
	stat_inc(stat);
}

static __always_inline int on_recv(struct sock *sk, int ret, int flags)
{
	__u32 stat = recv_not_event(ret, flags);

	if (stat != UDP_STAT_MAX) {
		count_not_event(sk, stat, true);
		return 0;
	}
	return on_datagram(sk, ret, UDP_EVENT_RECV);
}

/*
 * Tracepoint backend (Linux 6.3+): the length tracepoints of every socket.
 * They also stand in for a function the fentry or kprobe backend cannot hook
 * on this kernel, for that function's family only.
 */
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
	return on_datagram(sk, ret, UDP_EVENT_SEND);
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(tp_recv_length, struct sock *sk, int ret, int flags)
{
	if (!udp_of_families(sk, tp_recv_families))
		return 0;
	return on_recv(sk, ret, flags);
}

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
int BPF_PROG(fexit_udp_sendmsg, struct sock *sk, void *msg, __u64 len, int ret)
{
	if (!is_udp_of(sk, AF_INET))
		return 0;
	return on_datagram(sk, ret, UDP_EVENT_SEND);
}

SEC("fexit/udpv6_sendmsg")
int BPF_PROG(fexit_udpv6_sendmsg, struct sock *sk, void *msg, __u64 len, int ret)
{
	if (!is_udp_of(sk, AF_INET6))
		return 0;
	return on_datagram(sk, ret, UDP_EVENT_SEND);
}

SEC("fexit/udp_recvmsg")
int BPF_PROG(fexit_udp_recvmsg, struct sock *sk, void *msg, __u64 len, int flags, int *addr_len,
	     int ret)
{
	if (!is_udp_of(sk, AF_INET))
		return 0;
	return on_recv(sk, ret, flags);
}

SEC("fexit/udpv6_recvmsg")
int BPF_PROG(fexit_udpv6_recvmsg, struct sock *sk, void *msg, __u64 len, int flags, int *addr_len,
	     int ret)
{
	if (!is_udp_of(sk, AF_INET6))
		return 0;
	return on_recv(sk, ret, flags);
}

/*
 * kprobe backend: the same functions through kprobes, for kernels without BPF
 * trampolines. The entry probe keeps the arguments for the return probe, per
 * thread and function (udpv6_sendmsg calls udp_sendmsg for IPv4-mapped peers).
 */
enum { FN_UDP_SEND = 1, FN_UDP6_SEND, FN_UDP_RECV, FN_UDP6_RECV };

struct call_args {
	struct sock *sk;
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

static __always_inline int enter(__u32 fn, struct sock *sk, int flags, __u16 family)
{
	struct call_args args = { .sk = sk, .flags = flags };
	__u64 key = call_key(fn);

	if (BPF_CORE_READ(sk, sk_protocol) != IPPROTO_UDP ||
	    BPF_CORE_READ(sk, __sk_common.skc_family) != family)
		return 0;
	/* A call whose return cannot be followed is a lost event. */
	if (bpf_map_update_elem(&args_by_call, &key, &args, BPF_ANY))
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
	return on_datagram_of(a.sk, ret, kind, false);
}

SEC("kprobe/udp_sendmsg")
int BPF_KPROBE(kp_udp_sendmsg, struct sock *sk)
{
	return enter(FN_UDP_SEND, sk, 0, AF_INET);
}

SEC("kretprobe/udp_sendmsg")
int BPF_KRETPROBE(krp_udp_sendmsg, int ret)
{
	return leave(FN_UDP_SEND, ret);
}

SEC("kprobe/udpv6_sendmsg")
int BPF_KPROBE(kp_udpv6_sendmsg, struct sock *sk)
{
	return enter(FN_UDP6_SEND, sk, 0, AF_INET6);
}

SEC("kretprobe/udpv6_sendmsg")
int BPF_KRETPROBE(krp_udpv6_sendmsg, int ret)
{
	return leave(FN_UDP6_SEND, ret);
}

SEC("kprobe/udp_recvmsg")
int BPF_KPROBE(kp_udp_recvmsg, struct sock *sk, void *msg, __u64 len, int flags)
{
	return enter(FN_UDP_RECV, sk, flags, AF_INET);
}

SEC("kretprobe/udp_recvmsg")
int BPF_KRETPROBE(krp_udp_recvmsg, int ret)
{
	return leave(FN_UDP_RECV, ret);
}

SEC("kprobe/udpv6_recvmsg")
int BPF_KPROBE(kp_udpv6_recvmsg, struct sock *sk, void *msg, __u64 len, int flags)
{
	return enter(FN_UDP6_RECV, sk, flags, AF_INET6);
}

SEC("kretprobe/udpv6_recvmsg")
int BPF_KRETPROBE(krp_udpv6_recvmsg, int ret)
{
	return leave(FN_UDP6_RECV, ret);
}

/*
 * A UDP socket is created: its creator owns it. This also gives the socket
 * its cookie now, which kprobes cannot ask for later.
 */
SEC("cgroup/sock_create")
int sock_create(struct bpf_sock *ctx)
{
	__u64 cookie;

	if (ctx->protocol == IPPROTO_UDP) {
		cookie = bpf_get_socket_cookie(ctx);
		sock_state_of(cookie);
	}
	return 1;
}

/*
 * The UDP sockets that exist as tracing starts, run once after every hook is
 * attached (sockets created from then on meet sock_create): each is owned by
 * the first process found holding it, and gets its cookie now.
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
	sock = bpf_sock_from_file(file);
	sk = sock ? sock->sk : NULL;
	if (!sk || sk->sk_protocol != IPPROTO_UDP)
		return 0;
	cookie = bpf_get_socket_cookie(sk);
	st = new_sock_state_of(cookie);
	if (!st)
		return 0; /* known already, or the table is full */
	st->owner.pid_tgid = (__u64)task->tgid << 32 | (__u32)task->pid;
	read_task(task, &st->owner.cgroup_id, &st->owner.uid, st->owner.comm);
	return 0;
}

/*
 * Each thread's entry is written in place and kept: an update per datagram
 * (which allocates a new element) and a delete per event cost more than the
 * rest of a receive's tracing.
 */
static __always_inline int remember_peer(struct bpf_sock_addr *ctx, bool v6)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	static const struct peer none = {};
	struct peer *p;

	if (ctx->protocol != IPPROTO_UDP)
		return 1;
	p = bpf_map_lookup_elem(&peer_by_tid, &tid);
	if (!p) {
		bpf_map_update_elem(&peer_by_tid, &tid, &none, BPF_NOEXIST);
		p = bpf_map_lookup_elem(&peer_by_tid, &tid);
		if (!p)
			return 1;
	}
	addr_from_sock_addr(ctx, v6, p);
	p->cookie = bpf_get_socket_cookie(ctx);
	return 1; /* never interfere with the call */
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

/*
 * Stores a connect() call the filters may select; its socket's addresses are
 * filtered when the call is reported. A call that finds the table full is
 * counted, so that a missing connect event is never silent.
 */
static __always_inline int remember_connect(struct bpf_sock_addr *ctx, bool v6)
{
	struct connect_call call;
	struct peer to;
	__u64 cookie;
	long err;

	if (ctx->protocol != IPPROTO_UDP || !kind_wanted(UDP_EVENT_CONNECT))
		return 1;
	if ((filter_family && ctx->family != filter_family) ||
	    !task_wanted(bpf_get_current_pid_tgid()))
		return 1;
	cookie = bpf_get_socket_cookie(ctx);
	current_task(&call.caller);
	addr_from_sock_addr(ctx, v6, &to);
	__builtin_memcpy(call.addr, to.addr, 16);
	call.port = to.port;
	err = bpf_map_update_elem(&connect_by_sock, &cookie, &call, BPF_NOEXIST);
	if (err == 0)
		__sync_fetch_and_add(&connects_pending, 1);
	else if (err == -EEXIST) /* connect() again before any traffic: the last one counts */
		bpf_map_update_elem(&connect_by_sock, &cookie, &call, BPF_EXIST);
	else
		stat_inc(UDP_STAT_CONNECT_FULL);
	return 1; /* never interfere with the call */
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
	struct sock_counters cnt;
	struct sock_addrs a;
	__u64 cookie;

	if (ctx->protocol != IPPROTO_UDP || (ctx->family != AF_INET && ctx->family != AF_INET6))
		return 1;
	probe_sock_addrs((struct sock *)ctx, &a);
	cookie = bpf_get_socket_cookie(ctx);
	finish_connect(cookie, &a);
	cnt = counters_of(cookie);
	bpf_map_delete_elem(&sock_states, &cookie);
	if (kind_wanted(UDP_EVENT_CLOSE) && task_wanted(pid_tgid) && addrs_wanted(&a))
		emit(UDP_EVENT_CLOSE, cookie, &a, &cnt, 0, NULL);
	return 1;
}

/*
 * Packet events and drops. A datagram's headers are read from the IP header
 * on: through the skb context in cgroup_skb programs, from kernel memory in
 * the others.
 */
struct ip4_hdr {
	__u8 ver_ihl;
	__u8 tos;
	__be16 tot_len;
	__be16 id;
	__be16 frag_off;
	__u8 ttl;
	__u8 protocol;
	__be16 check;
	__be32 saddr;
	__be32 daddr;
};

struct ip6_hdr {
	__be32 ver_tc_flow;
	__be16 payload_len;
	__u8 nexthdr;
	__u8 hop_limit;
	__u8 saddr[16];
	__u8 daddr[16];
};

struct udp_hdr {
	__be16 source;
	__be16 dest;
	__be16 len;
	__be16 check;
};

#define IP_OFFSET_MASK 0x1fff
#define NO_HEADER 0xffff

struct pkt {
	__u8 saddr[16]; /* IPv4 as IPv4-mapped */
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u16 udp_length;
	__u16 udp_checksum;
	__u16 ip_plength;
	__u16 gso_segs;
	__u8 ip_ver;
	__u8 ip_hlen; /* bytes of IP header before the UDP header */
};

/* `len` bytes at `off` past the IP header: of `ctx_skb` if given, else at `ip`. */
static __always_inline int load_bytes(struct __sk_buff *ctx_skb, const void *ip, __u32 off,
				      void *dst, __u32 len)
{
	if (ctx_skb)
		return bpf_skb_load_bytes(ctx_skb, off, dst, len);
	return bpf_probe_read_kernel(dst, len, ip + off);
}

/* A packet's IPv4 header; false unless it heads a UDP datagram's first fragment. */
static __always_inline bool ip4_to_pkt(struct pkt *p, const struct ip4_hdr *h)
{
	if (h->protocol != IPPROTO_UDP || (h->frag_off & bpf_htons(IP_OFFSET_MASK)))
		return false;
	p->ip_hlen = (h->ver_ihl & 0xf) * 4;
	p->ip_plength = bpf_ntohs(h->tot_len) - p->ip_hlen;
	v4_mapped(p->saddr, h->saddr);
	v4_mapped(p->daddr, h->daddr);
	return true;
}

/* A packet's IPv6 header; false unless UDP follows it directly. */
static __always_inline bool ip6_to_pkt(struct pkt *p, const struct ip6_hdr *h)
{
	if (h->nexthdr != IPPROTO_UDP)
		return false;
	p->ip_hlen = sizeof(*h);
	p->ip_plength = bpf_ntohs(h->payload_len);
	__builtin_memcpy(p->saddr, h->saddr, 16);
	__builtin_memcpy(p->daddr, h->daddr, 16);
	return true;
}

static __always_inline void udp_to_pkt(struct pkt *p, const struct udp_hdr *uh)
{
	p->sport = bpf_ntohs(uh->source);
	p->dport = bpf_ntohs(uh->dest);
	p->udp_length = bpf_ntohs(uh->len);
	p->udp_checksum = bpf_ntohs(uh->check);
}

/*
 * Reads the IP and UDP headers; false unless the packet is UDP with its
 * header right after the IP header (IPv6 extension headers are not followed,
 * non-first IPv4 fragments carry no UDP header).
 */
static __always_inline bool parse_udp(struct __sk_buff *ctx_skb, const void *ip, struct pkt *p)
{
	union {
		struct ip4_hdr v4;
		struct ip6_hdr v6;
	} h;
	struct udp_hdr uh;

	if (load_bytes(ctx_skb, ip, 0, &h.v4, sizeof(h.v4)))
		return false;
	p->ip_ver = h.v4.ver_ihl >> 4;
	if (p->ip_ver == 4) {
		if (!ip4_to_pkt(p, &h.v4))
			return false;
	} else if (p->ip_ver == 6) {
		if (load_bytes(ctx_skb, ip, 0, &h.v6, sizeof(h.v6)) || !ip6_to_pkt(p, &h.v6))
			return false;
	} else {
		return false;
	}
	if (load_bytes(ctx_skb, ip, p->ip_hlen, &uh, sizeof(uh)))
		return false;
	udp_to_pkt(p, &uh);
	return true;
}

/*
 * parse_udp() for cgroup_skb, reading the headers in place when they are in
 * the packet's linear data (as a socket's own datagrams have them), which
 * spares two or three helper calls per packet.
 */
static __always_inline bool parse_skb_data(struct __sk_buff *skb, struct pkt *p)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	const struct ip4_hdr *v4 = data;
	const struct ip6_hdr *v6 = data;
	const struct udp_hdr *uh;

	if ((void *)(v4 + 1) > end)
		return parse_udp(skb, NULL, p);
	p->ip_ver = v4->ver_ihl >> 4;
	if (v4->ver_ihl == 0x45) { /* IPv4 without options */
		if (!ip4_to_pkt(p, v4))
			return false;
		uh = (void *)(v4 + 1);
	} else if (p->ip_ver == 6 && (void *)(v6 + 1) <= end) {
		if (!ip6_to_pkt(p, v6))
			return false;
		uh = (void *)(v6 + 1);
	} else {
		return parse_udp(skb, NULL, p);
	}
	if ((void *)(uh + 1) > end)
		return parse_udp(skb, NULL, p);
	udp_to_pkt(p, uh);
	return true;
}

/* Headers of a kernel skb whose network header is set. */
static __always_inline bool parse_skb(struct sk_buff *skb, struct pkt *p)
{
	unsigned char *head = BPF_CORE_READ(skb, head);
	__u16 nh = BPF_CORE_READ(skb, network_header);
	struct skb_shared_info *shinfo;

	if (nh == NO_HEADER || !parse_udp(NULL, head + nh, p))
		return false;
	shinfo = (struct skb_shared_info *)(head + BPF_CORE_READ(skb, end));
	p->gso_segs = BPF_CORE_READ(shinfo, gso_segs);
	return true;
}

/* A packet event of `task`; `reason` for drops. */
static __always_inline void emit_packet(__u8 kind, bool inbound, __u64 cookie, const struct pkt *p,
					__u32 reason, const struct task_ctx *task)
{
	struct sock_addrs a = {};
	struct udp_event *e;
	void *ring;

	a.family = p->ip_ver == 6 ? AF_INET6 : AF_INET;
	__builtin_memcpy(a.laddr, inbound ? p->daddr : p->saddr, 16);
	__builtin_memcpy(a.raddr, inbound ? p->saddr : p->daddr, 16);
	a.lport = inbound ? p->dport : p->sport;
	a.rport = inbound ? p->sport : p->dport;
	if (!kind_wanted(kind) || !stored_task_wanted(task) || !addrs_wanted(&a))
		return;
	e = event_slot(&ring);
	if (!e)
		return;
	e->ts_ns = bpf_ktime_get_ns();
	fill_task(e, task);
	/* The payload, as a send or receive of it would return. */
	fill_socket(e, kind, cookie, &a, p->udp_length >= 8 ? p->udp_length - 8 : 0);
	__builtin_memset(&e->detail, 0, sizeof(e->detail));
	e->detail.packet.drop_reason = reason;
	e->detail.packet.ip_plength = p->ip_plength;
	e->detail.packet.udp_length = p->udp_length;
	e->detail.packet.udp_checksum = p->udp_checksum;
	e->detail.packet.gso_segs = p->gso_segs > 1 ? p->gso_segs : 1;
	e->detail.packet.ip_ver = p->ip_ver;
	e->detail.packet.inbound = inbound;
	event_done(e, ring);
}

/* The task a received datagram or a drop belongs to: its socket's owner, if known. */
static __always_inline void owner_of(__u64 cookie, struct task_ctx *t)
{
	struct sock_state *st = cookie ? bpf_map_lookup_elem(&sock_states, &cookie) : NULL;

	if (st)
		*t = st->owner;
	else
		__builtin_memset(t, 0, sizeof(*t));
}

/* Transmit runs in the sending task (sendmsg, or a corked socket's flush). */
static __always_inline void packet_sent(__u64 cookie, const struct pkt *p)
{
	struct task_ctx t;

	current_task(&t);
	emit_packet(UDP_EVENT_PACKET_SEND, false, cookie, p, 0, &t);
}

static __always_inline void packet_received(__u64 cookie, const struct pkt *p)
{
	struct task_ctx t;

	owner_of(cookie, &t);
	emit_packet(UDP_EVENT_PACKET_RECV, true, cookie, p, 0, &t);
}

/* Raw sockets send UDP headers too; like udp:::send, report UDP sockets' only. */
static __always_inline bool udp_sock(struct sock *sk)
{
	return sk && BPF_CORE_READ(sk, sk_protocol) == IPPROTO_UDP &&
	       BPF_CORE_READ(sk, sk_type) == SOCK_DGRAM;
}

static __always_inline __u64 probed_cookie(struct sock *sk)
{
	return sk ? BPF_CORE_READ(sk, __sk_common.skc_cookie.counter) : 0;
}

/*
 * The last datagram each CPU handed to a socket, so that the drop that
 * follows when the socket refuses it (receive buffer or protocol memory
 * full) is attributed to that socket on kernels whose kfree_skb tracepoint
 * does not name it. Only those drops may use it: a freed skb's address is
 * soon reused.
 */
struct delivery {
	__u64 skb;
	__u64 cookie;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct delivery);
} last_delivery SEC(".maps");

static __always_inline int on_transmit(struct sk_buff *skb)
{
	struct sock *sk = BPF_CORE_READ(skb, sk);
	struct pkt p = {};

	if (!udp_sock(sk) || !parse_skb(skb, &p))
		return 0;
	/* IP fills in its length field after this point; the skb starts at the IP header. */
	p.ip_plength = BPF_CORE_READ(skb, len) - p.ip_hlen;
	packet_sent(probed_cookie(sk), &p);
	return 0;
}

/* The datagram passed its header and checksum checks and is about to be queued. */
static __always_inline int on_enqueue(struct sock *sk, struct sk_buff *skb)
{
	struct delivery *d;
	struct pkt p = {};
	__u64 cookie;
	__u32 zero = 0;

	if (!parse_skb(skb, &p))
		return 0;
	cookie = probed_cookie(sk);
	d = bpf_map_lookup_elem(&last_delivery, &zero);
	if (d) {
		d->skb = (__u64)skb;
		d->cookie = cookie;
	}
	packet_received(cookie, &p);
	return 0;
}

/* fentry backend: the IP transmit functions UDP ends in, and UDP's enqueue. */
SEC("fentry/ip_send_skb")
int BPF_PROG(fentry_ip_send_skb, void *net, struct sk_buff *skb)
{
	return on_transmit(skb);
}

SEC("fentry/ip6_send_skb")
int BPF_PROG(fentry_ip6_send_skb, struct sk_buff *skb)
{
	return on_transmit(skb);
}

SEC("fentry/__udp_enqueue_schedule_skb")
int BPF_PROG(fentry_udp_enqueue, struct sock *sk, struct sk_buff *skb)
{
	return on_enqueue(sk, skb);
}

/* kprobe backend: the same. */
SEC("kprobe/ip_send_skb")
int BPF_KPROBE(kp_ip_send_skb, void *net, struct sk_buff *skb)
{
	return on_transmit(skb);
}

SEC("kprobe/ip6_send_skb")
int BPF_KPROBE(kp_ip6_send_skb, struct sk_buff *skb)
{
	return on_transmit(skb);
}

SEC("kprobe/__udp_enqueue_schedule_skb")
int BPF_KPROBE(kp_udp_enqueue, struct sock *sk, struct sk_buff *skb)
{
	return on_enqueue(sk, skb);
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

SEC("cgroup_skb/egress")
int packet_egress(struct __sk_buff *skb)
{
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
		read_task_btf(&t.cgroup_id, &t.uid, t.comm);
	} else {
		t.cgroup_id = bpf_get_current_cgroup_id();
		t.uid = bpf_get_socket_uid(skb);
		BPF_CORE_READ_INTO(&t.comm, (struct task_struct *)bpf_get_current_task(), comm);
	}
	emit_packet(UDP_EVENT_PACKET_SEND, false, bpf_get_socket_cookie(skb), &p, 0, &t);
	return 1; /* never interfere with the traffic */
}

SEC("cgroup_skb/ingress")
int packet_ingress(struct __sk_buff *skb)
{
	struct pkt p = {};

	if (!skb_of_udp_sock(skb) || !parse_skb_data(skb, &p))
		return 1;
	packet_received(bpf_get_socket_cookie(skb), &p);
	return 1;
}

/*
 * Drops: every UDP datagram the kernel frees as dropped, with the reason.
 * Arriving ones (skb_iif set) belong to the socket they were for.
 */
SEC("tp_btf/kfree_skb")
int BPF_PROG(kfree_skb, struct sk_buff *skb, void *location, int reason)
{
	struct delivery *d;
	struct task_ctx t;
	struct sock *sk;
	struct pkt p = {};
	__u32 zero = 0;
	__u64 cookie;
	bool inbound;

	/* A raw socket's copy of a UDP datagram is not a UDP datagram dropped. */
	sk = BPF_CORE_READ(skb, sk);
	if ((sk && !udp_sock(sk)) || !parse_skb(skb, &p))
		return 0;
	inbound = BPF_CORE_READ(skb, skb_iif) != 0;
	if (!sk && inbound && kfree_skb_has_rx_sk)
		sk = (struct sock *)ctx[3];
	cookie = probed_cookie(sk);
	d = bpf_map_lookup_elem(&last_delivery, &zero);
	if (!cookie && d && d->skb == (__u64)skb &&
	    (reason == reason_rcvbuff || reason == reason_proto_mem)) {
		cookie = d->cookie;
		d->skb = 0;
	}
	if (inbound)
		owner_of(cookie, &t);
	else
		current_task(&t);
	emit_packet(UDP_EVENT_DROP, inbound, cookie, &p, reason, &t);
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
