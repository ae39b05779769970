//! From its `Tracing` line on, `udptrace trace` delivers or counts every
//! event, under a load that starts the moment the line is printed, with the
//! load's own counts as the truth. Its own test binary, so that no other
//! tracer of the suite is attached when it starts: the kernel's hooks go
//! from nothing to attached, as on a user's idle machine. Needs root.

mod common;

use std::net::{Ipv4Addr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;

const SENDERS: usize = 4;
const EACH: u64 = 20_000;

/// `trace --json` on the backend under test (`UDPTRACE_TEST_BACKEND`).
fn trace_args(port: &str) -> Vec<String> {
    let mut args: Vec<String> = ["trace", "--json", "-e", "send,recv", "--port", port]
        .map(String::from)
        .to_vec();
    if let Ok(backend) = std::env::var("UDPTRACE_TEST_BACKEND") {
        args.extend(["--backend".into(), backend]);
    }
    args
}

#[test]
fn a_load_started_at_the_tracing_line_is_traced_whole() {
    let rx = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    rx.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let to = rx.local_addr().unwrap();
    let port = to.port().to_string();
    let args = trace_args(&port);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // Returns as the Tracing line is read: the load starts at once.
    let (mut child, stderr) = start(&args);
    let started = Instant::now();
    // Read as it comes: a full pipe would stall the tracer.
    let mut stdout = child.stdout.take().unwrap();
    let output = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut stdout, &mut bytes).unwrap();
        bytes
    });
    let received = AtomicU64::new(0);
    let sending = AtomicBool::new(true);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut buf = [0u8; 64];
            // Until the senders are done and the queue has stayed empty a while.
            loop {
                match rx.recv(&mut buf) {
                    Ok(_) => {
                        received.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) if !sending.load(Ordering::Relaxed) => break,
                    Err(_) => {}
                }
            }
        });
        let senders: Vec<_> = (0..SENDERS)
            .map(|_| {
                s.spawn(move || {
                    let tx = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
                    for i in 0..EACH {
                        tx.send_to(&[0u8; 48][..1 + (i % 48) as usize], to).unwrap();
                    }
                })
            })
            .collect();
        for sender in senders {
            sender.join().unwrap();
        }
        settle();
        sending.store(false, Ordering::Relaxed);
    });
    let loaded_for = started.elapsed();
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let (mut out, summary) = finish(child, stderr);
    assert!(out.status.success(), "{summary:?}");
    out.stdout = output.join().unwrap();
    let events = json_lines(&out);
    let of = |kind: &str| events.iter().filter(|e| e["event"] == kind).count() as u64;
    let after = |label: &str| -> u64 {
        summary
            .iter()
            .find_map(|l| l.split(label).nth(1))
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    assert!(summary.iter().any(|l| l.contains("; lost ")), "{summary:?}");
    let lost = after("; lost ");
    // Runs of a hook the kernel skipped (a task preempted in it) may each be an event.
    let skipped = after("; hook runs the kernel skipped ");
    let sent = SENDERS as u64 * EACH;
    let received = received.load(Ordering::Relaxed);
    // Loopback drops what the receiver has no room for: the kernel's count, not ours.
    assert!(received > 0 && received <= sent);
    let (traced, truth) = (of("send") + of("recv") + lost, sent + received);
    assert!(
        traced <= truth && truth <= traced + skipped,
        "sends {} of {sent}, receives {} of {received}, lost {lost}, skipped {skipped}, load ran {loaded_for:?}",
        of("send"),
        of("recv"),
    );
}
