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

#define EAGAIN 11
#define MSG_PEEK 2
#define MSG_ERRQUEUE 0x2000

/* Emit receives that failed with EAGAIN instead of counting them. */
const volatile bool emit_eagain = false;

/*
 * A send or receive has returned on a UDP socket. `trusted`: `sk` is a
 * BTF-typed pointer (tracepoints, fentry) rather than one read from a
 * register (kprobes), which must go through bpf_probe_read and cannot ask
 * for a cookie; theirs is the one the kernel already gave the socket.
 */
static __always_inline int on_datagram_of(struct sock *sk, int ret, __u8 kind, int flags,
					  bool trusted)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)pid_tgid;
	bool btf_task = trusted && !count_mode;
	bool no_room = false, found = false, from_peer, unknown_sender;
	struct sock_state *st = NULL;
	struct sock_counters cnt;
	struct task_ctx task;
	struct sock_addrs a;
	struct peer *peer;
	__u64 cookie;

	cookie = trusted ? bpf_get_socket_cookie(sk) : BPF_CORE_READ(sk, __sk_common.skc_cookie.counter);
	/*
	 * Tracing programs read the task here, on the one path all events share:
	 * where the paths have forked, the verifier walks task_struct's BTF once
	 * per path, and loading took 20 ms longer per program.
	 */
	if (btf_task)
		current_task_btf(&task);
	if (trusted)
		read_sock_addrs(sk, &a);
	else
		probe_sock_addrs(sk, &a);
	/* Before the peer below replaces what the socket itself is connected to. */
	finish_connect(cookie, &a);
	/*
	 * The peer the caller named (sendto), or a receive's sender (see
	 * sender.h); a connected socket's is its own.
	 */
	peer = NULL;
	if (kind == UDP_EVENT_SEND ? peers_of_sends : peers_of_recvs)
		peer = bpf_map_lookup_elem(&peer_by_tid, &tid);
	if (peer && peer->cookie) {
		if (peer->cookie == cookie) {
			__builtin_memcpy(a.raddr, peer->addr, 16);
			a.rport = peer->port;
			found = true;
		}
		peer->cookie = 0; /* taken */
	}
	/*
	 * A datagram from a peer was taken (an error-queue read is none). Each
	 * one leaves the queue's count, whether its sender is known or not.
	 */
	from_peer = kind == UDP_EVENT_RECV && ret >= 0 && !(flags & MSG_ERRQUEUE);
	/* One lookup for the counters and the queued senders. */
	if (!count_mode || (trusted && senders_from_queue && from_peer)) {
		st = sock_state_of(cookie);
		no_room = !st && !count_mode; /* counted events carry no counters */
	}
	if (trusted && senders_from_queue && from_peer && queued_sender(st, found ? NULL : &a))
		found = true;
	unknown_sender = from_peer && peers_of_recvs && !found && is_unspecified(a.raddr) &&
			 a.rport == 0;
	if (!count_mode)
		cnt = account(st, kind, ret);
	else /* counted events carry no socket counters */
		__builtin_memset(&cnt, 0, sizeof(cnt));
	if (!kind_wanted(kind) || !task_wanted(pid_tgid))
		return 0;
	/*
	 * A receive whose sender is unknown is counted whether the address
	 * filters keep it or not (they cannot tell), and kept by what its own
	 * side matches.
	 */
	if (unknown_sender)
		stat_inc(UDP_STAT_RECV_NO_SENDER);
	if (unknown_sender ? !local_side_wanted(&a) : !addrs_wanted(&a))
		return 0;
	/* Counted as the event is: only what the filters select. */
	if (no_room)
		stat_inc(UDP_STAT_COUNTERS_FULL);
	emit(kind, cookie, &a, &cnt, ret, btf_task ? &task : NULL);
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
		if (trusted)
			read_sock_addrs(sk, &a);
		else
			probe_sock_addrs(sk, &a);
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
