//! `udptrace quic` against real QUIC clients and servers (aioquic, from
//! PyPI; ngtcp2's client, from the distribution): the version, connection
//! ids and types of the long-header packets each end sent must be what their
//! own qlog recorded, and the client's first Initial must name the server it
//! asked for, QUIC v1 over IPv4 and v2 over IPv6. Needs root, python3,
//! aioquic and ngtcp2-client (./dev.sh test installs them).

mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::UdpSocket;
use std::process::{Command, Stdio};

use common::*;
use serde_json::Value;

const PEER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/quic_peer.py");
const SNI: &str = "quic.udptrace.test";

/// The long-header packets an end's qlog says it sent, and its pid.
fn qlog_report(text: &str) -> (u32, Vec<(String, String, String)>) {
    let report: Value = serde_json::from_str(text.lines().last().expect("a report")).unwrap();
    let sent = report["sent"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let s = |k: &str| p[k].as_str().unwrap().to_string();
            (s("packet_type"), s("dcid"), s("scid"))
        })
        .collect();
    (report["pid"].as_u64().unwrap() as u32, sent)
}

fn handshake(host: &str, version: &str, expected_version: &str) {
    let port = UdpSocket::bind((host, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (mut server, mut server_out) = aioquic_server(host, port, version);
    let (tracer, stderr) = start(&["quic", "--json", "--port", &port.to_string(), "-d", "60"]);
    let client = Command::new("python3")
        .args([PEER, "client", host, &port.to_string(), version, SNI])
        .output()
        .unwrap();
    assert!(
        client.status.success(),
        "{}",
        String::from_utf8_lossy(&client.stderr)
    );
    // Not QUIC: a long header claiming a 48-byte connection id.
    UdpSocket::bind((host, 0))
        .unwrap()
        .send_to(b"\xc0\x00\x00\x00\x01\x30", (host, port))
        .unwrap();
    drop(server.stdin.take()); // the server reports and exits
    let mut rest = String::new();
    server_out.read_to_string(&mut rest).unwrap();
    server.wait().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    // SAFETY: signalling the child we started.
    unsafe { libc::kill(tracer.id() as i32, libc::SIGINT) };
    let (out, summary) = finish(tracer, stderr);
    assert!(out.status.success(), "{summary:?}");
    let lines = json_lines(&out);

    let (client_pid, client_sent) = qlog_report(&String::from_utf8_lossy(&client.stdout));
    let (server_pid, server_sent) = qlog_report(&rest);
    assert!(
        client_sent.iter().any(|p| p.0 == "handshake"),
        "{client_sent:?}"
    );
    let of = |pid: u32, event: &str| -> Vec<(String, String, String)> {
        lines
            .iter()
            .filter(|l| l["pid"] == pid && l["event"] == event)
            .map(|l| {
                let s = |k: &str| l[k].as_str().unwrap().to_string();
                (s("packet_type"), s("dcid"), s("scid"))
            })
            .collect()
    };
    // Each end's packets as it sent them, and as the other end's socket received them.
    assert_eq!(of(client_pid, "packet-send"), client_sent, "{lines:#?}");
    assert_eq!(of(server_pid, "packet-send"), server_sent, "{lines:#?}");
    assert_eq!(of(server_pid, "packet-recv"), client_sent, "{lines:#?}");
    assert_eq!(of(client_pid, "packet-recv"), server_sent, "{lines:#?}");
    assert_eq!(lines.len(), 2 * (client_sent.len() + server_sent.len()));

    for l in &lines {
        assert_eq!(l["version"], expected_version, "{l}");
        assert_eq!(l["laddr"].as_str().unwrap(), host, "{l}");
    }
    // The client's first Initial names the server; no other packet does.
    let named: Vec<&Value> = lines.iter().filter(|l| !l["sni"].is_null()).collect();
    assert_eq!(named.len(), 2, "sent and received: {lines:#?}");
    for l in named {
        assert_eq!(l["sni"], SNI);
        assert_eq!(l["packet_type"], "initial");
        assert_eq!(
            (l["dcid"].as_str().unwrap(), l["scid"].as_str().unwrap()),
            (client_sent[0].1.as_str(), client_sent[0].2.as_str())
        );
    }
    let last = summary.last().unwrap();
    assert!(
        last.starts_with(&format!("{} long-header packets;", lines.len()))
            && last.ends_with("; not QUIC 2; lost 0"),
        "{summary:?}"
    );
}

/// The aioquic server on `host` for QUIC `version` (1 or 2), once it listens.
fn aioquic_server(
    host: &str,
    port: u16,
    version: &str,
) -> (std::process::Child, BufReader<std::process::ChildStdout>) {
    let mut server = Command::new("python3")
        .args([PEER, "server", host, &port.to_string(), version])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let mut out = BufReader::new(server.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(
        line.trim(),
        "ready",
        "the aioquic server started (is aioquic installed?)"
    );
    (server, out)
}

/// ngtcp2's client (GnuTLS) handshakes with the aioquic server: its Initial
/// names `localhost` (the SNI it sends for an IP address), its first
/// destination connection id is its qlog's group id, and the types of the
/// long-header packets it sent are its qlog's.
#[test]
fn ngtcp2_client_handshake() {
    let port = UdpSocket::bind(("127.0.0.1", 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (mut server, _out) = aioquic_server("127.0.0.1", port, "1");
    let qlog = std::env::temp_dir().join(format!("udptrace-ngtcp2-{}.qlog", std::process::id()));
    let (tracer, stderr) = start(&["quic", "--json", "--port", &port.to_string(), "-d", "60"]);
    let mut client = Command::new("gtlsclient")
        .args(["-q", "--timeout=1s"])
        .arg(format!("--qlog-file={}", qlog.display()))
        .args(["127.0.0.1", &port.to_string()])
        .spawn()
        .expect("gtlsclient (ngtcp2-client) is installed");
    let client_pid = client.id();
    assert!(client.wait().unwrap().success(), "the handshake completed");
    drop(server.stdin.take());
    server.wait().unwrap();
    // SAFETY: signalling the child we started.
    unsafe { libc::kill(tracer.id() as i32, libc::SIGINT) };
    let (out, summary) = finish(tracer, stderr);
    assert!(out.status.success(), "{summary:?}");
    let lines = json_lines(&out);

    // The qlog: JSON text sequences (RFC 7464), a header and then events.
    let text = std::fs::read_to_string(&qlog).unwrap();
    let _ = std::fs::remove_file(&qlog);
    let records: Vec<Value> = text
        .split('\x1e')
        .filter(|r| !r.trim().is_empty())
        .map(|r| serde_json::from_str(r).unwrap())
        .collect();
    let group_id = records[0]["trace"]["common_fields"]["group_id"]
        .as_str()
        .unwrap()
        .to_string();
    let qlog_sent: Vec<String> = records
        .iter()
        .filter(|r| r["name"] == "transport:packet_sent")
        .map(|r| {
            r["data"]["header"]["packet_type"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .filter(|t| t != "1RTT")
        .collect();
    let sent: Vec<&Value> = lines
        .iter()
        .filter(|l| l["pid"] == client_pid && l["event"] == "packet-send")
        .collect();
    let types: Vec<&str> = sent
        .iter()
        .map(|l| l["packet_type"].as_str().unwrap())
        .collect();
    assert_eq!(types, qlog_sent, "{lines:#?}");
    assert_eq!(sent[0]["dcid"], group_id.as_str());
    assert_eq!(sent[0]["sni"], "localhost");
    assert_eq!(sent[0]["version"], "0x00000001");
    assert!(sent[1..].iter().all(|l| l["sni"].is_null()), "{sent:#?}");
}

#[test]
fn aioquic_v1_handshake_over_ipv4() {
    handshake("127.0.0.1", "1", "0x00000001");
}

#[test]
fn aioquic_v2_handshake_over_ipv6() {
    handshake("::1", "2", "0x6b3343cf");
}
