//! Compiles the hook-floor BPF programs and generates their skeleton.

include!("../udptrace/build_tools.rs");

/// udptrace's trimmed kernel types.
const TYPES_DIR: &str = "../bpf";

fn main() {
    build_bpf_skeleton(
        "bpf/floor.bpf.c",
        TYPES_DIR,
        "floor.skel.rs",
        "the hook-floor programs",
    );
    println!("cargo:rerun-if-changed=bpf");
    println!("cargo:rerun-if-changed={TYPES_DIR}/vmlinux.h");
}
