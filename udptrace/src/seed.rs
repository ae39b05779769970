//! The UDP sockets that exist as tracing starts: each is given its cookie and
//! its owner once, after every hook is attached (sockets created later meet
//! `cgroup/sock_create`).
//!
//! Two iterators do it. `iter/udp` walks one network namespace's UDP sockets,
//! with pointers the cookie helper accepts, so it runs once in every namespace
//! a thread or `/run/netns` holds. `iter/task_file` then walks every open
//! file for the process that owns each socket.

use std::collections::HashSet;
use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use libbpf_rs::{Iter, Link, ProgramMut};

use crate::bpf::UdptraceSkel;
use crate::Error;

/// Gives every existing UDP socket its cookie, then its owner.
pub(crate) fn seed_sockets(skel: &UdptraceSkel<'_>) -> Result<(), Error> {
    let cookies = attach(&skel.progs.give_cookies, "iter/udp")?;
    for netns in network_namespaces() {
        run_in_netns(&cookies, &netns)?;
    }
    let owners = attach(&skel.progs.seed_owners, "iter/task_file")?;
    run(&owners, "iter/task_file")
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

/// iter/udp walks the namespace of the thread that starts it: a thread of
/// its own enters `netns` for it. A namespace that is gone by then (its last
/// process exited) has no sockets left to seed.
fn run_in_netns(link: &Link, netns: &Path) -> Result<(), Error> {
    std::thread::scope(|s| {
        s.spawn(|| {
            let Ok(ns) = File::open(netns) else {
                return Ok(());
            };
            // SAFETY: setns on a file descriptor we hold, for this thread only.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Ok(());
            }
            run(link, "iter/udp")
        })
        .join()
        .unwrap_or_else(|_| Err(Error::System("looking up the existing sockets".into())))
    })
}

/// One path to each network namespace in use: our own first, then those of
/// every thread (a thread may have entered one of its own) and of `ip netns`.
fn network_namespaces() -> Vec<PathBuf> {
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
    let mut seen = HashSet::new();
    std::iter::once(PathBuf::from("/proc/self/ns/net"))
        .chain(threads)
        .chain(named)
        .filter(|path| fs::metadata(path).is_ok_and(|meta| seen.insert((meta.dev(), meta.ino()))))
        .collect()
}
