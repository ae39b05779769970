//! Helpers the CLI's test binaries share.
#![allow(dead_code)] // each test binary uses its own share of them

use std::io::{BufRead, BufReader, Read};
use std::mem;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

#[path = "../../../udptrace/tests/common/net.rs"]
mod net;
#[allow(unused_imports)] // each test binary uses its own share of them
pub use net::*;
#[path = "../../../udptrace/tests/common/waits.rs"]
mod waits;
#[allow(unused_imports)] // each test binary uses its own share of them
pub use waits::*;

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

/// Starts `udptrace ARGS` and returns once it printed its `Tracing` line.
pub fn start(args: &[&str]) -> (Child, mpsc::Receiver<String>) {
    start_cmd(Command::new(udptrace_bin()).args(args))
}

pub fn start_cmd(cmd: &mut Command) -> (Child, mpsc::Receiver<String>) {
    let (child, stderr, _) = spawn_tracer(cmd.stdout(Stdio::piped()));
    (child, stderr)
}

/// Starts a command whose stdout is already set up, returns once it printed
/// its `Tracing` line, and returns that line too.
pub fn spawn_tracer(cmd: &mut Command) -> (Child, mpsc::Receiver<String>, String) {
    let mut child = cmd.stderr(Stdio::piped()).spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // Notes on what the kernel cannot give come first (older kernels).
    let first = std::iter::from_fn(|| rx.recv_timeout(Duration::from_secs(20)).ok())
        .find(|line| !line.starts_with("udptrace: note: "))
        .expect("udptrace printed nothing");
    // Which backend depends on the kernel, and on the events asked for (drops
    // alone need none of the socket hooks a kernel may refuse).
    assert!(
        first.starts_with("Tracing UDP with the ") && first.contains(" backend ("),
        "{first}"
    );
    (child, rx, first)
}

/// N in `Tracing UDP with the X backend (N probes)`.
pub fn probe_count(banner: &str) -> usize {
    let (_, rest) = banner.split_once(" backend (").expect(banner);
    let (n, _) = rest.split_once(" probes)").expect(banner);
    n.parse().expect(banner)
}

pub fn finish(mut child: Child, stderr: mpsc::Receiver<String>) -> (Output, Vec<String>) {
    let status = child.wait().unwrap();
    // Empty when the test reads stdout itself.
    let mut stdout = Vec::new();
    if let Some(mut out) = child.stdout.take() {
        out.read_to_end(&mut stdout).unwrap();
    }
    let rest: Vec<String> = stderr.iter().collect();
    (
        Output {
            status,
            stdout,
            stderr: Vec::new(),
        },
        rest,
    )
}

pub fn json_lines(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

/// Names the calling thread, as the kernel reports its events' `comm`.
pub fn set_comm(name: &str) {
    let name = std::ffi::CString::new(name).unwrap();
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) };
}

/// Sets the socket's receive buffer (the kernel doubles what it is given).
pub fn small_buffer(s: &UdpSocket, bytes: libc::c_int) {
    // SAFETY: SO_RCVBUF takes an int.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&bytes as *const libc::c_int).cast(),
            mem::size_of_val(&bytes) as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
}

/// A tmpfs of a few pages on a fresh directory, unmounted when dropped: a
/// filesystem that fills up, without relying on /dev/full.
pub struct SmallFs {
    pub dir: std::path::PathBuf,
}

impl SmallFs {
    pub fn mount(size: &str) -> SmallFs {
        use std::ffi::CString;
        use std::os::unix::ffi::OsStrExt;
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("udptrace-small-fs-{}-{seq}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let target = CString::new(dir.as_os_str().as_bytes()).unwrap();
        let opts = CString::new(format!("size={size}")).unwrap();
        // SAFETY: NUL-terminated strings that outlive the call.
        let rc = unsafe {
            libc::mount(
                c"udptrace-test".as_ptr(),
                target.as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                opts.as_ptr().cast(),
            )
        };
        assert_eq!(rc, 0, "mount tmpfs: {}", std::io::Error::last_os_error());
        SmallFs { dir }
    }

    /// A file on it, opened for writing.
    pub fn file(&self, name: &str) -> std::fs::File {
        std::fs::File::create(self.dir.join(name)).unwrap()
    }

    /// Takes every free byte, so that any further write fails with ENOSPC.
    pub fn fill(&self) {
        use std::io::Write;
        let mut filler = self.file("filler");
        let block = [b'x'; 4096];
        while filler.write(&block).is_ok_and(|n| n > 0) {}
    }

    pub fn read(&self, name: &str) -> String {
        String::from_utf8(std::fs::read(self.dir.join(name)).unwrap()).unwrap()
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        use std::os::unix::ffi::OsStrExt;
        let target = std::ffi::CString::new(self.dir.as_os_str().as_bytes()).unwrap();
        // SAFETY: a NUL-terminated path.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        let _ = std::fs::remove_dir(&self.dir);
    }
}
