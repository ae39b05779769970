//! Real foreign consumers of libudpEvent: C programs built with the system C
//! compiler (one dlopen()s the library exactly as a legacy consumer does, one
//! links the v2 API through the generated header) and Python ctypes.

use std::mem::offset_of;
use std::path::{Path, PathBuf};
use std::process::Command;

use udpEvent::legacy::udp_event_t;

/// target/debug (or release): where cargo put libudpEvent.so for this test.
/// `cargo test` builds only the rlib: `cargo build` must have run first.
fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
    let lib = dir.join("libudpEvent.so");
    assert!(
        lib.exists(),
        "{} is missing: run `cargo build -p udpevent` first (./dev.sh test does)",
        lib.display()
    );
    dir
}

fn src(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(name)
}

fn include_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../include")
}

/// Compiles a C test program with the system compiler and returns its path.
fn compile(name: &str, extra: &[&str]) -> PathBuf {
    let out = std::env::temp_dir().join(format!("udpevent-{name}-{}", std::process::id()));
    let status = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
        .args(["-std=gnu11", "-Wall", "-Werror", "-I"])
        .arg(include_dir())
        .arg(src(&format!("c/{name}.c")))
        .arg("-o")
        .arg(&out)
        .args(extra)
        .status()
        .expect("a C compiler (cc)");
    assert!(status.success(), "compiling {name}.c failed");
    out
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{cmd:?} failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    stdout
}

#[test]
fn legacy_c_consumer_via_dlopen() {
    let bin = compile("legacy_consumer", &["-ldl"]);
    let stdout = run_ok(Command::new(&bin).arg(lib_dir().join("libudpEvent.so")));
    let lines: Vec<&str> = stdout.lines().collect();
    // AddProbe twice: two version lines, one set of probes.
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("udpEvent ")).count(),
        2,
        "{stdout}"
    );
    assert_eq!(
        lines.iter().filter(|l| **l == "Cleaning up!").count(),
        1,
        "{stdout}"
    );
    assert!(
        lines.contains(&"detach tp_btf/sock_send_length OK"),
        "{stdout}"
    );
    // One line per probe: two length tracepoints, eight cgroup hooks.
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("detach ")).count(),
        10,
        "{stdout}"
    );
    assert_eq!(lines[lines.len() - 2], "bpf.detach_kprobe OK");
    assert_eq!(lines[lines.len() - 1], "PASS");
    let _ = std::fs::remove_file(bin);
}

#[test]
fn v2_c_consumer_linked_with_header() {
    let dir = lib_dir();
    let rpath = format!("-Wl,-rpath,{}", dir.display());
    let libdir = format!("-L{}", dir.display());
    let bin = compile("v2_consumer", &[&libdir, &rpath, "-ludpEvent"]);
    assert_eq!(run_ok(&mut Command::new(&bin)).trim(), "PASS");
    let _ = std::fs::remove_file(bin);
}

#[test]
fn python_ctypes_consumer() {
    let stdout = run_ok(
        Command::new("python3")
            .arg(src("python/ctypes_consumer.py"))
            .arg(lib_dir().join("libudpEvent.so")),
    );
    assert!(stdout.ends_with("PASS\n"), "{stdout}");
}

#[test]
fn legacy_struct_layout_matches_c() {
    let bin = compile("abi_layout", &[]);
    let stdout = run_ok(&mut Command::new(&bin));
    let rust = [
        ("size", std::mem::size_of::<udp_event_t>()),
        ("family", offset_of!(udp_event_t, family)),
        ("pid", offset_of!(udp_event_t, pid)),
        ("UserId", offset_of!(udp_event_t, UserId)),
        ("EventTime", offset_of!(udp_event_t, EventTime)),
        ("SPT", offset_of!(udp_event_t, SPT)),
        ("DPT", offset_of!(udp_event_t, DPT)),
        ("task", offset_of!(udp_event_t, task)),
        ("rx_b", offset_of!(udp_event_t, rx_b)),
        ("tx_b", offset_of!(udp_event_t, tx_b)),
        ("rxPkts", offset_of!(udp_event_t, rxPkts)),
        ("txPkts", offset_of!(udp_event_t, txPkts)),
        ("SADDR", offset_of!(udp_event_t, SADDR)),
        ("DADDR", offset_of!(udp_event_t, DADDR)),
    ];
    let c: Vec<(String, usize)> = stdout
        .lines()
        .map(|l| {
            let (name, v) = l.split_once(' ').unwrap();
            (name.to_owned(), v.parse().unwrap())
        })
        .collect();
    let rust: Vec<(String, usize)> = rust.iter().map(|(n, v)| (n.to_string(), *v)).collect();
    assert_eq!(c, rust);
    assert_eq!(rust[0].1, 190);
    let _ = std::fs::remove_file(bin);
}
