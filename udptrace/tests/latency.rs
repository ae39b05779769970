//! Receive-queue waits (`udptrace latency`) against a receiver that measures
//! its own truth: it asks the kernel for each datagram's arrival time
//! (SO_TIMESTAMPNS) and reads it after a known delay, so every wait is known
//! to within microseconds. Real sockets in the running kernel (and in the
//! kernel matrix, on every backend).

mod common;

use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::time::Duration;

use common::*;
use udptrace::{
    CountField, CountValue, EventKind, Filter, HistRow, Histogram, Tracer, HIST_BUCKETS,
};

fn start(filter: Filter, by: Vec<CountField>, what: Histogram) -> Tracer {
    builder()
        .filter(filter)
        .count_by(by)
        .histogram(what)
        .start()
        .expect("tracer starts (the tests need root)")
}

/// Stops `tracer` once what was sent has arrived; its histograms, and the
/// receives of unknown wait.
fn finish(tracer: Tracer) -> (Vec<HistRow>, u64) {
    settle();
    let rows = tracer.take_histograms().expect("reading the histograms");
    tracer.stop();
    let stats = tracer.stats();
    assert_eq!(stats.lost, 0);
    assert_eq!(stats.count_full, 0);
    (rows, stats.wait_unknown)
}

/// Sends one datagram at a time and reads it after each delay, `rounds` times.
fn delayed_reads(
    rx: &mut TimedReceiver,
    tx: &UdpSocket,
    delays: &[Duration],
    rounds: usize,
) -> Vec<Bracket> {
    let mut brackets = Vec::new();
    for delay in delays {
        for _ in 0..rounds {
            rx.send(tx, &[7u8; 100]);
            std::thread::sleep(*delay);
            let (n, bracket) = rx.recv(0);
            assert_eq!(n, 100);
            brackets.push(bracket);
        }
    }
    brackets
}

fn only_row(rows: &[HistRow]) -> &HistRow {
    assert_eq!(rows.len(), 1, "one histogram: {rows:?}");
    &rows[0]
}

const DELAYS: [Duration; 3] = [
    Duration::ZERO,
    Duration::from_millis(2),
    Duration::from_millis(20),
];

fn waits_after_known_delays(rx: UdpSocket, tx: UdpSocket) {
    let port = port(&rx);
    let mut rx = TimedReceiver::new(rx);
    let tracer = start(
        Filter {
            port: Some(port),
            ..Default::default()
        },
        vec![CountField::Dport],
        Histogram::QueueWait,
    );
    let brackets = delayed_reads(&mut rx, &tx, &DELAYS, 10);
    let (rows, unknown) = finish(tracer);
    assert_eq!(unknown, 0);
    let row = only_row(&rows);
    assert_eq!(row.key, vec![CountValue::Port(port)]);
    assert_waits_match(row, &brackets);
}

#[test]
fn waits_after_known_delays_fall_in_their_buckets() {
    waits_after_known_delays(bind_v4(), bind_v4());
}

#[test]
fn ipv6_waits_fall_in_their_buckets() {
    waits_after_known_delays(bind_v6(), bind_v6());
}

/// Several datagrams queued at once, read in turn: each read takes the
/// oldest, whose wait is its own (a ring taken from the wrong end would give
/// 0, 12 and 42 ms here instead of 22, 12 and 20).
#[test]
fn queued_datagrams_each_wait_their_own_time() {
    let (rx, tx) = (bind_v4(), bind_v4());
    let port = port(&rx);
    let mut rx = TimedReceiver::new(rx);
    let tracer = start(
        Filter {
            port: Some(port),
            ..Default::default()
        },
        vec![CountField::Comm],
        Histogram::QueueWait,
    );
    let mut brackets = Vec::new();
    for _ in 0..5 {
        rx.send(&tx, b"A");
        std::thread::sleep(Duration::from_millis(20));
        rx.send(&tx, b"B");
        std::thread::sleep(Duration::from_millis(2));
        rx.send(&tx, b"C");
        for _ in 0..3 {
            brackets.push(rx.recv(0).1);
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let (rows, unknown) = finish(tracer);
    assert_eq!(unknown, 0);
    assert_waits_match(only_row(&rows), &brackets);
}

/// A socket that never reads has no waits, its datagrams dropped at close
/// neither; a peek is not a read: the wait ends at the read that follows.
#[test]
fn only_datagrams_read_are_waits_and_a_peek_is_not_one() {
    let (rx, idle, tx) = (bind_v4(), bind_v4(), bind_v4());
    let rx_port = port(&rx);
    let mut rx = TimedReceiver::new(rx);
    let tracer = start(
        Filter {
            pid: Some(std::process::id()),
            ..Default::default()
        },
        vec![CountField::Dport],
        Histogram::QueueWait,
    );
    for _ in 0..20 {
        tx.send_to(b"never read", idle.local_addr().unwrap())
            .unwrap();
    }
    let mut brackets = Vec::new();
    for _ in 0..5 {
        rx.send(&tx, &[1u8; 100]);
        std::thread::sleep(Duration::from_millis(2));
        let (n, peeked) = rx.recv(libc::MSG_PEEK);
        assert_eq!(n, 100);
        std::thread::sleep(Duration::from_millis(20));
        let (n, read) = rx.recv(0);
        assert_eq!(n, 100);
        assert!(read.at_least > peeked.at_most);
        brackets.push(read);
    }
    let idle_port = port(&idle);
    drop(idle); // 20 datagrams left queued at close
    let (rows, unknown) = finish(tracer);
    assert_eq!(unknown, 0);
    let ours: Vec<&HistRow> = rows
        .iter()
        .filter(|r| r.key == vec![CountValue::Port(rx_port)])
        .collect();
    assert_eq!(ours.len(), 1, "{rows:?}");
    assert_waits_match(ours[0], &brackets);
    assert!(
        !rows
            .iter()
            .any(|r| r.key == vec![CountValue::Port(idle_port)]),
        "datagrams never read waited for nobody: {rows:?}"
    );
}

/// A flood into a small buffer that the reader drains slowly: many
/// datagrams dropped, every one read has its wait, or (where a per-socket
/// ring keeps them, and a drop no hook sees leaves it unsure) is counted as
/// unknown; never both, never neither.
#[test]
fn a_flood_counts_every_datagram_read() {
    let (rx, tx) = (bind_v4(), bind_v4());
    set_rcvbuf(&rx, 16 * 1024);
    let dst = rx.local_addr().unwrap();
    let tracer = start(
        Filter {
            port: Some(port(&rx)),
            ..Default::default()
        },
        vec![],
        Histogram::QueueWait,
    );
    let backend = tracer.backend();
    // Where the receive's datagram is seen (fentry/kprobe on
    // skb_consume_udp) every wait is stamped by it; the ring of the
    // tracepoint backend (and of fentry's fallback without that function)
    // may have to say unknown after a drop no hook saw.
    let stamped = tracer
        .probes()
        .iter()
        .any(|p| p.contains("skb_consume_udp"));
    let began = std::time::Instant::now();
    // Two senders, on both CPUs of a small machine: their datagrams'
    // arrivals and refusals interleave.
    let tx2 = tx.try_clone().unwrap();
    let senders = [tx, tx2].map(|tx| {
        std::thread::spawn(move || {
            for i in 0..10_000u32 {
                let _ = tx.send_to(&i.to_ne_bytes(), dst);
            }
        })
    });
    rx.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut read = 0u64;
    let mut buf = [0u8; 64];
    while rx.recv(&mut buf).is_ok() {
        read += 1;
        if read.is_multiple_of(64) {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    for s in senders {
        s.join().unwrap();
    }
    read += drain(&rx) as u64;
    let elapsed = began.elapsed().as_nanos() as u64;
    let (rows, unknown) = finish(tracer);
    let counted: u64 = rows.iter().map(|r| r.count).sum();
    // No wait outlives the flood: a stamp taken by the wrong datagram could.
    for r in &rows {
        assert!(
            r.max <= elapsed,
            "a wait of {} ns in a flood of {elapsed} ns",
            r.max
        );
    }
    eprintln!("{backend}: read {read}, {counted} waits, {unknown} unknown");
    assert!(
        read > 0 && read < 20_000,
        "the flood overflowed the buffer: read {read}"
    );
    assert_eq!(
        counted + unknown,
        read,
        "{backend}: {counted} waits, {unknown} unknown"
    );
    if stamped {
        assert_eq!(unknown, 0, "{backend} stamps every datagram");
    }
}

/// Every way of reading a datagram ends its wait, once: recvmmsg, MSG_TRUNC
/// with no buffer, an empty datagram, and an empty peek before the read
/// (which copies nothing either). An error-queue read takes no datagram of
/// a peer: neither a wait nor an unknown one.
#[test]
fn every_way_of_reading_ends_a_wait_and_error_queue_reads_are_none() {
    let (rx, tx) = (bind_v4(), bind_v4());
    let port = port(&rx);
    let errs = bind_v4();
    let tracer = start(
        // This process's receives alone: another's socket older than the
        // tracer would have waits of its own unknown.
        Filter {
            pid: Some(std::process::id()),
            ..Default::default()
        },
        vec![CountField::Dport],
        Histogram::QueueWait,
    );
    let fd = rx.as_raw_fd();
    let send = |n: usize| tx.send_to(&vec![3u8; n], rx.local_addr().unwrap()).unwrap();
    // Two by recvmmsg.
    send(10);
    send(10);
    settle();
    let mut bufs = [[0u8; 64]; 2];
    let mut iovs: Vec<libc::iovec> = bufs
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: b.len(),
        })
        .collect();
    // SAFETY: mmsghdr is plain data; every pointer outlives the call.
    let mut msgs: Vec<libc::mmsghdr> = iovs
        .iter_mut()
        .map(|iov| {
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_iov = iov;
            m.msg_hdr.msg_iovlen = 1;
            m
        })
        .collect();
    // SAFETY: as above.
    let n = unsafe { libc::recvmmsg(fd, msgs.as_mut_ptr(), 2, 0, std::ptr::null_mut()) };
    assert_eq!(n, 2);
    // MSG_TRUNC with no buffer: the length, nothing copied.
    send(50);
    // SAFETY: a zero-length read writes nothing.
    let n = unsafe { libc::recv(fd, std::ptr::null_mut(), 0, libc::MSG_TRUNC) };
    assert_eq!(n, 50);
    // An empty datagram, peeked empty-handed first, then read.
    send(0);
    settle();
    // SAFETY: as above.
    let n = unsafe { libc::recv(fd, std::ptr::null_mut(), 0, libc::MSG_PEEK) };
    assert_eq!(n, 0);
    assert_eq!(rx.recv(&mut [0u8; 8]).unwrap(), 0);
    // An ICMP error queued to a connected socket, read from its error queue.
    let on: libc::c_int = 1;
    // SAFETY: IP_RECVERR takes an int.
    unsafe {
        libc::setsockopt(
            errs.as_raw_fd(),
            libc::SOL_IP,
            libc::IP_RECVERR,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of_val(&on) as libc::socklen_t,
        )
    };
    errs.connect(("127.0.0.1", free_port())).unwrap();
    errs.send(b"nobody").unwrap();
    settle();
    let mut buf = [0u8; 64];
    let mut control = [0u64; 32];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain data; every pointer set outlives the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: as above.
    let n = unsafe { libc::recvmsg(errs.as_raw_fd(), &mut msg, libc::MSG_ERRQUEUE) };
    assert!(
        n >= 0,
        "the error queue: {}",
        std::io::Error::last_os_error()
    );
    let (rows, unknown) = finish(tracer);
    assert_eq!(unknown, 0, "{rows:?}");
    let ours: Vec<&HistRow> = rows
        .iter()
        .filter(|r| r.key == vec![CountValue::Port(port)])
        .collect();
    assert_eq!(ours.len(), 1, "{rows:?}");
    assert_eq!(
        ours[0].count, 4,
        "recvmmsg's two, MSG_TRUNC's and the empty one"
    );
    assert!(
        !rows
            .iter()
            .any(|r| r.key == vec![CountValue::Port(common::port(&errs))]),
        "an error-queue read is no wait: {rows:?}"
    );
}

/// Sizes: DTrace's quantize of udp:::receive. Exact bytes, by event.
#[test]
fn sizes_fall_in_their_buckets() {
    let (rx, tx) = (bind_v4(), bind_v4());
    let tracer = start(
        Filter {
            port: Some(port(&rx)),
            kinds: vec![EventKind::Send, EventKind::Recv],
            ..Default::default()
        },
        vec![CountField::Event],
        Histogram::Size,
    );
    let sizes = [0usize, 1, 3, 100, 1000, 1500, 9000];
    let mut buf = vec![0u8; 10_000];
    for &n in &sizes {
        tx.send_to(&buf[..n], rx.local_addr().unwrap()).unwrap();
        assert_eq!(rx.recv(&mut buf).unwrap(), n);
    }
    let (rows, _) = finish(tracer);
    assert_eq!(rows.len(), 2, "{rows:?}");
    for row in rows {
        assert!(matches!(
            row.key[0],
            CountValue::Event(EventKind::Send | EventKind::Recv)
        ));
        assert_eq!(row.count, sizes.len() as u64);
        assert_eq!(row.sum, sizes.iter().sum::<usize>() as u64);
        assert_eq!(row.max, 9000);
        let mut want = [0u64; HIST_BUCKETS];
        for &n in &sizes {
            want[if n == 0 {
                0
            } else {
                64 - (n as u64).leading_zeros() as usize
            }] += 1;
        }
        assert_eq!(row.buckets, want);
    }
}

#[test]
fn a_wait_histogram_of_other_events_is_refused() {
    let err = builder()
        .filter(Filter {
            kinds: vec![EventKind::Send],
            ..Default::default()
        })
        .count_by(vec![])
        .histogram(Histogram::QueueWait)
        .start()
        .err()
        .expect("refused");
    assert!(err.to_string().contains("receives"), "{err}");
}
