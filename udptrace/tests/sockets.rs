//! Tracking sockets: the life each close event carries and the open sockets
//! the tracer lists, against workloads of known counts, peers and lifetimes;
//! receive-buffer pressure against the kernel's own `RcvbufErrors`, in a
//! private network namespace where this test's datagrams are the only
//! traffic. Needs root.

mod common;

use std::mem;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::thread::sleep;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use udptrace::{Event, EventKind, Family, Filter, SocketInfo, Tracer};

/// A tracer that tracks sockets and delivers close events alone.
fn tracker() -> Tracer {
    tracking(Tracking::Sockets)
}

#[derive(Debug, Clone, Copy)]
enum Tracking {
    /// Everything: counters, peers, drops and the receive queue.
    Sockets,
    /// The receive side alone, without the send and receive hooks.
    ReceiveBuffers,
}

fn tracking(what: Tracking) -> Tracer {
    let b = match what {
        Tracking::Sockets => builder().track_sockets(true),
        Tracking::ReceiveBuffers => builder().track_receive_buffers(true),
    };
    b.filter(Filter {
        kinds: vec![EventKind::Close],
        ..Default::default()
    })
    .start()
    .expect("tracer starts (the tests need root)")
}

fn int_option(s: &UdpSocket, name: libc::c_int) -> u64 {
    let mut value = 0u64;
    let mut len = mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes (an int or, for SO_COOKIE, a u64).
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            name,
            (&mut value as *mut u64).cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0);
    if len == 4 {
        value & 0xffff_ffff
    } else {
        value
    }
}

/// The kernel's socket cookie: the `sock` of its events.
fn cookie(s: &UdpSocket) -> u64 {
    const SO_COOKIE: libc::c_int = 57;
    int_option(s, SO_COOKIE)
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

fn close_of(events: &[Event], sock: u64) -> Event {
    let closes: Vec<&Event> = events
        .iter()
        .filter(|e| e.kind == EventKind::Close && e.sock == sock)
        .collect();
    assert_eq!(closes.len(), 1, "one close event of socket {sock}");
    closes[0].clone()
}

fn open_socket(tracer: &Tracer, sock: u64) -> SocketInfo {
    let found: Vec<SocketInfo> = tracer
        .sockets()
        .unwrap()
        .into_iter()
        .filter(|s| s.sock == sock)
        .collect();
    assert_eq!(found.len(), 1, "socket {sock} listed once");
    found[0]
}

/// Three sockets: one connected before tracing began, an unconnected one
/// that talks to two peers (most to one), and a connected IPv6 one. Each
/// close carries its counters, peer, local address and lifetime exactly.
#[test]
fn close_events_carry_each_sockets_life() {
    let (a, b) = (bind_v4(), bind_v4());
    let old = bind_v4();
    old.connect(a.local_addr().unwrap()).unwrap();
    let before_start = now_ns();
    let mut tracer = tracker();
    let after_start = now_ns();

    for _ in 0..3 {
        old.send(&[0; 10]).unwrap();
    }
    let created = now_ns();
    let unconnected = bind_v4();
    for _ in 0..3 {
        unconnected
            .send_to(&[0; 20], a.local_addr().unwrap())
            .unwrap();
    }
    unconnected
        .send_to(&[0; 20], b.local_addr().unwrap())
        .unwrap();
    for _ in 0..2 {
        a.send_to(&[0; 5], unconnected.local_addr().unwrap())
            .unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = unconnected.recv_from(&mut buf).unwrap();
        assert_eq!((n, from), (5, a.local_addr().unwrap()));
    }
    let a6 = bind_v6();
    let v6 = bind_v6();
    v6.connect(a6.local_addr().unwrap()).unwrap();
    for _ in 0..2 {
        v6.send(&[0; 30]).unwrap();
    }

    // While open, the tracer lists them with what they did so far.
    let listed = open_socket(&tracer, cookie(&unconnected));
    assert_eq!(
        (
            listed.pid,
            listed.counters.tx_packets,
            listed.counters.rx_packets
        ),
        (std::process::id(), 4, 2)
    );
    assert_eq!(listed.life.peer, Some(a.local_addr().unwrap()));
    assert!(listed.life.from_creation);

    let lived = Duration::from_millis(60);
    sleep(lived);
    let socks = [cookie(&old), cookie(&unconnected), cookie(&v6)];
    let locals = [
        old.local_addr().unwrap(),
        unconnected.local_addr().unwrap(),
        v6.local_addr().unwrap(),
    ];
    let closing = now_ns();
    drop((old, unconnected, v6));
    tracer.stop();
    let events: Vec<Event> = tracer.by_ref().collect();
    assert_eq!(tracer.stats().lost, 0);

    let [old, unconnected, v6] = socks.map(|s| close_of(&events, s));
    for (ev, local) in [&old, &unconnected, &v6].into_iter().zip(locals) {
        let life = ev.life.expect("a close event carries the socket's life");
        assert_eq!(life.local, Some(local));
        assert!(ev.ts_ns >= closing, "closed after {closing}");
    }

    // Seen since tracing began, not from its creation.
    let life = old.life.unwrap();
    assert!(!life.from_creation);
    assert!(
        (before_start..=after_start).contains(&life.born_ns),
        "first seen as tracing began"
    );
    assert_eq!((old.counters.tx_packets, old.counters.tx_bytes), (3, 30));
    assert_eq!(old.remote, a.local_addr().unwrap());
    assert_eq!(life.peer, Some(a.local_addr().unwrap()));

    // Unconnected: no remote of its own; its peer is the one of 5 of 6 datagrams.
    let life = unconnected.life.unwrap();
    assert!(life.from_creation);
    assert!(life.born_ns >= created && life.born_ns <= closing);
    assert!(ev_lifetime(&unconnected) >= lived.as_nanos() as u64);
    assert_eq!(unconnected.remote.port(), 0);
    assert_eq!(life.peer, Some(a.local_addr().unwrap()));
    let c = unconnected.counters;
    assert_eq!(
        (c.tx_packets, c.tx_bytes, c.rx_packets, c.rx_bytes),
        (4, 80, 2, 10)
    );
    assert_eq!((life.drops, life.rcvbuf_drops), (0, 0));
    assert!(
        life.rcvbuf > 0 && life.peak_queued > 0,
        "it received: {life:?}"
    );

    let life = v6.life.unwrap();
    assert_eq!(v6.family, Family::V6);
    assert!(life.from_creation);
    assert_eq!((v6.counters.tx_packets, v6.counters.tx_bytes), (2, 60));
    assert_eq!(life.peer, Some(a6.local_addr().unwrap()));
    assert_eq!(v6.remote, a6.local_addr().unwrap());
}

fn ev_lifetime(ev: &Event) -> u64 {
    ev.ts_ns - ev.life.unwrap().born_ns
}

fn receiver(v6: bool) -> (UdpSocket, UdpSocket) {
    let ip: IpAddr = if v6 {
        Ipv6Addr::LOCALHOST.into()
    } else {
        Ipv4Addr::LOCALHOST.into()
    };
    let rx = UdpSocket::bind(SocketAddr::new(ip, 0)).unwrap();
    let tx = UdpSocket::bind(SocketAddr::new(ip, 0)).unwrap();
    (rx, tx)
}

const BURST: u64 = 40;

/// Sends a burst of 200-byte datagrams to `rx`, which does not read meanwhile:
/// returns the kernel's `RcvbufErrors` for them.
fn burst(rx: &UdpSocket, tx: &UdpSocket, v6: bool) -> u64 {
    let before = snmp();
    for _ in 0..BURST {
        tx.send_to(&[7u8; 200], rx.local_addr().unwrap()).unwrap();
    }
    settle();
    let key = if v6 {
        "Udp6RcvbufErrors"
    } else {
        "UdpRcvbufErrors"
    };
    delta(&before, &snmp(), key)
}

/// A receiver with a small buffer is flooded while it sleeps: its drops are
/// the kernel's RcvbufErrors, its peak within one datagram of its buffer,
/// and the buffer suggested holds the same burst with no drop.
#[test]
fn receive_buffer_pressure_matches_the_kernels_rcvbuf_errors() {
    let cases = [Tracking::Sockets, Tracking::ReceiveBuffers].map(|t| [(t, false), (t, true)]);
    for (what, v6) in cases.into_iter().flatten() {
        in_private_netns(|| {
            let tracer = tracking(what);
            if matches!(what, Tracking::ReceiveBuffers) {
                let probes = tracer.probes();
                assert!(
                    !probes
                        .iter()
                        .any(|p| p.contains("msg") || p.contains("_length")),
                    "no send or receive hook: {probes:?}"
                );
            }
            let (rx, tx) = receiver(v6);
            set_rcvbuf(&rx, 2048);
            let dropped = burst(&rx, &tx, v6);
            assert!(dropped > 0, "the burst overflows the buffer");
            let life = open_socket(&tracer, cookie(&rx)).life;
            assert_eq!((life.rcvbuf_drops, life.drops), (dropped, dropped));
            assert_eq!(u64::from(life.rcvbuf), int_option(&rx, libc::SO_RCVBUF));
            let truesize = life.rcvbuf_drop_bytes / dropped;
            assert_eq!(life.rcvbuf_drop_bytes, truesize * dropped, "one size");
            let (peak, rcvbuf) = (u64::from(life.peak_queued), u64::from(life.rcvbuf));
            assert!(
                peak <= rcvbuf + truesize && peak + truesize > rcvbuf,
                "peak {peak} within a datagram ({truesize}) of the buffer {rcvbuf}"
            );
            assert_eq!(drain(&rx) as u64 + dropped, BURST);

            let suggested = life.suggested_rcvbuf();
            let (rx, tx) = receiver(v6);
            set_rcvbuf(&rx, (suggested / 2) as libc::c_int);
            assert_eq!(int_option(&rx, libc::SO_RCVBUF), suggested);
            assert_eq!(burst(&rx, &tx, v6), 0, "{suggested} bytes hold the burst");
            let life = open_socket(&tracer, cookie(&rx)).life;
            assert_eq!((life.rcvbuf_drops, life.drops), (0, 0));
            assert!(u64::from(life.peak_queued) <= suggested);
            assert_eq!(drain(&rx) as u64, BURST);
        });
    }
}
