/* SPDX-License-Identifier: GPL-2.0 */
/* The socket table: each socket's counters and owner, by cookie, until it closes. */
#ifndef __UDPTRACE_SOCK_STATE_H
#define __UDPTRACE_SOCK_STATE_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "udptrace.h"
#include "task.h"
#include "emit.h"

/*
 * Tracepoint backend: the senders of the datagrams queued to a socket, as
 * noted on arrival (sender.h).
 */
struct queued_senders {
	/* Epoch (high 32 bits), datagrams noted and not yet received (low 32). */
	__u64 word;
	/* The epoch whose sender `addr`/`port` hold, and the last one seen mixed. */
	__u64 ready;
	__u64 mixed;
	__u8 addr[16];
	__u16 port;
	/*
	 * Datagrams nobody noted may be queued: the socket existed before
	 * tracing began, or a receive found nothing noted pending.
	 */
	__u8 unsure;
};

/*
 * What udptrace keeps per socket: its counters, its owner (the task that
 * created it, or held it when tracing began), which received packets and
 * drops are attributed to, and the senders of its queued datagrams.
 */
struct sock_state {
	struct sock_counters counters;
	struct task_ctx owner;
	struct queued_senders senders;
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
static const struct sock_state new_sock_state = { .senders.unsure = 1 };

/*
 * A new socket's state, for its caller to give an owner; NULL if the socket
 * has one already (NOEXIST: another CPU may have just created it) or the
 * table is full.
 */
static __always_inline struct sock_state *new_sock_state_of(__u64 cookie)
{
	if (bpf_map_update_elem(&sock_states, &cookie, &new_sock_state, BPF_NOEXIST))
		return NULL;
	return bpf_map_lookup_elem(&sock_states, &cookie);
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

/* The task a received datagram or a drop belongs to: its socket's owner, if known. */
static __always_inline void owner_of(__u64 cookie, struct task_ctx *t)
{
	struct sock_state *st = cookie ? bpf_map_lookup_elem(&sock_states, &cookie) : NULL;

	if (st)
		*t = st->owner;
	else
		__builtin_memset(t, 0, sizeof(*t));
}

#endif /* __UDPTRACE_SOCK_STATE_H */
