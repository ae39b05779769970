/* SPDX-License-Identifier: GPL-2.0 */
/*
 * `udptrace count`: events added up in the kernel instead of emitted.
 *
 * A key made of ports, pid, event kind and task name (anything but addresses,
 * cgroups and network namespaces, drop reasons of drops and errnos of
 * failed calls) is compact (struct compact_key), and counts in a slot of
 * `count_slots`: a small per-CPU array where each key has one place, by a
 * hash of it, which the first event with that key on that CPU claims. That
 * costs an array index and a compare where a hash table costs a hash over
 * the whole key and a bucket walk. A key whose place another key holds, and
 * every other key, counts in the `counts` hash table. User space adds up
 * both.
 */
#ifndef __UDPTRACE_COUNT_H
#define __UDPTRACE_COUNT_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "udptrace.h"
#include "stats.h"

/*
 * Adds to a counter atomically without reading it back: the one atomic
 * instruction every kernel accepts. Written in assembly because clang turns
 * an add of a value it knows is 0 into an atomic or, which kernels before
 * Linux 5.12 refuse.
 */
static __always_inline void add_u64(__u64 *counter, __u64 v)
{
	asm volatile("lock *(u64 *)(%0 + 0) += %1" : : "r"(counter), "r"(v) : "memory");
}

#include "hist.h"

/* Aggregate events by these fields (enum count_field) instead of emitting them. */
const volatile bool count_mode = false;
const volatile __u16 count_keys = 0;

/*
 * The keys that are never compact; a drop's reason neither (no other event
 * has one), nor a failed call's errno.
 */
#define COUNT_WIDE_KEYS (COUNT_SADDR | COUNT_DADDR | COUNT_CGROUP | COUNT_NETNS)

/*
 * The table of every key, per CPU: a sender and its receiver on two CPUs
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

/* The slots of compact keys (struct count_slot), per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, COUNT_SLOTS);
	__type(key, __u32);
	__type(value, struct count_slot);
} count_slots SEC(".maps");

/* Count mode builds an event and its key here, not in ring-buffer space or on the stack. */
struct count_scratch {
	struct udp_event event;
	struct count_key key;
	/* With a histogram: what the event adds to it (hist.h), if anything. */
	__u64 hist_value;
	__u64 hist_known;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct count_scratch);
} scratch SEC(".maps");

/* Whether sends and receives count under compact keys: histograms have none. */
static __always_inline bool compact_keys(void)
{
	return !(count_keys & COUNT_WIDE_KEYS) && hist_kind == HIST_NONE;
}

/* Whether an event of `kind` that returned `ret` counts under a compact key. */
static __always_inline bool compact_key_fits(__u8 kind, __s32 ret)
{
	if (!compact_keys())
		return false;
	if (kind == UDP_EVENT_DROP)
		return !(count_keys & COUNT_REASON);
	return !((count_keys & COUNT_ERRNO) && ret < 0);
}

/*
 * The compact key of an event of `kind`, from its local and remote ports,
 * `pid` and task name (read only when the key has it).
 */
static __always_inline void compact_key_of(struct compact_key *k, __u8 kind, bool inbound,
					   __u16 lport, __u16 rport, __u32 pid, const char *comm)
{
	__u64 w = 0;

	if (count_keys & COUNT_DPORT)
		w |= inbound ? lport : rport;
	if (count_keys & COUNT_SPORT)
		w |= (__u64)(inbound ? rport : lport) << COMPACT_SPORT_SHIFT;
	if (count_keys & COUNT_PID)
		w |= (__u64)(pid & COMPACT_PID_MASK) << COMPACT_PID_SHIFT;
	if (count_keys & COUNT_EVENT)
		w |= (__u64)kind << COMPACT_KIND_SHIFT;
	k->word = w;
	if (count_keys & COUNT_COMM)
		__builtin_memcpy(k->comm, comm, TASK_COMM_LEN);
	else
		__builtin_memset(k->comm, 0, TASK_COMM_LEN);
}

/* A key's place in `count_slots`: the top bits of a multiplicative hash. */
static __always_inline __u32 slot_of(const struct compact_key *k)
{
	__u64 h = k->word, c[2];

	if (count_keys & COUNT_COMM) {
		__builtin_memcpy(c, k->comm, sizeof(c));
		h ^= c[0] * 0xff51afd7ed558ccdULL;
		h ^= c[1] * 0xc4ceb9fe1a85ec53ULL;
	}
	return (h * 0x9e3779b97f4a7c15ULL) >> (64 - COUNT_SLOT_BITS);
}

static __always_inline bool same_compact_key(const struct compact_key *a,
					     const struct compact_key *b)
{
	__u64 x[2], y[2];

	if (a->word != b->word)
		return false;
	if (!(count_keys & COUNT_COMM))
		return true;
	__builtin_memcpy(x, a->comm, sizeof(x));
	__builtin_memcpy(y, b->comm, sizeof(y));
	return x[0] == y[0] && x[1] == y[1];
}

/*
 * Counts under `k` in its slot on this CPU, claiming the slot if free;
 * false if another key holds it. A program that interrupts this one on the
 * same CPU (a drop in a softirq) may count in the same slot: the claim is a
 * compare-and-swap and the adds are atomic.
 */
static __always_inline bool count_in_slot(const struct compact_key *k, __u64 bytes)
{
#ifdef UDPTRACE_NO_ATOMICS
	/* Claiming a slot takes compare-and-swap: every key counts in the table. */
	return false;
#else
	__u32 idx = slot_of(k);
	struct count_slot *s = bpf_map_lookup_elem(&count_slots, &idx);

	if (!s)
		return false;
	if (s->state == COUNT_SLOT_READY) {
		if (!same_compact_key(&s->key, k))
			return false;
		add_u64(&s->value.events, 1);
		add_u64(&s->value.bytes, bytes);
		return true;
	}
	if (__sync_val_compare_and_swap(&s->state, COUNT_SLOT_FREE, COUNT_SLOT_CLAIMED) !=
	    COUNT_SLOT_FREE)
		return false; /* being claimed by the program this one interrupted */
	s->key = *k;
	s->value.events = 1;
	s->value.bytes = bytes;
	/* Ordered after the key and value: user space reads only ready slots. */
	__sync_lock_test_and_set(&s->state, COUNT_SLOT_READY);
	return true;
#endif
}

/* Adds one event of `bytes` under the key in `k` to the `counts` table. */
static __always_inline void count_in_table(const struct count_key *k, __u64 bytes)
{
	struct count_value one = { .events = 1, .bytes = bytes }, *v;

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
	add_u64(&v->events, 1);
	add_u64(&v->bytes, bytes);
}

/* Counts an event under the compact key `k`: in its slot, or else in the table. */
static __always_inline void count_compact(const struct compact_key *k, __u64 bytes)
{
	struct count_scratch *cs;
	struct count_key *wide;
	__u32 zero = 0;

	if (count_in_slot(k, bytes))
		return;
	cs = bpf_map_lookup_elem(&scratch, &zero);
	if (!cs)
		return;
	wide = &cs->key;
	__builtin_memset(wide, 0, sizeof(*wide));
	wide->dport = (__u16)k->word;
	wide->sport = (__u16)(k->word >> COMPACT_SPORT_SHIFT);
	wide->pid = (k->word >> COMPACT_PID_SHIFT) & COMPACT_PID_MASK;
	wide->kind = (k->word >> COMPACT_KIND_SHIFT) & 0xff;
	__builtin_memcpy(wide->comm, k->comm, TASK_COMM_LEN);
	count_in_table(wide, bytes);
}

static __always_inline bool is_inbound(const struct udp_event *e)
{
	return e->kind == UDP_EVENT_RECV || e->kind == UDP_EVENT_PACKET_RECV ||
	       (e->kind == UDP_EVENT_DROP && e->detail.packet.inbound);
}

/* Adds the event built in `cs` to the count under the fields count_keys selects. */
static __always_inline void count_event(struct count_scratch *cs)
{
	const struct udp_event *e = &cs->event;
	struct count_key *k = &cs->key;
	__u64 bytes = e->ret > 0 ? e->ret : 0;
	bool in = is_inbound(e);

	if (compact_key_fits(e->kind, e->ret)) {
		struct compact_key ck;

		compact_key_of(&ck, e->kind, in, e->lport, e->rport, e->pid, e->comm);
		count_compact(&ck, bytes);
		return;
	}
	__builtin_memset(k, 0, sizeof(*k));
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
	if (count_keys & COUNT_CGROUP)
		k->cgroup = e->cgroup_id;
	if (count_keys & COUNT_NETNS)
		k->netns = e->netns;
	if ((count_keys & COUNT_ERRNO) && e->ret < 0 && e->kind != UDP_EVENT_DROP)
		k->err = -e->ret;
	if (hist_kind != HIST_NONE && cs->hist_known)
		hist_add(k, cs->hist_value);
	if (hist_kind == HIST_NONE || hist_counts)
		count_in_table(k, bytes);
}

#endif /* __UDPTRACE_COUNT_H */
