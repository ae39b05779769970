/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Where a traced kernel function's arguments are. Functions gain and lose
 * arguments between versions (udp_recvmsg had six in 5.10, five in 6.1,
 * four in 7.2), so the position of each argument a program reads, and of
 * fexit's return value after them, comes from the kernel's BTF at load time
 * (struct fn_args, written into .rodata). The verifier knows those values,
 * so each read below is one load at a fixed offset, as the kernel requires;
 * inline assembly keeps clang from merging the cases into a computed one.
 */
#ifndef __UDPTRACE_ARGS_H
#define __UDPTRACE_ARGS_H

#include "vmlinux.h"
#include "udptrace.h"

#define CTX_LOAD(off) asm volatile("%0 = *(u64 *)(%1 + " #off ")" : "=r"(v) : "r"(ctx))

/* fentry/fexit: slot `i` of the context (the arguments, then the return value). */
static __always_inline __u64 fn_arg(void *ctx, __u8 i)
{
	__u64 v = 0;

	switch (i) {
	case 0: CTX_LOAD(0); break;
	case 1: CTX_LOAD(8); break;
	case 2: CTX_LOAD(16); break;
	case 3: CTX_LOAD(24); break;
	case 4: CTX_LOAD(32); break;
	case 5: CTX_LOAD(40); break;
	case 6: CTX_LOAD(48); break;
	case 7: CTX_LOAD(56); break;
	}
	return v;
}

/* kprobe: argument `i` in its x86-64 register (pt_regs: r9 64, r8 72, cx 88, dx 96, si 104, di 112). */
static __always_inline __u64 kprobe_arg(void *ctx, __u8 i)
{
	__u64 v = 0;

	switch (i) {
	case 0: CTX_LOAD(112); break;
	case 1: CTX_LOAD(104); break;
	case 2: CTX_LOAD(96); break;
	case 3: CTX_LOAD(88); break;
	case 4: CTX_LOAD(72); break;
	case 5: CTX_LOAD(64); break;
	}
	return v;
}

#undef CTX_LOAD

#endif /* __UDPTRACE_ARGS_H */
