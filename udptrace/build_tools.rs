// The tools the BPF build needs, checked before it runs: libbpf-cargo reports
// a missing one only as a broken pipe deep in its error chain. Included by
// the build scripts of udptrace and udptrace-bench.

/// Exits with one clear line unless `clang` and `rustfmt` (which formats the
/// generated skeleton) run.
fn require_build_tools(clang: &std::ffi::OsStr) {
    let runs = |tool: &std::ffi::OsStr| {
        std::process::Command::new(tool)
            .arg("--version")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !runs(clang) {
        eprintln!(
            "error: {} not found: the BPF programs are compiled with clang \
             (Debian: apt-get install clang llvm; or set UDPTRACE_CLANG)",
            clang.to_string_lossy()
        );
        std::process::exit(1);
    }
    if !runs("rustfmt".as_ref()) {
        eprintln!(
            "error: rustfmt not found: libbpf-cargo formats the generated BPF skeleton \
             with it (rustup component add rustfmt)"
        );
        std::process::exit(1);
    }
}
