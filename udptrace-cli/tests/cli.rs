//! Runs the `udptrace` binary against real traffic and checks what a user sees.
//! Needs root, like the tracer.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::{Ipv4Addr, UdpSocket};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use serde_json::Value;

#[test]
fn json_duration_reports_a_known_workload() {
    let rx = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let rport = rx.local_addr().unwrap().port();
    let port_arg = rport.to_string();
    let (child, stderr) = start(&["trace", "--json", "--duration", "2", "--port", &port_arg]);

    let tx = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let sport = tx.local_addr().unwrap().port();
    for len in [11, 22] {
        tx.send_to(&vec![0u8; len], rx.local_addr().unwrap())
            .unwrap();
    }
    let mut buf = [0u8; 64];
    for _ in 0..2 {
        rx.recv_from(&mut buf).unwrap();
    }
    drop(tx);

    let (out, summary) = finish(child, stderr);
    assert!(out.status.success());
    let events = json_lines(&out);
    let brief: Vec<(String, u64, u64, Value)> = events
        .iter()
        .map(|e| {
            (
                e["event"].as_str().unwrap().to_owned(),
                e["lport"].as_u64().unwrap(),
                e["rport"].as_u64().unwrap(),
                e["bytes"].clone(),
            )
        })
        .collect();
    let n = |v: u64| Value::from(v);
    assert_eq!(
        brief,
        vec![
            ("send".into(), sport as u64, rport as u64, n(11)),
            ("send".into(), sport as u64, rport as u64, n(22)),
            ("recv".into(), rport as u64, sport as u64, n(11)),
            ("recv".into(), rport as u64, sport as u64, n(22)),
        ],
        "the tx socket's close has remote port 0, so --port {rport} leaves it out"
    );
    let last = &events[3];
    for key in [
        "ts",
        "event",
        "pid",
        "tid",
        "uid",
        "comm",
        "cgroup",
        "sock",
        "family",
        "laddr",
        "lport",
        "raddr",
        "rport",
        "bytes",
        "rx_bytes",
        "tx_bytes",
        "rx_packets",
        "tx_packets",
    ] {
        assert!(last.get(key).is_some(), "missing {key} in {last}");
    }
    assert_eq!(last["pid"], Value::from(std::process::id()));
    assert_eq!(last["family"], 4);
    assert_eq!(last["laddr"], "127.0.0.1");
    assert_eq!(
        (last["rx_bytes"].as_u64(), last["rx_packets"].as_u64()),
        (Some(33), Some(2))
    );
    let summary = summary.join("\n");
    assert!(
        summary.contains("4 events (send 2, recv 2, connect 0, close 0); lost 0"),
        "{summary}"
    );
}

#[test]
fn text_columns_and_sigterm_stop() {
    let rx = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port_arg = rx.local_addr().unwrap().port().to_string();
    let (child, stderr) = start(&["--port", &port_arg, "--events", "send"]);
    let tx = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    tx.send_to(b"hello", rx.local_addr().unwrap()).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let (out, summary) = finish(child, stderr);
    assert!(out.status.success(), "SIGTERM is a clean stop");
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        ["TIME", "PID", "COMM", "EVENT", "LOCAL", "REMOTE", "BYTES"]
    );
    let cols: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(cols[1], std::process::id().to_string());
    assert_eq!(cols[3], "send");
    assert_eq!(cols[4], tx.local_addr().unwrap().to_string());
    assert_eq!(cols[5], rx.local_addr().unwrap().to_string());
    assert_eq!(cols[6], "5");
    assert!(
        summary
            .iter()
            .any(|l| l.contains("send 1") && l.contains("lost 0")),
        "{summary:?}"
    );
}

/// A one-line error and a non-zero exit, never a panic.
fn assert_clean_failure(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains(needle), "{stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("libbpf:"),
        "{stderr}"
    );
    let first = stderr.lines().next().unwrap_or_default();
    assert!(first.contains("error"), "{stderr}");
}

#[test]
fn bad_input_is_one_clear_line() {
    let run = |args: &[&str]| Command::new(udptrace_bin()).args(args).output().unwrap();
    assert_clean_failure(&run(&["--addr", "not-an-ip"]), "not an IP address or CIDR");
    assert_clean_failure(&run(&["--port", "70000"]), "--port");
    assert_clean_failure(&run(&["--duration", "0"]), "positive number of seconds");
    assert_clean_failure(&run(&["--comm", "a-name-longer-than-15"]), "1 to 15 bytes");
    assert_clean_failure(&run(&["--events", "sned"]), "unknown event kind");
    assert_clean_failure(&run(&["--backend", "magic"]), "unknown backend");
    assert_clean_failure(&run(&["-4", "-6"]), "cannot be used with");
    assert_clean_failure(&run(&["--port", "0", "-d", "1"]), "port must be 1 to 65535");
    assert_clean_failure(&run(&["count"]), "--by");
    assert_clean_failure(&run(&["count", "--by", "dprot"]), "unknown count key");
    assert_clean_failure(&run(&["count", "--by", "dport,dport", "-d", "1"]), "twice");
    assert_clean_failure(&run(&["count", "--by", "pid", "-i", "0"]), "positive");
    assert_clean_failure(
        &run(&["trace", "--packets", "-e", "send"]),
        "cannot be used with",
    );
    assert_clean_failure(&run(&["--netns", "net"]), "expected an inode number");
    assert_clean_failure(&run(&["--netns", "/no/such/ns"]), "No such file");
    assert_clean_failure(&run(&["--netns", "0", "-d", "1"]), "above 0");
    assert_clean_failure(&run(&["--container", "xyz", "-d", "1"]), "hex digits");
    assert_clean_failure(
        &run(&["--container", "abc", "--cgroup", "/", "-d", "1"]),
        "cannot be used with",
    );
    assert_clean_failure(
        &run(&["--cgroup", "/no-such-cgroup", "-d", "1"]),
        "invalid filter: no cgroup",
    );
    assert_clean_failure(&run(&["trace", "--snaplen", "65536"]), "0 to 65535");
    assert_clean_failure(
        &run(&["trace", "--snaplen", "64", "-d", "1"]),
        "--snaplen captures the payload of packet events",
    );
    assert_clean_failure(
        &run(&["trace", "-w", "/dev/null", "-e", "send", "-d", "1"]),
        "send is not one",
    );
    assert_clean_failure(
        &run(&["trace", "-w", "/no/such/dir/x.pcapng", "-d", "1"]),
        "cannot create /no/such/dir/x.pcapng",
    );
    assert_clean_failure(&run(&["trace", "-w", "-", "--json"]), "cannot be used with");
    assert_clean_failure(&run(&["trace", "--no-drops"]), "--write");
    assert_clean_failure(
        &run(&["dns", "--timeout", "0"]),
        "positive number of seconds",
    );
    assert_clean_failure(&run(&["dns", "--port", "0"]), "port must be 1 to 65535");
    assert_clean_failure(&run(&["dns", "--snaplen", "9"]), "unexpected argument");
    assert_clean_failure(&run(&["quic", "--snaplen", "70000"]), "0 to 65535");
    assert_clean_failure(&run(&["quic", "--snaplen", "0"]), "at least 64 bytes");
    assert_clean_failure(&run(&["quic", "--port", "x"]), "port must be 1 to 65535");
    assert_clean_failure(
        &run(&["trace", "--ring-buffer-size", "3000"]),
        "power of two",
    );
    assert_clean_failure(
        &run(&[
            "trace",
            "--packets",
            "--snaplen",
            "65535",
            "--ring-buffer-size",
            "64K",
            "-d",
            "1",
        ]),
        "at least two records",
    );
}

/// DTrace's udp provider script, `udptrace trace --packets`: one line per
/// datagram, `->` for sends and `<-` for receives, BYTES being udp_length.
#[test]
fn packets_print_the_dtrace_script_lines() {
    let port = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let port_arg = port.to_string();
    let (child, stderr) = start(&["trace", "--packets", "--port", &port_arg, "-d", "1.5"]);
    // Created while tracing: its received datagrams are attributed to its creator.
    let rx = UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).unwrap();
    let tx = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    tx.send_to(b"hello", rx.local_addr().unwrap()).unwrap();
    let mut buf = [0u8; 16];
    rx.recv(&mut buf).unwrap();
    let (out, summary) = finish(child, stderr);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines[0],
        ["DELTA(us)", "SOURCE", "DEST", "BYTES", "PID", "COMM"],
        "{text}"
    );
    let (tx_addr, rx_addr) = (
        tx.local_addr().unwrap().to_string(),
        rx.local_addr().unwrap().to_string(),
    );
    let pid = std::process::id().to_string();
    assert_eq!(lines.len(), 3, "{text}");
    assert_eq!(
        lines[1][1..6],
        [&tx_addr, "->", &rx_addr, "13", &pid][..],
        "{text}"
    );
    assert_eq!(
        lines[2][1..6],
        [&rx_addr, "<-", &tx_addr, "13", &pid][..],
        "{text}"
    );
    assert!(lines[2][0].parse::<u64>().is_ok(), "DELTA(us) is a number");
    assert!(
        summary
            .iter()
            .any(|l| l.contains("packet-send 1, packet-recv 1); lost 0")),
        "{summary:?}"
    );
}

/// DTrace's first script, `@[args[4]->udp_dport] = count()` on udp:::send:
/// `udptrace count --by dport -e packet-send`.
#[test]
fn count_by_dport_prints_a_sorted_table() {
    let tx = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let a = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let b = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port_arg = tx.local_addr().unwrap().port().to_string();
    let run = |extra: &[&str]| {
        let mut args = vec![
            "count",
            "--by",
            "dport",
            "-e",
            "packet-send",
            "--port",
            &port_arg,
        ];
        args.extend(extra);
        let (child, stderr) = start(&args);
        for (dst, n) in [(&a, 2), (&b, 4)] {
            for _ in 0..n {
                tx.send_to(&[0u8; 32], dst.local_addr().unwrap()).unwrap();
            }
        }
        finish(child, stderr)
    };
    let port = |s: &UdpSocket| s.local_addr().unwrap().port().to_string();

    let (out, summary) = run(&["-d", "1"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    let (pa, pb) = (port(&a), port(&b));
    assert_eq!(
        rows,
        vec![
            vec!["DPORT", "EVENTS", "BYTES"],
            vec![pb.as_str(), "4", "128"],
            vec![pa.as_str(), "2", "64"],
        ],
        "{text}"
    );
    assert!(
        summary.iter().any(|l| l == "counted 6 events in 2 rows"),
        "{summary:?}"
    );

    let (out, _) = run(&["-d", "1", "--json", "--top", "1"]);
    let tables = json_lines(&out);
    assert_eq!(tables.len(), 1);
    assert_eq!(
        tables[0]["rows"],
        serde_json::json!([{ "dport": port(&b).parse::<u16>().unwrap(), "events": 4, "bytes": 128 }])
    );
}

/// `udptrace drops`: a datagram to a port nobody listens on.
#[test]
fn drops_show_the_reason() {
    let closed = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let closed_addr = closed.local_addr().unwrap();
    drop(closed);
    let port_arg = closed_addr.port().to_string();
    let (child, stderr) = start(&["drops", "--json", "--port", &port_arg, "-d", "1"]);
    let tx = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    tx.send_to(b"anyone?", closed_addr).unwrap();
    let (out, summary) = finish(child, stderr);
    assert!(out.status.success());
    let drops = json_lines(&out);
    assert_eq!(drops.len(), 1, "{drops:?}");
    let d = &drops[0];
    assert_eq!(d["event"], "drop");
    assert_eq!(d["reason"], "NO_SOCKET");
    assert_eq!(d["saddr"], "127.0.0.1");
    assert_eq!(d["sport"], tx.local_addr().unwrap().port());
    assert_eq!(d["dport"], closed_addr.port());
    assert_eq!(
        (d["ip_ver"].as_u64(), d["udp_length"].as_u64()),
        (Some(4), Some(15))
    );
    assert_eq!(d["bytes"], 7);
    assert!(
        summary.iter().any(|l| l == "1 events (drop 1); lost 0"),
        "{summary:?}"
    );
}

/// A copy of the binary that an unprivileged user can execute.
/// `tag` keeps tests that run at once apart.
fn world_executable_copy(tag: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("udptrace-cli-test-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.join("udptrace");
    std::fs::copy(udptrace_bin(), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

fn as_nobody(bin: &std::path::Path, caps: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(format!("--inh-caps={caps}"));
    if caps != "-all" {
        cmd.arg(format!("--ambient-caps={caps}"));
    }
    cmd.arg(bin).args(args);
    cmd
}

#[test]
fn privileges_unprivileged_fails_clearly_and_three_caps_suffice() {
    let bin = world_executable_copy("three-caps");
    let out = as_nobody(&bin, "-all", &["-d", "1"]).output().unwrap();
    assert_clean_failure(&out, "missing CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN");
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);

    // Not root, only CAP_BPF + CAP_PERFMON + CAP_NET_ADMIN: it traces.
    let caps = "+bpf,+perfmon,+net_admin";
    let rx = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port_arg = rx.local_addr().unwrap().port().to_string();
    let (child, stderr) = start_cmd(&mut as_nobody(
        &bin,
        caps,
        &["--json", "-d", "1.5", "--port", &port_arg],
    ));
    let tx = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    tx.send_to(b"capable", rx.local_addr().unwrap()).unwrap();
    let (out, _) = finish(child, stderr);
    assert!(out.status.success());
    let events = json_lines(&out);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        (events[0]["event"].as_str(), events[0]["bytes"].as_u64()),
        (Some("send"), Some(7))
    );
    let _ = std::fs::remove_dir_all(bin.parent().unwrap());
}

/// With those three capabilities alone (no CAP_SYS_ADMIN to enter other
/// namespaces), a socket that existed before tracing still gets its owner.
#[test]
fn privileges_three_caps_find_the_owners_of_existing_sockets() {
    let bin = world_executable_copy("three-caps-owners");
    let rx = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port_arg = rx.local_addr().unwrap().port().to_string();
    let (child, stderr) = start_cmd(&mut as_nobody(
        &bin,
        "+bpf,+perfmon,+net_admin",
        &["--packets", "--json", "-d", "1.5", "--port", &port_arg],
    ));
    let tx = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    tx.send_to(b"owned", rx.local_addr().unwrap()).unwrap();
    let (out, _) = finish(child, stderr);
    assert!(out.status.success());
    let events = json_lines(&out);
    let recv: Vec<_> = events
        .iter()
        .filter(|e| e["event"] == "packet-recv")
        .collect();
    assert_eq!(recv.len(), 1, "{events:?}");
    assert_eq!(
        recv[0]["pid"].as_u64(),
        Some(std::process::id() as u64),
        "{recv:?}"
    );
    let _ = std::fs::remove_dir_all(bin.parent().unwrap());
}

/// `bpf(BPF_{PROG,LINK}_GET_FD_BY_ID)`: whether the kernel still has this object.
fn bpf_object_exists(cmd: u32, id: u32) -> bool {
    let fd = bpf_id_command(cmd, &mut [id, 0, 0]);
    if fd >= 0 {
        // SAFETY: closing the fd we were just given.
        unsafe { libc::close(fd as i32) };
    }
    fd >= 0
}

const BPF_PROG_GET_FD_BY_ID: u32 = 13;
const BPF_LINK_GET_FD_BY_ID: u32 = 30;

/// The `key:` values of a process's fdinfo files (e.g. `link_id`, `prog_id`).
fn fdinfo_ids(pid: u32, key: &str) -> Vec<u32> {
    let mut ids: Vec<u32> = std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .flat_map(|text| {
            text.lines()
                .filter_map(|l| l.strip_prefix(key)?.trim().parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

#[test]
fn sigkill_leaves_nothing_attached() {
    let (mut child, _stderr, banner) = spawn_tracer(
        Command::new(udptrace_bin())
            .args(["--port", "9"])
            .stdout(Stdio::piped()),
    );
    let pid = child.id();
    let links = fdinfo_ids(pid, "link_id:");
    let progs = fdinfo_ids(pid, "prog_id:");
    // How many probes depends on the backend the kernel allows.
    assert_eq!(
        links.len(),
        probe_count(&banner),
        "one link per probe: {links:?}, {banner}"
    );
    assert!(links
        .iter()
        .all(|&id| bpf_object_exists(BPF_LINK_GET_FD_BY_ID, id)));
    child.kill().unwrap(); // SIGKILL: no destructor runs
    child.wait().unwrap();
    // The kernel frees links and programs with their last fd, asynchronously.
    let gone = |cmd, ids: &[u32]| ids.iter().all(|&id| !bpf_object_exists(cmd, id));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !(gone(BPF_LINK_GET_FD_BY_ID, &links) && gone(BPF_PROG_GET_FD_BY_ID, &progs)) {
        assert!(
            std::time::Instant::now() < deadline,
            "links or programs outlived the tracer"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn doctor_reports_the_backend_auto_picks() {
    let out = Command::new(udptrace_bin()).arg("doctor").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("BTF:          yes"), "{text}");
    assert!(text.contains("privileges:   ok"), "{text}");
    // auto picks the first backend, in auto's order, that attached.
    let first_ok = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("backend ")?
                .split_once(" ok,")
                .map(|(b, _)| b.trim())
        })
        .expect("some backend attaches here");
    assert!(
        text.contains(&format!("auto picks:   {first_ok}\n")),
        "{text}"
    );
    assert!(text.contains("    cgroup/sock_release"), "{text}");
    // Every mode that loads other programs starts too.
    for mode in [
        "trace --packets --snaplen 64",
        "drops",
        "count --by dport",
        "top",
        "serve",
        "life",
        "rcvbuf",
    ] {
        let line = format!("mode {mode:<29} ok, ");
        assert!(text.lines().any(|l| l.starts_with(&line)), "{text}");
    }
    // And the tracer agrees.
    let out = Command::new(udptrace_bin())
        .args(["-d", "0.2"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("with the {first_ok} backend")),
        "{stderr}"
    );
}

/// The number after `prefix` in `line` (e.g. "lost " in a summary).
fn number_after(line: &str, prefix: &str) -> Option<u64> {
    let rest = &line[line.find(prefix)? + prefix.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// A full disk is not a closed pipe: the run fails, says why in one line,
/// and the summary counts the events that were delivered but not written.
#[test]
fn write_error_fails_and_counts_what_was_not_written() {
    let fs = SmallFs::mount("8k");
    let rx = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port_arg = rx.local_addr().unwrap().port().to_string();
    let (child, stderr, _) = spawn_tracer(
        Command::new(udptrace_bin())
            .args([
                "trace", "--json", "-e", "send", "--port", &port_arg, "-d", "3",
            ])
            .stdout(fs.file("out.json")),
    );
    let tx = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    for _ in 0..200 {
        tx.send_to(b"fill", rx.local_addr().unwrap()).unwrap();
    }
    let (out, stderr) = finish_to_file(child, stderr);
    assert_eq!(out.code(), Some(1), "{stderr:?}");
    let last = stderr.last().unwrap();
    assert_eq!(
        last, "udptrace: error: writing the output: No space left on device (os error 28)",
        "{stderr:?}"
    );
    let summary = &stderr[stderr.len() - 2];
    let delivered: u64 = summary.split_whitespace().next().unwrap().parse().unwrap();
    let not_written = number_after(summary, "not written ").expect(summary);
    let text = fs.read("out.json");
    let complete: Vec<&str> = text
        .split_inclusive('\n')
        .filter(|l| l.ends_with('\n'))
        .collect();
    for line in &complete {
        serde_json::from_str::<Value>(line).unwrap();
    }
    assert!(not_written > 0, "{summary}");
    assert_eq!(
        complete.len() as u64 + not_written,
        delivered,
        "every delivered event is either a whole line or counted: {summary}"
    );
}

/// `count` too: a table that cannot be written is an error, with its rows counted.
#[test]
fn count_write_error_fails_and_counts_rows_not_written() {
    let fs = SmallFs::mount("4k");
    let out_file = fs.file("table");
    fs.fill();
    let rx = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port_arg = rx.local_addr().unwrap().port().to_string();
    let (child, stderr, _) = spawn_tracer(
        Command::new(udptrace_bin())
            .args([
                "count", "--by", "dport", "-e", "send", "--port", &port_arg, "-d", "1",
            ])
            .stdout(out_file),
    );
    let tx = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    tx.send_to(b"one", rx.local_addr().unwrap()).unwrap();
    let (out, stderr) = finish_to_file(child, stderr);
    assert_eq!(out.code(), Some(1), "{stderr:?}");
    assert_eq!(
        stderr.last().unwrap(),
        "udptrace: error: writing the output: No space left on device (os error 28)"
    );
    assert!(
        stderr
            .iter()
            .any(|l| l == "counted 1 events in 1 rows; rows not written 1"),
        "{stderr:?}"
    );
}

/// Waits for a child whose stdout is not a pipe; its exit status and stderr lines.
fn finish_to_file(
    mut child: Child,
    stderr: mpsc::Receiver<String>,
) -> (std::process::ExitStatus, Vec<String>) {
    let status = child.wait().unwrap();
    (status, stderr.iter().collect())
}

/// Waits at most `limit` for the child to exit by itself.
fn exits_within(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    child.wait().ok();
    None
}

/// `udptrace | head -1` with no matching traffic: the reader is gone, and the
/// tracer notices without having anything to write.
#[test]
fn closed_pipe_ends_an_idle_run_quietly() {
    let (mut child, _stderr) = start(&["trace", "--port", "9", "-d", "30"]);
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut header = String::new();
    stdout.read_line(&mut header).unwrap();
    assert!(header.starts_with("TIME"), "{header}");
    drop(stdout);
    let status = exits_within(&mut child, Duration::from_secs(5)).expect("still running");
    assert!(status.success(), "{status}");

    let (mut child, _stderr) = start(&["count", "--by", "dport", "--port", "9", "-d", "30"]);
    drop(child.stdout.take());
    let status = exits_within(&mut child, Duration::from_secs(5)).expect("still running");
    assert!(status.success(), "{status}");
}

/// A mistake on the command line: one clear line naming the option, status 2.
fn assert_usage_error(args: &[&str], needles: &[&str]) {
    assert_usage_error_of(Command::new(udptrace_bin()).args(args), args, needles);
}

/// [`assert_usage_error`] of `cmd`, which runs udptrace with `args`; what
/// it printed.
fn assert_usage_error_of(cmd: &mut Command, args: &[&str], needles: &[&str]) -> String {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A value wrongly accepted starts tracing: that run is ended, and fails the test.
    let status = exits_within(&mut child, Duration::from_secs(10));
    let mut stderr = Vec::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_end(&mut stderr)
        .unwrap();
    let text = String::from_utf8_lossy(&stderr).into_owned();
    let status = status.unwrap_or_else(|| panic!("{args:?} was accepted: {text}"));
    let out = Output {
        status,
        stdout: Vec::new(),
        stderr,
    };
    assert_clean_failure(&out, needles[0]);
    for needle in needles {
        assert!(text.contains(needle), "{args:?}: {text}");
    }
    assert_eq!(out.status.code(), Some(2), "{args:?}: {text}");
    text
}

/// Durations the clock cannot add are refused before anything starts.
#[test]
fn huge_durations_are_usage_errors() {
    assert_usage_error(&["trace", "-d", "1e19"], &["--duration", "1e19"]);
    assert_usage_error(&["-d", "31536001"], &["--duration", "at most"]);
    assert_usage_error(&["drops", "-d", "1e300"], &["--duration"]);
    assert_usage_error(&["count", "--by", "dport", "-i", "1e19"], &["--interval"]);
    assert_usage_error(&["count", "--by", "dport", "-d", "1e19"], &["--duration"]);
    assert_usage_error(&["trace", "-d", "inf"], &["--duration"]);
}

fn pid_max() -> u64 {
    std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Values that parse but could never select or count anything are refused.
#[test]
fn useless_values_are_usage_errors() {
    assert_usage_error(&["count", "--by", "dport", "--top", "0"], &["--top"]);
    let above = (pid_max() + 1).to_string();
    assert_usage_error(&["trace", "--pid", &above], &["--pid", "pid_max"]);
    assert_usage_error(&["--pid", "0"], &["--pid"]);
    assert_usage_error(&["count", "--by", "pid", "--pid", &above], &["--pid"]);
    assert_usage_error(&["count", "--by", "reason"], &["reason", "-e drop"]);
    assert_usage_error(
        &["count", "--by", "dport,reason", "-e", "send"],
        &["reason", "-e drop"],
    );
    assert_usage_error(&["count", "--by", "dport,dport"], &["twice"]);
    assert_usage_error(&["--port", "0"], &["--port", "port must be 1 to 65535"]);
}

/// Filter values the library would refuse at start are refused as they are
/// parsed, by the same rules, with the same reasons: run unprivileged, the
/// error is the value's (status 2), not the missing privileges.
#[test]
fn privileges_bad_filter_values_are_usage_errors_before_anything_starts() {
    let bin = world_executable_copy("bad-filters");
    let long_comm = "a-23-byte-thread-name!!";
    let long_id = "a".repeat(65);
    let cases: [(&[&str], &[&str]); 7] = [
        (
            &["trace", "--comm", long_comm],
            &["--comm", "1 to 15 bytes"],
        ),
        (&["--comm", ""], &["--comm", "1 to 15 bytes"]),
        (
            &["--container", "zz"],
            &["--container", "1 to 64 hex digits"],
        ),
        (
            &["dns", "--container", &long_id],
            &["--container", "hex digits"],
        ),
        (&["drops", "--netns", "0"], &["--netns", "above 0"]),
        (&["quic", "--netns", "net:[0]"], &["--netns", "above 0"]),
        (
            &["count", "--by", "dport", "--cgroup", "/sys/fs/cgroup/../x"],
            &["--cgroup", "no '..'"],
        ),
    ];
    for (args, needles) in cases {
        let text = assert_usage_error_of(&mut as_nobody(&bin, "-all", args), args, needles);
        // One line says it all; clap's usage hint follows.
        let first = text.lines().next().unwrap();
        assert!(first.starts_with("error: invalid value"), "{text}");
        assert!(needles.iter().all(|n| first.contains(n)), "{text}");
    }
    let _ = std::fs::remove_dir_all(bin.parent().unwrap());
}

/// A capture whose tracing could not start (no privileges) leaves no file
/// where there was none, and an earlier capture of that name as it was.
#[test]
fn privileges_a_failed_start_leaves_no_new_capture_and_keeps_an_old_one() {
    use std::os::unix::fs::PermissionsExt;
    let bin = world_executable_copy("failed-start");
    let dir = bin.parent().unwrap().join("captures");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let never = dir.join("never.pcapng");
    let out = as_nobody(&bin, "-all", &["trace", "-w", never.to_str().unwrap()])
        .output()
        .unwrap();
    assert_clean_failure(&out, "insufficient privileges");
    assert_eq!(out.status.code(), Some(1));
    assert!(!never.exists(), "an empty capture was left behind");

    let kept = dir.join("kept.pcapng");
    std::fs::write(&kept, b"an earlier capture").unwrap();
    std::fs::set_permissions(&kept, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = as_nobody(&bin, "-all", &["trace", "-w", kept.to_str().unwrap()])
        .output()
        .unwrap();
    assert_clean_failure(&out, "insufficient privileges");
    assert_eq!(std::fs::read(&kept).unwrap(), b"an earlier capture");
    let _ = std::fs::remove_dir_all(bin.parent().unwrap());
}

/// `-e send,send` asks for sends once: the summary counts them once.
#[test]
fn repeated_event_kinds_count_once() {
    let rx = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port_arg = rx.local_addr().unwrap().port().to_string();
    let (child, stderr) = start(&[
        "--json",
        "-e",
        "send,send,recv,send",
        "--port",
        &port_arg,
        "-d",
        "1",
    ]);
    let tx = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    tx.send_to(b"once", rx.local_addr().unwrap()).unwrap();
    let (out, summary) = finish(child, stderr);
    assert!(out.status.success());
    assert_eq!(json_lines(&out).len(), 1);
    assert!(
        summary
            .iter()
            .any(|l| l.starts_with("1 events (send 1, recv 0); lost 0")),
        "{summary:?}"
    );
}

/// A thread name a hostile process can give itself (prctl takes any 15
/// bytes): clear the screen, ring the bell, a UTF-8 C1 CSI, a byte that is
/// not UTF-8.
const HOSTILE_NAME: &[u8] = b"\x1b[2J\x07\xc2\x9b\xffx";
const HOSTILE_NAME_ESCAPED: &str = r"\x1b[2J\x07\xc2\x9b\xffx";

/// In a thread named HOSTILE_NAME, on `port`: a socket with a tiny receive
/// buffer, one datagram to it, then a flood it must drop.
fn traffic_from_a_hostile_name(port: u16) {
    std::thread::spawn(move || {
        let mut name = HOSTILE_NAME.to_vec();
        name.push(0);
        // SAFETY: names the calling thread; the name is NUL-terminated.
        assert_eq!(unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) }, 0);
        let rx = UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).unwrap();
        let tiny: libc::c_int = 1;
        // SAFETY: setting an int option on our own socket.
        unsafe {
            use std::os::fd::AsRawFd;
            libc::setsockopt(
                rx.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&tiny as *const libc::c_int).cast(),
                std::mem::size_of_val(&tiny) as libc::socklen_t,
            );
        }
        let tx = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        for _ in 0..40 {
            tx.send_to(&[0u8; 1000], rx.local_addr().unwrap()).unwrap();
        }
        // Dropped for the buffer before rx closes, not after for no socket.
        settle();
    })
    .join()
    .unwrap();
}

/// Task names reach the terminal escaped in every text view, never raw.
#[test]
fn hostile_task_names_are_escaped_in_text_views() {
    let port = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let p = port.to_string();
    let views: Vec<(&str, Vec<&str>)> = vec![
        (
            "trace",
            vec!["trace", "-e", "send", "--port", &p, "-d", "60"],
        ),
        (
            "packets",
            vec!["trace", "--packets", "--port", &p, "-d", "60"],
        ),
        ("drops", vec!["drops", "--port", &p, "-d", "60"]),
        (
            "count",
            vec![
                "count", "--by", "comm", "-e", "send", "--port", &p, "-d", "60",
            ],
        ),
    ];
    // Stopped by SIGTERM once the traffic is in: starting four tracers can
    // take longer than a short --duration on a slow machine.
    let running: Vec<_> = views.iter().map(|(_, args)| start(args)).collect();
    traffic_from_a_hostile_name(port);
    std::thread::sleep(Duration::from_millis(300));
    for (child, _) in &running {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    }
    for ((view, _), (child, stderr)) in views.iter().zip(running) {
        let (out, _) = finish(child, stderr);
        assert!(out.status.success(), "{view}");
        assert!(
            !out.stdout
                .iter()
                .any(|&b| b == 0x1b || b == 0x07 || b == 0x9b),
            "{view} wrote control bytes: {:?}",
            String::from_utf8_lossy(&out.stdout[..out.stdout.len().min(400)])
        );
        let text = String::from_utf8(out.stdout).expect("text views write UTF-8");
        // Datagrams still queued at close are dropped without an owner.
        let lines: Vec<&str> = text
            .lines()
            .skip(1)
            .filter(|l| *view != "drops" || l.contains("SOCKET_RCVBUFF"))
            .collect();
        assert!(!lines.is_empty(), "{view}: {text}");
        for line in lines {
            // count cannot show a byte that is not UTF-8: it gets U+FFFD.
            let escaped = match *view {
                "count" => &HOSTILE_NAME_ESCAPED[..HOSTILE_NAME_ESCAPED.len() - 5],
                _ => HOSTILE_NAME_ESCAPED,
            };
            assert!(line.contains(escaped), "{view}: {line}");
        }
    }
}

/// The kernel accepts CAP_SYS_ADMIN for CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN alike.
#[test]
fn privileges_cap_sys_admin_alone_suffices() {
    let bin = world_executable_copy("sys-admin");
    let rx = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port_arg = rx.local_addr().unwrap().port().to_string();
    let (child, stderr) = start_cmd(&mut as_nobody(
        &bin,
        "+sys_admin",
        &["--json", "-d", "1.5", "--port", &port_arg],
    ));
    let tx = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    tx.send_to(b"admin", rx.local_addr().unwrap()).unwrap();
    let (out, _) = finish(child, stderr);
    assert!(out.status.success());
    let events = json_lines(&out);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["bytes"].as_u64(), Some(5));
    let _ = std::fs::remove_dir_all(bin.parent().unwrap());
}

/// Sends `count` one-byte datagrams from `tx` to `dst` as fast as the kernel
/// takes them; returns how many it accepted.
fn flood(tx: &UdpSocket, dst: std::net::SocketAddr, count: u64) -> u64 {
    (0..count).filter(|_| tx.send_to(b"x", dst).is_ok()).count() as u64
}

/// Every send of a flood is printed or counted lost, in text and in JSON,
/// while the tracer is stopped (SIGSTOP) and after it resumes: the lines
/// printed plus the summary's lost count equal the sends the kernel accepted.
#[test]
fn overload_every_send_is_printed_or_counted_lost() {
    for json in [false, true] {
        let rx = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let tx = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port_arg = tx.local_addr().unwrap().port().to_string();
        let mut args = vec!["--port", &port_arg, "-e", "send"];
        if json {
            args.push("--json");
        }
        let (mut child, stderr) = start(&args);
        // Read stdout as it comes, so a full pipe never stalls the tracer.
        let mut stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut text = String::new();
            stdout.read_to_string(&mut text).unwrap();
            text
        });
        let pid = child.id() as i32;
        // SAFETY: signalling our own child.
        unsafe { libc::kill(pid, libc::SIGSTOP) };
        let mut sent = flood(&tx, rx.local_addr().unwrap(), 300_000);
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGCONT) };
        sent += flood(&tx, rx.local_addr().unwrap(), 100_000);
        std::thread::sleep(Duration::from_millis(500));
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let (out, summary) = finish(child, stderr);
        assert!(out.status.success(), "{summary:?}");
        let text = reader.join().unwrap();
        let printed = if json {
            json_lines(&Output {
                stdout: text.into_bytes(),
                ..out
            })
            .len() as u64
        } else {
            text.lines().skip(1).count() as u64 // the header
        };
        let line = summary
            .iter()
            .find(|l| l.contains("; lost "))
            .expect("a summary");
        let lost = number_after(line, "; lost ").unwrap();
        assert!(lost > 0, "a stopped tracer must overflow its rings: {line}");
        assert_eq!(number_after(line, "(send "), Some(printed), "{line}");
        assert_eq!(printed + lost, sent, "json {json}: {line}");
    }
}
