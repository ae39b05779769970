/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Who an event is of: the current task, read through helpers or straight from
 * its task_struct, or a task seen earlier (struct task_ctx).
 */
#ifndef __UDPTRACE_TASK_H
#define __UDPTRACE_TASK_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include "udptrace.h"

/*
 * Only tasks in this cgroup (v2 id) or below it, at this depth below the
 * root: written into .rodata before load, like filter.h's filters.
 */
const volatile __u64 filter_cgroup_id = 0;
const volatile __u32 filter_cgroup_level = 0;

/* Tracing programs may ask for the current task's BTF pointer (Linux 5.11+). */
const volatile bool tracing_task_btf = true;

/* Before Linux 5.15 a cgroup kept its ancestors' ids, not pointers to them. */
struct cgroup___ids {
	__u64 ancestor_ids[0];
} __attribute__((preserve_access_index));

/* A task as an event reports it. */
struct task_ctx {
	__u64 ts_ns;
	__u64 pid_tgid;
	__u64 cgroup_id;
	__u32 uid;
	char comm[TASK_COMM_LEN];
	__u8 in_cgroup; /* in the filter's cgroup (or there is no such filter) */
};

/*
 * Whether `task` is in the filter's cgroup or below it: its cgroup's
 * ancestor at the filter's depth is that cgroup. Read through bpf_probe_read,
 * which every program type may call, for any task pointer.
 */
static __always_inline bool task_in_cgroup(struct task_struct *task)
{
	struct cgroup *cg, *ancestor = NULL;
	__u64 at;

	/* First: the verifier prunes what follows only behind this branch. */
	if (!filter_cgroup_id)
		return true;
	cg = BPF_CORE_READ(task, cgroups, dfl_cgrp);
	if (!cg || BPF_CORE_READ(cg, level) < (int)filter_cgroup_level)
		return false;
	if (!bpf_core_field_exists(struct cgroup, ancestors)) {
		__u64 id = 0;

		at = (__u64)cg + bpf_core_field_offset(struct cgroup___ids, ancestor_ids) +
		     filter_cgroup_level * sizeof(id);
		return !bpf_probe_read_kernel(&id, sizeof(id), (void *)at) && id == filter_cgroup_id;
	}
	at = (__u64)cg + bpf_core_field_offset(struct cgroup, ancestors) +
	     filter_cgroup_level * sizeof(ancestor);
	if (bpf_probe_read_kernel(&ancestor, sizeof(ancestor), (void *)at) || !ancestor)
		return false;
	return BPF_CORE_READ(ancestor, kn, id) == filter_cgroup_id;
}

static __always_inline bool current_in_cgroup(void)
{
	return !filter_cgroup_id || task_in_cgroup((struct task_struct *)bpf_get_current_task());
}

static __always_inline void current_task(struct task_ctx *t)
{
	t->ts_ns = bpf_ktime_get_ns();
	t->pid_tgid = bpf_get_current_pid_tgid();
	t->cgroup_id = bpf_get_current_cgroup_id();
	t->uid = (__u32)bpf_get_current_uid_gid();
	bpf_get_current_comm(t->comm, sizeof(t->comm));
	t->in_cgroup = current_in_cgroup();
}

/*
 * The current task's cgroup, uid and name, read straight from its task_struct
 * (tracing programs, and cgroup_skb where the kernel allows it): a few loads
 * instead of three helper calls, each with its own walk (cgroup, credentials)
 * or string copy, which together cost a fifth of a socket event. The values
 * are the helpers': the default hierarchy's cgroup id, the subjective uid as
 * the initial namespace sees it.
 */
static __always_inline void read_task(struct task_struct *task, struct task_ctx *t)
{
	t->cgroup_id = task->cgroups->dfl_cgrp->kn->id;
	t->uid = task->cred->uid.val;
	__builtin_memcpy(t->comm, task->comm, TASK_COMM_LEN);
	t->in_cgroup = task_in_cgroup(task);
}

static __always_inline void read_task_btf(struct task_ctx *t)
{
	read_task(bpf_get_current_task_btf(), t);
}

/* The current task, through its BTF pointer where the kernel gives one. */
static __always_inline void current_task_btf(struct task_ctx *t)
{
	if (!tracing_task_btf) {
		current_task(t);
		return;
	}
	t->ts_ns = bpf_ktime_get_ns();
	t->pid_tgid = bpf_get_current_pid_tgid();
	read_task_btf(t);
}

#endif /* __UDPTRACE_TASK_H */
