//! Compiles the BPF programs with clang and generates their libbpf-rs skeleton.

use std::env;
use std::path::PathBuf;

use libbpf_cargo::SkeletonBuilder;

include!("build_tools.rs");

const BPF_DIR: &str = "../bpf";
const SRC: &str = "../bpf/udptrace.bpf.c";

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR is set by cargo"));
    let clang = env::var_os("UDPTRACE_CLANG").unwrap_or_else(|| "clang".into());
    require_build_tools(&clang);
    if let Err(err) = SkeletonBuilder::new()
        .source(SRC)
        .clang(&clang)
        .clang_args(["-I", BPF_DIR, "-Wall", "-Werror"])
        .build_and_generate(out.join("udptrace.skel.rs"))
    {
        // One readable paragraph instead of a build-script backtrace.
        eprintln!("error: building the BPF programs failed:\n{err:#}");
        std::process::exit(1);
    }
    // The programs' source and every header it includes: cargo rescans the
    // whole directory, so a header added later is covered too.
    println!("cargo:rerun-if-changed={BPF_DIR}");
    println!("cargo:rerun-if-env-changed=UDPTRACE_CLANG");
}
