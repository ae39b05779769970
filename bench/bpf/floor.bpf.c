// SPDX-License-Identifier: GPL-2.0
/*
 * The hook floor: the cheapest program that can sit on each hook udptrace
 * uses. Each adds one to a per-CPU slot and lets the call through; the
 * benchmark loads the ones on the hooks a udptrace mode attaches, so that
 * what the mode costs above this is what its programs do.
 */

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} hits SEC(".maps");

static __always_inline void hit(void)
{
	__u32 zero = 0;
	__u64 *n = bpf_map_lookup_elem(&hits, &zero);

	if (n)
		*n += 1;
}

/* Tracing programs: their return value is ignored. */
#define FLOOR_TRACING(sec, name)            \
	SEC(sec)                            \
	int BPF_PROG(name)                  \
	{                                   \
		hit();                      \
		return 0;                   \
	}

FLOOR_TRACING("tp_btf/sock_send_length", tp_send_length)
FLOOR_TRACING("tp_btf/sock_recv_length", tp_recv_length)
FLOOR_TRACING("tp_btf/kfree_skb", kfree_skb)
FLOOR_TRACING("tp_btf/udp_fail_queue_rcv_skb", udp_fail_queue)
FLOOR_TRACING("fexit/udp_sendmsg", fexit_udp_sendmsg)
FLOOR_TRACING("fexit/udpv6_sendmsg", fexit_udpv6_sendmsg)
FLOOR_TRACING("fexit/udp_recvmsg", fexit_udp_recvmsg)
FLOOR_TRACING("fexit/udpv6_recvmsg", fexit_udpv6_recvmsg)
FLOOR_TRACING("fentry/ip_send_skb", fentry_ip_send_skb)
FLOOR_TRACING("fentry/ip6_send_skb", fentry_ip6_send_skb)
FLOOR_TRACING("fentry/__udp_enqueue_schedule_skb", fentry_udp_enqueue)
FLOOR_TRACING("fentry/skb_consume_udp", fentry_skb_consume_udp)

#define FLOOR_KPROBE(sec, name)             \
	SEC(sec)                            \
	int name(struct pt_regs *ctx)       \
	{                                   \
		hit();                      \
		return 0;                   \
	}

FLOOR_KPROBE("kprobe/udp_sendmsg", kp_udp_sendmsg)
FLOOR_KPROBE("kretprobe/udp_sendmsg", krp_udp_sendmsg)
FLOOR_KPROBE("kprobe/udpv6_sendmsg", kp_udpv6_sendmsg)
FLOOR_KPROBE("kretprobe/udpv6_sendmsg", krp_udpv6_sendmsg)
FLOOR_KPROBE("kprobe/udp_recvmsg", kp_udp_recvmsg)
FLOOR_KPROBE("kretprobe/udp_recvmsg", krp_udp_recvmsg)
FLOOR_KPROBE("kprobe/udpv6_recvmsg", kp_udpv6_recvmsg)
FLOOR_KPROBE("kretprobe/udpv6_recvmsg", krp_udpv6_recvmsg)
FLOOR_KPROBE("kprobe/ip_send_skb", kp_ip_send_skb)
FLOOR_KPROBE("kprobe/ip6_send_skb", kp_ip6_send_skb)
FLOOR_KPROBE("kprobe/__udp_enqueue_schedule_skb", kp_udp_enqueue)
FLOOR_KPROBE("kprobe/skb_consume_udp", kp_skb_consume_udp)

/* cgroup programs: 1 lets the call or the packet through. */
#define FLOOR_CGROUP(sec, name, ctx_type)   \
	SEC(sec)                            \
	int name(ctx_type *ctx)             \
	{                                   \
		hit();                      \
		return 1;                   \
	}

FLOOR_CGROUP("cgroup/sock_create", sock_create, struct bpf_sock)
FLOOR_CGROUP("cgroup/sock_release", sock_release, struct bpf_sock)
FLOOR_CGROUP("cgroup/sendmsg4", sendmsg4, struct bpf_sock_addr)
FLOOR_CGROUP("cgroup/sendmsg6", sendmsg6, struct bpf_sock_addr)
FLOOR_CGROUP("cgroup/recvmsg4", recvmsg4, struct bpf_sock_addr)
FLOOR_CGROUP("cgroup/recvmsg6", recvmsg6, struct bpf_sock_addr)
FLOOR_CGROUP("cgroup/connect4", connect4, struct bpf_sock_addr)
FLOOR_CGROUP("cgroup/connect6", connect6, struct bpf_sock_addr)
FLOOR_CGROUP("cgroup_skb/ingress", packet_ingress, struct __sk_buff)
FLOOR_CGROUP("cgroup_skb/egress", packet_egress, struct __sk_buff)
