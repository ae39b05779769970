/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The sender of every received datagram, whether or not the caller asked for
 * its address.
 *
 * fentry and kprobe backends: skb_consume_udp() runs in the receiving thread,
 * inside udp_recvmsg()/udpv6_recvmsg(), with the datagram it hands over; its
 * sender is left in `peer_by_tid` for the receive hook that follows. Every
 * successful receive passes it, whichever way the data was copied (in one
 * piece, checksummed while copying, or not at all with MSG_TRUNC).
 *
 * Tracepoint backend: no hook sees the datagram at that point (since Linux
 * 6.18 UDP even frees it without the consume_skb tracepoint). So the senders
 * of the datagrams queued to each socket are noted as they arrive
 * (cgroup_skb ingress, before UDP queues them): while every datagram noted
 * since the socket last had none pending came from one sender, a receive
 * gets that sender, whichever datagram it took and whichever thread took
 * it. When two senders' datagrams may be pending at once, the receive's
 * sender is unknown, unless the caller asked for it (cgroup/recvmsg4|6). A
 * socket that existed before tracing began may hold datagrams nobody noted:
 * it is unsure, and no sender is inferred for it until its queue is empty
 * again, when it starts afresh.
 */
#ifndef __UDPTRACE_SENDER_H
#define __UDPTRACE_SENDER_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include "udptrace.h"
#include "sock_state.h"
#include "packet.h"
#include "peer.h"
#include "wait_stamps.h"

/* Tracepoint backend: infer receives' senders from the datagrams queued. */
const volatile bool senders_from_queue = false;

/* fentry/kprobe: the datagram a receive hands over, in the receiving thread. */
static __always_inline void note_dequeued_sender(__u64 cookie, struct sk_buff *skb, int len)
{
	struct pkt pkt = {};
	struct peer *p;

	/*
	 * A peek leaves the datagram queued: not a receive. Its length is
	 * negative, or 0 when nothing was copied, and it holds a reference of
	 * its own (a read of an empty datagram holds none).
	 */
	if (len < 0 || (len == 0 && BPF_CORE_READ(skb, users.refs.counter) > 1) ||
	    !parse_skb(skb, &pkt))
		return;
	p = thread_peer();
	if (!p)
		return;
	__builtin_memcpy(p->addr, pkt.saddr, 16);
	p->port = pkt.sport;
	p->wait_known = take_stamp((__u64)skb, &p->wait_ns);
	p->cookie = cookie;
}

/* The datagrams queued to `sk` as the kernel counts them, in both of UDP's queues. */
static __always_inline __u32 queued_datagrams(struct sock *sk)
{
	return BPF_CORE_READ(sk, sk_receive_queue.qlen) +
	       BPF_CORE_READ((struct udp_sock *)sk, reader_queue.qlen);
}

#ifdef UDPTRACE_NO_ATOMICS
/*
 * The build for kernels without compare-and-swap (before Linux 5.12), which
 * have no length tracepoints either (6.3+): no sender is inferred.
 */
static __always_inline void note_queued_sender(struct sock_state *st, struct sock *sk,
					       const struct pkt *pkt)
{
	/* Reads the queue as the other build does: both must share their types (build.rs). */
	if (st && sk && queued_datagrams(sk))
		st->senders.word |= SENDERS_UNSURE;
}

static __always_inline bool queued_sender(struct sock_state *st, struct sock *sk,
					  struct sock_addrs *a)
{
	return false;
}

static __always_inline void unnote_refused(__u64 cookie)
{
}
#else
static __always_inline __u64 read_once(const __u64 *p)
{
	return *(const volatile __u64 *)p;
}

/*
 * The word a fresh start leaves: nothing pending, sure, and an epoch whose
 * next (the first after the start, 1 modulo 65536) infers no sender. Every
 * 65,536th epoch of a socket is such an epoch by chance: unknown, never
 * wrong.
 */
static __always_inline __u64 fresh_word(__u64 word)
{
	return (((word >> 32) | 0xffff) + 1) << 32;
}

static __always_inline bool first_after_fresh_start(__u64 epoch)
{
	return (epoch & 0xffff) == 1;
}

/*
 * A socket that may hold datagrams nobody noted (`word` as read), with
 * nothing queued: it starts afresh, nothing pending. The swap fails if any
 * note or receive came since `word` was read. Its first epoch after that
 * infers no sender: a datagram noted before the start may still be on its
 * way to the queue, and one taken off it by a receive whose hook has not
 * run yet may be one nobody noted; either would take a count of that epoch.
 */
static __always_inline void start_afresh(struct queued_senders *q, struct sock *sk, __u64 word)
{
	if (!queued_datagrams(sk))
		__sync_val_compare_and_swap(&q->word, word, fresh_word(word));
}

/* Datagrams nobody noted may be queued: no sender is inferred until a fresh start. */
static __always_inline void mark_unsure(struct queued_senders *q)
{
	__sync_fetch_and_or(&q->word, SENDERS_UNSURE);
}

/*
 * Notes pending this long with nothing queued were never queued: they are
 * not on their way to the queue (a few instructions in the softirq that
 * delivers a datagram, microseconds even in an emulated guest). Linux 6.19+
 * drops datagrams of a full buffer from the batch it moves to the queue,
 * after their own enqueue returned, with no udp_fail_queue_rcv_skb: their
 * notes stay pending, and an epoch they keep open never closes.
 */
#define STALE_NOTES_NS (10 * 1000 * 1000ULL)

/*
 * An epoch (`word` as read) whose pending notes are stale can never close:
 * mixed, every receive of it is of unknown sender; of one sender, the next
 * datagram of another makes it mixed. Start afresh.
 */
static __always_inline void drop_stale_notes(struct queued_senders *q, struct sock *sk,
					     __u64 word)
{
	if ((word & SENDERS_PENDING) == 0)
		return;
	if (bpf_ktime_get_ns() - read_once(&q->last_note_ns) >= STALE_NOTES_NS)
		start_afresh(q, sk, word);
}

/*
 * Tracepoint backend, cgroup_skb ingress: a datagram for the socket whose
 * state is `st` is about to be queued. An epoch lasts while the count of noted datagrams
 * not yet received stays above zero: the datagram that opens one (count
 * 0 -> 1) sets the sender and then publishes it (`ready`); any later one of
 * the epoch that finds it unpublished or different marks the epoch mixed.
 * No reset is needed: a datagram's own count keeps its epoch open until it
 * is received, and every mark of its epoch was made before it was queued.
 */
static __always_inline void note_queued_sender(struct sock_state *st, struct sock *sk,
					       const struct pkt *pkt)
{
	struct queued_senders *q;
	__u64 word, epoch, seen;

	if (!st)
		return; /* not in the socket table: no sender is ever inferred */
	q = &st->senders;
	word = read_once(&q->word);
	if (sk) {
		/* Nothing queued yet (this datagram is not): nothing unnoted either. */
		if (word & SENDERS_UNSURE)
			start_afresh(q, sk, word);
		else
			drop_stale_notes(q, sk, word);
	}
	/* Before the count (whose swap orders it): whoever sees the count sees this time too. */
	q->last_note_ns = bpf_ktime_get_ns();
	word = read_once(&q->word);
	for (int i = 0; i < 8; i++) {
		bool opens = (word & SENDERS_PENDING) == 0;
		__u64 next = opens ? (word & ~SENDERS_PENDING) + SENDERS_EPOCH_ONE + 1 : word + 1;

		seen = __sync_val_compare_and_swap(&q->word, word, next);
		if (seen != word) {
			word = seen;
			continue;
		}
		epoch = next >> 32;
		if (opens) {
			__builtin_memcpy(q->addr, pkt->saddr, 16);
			q->port = pkt->sport;
			__sync_lock_test_and_set(&q->ready, epoch); /* after the address */
		} else if (read_once(&q->ready) != epoch || q->port != pkt->sport ||
			   !same_addr(q->addr, pkt->saddr)) {
			q->mixed = epoch;
		}
		return;
	}
	/* Too contended to count: receives can no longer be matched to notes. */
	mark_unsure(q);
}

/*
 * Tracepoint backend: a receive has taken one datagram off `sk`. Fills
 * in its sender (into `a`, unless NULL: known already) and returns true when
 * its epoch had one sender only. A receive the count does not cover
 * (nothing noted is pending), or that leaves queued datagrams the count
 * does not cover, means datagrams were queued unnoted: the socket is unsure
 * until its queue is empty.
 */
static __always_inline bool queued_sender(struct sock_state *st, struct sock *sk,
					  struct sock_addrs *a)
{
	struct queued_senders *q;
	__u64 word, seen, ready, mixed, epoch;
	__u8 addr[16];
	__u16 port;

	if (!st)
		return false;
	q = &st->senders;
	word = read_once(&q->word);
	for (int i = 0; i < 8; i++) {
		if (word & SENDERS_UNSURE) {
			start_afresh(q, sk, word);
			return false;
		}
		if ((word & SENDERS_PENDING) == 0) {
			mark_unsure(q);
			start_afresh(q, sk, word | SENDERS_UNSURE);
			return false;
		}
		/* Read while this datagram's count keeps its epoch open. */
		ready = read_once(&q->ready);
		mixed = read_once(&q->mixed);
		__builtin_memcpy(addr, q->addr, 16);
		port = q->port;
		seen = __sync_val_compare_and_swap(&q->word, word, word - 1);
		if (seen != word) {
			word = seen;
			continue;
		}
		epoch = word >> 32;
		/*
		 * The last pending count taken with datagrams still queued, and
		 * no note since (a note comes before its datagram is queued):
		 * those datagrams are unnoted.
		 */
		if ((word & SENDERS_PENDING) == 1 && queued_datagrams(sk) &&
		    read_once(&q->word) == word - 1) {
			mark_unsure(q);
			return false;
		}
		if (mixed == epoch)
			drop_stale_notes(q, sk, word - 1);
		if (ready != epoch || mixed == epoch || first_after_fresh_start(epoch))
			return false;
		if (!a)
			return true;
		__builtin_memcpy(a->raddr, addr, 16);
		a->rport = port;
		return true;
	}
	mark_unsure(q);
	return false;
}

/*
 * Tracepoint backend: the socket refused a datagram noted at ingress (its
 * receive buffer or UDP's memory was full), so no receive will take it.
 */
static __always_inline void unnote_refused(__u64 cookie)
{
	struct sock_state *st = bpf_map_lookup_elem(&sock_states, &cookie);
	struct queued_senders *q;
	__u64 word, seen;

	if (!st)
		return;
	q = &st->senders;
	word = read_once(&q->word);
	for (int i = 0; i < 8; i++) {
		if ((word & SENDERS_UNSURE) || (word & SENDERS_PENDING) == 0)
			return;
		seen = __sync_val_compare_and_swap(&q->word, word, word - 1);
		if (seen == word)
			return;
		word = seen;
	}
	mark_unsure(q);
}

#endif /* UDPTRACE_NO_ATOMICS */

#endif /* __UDPTRACE_SENDER_H */
