//! Loopback in tests: a network namespace of one's own, and waiting until
//! what was sent has arrived. Shared by the library's and the CLI's suites.

use std::mem;
use std::os::fd::{FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// Runs `f` on a thread of its own in a new network namespace with `lo` up.
pub fn in_private_netns<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: unshare affects only this thread.
            assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0, "unshare");
            lo_up();
            f()
        })
        .join()
        .expect("the test thread")
    })
}

pub fn lo_up() {
    // SAFETY: plain socket and ioctl calls on a zeroed ifreq naming "lo".
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        assert!(fd >= 0);
        let _fd = OwnedFd::from_raw_fd(fd);
        let mut ifr: libc::ifreq = mem::zeroed();
        for (dst, src) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
            *dst = *src as libc::c_char;
        }
        assert_eq!(libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut ifr), 0);
        ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        assert_eq!(libc::ioctl(fd, libc::SIOCSIFFLAGS, &ifr), 0);
    }
}

/// Waits until every CPU's input backlog has been seen empty twice, 10 ms
/// apart. A datagram sent on loopback (or veth) is delivered from that
/// backlog, usually before `send` returns, but on a busy machine the softirq
/// is left to ksoftirqd and the datagram (its receive, its drop, the kernel's
/// counters) arrives later: once the backlogs are empty, it has arrived.
pub fn settle() {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut empty_reads = 0;
    loop {
        empty_reads = if backlog() == 0 { empty_reads + 1 } else { 0 };
        if empty_reads == 2 {
            return;
        }
        if Instant::now() > deadline {
            eprintln!("settle: the input backlogs are still busy after 5 s");
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Packets waiting in the CPUs' input backlogs: the 12th column of each line
/// of /proc/net/softnet_stat on every kernel since 5.10.
fn backlog() -> u64 {
    let stat = std::fs::read_to_string("/proc/net/softnet_stat").unwrap();
    stat.lines()
        .map(|line| {
            let column = line.split_whitespace().nth(11);
            let column = column.expect("softnet_stat has its backlog column (Linux 5.10+)");
            u64::from_str_radix(column, 16).unwrap()
        })
        .sum()
}
