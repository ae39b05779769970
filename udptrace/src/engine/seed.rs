//! The UDP sockets that exist as tracing starts: each is given its cookie and
//! its owner once, after every hook is attached (sockets created later meet
//! `cgroup/sock_create`).
//!
//! Two iterators do it. `iter/udp` walks one network namespace's UDP sockets,
//! with pointers the cookie helper accepts, so it runs once in every namespace
//! a thread or `/run/netns` holds (where iterators may not ask for cookies,
//! before Linux 5.12, the kernel's socket diagnostics list the sockets
//! instead, which gives them theirs). `iter/task_file` then walks every open
//! file for the process that owns each socket.

use std::collections::HashSet;
use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use libbpf_rs::{Iter, Link, ProgramMut};

use crate::bpf::UdptraceSkel;
use crate::{sock_diag, Error};

/// Gives every existing UDP socket its cookie, then its owner.
/// `iterators_ask_cookies`: iterators may ask for a socket's cookie (Linux 5.12+).
pub(crate) fn seed_sockets(
    skel: &UdptraceSkel<'_>,
    iterators_ask_cookies: bool,
) -> Result<(), Error> {
    if !iterators_ask_cookies {
        give_cookies_by_listing();
    } else {
        give_cookies(skel)?;
    }
    let owners = attach(&skel.progs.seed_owners, "iter/task_file")?;
    run(&owners, "iter/task_file")
}

/// Where iterators may not ask for cookies (before Linux 5.12): the
/// kernel's socket diagnostics list every namespace's UDP sockets, which
/// gives each its cookie. Without them (no UDP diagnostics in the kernel),
/// sockets get theirs as the hooks meet them.
fn give_cookies_by_listing() {
    // A failure is noted by sock_diag, for kernel_limits to say.
    let _ = sock_diag::list_udp_sockets();
    for netns in other_network_namespaces() {
        in_netns(netns, || {
            let _ = sock_diag::list_udp_sockets();
        });
    }
}

fn give_cookies(skel: &UdptraceSkel<'_>) -> Result<(), Error> {
    let cookies = attach(&skel.progs.give_cookies, "iter/udp")?;
    // Our own namespace on this thread: entering one needs CAP_SYS_ADMIN.
    run(&cookies, "iter/udp")?;
    for netns in other_network_namespaces() {
        in_netns(netns, || {
            let _ = run(&cookies, "iter/udp");
        });
    }
    Ok(())
}

fn attach(prog: &ProgramMut<'_>, section: &'static str) -> Result<Link, Error> {
    prog.attach()
        .map_err(Error::bpf(format!("attaching {section}")))
}

/// Runs an iterator: it prints nothing, reading its output to the end is
/// what runs it.
fn run(link: &Link, section: &str) -> Result<(), Error> {
    let mut iter = Iter::new(link).map_err(Error::bpf(format!("starting {section}")))?;
    std::io::copy(&mut iter, &mut std::io::sink())
        .map_err(|e| Error::System(format!("looking up the existing sockets: {e}")))?;
    Ok(())
}

/// iter/udp and socket diagnostics see the namespace of the thread that
/// runs them: a thread of its own enters `netns` to run `f`. Without
/// CAP_SYS_ADMIN it cannot, and that namespace's sockets get their cookies
/// and owners as the hooks meet them.
fn in_netns(netns: File, f: impl FnOnce() + Send) {
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns on a file descriptor we hold, for this thread only.
            if unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) } == 0 {
                f();
            }
        });
    });
}

/// Every other network namespace in use, opened (so that a process id
/// reused meanwhile cannot name another): those of every thread (a thread
/// may have entered one of its own) and of `ip netns`.
fn other_network_namespaces() -> Vec<File> {
    let numbered = |dir: &Path| -> Vec<PathBuf> {
        fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .bytes()
                    .all(|b| b.is_ascii_digit())
            })
            .map(|e| e.path())
            .collect()
    };
    let threads = numbered(Path::new("/proc"))
        .into_iter()
        .flat_map(|process| numbered(&process.join("task")))
        .map(|thread| thread.join("ns/net"));
    let named = fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path());
    let id = |f: &File| f.metadata().ok().map(|m| (m.dev(), m.ino()));
    let mut seen: HashSet<_> = File::open("/proc/self/ns/net")
        .ok()
        .and_then(|f| id(&f))
        .into_iter()
        .collect();
    threads
        .chain(named)
        .filter_map(|path| File::open(path).ok())
        .filter(|f| id(f).is_some_and(|ns| seen.insert(ns)))
        .collect()
}
