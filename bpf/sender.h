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
 * (cgroup_skb ingress, before UDP queues them): while every datagram queued
 * since the queue was last empty came from one sender, a receive gets that
 * sender, whichever datagram it took. When two senders' datagrams may be
 * queued at once, the receive's sender is unknown, unless the caller asked
 * for it (cgroup/recvmsg4|6).
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

/* Tracepoint backend: infer receives' senders from the datagrams queued. */
const volatile bool senders_from_queue = false;

/* fentry/kprobe: the datagram a receive hands over, in the receiving thread. */
static __always_inline void note_dequeued_sender(__u64 cookie, struct sk_buff *skb, int len)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	static const struct peer none = {};
	struct pkt pkt = {};
	struct peer *p;

	/* A peek (negative length) leaves the datagram queued: not a receive. */
	if (len < 0 || !parse_skb(skb, &pkt))
		return;
	p = bpf_map_lookup_elem(&peer_by_tid, &tid);
	if (!p) {
		bpf_map_update_elem(&peer_by_tid, &tid, &none, BPF_NOEXIST);
		p = bpf_map_lookup_elem(&peer_by_tid, &tid);
		if (!p)
			return;
	}
	__builtin_memcpy(p->addr, pkt.saddr, 16);
	p->port = pkt.sport;
	p->cookie = cookie;
}

static __always_inline bool same_addr(const __u8 a[16], const __u8 b[16])
{
	for (int i = 0; i < 16; i++)
		if (a[i] != b[i])
			return false;
	return true;
}

/*
 * Tracepoint backend, cgroup_skb ingress: a datagram for the socket `cookie`
 * is about to be queued. The first datagram of an empty queue sets the
 * sender; any other sender makes the queue mixed until it empties again.
 * Lock-free: the noter that found the queue empty checks, after writing the
 * sender, that nobody noted one meanwhile (who may have compared against the
 * old sender), and marks the queue mixed if someone did.
 */
static __always_inline void note_queued_sender(__u64 cookie, const struct pkt *pkt)
{
	struct sock_state *st = bpf_map_lookup_elem(&sock_states, &cookie);
	struct queued_senders *q;

	if (!st)
		return; /* first seen now: its queue is unsure anyway */
	q = &st->senders;
	if (__sync_fetch_and_add(&q->queued, 1) == 0) {
		__builtin_memcpy(q->addr, pkt->saddr, 16);
		q->port = pkt->sport;
		q->mixed = 0;
		/* A full barrier, then the count again. */
		if (__sync_fetch_and_add(&q->queued, 0) != 1)
			q->mixed = 1;
		return;
	}
	if (q->port != pkt->sport || !same_addr(q->addr, pkt->saddr))
		q->mixed = 1;
}

/* Whether nothing is queued on the socket (tracepoint programs: `sk` is BTF-typed). */
static __always_inline bool queue_empty(struct sock *sk)
{
	return sk->sk_receive_queue.qlen == 0 &&
	       BPF_CORE_READ((struct udp_sock *)sk, reader_queue.qlen) == 0;
}

/*
 * Tracepoint backend, a send: a socket first seen with nothing queued has
 * every datagram queued from then on noted (clients send first). Only a
 * datagram already past ingress but not yet queued at that instant escapes.
 */
static __always_inline void settle_queue(struct sock *sk, __u64 cookie)
{
	struct sock_state *st = sock_state_of(cookie);

	if (st && st->senders.unsure && queue_empty(sk))
		st->senders.unsure = 0;
}

/*
 * Tracepoint backend: a receive has taken one datagram off the socket. Fills
 * in its sender and returns true when every datagram queued could only have
 * come from one sender.
 *
 * A socket that existed before tracing began may hold datagrams nobody noted
 * (`unsure`): none is attributed until its queue is seen empty. Noting stays
 * an upper bound of what is queued (a datagram the socket refuses after
 * ingress stays counted), so a queue that is mixed may stay so; it is never
 * wrongly single.
 */
static __always_inline bool queued_sender(struct sock *sk, __u64 cookie, struct sock_addrs *a)
{
	struct sock_state *st = sock_state_of(cookie);
	struct queued_senders *q;
	__u8 addr[16];
	bool single;
	__u16 port;
	__u64 n;

	if (!st)
		return false;
	q = &st->senders;
	if (q->unsure) {
		/*
		 * Noted datagrams received meanwhile were not taken off the
		 * count: it stays an upper bound.
		 */
		if (queue_empty(sk))
			q->unsure = 0;
		return false;
	}
	/* Read before this datagram leaves the count: no new sender can be set meanwhile. */
	single = !q->mixed;
	__builtin_memcpy(addr, q->addr, 16);
	port = q->port;
	n = q->queued;
	for (int i = 0; i < 4; i++) {
		__u64 seen;

		if (n == 0) {
			/* Received without being noted: what else is queued is unknown. */
			q->unsure = 1;
			return false;
		}
		seen = __sync_val_compare_and_swap(&q->queued, n, n - 1);
		if (seen == n)
			break;
		n = seen;
	}
	/* (Contended four times: the count stays high, which is safe.) */
	if (single) {
		__builtin_memcpy(a->raddr, addr, 16);
		a->rport = port;
	}
	return single;
}

#endif /* __UDPTRACE_SENDER_H */
