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
	/* One UDP datagram leaving or arriving, with its IP and UDP headers. */
	UDP_EVENT_PACKET_SEND = 5,
	UDP_EVENT_PACKET_RECV = 6,
	/* The kernel discarded a UDP datagram. */
	UDP_EVENT_DROP = 7,
};

/* Indexes of the per-CPU `stats` counters. */
enum udp_stat {
	/*
	 * Lost events: records the ring buffer had no room for, and kprobe calls
	 * whose return could not be followed (their table was full).
	 */
	UDP_STAT_LOST = 0,
	/*
	 * The next three count only what the filters select, as events would be.
	 * Receives that failed with EAGAIN, counted instead of emitted.
	 */
	UDP_STAT_RECV_EAGAIN = 1,
	/* MSG_PEEK receives: the datagram stays queued, so not a receive. */
	UDP_STAT_RECV_PEEK = 2,
	/* Events whose socket found no room in the socket table: they carry no counters. */
	UDP_STAT_COUNTERS_FULL = 3,
	/* connect() calls that left the socket unconnected (the call failed). */
	UDP_STAT_CONNECT_FAILED = 4,
	/* Events not counted by `udptrace count`: its map was full. */
	UDP_STAT_COUNT_FULL = 5,
	/* connect() calls not followed, so neither reported nor counted: their table was full. */
	UDP_STAT_CONNECT_FULL = 6,
	/*
	 * Receives whose sender is unknown (where no hook reads it from the
	 * datagram: the socket had datagrams of more than one sender pending,
	 * or existed before tracing began, and the caller did not ask for the
	 * address): reported with an unspecified remote end, and
	 * kept by filters that their local side matches. Counted for the tasks
	 * the filters select, whether the address filters kept them or not.
	 */
	UDP_STAT_RECV_NO_SENDER = 7,
	/*
	 * kprobe calls whose return probe never ran (the kernel had no return
	 * probe instance left: as few as one per CPU before Linux 5.11 on kernels
	 * without preemption), seen when the thread calls again: each may have
	 * been an event.
	 */
	UDP_STAT_RETURN_MISSED = 8,
	/*
	 * `udptrace latency`: receives whose time in the queue is unknown (their
	 * datagram was queued before tracing began, or its note was lost),
	 * counted instead of added to a histogram, for the tasks and sockets
	 * the filters select.
	 */
	UDP_STAT_WAIT_UNKNOWN = 9,
	UDP_STAT_MAX = 10,
};

/* Cumulative traffic of one socket since tracing started. */
struct sock_counters {
	__u64 rx_bytes;
	__u64 tx_bytes;
	__u64 rx_packets;
	__u64 tx_packets;
};

/* The headers of one datagram, host byte order, as DTrace's udp provider has them. */
struct packet_info {
	__u32 drop_reason; /* enum skb_drop_reason, for drops */
	__u16 ip_plength; /* IP payload: total length minus the IP header */
	__u16 udp_length;
	__u16 udp_checksum; /* as on the wire: partial when the NIC finishes it */
	__u16 gso_segs; /* datagrams a UDP GSO send leaves as; 1 otherwise */
	__u8 ip_ver;
	__u8 inbound; /* arriving: laddr/lport are its destination */
	__u16 caplen; /* bytes of UDP payload after the record (with a snap length) */
	__u8 pad[16];
};

union event_detail {
	struct sock_counters counters; /* socket events: after this event */
	struct packet_info packet; /* packet and drop events */
};

/*
 * One event, 136 bytes. With a snap length, packet and drop records are
 * followed by the first `caplen` bytes of the UDP payload, padded to 8.
 */
struct udp_event {
	__u64 ts_ns; /* CLOCK_MONOTONIC */
	__u64 sock_cookie;
	__u64 cgroup_id;
	union event_detail detail;
	__u32 pid; /* thread group id */
	__u32 tid;
	__u32 uid;
	__s32 ret; /* bytes (payload) for send/recv/packets, 0 or -errno */
	__u8 laddr[16]; /* IPv4 as IPv4-mapped IPv6 */
	__u8 raddr[16];
	__u16 lport; /* host byte order */
	__u16 rport;
	__u8 kind; /* enum udp_event_kind */
	__u8 family; /* AF_INET or AF_INET6: the socket's (packets: the IP header's) */
	__u8 pad[2];
	char comm[TASK_COMM_LEN];
	__u32 netns; /* the socket's network namespace (its inode number); 0 if unknown */
	__u32 pad2;
};

/*
 * What udptrace learns of a socket over its life: kept in the socket table,
 * and carried by its close event (struct udp_close_event). Beyond its
 * birth, only kept when tracking sockets (`track_sockets`).
 */
struct sock_life {
	__u64 born_ns; /* CLOCK_MONOTONIC: created, or first seen if not from_creation */
	__u64 drops; /* datagrams of this socket the kernel dropped */
	__u64 rcvbuf_drops; /* of which refused by a full receive buffer */
	__u64 rcvbuf_drop_bytes; /* their truesize */
	/*
	 * A burst: since the queue was last seen empty. What it refused, the
	 * most it queued, and the most any burst needed (queued and refused):
	 * the buffer that would have held every burst.
	 */
	__u64 burst_drop_bytes;
	__u64 burst_peak;
	__u64 burst_need;
	__u64 peer_votes; /* majority vote for peer_addr/peer_port */
	__u32 rcvbuf; /* sk_rcvbuf at the last datagram queued */
	__u32 peak_queued; /* most bytes queued (sk_rmem_alloc) with a datagram queued */
	__u8 laddr[16]; /* the local address at the last datagram */
	__u8 peer_addr[16]; /* the peer of most datagrams, if one had more than half */
	__u16 lport;
	__u16 peer_port;
	__u8 from_creation; /* born_ns is the socket's creation */
	__u8 family; /* AF_INET or AF_INET6, with laddr */
	__u8 pad[2];
	__u32 netns; /* with laddr */
	__u32 pad2;
	/* Receives of a known time in the queue (`udptrace life`): how many, their sum and most. */
	__u64 waits;
	__u64 wait_sum_ns;
	__u64 wait_max_ns;
};

/* A close event: the event, and what the socket table knew of the socket. */
struct udp_close_event {
	struct udp_event event;
	struct sock_life life;
};

/*
 * Bits of the length tracepoints' family masks (tp_send_families,
 * tp_recv_families): the socket families each reports.
 */
enum family_bit {
	FAMILY_BIT_V4 = 1,
	FAMILY_BIT_V6 = 2,
};

/* `udptrace count`: which fields of an event make its key (bits of count_keys). */
enum count_field {
	COUNT_DPORT = 1,
	COUNT_SPORT = 2,
	COUNT_DADDR = 4,
	COUNT_SADDR = 8,
	COUNT_PID = 16,
	COUNT_COMM = 32,
	COUNT_EVENT = 64,
	COUNT_REASON = 128,
	COUNT_CGROUP = 256,
	COUNT_NETNS = 512,
	/* Failed sends and receives: their errno (`err`); the others count under 0. */
	COUNT_ERRNO = 1024,
};

/* Unselected fields stay zero. Source and destination as the datagram travels. */
struct count_key {
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u32 pid;
	__u32 reason;
	__u8 kind;
	__u8 family;
	__u8 is_drop; /* with COUNT_REASON: `reason` is set */
	__u8 pad;
	char comm[TASK_COMM_LEN];
	__u64 cgroup;
	__u32 netns;
	__u16 err; /* with COUNT_ERRNO: the positive errno of a failed send or receive */
	__u16 pad2;
};

struct count_value {
	__u64 events;
	__u64 bytes;
};

/*
 * A key of ports, pid, event kind and task name (bpf/count.h): the numbers
 * packed in one word, dport in its low 16 bits, then sport, pid (below
 * PID_MAX_LIMIT, 2^22) and kind. Unselected fields stay zero.
 */
enum compact_key_bits {
	COMPACT_SPORT_SHIFT = 16,
	COMPACT_PID_SHIFT = 32,
	COMPACT_PID_MASK = (1 << 22) - 1,
	COMPACT_KIND_SHIFT = 54,
};

struct compact_key {
	__u64 word;
	char comm[TASK_COMM_LEN];
};

/*
 * What a histogram (`udptrace latency`) adds up per key: a datagram's time
 * in its socket's receive queue, or its size.
 */
enum hist_kind {
	HIST_NONE = 0,
	HIST_WAIT = 1, /* nanoseconds, bucketed by microseconds */
	HIST_SIZE = 2, /* bytes */
};

/*
 * Power-of-two buckets: bucket 0 holds values below 1 unit, bucket k >= 1
 * values in [2^(k-1), 2^k), the last also everything above.
 */
enum hist_buckets {
	HIST_BUCKETS = 32,
};

/* One key's histogram on one CPU; `sum` and `max` in the value's own unit (ns, bytes). */
struct hist_value {
	__u64 count;
	__u64 sum;
	__u64 max;
	__u64 buckets[HIST_BUCKETS];
};

/* Slots of compact keys per CPU: 2^COUNT_SLOT_BITS. */
enum count_slots_size {
	COUNT_SLOT_BITS = 10,
	COUNT_SLOTS = 1 << COUNT_SLOT_BITS,
};

enum count_slot_state {
	COUNT_SLOT_FREE = 0,
	COUNT_SLOT_CLAIMED = 1, /* its key being written */
	COUNT_SLOT_READY = 2,
};

/* One CPU's count under one compact key, from the first event on. */
struct count_slot {
	__u64 state; /* enum count_slot_state */
	struct compact_key key;
	struct count_value value;
};

/*
 * Where a traced function's arguments are, by position from 0 (bpf/args.h);
 * `ret` is where fexit finds its return value, after the last argument.
 * NO_ARG where the function has no such argument.
 */
#define NO_ARG 0xff

struct fn_args {
	__u8 sk;
	__u8 skb;
	__u8 len;
	__u8 flags;
	__u8 icmp_type;
	__u8 icmp_code;
	__u8 ret;
};

#endif /* __UDPTRACE_H */
