/* SPDX-License-Identifier: GPL-2.0 */
/* The `stats` counters: what is counted instead of emitted, and lost events. */
#ifndef __UDPTRACE_STATS_H
#define __UDPTRACE_STATS_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "udptrace.h"

/* Per CPU, by enum udp_stat. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, UDP_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

static __always_inline void stat_inc(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &idx);

	if (v)
		*v += 1;
}

#endif /* __UDPTRACE_STATS_H */
