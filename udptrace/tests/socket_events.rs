//! Loads udptrace into the running kernel, drives real UDP sockets and asserts
//! the exact events that come back. Needs root (or CAP_BPF, CAP_PERFMON and
//! CAP_NET_ADMIN). Tests run in parallel in one process, so each one keeps only
//! the events of the sockets it made (by local port).

mod common;

use std::collections::HashSet;
use std::io::ErrorKind;
use std::mem;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use common::*;
use udptrace::{Event, EventKind, Family, Filter, SockCounters};

fn gettid() -> u32 {
    // SAFETY: no arguments, cannot fail.
    unsafe { libc::gettid() as u32 }
}

/// This process's cgroup v2 id: the inode of its cgroup directory.
fn own_cgroup_id() -> u64 {
    let mount = udptrace::sys::cgroup2_mount().unwrap();
    let cg = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let path = cg.lines().find_map(|l| l.strip_prefix("0::")).unwrap();
    std::fs::metadata(mount.join(path.trim_start_matches('/')))
        .unwrap()
        .ino()
}

fn counters(rx_bytes: u64, tx_bytes: u64, rx_packets: u64, tx_packets: u64) -> SockCounters {
    SockCounters {
        rx_bytes,
        tx_bytes,
        rx_packets,
        tx_packets,
    }
}

/// The part of an event a test predicts exactly.
#[derive(Debug, PartialEq, Eq)]
struct Expect {
    kind: EventKind,
    local: SocketAddr,
    remote: SocketAddr,
    ret: i32,
    counters: SockCounters,
}

fn expect(kind: EventKind, local: &str, remote: &str, ret: i32, c: SockCounters) -> Expect {
    Expect {
        kind,
        local: local.parse().unwrap(),
        remote: remote.parse().unwrap(),
        ret,
        counters: c,
    }
}

fn seen(events: &[Event]) -> Vec<Expect> {
    events
        .iter()
        .map(|e| Expect {
            kind: e.kind,
            local: e.local,
            remote: e.remote,
            ret: e.ret,
            counters: e.counters,
        })
        .collect()
}

/// Events of one local port, in order.
fn of_port(events: &[Event], port: u16) -> Vec<Event> {
    of_ports(events, &[port])
}

/// Events of these local ports, in order.
fn of_ports(events: &[Event], ports: &[u16]) -> Vec<Event> {
    events
        .iter()
        .filter(|e| ports.contains(&e.local.port()))
        .cloned()
        .collect()
}

/// Every event came from this thread, with its name, uid and cgroup, and
/// each local port maps to one socket id.
fn assert_from_this_thread(events: &[Event], comm: &str) {
    let (pid, tid, cgroup) = (std::process::id(), gettid(), own_cgroup_id());
    // SAFETY: no arguments, cannot fail.
    let uid = unsafe { libc::getuid() };
    for e in events {
        assert_eq!(
            (e.pid, e.tid, e.uid, e.cgroup),
            (pid, tid, uid, cgroup),
            "{e:?}"
        );
        assert_eq!(e.comm.to_string(), comm, "{e:?}");
        assert_ne!(e.sock, 0, "{e:?}");
        let same_port = events.iter().filter(|o| o.local.port() == e.local.port());
        assert!(
            same_port.clone().all(|o| o.sock == e.sock),
            "one socket per port: {e:?}"
        );
    }
}

#[test]
fn ipv4_unconnected_sendto_recvfrom() {
    set_comm("ut-v4-sendto");
    let (mut sport, mut rport) = (0, 0);
    let (events, stats) = trace(Filter::default(), || {
        let rx = bind_v4();
        let tx = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
        (sport, rport) = (port(&tx), port(&rx));
        let dst = rx.local_addr().unwrap();
        for len in [10, 200, 0] {
            assert_eq!(tx.send_to(&vec![7u8; len], dst).unwrap(), len);
        }
        let mut buf = [0u8; 512];
        for len in [10, 200, 0] {
            let (n, from) = rx.recv_from(&mut buf).unwrap();
            assert_eq!((n, from.port()), (len, sport));
        }
    });
    let tx_local = format!("0.0.0.0:{sport}");
    let rx_local = format!("127.0.0.1:{rport}");
    let rx_remote = format!("127.0.0.1:{sport}");
    assert_eq!(
        seen(&of_port(&events, sport)),
        vec![
            expect(
                EventKind::Send,
                &tx_local,
                &rx_local,
                10,
                counters(0, 10, 0, 1)
            ),
            expect(
                EventKind::Send,
                &tx_local,
                &rx_local,
                200,
                counters(0, 210, 0, 2)
            ),
            expect(
                EventKind::Send,
                &tx_local,
                &rx_local,
                0,
                counters(0, 210, 0, 3)
            ),
            expect(
                EventKind::Close,
                &tx_local,
                "0.0.0.0:0",
                0,
                counters(0, 210, 0, 3)
            ),
        ]
    );
    assert_eq!(
        seen(&of_port(&events, rport)),
        vec![
            expect(
                EventKind::Recv,
                &rx_local,
                &rx_remote,
                10,
                counters(10, 0, 1, 0)
            ),
            expect(
                EventKind::Recv,
                &rx_local,
                &rx_remote,
                200,
                counters(210, 0, 2, 0)
            ),
            expect(
                EventKind::Recv,
                &rx_local,
                &rx_remote,
                0,
                counters(210, 0, 3, 0)
            ),
            expect(
                EventKind::Close,
                &rx_local,
                "0.0.0.0:0",
                0,
                counters(210, 0, 3, 0)
            ),
        ]
    );
    assert_from_this_thread(&of_ports(&events, &[sport, rport]), "ut-v4-sendto");
    assert!(of_ports(&events, &[sport, rport])
        .iter()
        .all(|e| e.family == Family::V4));
    assert!(stats.events_of(EventKind::Send) >= 3 && stats.events_of(EventKind::Close) >= 2);
}

#[test]
fn ipv6_connected_send_recv() {
    set_comm("ut-v6-connect");
    let (mut aport, mut bport) = (0, 0);
    let (events, _) = trace(Filter::default(), || {
        let a = bind_v6();
        let b = bind_v6();
        (aport, bport) = (port(&a), port(&b));
        a.connect(b.local_addr().unwrap()).unwrap();
        b.connect(a.local_addr().unwrap()).unwrap();
        assert_eq!(a.send(b"ping!").unwrap(), 5);
        let mut buf = [0u8; 64];
        assert_eq!(b.recv(&mut buf).unwrap(), 5);
        assert_eq!(b.send(b"pong").unwrap(), 4);
        assert_eq!(a.recv(&mut buf).unwrap(), 4);
    });
    let (a, b) = (format!("[::1]:{aport}"), format!("[::1]:{bport}"));
    assert_eq!(
        seen(&of_port(&events, aport)),
        vec![
            expect(EventKind::Connect, &a, &b, 0, counters(0, 0, 0, 0)),
            expect(EventKind::Send, &a, &b, 5, counters(0, 5, 0, 1)),
            expect(EventKind::Recv, &a, &b, 4, counters(4, 5, 1, 1)),
            expect(EventKind::Close, &a, &b, 0, counters(4, 5, 1, 1)),
        ]
    );
    assert_eq!(
        seen(&of_port(&events, bport)),
        vec![
            expect(EventKind::Connect, &b, &a, 0, counters(0, 0, 0, 0)),
            expect(EventKind::Recv, &b, &a, 5, counters(5, 0, 1, 0)),
            expect(EventKind::Send, &b, &a, 4, counters(5, 4, 1, 1)),
            expect(EventKind::Close, &b, &a, 0, counters(5, 4, 1, 1)),
        ]
    );
    let mine = of_ports(&events, &[aport, bport]);
    assert_from_this_thread(&mine, "ut-v6-connect");
    assert!(mine.iter().all(|e| e.family == Family::V6));
}

#[test]
fn connect_of_unbound_socket_reports_the_port_it_got() {
    set_comm("ut-autobind");
    let mut lport = 0;
    let (events, _) = trace(Filter::default(), || {
        // A socket that only connect() binds.
        // SAFETY: plain socket syscalls on a fresh fd.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
        assert!(fd >= 0);
        let sa = sockaddr_in(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9));
        // SAFETY: a valid sockaddr_in of the given size.
        let rc = unsafe {
            libc::connect(
                fd,
                &sa as *const _ as *const _,
                mem::size_of_val(&sa) as u32,
            )
        };
        assert_eq!(rc, 0);
        lport = local_port(fd);
        // SAFETY: closing our own fd.
        unsafe { libc::close(fd) };
    });
    let local = format!("127.0.0.1:{lport}");
    assert_eq!(
        seen(&of_port(&events, lport)),
        vec![
            expect(
                EventKind::Connect,
                &local,
                "127.0.0.1:9",
                0,
                counters(0, 0, 0, 0)
            ),
            expect(
                EventKind::Close,
                &local,
                "127.0.0.1:9",
                0,
                counters(0, 0, 0, 0)
            ),
        ]
    );
}

#[test]
fn failed_connect_is_counted_not_reported() {
    set_comm("ut-connect-err");
    let mut lport = 0;
    let (events, stats) = trace(Filter::default(), || {
        // SAFETY: plain socket syscalls on a fresh fd.
        unsafe {
            let fd = libc::socket(libc::AF_INET6, libc::SOCK_DGRAM, 0);
            assert!(fd >= 0);
            let on: libc::c_int = 1;
            let rc = libc::setsockopt(
                fd,
                libc::IPPROTO_IPV6,
                libc::IPV6_V6ONLY,
                &on as *const _ as *const _,
                4,
            );
            assert_eq!(rc, 0);
            // An IPv6-only socket cannot reach an IPv4-mapped peer.
            let mapped = SocketAddrV6::new(Ipv4Addr::LOCALHOST.to_ipv6_mapped(), 9, 0, 0);
            let sa = sockaddr_in6(mapped);
            let rc = libc::connect(
                fd,
                &sa as *const _ as *const _,
                mem::size_of_val(&sa) as u32,
            );
            assert_eq!((rc, *libc::__errno_location()), (-1, libc::ENETUNREACH));
            lport = local_port(fd);
            // Still unconnected: a sendto must not pass for a connect.
            let to = sockaddr_in6(SocketAddrV6::new(Ipv6Addr::LOCALHOST, 9, 0, 0));
            let n = libc::sendto(
                fd,
                b"x".as_ptr().cast(),
                1,
                0,
                &to as *const _ as *const _,
                mem::size_of_val(&to) as u32,
            );
            assert_eq!(n, 1);
            libc::close(fd);
        }
    });
    // The socket never connected: no connect event, but the failure is counted.
    let local = format!("[::]:{lport}");
    assert_eq!(
        seen(&of_port(&events, lport)),
        vec![
            expect(EventKind::Send, &local, "[::1]:9", 1, counters(0, 1, 0, 1)),
            expect(EventKind::Close, &local, "[::]:0", 0, counters(0, 1, 0, 1)),
        ]
    );
    assert!(stats.connect_failed >= 1, "{stats:?}");
}

fn local_port(fd: i32) -> u16 {
    // SAFETY: getsockname fills at most `len` bytes of a sockaddr_storage.
    unsafe {
        let mut ss: libc::sockaddr_storage = mem::zeroed();
        let mut len = mem::size_of_val(&ss) as u32;
        assert_eq!(
            libc::getsockname(fd, &mut ss as *mut _ as *mut _, &mut len),
            0
        );
        u16::from_be((*(&ss as *const _ as *const libc::sockaddr_in)).sin_port)
    }
}

#[test]
fn sendmsg_recvmsg_sendmmsg_recvmmsg() {
    set_comm("ut-mmsg");
    let (mut sport, mut rport) = (0, 0);
    let (events, _) = trace(Filter::default(), || {
        let rx = bind_v4();
        let tx = bind_v4();
        (sport, rport) = (port(&tx), port(&rx));
        let dst = sockaddr_in(SocketAddrV4::new(Ipv4Addr::LOCALHOST, rport));
        let payloads: [&[u8]; 5] = [b"one", b"two!", b"three", b"four44", b"five555"];
        // SAFETY: msghdrs point at live buffers and addresses for the calls' duration.
        unsafe {
            // One sendmsg, then sendmmsg of the other four.
            let mut iovs: Vec<libc::iovec> = payloads
                .iter()
                .map(|p| libc::iovec {
                    iov_base: p.as_ptr() as *mut _,
                    iov_len: p.len(),
                })
                .collect();
            let mut hdrs: Vec<libc::mmsghdr> = iovs
                .iter_mut()
                .map(|iov| {
                    let mut h: libc::mmsghdr = mem::zeroed();
                    h.msg_hdr.msg_name = &dst as *const _ as *mut _;
                    h.msg_hdr.msg_namelen = mem::size_of_val(&dst) as u32;
                    h.msg_hdr.msg_iov = iov;
                    h.msg_hdr.msg_iovlen = 1;
                    h
                })
                .collect();
            assert_eq!(libc::sendmsg(tx.as_raw_fd(), &hdrs[0].msg_hdr, 0), 3);
            assert_eq!(
                libc::sendmmsg(tx.as_raw_fd(), hdrs[1..].as_mut_ptr(), 4, 0),
                4
            );

            // One recvmsg, then recvmmsg of the other four, both asking for the source.
            let mut bufs = [[0u8; 64]; 5];
            let mut froms: [libc::sockaddr_in; 5] = mem::zeroed();
            let mut riovs: Vec<libc::iovec> = bufs
                .iter_mut()
                .map(|b| libc::iovec {
                    iov_base: b.as_mut_ptr() as *mut _,
                    iov_len: 64,
                })
                .collect();
            let mut rhdrs: Vec<libc::mmsghdr> = riovs
                .iter_mut()
                .zip(froms.iter_mut())
                .map(|(iov, from)| {
                    let mut h: libc::mmsghdr = mem::zeroed();
                    h.msg_hdr.msg_name = from as *mut _ as *mut _;
                    h.msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_in>() as u32;
                    h.msg_hdr.msg_iov = iov;
                    h.msg_hdr.msg_iovlen = 1;
                    h
                })
                .collect();
            assert_eq!(libc::recvmsg(rx.as_raw_fd(), &mut rhdrs[0].msg_hdr, 0), 3);
            let n = libc::recvmmsg(
                rx.as_raw_fd(),
                rhdrs[1..].as_mut_ptr(),
                4,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            );
            let mut got = n as usize;
            while got < 4 {
                let m = libc::recvmmsg(
                    rx.as_raw_fd(),
                    rhdrs[1 + got..].as_mut_ptr(),
                    (4 - got) as u32,
                    0,
                    std::ptr::null_mut(),
                );
                assert!(m > 0);
                got += m as usize;
            }
        }
    });
    let (s, r) = (format!("127.0.0.1:{sport}"), format!("127.0.0.1:{rport}"));
    let mut want_tx = Vec::new();
    let mut want_rx = Vec::new();
    let (mut bytes, mut pkts) = (0, 0);
    for len in [3, 4, 5, 6, 7] {
        bytes += len as u64;
        pkts += 1;
        want_tx.push(expect(
            EventKind::Send,
            &s,
            &r,
            len,
            counters(0, bytes, 0, pkts),
        ));
        want_rx.push(expect(
            EventKind::Recv,
            &r,
            &s,
            len,
            counters(bytes, 0, pkts, 0),
        ));
    }
    want_tx.push(expect(
        EventKind::Close,
        &s,
        "0.0.0.0:0",
        0,
        counters(0, 25, 0, 5),
    ));
    want_rx.push(expect(
        EventKind::Close,
        &r,
        "0.0.0.0:0",
        0,
        counters(25, 0, 5, 0),
    ));
    assert_eq!(seen(&of_port(&events, sport)), want_tx);
    assert_eq!(seen(&of_port(&events, rport)), want_rx);
    assert_from_this_thread(&of_ports(&events, &[sport, rport]), "ut-mmsg");
}

#[test]
fn ipv6_socket_to_ipv4_mapped_peer() {
    set_comm("ut-v4mapped");
    let (mut sport, mut rport) = (0, 0);
    let (events, _) = trace(Filter::default(), || {
        let rx = bind_v4();
        let tx = UdpSocket::bind("[::]:0").unwrap();
        (sport, rport) = (port(&tx), port(&rx));
        let mapped = SocketAddrV6::new(Ipv4Addr::LOCALHOST.to_ipv6_mapped(), rport, 0, 0);
        assert_eq!(tx.send_to(b"mapped", mapped).unwrap(), 6);
        let mut buf = [0u8; 16];
        assert_eq!(rx.recv_from(&mut buf).unwrap().0, 6);
    });
    let tx_events = of_port(&events, sport);
    assert_eq!(
        seen(&tx_events),
        vec![
            expect(
                EventKind::Send,
                &format!("[::]:{sport}"),
                &format!("[::ffff:127.0.0.1]:{rport}"),
                6,
                counters(0, 6, 0, 1)
            ),
            expect(
                EventKind::Close,
                &format!("[::]:{sport}"),
                "[::]:0",
                0,
                counters(0, 6, 0, 1)
            ),
        ]
    );
    assert!(tx_events.iter().all(|e| e.family == Family::V6));
    let rx_events = of_port(&events, rport);
    assert_eq!(rx_events[0].kind, EventKind::Recv);
    assert_eq!(
        rx_events[0].remote,
        format!("127.0.0.1:{sport}").parse().unwrap()
    );
    assert_eq!(rx_events[0].family, Family::V4);
}

#[test]
fn datagram_to_closed_port_reports_refused() {
    set_comm("ut-refused");
    let mut lport = 0;
    let (events, _) = trace(Filter::default(), || {
        // A port nobody listens on: bind one, note it, close it.
        let closed = bind_v4().local_addr().unwrap();
        let s = bind_v4();
        lport = port(&s);
        s.connect(closed).unwrap();
        assert_eq!(s.send(b"anyone?").unwrap(), 7);
        let mut buf = [0u8; 16];
        let err = s.recv(&mut buf).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ECONNREFUSED));
    });
    let events = of_port(&events, lport);
    assert_eq!(events.len(), 4, "{events:?}");
    let (connect, send, recv) = (&events[0], &events[1], &events[2]);
    assert_eq!((connect.kind, connect.ret), (EventKind::Connect, 0));
    assert_eq!((send.kind, send.bytes()), (EventKind::Send, Some(7)));
    assert_eq!(recv.kind, EventKind::Recv);
    assert_eq!(recv.error().as_deref(), Some("ECONNREFUSED"));
    assert_eq!(recv.bytes(), None);
    assert_eq!(
        recv.counters,
        counters(0, 7, 0, 1),
        "a failed receive moves no counter"
    );
    assert_eq!(events[3].kind, EventKind::Close);
}

#[test]
fn peeks_and_eagain_are_counted_not_emitted() {
    set_comm("ut-peek");
    let mut rport = 0;
    let (events, stats) = trace(Filter::default(), || {
        let rx = bind_v4();
        let tx = bind_v4();
        rport = port(&rx);
        rx.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 16];
        for _ in 0..3 {
            assert_eq!(rx.recv(&mut buf).unwrap_err().kind(), ErrorKind::WouldBlock);
        }
        // Blocking again: the datagram may reach rx after send_to returns.
        rx.set_nonblocking(false).unwrap();
        tx.send_to(b"peekme", rx.local_addr().unwrap()).unwrap();
        assert_eq!(rx.peek(&mut buf).unwrap(), 6);
        assert_eq!(rx.recv(&mut buf).unwrap(), 6);
    });
    let kinds: Vec<_> = of_port(&events, rport)
        .iter()
        .map(|e| (e.kind, e.ret))
        .collect();
    assert_eq!(kinds, vec![(EventKind::Recv, 6), (EventKind::Close, 0)]);
    assert_eq!(of_port(&events, rport)[0].counters, counters(6, 0, 1, 0));
    assert!(stats.recv_eagain >= 3, "{stats:?}");
    assert!(stats.recv_peek >= 1, "{stats:?}");
}

#[test]
fn two_processes_at_once() {
    set_comm("ut-two-procs");
    let mut rport = 0;
    let mut pids = (0, 0);
    let (events, _) = trace(Filter::default(), || {
        let rx = bind_v4();
        rport = port(&rx);
        let dst = SocketAddrV4::new(Ipv4Addr::LOCALHOST, rport);
        pids = (
            spawn_sender("ut-child-a", dst, 2),
            spawn_sender("ut-child-b", dst, 3),
        );
        wait_ok(pids.0);
        wait_ok(pids.1);
        let mut buf = [0u8; 16];
        for _ in 0..5 {
            assert_eq!(rx.recv_from(&mut buf).unwrap().0, 5);
        }
    });
    // The receiver: five datagrams from two source ports, one per child.
    let recvs: Vec<_> = of_port(&events, rport)
        .into_iter()
        .filter(|e| e.kind == EventKind::Recv)
        .collect();
    assert_eq!(recvs.len(), 5);
    assert_eq!(recvs[4].counters, counters(25, 0, 5, 0));
    assert!(recvs.iter().all(|e| e.pid == std::process::id()));
    let sources: HashSet<u16> = recvs.iter().map(|e| e.remote.port()).collect();
    assert_eq!(sources.len(), 2);

    // Each child: its sends to the receiver, then the close at its exit.
    let dst = format!("127.0.0.1:{rport}");
    for (pid, comm, count) in [(pids.0, "ut-child-a", 2u64), (pids.1, "ut-child-b", 3)] {
        let pid = pid as u32;
        let sport = recvs
            .iter()
            .map(|e| e.remote.port())
            .find(|p| of_port(&events, *p).iter().any(|e| e.pid == pid))
            .expect("a source port of the child");
        let mine = of_port(&events, sport);
        let local = format!("0.0.0.0:{sport}");
        let mut want: Vec<_> = (1..=count)
            .map(|n| expect(EventKind::Send, &local, &dst, 5, counters(0, 5 * n, 0, n)))
            .collect();
        want.push(expect(
            EventKind::Close,
            &local,
            "0.0.0.0:0",
            0,
            counters(0, 5 * count, 0, count),
        ));
        assert_eq!(seen(&mine), want);
        assert!(mine
            .iter()
            .all(|e| e.pid == pid && e.tid == pid && e.comm.to_string() == comm));
    }
}

/// Sends one datagram from a new socket and returns its local port.
fn send_one(dst: SocketAddr) -> u16 {
    let s = UdpSocket::bind(if dst.is_ipv4() {
        "127.0.0.1:0"
    } else {
        "[::1]:0"
    })
    .unwrap();
    s.send_to(b"x", dst).unwrap();
    port(&s)
}

#[test]
fn port_filter_keeps_either_side() {
    set_comm("ut-f-port");
    let rx = bind_v4();
    let other = bind_v4();
    let (mut to_rx, mut to_other) = (0, 0);
    let (events, _) = trace(
        Filter {
            port: Some(port(&rx)),
            ..Default::default()
        },
        || {
            to_rx = send_one(rx.local_addr().unwrap());
            to_other = send_one(other.local_addr().unwrap());
        },
    );
    let sends: Vec<_> = of_port(&events, to_rx)
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(sends, vec![EventKind::Send], "remote port matches");
    assert!(
        of_port(&events, to_other).is_empty(),
        "other ports are filtered out"
    );
    assert!(events
        .iter()
        .all(|e| e.local.port() == port(&rx) || e.remote.port() == port(&rx)));
}

#[test]
fn pid_filter_excludes_other_processes() {
    set_comm("ut-f-pid");
    let rx = bind_v4();
    let dst = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port(&rx));
    // The child's pid is known only after the fork, so pick it by filtering on ours.
    let mut mine = 0;
    let (events, _) = trace(
        Filter {
            pid: Some(std::process::id()),
            ..Default::default()
        },
        || {
            wait_ok(spawn_sender("ut-f-pid-child", dst, 2));
            mine = send_one(SocketAddr::V4(dst));
        },
    );
    assert!(events.iter().all(|e| e.pid == std::process::id()));
    assert!(!events
        .iter()
        .any(|e| e.comm.to_string() == "ut-f-pid-child"));
    assert_eq!(
        of_port(&events, mine).len(),
        2,
        "our send and close are kept"
    );
}

#[test]
fn comm_filter_matches_the_thread_name() {
    set_comm("ut-f-comm-yes");
    let rx = bind_v4();
    let dst = rx.local_addr().unwrap();
    let (mut yes, mut no) = (0, 0);
    let (events, _) = trace(
        Filter {
            comm: Some("ut-f-comm-yes".into()),
            ..Default::default()
        },
        || {
            yes = send_one(dst);
            no = std::thread::Builder::new()
                .name("ut-f-comm-no".into())
                .spawn(move || send_one(dst))
                .unwrap()
                .join()
                .unwrap();
        },
    );
    assert_eq!(of_port(&events, yes).len(), 2);
    assert!(of_port(&events, no).is_empty());
    assert!(events.iter().all(|e| e.comm.to_string() == "ut-f-comm-yes"));
}

#[test]
fn address_family_and_kind_filters() {
    set_comm("ut-f-addr");
    let rx4 = bind_v4();
    let rx6 = bind_v6();
    let run = |filter: Filter| {
        let (mut p4, mut p6) = (0, 0);
        let (events, _) = trace(filter, || {
            p4 = send_one(rx4.local_addr().unwrap());
            p6 = send_one(rx6.local_addr().unwrap());
        });
        (of_port(&events, p4), of_port(&events, p6))
    };

    let (v4, v6) = run(Filter {
        addr: Some("::1/128".parse().unwrap()),
        ..Default::default()
    });
    assert!(v4.is_empty());
    assert_eq!(v6.len(), 2);

    let net = udptrace::parse_addr_filter("127.0.0.0/8").unwrap();
    let (v4, v6) = run(Filter {
        addr: Some(net),
        ..Default::default()
    });
    assert_eq!(v4.len(), 2);
    assert!(v6.is_empty());

    let (v4, v6) = run(Filter {
        family: Some(Family::V6),
        ..Default::default()
    });
    assert!(v4.is_empty());
    assert_eq!(v6.len(), 2);

    let (v4, v6) = run(Filter {
        kinds: vec![EventKind::Close],
        ..Default::default()
    });
    assert_eq!((v4.len(), v6.len()), (1, 1));
    assert!(v4.iter().chain(&v6).all(|e| e.kind == EventKind::Close));
    assert_eq!(
        v4[0].counters,
        counters(0, 1, 0, 1),
        "filtered-out sends still count"
    );
}

#[test]
fn timestamps_are_wall_clock_and_ordered() {
    set_comm("ut-time");
    let before = std::time::SystemTime::now();
    let mut p = 0;
    let rx = bind_v4();
    let (events, _) = trace(Filter::default(), || {
        p = send_one(rx.local_addr().unwrap());
    });
    let after = std::time::SystemTime::now();
    let ns = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    };
    let mine = of_port(&events, p);
    assert_eq!(mine.len(), 2);
    assert!(mine[0].ts_ns <= mine[1].ts_ns);
    for e in &mine {
        assert!(
            e.ts_ns >= ns(before) && e.ts_ns <= ns(after),
            "{} not in [{:?}, {:?}]",
            e.ts_ns,
            before,
            after
        );
    }
}

#[test]
fn recv_timeout_waits_and_returns_events() {
    set_comm("ut-timeout");
    let rx = bind_v4();
    let mut tracer = builder()
        .filter(Filter {
            port: Some(port(&rx)),
            ..Default::default()
        })
        .start()
        .unwrap();
    let t0 = std::time::Instant::now();
    assert!(tracer.recv_timeout(Duration::from_millis(200)).is_none());
    assert!(t0.elapsed() >= Duration::from_millis(200));
    send_one(rx.local_addr().unwrap());
    let ev = tracer
        .recv_timeout(Duration::from_secs(2))
        .expect("the send arrives");
    assert_eq!((ev.kind, ev.remote.port()), (EventKind::Send, port(&rx)));
    // The backend asked for, else whichever auto picked; its send hook is attached.
    if let Ok(name) = std::env::var("UDPTRACE_TEST_BACKEND") {
        assert_eq!(tracer.backend(), name.parse().unwrap());
    }
    let send_probe = match tracer.backend() {
        udptrace::Backend::Fentry => "fexit/udp_sendmsg",
        udptrace::Backend::Kprobe => "kretprobe/udp_sendmsg",
        _ => "tp_btf/sock_send_length",
    };
    // Or the length tracepoint standing in for a function this kernel lacks.
    let fallback = "tp_btf/sock_send_length (for udp_sendmsg";
    let probes = tracer.probes();
    assert!(
        probes
            .iter()
            .any(|p| p == send_probe || p.starts_with(fallback)),
        "{probes:?}"
    );
}

#[test]
fn every_event_is_delivered_or_counted_lost() {
    set_comm("ut-lost");
    let rx = bind_v4();
    let tx = bind_v4();
    let filter = Filter {
        port: Some(port(&tx)),
        kinds: vec![EventKind::Send],
        ..Default::default()
    };
    // A ring of one page that is drained only once a second: most sends cannot fit.
    let mut tracer = builder()
        .filter(filter)
        .ring_buffer_size(4096)
        .wakeup_bytes(1 << 30)
        .drain_interval(Duration::from_secs(1))
        .start()
        .unwrap();
    const SENDS: u64 = 500;
    for _ in 0..SENDS {
        tx.send_to(b"x", rx.local_addr().unwrap()).unwrap();
    }
    tracer.stop();
    let delivered = tracer.by_ref().count() as u64;
    let stats = tracer.stats();
    assert!(stats.lost > 0, "the tiny ring must overflow: {stats:?}");
    assert_eq!(delivered + stats.lost, SENDS, "{stats:?}");
    assert_eq!(stats.events_of(EventKind::Send), delivered);
}
