/* SPDX-License-Identifier: GPL-2.0 */
/*
 * How long each received datagram waited in its socket's receive queue,
 * from UDP queueing it to the receive that takes it off (`udptrace
 * latency`), on the fentry and kprobe backends: UDP's enqueue stamps each
 * datagram, keyed by its sk_buff, and skb_consume_udp(), in the receiving
 * thread, takes the stamp of the datagram it hands over and leaves the wait
 * with its sender (sender.h). Exact whatever the order of enqueues on
 * several CPUs; a datagram dropped or left queued at close leaves a stamp
 * that the LRU table forgets. The tracepoint backend's way is in
 * wait_queue.h.
 */
#ifndef __UDPTRACE_WAIT_STAMPS_H
#define __UDPTRACE_WAIT_STAMPS_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

/* fentry/kprobe: stamp datagrams as UDP queues them. */
const volatile bool stamp_waits = false;

/* Enqueue time by sk_buff address; sized at load (one entry when unused). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, __u64);
} wait_stamps SEC(".maps");

static __always_inline void stamp_enqueued(__u64 skb)
{
	__u64 now;

	if (!stamp_waits)
		return;
	now = bpf_ktime_get_ns();
	bpf_map_update_elem(&wait_stamps, &skb, &now, BPF_ANY);
}

/* The wait of the datagram `skb` a receive takes, into `wait`; false if it has no stamp. */
static __always_inline bool take_stamp(__u64 skb, __u64 *wait)
{
	__u64 *stamp;

	if (!stamp_waits)
		return false;
	stamp = bpf_map_lookup_elem(&wait_stamps, &skb);
	if (!stamp)
		return false;
	*wait = bpf_ktime_get_ns() - *stamp;
	bpf_map_delete_elem(&wait_stamps, &skb);
	return true;
}

#endif /* __UDPTRACE_WAIT_STAMPS_H */
