/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The reasons of UDP's own drops on kernels whose kfree_skb gives none
 * (before Linux 5.17), from what the kernel does just before it frees the
 * datagram, on the same CPU: it answers a datagram for a port no socket has
 * with an ICMP port unreachable (__icmp_send, __icmpv6_send), and a datagram
 * whose checksum is wrong fails __skb_checksum_complete. (A datagram its
 * socket refused is known from its delivery: packet.h.)
 */
#ifndef __UDPTRACE_DROP_CAUSE_H
#define __UDPTRACE_DROP_CAUSE_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "udptrace.h"

/* This kernel's codes (or udptrace's own, drop_reason.rs) for the reasons noted here. */
const volatile __u32 reason_no_socket = 0xffffffff;
const volatile __u32 reason_udp_csum = 0xffffffff;

#define ICMP_DEST_UNREACH 3
#define ICMP_PORT_UNREACH 3
#define ICMPV6_DEST_UNREACH 1
#define ICMPV6_PORT_UNREACH 4

struct drop_cause {
	__u64 skb;
	__u32 reason;
};

/* The last cause noted on each CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct drop_cause);
} drop_causes SEC(".maps");

static __always_inline void note_drop_cause(__u64 skb, __u32 reason)
{
	__u32 zero = 0;
	struct drop_cause *c = bpf_map_lookup_elem(&drop_causes, &zero);

	if (c) {
		c->skb = skb;
		c->reason = reason;
	}
}

/* An ICMP error about `skb`: a port unreachable tells its datagram had no socket. */
static __always_inline void note_icmp(__u64 skb, int type, int code, bool v6)
{
	if (v6 ? type == ICMPV6_DEST_UNREACH && code == ICMPV6_PORT_UNREACH
	       : type == ICMP_DEST_UNREACH && code == ICMP_PORT_UNREACH)
		note_drop_cause(skb, reason_no_socket);
}

/* The reason noted for `skb` on this CPU (taken), or `otherwise`. */
static __always_inline __u32 drop_cause_of(__u64 skb, __u32 otherwise)
{
	__u32 zero = 0;
	struct drop_cause *c = bpf_map_lookup_elem(&drop_causes, &zero);

	if (!c || c->skb != skb)
		return otherwise;
	c->skb = 0;
	return c->reason;
}

#endif /* __UDPTRACE_DROP_CAUSE_H */
