//! Compiles the BPF programs with clang and generates their libbpf-rs skeleton.

include!("build_tools.rs");

const BPF_DIR: &str = "../bpf";

fn main() {
    build_bpf_skeleton(
        "../bpf/udptrace.bpf.c",
        BPF_DIR,
        "udptrace.skel.rs",
        "the BPF programs",
    );
    // The programs' source and every header it includes: cargo rescans the
    // whole directory, so a header added later is covered too.
    println!("cargo:rerun-if-changed={BPF_DIR}");
}
