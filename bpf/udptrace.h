/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The wire format between udptrace's BPF programs and user space. Rust reads
 * these records through the skeleton's generated types, so this header is the
 * single definition of the layout.
 */
#ifndef __UDPTRACE_H
#define __UDPTRACE_H

#define TASK_COMM_LEN 16

enum udp_event_kind {
	UDP_EVENT_SEND = 1,
	UDP_EVENT_RECV = 2,
	UDP_EVENT_CONNECT = 3,
	UDP_EVENT_CLOSE = 4,
};

/* Indexes of the per-CPU `stats` counters. */
enum udp_stat {
	/* Records the ring buffer had no room for: lost events. */
	UDP_STAT_LOST = 0,
	/* Receives that failed with EAGAIN, counted instead of emitted. */
	UDP_STAT_RECV_EAGAIN = 1,
	/* MSG_PEEK receives: the datagram stays queued, so not a receive. */
	UDP_STAT_RECV_PEEK = 2,
	/* Sockets whose counters could not be stored (map full). */
	UDP_STAT_COUNTERS_FULL = 3,
	/* connect() calls that left the socket unconnected (the call failed). */
	UDP_STAT_CONNECT_FAILED = 4,
	UDP_STAT_MAX = 5,
};

/* Cumulative traffic of one socket since tracing started. */
struct sock_counters {
	__u64 rx_bytes;
	__u64 tx_bytes;
	__u64 rx_packets;
	__u64 tx_packets;
};

/* One socket-level event, 128 bytes. */
struct udp_event {
	__u64 ts_ns; /* CLOCK_MONOTONIC */
	__u64 sock_cookie;
	__u64 cgroup_id;
	struct sock_counters counters; /* after this event */
	__u32 pid; /* thread group id */
	__u32 tid;
	__u32 uid;
	__s32 ret; /* bytes for send/recv, 0 or -errno */
	__u8 laddr[16]; /* IPv4 as IPv4-mapped IPv6 */
	__u8 raddr[16];
	__u16 lport; /* host byte order */
	__u16 rport;
	__u8 kind; /* enum udp_event_kind */
	__u8 family; /* AF_INET or AF_INET6: the socket's family */
	__u8 pad[2];
	char comm[TASK_COMM_LEN];
};

#endif /* __UDPTRACE_H */
