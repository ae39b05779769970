//! `udptrace dns` against real DNS software: `dig` asking a local `dnsmasq`
//! (answers, NXDOMAIN, REFUSED, a truncated answer, a forwarder pointed at a
//! silent port), IPv4 and IPv6, plus a connected client of this test's and
//! garbage on the port. Every transaction's id, name, type, response code and
//! answer count must be what dig printed. Needs root, dig and dnsmasq.

mod common;

use std::net::{Ipv4Addr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;

struct Dnsmasq(Child);

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// dnsmasq on `port` (IPv4 and IPv6 loopback): www.udptrace.test is
/// 192.0.2.7, big.udptrace.test has 40 addresses (more than 512 bytes),
/// other udptrace.test names do not exist, slow.test goes to `silent`,
/// which never answers, and anything else is refused.
fn dnsmasq(port: u16, silent: u16) -> Dnsmasq {
    let mut cmd = Command::new("dnsmasq");
    cmd.args(["--keep-in-foreground", "--no-resolv", "--no-hosts"])
        .args(["--bind-interfaces", "--listen-address=127.0.0.1,::1"])
        .args(["--conf-file=/dev/null", "--pid-file="])
        .args([
            "--address=/www.udptrace.test/192.0.2.7",
            "--local=/udptrace.test/",
        ])
        .arg(format!("--server=/slow.test/127.0.0.1#{silent}"))
        .arg(format!("--port={port}"));
    for i in 1..=40 {
        cmd.arg(format!("--host-record=big.udptrace.test,192.0.2.{i}"));
    }
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("dnsmasq is installed");
    let server = Dnsmasq(child);
    for _ in 0..100 {
        if dig(port, "127.0.0.1", "www.udptrace.test", "A", &[])
            .status
            .is_some()
        {
            return server;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("dnsmasq did not answer on port {port}");
}

/// What dig printed of its answer: status (None if it got none), id, answers, flags.
struct DigAnswer {
    status: Option<String>,
    id: Option<u16>,
    answers: Option<u64>,
    truncated: bool,
}

fn dig(port: u16, server: &str, name: &str, qtype: &str, extra: &[&str]) -> DigAnswer {
    let out = Command::new("dig")
        .arg(format!("@{server}"))
        .args(["-p", &port.to_string(), name, qtype, "+tries=1", "+time=1"])
        .args(extra)
        .output()
        .expect("dig is installed");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut answer = DigAnswer {
        status: None,
        id: None,
        answers: None,
        truncated: false,
    };
    for line in text.lines() {
        // ;; ->>HEADER<<- opcode: QUERY, status: NOERROR, id: 7218
        if let Some(rest) = line.strip_prefix(";; ->>HEADER<<- ") {
            for field in rest.split(", ") {
                if let Some(s) = field.strip_prefix("status: ") {
                    answer.status = Some(s.to_string());
                }
                if let Some(id) = field.strip_prefix("id: ") {
                    answer.id = id.parse().ok();
                }
            }
        }
        // ;; flags: qr aa tc rd ra; QUERY: 1, ANSWER: 29, AUTHORITY: 0, ADDITIONAL: 0
        if let Some(rest) = line.strip_prefix(";; flags: ") {
            let (flags, counts) = rest.split_once(';').unwrap();
            answer.truncated = flags.split_whitespace().any(|f| f == "tc");
            let n = counts.split("ANSWER: ").nth(1).unwrap();
            answer.answers = n.split(',').next().unwrap().parse().ok();
        }
    }
    answer
}

fn free_udp_port() -> u16 {
    UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A query for `name` (type A, id `id`), by hand.
fn query(id: u16, name: &str) -> Vec<u8> {
    let mut m = id.to_be_bytes().to_vec();
    m.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        m.push(label.len() as u8);
        m.extend_from_slice(label.as_bytes());
    }
    m.extend_from_slice(&[0, 0, 1, 0, 1]);
    m
}

/// The JSON transactions of one query id, by role.
fn of_id(lines: &[Value], id: u16, role: &str) -> Vec<Value> {
    lines
        .iter()
        .filter(|l| l["id"] == id && l["role"] == role)
        .cloned()
        .collect()
}

#[test]
fn transactions_match_what_dig_printed() {
    let port = free_udp_port();
    let silent = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let server = dnsmasq(port, silent.local_addr().unwrap().port());
    let dnsmasq_pid = server.0.id();
    let (tracer, stderr) = start(&[
        "dns",
        "--json",
        "--port",
        &port.to_string(),
        "--timeout",
        "1",
        "-d",
        "60",
    ]);

    // (server, name, type, dig options, expected status)
    let asked = [
        ("127.0.0.1", "www.udptrace.test", "A", vec![], "NOERROR"),
        ("::1", "www.udptrace.test", "A", vec![], "NOERROR"),
        ("::1", "nope.udptrace.test", "AAAA", vec![], "NXDOMAIN"),
        ("127.0.0.1", "elsewhere.example", "MX", vec![], "REFUSED"),
        (
            "127.0.0.1",
            "big.udptrace.test",
            "A",
            vec!["+noedns", "+ignore"],
            "NOERROR",
        ),
    ];
    let mut answers = Vec::new();
    for (addr, name, qtype, extra, status) in &asked {
        let a = dig(port, addr, name, qtype, extra);
        assert_eq!(a.status.as_deref(), Some(*status), "{name} {qtype}");
        answers.push(a);
    }
    // Unanswered: dnsmasq forwards to a port that never answers.
    let lost = dig(port, "127.0.0.1", "x.slow.test", "A", &[]);
    assert_eq!(lost.status, None, "dig got no answer");
    // A connected client of our own, and garbage on the port.
    set_comm("dns-test");
    let client = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    client.connect((Ipv4Addr::LOCALHOST, port)).unwrap();
    client.send(&query(4242, "www.udptrace.test")).unwrap();
    client.recv(&mut [0u8; 512]).unwrap();
    client.send(b"garbage").unwrap();
    // A query sent twice, never answered: one transaction, with a retry.
    let retrier = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    for _ in 0..2 {
        retrier
            .send_to(&query(777, "y.slow.test"), (Ipv4Addr::LOCALHOST, port))
            .unwrap();
    }
    // The timeout (1 s) passes for the unanswered queries.
    std::thread::sleep(Duration::from_millis(2500));
    // One still waiting when tracing ends.
    retrier
        .send_to(&query(778, "z.slow.test"), (Ipv4Addr::LOCALHOST, port))
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    // SAFETY: signalling the child we started.
    unsafe { libc::kill(tracer.id() as i32, libc::SIGINT) };
    let (out, summary) = finish(tracer, stderr);
    assert!(out.status.success(), "{summary:?}");
    let lines = json_lines(&out);

    for ((addr, name, qtype, _, status), dig) in asked.iter().zip(&answers) {
        let id = dig.id.expect("dig printed the id");
        let clients = of_id(&lines, id, "client");
        assert_eq!(clients.len(), 1, "{name}: {lines:#?}");
        let c = &clients[0];
        assert_eq!(c["name"], format!("{name}."));
        assert_eq!(c["qtype"], *qtype);
        assert_eq!(c["rcode"], *status);
        assert_eq!(c["answers"], dig.answers.unwrap());
        assert_eq!(c["truncated"], dig.truncated);
        assert_eq!(c["timeout"], false);
        assert!(c["latency_us"].as_f64().unwrap() > 0.0, "{c}");
        assert_eq!(c["raddr"], *addr);
        assert_eq!(c["rport"], port);
        // dnsmasq's side of the same transaction.
        let servers = of_id(&lines, id, "server");
        assert_eq!(servers.len(), 1, "{name}: {lines:#?}");
        let s = &servers[0];
        assert_eq!(s["pid"], dnsmasq_pid);
        assert_eq!(s["comm"], "dnsmasq");
        assert_eq!((&s["laddr"], &s["lport"]), (&c["raddr"], &c["rport"]));
        assert_eq!((&s["raddr"], &s["rport"]), (&c["laddr"], &c["lport"]));
        assert_eq!((&s["rcode"], &s["answers"]), (&c["rcode"], &c["answers"]));
        // The server answered before the client had its answer.
        assert!(
            s["latency_us"].as_f64() < c["latency_us"].as_f64(),
            "{s} {c}"
        );
    }
    assert!(answers[4].truncated, "dig saw TC");

    let timeouts: Vec<&Value> = lines.iter().filter(|l| l["timeout"] == true).collect();
    assert_eq!(timeouts.len(), 4, "dig's, ours and dnsmasq's: {lines:#?}");
    for t in &timeouts {
        assert!(
            t["name"] == "x.slow.test." || t["name"] == "y.slow.test.",
            "{t}"
        );
        assert_eq!(
            (&t["rcode"], &t["latency_us"]),
            (&Value::Null, &Value::Null)
        );
    }
    // The retried query: once on each side, with its retry; and the one
    // still waiting at the end.
    for role in ["client", "server"] {
        let retried = of_id(&lines, 777, role);
        assert_eq!(retried.len(), 1, "{role}: {lines:#?}");
        assert_eq!(retried[0]["retransmits"], 1, "{role}");
        assert_eq!(retried[0]["timeout"], true, "{role}");
        let waiting = of_id(&lines, 778, role);
        assert_eq!(waiting.len(), 1, "{role}: {lines:#?}");
        assert_eq!(waiting[0]["name"], "z.slow.test.");
        assert_eq!(waiting[0]["timeout"], false, "{role}");
        assert_eq!(waiting[0]["rcode"], Value::Null, "{role}");
    }

    let mine = of_id(&lines, 4242, "client");
    assert_eq!(mine.len(), 1, "{lines:#?}");
    assert_eq!(mine[0]["pid"], std::process::id());
    assert_eq!(mine[0]["comm"], "dns-test");
    assert_eq!(
        (&mine[0]["rcode"], &mine[0]["answers"]),
        (&Value::from("NOERROR"), &Value::from(1))
    );

    // 6 dig queries and 3 of ours, each a client's and a server's transaction.
    let last = summary.last().unwrap();
    assert!(
        last.starts_with(
            "18 queries (answered 12, timed out 4, still waiting at the end 2); not DNS 2; lost 0"
        ),
        "{summary:?}"
    );
}

/// Under a real load, `dnsperf` against dnsmasq: every query dnsperf says
/// completed is one answered transaction on each side, none timed out, and
/// nothing is lost.
#[test]
fn every_query_of_a_dnsperf_load_is_one_transaction_each_side() {
    let port = free_udp_port();
    let silent = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let _server = dnsmasq(port, silent.local_addr().unwrap().port());
    let queries = std::env::temp_dir().join(format!("udptrace-dns-queries-{}", std::process::id()));
    let names = ["www.udptrace.test A\n", "nope.udptrace.test AAAA\n"].concat();
    std::fs::write(&queries, names.repeat(50)).unwrap();
    let (mut tracer, stderr) = start(&["dns", "--json", "--port", &port.to_string(), "-d", "60"]);
    // Thousands of lines: read as they come, or the pipe fills and stops it.
    let mut stdout = tracer.stdout.take().unwrap();
    let printed = std::thread::spawn(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut text).unwrap();
        text
    });
    let perf = Command::new("dnsperf")
        .args([
            "-s",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-c",
            "1",
            "-Q",
            "20000",
        ])
        .args(["-n", "20", "-d"])
        .arg(&queries)
        .output()
        .expect("dnsperf is installed");
    let _ = std::fs::remove_file(&queries);
    assert!(perf.status.success());
    let report = String::from_utf8_lossy(&perf.stdout);
    let completed = report
        .lines()
        .find_map(|l| l.trim().strip_prefix("Queries completed:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse::<usize>().ok())
        .unwrap_or_else(|| panic!("{report}"));
    assert_eq!(completed, 2000, "{report}");
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: signalling the child we started.
    unsafe { libc::kill(tracer.id() as i32, libc::SIGINT) };
    let (out, summary) = finish(tracer, stderr);
    assert!(out.status.success(), "{summary:?}");
    let lines: Vec<Value> = printed
        .join()
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for role in ["client", "server"] {
        let answered: Vec<&Value> = lines
            .iter()
            .filter(|l| l["role"] == role && l["timeout"] == false && !l["rcode"].is_null())
            .collect();
        assert_eq!(answered.len(), completed, "{role}: {summary:?}");
        let nx = answered.iter().filter(|l| l["rcode"] == "NXDOMAIN").count();
        assert_eq!(nx, completed / 2, "{role}");
    }
    assert_eq!(lines.len(), 2 * completed, "{summary:?}");
    assert!(
        summary.last().unwrap().ends_with("not DNS 0; lost 0"),
        "{summary:?}"
    );
}

/// A query for the name of these labels (type A, id `id`), any bytes in them.
fn query_of_labels(id: u16, labels: &[&[u8]]) -> Vec<u8> {
    let mut m = id.to_be_bytes().to_vec();
    m.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in labels {
        m.push(label.len() as u8);
        m.extend_from_slice(label);
    }
    m.extend_from_slice(&[0, 0, 1, 0, 1]);
    m
}

/// `udptrace dns ARGS` on `port` while a query for a name holding a
/// newline, a dot inside a label and a backslash is sent there: its
/// standard output.
fn trace_hostile_name(port: u16, args: &[&str]) -> String {
    let server = UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).unwrap();
    let port_arg = port.to_string();
    let mut argv = vec!["dns", "--port", &port_arg, "-d", "1.5"];
    argv.extend_from_slice(args);
    let (tracer, stderr) = start(&argv);
    let client = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let query = query_of_labels(7, &[b"a\nb", b"x.y", b"back\\slash"]);
    client
        .send_to(&query, server.local_addr().unwrap())
        .unwrap();
    let (out, summary) = finish(tracer, stderr);
    assert!(out.status.success(), "{summary:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// Names are printed as dig prints them, escaped once: a newline as
/// `\010`, a dot inside a label as `\.`, a backslash as `\\`; JSON holds
/// that same text.
#[test]
fn names_are_escaped_once_as_dig_escapes_them() {
    const NAME: &str = r"a\010b.x\.y.back\\slash.";
    let text = trace_hostile_name(free_udp_port(), &[]);
    let lines: Vec<&str> = text.lines().filter(|l| l.contains(" 7 A ")).collect();
    assert_eq!(lines.len(), 2, "the client's and the server's: {text}");
    for line in lines {
        assert_eq!(line.split_whitespace().nth(7), Some(NAME), "{line}");
    }
    let json = trace_hostile_name(free_udp_port(), &["--json"]);
    let names: Vec<Value> = json
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["name"].clone())
        .collect();
    assert_eq!(names, [NAME, NAME], "{json}");
}
