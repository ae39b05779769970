/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The reasons of UDP's own drops on kernels whose kfree_skb gives none
 * (before Linux 5.17), from what the kernel does just before it frees the
 * datagram, on the same CPU: UDP's enqueue refuses it (its return value says
 * whether for the socket's receive buffer or for UDP's memory), it answers a
 * datagram for a port no socket has with an ICMP port unreachable
 * (__icmp_send, icmp6_send), and a datagram whose checksum is wrong fails
 * __skb_checksum_complete.
 */
#ifndef __UDPTRACE_DROP_CAUSE_H
#define __UDPTRACE_DROP_CAUSE_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "udptrace.h"

/*
 * This kernel's codes (or udptrace's own where it has none, drop_reason.rs)
 * for the drops udptrace tells apart.
 */
const volatile __u32 reason_rcvbuff = 0xffffffff;
const volatile __u32 reason_proto_mem = 0xffffffff;
const volatile __u32 reason_no_socket = 0xffffffff;
const volatile __u32 reason_udp_csum = 0xffffffff;
/* The reason of a drop whose cause is not known. */
const volatile __u32 reason_not_specified = 0xffffffff;

#define ICMP_DEST_UNREACH 3
#define ICMP_PORT_UNREACH 3
#define ICMPV6_DEST_UNREACH 1
#define ICMPV6_PORT_UNREACH 4
#define ENOBUFS 105

/*
 * The free follows its cause within microseconds on the same CPU; a note
 * older than this (emulated machines are slow) is of an sk_buff whose
 * address was reused.
 */
#define DROP_CAUSE_MAX_AGE_NS (10ULL * 1000 * 1000)

struct drop_cause {
	__u64 skb;
	__u64 ts_ns;
	__u64 cookie; /* the socket that refused it, or 0 */
	__u32 reason;
};

/* The last cause noted on each CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct drop_cause);
} drop_causes SEC(".maps");

static __always_inline void note_drop_cause(__u64 skb, __u32 reason, __u64 cookie)
{
	__u32 zero = 0;
	struct drop_cause *c = bpf_map_lookup_elem(&drop_causes, &zero);

	if (c) {
		c->skb = skb;
		c->ts_ns = bpf_ktime_get_ns();
		c->cookie = cookie;
		c->reason = reason;
	}
}

/* An ICMP error about `skb`: a port unreachable tells its datagram had no socket. */
static __always_inline void note_icmp(__u64 skb, int type, int code, bool v6)
{
	if (v6 ? type == ICMPV6_DEST_UNREACH && code == ICMPV6_PORT_UNREACH
	       : type == ICMP_DEST_UNREACH && code == ICMP_PORT_UNREACH)
		note_drop_cause(skb, reason_no_socket, 0);
}

/* UDP's enqueue returned `rc` for `skb`, for the socket `cookie`: not 0 if it refused it. */
static __always_inline void note_enqueued(__u64 skb, int rc, __u64 cookie)
{
	if (rc)
		note_drop_cause(skb, rc == -ENOBUFS ? reason_proto_mem : reason_rcvbuff, cookie);
}

/*
 * The reason noted for `skb` on this CPU moments ago (taken), and its
 * socket's cookie into `cookie` where it has one; else `otherwise`.
 */
static __always_inline __u32 drop_cause_of(__u64 skb, __u32 otherwise, __u64 *cookie)
{
	__u32 zero = 0;
	struct drop_cause *c = bpf_map_lookup_elem(&drop_causes, &zero);

	if (!c || c->skb != skb || bpf_ktime_get_ns() - c->ts_ns > DROP_CAUSE_MAX_AGE_NS)
		return otherwise;
	c->skb = 0;
	if (c->cookie)
		*cookie = c->cookie;
	return c->reason;
}

#endif /* __UDPTRACE_DROP_CAUSE_H */
