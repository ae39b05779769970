/* SPDX-License-Identifier: GPL-2.0 */
/*
 * How events leave the programs: built in this CPU's ring buffer and handed to
 * user space, or, for `udptrace count`, added up instead (count.h).
 */
#ifndef __UDPTRACE_EMIT_H
#define __UDPTRACE_EMIT_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "udptrace.h"
#include "task.h"
#include "addrs.h"
#include "stats.h"
#include "count.h"

/* Pending bytes in a CPU's ring buffer that make the producer wake the consumer. */
const volatile __u64 wakeup_bytes = 64 * 1024;
/*
 * One ring buffer per CPU, created and put in place by user space: a shared
 * one makes every event take the same lock, and a sender and its receiver on
 * two CPUs bounce it between their caches. User space merges the rings in
 * time order.
 */
struct event_ring {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096); /* a template: each CPU's ring is sized from user space */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1); /* one slot per possible CPU, set from user space */
	__type(key, __u32);
	__array(values, struct event_ring);
} events SEC(".maps");

/*
 * Bytes of UDP payload that packet and drop records can carry: the snap
 * length rounded up to 8, or 0 for headers only.
 */
const volatile __u32 payload_room = 0;
/* The snap length itself: payload bytes copied at most (at most payload_room). */
const volatile __u32 payload_snaplen = 0;

/* An event's size in the ring buffer, with the record header. */
#define RINGBUF_RECORD_BYTES (sizeof(struct udp_event) + 8)

/* This CPU's ring buffer (a program does not migrate while it runs). */
static __always_inline void *this_cpu_ring(void)
{
	__u32 cpu = bpf_get_smp_processor_id();

	return bpf_map_lookup_elem(&events, &cpu);
}

/*
 * Where to build the next event: space in this CPU's ring buffer (`*ring`,
 * for event_done()), or the count-mode scratch.
 */
static __always_inline struct udp_event *event_slot(void **ring)
{
	struct udp_event *e = NULL;
	__u32 zero = 0;

	*ring = NULL;
	if (count_mode) {
		struct count_scratch *cs = bpf_map_lookup_elem(&scratch, &zero);

		return cs ? &cs->event : NULL;
	}
	*ring = this_cpu_ring();
	if (*ring)
		e = bpf_ringbuf_reserve(*ring, sizeof(*e), 0);
	if (!e)
		stat_inc(UDP_STAT_LOST);
	return e;
}

/*
 * How to hand over a record that leaves `pending` bytes in `ring`: wake the
 * consumer once, as the pending data crosses wakeup_bytes. Waking it again
 * for every event while it catches up would cost an interrupt each (a
 * self-IPI; a VM exit under virtualisation) and tell it nothing. A crossing
 * missed in a race with a nested program waits for the drain timer.
 */
static __always_inline __u64 wakeup_flags(__u64 pending, __u64 record_bytes)
{
	if (pending >= wakeup_bytes && pending < wakeup_bytes + record_bytes)
		return BPF_RB_FORCE_WAKEUP;
	return BPF_RB_NO_WAKEUP;
}

/* Hands a built event to user space through `ring`, or counts it. */
static __always_inline void event_done(struct udp_event *e, void *ring)
{
	__u64 flags, avail = 0;

	if (count_mode) {
		/* The event is the first member of its count_scratch. */
		count_event((struct count_scratch *)e);
		return;
	}
	/* Reserved, so already among the pending bytes. */
	if (ring)
		avail = bpf_ringbuf_query(ring, BPF_RB_AVAIL_DATA);
	flags = wakeup_flags(avail, RINGBUF_RECORD_BYTES);
	bpf_ringbuf_submit(e, flags);
}

/* An event's socket part: all but its time, task and detail. */
static __always_inline void fill_socket(struct udp_event *e, __u8 kind, __u64 cookie,
					const struct sock_addrs *a, __s32 ret)
{
	e->sock_cookie = cookie;
	e->ret = ret;
	__builtin_memcpy(e->laddr, a->laddr, 16);
	__builtin_memcpy(e->raddr, a->raddr, 16);
	e->lport = a->lport;
	e->rport = a->rport;
	e->kind = kind;
	e->family = a->family;
	e->pad[0] = 0;
	e->pad[1] = 0;
	e->netns = a->netns;
	e->pad2 = 0;
}

/* An event's task part, from a task seen earlier. */
static __always_inline void fill_task(struct udp_event *e, const struct task_ctx *t)
{
	e->cgroup_id = t->cgroup_id;
	e->uid = t->uid;
	e->pid = t->pid_tgid >> 32;
	e->tid = (__u32)t->pid_tgid;
	__builtin_memcpy(e->comm, t->comm, sizeof(e->comm));
}

/* An event's task part: the current task's. */
static __always_inline void fill_current_task(struct udp_event *e)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();

	e->pid = pid_tgid >> 32;
	e->tid = (__u32)pid_tgid;
	if (count_mode) {
		/* Of the task, only the pid and name can be a count's key. */
		if (count_keys & COUNT_COMM)
			bpf_get_current_comm(e->comm, sizeof(e->comm));
		if (count_keys & COUNT_CGROUP)
			e->cgroup_id = bpf_get_current_cgroup_id();
		return;
	}
	e->ts_ns = bpf_ktime_get_ns();
	e->cgroup_id = bpf_get_current_cgroup_id();
	e->uid = (__u32)bpf_get_current_uid_gid();
	bpf_get_current_comm(e->comm, sizeof(e->comm));
}

/* Emits an event of `task`, seen earlier, or else of the current task. */
static __always_inline void emit(__u8 kind, __u64 cookie, const struct sock_addrs *a,
				 const struct sock_counters *cnt, __s32 ret,
				 const struct task_ctx *task)
{
	void *ring;
	struct udp_event *e = event_slot(&ring);

	if (!e)
		return;
	if (task) {
		e->ts_ns = task->ts_ns;
		fill_task(e, task);
	} else {
		fill_current_task(e);
	}
	e->detail.counters = *cnt;
	fill_socket(e, kind, cookie, a, ret);
	event_done(e, ring);
}

/* A close event of the current task, with what the socket table knew of the socket. */
static __always_inline void emit_close(__u64 cookie, const struct sock_addrs *a,
				       const struct sock_counters *cnt,
				       const struct sock_life *life)
{
	struct udp_close_event *e = NULL;
	void *ring;

	if (count_mode) {
		emit(UDP_EVENT_CLOSE, cookie, a, cnt, 0, NULL);
		return;
	}
	ring = this_cpu_ring();
	if (ring)
		e = bpf_ringbuf_reserve(ring, sizeof(*e), 0);
	if (!e) {
		stat_inc(UDP_STAT_LOST);
		return;
	}
	fill_current_task(&e->event);
	e->event.detail.counters = *cnt;
	fill_socket(&e->event, UDP_EVENT_CLOSE, cookie, a, 0);
	e->life = *life;
	event_done(&e->event, ring);
}

#endif /* __UDPTRACE_EMIT_H */
