/* SPDX-License-Identifier: GPL-2.0 */
/*
 * connect() calls: noted by the cgroup connect hooks, reported at the
 * socket's next event, once the socket shows how the call ended.
 */
#ifndef __UDPTRACE_CONNECT_H
#define __UDPTRACE_CONNECT_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "udptrace.h"
#include "task.h"
#include "addrs.h"
#include "filter.h"
#include "emit.h"
#include "sock_state.h"
#include "peer.h"

#define EEXIST 17

/* A connect() call: who made it, and to where. */
struct connect_call {
	struct task_ctx caller;
	__u8 addr[16];
	__u16 port;
};

/*
 * connect() calls the filters select, by socket, until the socket's next
 * event reports them. Only selected callers are stored, so other processes'
 * idle connected sockets cannot crowd out the traced ones; a call that finds
 * the table full is counted (UDP_STAT_CONNECT_FULL).
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64); /* socket cookie */
	__type(value, struct connect_call);
} connect_by_sock SEC(".maps");

/* Lets the datagram path skip the lookup while no connect() is pending. */
__u64 connects_pending = 0;

/*
 * Reports a connect() noted by the hook, now that the socket shows its
 * outcome: connected (a remote port is set) or not (the call failed).
 */
static __always_inline void finish_connect(__u64 cookie, const struct sock_addrs *a)
{
	struct sock_counters cnt;
	struct connect_call *call;
	struct sock_addrs tried;

	if (!connects_pending)
		return;
	call = bpf_map_lookup_elem(&connect_by_sock, &cookie);
	if (!call)
		return;
	/* The caller passed the task filters when the call was stored. */
	if (!a->rport) {
		/* Filtered as the socket and the peer it tried to reach. */
		tried = *a;
		__builtin_memcpy(tried.raddr, call->addr, 16);
		tried.rport = call->port;
		if (addrs_wanted(&tried))
			stat_inc(UDP_STAT_CONNECT_FAILED);
	} else if (addrs_wanted(a)) {
		cnt = counters_of(cookie);
		emit(UDP_EVENT_CONNECT, cookie, a, &cnt, 0, &call->caller);
	}
	/* Only the CPU whose delete succeeds settles the count. */
	if (bpf_map_delete_elem(&connect_by_sock, &cookie) == 0)
		__sync_fetch_and_add(&connects_pending, -1);
}

/*
 * Stores a connect() call the filters may select; its socket's addresses are
 * filtered when the call is reported. A call that finds the table full is
 * counted, so that a missing connect event is never silent.
 */
static __always_inline int remember_connect(struct bpf_sock_addr *ctx, bool v6)
{
	struct connect_call call;
	struct peer to;
	__u64 cookie;
	long err;

	if (ctx->protocol != IPPROTO_UDP || !kind_wanted(UDP_EVENT_CONNECT))
		return 1;
	if ((filter_family && ctx->family != filter_family) ||
	    !task_wanted(bpf_get_current_pid_tgid()))
		return 1;
	cookie = bpf_get_socket_cookie(ctx);
	current_task(&call.caller);
	addr_from_sock_addr(ctx, v6, &to);
	__builtin_memcpy(call.addr, to.addr, 16);
	call.port = to.port;
	err = bpf_map_update_elem(&connect_by_sock, &cookie, &call, BPF_NOEXIST);
	if (err == -EEXIST) {
		/* connect() again before any traffic: the last one counts */
		if (bpf_map_update_elem(&connect_by_sock, &cookie, &call, BPF_EXIST) == 0)
			return 1;
		/* The socket's next event on another CPU took the entry meanwhile. */
		err = bpf_map_update_elem(&connect_by_sock, &cookie, &call, BPF_NOEXIST);
	}
	if (err == 0)
		__sync_fetch_and_add(&connects_pending, 1);
	else
		stat_inc(UDP_STAT_CONNECT_FULL);
	return 1; /* never interfere with the call */
}

#endif /* __UDPTRACE_CONNECT_H */
