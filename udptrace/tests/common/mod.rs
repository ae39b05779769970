//! Helpers the kernel test suites share.
#![allow(dead_code)] // each suite uses its own share of them

use std::collections::HashMap;
use std::ffi::CString;
use std::mem;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;

use udptrace::{Event, Filter, Stats, Tracer};

mod net;
mod waits;
pub use net::*;
#[allow(unused_imports)] // only the latency suite times its receives
pub use waits::*;

/// A tracer builder for the backend under test: `UDPTRACE_TEST_BACKEND`
/// (the kernel matrix runs the suite once per backend), else the default;
/// `UDPTRACE_TEST_MISSING` names kernel functions to treat as missing, to
/// run the suite on the fentry/kprobe backends' tracepoint fallback.
pub fn builder() -> udptrace::TracerBuilder {
    let mut b = Tracer::builder();
    if let Ok(names) = std::env::var("UDPTRACE_TEST_MISSING") {
        b = b.assume_missing_functions(names.split(',').map(String::from).collect());
    }
    match std::env::var("UDPTRACE_TEST_BACKEND") {
        Ok(name) => b.backend(name.parse().expect("a backend name")),
        Err(_) => b,
    }
}

/// Runs `workload` under a tracer and returns every event, in ring-buffer
/// order, plus the tracer's counts.
pub fn trace<F: FnOnce()>(filter: Filter, workload: F) -> (Vec<Event>, Stats) {
    let mut tracer = builder()
        .filter(filter)
        .start()
        .expect("tracer starts (the tests need root)");
    workload();
    // Every event of a finished syscall is already in the ring, and of a
    // datagram once it has arrived: stop drains them.
    settle();
    tracer.stop();
    let events: Vec<Event> = tracer.by_ref().collect();
    let stats = tracer.stats();
    assert_eq!(stats.lost, 0, "no event may be lost");
    assert_eq!(stats.undecodable, 0);
    (events, stats)
}

pub fn set_comm(name: &str) {
    let name = CString::new(name).unwrap();
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) };
}

pub fn bind_v4() -> UdpSocket {
    UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap()
}

pub fn bind_v6() -> UdpSocket {
    UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)).unwrap()
}

pub fn port(s: &UdpSocket) -> u16 {
    s.local_addr().unwrap().port()
}

/// A port nothing on this host uses, to filter this test's traffic by.
pub fn free_port() -> u16 {
    UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn sockaddr_in(a: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*a.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

pub fn sockaddr_in6(a: SocketAddrV6) -> libc::sockaddr_in6 {
    // SAFETY: all-zero is a valid sockaddr_in6.
    let mut sa: libc::sockaddr_in6 = unsafe { mem::zeroed() };
    sa.sin6_family = libc::AF_INET6 as u16;
    sa.sin6_port = a.port().to_be();
    sa.sin6_addr.s6_addr = a.ip().octets();
    sa
}

/// Forks a child that names itself `comm` and sends `count` datagrams to `dst`.
pub fn spawn_sender(comm: &str, dst: SocketAddrV4, count: usize) -> libc::pid_t {
    let name = CString::new(comm).unwrap();
    let sa = sockaddr_in(dst);
    // SAFETY: the child only makes async-signal-safe syscalls, then _exit()s.
    unsafe {
        let pid = libc::fork();
        if pid == 0 {
            libc::prctl(libc::PR_SET_NAME, name.as_ptr());
            let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
            let mut ok = fd >= 0;
            for _ in 0..count {
                let n = libc::sendto(
                    fd,
                    b"child".as_ptr() as *const _,
                    5,
                    0,
                    &sa as *const _ as *const _,
                    mem::size_of_val(&sa) as u32,
                );
                ok &= n == 5;
            }
            libc::_exit(if ok { 0 } else { 1 });
        }
        assert!(pid > 0, "fork failed");
        pid
    }
}

pub fn wait_ok(pid: libc::pid_t) {
    let mut status = 0;
    // SAFETY: waiting for our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child failed"
    );
}

/// Lets this process open `fds` descriptors: the soft limit raised, and the
/// hard one too where it is lower and the process may (CAP_SYS_RESOURCE),
/// else as far as it goes. Never lowers a limit. Async-signal-safe.
pub fn raise_fd_limit(fds: u64) {
    // SAFETY: plain rlimit calls on local structs.
    unsafe {
        let mut limit: libc::rlimit = mem::zeroed();
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        if limit.rlim_cur >= fds {
            return;
        }
        let wanted = libc::rlimit {
            rlim_cur: fds,
            rlim_max: limit.rlim_max.max(fds),
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) != 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// The UDP counters of this thread's network namespace: `UdpInDatagrams`,
/// `Udp6RcvbufErrors`, ...
pub fn snmp() -> HashMap<String, u64> {
    let mut m = HashMap::new();
    let v4 = std::fs::read_to_string("/proc/thread-self/net/snmp").unwrap();
    let lines: Vec<&str> = v4.lines().collect();
    for pair in lines.chunks(2) {
        let (Some((proto, names)), Some((_, values))) =
            (pair[0].split_once(':'), pair[1].split_once(':'))
        else {
            continue;
        };
        for (n, v) in names.split_whitespace().zip(values.split_whitespace()) {
            m.insert(format!("{proto}{n}"), v.parse().unwrap_or(0));
        }
    }
    let v6 = std::fs::read_to_string("/proc/thread-self/net/snmp6").unwrap();
    for line in v6.lines() {
        if let Some((name, value)) = line.split_once(char::is_whitespace) {
            m.insert(name.to_string(), value.trim().parse().unwrap_or(0));
        }
    }
    m
}

pub fn delta(before: &HashMap<String, u64>, after: &HashMap<String, u64>, key: &str) -> u64 {
    after[key] - before[key]
}

pub fn tiny_receive_buffer(s: &UdpSocket) {
    set_rcvbuf(s, 1024);
}

/// SO_RCVBUF: the kernel doubles `size`, within net.core.rmem_max.
pub fn set_rcvbuf(s: &UdpSocket, size: libc::c_int) {
    // SAFETY: SO_RCVBUF takes an int.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            mem::size_of_val(&size) as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
}

/// Reads every datagram queued on `s` once what was sent has been delivered.
pub fn drain(s: &UdpSocket) -> usize {
    settle();
    s.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 2048];
    let mut n = 0;
    while s.recv(&mut buf).is_ok() {
        n += 1;
    }
    n
}

/// UDP_SEGMENT (linux/udp.h): sends on `s` leave as GSO, in `size`-byte datagrams.
pub fn set_udp_segment(s: &UdpSocket, size: libc::c_int) {
    const UDP_SEGMENT: libc::c_int = 103;
    // SAFETY: UDP_SEGMENT takes an int.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_UDP,
            UDP_SEGMENT,
            (&size as *const libc::c_int).cast(),
            mem::size_of_val(&size) as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "UDP_SEGMENT");
}
