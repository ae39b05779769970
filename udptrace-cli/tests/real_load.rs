//! udptrace started in the middle of a real load: `dnsperf` against `dnsmasq`
//! (sendto from one thread, receives from another, a server that receives
//! and answers with addresses). From the `Tracing` line on, every datagram
//! of a second, counted load must be printed or counted as lost. Needs root,
//! dnsperf and dnsmasq (./dev.sh test installs them).

mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::UdpSocket;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use common::*;

fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Held by each test for its whole run: a tracer already attached would
/// hide what a tracer starting alone misses.
static ALONE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Kills the process when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn dnsmasq(port: u16) -> Killed {
    let child = Command::new("dnsmasq")
        .args([
            "--keep-in-foreground",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--listen-address=127.0.0.1",
            "--conf-file=/dev/null",
            "--pid-file=",
            "--address=/load.udptrace.test/192.0.2.9",
        ])
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("dnsmasq is installed");
    wait_for_dns(port);
    Killed(child)
}

/// A query for `load.udptrace.test`, type A.
fn query() -> Vec<u8> {
    let mut q = vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in ["load", "udptrace", "test"] {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

fn wait_for_dns(port: u16) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 512];
    while Instant::now() < deadline {
        s.send_to(&query(), ("127.0.0.1", port)).unwrap();
        if s.recv(&mut buf).is_ok() {
            return;
        }
    }
    panic!("dnsmasq did not answer on port {port}");
}

fn dnsperf(port: u16, queries: &std::path::Path) -> Command {
    let mut cmd = Command::new("dnsperf");
    cmd.args(["-s", "127.0.0.1", "-c", "1", "-Q", "20000", "-d"])
        .arg(queries)
        .args(["-p", &port.to_string()]);
    cmd
}

/// The number after `label` in dnsperf's report, e.g. "Queries sent:".
fn reported(report: &str, label: &str) -> u64 {
    report
        .lines()
        .find_map(|l| l.trim().strip_prefix(label))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {label:?} in {report}"))
}

/// `udptrace ARGS`, once it printed its Tracing line: the child, its stderr
/// (for the summary) and a thread collecting its stdout.
fn start_trace(
    args: &[&str],
) -> (
    Child,
    BufReader<std::process::ChildStderr>,
    std::thread::JoinHandle<String>,
) {
    let mut tracer = Command::new(udptrace_bin())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(tracer.stderr.take().unwrap());
    let mut banner = String::new();
    stderr.read_line(&mut banner).unwrap();
    assert!(banner.starts_with("Tracing"), "{banner}");
    let mut stdout = tracer.stdout.take().unwrap();
    let printed = std::thread::spawn(move || {
        let mut text = String::new();
        stdout.read_to_string(&mut text).unwrap();
        text
    });
    (tracer, stderr, printed)
}

/// Stops the tracer with SIGTERM, as a service manager would: its summary.
fn stop_trace(tracer: &mut Child, stderr: &mut BufReader<std::process::ChildStderr>) -> String {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(tracer.id() as i32, libc::SIGTERM) };
    assert!(tracer.wait().unwrap().success());
    let mut summary = String::new();
    stderr.read_to_string(&mut summary).unwrap();
    summary
}

#[test]
fn dnsperf_started_mid_load_every_datagram_after_the_tracing_line() {
    let _alone = ALONE.lock().unwrap_or_else(|e| e.into_inner());
    let queries = std::env::temp_dir().join(format!("udptrace-queries-{}", std::process::id()));
    std::fs::write(&queries, "load.udptrace.test A\n".repeat(100)).unwrap();
    let (load_port, counted_port) = (free_port(), free_port());
    let _servers = (dnsmasq(load_port), dnsmasq(counted_port));
    // The load that runs before, during and after the tracer's start.
    let _load = Killed(
        dnsperf(load_port, &queries)
            .args(["-l", "60"])
            .stdout(Stdio::null())
            .spawn()
            .expect("dnsperf is installed"),
    );
    std::thread::sleep(Duration::from_millis(500));

    let (mut tracer, mut stderr, printed) =
        start_trace(&["trace", "--json", "--port", &counted_port.to_string()]);

    // From the Tracing line: 100 passes over the 100 queries, counted by dnsperf.
    let counted = dnsperf(counted_port, &queries)
        .args(["-n", "100"])
        .output()
        .unwrap();
    assert!(counted.status.success());
    let report = String::from_utf8_lossy(&counted.stdout);
    let (sent, completed) = (
        reported(&report, "Queries sent:"),
        reported(&report, "Queries completed:"),
    );
    assert_eq!((sent, completed), (10_000, 10_000), "{report}");

    std::thread::sleep(Duration::from_millis(300));
    let summary = stop_trace(&mut tracer, &mut stderr);
    let lost: u64 = summary
        .split("; lost ")
        .nth(1)
        .and_then(|rest| {
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no lost count in {summary}"));

    let events: Vec<Value> = printed
        .join()
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let count = |event: &str, server_side: bool| {
        events
            .iter()
            .filter(|e| e["event"] == event && (e["lport"] == counted_port) == server_side)
            .count() as u64
    };
    let seen = (
        count("send", false),
        count("recv", true),
        count("send", true),
        count("recv", false),
    );
    // The client's queries, the server's receives of them, its answers and
    // the client's receives of those (dnsperf does not ask who sent them;
    // the port filter keeps them by their sender).
    assert_eq!(
        seen.0 + seen.1 + seen.2 + seen.3 + lost,
        2 * sent + 2 * completed,
        "(client sends, server receives, server sends, client receives) {seen:?}, lost {lost}; {report}"
    );
    let client_receives = events
        .iter()
        .filter(|e| e["event"] == "recv" && e["lport"] != counted_port);
    // (The other dnsperf's sockets predate the tracer: where receives'
    // senders are inferred from what is queued, its receives are of unknown
    // sender, counted in the summary.)
    for e in client_receives {
        assert_eq!(
            (&e["raddr"], &e["rport"]),
            (&Value::from("127.0.0.1"), &Value::from(counted_port)),
            "{e}"
        );
    }

    let _ = std::fs::remove_file(queries);
}

/// A load whose sockets predate the tracer: dnsperf does not ask who sent
/// its answers, and datagrams may be queued to its socket as tracing
/// starts. Its receives must have their sender (and so pass a filter on the
/// server's port) once its queue has emptied, but for the few around each
/// fresh start (the receives queued before tracing, the first epoch after
/// the start): at most 1% unknown, where before every one was.
#[test]
fn receives_of_a_socket_older_than_the_tracer_have_their_sender() {
    let _alone = ALONE.lock().unwrap_or_else(|e| e.into_inner());
    const OUTSTANDING: u64 = 100;
    let queries = std::env::temp_dir().join(format!("udptrace-older-{}", std::process::id()));
    std::fs::write(&queries, "load.udptrace.test A\n".repeat(100)).unwrap();
    let port = free_port();
    let _server = dnsmasq(port);
    let load = dnsperf(port, &queries)
        .args(["-l", "3", "-q", &OUTSTANDING.to_string()])
        .stdout(Stdio::null())
        .spawn()
        .expect("dnsperf is installed");
    let mut load = Killed(load);
    std::thread::sleep(Duration::from_millis(500));

    let (mut tracer, mut stderr, printed) =
        start_trace(&["trace", "--json", "-e", "recv", "--port", &port.to_string()]);
    assert!(load.0.wait().unwrap().success());
    std::thread::sleep(Duration::from_millis(300));
    let summary = stop_trace(&mut tracer, &mut stderr);
    let after = |label: &str| -> u64 {
        summary
            .split(label)
            .nth(1)
            .and_then(|rest| {
                rest.split(|c: char| !c.is_ascii_digit())
                    .next()?
                    .parse()
                    .ok()
            })
            .unwrap_or(0)
    };
    let (lost, unknown) = (after("; lost "), after("receives of unknown sender "));
    assert_eq!(lost, 0, "{summary}");

    let events: Vec<Value> = printed
        .join()
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let server_receives = events.iter().filter(|e| e["lport"] == port).count() as u64;
    let client_receives: Vec<&Value> = events.iter().filter(|e| e["lport"] != port).collect();
    for e in &client_receives {
        assert_eq!(
            (&e["raddr"], &e["rport"]),
            (&Value::from("127.0.0.1"), &Value::from(port)),
            "{e}"
        );
    }
    // Every answer to a query the server received while traced reaches the
    // client (dnsperf ran to its end), with its sender but for the 1%.
    let known = client_receives.len() as u64;
    assert!(
        unknown * 100 <= known + unknown,
        "{unknown} of unknown sender: {summary}"
    );
    assert!(
        known * 100 >= server_receives * 99,
        "{known} answers with their sender, {server_receives} queries received: {summary}"
    );
    assert!(server_receives > 1000, "{summary}");
    let _ = std::fs::remove_file(queries);
}
