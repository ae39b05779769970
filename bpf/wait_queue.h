/* SPDX-License-Identifier: GPL-2.0 */
/*
 * How long each received datagram waited in its socket's receive queue
 * (`udptrace latency`), on the tracepoint backend: no hook sees the datagram
 * a receive takes, but a socket's queue is FIFO, so each socket keeps a ring
 * of arrival stamps in its local storage (noted at cgroup_skb ingress, just
 * before UDP queues the datagram) and each receive takes the oldest. A
 * datagram the socket refuses takes its stamp back (the refusal follows its
 * ingress on the same CPU). Whenever the ring and the queue disagree
 * (datagrams queued before tracing began, a full ring, notes a millisecond
 * old with nothing queued: a drop no hook saw), the socket is unsure: its
 * receives' waits are unknown, and counted as such, until its queue is empty
 * with no datagram on its way, when it starts afresh. The fentry and kprobe
 * backends' way is in wait_stamps.h.
 */
#ifndef __UDPTRACE_WAIT_QUEUE_H
#define __UDPTRACE_WAIT_QUEUE_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "udptrace.h"
#include "sender.h"

/* Tracepoint backend: keep each socket's ring of arrival stamps. */
const volatile bool queue_waits = false;
/*
 * Notes a socket's ring may hold beyond its queued datagrams without
 * disagreeing: those of datagrams between ingress and the queue, and of
 * receives between taking a datagram and their hook (two per CPU).
 */
const volatile __u32 wait_slack = 4;

#define WAIT_RING 512
/* A refused datagram's stamp: never a real one (the clock has run longer). */
#define WAIT_VOID 1ULL
/*
 * Notes this old with nothing queued are no datagram's on its way (ingress
 * to the queue takes microseconds): a drop no hook saw left them.
 */
#define WAIT_STALE_NS 1000000ULL

/* One socket's arrival stamps, by note index modulo WAIT_RING. */
struct wait_queue {
	__u64 head; /* the next note a receive takes */
	__u64 tail; /* the next note's index */
	__u64 voided; /* notes between head and tail voided by refusals */
	__u64 unsure;
	/* Notes below this index follow a fresh start made with notes in flight: unknown. */
	__u64 guard;
	__u64 last_note_ns;
	__u64 started; /* the socket's first note checked its queue */
	__u64 stamps[WAIT_RING]; /* 0: taken or never written */
};

/* Each socket's own (freed with it). */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct wait_queue);
} wait_queues SEC(".maps");

/* This CPU's last note, which a refusal that follows it voids. */
struct last_note {
	__u64 cookie;
	__u64 index;
	__u64 stamp;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct last_note);
} last_notes SEC(".maps");

#ifdef UDPTRACE_NO_ATOMICS
/* Kernels without compare-and-swap have no length tracepoints either: never used. */
static __always_inline void note_arrival(__u64 cookie, struct bpf_sock *bsk, struct sock *sk)
{
}

static __always_inline void void_refused(__u64 cookie, struct sock *sk)
{
}

static __always_inline bool take_queued_wait(struct sock *sk, __u64 *wait)
{
	return false;
}
#else
/*
 * Nothing queued: the ring forgets its notes and the socket is sure again.
 * A note made within WAIT_STALE_NS may be of a datagram still on its way to
 * the queue, whose receive would take the next note: the notes up to the
 * next one are unknown.
 */
static __always_inline void start_waits_afresh(struct wait_queue *q, struct sock *sk, __u64 now)
{
	__u64 tail = q->tail;

	if (queued_datagrams(sk))
		return;
	q->guard = now - q->last_note_ns < WAIT_STALE_NS ? tail + 1 : 0;
	q->head = tail;
	q->voided = 0;
	q->unsure = 0;
}

/*
 * A datagram for the socket of `cookie` is about to be queued (`bsk` for its
 * storage, `sk` for its queue).
 */
static __always_inline void note_arrival(__u64 cookie, struct bpf_sock *bsk, struct sock *sk)
{
	struct last_note *last;
	struct wait_queue *q;
	__u64 idx, now;
	__u32 zero = 0;

	if (!queue_waits || !bsk || !sk)
		return;
	q = bpf_sk_storage_get(&wait_queues, bsk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!q)
		return; /* no memory: its receives find no ring */
	now = bpf_ktime_get_ns();
	if (!q->started) {
		q->started = 1;
		/* Datagrams queued before the first note have none. */
		if (queued_datagrams(sk))
			q->unsure = 1;
	} else if ((q->unsure || q->tail != q->head) && !queued_datagrams(sk) &&
		   now - q->last_note_ns > WAIT_STALE_NS) {
		/* Old notes, nothing queued, nothing on its way: start afresh. */
		start_waits_afresh(q, sk, now);
	}
	q->last_note_ns = now;
	idx = __sync_fetch_and_add(&q->tail, 1);
	if (idx - q->head >= WAIT_RING) {
		q->unsure = 1; /* full: this datagram has no stamp */
		return;
	}
	q->stamps[idx & (WAIT_RING - 1)] = now;
	last = bpf_map_lookup_elem(&last_notes, &zero);
	if (last) {
		last->cookie = cookie;
		last->index = idx;
		last->stamp = now;
	}
}

/* The socket of `cookie` refused the datagram this CPU noted last: its stamp is void. */
static __always_inline void void_refused(__u64 cookie, struct sock *sk)
{
	struct last_note *last;
	struct wait_queue *q;
	__u32 zero = 0;

	if (!queue_waits)
		return;
	last = bpf_map_lookup_elem(&last_notes, &zero);
	if (!last || last->cookie != cookie)
		return;
	last->cookie = 0;
	q = bpf_sk_storage_get(&wait_queues, sk, 0, 0);
	if (!q)
		return;
	/*
	 * Still the newest note (a flood's refusals are, one after another):
	 * taken back, its slot free again. Else voided, for the receive that
	 * reaches it to skip; that fails if a receive took the stamp first (the
	 * ring and the queue then disagree).
	 */
	if (__sync_val_compare_and_swap(&q->tail, last->index + 1, last->index) ==
	    last->index + 1)
		return;
	if (__sync_val_compare_and_swap(&q->stamps[last->index & (WAIT_RING - 1)], last->stamp,
					WAIT_VOID) == last->stamp)
		__sync_fetch_and_add(&q->voided, 1);
}

/*
 * A receive on `sk` took a datagram: its wait into `wait`, from the oldest
 * stamp; false if unknown.
 */
static __always_inline bool take_queued_wait(struct sock *sk, __u64 *wait)
{
	__u64 h = 0, s, notes, queued, now;
	struct wait_queue *q;
	bool found = false;
	int i;

	if (!queue_waits)
		return false;
	q = bpf_sk_storage_get(&wait_queues, sk, 0, 0);
	if (!q)
		return false;
	now = bpf_ktime_get_ns();
	if (q->unsure) {
		start_waits_afresh(q, sk, now);
		return false;
	}
	/* The oldest note not voided; a run of voids longer than this disagrees. */
	for (i = 0; i < 32; i++) {
		h = q->head;
		if (h >= q->tail)
			break; /* no note: the datagram came before the ring */
		if (__sync_val_compare_and_swap(&q->head, h, h + 1) != h)
			continue; /* another receive took it */
		s = __sync_lock_test_and_set(&q->stamps[h & (WAIT_RING - 1)], 0);
		if (s == WAIT_VOID) {
			__sync_fetch_and_sub(&q->voided, 1);
			continue;
		}
		if (s) {
			*wait = now - s;
			found = true;
		}
		break;
	}
	/*
	 * The notes left must be the queue's, but for those on their way to it
	 * or of receives under way; old notes with nothing queued are a drop's
	 * that no hook saw, and the note just taken may have been one.
	 */
	notes = q->tail - q->head - q->voided;
	queued = queued_datagrams(sk);
	if (!found || notes < queued || notes > queued + wait_slack ||
	    (!queued && notes && now - q->last_note_ns > WAIT_STALE_NS)) {
		q->unsure = 1;
		start_waits_afresh(q, sk, now);
		return false;
	}
	return h >= q->guard;
}
#endif

#endif /* __UDPTRACE_WAIT_QUEUE_H */
