/* SPDX-License-Identifier: GPL-2.0 */
/* The filters, and the checks of an event's task, addresses and kind against them. */
#ifndef __UDPTRACE_FILTER_H
#define __UDPTRACE_FILTER_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "udptrace.h"
#include "task.h"
#include "addrs.h"

/* Filters, written into .rodata before load; unset ones are pruned by the verifier. */
const volatile __u32 filter_pid = 0;
const volatile bool filter_comm_on = false;
const volatile char filter_comm[TASK_COMM_LEN] = {};
const volatile __u8 filter_family = 0; /* AF_INET, AF_INET6 or 0 */
const volatile __u16 filter_port = 0; /* either side */
const volatile bool filter_addr_on = false;
const volatile __u8 filter_addr[16] = {}; /* IPv4 as IPv4-mapped */
const volatile __u8 filter_addr_mask[16] = {};
const volatile __u8 event_kinds = 0xff; /* bit (1 << kind) */

static __always_inline bool addr_in_filter(const __u8 addr[16])
{
	for (int i = 0; i < 16; i++)
		if ((addr[i] & filter_addr_mask[i]) != filter_addr[i])
			return false;
	return true;
}

static __always_inline bool comm_matches(const char comm[TASK_COMM_LEN])
{
	for (int i = 0; i < TASK_COMM_LEN; i++) {
		if (comm[i] != filter_comm[i])
			return false;
		if (!comm[i])
			break;
	}
	return true;
}

/* Filters that depend only on the current task. */
static __always_inline bool task_wanted(__u64 pid_tgid)
{
	if (filter_pid && (pid_tgid >> 32) != filter_pid)
		return false;
	if (filter_comm_on) {
		char comm[TASK_COMM_LEN];

		bpf_get_current_comm(comm, sizeof(comm));
		if (!comm_matches(comm))
			return false;
	}
	return current_in_cgroup();
}

/* task_wanted() for a task seen earlier. */
static __always_inline bool stored_task_wanted(const struct task_ctx *t)
{
	if (filter_pid && (t->pid_tgid >> 32) != filter_pid)
		return false;
	if (filter_cgroup_id && !t->in_cgroup)
		return false;
	return !filter_comm_on || comm_matches(t->comm);
}

static __always_inline bool addrs_wanted(const struct sock_addrs *a)
{
	if (filter_netns && a->netns != filter_netns)
		return false;
	if (filter_family && a->family != filter_family)
		return false;
	if (filter_port && a->lport != filter_port && a->rport != filter_port)
		return false;
	if (filter_addr_on && !addr_in_filter(a->laddr) && !addr_in_filter(a->raddr))
		return false;
	return true;
}

/* The filters on the local side alone: for a receive whose sender is unknown. */
static __always_inline bool local_side_wanted(const struct sock_addrs *a)
{
	if (filter_netns && a->netns != filter_netns)
		return false;
	if (filter_family && a->family != filter_family)
		return false;
	if (filter_port && a->lport != filter_port)
		return false;
	if (filter_addr_on && !addr_in_filter(a->laddr))
		return false;
	return true;
}

static __always_inline bool kind_wanted(__u8 kind)
{
	return event_kinds & (1 << kind);
}

/* Whether a filter on the task or the addresses is set (constant after load). */
static __always_inline bool filtering(void)
{
	return filter_pid || filter_comm_on || filter_family || filter_port || filter_addr_on ||
	       filter_netns || filter_cgroup_id;
}

#endif /* __UDPTRACE_FILTER_H */
