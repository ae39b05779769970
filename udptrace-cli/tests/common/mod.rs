//! Helpers the CLI's test binaries share.
#![allow(dead_code)] // each test binary uses its own share of them

/// The binary under test: cargo's, or `UDPTRACE_TEST_BIN` where the tests run
/// away from the build tree (the kernel matrix's VMs).
pub fn udptrace_bin() -> String {
    std::env::var("UDPTRACE_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_udptrace").into())
}

/// `bpf(cmd, attr)` for the commands that take an object id in the first
/// word of union bpf_attr and may write a next id in the second
/// (`BPF_*_GET_FD_BY_ID`, `BPF_*_GET_NEXT_ID`). Returns the syscall's result.
pub fn bpf_id_command(cmd: u32, attr: &mut [u32; 3]) -> i64 {
    // SAFETY: the attr is the 12-byte prefix of union bpf_attr these commands
    // read and write; the kernel zero-extends the rest.
    unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_mut_ptr(),
            std::mem::size_of_val(attr) as u32,
        )
    }
}
