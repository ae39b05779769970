//! A real DNS exchange, `dig` against a local `dnsmasq`, seen by udptrace:
//! both processes, both directions, matching byte counts. Needs root, dig and
//! dnsmasq (./dev.sh test installs them).

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::free_port;
use udptrace::{Event, EventKind, Filter, Tracer};

/// Waits until something answers DNS on the port.
fn wait_for_dns(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let out = Command::new("dig")
            .args([
                "@127.0.0.1",
                "-p",
                &port.to_string(),
                "+short",
                "+tries=1",
                "+time=1",
            ])
            .arg("ready.udptrace.test")
            .output()
            .expect("dig is installed");
        if String::from_utf8_lossy(&out.stdout).contains("192.0.2.1") {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("dnsmasq did not answer on port {port}");
}

#[test]
fn dig_against_dnsmasq() {
    let port = free_port();
    let mut dnsmasq = Command::new("dnsmasq")
        .args([
            "--keep-in-foreground",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
        ])
        .args([
            "--listen-address=127.0.0.1",
            "--conf-file=/dev/null",
            "--pid-file=",
        ])
        .args([
            "--address=/ready.udptrace.test/192.0.2.1",
            "--address=/www.udptrace.test/192.0.2.7",
        ])
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("dnsmasq is installed");
    wait_for_dns(port);

    let mut tracer = Tracer::builder()
        .filter(Filter {
            port: Some(port),
            ..Default::default()
        })
        .start()
        .expect("tracer starts (the tests need root)");
    let dig = Command::new("dig")
        .args([
            "@127.0.0.1",
            "-p",
            &port.to_string(),
            "+short",
            "+tries=1",
            "+time=2",
        ])
        .arg("www.udptrace.test")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let dig_pid = dig.id();
    let answer = dig.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&answer.stdout).trim(), "192.0.2.7");
    tracer.stop();
    let events: Vec<Event> = tracer.by_ref().collect();
    let _ = dnsmasq.kill();
    let _ = dnsmasq.wait();
    assert_eq!(tracer.stats().lost, 0);

    let of = |pid: u32, kind: EventKind| -> Vec<Event> {
        events
            .iter()
            .filter(|e| e.pid == pid && e.kind == kind)
            .cloned()
            .collect()
    };
    let dns_pid = dnsmasq.id();
    let (q_sent, a_recv) = (of(dig_pid, EventKind::Send), of(dig_pid, EventKind::Recv));
    let (q_recv, a_sent) = (of(dns_pid, EventKind::Recv), of(dns_pid, EventKind::Send));
    assert_eq!(
        (q_sent.len(), a_recv.len()),
        (1, 1),
        "dig: one query, one answer: {events:#?}"
    );
    assert_eq!(
        (q_recv.len(), a_sent.len()),
        (1, 1),
        "dnsmasq: one query, one answer: {events:#?}"
    );

    // The two ends agree on every byte and port.
    let dig_port = q_sent[0].local.port();
    assert_eq!(
        q_sent[0].remote,
        format!("127.0.0.1:{port}").parse().unwrap()
    );
    assert_eq!(q_sent[0].bytes(), q_recv[0].bytes());
    assert_eq!(a_sent[0].bytes(), a_recv[0].bytes());
    assert!(q_sent[0].bytes().unwrap() > 12 && a_sent[0].bytes() > q_sent[0].bytes());
    assert_eq!(q_recv[0].local.port(), port);
    assert_eq!(
        q_recv[0].remote,
        format!("127.0.0.1:{dig_port}").parse().unwrap()
    );
    assert_eq!(
        a_sent[0].remote,
        format!("127.0.0.1:{dig_port}").parse().unwrap()
    );
    assert_eq!(a_recv[0].local.port(), dig_port);
    assert_eq!(a_recv[0].remote.port(), port);
    assert_eq!(q_recv[0].comm.to_string(), "dnsmasq");
    assert_eq!(a_recv[0].counters.rx_packets, 1);
    assert_eq!(
        a_recv[0].counters.tx_bytes,
        u64::from(q_sent[0].bytes().unwrap())
    );
}
