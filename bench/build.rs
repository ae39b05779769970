//! Compiles the hook-floor BPF programs and generates their skeleton.

use std::env;
use std::path::PathBuf;

use libbpf_cargo::SkeletonBuilder;

include!("../udptrace/build_tools.rs");

const SRC: &str = "bpf/floor.bpf.c";
/// udptrace's trimmed kernel types.
const TYPES_DIR: &str = "../bpf";

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR is set by cargo"));
    let clang = env::var_os("UDPTRACE_CLANG").unwrap_or_else(|| "clang".into());
    require_build_tools(&clang);
    if let Err(err) = SkeletonBuilder::new()
        .source(SRC)
        .clang(&clang)
        .clang_args(["-I", TYPES_DIR, "-Wall", "-Werror"])
        .build_and_generate(out.join("floor.skel.rs"))
    {
        eprintln!("error: building the hook-floor programs failed:\n{err:#}");
        std::process::exit(1);
    }
    println!("cargo:rerun-if-changed=bpf");
    println!("cargo:rerun-if-changed={TYPES_DIR}/vmlinux.h");
    println!("cargo:rerun-if-env-changed=UDPTRACE_CLANG");
}
