//! Payload capture: packet events and drops carry the first bytes of each
//! datagram's UDP payload, exactly as sent, on every backend, IPv4 and IPv6,
//! GSO sends included. Needs root.

mod common;

use std::net::{Ipv4Addr, Ipv6Addr, UdpSocket};
use std::os::fd::AsRawFd;

use common::*;
use udptrace::{Event, EventKind, Filter, Tracer};

/// Bytes that differ at every offset of a datagram up to 64 KiB, and between datagrams.
fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(7) ^ (i >> 8) as u8 ^ seed)
        .collect()
}

fn start(port: u16, snaplen: u32) -> Tracer {
    let filter = Filter {
        port: Some(port),
        kinds: vec![
            EventKind::PacketSend,
            EventKind::PacketRecv,
            EventKind::Drop,
        ],
        ..Default::default()
    };
    builder()
        .filter(filter)
        .snaplen(snaplen)
        .start()
        .expect("tracer starts")
}

fn finish(mut tracer: Tracer) -> Vec<Event> {
    settle();
    tracer.stop();
    let events: Vec<Event> = tracer.by_ref().collect();
    let stats = tracer.stats();
    assert_eq!((stats.lost, stats.undecodable), (0, 0));
    events
}

fn of_kind(events: &[Event], kind: EventKind) -> Vec<&Event> {
    events.iter().filter(|e| e.kind == kind).collect()
}

fn payload(ev: &Event) -> &[u8] {
    ev.payload
        .as_deref()
        .expect("a snapped event carries a payload")
}

#[test]
fn payloads_of_ipv4_and_ipv6_datagrams_and_drops_are_the_bytes_sent() {
    let snaplen = 100;
    let rx4 = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let rx6 = UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)).unwrap();
    let tx4 = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let tx6 = UdpSocket::bind((Ipv6Addr::LOCALHOST, port(&tx4))).unwrap();
    let closed = free_port();
    let (short, long, six, dropped) = (
        pattern(1, 10),
        pattern(2, 1000),
        pattern(3, 37),
        pattern(4, 5),
    );
    let tracer = start(port(&tx4), snaplen);
    tx4.send_to(&short, rx4.local_addr().unwrap()).unwrap();
    tx4.send_to(&long, rx4.local_addr().unwrap()).unwrap();
    tx6.send_to(&six, rx6.local_addr().unwrap()).unwrap();
    tx4.send_to(&dropped, (Ipv4Addr::LOCALHOST, closed))
        .unwrap();
    let mut buf = [0u8; 2048];
    assert_eq!(rx4.recv(&mut buf).unwrap(), 10);
    assert_eq!(rx4.recv(&mut buf).unwrap(), 1000);
    assert_eq!(rx6.recv(&mut buf).unwrap(), 37);
    let events = finish(tracer);

    for kind in [EventKind::PacketSend, EventKind::PacketRecv] {
        let got: Vec<(u8, Vec<u8>, bool)> = of_kind(&events, kind)
            .iter()
            .filter(|e| e.destination().port() != closed)
            .map(|e| (e.packet.unwrap().ip_ver, payload(e).to_vec(), e.truncated()))
            .collect();
        let want = vec![
            (4, short.clone(), false),
            (4, long[..snaplen as usize].to_vec(), true),
            (6, six.clone(), false),
        ];
        assert_eq!(got, want, "{kind}");
    }
    let drops = of_kind(&events, EventKind::Drop);
    assert_eq!(drops.len(), 1, "{events:#?}");
    assert_eq!(drops[0].drop_reason().as_deref(), Some("NO_SOCKET"));
    assert_eq!(payload(drops[0]), &dropped[..]);
    assert!(!drops[0].truncated());
}

#[test]
fn without_a_snap_length_events_carry_no_payload() {
    let rx = bind_v4();
    let tx = bind_v4();
    let tracer = start(port(&tx), 0);
    tx.send_to(b"headers only", rx.local_addr().unwrap())
        .unwrap();
    rx.recv(&mut [0u8; 64]).unwrap();
    let events = finish(tracer);
    assert_eq!(events.len(), 2, "{events:#?}");
    assert!(events.iter().all(|e| e.payload.is_none() && !e.truncated()));
}

/// A GSO send's payload is in page fragments, not the skb's linear data:
/// the send's event carries its start, and each segment's its own bytes.
#[test]
fn gso_send_payload_is_the_bytes_the_socket_handed_over() {
    let rx = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let tx = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    set_udp_segment(&tx, 500);
    let data = pattern(5, 1500);
    let tracer = start(port(&tx), 600);
    tx.send_to(&data, rx.local_addr().unwrap()).unwrap();
    let mut buf = [0u8; 2048];
    let received: Vec<Vec<u8>> = (0..3)
        .map(|_| {
            let n = rx.recv(&mut buf).unwrap();
            buf[..n].to_vec()
        })
        .collect();
    let events = finish(tracer);
    assert_eq!(received.concat(), data);

    let sends = of_kind(&events, EventKind::PacketSend);
    assert_eq!(sends.len(), 1, "{events:#?}");
    assert_eq!(payload(sends[0]), &data[..600]);
    assert!(sends[0].truncated());
    let recvs: Vec<&[u8]> = of_kind(&events, EventKind::PacketRecv)
        .into_iter()
        .map(payload)
        .collect();
    assert_eq!(
        recvs,
        received.iter().map(Vec::as_slice).collect::<Vec<_>>()
    );
}

/// A datagram too large for one linear buffer: its payload is all in page
/// fragments, and captured whole.
#[test]
fn large_datagram_payload_is_captured_whole() {
    let rx = bind_v4();
    set_rcvbuf(&rx, 1 << 20);
    let tx = bind_v4();
    let data = pattern(6, 60_000);
    let tracer = start(port(&tx), udptrace::MAX_SNAPLEN);
    tx.send_to(&data, rx.local_addr().unwrap()).unwrap();
    let mut buf = vec![0u8; 65536];
    assert_eq!(rx.recv(&mut buf).unwrap(), data.len());
    let events = finish(tracer);
    for kind in [EventKind::PacketSend, EventKind::PacketRecv] {
        let evs = of_kind(&events, kind);
        assert_eq!(evs.len(), 1, "{events:#?}");
        assert!(payload(evs[0]) == data, "{kind}: the whole payload");
        assert!(!evs[0].truncated());
    }
}

/// A corked datagram (MSG_MORE): its first bytes in the linear part, the
/// rest in a page fragment; captured across both.
#[test]
fn corked_datagram_payload_spans_linear_data_and_fragments() {
    let rx = bind_v4();
    let tx = bind_v4();
    tx.connect(rx.local_addr().unwrap()).unwrap();
    let data = pattern(7, 1100);
    let tracer = start(port(&tx), 2000);
    // SAFETY: sending from a valid buffer on an open socket.
    let sent = unsafe {
        libc::send(tx.as_raw_fd(), data.as_ptr().cast(), 100, libc::MSG_MORE)
            + libc::send(tx.as_raw_fd(), data[100..].as_ptr().cast(), 1000, 0)
    };
    assert_eq!(sent, 1100);
    let mut buf = [0u8; 2048];
    assert_eq!(rx.recv(&mut buf).unwrap(), data.len());
    assert_eq!(&buf[..1100], &data[..]);
    let events = finish(tracer);
    for kind in [EventKind::PacketSend, EventKind::PacketRecv] {
        let evs = of_kind(&events, kind);
        assert_eq!(evs.len(), 1, "{events:#?}");
        assert!(payload(evs[0]) == data, "{kind}: the whole payload");
    }
}

#[test]
fn snap_length_beyond_a_datagram_is_refused() {
    let err = builder()
        .snaplen(udptrace::MAX_SNAPLEN + 1)
        .start()
        .err()
        .expect("refused");
    assert!(err.to_string().contains("snap length 65536"), "{err}");
}

/// Records are as long as their payload, not the snap length: a ring of
/// 256 KiB, which holds three records of a whole 64 KiB datagram, holds a
/// burst of a thousand 32-byte datagrams captured whole.
#[test]
fn records_cost_their_datagrams_length_not_the_snap_length() {
    const BURST: usize = 1000;
    let rx = bind_v4();
    set_rcvbuf(&rx, 4 << 20);
    let tx = bind_v4();
    let tracer = builder()
        .filter(Filter {
            port: Some(port(&tx)),
            kinds: vec![EventKind::PacketSend],
            ..Default::default()
        })
        .snaplen(udptrace::MAX_SNAPLEN)
        .ring_buffer_size(256 << 10)
        .start()
        .expect("tracer starts");
    let sent: Vec<Vec<u8>> = (0..BURST).map(|i| pattern(i as u8, 32)).collect();
    for data in &sent {
        tx.send_to(data, rx.local_addr().unwrap()).unwrap();
    }
    let events = finish(tracer);
    let captured: Vec<&[u8]> = events.iter().map(payload).collect();
    assert_eq!(captured, sent.iter().map(Vec::as_slice).collect::<Vec<_>>());
}

/// An empty datagram captured has an empty payload, not none.
#[test]
fn empty_datagram_has_an_empty_payload() {
    let rx = bind_v4();
    let tx = bind_v4();
    let tracer = start(port(&tx), 64);
    tx.send_to(&[], rx.local_addr().unwrap()).unwrap();
    assert_eq!(rx.recv(&mut [0u8; 8]).unwrap(), 0);
    let events = finish(tracer);
    for kind in [EventKind::PacketSend, EventKind::PacketRecv] {
        let evs = of_kind(&events, kind);
        assert_eq!(evs.len(), 1, "{events:#?}");
        assert_eq!(evs[0].payload.as_deref(), Some(&[][..]), "{kind}");
    }
}
