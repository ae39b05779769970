/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The peer a sendto() or recvfrom() names: the cgroup sock_addr hooks see it
 * and leave it, per thread, for the send or receive hook that follows.
 */
#ifndef __UDPTRACE_PEER_H
#define __UDPTRACE_PEER_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "udptrace.h"
#include "addrs.h"

/* The sock_addr hooks that note a sendto()/recvfrom() peer are attached. */
const volatile bool peers_of_sends = true;
const volatile bool peers_of_recvs = true;

/*
 * The address a sock_addr hook saw, waiting for the tracepoint in the same
 * thread; `cookie` is zero once taken.
 */
struct peer {
	__u64 cookie;
	__u8 addr[16];
	__u16 port;
	/* A receive's datagram: whether its time in the queue is known (wait.h). */
	__u16 wait_known;
	__u32 pad;
	__u64 wait_ns;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32); /* tid */
	__type(value, struct peer);
} peer_by_tid SEC(".maps");

/*
 * Sockets a sendto() or recvfrom() ever named a peer on (socket-local
 * storage, marked by the sock_addr hooks below): a socket that never did, as
 * a connected socket usually does not, has nothing waiting in `peer_by_tid`,
 * and its datagrams skip the lookup.
 */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __u8);
} peer_naming_socks SEC(".maps");

/*
 * The verifier lets each hook read only its own family's address fields:
 * user_ip4 in the *4 hooks (also on IPv6 sockets talking to IPv4-mapped
 * peers), user_ip6 in the *6 hooks.
 */
static __always_inline void addr_from_sock_addr(struct bpf_sock_addr *ctx, bool v6, struct peer *p)
{
	if (v6) {
		__u32 *dst = (__u32 *)p->addr;

		dst[0] = ctx->user_ip6[0];
		dst[1] = ctx->user_ip6[1];
		dst[2] = ctx->user_ip6[2];
		dst[3] = ctx->user_ip6[3];
	} else {
		v4_mapped(p->addr, ctx->user_ip4);
	}
	p->port = bpf_ntohs(ctx->user_port);
}

/*
 * Each thread's entry is written in place and kept: an update per datagram
 * (which allocates a new element) and a delete per event cost more than the
 * rest of a receive's tracing.
 */
/* The current thread's entry, created on its first use; NULL if no room. */
static __always_inline struct peer *thread_peer(void)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	static const struct peer none = {};
	struct peer *p = bpf_map_lookup_elem(&peer_by_tid, &tid);

	if (p)
		return p;
	bpf_map_update_elem(&peer_by_tid, &tid, &none, BPF_NOEXIST);
	return bpf_map_lookup_elem(&peer_by_tid, &tid);
}

static __always_inline int remember_peer(struct bpf_sock_addr *ctx, bool v6)
{
	struct peer *p;

	if (ctx->protocol != IPPROTO_UDP)
		return 1;
	p = thread_peer();
	if (!p)
		return 1;
	addr_from_sock_addr(ctx, v6, p);
	p->wait_known = 0; /* a receive's, never a send's */
	p->cookie = bpf_get_socket_cookie(ctx);
	/* Before the datagram's hook runs, in this same thread. */
	bpf_sk_storage_get(&peer_naming_socks, ctx->sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	return 1; /* never interfere with the call */
}

/* Drops what this thread's last hook left, unused. */
static __always_inline void forget_peer(void)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct peer *p = bpf_map_lookup_elem(&peer_by_tid, &tid);

	if (p)
		p->cookie = 0;
}

#endif /* __UDPTRACE_PEER_H */
