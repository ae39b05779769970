//! Packet events, drops and in-kernel counting, checked against what the
//! kernel itself counts: the SNMP counters of a private network namespace
//! (/proc/net/snmp, /proc/net/snmp6), where this test's datagrams are the only
//! traffic. Needs root.

mod common;

use std::mem;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, UdpSocket};
use std::os::fd::{FromRawFd, OwnedFd};

use common::*;
use udptrace::{CountField, CountValue, Event, EventKind, Filter, Stats};

fn packet_kinds() -> Vec<EventKind> {
    vec![
        EventKind::PacketSend,
        EventKind::PacketRecv,
        EventKind::Drop,
    ]
}

/// Runs `workload` under a tracer of packet events and drops on `port`.
fn trace_packets<T>(port: u16, workload: impl FnOnce() -> T) -> (Vec<Event>, Stats, T) {
    let filter = Filter {
        port: Some(port),
        kinds: packet_kinds(),
        ..Default::default()
    };
    let mut tracer = builder().filter(filter).start().expect("tracer starts");
    let out = workload();
    settle();
    tracer.stop();
    let events: Vec<Event> = tracer.by_ref().collect();
    let stats = tracer.stats();
    assert_eq!((stats.lost, stats.undecodable), (0, 0));
    (events, stats, out)
}

fn count(events: &[Event], kind: EventKind, v6: bool, reason: Option<&str>) -> u64 {
    events
        .iter()
        .filter(|e| e.kind == kind && e.packet.unwrap().ip_ver == if v6 { 6 } else { 4 })
        .filter(|e| reason.is_none() || e.drop_reason().as_deref() == reason)
        .count() as u64
}

/// Floods a socket with a tiny receive buffer and sends to a closed port, in
/// IPv4 and IPv6: packet events and drops must add up to the kernel's counters.
#[test]
fn packet_events_and_drops_agree_with_snmp_counters() {
    let port = free_port();
    let closed_port = free_port();
    let (events, _, (before, after, received)) = in_private_netns(|| {
        trace_packets(port, || {
            let rx4 = UdpSocket::bind((Ipv4Addr::new(127, 9, 9, 9), port)).unwrap();
            let tx4 = UdpSocket::bind((Ipv4Addr::new(127, 9, 9, 8), port)).unwrap();
            let rx6 = UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)).unwrap();
            let tx6 = UdpSocket::bind((Ipv6Addr::LOCALHOST, port)).unwrap();
            tiny_receive_buffer(&rx4);
            tiny_receive_buffer(&rx6);
            let before = snmp();
            for _ in 0..64 {
                tx4.send_to(&[1u8; 200], rx4.local_addr().unwrap()).unwrap();
                tx6.send_to(&[2u8; 300], rx6.local_addr().unwrap()).unwrap();
            }
            for _ in 0..3 {
                tx4.send_to(b"x", (Ipv4Addr::new(127, 9, 9, 10), closed_port))
                    .unwrap();
                tx6.send_to(b"y", (Ipv6Addr::LOCALHOST, closed_port))
                    .unwrap();
            }
            let received = (drain(&rx4), drain(&rx6));
            (before, snmp(), received)
        })
    });
    let d = |k: &str| delta(&before, &after, k);
    assert_eq!(d("UdpOutDatagrams"), 67);
    assert_eq!(d("Udp6OutDatagrams"), 67);
    assert_eq!(
        (d("UdpInDatagrams"), d("Udp6InDatagrams")),
        (received.0 as u64, received.1 as u64)
    );
    assert!(d("UdpRcvbufErrors") > 0 && d("Udp6RcvbufErrors") > 0);
    assert_eq!((d("UdpNoPorts"), d("Udp6NoPorts")), (3, 3));
    for (v6, p) in [(false, "Udp"), (true, "Udp6")] {
        let k = |name: &str| format!("{p}{name}");
        assert_eq!(
            count(&events, EventKind::PacketSend, v6, None),
            d(&k("OutDatagrams")),
            "{p} packet-send"
        );
        // A datagram is reported as it is handed to the socket: before the
        // receive buffer can refuse it.
        assert_eq!(
            count(&events, EventKind::PacketRecv, v6, None),
            d(&k("InDatagrams")) + d(&k("RcvbufErrors")),
            "{p} packet-recv"
        );
        assert_eq!(
            count(&events, EventKind::Drop, v6, Some("SOCKET_RCVBUFF")),
            d(&k("RcvbufErrors")),
            "{p} receive-buffer drops"
        );
        assert_eq!(
            count(&events, EventKind::Drop, v6, Some("NO_SOCKET")),
            d(&k("NoPorts")),
            "{p} no-socket drops"
        );
        assert_eq!(
            count(&events, EventKind::Drop, v6, None),
            d(&k("RcvbufErrors")) + d(&k("NoPorts")),
            "{p}: no other drops"
        );
    }
    // Received datagrams and buffer drops belong to the receiving socket's
    // owner: this process, which created it.
    let pid = std::process::id();
    for e in &events {
        let p = e.packet.unwrap();
        match (e.kind, e.drop_reason().as_deref()) {
            (EventKind::Drop, Some("NO_SOCKET")) => assert_eq!(e.pid, 0, "{e:?}"),
            _ => {
                assert_eq!(e.pid, pid, "{e:?}");
                assert_ne!(e.sock, 0, "{e:?}");
            }
        }
        let payload = match (e.destination().port(), p.ip_ver) {
            (dport, _) if dport == closed_port => 1,
            (_, 4) => 200,
            _ => 300,
        };
        assert_eq!(e.bytes(), Some(payload), "{e:?}");
        assert_eq!(p.udp_length as u32, payload + 8, "{e:?}");
        assert_eq!(p.ip_plength, p.udp_length, "{e:?}");
    }
}

/// The UDP checksum over the IPv4 pseudo-header and the datagram.
fn udp4_checksum(src: Ipv4Addr, dst: Ipv4Addr, datagram: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut add = |bytes: &[u8]| {
        for chunk in bytes.chunks(2) {
            let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
            sum += u32::from(word);
        }
    };
    add(&src.octets());
    add(&dst.octets());
    add(&[0, libc::IPPROTO_UDP as u8]);
    add(&(datagram.len() as u16).to_be_bytes());
    add(datagram);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    match !(sum as u16) {
        0 => 0xffff,
        c => c,
    }
}

/// Sends a hand-made datagram through a raw socket, checksum as given.
fn send_raw_udp(src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8], checksum: u16) {
    let mut d = Vec::new();
    d.extend(src.port().to_be_bytes());
    d.extend(dst.port().to_be_bytes());
    d.extend(((8 + payload.len()) as u16).to_be_bytes());
    d.extend(checksum.to_be_bytes());
    d.extend(payload);
    // SAFETY: a raw socket and a sockaddr_in for sendto.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_UDP);
        assert!(fd >= 0, "raw socket");
        let _fd = OwnedFd::from_raw_fd(fd);
        let mut sa: libc::sockaddr_in = mem::zeroed();
        sa.sin_family = libc::AF_INET as libc::sa_family_t;
        sa.sin_addr.s_addr = u32::from(*dst.ip()).to_be();
        let n = libc::sendto(
            fd,
            d.as_ptr().cast(),
            d.len(),
            0,
            (&sa as *const libc::sockaddr_in).cast(),
            mem::size_of_val(&sa) as libc::socklen_t,
        );
        assert_eq!(n, d.len() as isize);
    }
}

/// Like `udp:::receive`, packet-recv does not fire for a datagram with a bad
/// checksum: the kernel drops it, and so reports udptrace.
#[test]
fn bad_checksum_is_a_drop_not_a_receive() {
    let port = free_port();
    let (events, _, (before, after, got)) = in_private_netns(|| {
        trace_packets(port, || {
            let rx = UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).unwrap();
            let (src, dst) = (
                SocketAddrV4::new(Ipv4Addr::LOCALHOST, 40000),
                SocketAddrV4::new(Ipv4Addr::LOCALHOST, port),
            );
            let payload = b"checksummed";
            let mut datagram = Vec::new();
            datagram.extend(src.port().to_be_bytes());
            datagram.extend(port.to_be_bytes());
            datagram.extend(((8 + payload.len()) as u16).to_be_bytes());
            datagram.extend([0, 0]);
            datagram.extend(payload);
            let good = udp4_checksum(*src.ip(), *dst.ip(), &datagram);
            let bad = if good == 1 { 2 } else { good - 1 };
            let before = snmp();
            send_raw_udp(src, dst, payload, bad);
            send_raw_udp(src, dst, payload, good);
            let got = drain(&rx);
            (before, snmp(), (got, good, bad))
        })
    });
    let (received, good, bad) = got;
    assert_eq!(received, 1, "only the good datagram arrives");
    assert_eq!(delta(&before, &after, "UdpInCsumErrors"), 1);
    let recvs: Vec<_> = events
        .iter()
        .filter(|e| e.kind == EventKind::PacketRecv)
        .collect();
    assert_eq!(recvs.len(), 1, "{events:#?}");
    assert_eq!(recvs[0].packet.unwrap().udp_checksum, good);
    let drops: Vec<_> = events
        .iter()
        .filter(|e| e.kind == EventKind::Drop)
        .collect();
    assert_eq!(drops.len(), 1, "{events:#?}");
    let drop = drops[0];
    assert_eq!(drop.drop_reason().as_deref(), Some("UDP_CSUM"));
    assert_eq!(drop.packet.unwrap().udp_checksum, bad);
    assert_eq!(drop.source().port(), 40000);
    assert_eq!(drop.destination().port(), port);
    // A raw socket's datagram is not a UDP socket's send.
    assert!(events.iter().all(|e| e.kind != EventKind::PacketSend));
}

/// A UDP GSO send is one packet-send (as the socket hands it to IP, with its
/// segment count) and one packet-recv per datagram that arrives.
#[test]
fn gso_send_is_one_packet_send_and_one_packet_recv_per_segment() {
    let rx = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let tx = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    set_udp_segment(&tx, 500);
    let tx_port = tx.local_addr().unwrap().port();
    let (events, _, sizes) = trace_packets(tx_port, || {
        tx.send_to(&[9u8; 1500], rx.local_addr().unwrap()).unwrap();
        let mut buf = [0u8; 2048];
        (0..3)
            .map(|_| rx.recv(&mut buf).unwrap())
            .collect::<Vec<_>>()
    });
    assert_eq!(sizes, [500, 500, 500]);
    let sends: Vec<_> = events
        .iter()
        .filter(|e| e.kind == EventKind::PacketSend)
        .collect();
    assert_eq!(sends.len(), 1, "{events:#?}");
    let p = sends[0].packet.unwrap();
    assert_eq!(
        (p.gso_segs, p.udp_length, sends[0].bytes()),
        (3, 1508, Some(1500))
    );
    let recvs: Vec<_> = events
        .iter()
        .filter(|e| e.kind == EventKind::PacketRecv)
        .collect();
    assert_eq!(recvs.len(), 3, "{events:#?}");
    for r in recvs {
        let p = r.packet.unwrap();
        assert_eq!((p.gso_segs, p.udp_length, r.bytes()), (1, 508, Some(500)));
        assert_eq!(r.source(), tx.local_addr().unwrap());
        assert_eq!(r.destination(), rx.local_addr().unwrap());
    }
}

/// Receives counted by source port (the sender's, which only recvfrom()
/// tells on an unconnected socket) and by destination port (the receiver's
/// own, for which no receive needs its peer).
#[test]
fn counts_receives_by_source_and_destination_port() {
    // SAFETY: names this test's thread, which the filter below selects.
    unsafe { libc::prctl(libc::PR_SET_NAME, c"ut-count-rx".as_ptr()) };
    let filter = Filter {
        comm: Some("ut-count-rx".into()),
        kinds: vec![EventKind::Recv],
        ..Default::default()
    };
    let rx = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let a = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let b = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = |s: &UdpSocket| CountValue::Port(s.local_addr().unwrap().port());
    for field in [CountField::Sport, CountField::Dport] {
        let tracer = builder()
            .filter(filter.clone())
            .count_by(vec![field])
            .start()
            .expect("tracer starts");
        for (tx, n) in [(&a, 2), (&b, 3)] {
            for _ in 0..n {
                tx.send_to(b"x", rx.local_addr().unwrap()).unwrap();
            }
        }
        let mut buf = [0u8; 8];
        for _ in 0..5 {
            rx.recv_from(&mut buf).unwrap();
        }
        let mut rows = tracer.take_counts().unwrap();
        udptrace::sort_rows(&mut rows);
        let table: Vec<_> = rows.iter().map(|r| (r.key.clone(), r.events)).collect();
        let expected = match field {
            CountField::Sport => vec![(vec![port(&b)], 3), (vec![port(&a)], 2)],
            _ => vec![(vec![port(&rx)], 5)],
        };
        assert_eq!(table, expected, "by {field:?}");
    }
}

/// A child process holding a UDP socket on 127.0.0.1, named `ut-holder`,
/// which exits when the returned pipe end is dropped.
struct Holder {
    pid: libc::pid_t,
    port: u16,
    release: libc::c_int,
}

fn spawn_holder() -> Holder {
    let (mut ready, mut release) = ([0; 2], [0; 2]);
    // SAFETY: pipe2 fills the arrays; the child makes only system calls
    // (no allocation or locks, which another thread may have held at fork).
    unsafe {
        assert_eq!(libc::pipe2(ready.as_mut_ptr(), libc::O_CLOEXEC), 0);
        assert_eq!(libc::pipe2(release.as_mut_ptr(), libc::O_CLOEXEC), 0);
        let pid = libc::fork();
        assert!(pid >= 0, "fork");
        if pid == 0 {
            libc::close(ready[0]);
            libc::close(release[1]);
            libc::prctl(libc::PR_SET_NAME, c"ut-holder".as_ptr());
            let s = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
            let mut addr: libc::sockaddr_in = mem::zeroed();
            addr.sin_family = libc::AF_INET as libc::sa_family_t;
            addr.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
            let mut len = mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            let sa = &mut addr as *mut libc::sockaddr_in as *mut libc::sockaddr;
            libc::bind(s, sa, len);
            libc::getsockname(s, sa, &mut len);
            let port = u16::from_be(addr.sin_port);
            libc::write(ready[1], &port as *const u16 as *const libc::c_void, 2);
            let mut byte = 0u8;
            libc::read(release[0], &mut byte as *mut u8 as *mut libc::c_void, 1);
            libc::_exit(0);
        }
        libc::close(ready[1]);
        libc::close(release[0]);
        let mut port = 0u16;
        let n = libc::read(ready[0], &mut port as *mut u16 as *mut libc::c_void, 2);
        libc::close(ready[0]);
        assert_eq!(n, 2, "the holder's port");
        Holder {
            pid,
            port,
            release: release[1],
        }
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        // SAFETY: closing our end of the pipe ends the child, which we reap.
        unsafe {
            libc::close(self.release);
            libc::waitpid(self.pid, std::ptr::null_mut(), 0);
        }
    }
}

/// A socket that exists before tracing begins belongs to the process holding
/// it from the first datagram on, though that process has not touched it since.
#[test]
fn existing_socket_is_owned_by_the_process_holding_it() {
    let holder = spawn_holder();
    let port = holder.port;
    let tx = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let (events, _, _) = trace_packets(port, || tx.send_to(b"hello", (Ipv4Addr::LOCALHOST, port)));
    let holder_pid = holder.pid as u32;
    drop(holder);
    let of_kind = |kind| events.iter().filter(move |e| e.kind == kind);
    let recv: Vec<&Event> = of_kind(EventKind::PacketRecv).collect();
    assert_eq!(recv.len(), 1, "{events:?}");
    assert_eq!(recv[0].pid, holder_pid, "{:?}", recv[0]);
    assert_eq!(recv[0].comm.to_string(), "ut-holder", "{:?}", recv[0]);
    assert_ne!(recv[0].sock, 0, "{:?}", recv[0]);
    let send: Vec<&Event> = of_kind(EventKind::PacketSend).collect();
    assert_eq!(send.len(), 1, "{events:?}");
    assert_eq!(send[0].pid, std::process::id(), "{:?}", send[0]);
}

/// The same for a socket in another network namespace than the tracer's, as
/// a container's is: it gets its cookie and its owner there.
#[test]
fn existing_socket_in_another_netns_is_owned_by_the_process_holding_it() {
    let (held, holder_port) = std::sync::mpsc::channel();
    let (go, send_now) = std::sync::mpsc::channel::<()>();
    let container = std::thread::spawn(move || {
        in_private_netns(move || {
            let holder = spawn_holder();
            held.send((holder.pid as u32, holder.port)).unwrap();
            send_now.recv().unwrap();
            let tx = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
            tx.send_to(b"hello", (Ipv4Addr::LOCALHOST, holder.port))
                .unwrap();
            holder
        })
    });
    let (holder_pid, port) = holder_port.recv().unwrap();
    let (events, _, holder) = trace_packets(port, || {
        go.send(()).unwrap();
        container.join().unwrap()
    });
    drop(holder);
    let recv: Vec<&Event> = events
        .iter()
        .filter(|e| e.kind == EventKind::PacketRecv)
        .collect();
    assert_eq!(recv.len(), 1, "{events:?}");
    assert_eq!(recv[0].pid, holder_pid, "{:?}", recv[0]);
    assert_eq!(recv[0].comm.to_string(), "ut-holder", "{:?}", recv[0]);
}

/// A count by every field of the compact keys (pid, task name, event,
/// ports) adds up a known workload exactly. The sender is connected and also
/// names another peer with sendto(): each send counts under its own
/// destination.
#[test]
fn counts_by_task_event_and_ports_match_the_workload() {
    let tx = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let a = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let b = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let tx_port = port(&tx);
    let filter = Filter {
        port: Some(tx_port),
        kinds: vec![EventKind::Send, EventKind::Recv],
        ..Default::default()
    };
    let tracer = builder()
        .filter(filter)
        .count_by(vec![
            CountField::Pid,
            CountField::Comm,
            CountField::Event,
            CountField::Sport,
            CountField::Dport,
        ])
        .start()
        .expect("tracer starts");
    let (a_addr, b_addr) = (a.local_addr().unwrap(), b.local_addr().unwrap());
    std::thread::Builder::new()
        .name("cnt-tx".into())
        .spawn(move || {
            tx.connect(a_addr).unwrap();
            tx.send(&[0u8; 10]).unwrap();
            tx.send_to(&[0u8; 20], b_addr).unwrap();
            tx.send(&[0u8; 10]).unwrap();
            tx.send_to(&[0u8; 20], b_addr).unwrap();
            tx.send(&[0u8; 10]).unwrap();
        })
        .unwrap()
        .join()
        .unwrap();
    std::thread::Builder::new()
        .name("cnt-rx".into())
        .spawn(move || {
            let mut buf = [0u8; 64];
            for _ in 0..3 {
                a.recv_from(&mut buf).unwrap();
            }
        })
        .unwrap()
        .join()
        .unwrap();
    let mut rows = tracer.take_counts().unwrap();
    udptrace::sort_rows(&mut rows);
    let pid = CountValue::Pid(std::process::id());
    let comm = |c: &str| CountValue::Comm(c.into());
    let table: Vec<_> = rows
        .iter()
        .map(|r| (r.key.clone(), r.events, r.bytes))
        .collect();
    let row = |c, kind, from: u16, to: u16, n: u64, bytes: u64| {
        let key = vec![
            pid.clone(),
            comm(c),
            CountValue::Event(kind),
            CountValue::Port(from),
            CountValue::Port(to),
        ];
        (key, n, bytes)
    };
    let (a_port, b_port) = (a_addr.port(), b_addr.port());
    assert_eq!(
        table,
        vec![
            row("cnt-rx", EventKind::Recv, tx_port, a_port, 3, 30),
            row("cnt-tx", EventKind::Send, tx_port, a_port, 3, 30),
            row("cnt-tx", EventKind::Send, tx_port, b_port, 2, 40),
        ]
    );
    assert_eq!(tracer.stats().count_full, 0);
}

/// `count --by dport`: the kernel adds up a known workload, nothing crosses
/// the ring buffer.
#[test]
fn counts_by_destination_port_match_the_workload() {
    let tx = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let a = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let b = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let filter = Filter {
        port: Some(tx.local_addr().unwrap().port()),
        kinds: vec![EventKind::PacketSend, EventKind::Send],
        ..Default::default()
    };
    let mut tracer = builder()
        .filter(filter)
        .count_by(vec![CountField::Event, CountField::Dport])
        .start()
        .expect("tracer starts");
    for _ in 0..3 {
        tx.send_to(&[0u8; 10], a.local_addr().unwrap()).unwrap();
    }
    for _ in 0..5 {
        tx.send_to(&[0u8; 20], b.local_addr().unwrap()).unwrap();
    }
    let mut rows = tracer.take_counts().unwrap();
    udptrace::sort_rows(&mut rows);
    let port = |s: &UdpSocket| CountValue::Port(s.local_addr().unwrap().port());
    let table: Vec<_> = rows
        .iter()
        .map(|r| (r.key.clone(), r.events, r.bytes))
        .collect();
    let row = |kind, s: &UdpSocket, n: u64, bytes: u64| {
        (vec![CountValue::Event(kind), port(s)], n, bytes)
    };
    assert_eq!(
        table,
        vec![
            row(EventKind::Send, &b, 5, 100),
            row(EventKind::PacketSend, &b, 5, 100),
            row(EventKind::Send, &a, 3, 30),
            row(EventKind::PacketSend, &a, 3, 30),
        ]
    );
    // Taken rows are gone: the next call returns only what came since.
    tx.send_to(&[0u8; 1], a.local_addr().unwrap()).unwrap();
    let mut rows = tracer.take_counts().unwrap();
    udptrace::sort_rows(&mut rows);
    let table: Vec<_> = rows.iter().map(|r| (r.key.clone(), r.events)).collect();
    assert_eq!(
        table,
        vec![
            (vec![CountValue::Event(EventKind::Send), port(&a)], 1),
            (vec![CountValue::Event(EventKind::PacketSend), port(&a)], 1),
        ]
    );
    tracer.stop();
    assert_eq!(tracer.by_ref().count(), 0, "counting delivers no events");
    assert_eq!(tracer.stats().count_full, 0);
}
