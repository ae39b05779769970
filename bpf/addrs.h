/* SPDX-License-Identifier: GPL-2.0 */
/* A socket's addresses as events carry them: IPv4 as IPv4-mapped IPv6. */
#ifndef __UDPTRACE_ADDRS_H
#define __UDPTRACE_ADDRS_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>

struct sock_addrs {
	__u32 netns; /* the socket's network namespace: its inode number */
	__u8 family;
	__u8 laddr[16];
	__u8 raddr[16];
	__u16 lport;
	__u16 rport;
};

static __always_inline void v4_mapped(__u8 dst[16], __be32 v4)
{
	__builtin_memset(dst, 0, 10);
	dst[10] = 0xff;
	dst[11] = 0xff;
	__builtin_memcpy(dst + 12, &v4, 4);
}

/* `::` or the IPv4-mapped `0.0.0.0`: no address. */
static __always_inline bool is_unspecified(const __u8 addr[16])
{
	__u32 w[4];

	__builtin_memcpy(w, addr, 16);
	return w[0] == 0 && w[1] == 0 && (w[2] == 0 || w[2] == bpf_htonl(0xffff)) && w[3] == 0;
}

/* Only sockets of this network namespace (inode number); written before load like filter.h's. */
const volatile __u32 filter_netns = 0;

/* The network namespace of a socket known by BTF, or else through bpf_probe_read. */
static __always_inline __u32 sock_netns(struct sock *sk, bool trusted)
{
	if (trusted)
		return sk->__sk_common.skc_net.net->ns.inum;
	return BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
}

/* Addresses of a socket as it stands; the remote is unset for unconnected sockets. */
static __always_inline void read_sock_addrs(struct sock *sk, struct sock_addrs *a)
{
	a->netns = sock_netns(sk, true);
	a->family = sk->__sk_common.skc_family;
	a->lport = sk->__sk_common.skc_num;
	a->rport = bpf_ntohs(sk->__sk_common.skc_dport);
	if (a->family == AF_INET6) {
		__builtin_memcpy(a->laddr, &sk->__sk_common.skc_v6_rcv_saddr, 16);
		__builtin_memcpy(a->raddr, &sk->__sk_common.skc_v6_daddr, 16);
	} else {
		v4_mapped(a->laddr, sk->__sk_common.skc_rcv_saddr);
		v4_mapped(a->raddr, sk->__sk_common.skc_daddr);
	}
}

/* Same, through bpf_probe_read for a socket pointer the verifier does not know. */
static __always_inline void probe_sock_addrs(struct sock *sk, struct sock_addrs *a)
{
	__be32 v4;

	a->netns = sock_netns(sk, false);
	a->family = BPF_CORE_READ(sk, __sk_common.skc_family);
	a->lport = BPF_CORE_READ(sk, __sk_common.skc_num);
	a->rport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	if (a->family == AF_INET6) {
		BPF_CORE_READ_INTO(&a->laddr, sk, __sk_common.skc_v6_rcv_saddr);
		BPF_CORE_READ_INTO(&a->raddr, sk, __sk_common.skc_v6_daddr);
	} else {
		v4 = BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr);
		v4_mapped(a->laddr, v4);
		v4 = BPF_CORE_READ(sk, __sk_common.skc_daddr);
		v4_mapped(a->raddr, v4);
	}
}

/* A socket's addresses, by BTF or (kprobes) through bpf_probe_read. */
static __always_inline void read_addrs(struct sock *sk, bool trusted, struct sock_addrs *a)
{
	if (trusted)
		read_sock_addrs(sk, a);
	else
		probe_sock_addrs(sk, a);
}

/* The family and ports alone, where nothing reads the addresses. */
static __always_inline void read_ports(struct sock *sk, bool trusted, struct sock_addrs *a)
{
	/* Where nothing reads the addresses, the namespace is only read for its filter. */
	a->netns = filter_netns ? sock_netns(sk, trusted) : 0;
	if (trusted) {
		a->family = sk->__sk_common.skc_family;
		a->lport = sk->__sk_common.skc_num;
		a->rport = bpf_ntohs(sk->__sk_common.skc_dport);
	} else {
		a->family = BPF_CORE_READ(sk, __sk_common.skc_family);
		a->lport = BPF_CORE_READ(sk, __sk_common.skc_num);
		a->rport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	}
}

#endif /* __UDPTRACE_ADDRS_H */
