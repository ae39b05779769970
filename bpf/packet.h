/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Packet events and drops: a datagram's IP and UDP headers, the event that
 * carries them, the task it is reported as and, for drops of arriving
 * datagrams, the socket they were for.
 */
#ifndef __UDPTRACE_PACKET_H
#define __UDPTRACE_PACKET_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "udptrace.h"
#include "task.h"
#include "addrs.h"
#include "filter.h"
#include "emit.h"
#include "sock_state.h"
#include "wait_stamps.h"

/*
 * A datagram's headers are read from the IP header on: through the skb
 * context in cgroup_skb programs, from kernel memory in the others.
 */
struct ip4_hdr {
	__u8 ver_ihl;
	__u8 tos;
	__be16 tot_len;
	__be16 id;
	__be16 frag_off;
	__u8 ttl;
	__u8 protocol;
	__be16 check;
	__be32 saddr;
	__be32 daddr;
};

struct ip6_hdr {
	__be32 ver_tc_flow;
	__be16 payload_len;
	__u8 nexthdr;
	__u8 hop_limit;
	__u8 saddr[16];
	__u8 daddr[16];
};

struct udp_hdr {
	__be16 source;
	__be16 dest;
	__be16 len;
	__be16 check;
};

#define IP_OFFSET_MASK 0x1fff
#define NO_HEADER 0xffff

struct pkt {
	__u8 saddr[16]; /* IPv4 as IPv4-mapped */
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u16 udp_length;
	__u16 udp_checksum;
	__u16 ip_plength;
	__u16 gso_segs;
	__u8 ip_ver;
	__u8 ip_hlen; /* bytes of IP header before the UDP header */
	__u32 netns; /* where it happened: its socket's network namespace, else its device's */
};

/* `len` bytes at `off` past the IP header: of `ctx_skb` if given, else at `ip`. */
static __always_inline int load_bytes(struct __sk_buff *ctx_skb, const void *ip, __u32 off,
				      void *dst, __u32 len)
{
	if (ctx_skb)
		return bpf_skb_load_bytes(ctx_skb, off, dst, len);
	return bpf_probe_read_kernel(dst, len, ip + off);
}

/* A packet's IPv4 header; false unless it heads a UDP datagram's first fragment. */
static __always_inline bool ip4_to_pkt(struct pkt *p, const struct ip4_hdr *h)
{
	if (h->protocol != IPPROTO_UDP || (h->frag_off & bpf_htons(IP_OFFSET_MASK)))
		return false;
	p->ip_hlen = (h->ver_ihl & 0xf) * 4;
	p->ip_plength = bpf_ntohs(h->tot_len) - p->ip_hlen;
	v4_mapped(p->saddr, h->saddr);
	v4_mapped(p->daddr, h->daddr);
	return true;
}

/* A packet's IPv6 header; false unless UDP follows it directly. */
static __always_inline bool ip6_to_pkt(struct pkt *p, const struct ip6_hdr *h)
{
	if (h->nexthdr != IPPROTO_UDP)
		return false;
	p->ip_hlen = sizeof(*h);
	p->ip_plength = bpf_ntohs(h->payload_len);
	__builtin_memcpy(p->saddr, h->saddr, 16);
	__builtin_memcpy(p->daddr, h->daddr, 16);
	return true;
}

static __always_inline void udp_to_pkt(struct pkt *p, const struct udp_hdr *uh)
{
	p->sport = bpf_ntohs(uh->source);
	p->dport = bpf_ntohs(uh->dest);
	p->udp_length = bpf_ntohs(uh->len);
	p->udp_checksum = bpf_ntohs(uh->check);
}

/*
 * Reads the IP and UDP headers; false unless the packet is UDP with its
 * header right after the IP header (IPv6 extension headers are not followed,
 * non-first IPv4 fragments carry no UDP header).
 */
static __always_inline bool parse_udp(struct __sk_buff *ctx_skb, const void *ip, struct pkt *p)
{
	union {
		struct ip4_hdr v4;
		struct ip6_hdr v6;
	} h;
	struct udp_hdr uh;

	if (load_bytes(ctx_skb, ip, 0, &h.v4, sizeof(h.v4)))
		return false;
	p->ip_ver = h.v4.ver_ihl >> 4;
	if (p->ip_ver == 4) {
		if (!ip4_to_pkt(p, &h.v4))
			return false;
	} else if (p->ip_ver == 6) {
		if (load_bytes(ctx_skb, ip, 0, &h.v6, sizeof(h.v6)) || !ip6_to_pkt(p, &h.v6))
			return false;
	} else {
		return false;
	}
	if (load_bytes(ctx_skb, ip, p->ip_hlen, &uh, sizeof(uh)))
		return false;
	udp_to_pkt(p, &uh);
	return true;
}

/*
 * parse_udp() for cgroup_skb, reading the headers in place when they are in
 * the packet's linear data (as a socket's own datagrams have them), which
 * spares two or three helper calls per packet.
 */
static __always_inline bool parse_skb_data(struct __sk_buff *skb, struct pkt *p)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	const struct ip4_hdr *v4 = data;
	const struct ip6_hdr *v6 = data;
	const struct udp_hdr *uh;

	if ((void *)(v4 + 1) > end)
		return parse_udp(skb, NULL, p);
	p->ip_ver = v4->ver_ihl >> 4;
	if (v4->ver_ihl == 0x45) { /* IPv4 without options */
		if (!ip4_to_pkt(p, v4))
			return false;
		uh = (void *)(v4 + 1);
	} else if (p->ip_ver == 6 && (void *)(v6 + 1) <= end) {
		if (!ip6_to_pkt(p, v6))
			return false;
		uh = (void *)(v6 + 1);
	} else {
		return parse_udp(skb, NULL, p);
	}
	if ((void *)(uh + 1) > end)
		return parse_udp(skb, NULL, p);
	udp_to_pkt(p, uh);
	return true;
}

/* Headers of a kernel skb whose network header is set. */
static __always_inline bool parse_skb(struct sk_buff *skb, struct pkt *p)
{
	unsigned char *head = BPF_CORE_READ(skb, head);
	__u16 nh = BPF_CORE_READ(skb, network_header);
	struct skb_shared_info *shinfo;

	if (nh == NO_HEADER || !parse_udp(NULL, head + nh, p))
		return false;
	shinfo = (struct skb_shared_info *)(head + BPF_CORE_READ(skb, end));
	p->gso_segs = BPF_CORE_READ(shinfo, gso_segs);
	return true;
}

/*
 * Where a datagram's UDP payload is, `off` bytes into `skb`: a cgroup_skb
 * program's packet (`ctx`: the helper reads paged data too), or a kernel
 * sk_buff, from its head: `linear` bytes of it in the linear part, the rest
 * in page fragments, the first `skip` bytes of which come before it. Small:
 * packet_ingress's stack is nearly full.
 */
struct payload_src {
	void *skb;
	__u32 off;
	__u32 linear;
	__u32 skip;
	bool ctx;
};

/*
 * Where the kernel maps struct pages and physical memory (x86-64), found in
 * /proc/kallsyms. Without them (a kernel that does not randomise its memory
 * layout has no such symbols; kallsyms shows zeros to a reader without
 * CAP_SYSLOG) page fragments are not read: a guessed address could point
 * at other memory.
 */
extern const void vmemmap_base __ksym __weak;
extern const void page_offset_base __ksym __weak;

struct direct_map {
	__u64 vmemmap;
	__u64 direct;
	__u64 page_size;
};

/* The kernel's memory layout; false if unknown. */
static __always_inline bool read_direct_map(struct direct_map *m)
{
	m->page_size = bpf_core_type_size(struct page);
	if (!&vmemmap_base || !&page_offset_base || !m->page_size)
		return false;
	if (bpf_probe_read_kernel(&m->vmemmap, sizeof(m->vmemmap), &vmemmap_base) ||
	    bpf_probe_read_kernel(&m->direct, sizeof(m->direct), &page_offset_base))
		return false;
	return m->vmemmap && m->direct;
}

/* page_address(): a page's address in the kernel's direct map; 0 if not a page. */
static __always_inline __u64 page_address(const struct direct_map *m, __u64 page)
{
	if (page < m->vmemmap)
		return 0;
	return m->direct + (page - m->vmemmap) / m->page_size * 4096;
}

/* The most page fragments an skb has (MAX_SKB_FRAGS on 4 KiB pages). */
#define MAX_FRAGS 17
/* Room for the largest payload, and as much again: a copy at any offset below it fits. */
#define SCRATCH_BYTES (2 * 65536)

/*
 * Where a payload spread over an skb's linear part and page fragments is
 * put together before it is copied into its record: one per CPU (user space
 * sizes the array), `busy` while a program uses it, so that one interrupting
 * it on the same CPU leaves it alone.
 */
struct payload_scratch {
	__u64 busy;
	__u8 data[SCRATCH_BYTES];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct payload_scratch);
} payload_scratch SEC(".maps");

/* The payload of a cgroup_skb program's datagram. */
static __always_inline void ctx_payload(struct payload_src *src, struct __sk_buff *ctx,
					const struct pkt *p)
{
	src->skb = ctx;
	src->ctx = true;
	src->off = p->ip_hlen + sizeof(struct udp_hdr);
	src->linear = 0;
	src->skip = 0;
}

/* The payload of a kernel skb whose headers parse_skb() read. */
static __always_inline void skb_payload(struct payload_src *src, struct sk_buff *skb,
					const struct pkt *p)
{
	__u32 start = BPF_CORE_READ(skb, network_header) + p->ip_hlen + sizeof(struct udp_hdr);
	__u32 tail = BPF_CORE_READ(skb, tail);

	src->skb = skb;
	src->ctx = false;
	src->off = start;
	src->linear = tail > start ? tail - start : 0;
	src->skip = start > tail ? start - tail : 0;
}

/*
 * Copies `want` bytes (at most payload_snaplen) of a kernel skb's payload
 * that its linear part does not hold alone: the linear bytes, then the page
 * fragments', put together in this CPU's scratch, then into `dst`. Returns
 * how many; fewer where a fragment cannot be read, the linear bytes alone
 * where the scratch is in use.
 */
static __always_inline __u64 gather_payload(void *dst, const struct payload_src *src,
					    const void *data, __u64 want)
{
	struct sk_buff *skb = src->skb;
	struct skb_shared_info *shinfo;
	struct payload_scratch *scratch;
	struct direct_map map;
	/* As struct udptrace_frag, but a plain local: no relocations. */
	struct {
		__u64 page;
		__u32 len;
		__u32 offset;
	} frag;
	__u32 cpu = bpf_get_smp_processor_id();
	__u64 off = 0, skip = src->skip, n;
	__u8 nr_frags;

	scratch = bpf_map_lookup_elem(&payload_scratch, &cpu);
	if (!scratch || scratch->busy) {
		n = src->linear < want ? src->linear : want;
		asm volatile("" : "+r"(n));
		if (n > payload_snaplen || bpf_probe_read_kernel(dst, n, data))
			return 0;
		return n;
	}
	scratch->busy = 1;
	if (src->linear) {
		off = src->linear & 0xffff;
		if (bpf_probe_read_kernel(scratch->data, off, data)) {
			scratch->busy = 0;
			return 0;
		}
	}
	shinfo = (struct skb_shared_info *)(BPF_CORE_READ(skb, head) + BPF_CORE_READ(skb, end));
	nr_frags = BPF_CORE_READ(shinfo, nr_frags);
	if (off < want && read_direct_map(&map)) {
		for (int i = 0; i < MAX_FRAGS; i++) {
			__u64 addr;

			if (i >= nr_frags || off >= want ||
			    bpf_probe_read_kernel(&frag, sizeof(frag), &shinfo->frags[i]))
				break;
			/* A net_iov (device memory), not a page: nothing to read. */
			if (frag.page & 1)
				break;
			if (skip >= frag.len) {
				skip -= frag.len;
				continue;
			}
			addr = page_address(&map, frag.page);
			if (!addr)
				break;
			n = frag.len - skip;
			if (n > want - off)
				n = want - off;
			if (bpf_probe_read_kernel(scratch->data + (off & 0xffff), n & 0xffff,
						  (void *)(addr + frag.offset + skip)))
				break;
			off += n & 0xffff;
			skip = 0;
		}
	}
	if (off > want)
		off = want;
	asm volatile("" : "+r"(off));
	if (off > payload_snaplen || bpf_probe_read_kernel(dst, off, scratch->data))
		off = 0;
	scratch->busy = 0;
	return off;
}

/*
 * Copies the first bytes of the payload, up to the snap length, to `dst`
 * (room for payload_snaplen bytes); returns how many.
 */
static __always_inline __u16 copy_payload(void *dst, const struct payload_src *src, __u64 len)
{
	__u64 room = payload_snaplen;
	struct sk_buff *skb;
	const void *data;

	/* 64-bit, so that the bound checked is the register the helper gets. */
	if (len > room)
		len = room;
	asm volatile("" : "+r"(len));
	if (len == 0 || len > room)
		return 0;
	if (src->ctx)
		return bpf_skb_load_bytes(src->skb, src->off, dst, len) ? 0 : len;
	skb = src->skb;
	data = BPF_CORE_READ(skb, head) + src->off;
	if (len > src->linear)
		return gather_payload(dst, src, data, len);
	return bpf_probe_read_kernel(dst, len, data) ? 0 : len;
}

/*
 * Packet and drop records with a payload are built here, then copied into
 * the ring buffer at their own length: bpf_ringbuf_reserve() takes a
 * constant size only, and a 40-byte DNS query must not cost the snap
 * length's 64 KiB. Two per CPU (user space sizes the array): a program
 * interrupting another that is building one (ingress in a softirq over an
 * egress program), or preempting it, takes the second; a third at once
 * loses its event, counted as lost.
 */
#define PAYLOAD_RECORDS_PER_CPU 2

struct payload_record {
	__u64 busy;
	struct udp_event e;
	__u8 payload[65536];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct payload_record);
} payload_records SEC(".maps");

/* Takes a free record of this CPU's: atomically where the kernel has exchange. */
static __always_inline bool take_record(struct payload_record *rec)
{
#ifdef UDPTRACE_NO_ATOMICS
	if (rec->busy)
		return false;
	rec->busy = 1;
	return true;
#else
	return __sync_lock_test_and_set(&rec->busy, 1) == 0;
#endif
}

static __always_inline struct payload_record *payload_record_slot(void)
{
	__u32 first = bpf_get_smp_processor_id() * PAYLOAD_RECORDS_PER_CPU;

	for (__u32 i = 0; i < PAYLOAD_RECORDS_PER_CPU; i++) {
		__u32 key = first + i;
		struct payload_record *rec = bpf_map_lookup_elem(&payload_records, &key);

		if (rec && take_record(rec))
			return rec;
	}
	stat_inc(UDP_STAT_LOST);
	return NULL;
}

/* Copies the record, with `caplen` bytes of payload, into this CPU's ring buffer. */
static __always_inline void payload_record_done(struct payload_record *rec, __u64 caplen)
{
	__u64 size = sizeof(rec->e) + ((caplen + 7) & ~7ULL), avail;
	void *ring = this_cpu_ring();

	asm volatile("" : "+r"(size));
	if (!ring || size > sizeof(rec->e) + sizeof(rec->payload)) {
		stat_inc(UDP_STAT_LOST);
	} else {
		/* Not yet among the pending bytes: added to them. */
		avail = bpf_ringbuf_query(ring, BPF_RB_AVAIL_DATA) + size + 8;
		if (bpf_ringbuf_output(ring, &rec->e, size, wakeup_flags(avail, size + 8)))
			stat_inc(UDP_STAT_LOST);
	}
	rec->busy = 0;
}

/* A packet event of `task`; `reason` for drops; with its payload from `src` if snapped. */
static __always_inline void emit_packet(__u8 kind, bool inbound, __u64 cookie, const struct pkt *p,
					__u32 reason, const struct task_ctx *task,
					const struct payload_src *src)
{
	struct payload_record *rec = NULL;
	struct sock_addrs a = {};
	struct udp_event *e;
	void *ring = NULL;

	a.netns = p->netns;
	a.family = p->ip_ver == 6 ? AF_INET6 : AF_INET;
	__builtin_memcpy(a.laddr, inbound ? p->daddr : p->saddr, 16);
	__builtin_memcpy(a.raddr, inbound ? p->saddr : p->daddr, 16);
	a.lport = inbound ? p->dport : p->sport;
	a.rport = inbound ? p->sport : p->dport;
	if (!kind_wanted(kind) || !stored_task_wanted(task) || !addrs_wanted(&a))
		return;
	if (payload_room && !count_mode) {
		rec = payload_record_slot();
		e = rec ? &rec->e : NULL;
	} else {
		e = event_slot(&ring);
	}
	if (!e)
		return;
	e->ts_ns = bpf_ktime_get_ns();
	fill_task(e, task);
	/* The payload, as a send or receive of it would return. */
	fill_socket(e, kind, cookie, &a, p->udp_length >= 8 ? p->udp_length - 8 : 0);
	__builtin_memset(&e->detail, 0, sizeof(e->detail));
	e->detail.packet.drop_reason = reason;
	e->detail.packet.ip_plength = p->ip_plength;
	e->detail.packet.udp_length = p->udp_length;
	e->detail.packet.udp_checksum = p->udp_checksum;
	e->detail.packet.gso_segs = p->gso_segs > 1 ? p->gso_segs : 1;
	e->detail.packet.ip_ver = p->ip_ver;
	e->detail.packet.inbound = inbound;
	if (rec) {
		e->detail.packet.caplen = copy_payload(rec->payload, src,
						       p->ip_plength > 8 ? p->ip_plength - 8 : 0);
		payload_record_done(rec, e->detail.packet.caplen);
		return;
	}
	event_done(e, ring);
}

/* Transmit runs in the sending task (sendmsg, or a corked socket's flush). */
static __always_inline void packet_sent(__u64 cookie, const struct pkt *p,
					const struct payload_src *src)
{
	struct task_ctx t;

	current_task(&t);
	emit_packet(UDP_EVENT_PACKET_SEND, false, cookie, p, 0, &t, src);
}

static __always_inline void packet_received(__u64 cookie, const struct sock_state *st,
					    const struct pkt *p, const struct payload_src *src)
{
	struct task_ctx t;

	owner_from(st, &t);
	emit_packet(UDP_EVENT_PACKET_RECV, true, cookie, p, 0, &t, src);
}

/* Raw sockets send UDP headers too; like udp:::send, report UDP sockets' only. */
static __always_inline bool udp_sock(struct sock *sk)
{
	return sk && BPF_CORE_READ(sk, sk_protocol) == IPPROTO_UDP &&
	       BPF_CORE_READ(sk, sk_type) == SOCK_DGRAM;
}

static __always_inline __u64 probed_cookie(struct sock *sk)
{
	return sk ? BPF_CORE_READ(sk, __sk_common.skc_cookie.counter) : 0;
}

/* A datagram's network namespace: its socket's, else (no socket) its device's. */
static __always_inline __u32 skb_netns(struct sk_buff *skb)
{
	struct sock *sk = BPF_CORE_READ(skb, sk);

	if (sk)
		return sock_netns(sk, false);
	return BPF_CORE_READ(skb, dev, nd_net.net, ns.inum);
}

/*
 * The last datagram each CPU handed to a socket, so that the drop that
 * follows when the socket refuses it (receive buffer or protocol memory
 * full) is attributed to that socket on kernels whose kfree_skb tracepoint
 * does not name it. Only those drops may use it: a freed skb's address is
 * soon reused.
 */
struct delivery {
	__u64 skb;
	__u64 cookie;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct delivery);
} last_delivery SEC(".maps");

/* `btf`: the skb is BTF-typed (fentry), so its socket's namespace is two loads. */
static __always_inline int on_transmit(struct sk_buff *skb, bool btf)
{
	struct sock *sk = btf ? skb->sk : BPF_CORE_READ(skb, sk);
	struct payload_src src = {};
	struct pkt p = {};

	if (!udp_sock(sk) || !parse_skb(skb, &p))
		return 0;
	/* IP fills in its length field after this point; the skb starts at the IP header. */
	p.ip_plength = BPF_CORE_READ(skb, len) - p.ip_hlen;
	p.netns = sock_netns(sk, btf);
	if (payload_room)
		skb_payload(&src, skb, &p);
	packet_sent(probed_cookie(sk), &p, &src);
	return 0;
}

/*
 * Whether drops need the deliveries noted: they are traced (or sockets
 * tracked), and the kfree_skb tracepoint does not name the socket.
 */
const volatile bool note_deliveries = true;

/* Notes the datagram this CPU is handing to a socket, for a drop that follows. */
static __always_inline void note_delivery(__u64 skb, __u64 cookie)
{
	struct delivery *d;
	__u32 zero = 0;

	if (!note_deliveries)
		return;
	d = bpf_map_lookup_elem(&last_delivery, &zero);
	if (d) {
		d->skb = skb;
		d->cookie = cookie;
	}
}

/* Linux 6.3+: the kernel's sk_buff behind a program's context, BTF-typed. */
extern void *bpf_cast_to_kern_ctx(void *obj) __ksym __weak;

/* A cgroup_skb context's address, laundered into a number (kernel_skb_of()). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} ctx_addr SEC(".maps");

/*
 * The kernel's sk_buff behind a cgroup_skb context, to read through
 * bpf_probe_read: BTF-typed where the kernel casts it (6.3+), else its
 * address as a number, read back from a map as delivered_skb() does.
 */
static __always_inline struct sk_buff *kernel_skb_of(struct __sk_buff *ctx)
{
	__u32 zero = 0;
	__u64 *addr;

	if (bpf_ksym_exists(bpf_cast_to_kern_ctx))
		return bpf_cast_to_kern_ctx(ctx);
	addr = bpf_map_lookup_elem(&ctx_addr, &zero);
	if (!addr)
		return NULL;
	*addr = (__u64)(long)ctx;
	return (struct sk_buff *)*(volatile __u64 *)addr;
}

/*
 * The network namespace of a cgroup_skb program's datagram. Where the kernel
 * casts the context (6.3+), plain loads through BTF: the bpf_probe_read
 * chain costs 70 ns a packet more.
 */
static __always_inline __u32 ctx_netns(struct __sk_buff *ctx)
{
	struct sk_buff *skb;

	if (bpf_ksym_exists(bpf_cast_to_kern_ctx)) {
		struct sock *sk;

		skb = bpf_cast_to_kern_ctx(ctx);
		sk = skb->sk;
		if (sk)
			return sock_netns(sk, true);
		return skb->dev->nd_net.net->ns.inum;
	}
	skb = kernel_skb_of(ctx);
	return skb ? skb_netns(skb) : 0;
}

/*
 * The sk_buff this CPU last noted, as a plain kernel address: cgroup_skb
 * programs may not read through their context or its socket, but may
 * through bpf_probe_read once the address is a number (read back from the
 * map, not the register the verifier knows as the context).
 */
static __always_inline struct sk_buff *delivered_skb(void)
{
	struct delivery *d;
	__u32 zero = 0;

	d = bpf_map_lookup_elem(&last_delivery, &zero);
	return d ? (struct sk_buff *)*(volatile __u64 *)&d->skb : NULL;
}

/* A datagram about to be queued, seen by cgroup_skb ingress: its socket's queue. */
static __always_inline void ingress_rcvqueue(struct __sk_buff *ctx, struct sock_state *st)
{
	struct sk_buff *skb;

	if (!track_sockets)
		return;
	if (bpf_ksym_exists(bpf_cast_to_kern_ctx)) {
		struct sock *sk;

		skb = bpf_cast_to_kern_ctx(ctx);
		sk = skb->sk;
		if (sk)
			note_rcvqueue(st, sk, skb, true);
		return;
	}
	skb = delivered_skb();
	if (skb)
		note_rcvqueue(st, BPF_CORE_READ(skb, sk), skb, false);
}

/*
 * The datagram passed its header and checksum checks and is about to be
 * queued. Also loaded for drops alone, to note the delivery, on kernels
 * whose kfree_skb tracepoint does not name the socket: the packet event is
 * then not wanted, and not emitted.
 */
static __always_inline int on_enqueue(struct sock *sk, struct sk_buff *skb, bool btf)
{
	bool wanted = kind_wanted(UDP_EVENT_PACKET_RECV);
	struct payload_src src = {};
	struct sock_state *st = NULL;
	struct pkt p = {};
	__u64 cookie;

	stamp_enqueued((__u64)skb);
	/* The headers only for the packet event: the notes need the socket alone. */
	if (wanted && !parse_skb(skb, &p))
		return 0;
	cookie = probed_cookie(sk);
	note_delivery((__u64)skb, cookie);
	/* One lookup of the socket's state for its queue and its owner. */
	if (track_sockets || wanted)
		st = sock_state_of_known(cookie);
	note_rcvqueue(st, sk, skb, btf);
	if (wanted) {
		p.netns = sock_netns(sk, btf);
		if (payload_room)
			skb_payload(&src, skb, &p);
		packet_received(cookie, st, &p, &src);
	}
	return 0;
}

#endif /* __UDPTRACE_PACKET_H */
