// Compiling BPF programs with clang into a libbpf-rs skeleton, shared by the
// build scripts of udptrace and udptrace-bench (include!d by each; each uses
// some of these functions).

/// Compiles `src` (with `include` on the header path) into the skeleton
/// `OUT_DIR/skeleton`, or exits with one readable paragraph naming `what`
/// failed instead of a build-script backtrace. `UDPTRACE_CLANG` names clang.
#[allow(dead_code)]
fn build_bpf_skeleton(src: &str, include: &str, skeleton: &str, what: &str) {
    let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR is set by cargo"));
    let clang = std::env::var_os("UDPTRACE_CLANG").unwrap_or_else(|| "clang".into());
    require_build_tools(&clang);
    if let Err(err) = libbpf_cargo::SkeletonBuilder::new()
        .source(src)
        .clang(&clang)
        .clang_args(["-I", include, "-Wall", "-Werror"])
        .build_and_generate(out.join(skeleton))
    {
        eprintln!("error: building {what} failed:\n{err:#}");
        std::process::exit(1);
    }
    println!("cargo:rerun-if-env-changed=UDPTRACE_CLANG");
}

/// Exits with one clear line unless `clang` and `rustfmt` (which formats the
/// generated skeleton) run: libbpf-cargo reports a missing one only as a
/// broken pipe deep in its error chain.
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

/// Compiles `src` into the object `obj`, with `defines` passed to clang, or
/// exits with one readable paragraph naming `what` failed.
#[allow(dead_code)]
fn build_bpf_object(src: &str, include: &str, obj: &std::path::Path, defines: &[&str], what: &str) {
    let clang = std::env::var_os("UDPTRACE_CLANG").unwrap_or_else(|| "clang".into());
    require_build_tools(&clang);
    let mut args = vec!["-I", include, "-Wall", "-Werror"];
    args.extend_from_slice(defines);
    if let Err(err) = libbpf_cargo::SkeletonBuilder::new()
        .source(src)
        .obj(obj)
        .clang(&clang)
        .clang_args(args)
        .build()
    {
        eprintln!("error: building {what} failed:\n{err:#}");
        std::process::exit(1);
    }
    println!("cargo:rerun-if-env-changed=UDPTRACE_CLANG");
}

/// Generates the skeleton `skeleton` of the object `obj`, which it embeds by
/// path (include_bytes!), or exits naming `what` failed.
#[allow(dead_code)]
fn generate_skeleton(obj: &std::path::Path, skeleton: &std::path::Path, what: &str) {
    if let Err(err) = libbpf_cargo::SkeletonBuilder::new()
        .obj(obj)
        .reference_obj(true)
        .generate(skeleton)
    {
        eprintln!("error: generating the skeleton of {what} failed:\n{err:#}");
        std::process::exit(1);
    }
}
