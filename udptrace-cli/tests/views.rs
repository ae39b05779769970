//! The socket views, `life` and `rcvbuf`, run as a user runs them, against
//! workloads of known counts, peers and lifetimes, and the kernel's own
//! `RcvbufErrors`. Needs root.

mod common;

use std::collections::HashMap;
use std::mem;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::thread::sleep;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// The kernel's socket cookie: the `sock` the views report.
fn cookie(s: &UdpSocket) -> u64 {
    const SO_COOKIE: libc::c_int = 57;
    let mut value = 0u64;
    let mut len = mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: SO_COOKIE writes a u64 into `value`.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_COOKIE,
            (&mut value as *mut u64).cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0);
    value
}

fn recv_n(s: &UdpSocket, n: usize) {
    let mut buf = [0u8; 2048];
    for _ in 0..n {
        s.recv_from(&mut buf).unwrap();
    }
}

/// What `life --json` shows of a socket, but its lifetime.
fn expected(
    s: &UdpSocket,
    remote: Option<(SocketAddr, &str)>,
    tx: (u64, u64),
    rx: (u64, u64),
    from_creation: bool,
    open: bool,
) -> Value {
    let local = s.local_addr().unwrap();
    json!({
        "pid": std::process::id(),
        "comm": "life-test",
        "sock": cookie(s),
        "family": if local.is_ipv4() { 4 } else { 6 },
        "laddr": local.ip().to_string(),
        "lport": local.port(),
        "raddr": remote.map(|(a, _)| a.ip().to_string()),
        "rport": remote.map(|(a, _)| a.port()),
        "remote_from": remote.map(|(_, from)| from),
        "tx_packets": tx.0,
        "tx_bytes": tx.1,
        "rx_packets": rx.0,
        "rx_bytes": rx.1,
        "drops": 0,
        "seen_from_creation": from_creation,
        "open": open,
    })
}

/// One socket connected before tracing began, an unconnected one talking to
/// two peers (most to one), a connected IPv6 one, and their peers still open
/// at exit: every line of `life --json --open` exact, and the text view's
/// marks for a usual peer and a life seen only from tracing on.
#[test]
fn life_prints_every_socket_exactly() {
    std::thread::spawn(|| {
        set_comm("life-test");
        let old = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let (child, stderr) =
            start(&["life", "--json", "--open", "--comm", "life-test", "-d", "2"]);
        let (a, b) = (
            UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap(),
            UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap(),
        );
        let a6 = UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)).unwrap();
        let (pa, pb, pa6) = (
            a.local_addr().unwrap(),
            b.local_addr().unwrap(),
            a6.local_addr().unwrap(),
        );
        old.connect(pa).unwrap();
        for _ in 0..3 {
            old.send(&[0; 10]).unwrap();
        }
        let unconnected = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        for _ in 0..3 {
            unconnected.send_to(&[0; 20], pa).unwrap();
        }
        unconnected.send_to(&[0; 20], pb).unwrap();
        let v6 = UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)).unwrap();
        v6.connect(pa6).unwrap();
        for _ in 0..2 {
            v6.send(&[0; 30]).unwrap();
        }
        recv_n(&a, 6);
        recv_n(&b, 1);
        recv_n(&a6, 2);
        sleep(Duration::from_millis(100));
        let (po, pu) = (old.local_addr().unwrap(), unconnected.local_addr().unwrap());
        let want = [
            expected(&old, Some((pa, "connected")), (3, 30), (0, 0), false, false),
            expected(
                &unconnected,
                Some((pa, "usual_peer")),
                (4, 80),
                (0, 0),
                true,
                false,
            ),
            expected(&v6, Some((pa6, "connected")), (2, 60), (0, 0), true, false),
            // a heard from `old` and `unconnected` three times each: no
            // majority, so its usual peer is either (checked below).
            expected(&a, None, (0, 0), (6, 90), true, true),
            expected(&b, Some((pu, "usual_peer")), (0, 0), (1, 20), true, true),
            expected(
                &a6,
                Some((v6.local_addr().unwrap(), "usual_peer")),
                (0, 0),
                (2, 60),
                true,
                true,
            ),
        ];
        drop((old, unconnected, v6));
        let (out, summary) = finish(child, stderr);
        assert!(out.status.success());
        assert_eq!(summary, ["3 sockets closed, 3 open; lost 0"]);
        let lines = json_lines(&out);
        assert_eq!(lines.len(), want.len(), "{lines:#?}");
        for (i, (line, want)) in lines.iter().zip(&want).enumerate() {
            let mut got = line.clone();
            let ms = got.as_object_mut().unwrap().remove("duration_ms").unwrap();
            let ms = ms.as_f64().unwrap();
            assert!((100.0..3000.0).contains(&ms), "line {i}: lived {ms} ms");
            if i == 3 {
                let peer = (
                    got["raddr"].take(),
                    got["rport"].take(),
                    got["remote_from"].take(),
                );
                let either =
                    [po, pu].map(|p| (json!(p.ip()), json!(p.port()), json!("usual_peer")));
                assert!(either.contains(&peer), "{peer:?}");
            }
            assert_eq!(&got, want, "line {i}");
        }
    })
    .join()
    .unwrap();
}

/// A line of the text view, by its columns.
fn columns(line: &str) -> Vec<String> {
    line.split_whitespace().map(String::from).collect()
}

#[test]
fn life_text_marks_usual_peers_and_lives_seen_from_tracing() {
    std::thread::spawn(|| {
        set_comm("life-text");
        let old = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let (child, stderr) = start(&["life", "--comm", "life-text", "-d", "1"]);
        let peer = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        old.send_to(&[0; 8], peer.local_addr().unwrap()).unwrap();
        let (local, remote) = (old.local_addr().unwrap(), peer.local_addr().unwrap());
        drop((old, peer));
        let (out, summary) = finish(child, stderr);
        assert_eq!(summary, ["2 sockets closed; lost 0"]);
        let text = String::from_utf8(out.stdout).unwrap();
        let rows: Vec<Vec<String>> = text.lines().map(columns).collect();
        assert_eq!(
            rows[0],
            [
                "PID",
                "COMM",
                "LOCAL",
                "REMOTE",
                "TX_DGRAMS",
                "TX_BYTES",
                "RX_DGRAMS",
                "RX_BYTES",
                "DROPS",
                "MS"
            ]
        );
        let old_row = &rows[1];
        assert_eq!(
            old_row[..9],
            [
                std::process::id().to_string(),
                "life-text".into(),
                local.to_string(),
                format!("{remote}*"),
                "1".into(),
                "8".into(),
                "0".into(),
                "0".into(),
                "0".into(),
            ]
        );
        assert!(old_row[9].starts_with('>'), "{text}");
        assert_eq!(
            rows[2][2..4],
            [remote.to_string(), "-".to_string()],
            "{text}"
        );
        assert!(!rows[2][9].starts_with('>'), "{text}");
    })
    .join()
    .unwrap();
}

/// `UdpRcvbufErrors` and `Udp6RcvbufErrors` of this thread's network namespace.
fn rcvbuf_errors() -> HashMap<&'static str, u64> {
    let v4 = std::fs::read_to_string("/proc/thread-self/net/snmp").unwrap();
    let udp: Vec<&str> = v4.lines().filter(|l| l.starts_with("Udp:")).collect();
    let names = udp[0].split_whitespace();
    let values = udp[1].split_whitespace();
    let v4 = names
        .zip(values)
        .find(|(n, _)| *n == "RcvbufErrors")
        .map(|(_, v)| v.parse().unwrap())
        .unwrap();
    let v6 = std::fs::read_to_string("/proc/thread-self/net/snmp6").unwrap();
    let v6 = v6
        .lines()
        .find_map(|l| l.strip_prefix("Udp6RcvbufErrors"))
        .map(|v| v.trim().parse().unwrap())
        .unwrap();
    HashMap::from([("v4", v4), ("v6", v6)])
}

/// Two receivers, IPv4 and IPv6, with small buffers flooded while they
/// sleep, and a third that keeps up: `rcvbuf --json` lists the two first,
/// with the kernel's RcvbufErrors as their drops, and the one without drops
/// last; the suggested buffers hold the same bursts with no drop.
#[test]
fn rcvbuf_names_the_overflowing_sockets_and_a_size_that_fits() {
    // Alone in its namespace: the kernel's counters count only its drops.
    in_private_netns(|| {
        set_comm("rcvbuf-test");
        let run = |sizes: [libc::c_int; 2]| {
            let (child, stderr) =
                start(&["rcvbuf", "--json", "--comm", "rcvbuf-test", "-d", "1.5"]);
            let rx4 = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
            let rx6 = UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)).unwrap();
            let calm = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
            let tx4 = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
            let tx6 = UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)).unwrap();
            small_buffer(&rx4, sizes[0]);
            small_buffer(&rx6, sizes[1]);
            let before = rcvbuf_errors();
            for _ in 0..50 {
                tx4.send_to(&[1; 300], rx4.local_addr().unwrap()).unwrap();
                tx6.send_to(&[2; 300], rx6.local_addr().unwrap()).unwrap();
            }
            tx4.send_to(&[3; 10], calm.local_addr().unwrap()).unwrap();
            recv_n(&calm, 1);
            settle();
            let after = rcvbuf_errors();
            let (out, summary) = finish(child, stderr);
            assert!(out.status.success());
            assert_eq!(summary, ["3 receiving sockets; lost 0"]);
            let tables = json_lines(&out);
            assert_eq!(tables.len(), 1);
            let rows = tables[0]["sockets"].as_array().unwrap().clone();
            let socks: Vec<u64> = rows.iter().map(|r| r["sock"].as_u64().unwrap()).collect();
            let drops = [after["v4"] - before["v4"], after["v6"] - before["v6"]];
            (
                rows,
                socks,
                [cookie(&rx4), cookie(&rx6), cookie(&calm)],
                drops,
            )
        };
        let (rows, socks, [rx4, rx6, calm], drops) = run([2048, 2048]);
        assert!(
            drops[0] > 0 && drops[1] > 0,
            "the bursts overflow: {drops:?}"
        );
        assert_eq!(socks[2], calm, "the calm receiver last: {rows:#?}");
        let row = |sock| rows.iter().find(|r| r["sock"] == sock).unwrap();
        let mut suggested = [0; 2];
        for (i, sock) in [rx4, rx6].into_iter().enumerate() {
            let r = row(sock);
            assert_eq!(r["drops"], drops[i], "{r}");
            assert_eq!(r["open"], true);
            assert!(r["rx_packets"].is_null(), "traffic is not tracked: {r}");
            let (rcvbuf, peak) = (
                r["rcvbuf"].as_u64().unwrap(),
                r["peak_queued"].as_u64().unwrap(),
            );
            // One datagram's truesize is more than its 300 bytes, less than 4 KiB.
            assert!(
                peak > rcvbuf.saturating_sub(4096) && peak <= rcvbuf + 4096,
                "{r}"
            );
            suggested[i] = r["suggested_rcvbuf"].as_u64().unwrap();
            assert!(suggested[i] > 50 * 300, "{r}");
        }
        let r = row(calm);
        assert_eq!(r["drops"], 0);

        // setsockopt takes half: the kernel doubles it.
        let (rows, _, [rx4, rx6, _], drops) = run(suggested.map(|s| (s / 2) as libc::c_int));
        assert_eq!(drops, [0, 0], "the suggested buffers hold the bursts");
        for (i, sock) in [rx4, rx6].into_iter().enumerate() {
            let r = rows.iter().find(|r| r["sock"] == sock).unwrap();
            assert_eq!(
                (r["drops"].as_u64(), r["rcvbuf"].as_u64()),
                (Some(0), Some(suggested[i]))
            );
        }
    });
}

/// Two sender threads at known counts and a receiver, to one port: what
/// `top` must show of them, by (pid, comm).
struct TopWorkload {
    port: u16,
    rx: UdpSocket,
}

impl TopWorkload {
    fn new() -> TopWorkload {
        let rx = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = rx.local_addr().unwrap().port();
        TopWorkload { port, rx }
    }

    /// `top-fast` sends 60 datagrams of 100 bytes, `top-slow` 15 of 50, and
    /// `top-rx` receives them, in about a second (two in an emulated guest:
    /// a tracer watching it runs for 3 s). (Its receives start now, once tracing: a
    /// call already under way when fexit or a kretprobe attaches is not
    /// seen returning.)
    fn run(self) {
        let dst = self.rx.local_addr().unwrap();
        let receiver = std::thread::spawn(move || {
            set_comm("top-rx");
            recv_n(&self.rx, 75);
        });
        let senders: Vec<_> = [("top-fast", 60, 100), ("top-slow", 15, 50)]
            .into_iter()
            .map(|(comm, n, size)| {
                std::thread::spawn(move || {
                    set_comm(comm);
                    let tx = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
                    for _ in 0..n {
                        tx.send_to(&vec![0u8; size], dst).unwrap();
                        sleep(Duration::from_millis(10));
                    }
                })
            })
            .collect();
        for s in senders {
            s.join().unwrap();
        }
        receiver.join().unwrap();
    }
}

/// `top --json` (not a terminal): one object per interval, whose rows add
/// up to the workload exactly; `--batch` prints the same as tables.
#[test]
fn top_batch_and_json_add_up_to_the_workload() {
    let pid = std::process::id();
    let expected = HashMap::from([
        ("top-fast".to_string(), [0, 0, 60, 6000]),
        ("top-slow".to_string(), [0, 0, 15, 750]),
        ("top-rx".to_string(), [75, 6750, 0, 0]),
    ]);

    let work = TopWorkload::new();
    let port = work.port.to_string();
    let (child, stderr) = start(&["top", "--json", "-i", "0.3", "-d", "3", "--port", &port]);
    work.run();
    let (out, summary) = finish(child, stderr);
    assert!(out.status.success());
    assert_eq!(summary, ["lost 0"]);
    let samples = json_lines(&out);
    assert!(
        samples.len() >= 5,
        "a sample every 0.3 s: {}",
        samples.len()
    );
    let mut totals: HashMap<String, [u64; 4]> = HashMap::new();
    for s in &samples {
        assert_eq!(s["lost"], 0);
        for r in s["rows"].as_array().unwrap() {
            assert_eq!(r["pid"], pid, "{r}");
            let t = totals
                .entry(r["comm"].as_str().unwrap().to_string())
                .or_default();
            for (i, k) in ["rx_packets", "rx_bytes", "tx_packets", "tx_bytes"]
                .iter()
                .enumerate()
            {
                t[i] += r[k].as_u64().unwrap();
            }
            assert_eq!(
                (r["drops"].as_u64(), r["top_drop_reason"].is_null()),
                (Some(0), true)
            );
        }
    }
    // Exact, but for the runs of a hook the kernel skipped (a task
    // preempted in it, on kernels that preempt there), each of which may
    // be one of these datagrams missing.
    let skipped: u64 = samples.iter().map(|s| s["skipped"].as_u64().unwrap()).sum();
    assert_within_skipped(&totals, &expected, skipped);

    let work = TopWorkload::new();
    let port = work.port.to_string();
    // With its p99 wait column, as --latency asks.
    let (child, stderr) = start(&[
        "top",
        "--batch",
        "-i",
        "5",
        "-d",
        "3",
        "--port",
        &port,
        "--latency",
    ]);
    work.run();
    let (out, _) = finish(child, stderr);
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<Vec<String>> = text.lines().map(columns).collect();
    let header = text.lines().next().unwrap();
    let skipped: u64 = header
        .split("; hook runs the kernel skipped ")
        .nth(1)
        .and_then(|rest| rest.split(';').next()?.trim().parse().ok())
        .unwrap_or(0);
    if skipped > 0 {
        // The rows, by comm, within the skipped runs of the workload.
        let totals: HashMap<String, [u64; 4]> = lines[2..5]
            .iter()
            .map(|r| {
                let n = |i: usize| r[i].parse::<u64>().unwrap();
                (r[1].clone(), [n(2), n(3), n(4), n(5)])
            })
            .collect();
        assert_within_skipped(&totals, &expected, skipped);
        return;
    }
    assert!(
        header.contains(
            "75 datagrams received (6750 bytes), 75 sent (6750 bytes), 0 dropped; lost 0"
        ),
        "{text}"
    );
    assert_eq!(
        lines[1],
        [
            "PID",
            "COMM",
            "RX",
            "RX_BYTES",
            "TX",
            "TX_BYTES",
            "DROPS",
            "TOP_DROP",
            "WAIT_P99(us)"
        ]
    );
    let row = |comm: &str| {
        let [rx, rxb, tx, txb] = expected[comm];
        [
            pid.to_string(),
            comm.into(),
            rx.to_string(),
            rxb.to_string(),
            tx.to_string(),
            txb.to_string(),
            "0".into(),
            "-".into(),
        ]
        .to_vec()
    };
    // Busiest first: by datagrams, sent and received; the receiver's p99
    // wait a bucket's bound (latency_top_and_life_... times it), the
    // senders' none.
    let rows: Vec<&[String]> = lines[2..5].iter().map(|l| &l[..8]).collect();
    assert_eq!(
        rows,
        [row("top-rx"), row("top-fast"), row("top-slow")],
        "{text}"
    );
    let p99: Vec<&str> = lines[2..5].iter().map(|l| l[8].as_str()).collect();
    assert!(p99[0].starts_with("<="), "{text}");
    assert_eq!(p99[1..], ["-", "-"], "{text}");
}

/// `got` is `expected` ([rx, rx bytes, tx, tx bytes] by comm), but for at
/// most `skipped` datagrams missing from it, each of its sender's size.
fn assert_within_skipped(
    got: &HashMap<String, [u64; 4]>,
    expected: &HashMap<String, [u64; 4]>,
    skipped: u64,
) {
    if skipped == 0 {
        assert_eq!(got, expected);
        return;
    }
    let mut missing = 0;
    for (comm, want) in expected {
        let have = got.get(comm).copied().unwrap_or_default();
        for (count, bytes) in [(0, 1), (2, 3)] {
            assert!(have[count] <= want[count], "{comm}: {have:?} of {want:?}");
            missing += want[count] - have[count];
            // Every datagram of a comm has one size.
            if let Some(size) = want[bytes].checked_div(want[count]) {
                assert_eq!(have[bytes], have[count] * size, "{comm}: {have:?}");
            }
        }
    }
    assert!(
        missing <= skipped,
        "{missing} missing, {skipped} skipped: {got:?}"
    );
}

/// Bad `--by` values for top: one clear line and status 2.
#[test]
fn top_refuses_keys_it_shows_as_columns() {
    for (by, needle) in [
        ("event", "as its columns"),
        ("comm,socket", "a key of its own"),
        ("pid,pid", "given twice"),
        ("bogus", "bogus"),
    ] {
        let out = std::process::Command::new(udptrace_bin())
            .args(["top", "--by", by])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{by}: {err}");
        assert!(err.contains(needle), "{by}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

/// `top --by socket`: a receiver flooded past its small buffer shows its
/// drops (the kernel's RcvbufErrors), their reason, and a queue peak at
/// its buffer; its sender, the datagrams it sent.
#[test]
fn top_by_socket_shows_receive_queue_pressure() {
    // Alone in its namespace: the kernel's counters count only its drops.
    in_private_netns(|| {
        set_comm("top-socket");
        let (child, stderr) = start(&[
            "top",
            "--by",
            "socket",
            "--json",
            "-i",
            "0.5",
            "-d",
            "1.5",
            "--comm",
            "top-socket",
        ]);
        let rx = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let tx = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        small_buffer(&rx, 2048);
        let before = rcvbuf_errors();
        for _ in 0..40 {
            tx.send_to(&[5; 300], rx.local_addr().unwrap()).unwrap();
        }
        settle();
        let dropped = rcvbuf_errors()["v4"] - before["v4"];
        assert!(dropped > 0);
        let (out, summary) = finish(child, stderr);
        assert_eq!(summary, ["lost 0"]);
        let (mut drops, mut sent, mut peak) = (0, 0, 0.0f64);
        for sample in json_lines(&out) {
            for r in sample["rows"].as_array().unwrap() {
                if r["sock"] == cookie(&rx) {
                    drops += r["drops"].as_u64().unwrap();
                    assert_eq!(r["top_drop_reason"], "SOCKET_RCVBUFF");
                    assert_eq!(r["lport"], rx.local_addr().unwrap().port());
                    peak = peak.max(r["rcvq_peak_share"].as_f64().unwrap());
                } else if r["sock"] == cookie(&tx) {
                    sent += r["tx_packets"].as_u64().unwrap();
                }
            }
        }
        assert_eq!((drops, sent), (dropped, 40));
        assert!(peak > 0.5 && peak < 2.0, "peak {peak} of the buffer");
    });
}

/// `latency`, `top` and `life`, attached at once, against one receiver that
/// brackets each datagram's wait by its own clocks (3 ms and 24 ms delays):
/// latency's text histogram holds each wait in a bucket its bracket allows,
/// top's p99 is the longest wait's bucket bound capped by its maximum, and
/// life's mean and maximum lie within the brackets'.
#[test]
fn latency_top_and_life_show_the_receivers_own_waits() {
    let (rx, tx) = (
        UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap(),
        UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap(),
    );
    let port = rx.local_addr().unwrap().port().to_string();
    let mut rx = TimedReceiver::new(rx);
    let (latency, latency_err) = start(&["latency", "--by", "dport", "--port", &port]);
    let (top, top_err) = start(&[
        "top",
        "--json",
        "--by",
        "dport",
        "--port",
        &port,
        "-i",
        "600",
        "--latency",
    ]);
    let (life, life_err) = start(&["life", "--json", "--port", &port, "--latency"]);
    let mut brackets = Vec::new();
    for delay in [3, 3, 3, 3, 3, 24, 24, 24, 24, 24] {
        rx.send(&tx, b"timed");
        sleep(Duration::from_millis(delay));
        brackets.push(rx.recv(0).1);
        // Answered, as a server would: a send is no wait.
        rx.socket
            .send_to(b"answer", tx.local_addr().unwrap())
            .unwrap();
    }
    drop(rx);
    settle();
    sleep(Duration::from_millis(200));
    let stop = |child: &std::process::Child| {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    };
    for child in [&latency, &top, &life] {
        stop(child);
    }
    let (latency, latency_summary) = finish(latency, latency_err);
    assert_eq!(latency_summary, ["receives 10 in 1 histograms"]);
    let text = String::from_utf8(latency.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], format!("dport = {port}"), "{text}");
    assert_eq!(columns(lines[1]), ["usecs", ":", "count", "distribution"]);
    let mut hist = udptrace::HistRow {
        key: Vec::new(),
        count: 0,
        sum: 0,
        max: 0,
        buckets: [0; udptrace::HIST_BUCKETS],
    };
    for line in lines[2..].iter().take_while(|l| l.contains(" -> ")) {
        let c = columns(line);
        let (lo, n): (u64, u64) = (c[0].parse().unwrap(), c[4].parse().unwrap());
        let bucket = if lo == 0 {
            0
        } else {
            lo.trailing_zeros() as usize + 1
        };
        hist.buckets[bucket] = n;
        hist.count += n;
    }
    let stats = lines
        .iter()
        .find(|l| l.starts_with("count "))
        .expect("the count line");
    let field = |name: &str| -> f64 {
        let c = columns(stats);
        let at = c.iter().position(|w| w == name).unwrap();
        c[at + 1].parse().unwrap()
    };
    assert_eq!(field("count"), 10.0);
    hist.sum = (field("mean") * 1000.0 * 10.0) as u64;
    hist.max = (field("max") * 1000.0) as u64;
    // The text rounds the mean and maximum to 0.1 us: within the brackets
    // once widened by that.
    let widened: Vec<Bracket> = brackets
        .iter()
        .map(|b| Bracket {
            at_least: b.at_least.saturating_sub(100),
            at_most: b.at_most + 100,
        })
        .collect();
    assert_waits_match(&hist, &widened);

    let (top, _) = finish(top, top_err);
    let rows: Vec<Value> = json_lines(&top)
        .into_iter()
        .flat_map(|t| t["rows"].as_array().unwrap().clone())
        .filter(|r| r["dport"].as_u64().map(|p| p.to_string()) == Some(port.clone()))
        .collect();
    assert_eq!(rows.len(), 1, "{rows:?}");
    let p99 = rows[0]["wait_p99_us"].as_u64().expect("a p99 wait");
    let longest = brackets.iter().map(|b| b.at_most).max().unwrap();
    let longest_least = brackets.iter().map(|b| b.at_least).max().unwrap();
    assert!(
        (longest_least / 1000..=longest.div_ceil(1000)).contains(&p99),
        "p99 {p99} us against the longest wait's bracket {longest_least}..{longest} ns"
    );

    let (life, _) = finish(life, life_err);
    let receiver: Vec<Value> = json_lines(&life)
        .into_iter()
        .filter(|l| l["lport"].as_u64().map(|p| p.to_string()) == Some(port.clone()))
        .collect();
    assert_eq!(receiver.len(), 1, "{receiver:?}");
    let r = &receiver[0];
    assert_eq!(r["waits"], 10);
    let us = |ns: u64| ns as f64 / 1000.0;
    let (least, most): (u64, u64) = (
        brackets.iter().map(|b| b.at_least).sum(),
        brackets.iter().map(|b| b.at_most).sum(),
    );
    let mean = r["wait_mean_us"].as_f64().unwrap();
    assert!(
        (us(least) / 10.0 - 0.001..=us(most) / 10.0 + 0.001).contains(&mean),
        "mean {mean} us"
    );
    let max = r["wait_max_us"].as_f64().unwrap();
    assert!(
        (us(longest_least) - 0.001..=us(longest) + 0.001).contains(&max),
        "max {max} us"
    );
}
