//! Receive-queue waits (`udptrace latency`) against a receiver that measures
//! its own truth: it asks the kernel for each datagram's arrival time
//! (SO_TIMESTAMPNS) and reads it after a known delay, so every wait is known
//! to within microseconds. Real sockets in the running kernel (and in the
//! kernel matrix, on every backend).

mod common;

use std::net::UdpSocket;
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
        Filter::default(),
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
/// datagrams dropped, every one read has its wait, or (on the tracepoint
/// backend, where a drop no hook sees leaves the ring unsure) is counted as
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
    let (rows, unknown) = finish(tracer);
    let counted: u64 = rows.iter().map(|r| r.count).sum();
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
    if backend != udptrace::Backend::Tracepoint {
        assert_eq!(unknown, 0, "{backend} stamps every datagram");
    }
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
