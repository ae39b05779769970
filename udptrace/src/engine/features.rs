//! What the running kernel's BPF accepts, probed once per process. The
//! answers choose which build of the programs loads and which of their code
//! paths run (written into `.rodata`), never a kernel version number: the
//! same feature arrives in different versions on backporting distributions.

use std::sync::OnceLock;

use libbpf_rs::libbpf_sys as sys;

/// The build of the programs this kernel accepts: `with` uses atomic
/// compare-and-exchange and exchange (Linux 5.12+), which older verifiers
/// refuse wherever they appear; `without` does without them.
pub(crate) fn bpf_object(with: &'static [u8], without: &'static [u8]) -> &'static [u8] {
    if atomics() {
        with
    } else {
        without
    }
}

/// Whether the verifier accepts atomic compare-and-exchange (Linux 5.12+):
/// loads a seven-instruction socket filter that uses it on the stack.
pub(crate) fn atomics() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        // code, registers (dst | src << 4), offset, immediate
        let insn = |code: u8, regs: u8, off: i16, imm: i32| {
            let mut b = [0u8; 8];
            b[0] = code;
            b[1] = regs;
            b[2..4].copy_from_slice(&off.to_le_bytes());
            b[4..8].copy_from_slice(&imm.to_le_bytes());
            b
        };
        const MOV64_IMM: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
        const STX_DW: u8 = 0x7b; // BPF_STX | BPF_MEM | BPF_DW
        const ATOMIC_DW: u8 = 0xdb; // BPF_STX | BPF_ATOMIC | BPF_DW
        const CMPXCHG: i32 = 0xf1; // BPF_CMPXCHG (with BPF_FETCH)
        const EXIT: u8 = 0x95;
        let prog = [
            insn(MOV64_IMM, 1, 0, 0),                  // r1 = 0
            insn(STX_DW, 10 | 1 << 4, -8, 0),          // *(u64 *)(r10 - 8) = r1
            insn(MOV64_IMM, 0, 0, 0),                  // r0 = 0
            insn(MOV64_IMM, 1, 0, 1),                  // r1 = 1
            insn(ATOMIC_DW, 10 | 1 << 4, -8, CMPXCHG), // r0 = cmpxchg(r10 - 8, r0, r1)
            insn(MOV64_IMM, 0, 0, 0),                  // r0 = 0
            insn(EXIT, 0, 0, 0),
        ];
        // SAFETY: the instructions are 7 valid 8-byte bpf_insn records; the
        // names are NUL-terminated; no options. The descriptor is closed.
        unsafe {
            let fd = sys::bpf_prog_load(
                sys::BPF_PROG_TYPE_SOCKET_FILTER,
                c"udptrace_probe".as_ptr(),
                c"GPL".as_ptr(),
                prog.as_ptr().cast(),
                prog.len() as _,
                std::ptr::null_mut(),
            );
            if fd >= 0 {
                libc::close(fd);
            }
            fd >= 0
        }
    })
}

/// Whether tracing programs (fentry, tp_btf, iterators) may ask for a
/// socket's cookie (Linux 5.12+). Where they may not, they read the cookie
/// the kernel gave the socket already.
pub(crate) fn tracing_socket_cookie() -> bool {
    crate::backend::kernel_hooks().tracing_socket_cookie
}

/// Whether tracing programs may ask for the current task's BTF pointer
/// (Linux 5.11+), and so read its cgroup, uid and name with plain loads.
pub(crate) fn tracing_task_btf() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        probe_helper(
            sys::BPF_PROG_TYPE_KPROBE,
            sys::BPF_FUNC_get_current_task_btf,
        )
    })
}

/// Whether cgroup_skb programs may ask for the current task's BTF pointer
/// and so read its cgroup, uid and name as tracing programs do; before
/// Linux 6.18 they may not ask for the uid or name with helpers.
pub(crate) fn cgroup_skb_task_btf() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        probe_helper(
            sys::BPF_PROG_TYPE_CGROUP_SKB,
            sys::BPF_FUNC_get_current_task_btf,
        )
    })
}

fn probe_helper(prog_type: sys::bpf_prog_type, helper: sys::bpf_func_id) -> bool {
    // SAFETY: loads and unloads a two-instruction probe program; no options.
    unsafe { sys::libbpf_probe_bpf_helper(prog_type, helper, std::ptr::null()) == 1 }
}

/// What this kernel cannot give, whatever it traces: one line each, for
/// `udptrace doctor` (none on current kernels).
pub fn kernel_limits() -> Vec<&'static str> {
    let mut limits = Vec::new();
    if !crate::backend::kfree_skb_has_reason() {
        limits.push(NO_DROP_REASONS);
    }
    if crate::sock_diag::listing_failed() {
        limits.push(NO_SOCKET_LISTING);
    }
    limits
}

/// Of [`kernel_limits`], those that touch a tracer with these probes.
pub(crate) fn limits_of(probes: &[String]) -> Vec<&'static str> {
    kernel_limits()
        .into_iter()
        .filter(|&limit| limit != NO_DROP_REASONS || probes.iter().any(|p| p == "tp_btf/kfree_skb"))
        .collect()
}

const NO_DROP_REASONS: &str = "this kernel's drops carry no reason (Linux 5.17+): udptrace tells \
    SOCKET_RCVBUFF, PROTO_MEM, NO_SOCKET and UDP_CSUM from what precedes them, any other drop is \
    NOT_SPECIFIED";

const NO_SOCKET_LISTING: &str = "the kernel did not list its UDP sockets (socket diagnostics, \
    udp_diag): those open before tracing began are known from their first datagram on";

/// Every event goes through BPF ring buffers (Linux 5.8+): one clear line
/// on older kernels rather than a failed map creation.
pub(crate) fn check_ring_buffers() -> Result<(), crate::Error> {
    // SAFETY: creates and closes a probe map; no options.
    let has =
        unsafe { sys::libbpf_probe_bpf_map_type(sys::BPF_MAP_TYPE_RINGBUF, std::ptr::null()) };
    // Unprivileged callers cannot probe: the privilege check speaks for them.
    if has == 0 {
        return Err(crate::Error::System(
            "this kernel has no BPF ring buffers (Linux 5.8+), which udptrace needs".into(),
        ));
    }
    Ok(())
}
