/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Who an event is of: the current task, read through helpers or straight from
 * its task_struct, or a task seen earlier (struct task_ctx).
 */
#ifndef __UDPTRACE_TASK_H
#define __UDPTRACE_TASK_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "udptrace.h"

/* A task as an event reports it. */
struct task_ctx {
	__u64 ts_ns;
	__u64 pid_tgid;
	__u64 cgroup_id;
	__u32 uid;
	char comm[TASK_COMM_LEN];
};

static __always_inline void current_task(struct task_ctx *t)
{
	t->ts_ns = bpf_ktime_get_ns();
	t->pid_tgid = bpf_get_current_pid_tgid();
	t->cgroup_id = bpf_get_current_cgroup_id();
	t->uid = (__u32)bpf_get_current_uid_gid();
	bpf_get_current_comm(t->comm, sizeof(t->comm));
}

/*
 * The current task's cgroup, uid and name, read straight from its task_struct
 * (tracing programs, and cgroup_skb where the kernel allows it): a few loads
 * instead of three helper calls, each with its own walk (cgroup, credentials)
 * or string copy, which together cost a fifth of a socket event. The values
 * are the helpers': the default hierarchy's cgroup id, the subjective uid as
 * the initial namespace sees it.
 */
static __always_inline void read_task(struct task_struct *task, __u64 *cgroup_id, __u32 *uid,
				      char comm[TASK_COMM_LEN])
{
	*cgroup_id = task->cgroups->dfl_cgrp->kn->id;
	*uid = task->cred->uid.val;
	__builtin_memcpy(comm, task->comm, TASK_COMM_LEN);
}

static __always_inline void read_task_btf(__u64 *cgroup_id, __u32 *uid, char comm[TASK_COMM_LEN])
{
	read_task(bpf_get_current_task_btf(), cgroup_id, uid, comm);
}

static __always_inline void current_task_btf(struct task_ctx *t)
{
	t->ts_ns = bpf_ktime_get_ns();
	t->pid_tgid = bpf_get_current_pid_tgid();
	read_task_btf(&t->cgroup_id, &t->uid, t->comm);
}

#endif /* __UDPTRACE_TASK_H */
