/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The few kernel and UAPI types udptrace's BPF programs use, instead of a
 * multi-megabyte generated vmlinux.h. Kernel-internal structs carry
 * preserve_access_index so libbpf relocates every field access against the
 * running kernel's BTF (CO-RE): only the names and types of the fields we read
 * matter, not their offsets. The bpf_* context structs are stable UAPI.
 */
#ifndef __UDPTRACE_VMLINUX_H
#define __UDPTRACE_VMLINUX_H
/* Tells bpf_tracing.h to use the kernel's pt_regs field names. */
#define __VMLINUX_H__

typedef unsigned char __u8;
typedef signed char __s8;
typedef unsigned short __u16;
typedef short __s16;
typedef unsigned int __u32;
typedef int __s32;
typedef unsigned long long __u64;
typedef long long __s64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;
typedef _Bool bool;
enum { false = 0, true = 1 };

enum bpf_map_type {
	BPF_MAP_TYPE_HASH = 1,
	BPF_MAP_TYPE_ARRAY = 2,
	BPF_MAP_TYPE_PERCPU_HASH = 5,
	BPF_MAP_TYPE_PERCPU_ARRAY = 6,
	BPF_MAP_TYPE_LRU_HASH = 9,
	BPF_MAP_TYPE_SK_STORAGE = 24,
	BPF_MAP_TYPE_ARRAY_OF_MAPS = 12,
	BPF_MAP_TYPE_RINGBUF = 27,
};

enum {
	BPF_ANY = 0,
	BPF_NOEXIST = 1,
	BPF_EXIST = 2,
	BPF_F_NO_PREALLOC = 1,
	BPF_SK_STORAGE_GET_F_CREATE = 1,
};

/* bpf_ringbuf_output/submit flags and bpf_ringbuf_query selectors. */
enum {
	BPF_RB_NO_WAKEUP = 1,
	BPF_RB_FORCE_WAKEUP = 2,
	BPF_RB_AVAIL_DATA = 0,
};

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_UDP 17
#define SOCK_DGRAM 2

struct bpf_flow_keys;

struct bpf_sock {
	__u32 bound_dev_if;
	__u32 family;
	__u32 type;
	__u32 protocol;
	__u32 mark;
	__u32 priority;
	__u32 src_ip4;
	__u32 src_ip6[4];
	__u32 src_port; /* host byte order */
	__be16 dst_port; /* network byte order */
	__u16 : 16;
	__u32 dst_ip4;
	__u32 dst_ip6[4];
	__u32 state;
	__s32 rx_queue_mapping;
};

struct bpf_sock_addr {
	__u32 user_family;
	__u32 user_ip4; /* network byte order */
	__u32 user_ip6[4]; /* network byte order */
	__u32 user_port; /* network byte order */
	__u32 family;
	__u32 type;
	__u32 protocol;
	__u32 msg_src_ip4;
	__u32 msg_src_ip6[4];
	union {
		struct bpf_sock *sk;
		__u64 : 64;
	} __attribute__((aligned(8)));
};

/* The cgroup_skb context: its data starts at the IP header. */
struct __sk_buff {
	__u32 len;
	__u32 pkt_type;
	__u32 mark;
	__u32 queue_mapping;
	__u32 protocol;
	__u32 vlan_present;
	__u32 vlan_tci;
	__u32 vlan_proto;
	__u32 priority;
	__u32 ingress_ifindex;
	__u32 ifindex;
	__u32 tc_index;
	__u32 cb[5];
	__u32 hash;
	__u32 tc_classid;
	__u32 data;
	__u32 data_end;
	__u32 napi_id;
	__u32 family;
	__u32 remote_ip4;
	__u32 local_ip4;
	__u32 remote_ip6[4];
	__u32 local_ip6[4];
	__u32 remote_port;
	__u32 local_port;
	__u32 data_meta;
	union {
		struct bpf_flow_keys *flow_keys;
		__u64 : 64;
	} __attribute__((aligned(8)));
	__u64 tstamp;
	__u32 wire_len;
	__u32 gso_segs;
	union {
		struct bpf_sock *sk;
		__u64 : 64;
	} __attribute__((aligned(8)));
	__u32 gso_size;
};

#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)

struct in6_addr {
	union {
		__u8 u6_addr8[16];
		__be16 u6_addr16[8];
		__be32 u6_addr32[4];
	} in6_u;
};

typedef struct {
	int counter;
} atomic_t;

typedef struct {
	__s64 counter;
} atomic64_t;

/* A network namespace, known by its inode number as /proc/PID/ns/net shows it. */
struct ns_common {
	unsigned int inum;
};
struct net {
	struct ns_common ns;
};
typedef struct {
	struct net *net;
} possible_net_t;
struct sock_common {
	__be32 skc_daddr;
	__be32 skc_rcv_saddr;
	__be16 skc_dport;
	__u16 skc_num;
	unsigned short skc_family;
	struct in6_addr skc_v6_daddr;
	struct in6_addr skc_v6_rcv_saddr;
	atomic64_t skc_cookie;
	possible_net_t skc_net;
};

struct bpf_local_storage;

/* A queue of socket buffers: only its length is read. */
struct sk_buff_head {
	__u32 qlen;
};

struct sock {
	struct sock_common __sk_common;
	__u16 sk_protocol;
	__u16 sk_type;
	struct bpf_local_storage *sk_bpf_storage;
	struct {
		atomic_t rmem_alloc; /* sk_rmem_alloc: bytes queued to receive */
	} sk_backlog;
	int sk_rcvbuf;
	struct sk_buff_head sk_receive_queue;
};


typedef struct {
	__u32 val;
} kuid_t;

struct cred {
	kuid_t uid;
};

struct kernfs_node {
	__u64 id;
};

struct cgroup {
	struct kernfs_node *kn;
	int level; /* depth below the root, which is 0 */
	struct cgroup *ancestors[]; /* Linux 6.0+: ancestors[level] is the cgroup itself */
};

struct css_set {
	struct cgroup *dfl_cgrp;
};

struct task_struct {
	int pid;
	int tgid;
	const struct cred *cred;
	struct css_set *cgroups;
	char comm[16];
};

struct inode {
	unsigned short i_mode;
};

/* A socket's file holds its struct socket (sock_from_file()). */
struct file {
	struct inode *f_inode;
	void *private_data;
};

struct socket {
	struct sock *sk;
};

struct bpf_iter_meta;

/* The task_file iterator's context: every open file of every process. */
struct bpf_iter__task_file {
	union {
		struct bpf_iter_meta *meta;
	};
	union {
		struct task_struct *task;
	};
	__u32 fd;
	union {
		struct file *file;
	};
};

/* UDP receives from `reader_queue`, refilled from sk_receive_queue when it runs dry. */
struct udp_sock {
	struct sk_buff_head reader_queue;
};

/* The UDP socket iterator's context: every UDP socket of one network namespace. */
struct bpf_iter__udp {
	union {
		struct bpf_iter_meta *meta;
	};
	union {
		struct udp_sock *udp_sk;
	};
};

/*
 * A page fragment of an skb: struct bio_vec before Linux 6.6 (bv_page,
 * bv_len, bv_offset), struct skb_frag since (netmem, len, offset): the
 * same layout, read whole.
 */
struct udptrace_frag {
	unsigned long page;
	unsigned int len;
	unsigned int offset;
};

struct skb_shared_info {
	unsigned char nr_frags;
	unsigned short gso_segs;
	struct udptrace_frag frags[17];
};

struct page {
	unsigned long flags;
};

struct net_device {
	possible_net_t nd_net;
};
/* Anonymous unions and struct groups of the real layout are found by name. */
typedef struct refcount_struct {
	atomic_t refs;
} refcount_t;

struct sk_buff {
	struct sock *sk;
	struct net_device *dev;
	unsigned int len;
	unsigned char *head;
	unsigned int tail; /* offsets from head on 64-bit kernels */
	unsigned int end;
	__u16 transport_header;
	__u16 network_header;
	__be16 protocol;
	int skb_iif;
	unsigned int truesize;
	refcount_t users; /* a peek holds one more */
};

/* x86-64: the registers kprobes read arguments and results from. */
struct pt_regs {
	unsigned long r15, r14, r13, r12, bp, bx, r11, r10, r9, r8;
	unsigned long ax, cx, dx, si, di, orig_ax, ip, cs, flags, sp, ss;
};

#pragma clang attribute pop

#endif /* __UDPTRACE_VMLINUX_H */
