/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The send and receive path every backend shares: a datagram's socket, peer,
 * counters and event, and the receives counted instead of emitted.
 */
#ifndef __UDPTRACE_DATAGRAM_H
#define __UDPTRACE_DATAGRAM_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include "udptrace.h"
#include "task.h"
#include "addrs.h"
#include "filter.h"
#include "emit.h"
#include "sock_state.h"
#include "peer.h"
#include "connect.h"
#include "sender.h"
#include "wait_queue.h"

#define EAGAIN 11
#define MSG_PEEK 2
#define MSG_ERRQUEUE 0x2000

/* Emit receives that failed with EAGAIN instead of counting them. */
const volatile bool emit_eagain = false;

/*
 * Whether a hook may have left this thread a peer for the datagram of `sk`:
 * only on sockets the sock_addr hooks marked, where the socket is known by
 * BTF; always where a hook notes every receive's sender (fentry, kprobes).
 */
/* Tracing programs may read a socket's local storage (Linux 5.11+). */
const volatile bool tracing_sk_storage = true;

static __always_inline bool peer_may_wait(struct sock *sk, __u8 kind, bool trusted)
{
	if (!trusted || !tracing_sk_storage || (kind == UDP_EVENT_RECV && !senders_from_queue))
		return true;
	/* A socket without local storage of any program (one load) has no mark. */
	if (!sk->sk_bpf_storage)
		return false;
	return bpf_sk_storage_get(&peer_naming_socks, sk, 0, 0) != NULL;
}

/* Tracing programs may ask for a socket's cookie (Linux 5.12+). */
const volatile bool tracing_socket_cookie = true;

/*
 * The socket's cookie; kprobes, and tracing programs where they may not ask
 * for it, read the one the kernel gave it already.
 */
static __always_inline __u64 sock_cookie(struct sock *sk, bool trusted)
{
	return trusted && tracing_socket_cookie ? bpf_get_socket_cookie(sk)
						: BPF_CORE_READ(sk, __sk_common.skc_cookie.counter);
}

/* A received datagram's time in its socket's queue, where known. */
struct datagram_wait {
	bool known;
	__u64 ns;
};

/* A socket's receive waited `ns` in its queue (its life, for `udptrace life`). */
static __always_inline void note_wait(struct sock_life *life, __u64 ns)
{
	add_u64(&life->waits, 1);
	add_u64(&life->wait_sum_ns, ns);
	if (ns > life->wait_max_ns)
		life->wait_max_ns = ns;
}

/*
 * Takes the peer a sock_addr or sender hook left this thread for this
 * datagram of `sk` (whose cookie is `cookie`, or 0 if not read yet): the
 * address the caller named, or a receive's sender. True if there was one,
 * now in `a`; a connected socket's own peer stays otherwise. The sender hook
 * also leaves the datagram's time in the queue, into `wait` where known.
 */
static __always_inline bool take_peer(struct sock *sk, __u64 cookie, __u8 kind, bool trusted,
				      struct sock_addrs *a, struct datagram_wait *wait)
{
	bool found = false;
	struct peer *peer;
	__u32 tid;

	if (!(kind == UDP_EVENT_SEND ? peers_of_sends : peers_of_recvs) ||
	    !peer_may_wait(sk, kind, trusted))
		return false;
	tid = (__u32)bpf_get_current_pid_tgid();
	peer = bpf_map_lookup_elem(&peer_by_tid, &tid);
	if (!peer || !peer->cookie)
		return false;
	if (!cookie)
		cookie = sock_cookie(sk, trusted);
	if (peer->cookie == cookie) {
		__builtin_memcpy(a->raddr, peer->addr, 16);
		a->rport = peer->port;
		found = true;
		if (wait && peer->wait_known) {
			wait->known = true;
			wait->ns = peer->wait_ns;
		}
	}
	peer->cookie = 0; /* taken */
	return found;
}

/*
 * A datagram from a peer was taken (an error-queue read is none). Each one
 * leaves the queue's count, whether its sender is known or not.
 */
static __always_inline bool from_a_peer(__u8 kind, int ret, int flags)
{
	return kind == UDP_EVENT_RECV && ret >= 0 && !(flags & MSG_ERRQUEUE);
}

/* A receive's sender is unknown: no hook gave it, and the socket has no peer of its own. */
static __always_inline bool sender_unknown(bool from_peer, bool found, const struct sock_addrs *a)
{
	return from_peer && peers_of_recvs && !found && is_unspecified(a->raddr) && a->rport == 0;
}

/*
 * Whether the filters keep a datagram. A receive whose sender is unknown is
 * counted whether the address filters keep it or not (they cannot tell), and
 * kept by what its own side matches.
 */
static __always_inline bool datagram_wanted(__u8 kind, __u64 pid_tgid, bool unknown_sender,
					    const struct sock_addrs *a)
{
	if (!kind_wanted(kind) || !task_wanted(pid_tgid))
		return false;
	if (unknown_sender)
		stat_inc(UDP_STAT_RECV_NO_SENDER);
	return unknown_sender ? local_side_wanted(a) : addrs_wanted(a);
}

/*
 * Whether a count reads addresses: for its key or the filters, or to tell a
 * receive of unknown sender.
 */
static __always_inline bool count_reads_addrs(void)
{
	return !compact_keys() || filter_addr_on || peers_of_recvs;
}

/*
 * What a datagram adds to `udptrace latency`'s histogram: its size, or its
 * time in the queue; false where that is unknown (counted) or it adds none.
 */
static __always_inline bool hist_value_of(__u8 kind, int ret, bool from_peer,
					  const struct datagram_wait *wait, __u64 *value)
{
	/* A failed call, or an error-queue read: no datagram of a peer. */
	if (ret < 0 || (kind == UDP_EVENT_RECV && !from_peer))
		return false;
	if (hist_kind == HIST_SIZE) {
		*value = ret;
		return true;
	}
	if (kind != UDP_EVENT_RECV)
		return false;
	if (!wait->known) {
		stat_inc(UDP_STAT_WAIT_UNKNOWN);
		return false;
	}
	*value = wait->ns;
	return true;
}

/*
 * Histograms: the event is built in the count scratch, with what it adds
 * (if anything), and counted too where counts are kept beside them.
 */
static __always_inline void hist_datagram(__u8 kind, __u64 cookie, const struct sock_addrs *a,
					  int ret, bool from_peer, const struct datagram_wait *wait)
{
	static const struct sock_counters no_counters = {};
	struct count_scratch *cs;
	__u64 value = 0;
	__u32 zero = 0;
	bool known;

	known = hist_value_of(kind, ret, from_peer, wait, &value);
	if (!known && !hist_counts)
		return;
	cs = bpf_map_lookup_elem(&scratch, &zero);
	if (!cs)
		return;
	cs->hist_value = value;
	cs->hist_known = known;
	emit(kind, cookie, a, &no_counters, ret, NULL);
	cs->hist_known = 0; /* the other events built here add nothing */
}

/*
 * A send or receive, counted (`udptrace count`): only what the key and the
 * filters use is read, and a compact key builds no event.
 */
static __always_inline int count_datagram(struct sock *sk, int ret, __u8 kind, int flags,
					  bool trusted)
{
	static const struct sock_counters no_counters = {};
	bool found, from_peer = from_a_peer(kind, ret, flags);
	struct datagram_wait wait = {};
	char comm[TASK_COMM_LEN] = {};
	__u64 pid_tgid = 0, cookie = 0;
	struct compact_key k;
	struct sock_addrs a;

	if (count_reads_addrs())
		read_addrs(sk, trusted, &a);
	else
		read_ports(sk, trusted, &a);
	if (connects_pending) {
		cookie = sock_cookie(sk, trusted);
		finish_connect(cookie, &a);
	}
	found = take_peer(sk, cookie, kind, trusted, &a, &wait);
	if (trusted && senders_from_queue && from_peer) {
		if (!cookie)
			cookie = sock_cookie(sk, trusted);
		if (queued_sender(sock_state_of(cookie), sk, found ? NULL : &a))
			found = true;
	}
	/* Taken whatever the filters keep: the ring follows the whole queue. */
	if (trusted && queue_waits && from_peer)
		wait.known = take_queued_wait(sk, &wait.ns);
	if (filter_pid || (count_keys & COUNT_PID))
		pid_tgid = bpf_get_current_pid_tgid();
	if (!datagram_wanted(kind, pid_tgid, sender_unknown(from_peer, found, &a), &a))
		return 0;
	if (hist_kind != HIST_NONE) {
		hist_datagram(kind, cookie, &a, ret, from_peer, &wait);
		return 0;
	}
	if (!compact_key_fits(kind, ret)) {
		emit(kind, cookie, &a, &no_counters, ret, NULL);
		return 0;
	}
	if (count_keys & COUNT_COMM) {
		if (trusted && tracing_task_btf)
			__builtin_memcpy(comm, bpf_get_current_task_btf()->comm, TASK_COMM_LEN);
		else
			bpf_get_current_comm(comm, sizeof(comm));
	}
	compact_key_of(&k, kind, kind == UDP_EVENT_RECV, a.lport, a.rport, pid_tgid >> 32, comm);
	count_compact(&k, ret > 0 ? ret : 0);
	return 0;
}

/*
 * A send or receive has returned on a UDP socket. `trusted`: `sk` is a
 * BTF-typed pointer (tracepoints, fentry) rather than one read from a
 * register (kprobes), which must go through bpf_probe_read and cannot ask
 * for a cookie; theirs is the one the kernel already gave the socket.
 */
static __always_inline int on_datagram_of(struct sock *sk, int ret, __u8 kind, int flags,
					  bool trusted)
{
	bool found, from_peer = from_a_peer(kind, ret, flags);
	struct datagram_wait wait = {};
	struct sock_state *st;
	struct sock_counters cnt;
	struct task_ctx task;
	struct sock_addrs a;
	__u64 pid_tgid, cookie;

	if (count_mode)
		return count_datagram(sk, ret, kind, flags, trusted);
	pid_tgid = bpf_get_current_pid_tgid();
	cookie = sock_cookie(sk, trusted);
	/*
	 * Tracing programs read the task here, on the one path all events share:
	 * where the paths have forked, the verifier walks task_struct's BTF once
	 * per path, and loading took 20 ms longer per program. Not when this
	 * kind is never emitted (tracking sockets for their close events).
	 */
	if (trusted && kind_wanted(kind))
		current_task_btf(&task);
	read_addrs(sk, trusted, &a);
	/* Before the peer below replaces what the socket itself is connected to. */
	finish_connect(cookie, &a);
	found = take_peer(sk, cookie, kind, trusted, &a, &wait);
	/* One lookup for the counters and the queued senders. */
	st = sock_state_of(cookie);
	if (trusted && senders_from_queue && from_peer && queued_sender(st, sk, found ? NULL : &a))
		found = true;
	if (trusted && queue_waits && from_peer)
		wait.known = take_queued_wait(sk, &wait.ns);
	cnt = account(st, kind, ret);
	if (track_sockets && st && ret >= 0)
		note_peer(st, &a);
	if (track_sockets && st && wait.known && kind == UDP_EVENT_RECV && from_peer && ret >= 0)
		note_wait(&st->life, wait.ns);
	if (!datagram_wanted(kind, pid_tgid, sender_unknown(from_peer, found, &a), &a))
		return 0;
	/* Counted as the event is: only what the filters select. */
	if (!st)
		stat_inc(UDP_STAT_COUNTERS_FULL);
	emit(kind, cookie, &a, &cnt, ret, trusted ? &task : NULL);
	return 0;
}

static __always_inline int on_datagram(struct sock *sk, int ret, __u8 kind, int flags)
{
	return on_datagram_of(sk, ret, kind, flags, true);
}

/*
 * A receive has returned: peeks and (by default) EAGAIN are counted, not
 * events. Returns the stat that counts this one, or UDP_STAT_MAX for an event.
 */
static __always_inline __u32 recv_not_event(int ret, int flags)
{
	if (flags & MSG_PEEK)
		return UDP_STAT_RECV_PEEK;
	if (ret == -EAGAIN && !emit_eagain)
		return UDP_STAT_RECV_EAGAIN;
	return UDP_STAT_MAX;
}

/*
 * Counts a receive that is not an event if the filters select it, as they
 * would its event. Without filters (the verifier prunes the rest) it costs a
 * busy-polling server's EAGAIN no more than the count itself.
 */
static __always_inline void count_not_event(struct sock *sk, __u32 stat, bool trusted)
{
	struct sock_addrs a;

	/* A peeked datagram's sender is not the next receive's: it may go to another thread. */
	if (stat == UDP_STAT_RECV_PEEK && peers_of_recvs)
		forget_peer();

	if (!kind_wanted(UDP_EVENT_RECV))
		return;
	if (filtering()) {
		if (!task_wanted(bpf_get_current_pid_tgid()))
			return;
		read_addrs(sk, trusted, &a);
		if (!addrs_wanted(&a))
			return;
	}
	stat_inc(stat);
}

static __always_inline int on_recv(struct sock *sk, int ret, int flags)
{
	__u32 stat = recv_not_event(ret, flags);

	if (stat != UDP_STAT_MAX) {
		count_not_event(sk, stat, true);
		return 0;
	}
	return on_datagram(sk, ret, UDP_EVENT_RECV, flags);
}

#endif /* __UDPTRACE_DATAGRAM_H */
