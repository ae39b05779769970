/* SPDX-License-Identifier: GPL-2.0 */
/* The socket table: each socket's counters and owner, by cookie, until it closes. */
#ifndef __UDPTRACE_SOCK_STATE_H
#define __UDPTRACE_SOCK_STATE_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include "udptrace.h"
#include "task.h"
#include "emit.h"

/*
 * Tracepoint backend: the senders of the datagrams queued to a socket, as
 * noted on arrival (sender.h).
 */
struct queued_senders {
	/*
	 * One word, changed by compare-and-swap only: the epoch (high 32
	 * bits), SENDERS_UNSURE, and the datagrams noted and not yet received.
	 */
	__u64 word;
	/* The epoch whose sender `addr`/`port` hold, and the last one seen mixed. */
	__u64 ready;
	__u64 mixed;
	/* When the newest note was made (written before its count). */
	__u64 last_note_ns;
	__u8 addr[16];
	__u16 port;
};

/*
 * Datagrams nobody noted may be queued: the socket existed before tracing
 * began, or a receive found the count not covering the queue. Cleared by a
 * fresh start, when its queue is empty.
 */
#define SENDERS_UNSURE (1ULL << 31)
#define SENDERS_PENDING 0x7fffffffULL
#define SENDERS_EPOCH_ONE (1ULL << 32)

/*
 * What udptrace keeps per socket: its counters, its owner (the task that
 * created it, or held it when tracing began), which received packets and
 * drops are attributed to, and the senders of its queued datagrams.
 */
struct sock_state {
	struct sock_counters counters;
	struct task_ctx owner;
	struct queued_senders senders;
	struct sock_life life;
};

/* Keyed by socket cookie; deleted on close. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u64);
	__type(value, struct sock_state);
} sock_states SEC(".maps");

/* Only sock_create knows a socket from its start, with nothing queued. */
static const struct sock_state new_sock_state = { .senders.word = SENDERS_UNSURE };

/* Keep each socket's peers, drops and receive-queue peak (struct sock_life). */
const volatile bool track_sockets = false;

/*
 * A new socket's state, for its caller to give an owner; NULL if the socket
 * has one already (NOEXIST: another CPU may have just created it) or the
 * table is full.
 */
static __always_inline struct sock_state *new_sock_state_of(__u64 cookie)
{
	struct sock_state *st;

	if (bpf_map_update_elem(&sock_states, &cookie, &new_sock_state, BPF_NOEXIST))
		return NULL;
	st = bpf_map_lookup_elem(&sock_states, &cookie);
	if (st)
		st->life.born_ns = bpf_ktime_get_ns();
	return st;
}

/* The socket's state, created with the current task as its owner if new. */
static __always_inline struct sock_state *sock_state_of(__u64 cookie)
{
	struct sock_state *st = bpf_map_lookup_elem(&sock_states, &cookie);

	if (st)
		return st;
	st = new_sock_state_of(cookie);
	if (st) {
		current_task(&st->owner);
		return st;
	}
	/* Another CPU created it meanwhile; NULL if the table is full. */
	return bpf_map_lookup_elem(&sock_states, &cookie);
}

/*
 * Adds one datagram to the counters of a socket's state `st` and returns
 * them; zero when the socket table had no room for it (NULL).
 */
static __always_inline struct sock_counters account(struct sock_state *st, __u8 kind,
						    __s32 bytes)
{
	struct sock_counters zero = {}, *c;

	if (!st)
		return zero;
	c = &st->counters;
	if (bytes >= 0) {
		if (kind == UDP_EVENT_SEND) {
			__sync_fetch_and_add(&c->tx_bytes, bytes);
			__sync_fetch_and_add(&c->tx_packets, 1);
		} else if (kind == UDP_EVENT_RECV) {
			__sync_fetch_and_add(&c->rx_bytes, bytes);
			__sync_fetch_and_add(&c->rx_packets, 1);
		}
	}
	return *c;
}

static __always_inline struct sock_counters counters_of(__u64 cookie)
{
	struct sock_counters zero = {};
	struct sock_state *st = bpf_map_lookup_elem(&sock_states, &cookie);

	return st ? st->counters : zero;
}

/* The state of a socket seen before; NULL for one not known (or no socket). */
static __always_inline struct sock_state *sock_state_of_known(__u64 cookie)
{
	return cookie ? bpf_map_lookup_elem(&sock_states, &cookie) : NULL;
}

/* The task a received datagram or a drop belongs to: its socket's owner, if known. */
static __always_inline void owner_from(const struct sock_state *st, struct task_ctx *t)
{
	if (st)
		*t = st->owner;
	else
		__builtin_memset(t, 0, sizeof(*t));
}

static __always_inline void owner_of(__u64 cookie, struct task_ctx *t)
{
	owner_from(sock_state_of_known(cookie), t);
}

static __always_inline bool same_addr(const __u8 a[16], const __u8 b[16])
{
	for (int i = 0; i < 16; i++)
		if (a[i] != b[i])
			return false;
	return true;
}

/*
 * A datagram of `st`'s socket went to or came from the peer in `a` (none if
 * its port is 0): a Boyer-Moore majority vote, so that the socket's peer is
 * the one of most of its datagrams whenever one had more than half, for one
 * compare per datagram. Also keeps the local address, set once bound. Plain
 * updates: two CPUs on one socket at once may mix a vote (or an address with
 * another's port); a lock per datagram would cost more than the vote.
 */
static __always_inline void note_peer(struct sock_state *st, const struct sock_addrs *a)
{
	struct sock_life *l = &st->life;

	if (l->lport != a->lport) {
		__builtin_memcpy(l->laddr, a->laddr, 16);
		l->lport = a->lport;
		l->family = a->family;
		l->netns = a->netns;
	}
	if (!a->rport)
		return;
	if (l->peer_port == a->rport && same_addr(l->peer_addr, a->raddr)) {
		l->peer_votes++;
	} else if (!l->peer_votes) {
		__builtin_memcpy(l->peer_addr, a->raddr, 16);
		l->peer_port = a->rport;
		l->peer_votes = 1;
	} else {
		l->peer_votes--;
	}
}

/* The burst a datagram of `truesize` arriving at a queue of `queued` bytes is in. */
static __always_inline void note_burst(struct sock_life *l, __u32 queued, __u32 truesize)
{
	if (!queued) {
		l->burst_drop_bytes = 0;
		l->burst_peak = 0;
	}
	if (queued + truesize > l->burst_peak)
		l->burst_peak = queued + truesize;
	if (l->burst_peak + l->burst_drop_bytes > l->burst_need)
		l->burst_need = l->burst_peak + l->burst_drop_bytes;
}

/*
 * A datagram is about to be queued to `sk` (whose state is `st`; kernel pointers, BTF-typed if
 * `btf`, else read through bpf_probe_read): the buffer and the queue's peak with it, and the local
 * address if not known yet. The kernel
 * refuses it when the queue is over the buffer already (or, since Linux
 * 6.15, would be with it): either way the peak stays within one datagram's
 * truesize of the buffer. Plain updates: datagrams queued to one socket on
 * two CPUs at once may lose the higher of two peaks (by one datagram).
 */
static __always_inline void note_rcvqueue(struct sock_state *st, struct sock *sk,
					  struct sk_buff *skb, bool btf)
{
	__u32 queued, rcvbuf, truesize;

	if (!track_sockets || !st)
		return;
	/* Loads where the pointers are BTF-typed, else helper calls, each several times dearer. */
	if (btf) {
		queued = sk->sk_backlog.rmem_alloc.counter;
		rcvbuf = sk->sk_rcvbuf;
		truesize = skb->truesize;
	} else {
		queued = BPF_CORE_READ(sk, sk_backlog.rmem_alloc.counter);
		rcvbuf = BPF_CORE_READ(sk, sk_rcvbuf);
		truesize = BPF_CORE_READ(skb, truesize);
	}
	st->life.rcvbuf = rcvbuf;
	/* A socket that only receives may never call anything that shows its address. */
	if (!st->life.lport) {
		struct sock_addrs a;

		probe_sock_addrs(sk, &a);
		__builtin_memcpy(st->life.laddr, a.laddr, 16);
		st->life.lport = a.lport;
		st->life.family = a.family;
		st->life.netns = a.netns;
	}
	if (queued <= rcvbuf && queued + truesize > st->life.peak_queued)
		st->life.peak_queued = queued + truesize;
	note_burst(&st->life, queued, truesize);
}

/* The kernel dropped `skb`, a datagram of the socket `cookie`; `refused` by its full buffer. */
static __always_inline void note_sock_drop(__u64 cookie, bool refused, struct sk_buff *skb)
{
	struct sock_state *st;

	if (!track_sockets || !cookie)
		return;
	st = bpf_map_lookup_elem(&sock_states, &cookie);
	if (!st)
		return;
	__sync_fetch_and_add(&st->life.drops, 1);
	if (refused) {
		__u32 truesize = BPF_CORE_READ(skb, truesize);
		struct sock_life *l = &st->life;

		__sync_fetch_and_add(&l->rcvbuf_drops, 1);
		__sync_fetch_and_add(&l->rcvbuf_drop_bytes, truesize);
		/* Softirq on one CPU per datagram: plain updates, as at enqueue. */
		l->burst_drop_bytes += truesize;
		if (l->burst_peak + l->burst_drop_bytes > l->burst_need)
			l->burst_need = l->burst_peak + l->burst_drop_bytes;
	}
}

#endif /* __UDPTRACE_SOCK_STATE_H */
