/* SPDX-License-Identifier: GPL-2.0 */
/*
 * `udptrace latency`: receives added up into power-of-two histograms under
 * a count's key (count.h builds it), with their count, sum and maximum.
 * What is added is a datagram's time in its socket's receive queue (wait.h)
 * or its size. Per CPU, like the counts, so that a server's reading threads
 * never share a cache line.
 */
#ifndef __UDPTRACE_HIST_H
#define __UDPTRACE_HIST_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "udptrace.h"
#include "stats.h"

/* What the histograms add up (enum hist_kind); HIST_NONE: no histogram. */
const volatile __u8 hist_kind = HIST_NONE;
/* Events are counted beside the histograms (`udptrace serve`), not instead. */
const volatile bool hist_counts = false;

/* Sized at load: one entry where no histogram is kept. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct count_key);
	__type(value, struct hist_value);
} hists SEC(".maps");

/* The bucket of `v`: 0 below 1, else 1 + floor(log2(v)), at most the last. */
static __always_inline __u32 bucket_of(__u64 v)
{
	__u32 b = 0;

	if (v >= (1ULL << 32)) {
		v >>= 32;
		b += 32;
	}
	if (v >= (1 << 16)) {
		v >>= 16;
		b += 16;
	}
	if (v >= (1 << 8)) {
		v >>= 8;
		b += 8;
	}
	if (v >= (1 << 4)) {
		v >>= 4;
		b += 4;
	}
	if (v >= (1 << 2)) {
		v >>= 2;
		b += 2;
	}
	if (v >= (1 << 1)) {
		v >>= 1;
		b += 1;
	}
	b += v; /* v is 0 or 1 here: 1 + floor(log2) for v >= 1 */
	return b < HIST_BUCKETS ? b : HIST_BUCKETS - 1;
}

/* Waits are bucketed by microseconds, sizes by bytes. */
static __always_inline __u32 hist_bucket(__u64 value)
{
	return bucket_of(hist_kind == HIST_WAIT ? value / 1000 : value);
}

/*
 * Adds `value` under `k`. The adds are atomic: a program that interrupts
 * this one on the same CPU may add to the same key.
 */
static __always_inline void hist_add(const struct count_key *k, __u64 value)
{
	static const struct hist_value zero = {};
	struct hist_value *h;
	__u32 b = hist_bucket(value);

	h = bpf_map_lookup_elem(&hists, k);
	if (!h) {
		/* Another CPU may add the key first: its copy here starts at zero. */
		bpf_map_update_elem(&hists, k, &zero, BPF_NOEXIST);
		h = bpf_map_lookup_elem(&hists, k);
		if (!h) {
			stat_inc(UDP_STAT_COUNT_FULL);
			return;
		}
	}
	add_u64(&h->count, 1);
	add_u64(&h->sum, value);
	if (value > h->max)
		h->max = value;
	if (b < HIST_BUCKETS)
		add_u64(&h->buckets[b], 1);
}

#endif /* __UDPTRACE_HIST_H */
