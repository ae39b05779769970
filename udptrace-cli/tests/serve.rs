//! `udptrace serve`: its metrics against a workload of known counts in a
//! network namespace of its own (whose SNMP counters are the kernel's truth
//! for its drops), scraped directly and by a real Prometheus server (the
//! distribution's package), `promtool check metrics` on a scrape, the
//! overflow past --max-series, clients that stall or come a hundred at once,
//! and bad input. Needs root.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;

/// `serve` on a free loopback port with `args`, on the backend under test
/// (`UDPTRACE_TEST_BACKEND`, as the kernel matrix runs each). Its address,
/// once it serves.
fn serve(args: &[&str]) -> (Child, mpsc::Receiver<String>, SocketAddr) {
    serve_with(args, "http", |_| {})
}

/// `serve` as [`serve`] starts it, its command adjusted by `adjust`, its
/// Serving line naming `scheme`.
fn serve_with(
    args: &[&str],
    scheme: &str,
    adjust: impl FnOnce(&mut Command),
) -> (Child, mpsc::Receiver<String>, SocketAddr) {
    let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, free_tcp_port()));
    let mut cmd = Command::new(udptrace_bin());
    // A test that fails before stopping it leaves no tracer attached for long.
    cmd.arg("serve")
        .arg("--listen")
        .arg(listen.to_string())
        .args(["-d", "120"])
        .args(args);
    if let Ok(backend) = std::env::var("UDPTRACE_TEST_BACKEND") {
        cmd.args(["--backend", &backend]);
    }
    adjust(&mut cmd);
    let (child, stderr) = start_cmd(&mut cmd);
    let serving = stderr
        .recv_timeout(Duration::from_secs(10))
        .expect("the Serving line");
    assert_eq!(
        serving,
        format!("Serving Prometheus metrics on {scheme}://{listen}/metrics")
    );
    (child, stderr, listen)
}

fn free_tcp_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn stop(mut child: Child) {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
}

/// A GET of `path` with these headers: the status, headers and body.
fn get(addr: SocketAddr, path: &str, headers: &str) -> (u16, String, String) {
    try_get(addr, path, headers).unwrap_or_else(|e| panic!("GET {path} from {addr}: {e}"))
}

fn try_get(addr: SocketAddr, path: &str, headers: &str) -> std::io::Result<(u16, String, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n{headers}\r\n"
    )?;
    let mut reply = String::new();
    s.read_to_string(&mut reply)?;
    let bad = || std::io::Error::other(format!("not an HTTP reply: {reply:?}"));
    let (head, body) = reply.split_once("\r\n\r\n").ok_or_else(bad)?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body).ok_or_else(bad)?
    } else {
        body.to_string()
    };
    Ok((status, head.to_string(), body))
}

/// A chunked body's data (Prometheus's API answers large queries so).
fn dechunk(mut body: &str) -> Option<String> {
    let mut data = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n")?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            return Some(data);
        }
        data.push_str(rest.get(..size)?);
        body = rest.get(size..)?.strip_prefix("\r\n")?;
    }
}

/// The samples of a text-format scrape: `name{labels}` -> value.
fn samples(body: &str) -> HashMap<String, f64> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            (series.to_string(), value.parse().unwrap())
        })
        .collect()
}

fn scrape(addr: SocketAddr) -> HashMap<String, f64> {
    let (status, head, body) = get(addr, "/metrics", "");
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    samples(&body)
}

/// The sum of the samples of `name` whose labels include each of `labels`.
fn sum(samples: &HashMap<String, f64>, name: &str, labels: &[&str]) -> f64 {
    samples
        .iter()
        .filter(|(series, _)| {
            series.split('{').next() == Some(name) && labels.iter().all(|l| series.contains(l))
        })
        .map(|(_, v)| v)
        .sum()
}

/// The counter `name` of the `Udp:` table of this thread's network namespace.
fn udp_counter(name: &str) -> u64 {
    let snmp = std::fs::read_to_string("/proc/thread-self/net/snmp").unwrap();
    let udp: Vec<&str> = snmp.lines().filter(|l| l.starts_with("Udp:")).collect();
    udp[0]
        .split_whitespace()
        .zip(udp[1].split_whitespace())
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.parse().unwrap())
        .unwrap()
}

/// Runs `work` on a thread in a new network namespace with `lo` up, once
/// `ready` (given the namespace's inode number) returns.
fn in_netns<R: Send + 'static, T>(
    ready: impl FnOnce(u32) -> T,
    work: impl FnOnce() -> R + Send + 'static,
) -> (T, R) {
    let (ns_tx, ns_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let worker = std::thread::spawn(move || {
        // SAFETY: unshare affects only this thread.
        assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0, "unshare");
        lo_up();
        let ns = std::fs::File::open("/proc/thread-self/ns/net").unwrap();
        let inode = std::os::unix::fs::MetadataExt::ino(&ns.metadata().unwrap());
        // Held open until the tests end: a namespace freed while its test's
        // exporter still filters on its inode number would let another
        // test's new namespace, which may get that number, be counted too.
        std::mem::forget(ns);
        ns_tx.send(inode as u32).unwrap();
        go_rx.recv().unwrap();
        work()
    });
    let t = ready(ns_rx.recv().unwrap());
    go_tx.send(()).unwrap();
    (t, worker.join().expect("the workload"))
}

const FLOOD: u64 = 300;
const PAYLOAD: usize = 100;
const UNANSWERED: u64 = 7;
const RECEIVER_PORT: u16 = 4400;
const CLOSED_PORT: u16 = 4401;

/// What the workload did, and the kernel's own count of its drops.
#[derive(Debug)]
struct Truth {
    received: u64,
    rcvbuf_errors: u64,
    no_ports: u64,
}

/// Sends FLOOD datagrams to a receiver with a small buffer that reads only
/// afterwards, UNANSWERED to a closed port, and one send too large (EMSGSIZE).
fn workload() -> Truth {
    set_comm("serve-work");
    let rx = UdpSocket::bind((Ipv4Addr::LOCALHOST, RECEIVER_PORT)).unwrap();
    small_buffer(&rx, 4096);
    let tx = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let (rcvbuf_before, no_ports_before) = (udp_counter("RcvbufErrors"), udp_counter("NoPorts"));
    for _ in 0..FLOOD {
        tx.send_to(&[7; PAYLOAD], (Ipv4Addr::LOCALHOST, RECEIVER_PORT))
            .unwrap();
    }
    for _ in 0..UNANSWERED {
        tx.send_to(&[8; PAYLOAD], (Ipv4Addr::LOCALHOST, CLOSED_PORT))
            .unwrap();
    }
    let too_big = tx.send_to(&vec![0; 70_000], (Ipv4Addr::LOCALHOST, RECEIVER_PORT));
    assert_eq!(too_big.unwrap_err().raw_os_error(), Some(libc::EMSGSIZE));
    // Each datagram sent is received or dropped, but a busy machine may
    // deliver the last ones late (softirqs left to ksoftirqd): read until the
    // kernel has accounted for all of them, or 5 s have passed.
    rx.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let accounted = |received| {
        received + udp_counter("RcvbufErrors") - rcvbuf_before == FLOOD
            && udp_counter("NoPorts") - no_ports_before == UNANSWERED
    };
    let mut received = 0;
    let mut buf = [0u8; 2048];
    while !accounted(received) && Instant::now() < deadline {
        if rx.recv(&mut buf).is_ok() {
            received += 1;
        }
    }
    Truth {
        received,
        rcvbuf_errors: udp_counter("RcvbufErrors") - rcvbuf_before,
        no_ports: udp_counter("NoPorts") - no_ports_before,
    }
}

/// The series the workload must have made, labelled by comm and dport.
fn expected(t: &Truth) -> Vec<(String, f64)> {
    let work = r#"comm="serve-work""#;
    let to = |port: u16| format!(r#"dport="{port}""#);
    vec![
        (
            format!(
                r#"udptrace_datagrams_total{{direction="send",{work},{}}}"#,
                to(RECEIVER_PORT)
            ),
            FLOOD as f64,
        ),
        (
            format!(
                r#"udptrace_bytes_total{{direction="send",{work},{}}}"#,
                to(RECEIVER_PORT)
            ),
            (FLOOD * PAYLOAD as u64) as f64,
        ),
        (
            format!(
                r#"udptrace_datagrams_total{{direction="send",{work},{}}}"#,
                to(CLOSED_PORT)
            ),
            UNANSWERED as f64,
        ),
        (
            format!(
                r#"udptrace_bytes_total{{direction="send",{work},{}}}"#,
                to(CLOSED_PORT)
            ),
            (UNANSWERED * PAYLOAD as u64) as f64,
        ),
        (
            format!(
                r#"udptrace_datagrams_total{{direction="recv",{work},{}}}"#,
                to(RECEIVER_PORT)
            ),
            t.received as f64,
        ),
        (
            format!(
                r#"udptrace_bytes_total{{direction="recv",{work},{}}}"#,
                to(RECEIVER_PORT)
            ),
            (t.received * PAYLOAD as u64) as f64,
        ),
        (
            format!(
                r#"udptrace_drops_total{{reason="SOCKET_RCVBUFF",{work},{}}}"#,
                to(RECEIVER_PORT)
            ),
            t.rcvbuf_errors as f64,
        ),
        (
            format!(
                r#"udptrace_drops_total{{reason="NO_SOCKET",comm="",{}}}"#,
                to(CLOSED_PORT)
            ),
            t.no_ports as f64,
        ),
        (
            // UDP refuses the size before it reads the address: no destination port.
            format!(
                r#"udptrace_errors_total{{direction="send",errno="EMSGSIZE",{work},{}}}"#,
                to(0)
            ),
            1.0,
        ),
    ]
}

/// Checks the workload's truth itself: it dropped, and every datagram is accounted for.
fn check_truth(t: &Truth) {
    assert!(t.rcvbuf_errors > 0 && t.received > 0, "{t:?}");
    assert_eq!(t.received + t.rcvbuf_errors, FLOOD, "{t:?}");
    assert_eq!(t.no_ports, UNANSWERED);
}

#[test]
fn scrape_counts_the_workload_exactly() {
    let ((child, stderr, addr), truth) = in_netns(
        |ns| serve(&["--by", "comm,dport", "--netns", &ns.to_string()]),
        workload,
    );
    check_truth(&truth);
    let got = scrape(addr);
    for (series, value) in expected(&truth) {
        assert_eq!(got.get(&series), Some(&value), "{series} in {got:#?}");
    }
    // Nothing else: the namespace had no other traffic.
    let series = got.keys().filter(|s| s.contains("comm=")).count();
    assert_eq!(series, expected(&truth).len(), "{got:#?}");
    assert_eq!(got["udptrace_lost_events_total"], 0.0);
    assert_eq!(got["udptrace_series_overflow_events_total"], 0.0);
    // (serve-work, 4400), (serve-work, 4401), (serve-work, 0): the failed send,
    // and ("", 4401): drops without a socket.
    assert_eq!(got["udptrace_series"], 4.0);
    assert!(got
        .keys()
        .any(|s| s.starts_with("udptrace_build_info{version=")));
    // A second scrape: the same, not reset.
    assert_eq!(scrape(addr), got);

    // OpenMetrics, as Prometheus asks for it.
    let accept = "Accept: application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
                  version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1\r\n";
    let (status, head, body) = get(addr, "/metrics", accept);
    assert_eq!(status, 200);
    assert!(
        head.contains("application/openmetrics-text; version=1.0.0"),
        "{head}"
    );
    assert!(body.ends_with("# EOF\n"), "{body}");
    assert!(
        body.contains("# TYPE udptrace_datagrams counter\n"),
        "{body}"
    );
    let open = samples(&body.replace("# EOF\n", ""));
    assert_eq!(open, got);

    // The index links the metrics; anything else is not found.
    let (status, _, body) = get(addr, "/", "");
    assert_eq!(status, 200);
    assert!(body.contains(r#"href="/metrics""#), "{body}");
    assert_eq!(get(addr, "/metrics/x", "").0, 404);
    assert_eq!(get(addr, "/favicon.ico", "").0, 404);
    stop(child);
    drop(stderr);
}

#[test]
fn series_past_the_limit_fold_into_the_overflow() {
    let ports = [4410u16, 4411, 4412, 4413, 4414, 4415];
    let ((child, _stderr, addr), ()) = in_netns(
        |ns| {
            serve(&[
                "--by",
                "dport",
                "--max-series",
                "3",
                "--netns",
                &ns.to_string(),
            ])
        },
        move || {
            let tx = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
            for port in ports {
                tx.send_to(b"x", (Ipv4Addr::LOCALHOST, port)).unwrap();
            }
            // Their drops happen as they arrive: before the scrape.
            settle();
        },
    );
    let got = scrape(addr);
    stop(child);
    assert_eq!(got["udptrace_series"], 3.0, "{got:#?}");
    // Each port made a send and a drop (no socket): 3 ports' worth overflowed.
    assert_eq!(
        got["udptrace_series_overflow_events_total"], 6.0,
        "{got:#?}"
    );
    assert_eq!(sum(&got, "udptrace_datagrams_total", &[]), 6.0);
    assert_eq!(
        sum(&got, "udptrace_datagrams_total", &[r#"overflow="true""#]),
        3.0
    );
    assert_eq!(
        sum(&got, "udptrace_drops_total", &[r#"overflow="true""#]),
        3.0
    );
    let kept = ports
        .iter()
        .filter(|p| {
            got.contains_key(&format!(
                r#"udptrace_datagrams_total{{direction="send",dport="{p}"}}"#
            ))
        })
        .count();
    assert_eq!(kept, 3, "{got:#?}");
}

#[test]
fn stalled_clients_do_not_stall_scrapes() {
    let (child, _stderr, addr) = serve(&["--by", "comm"]);
    // Connected, and never a byte; and one that stops halfway through its headers.
    let idle = TcpStream::connect(addr).unwrap();
    let mut half = TcpStream::connect(addr).unwrap();
    half.write_all(b"GET /metrics HTTP/1.1\r\nHost:").unwrap();
    // Served before the stalled clients time out (10 s, which a server that
    // waited for them would take): 32 at once, a few seconds even in an
    // emulated guest running a debug build.
    let started = Instant::now();
    let scrapes: Vec<_> = (0..32)
        .map(|_| std::thread::spawn(move || get(addr, "/metrics", "").0))
        .collect();
    for s in scrapes {
        assert_eq!(s.join().unwrap(), 200);
    }
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    // The half-sent request was still waiting meanwhile: it is served too.
    half.write_all(b" x\r\nConnection: close\r\n\r\n").unwrap();
    half.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut reply = String::new();
    half.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    drop(idle);
    stop(child);
}

/// Runs `udptrace serve` with `args`; its status and stderr.
fn serve_fails(args: &[&str]) -> (i32, String) {
    let out = Command::new(udptrace_bin())
        .arg("serve")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_input_is_one_line_and_a_failure() {
    let taken = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let taken = taken.local_addr().unwrap().to_string();
    let cases: [(&[&str], i32, &str); 6] = [
        (
            &["--listen", "localhost"],
            2,
            "'localhost' is not ADDR:PORT",
        ),
        (&["--listen", "127.0.0.1:99999"], 2, "is not ADDR:PORT"),
        (&["--listen", &taken], 1, "cannot listen on"),
        (&["--by", "comm,event"], 2, "unknown label 'event'"),
        (&["--by", "comm,comm"], 2, "label 'comm' is given twice"),
        (
            &["--max-series", "0"],
            2,
            "'0' is not a number of series of 1 or more",
        ),
    ];
    for (args, code, message) in cases {
        let (status, stderr) = serve_fails(args);
        assert_eq!(status, code, "{args:?}: {stderr}");
        let first = stderr.lines().next().unwrap_or_default();
        assert!(first.contains(message), "{args:?}: {stderr}");
        if code == 1 {
            assert_eq!(stderr.lines().count(), 1, "{stderr}");
            assert!(stderr.contains("Address already in use"), "{stderr}");
        }
    }
}

/// `promtool check metrics` (the Prometheus package's) finds nothing to say
/// about a scrape.
#[test]
fn prometheus_promtool_finds_a_scrape_clean() {
    let ((child, _stderr, addr), truth) = in_netns(
        |ns| {
            serve(&[
                "--by",
                "comm,dport,container_id,pod_uid,cgroup_path,netns",
                "--netns",
                &ns.to_string(),
            ])
        },
        workload,
    );
    check_truth(&truth);
    let (_, _, body) = get(addr, "/metrics", "");
    stop(child);
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (the prometheus package)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "{said}\n{body}"
    );
}

/// A real Prometheus server scrapes `serve` every second: its query API
/// returns exactly the workload's counts and the kernel's drop counts.
#[test]
fn prometheus_server_sees_exact_counts() {
    let dir = std::env::temp_dir().join(format!("udptrace-prometheus-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let ((child, _stderr, addr), truth) = in_netns(
        |ns| serve(&["--by", "comm,dport", "--netns", &ns.to_string()]),
        workload,
    );
    check_truth(&truth);
    let (prometheus, web) = prometheus_scraping(&dir, addr);
    let query = |q: &str| query_first(web, q);
    let wanted = expected(&truth);
    let deadline = Instant::now() + Duration::from_secs(60);
    // PromQL selects a series as the exposition names it (comm="" matches no comm).
    let promql = |series: &str| series.to_string();
    loop {
        let all = wanted
            .iter()
            .all(|(series, value)| query(&promql(series)) == Some(*value));
        if all || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let results: Vec<(String, Option<f64>, f64)> = wanted
        .iter()
        .map(|(series, value)| (series.clone(), query(&promql(series)), *value))
        .collect();
    let up = query(r#"up{job="udptrace"}"#);
    drop(prometheus);
    stop(child);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(up, Some(1.0));
    for (series, got, want) in results {
        assert_eq!(got, Some(want), "{series}");
    }
}

/// The CLI's wait histogram (`latency --json --by dport`) and the
/// exporter's (`serve --latency --by dport`), both attached to one workload
/// whose receiver measures each wait itself: delays of 1.5, 3 and 24 ms,
/// inside their buckets by far more than either tracer's own stamping
/// differs (microseconds), so both must count every datagram in the same
/// bucket (where the receiver's bracket pins it), and each must hold the
/// receiver's truth. `scraper` may read the exporter meanwhile: the count
/// and (le_us, cumulative count) of the buckets it returns must be the
/// exporter's.
fn latency_cli_beside_serve(
    scraper: impl FnOnce(SocketAddr, u16) -> Option<(f64, Vec<(u64, f64)>)>,
) {
    let (mut rx, tx) = (
        TimedReceiver::new(UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap()),
        UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap(),
    );
    let port = rx.addr().port().to_string();
    let mut cli = Command::new(udptrace_bin());
    cli.args([
        "latency", "--json", "--by", "dport", "--port", &port, "-d", "120",
    ]);
    if let Ok(backend) = std::env::var("UDPTRACE_TEST_BACKEND") {
        cli.args(["--backend", &backend]);
    }
    let (cli, cli_stderr) = start_cmd(&mut cli);
    let (serve, _stderr, addr) = serve(&["--latency", "--by", "dport", "--port", &port]);
    let mut brackets = Vec::new();
    for delay in [1500, 3000, 24_000] {
        for _ in 0..10 {
            rx.send(&tx, &[5u8; 64]);
            std::thread::sleep(Duration::from_micros(delay));
            brackets.push(rx.recv(0).1);
        }
    }
    settle();
    let scraped = scrape(addr);
    let scraped_by_prometheus = scraper(addr, rx.addr().port());
    stop(serve);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(cli.id() as i32, libc::SIGINT) };
    let (out, summary) = finish(cli, cli_stderr);
    assert!(out.status.success(), "{summary:?}");
    let tables = json_lines(&out);
    let rows = tables.last().expect("a table at exit")["rows"]
        .as_array()
        .unwrap();
    assert_eq!(rows.len(), 1, "{tables:?}");
    let row = &rows[0];
    assert_eq!(row["dport"].as_u64().unwrap().to_string(), port);
    assert_eq!(row["count"], 30, "{row}");
    // The CLI's buckets, as a histogram row, against the receiver's truth.
    let mut hist = udptrace::HistRow {
        key: Vec::new(),
        count: 30,
        sum: (row["sum_us"].as_f64().unwrap() * 1000.0) as u64,
        max: (row["max_us"].as_f64().unwrap() * 1000.0).round() as u64,
        buckets: [0; udptrace::HIST_BUCKETS],
    };
    let mut cumulative = Vec::new();
    let mut seen = 0;
    for b in row["buckets"].as_array().unwrap() {
        let le = b["le_us"].as_u64().unwrap();
        let n = b["count"].as_u64().unwrap();
        hist.buckets[le.trailing_zeros() as usize] = n;
        seen += n;
        cumulative.push((le, seen));
    }
    assert_waits_match(&hist, &brackets);
    // Each quantile: the bound of the bucket that holds its rank (of 30).
    for (name, rank) in [("p50_us", 15), ("p90_us", 27), ("p99_us", 30)] {
        let (le, _) = cumulative.iter().find(|(_, n)| *n >= rank).unwrap();
        let max_us = row["max_us"].as_f64().unwrap().ceil() as u64;
        assert_eq!(row[name].as_u64(), Some((*le).min(max_us)), "{name}: {row}");
    }
    // The exporter's series: the same count; its buckets, every one by its
    // bound read as a number (the exposition writes 1e-06), as cumulative
    // counts by le in us.
    let series = |suffix: &str| {
        let labels = [format!("dport=\"{port}\"")];
        let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
        sum(
            &scraped,
            &format!("udptrace_receive_queue_seconds_{suffix}"),
            &labels,
        )
    };
    assert_eq!(series("count"), 30.0);
    let mut exported: Vec<(u64, f64)> = scraped
        .iter()
        .filter_map(|(name, v)| {
            let labels = name.strip_prefix("udptrace_receive_queue_seconds_bucket{")?;
            if !labels.contains(&format!("dport=\"{port}\"")) {
                return None;
            }
            let le: f64 = labels
                .split("le=\"")
                .nth(1)?
                .split('"')
                .next()?
                .parse()
                .ok()?;
            Some(((le * 1e6).round().min(u64::MAX as f64) as u64, *v))
        })
        .collect();
    exported.sort_by_key(|(le, _)| *le);
    assert_eq!(exported.len(), udptrace::HIST_BUCKETS, "{exported:?}");
    assert_eq!(
        exported.last().map(|b| b.1),
        Some(30.0),
        "+Inf holds every wait"
    );
    // The exporter's own histogram against the receiver's truth too.
    let mut served = udptrace::HistRow {
        key: Vec::new(),
        count: 30,
        sum: (series("sum") * 1e9) as u64,
        max: hist.max,
        buckets: [0; udptrace::HIST_BUCKETS],
    };
    let mut below = 0.0;
    for (i, (_, n)) in exported.iter().enumerate() {
        served.buckets[i] = (n - below) as u64;
        below = *n;
    }
    // (Its maximum is not exported: the CLI's stands in for the check.)
    assert_waits_match(&served, &brackets);
    // Two tracers stamp the same datagram microseconds apart (more in a
    // virtual machine): where every wait's bracket lies inside one bucket,
    // both must put every wait in it, so their buckets are equal.
    let pinned = brackets
        .iter()
        .all(|b| bucket_of_ns(b.at_least) == bucket_of_ns(b.at_most));
    let cumulative_at = |le_us: u64| {
        cumulative
            .iter()
            .take_while(|(le, _)| *le <= le_us)
            .last()
            .map_or(0, |(_, n)| *n) as f64
    };
    if pinned {
        for &(le_us, n) in &exported {
            assert_eq!(n, cumulative_at(le_us).min(30.0), "le={le_us} us");
        }
    }
    if let Some((count, buckets)) = scraped_by_prometheus {
        // Prometheus stores what the exporter exposed, bucket for bucket.
        assert_eq!(count, 30.0);
        for &(le_us, n) in &exported {
            let theirs = buckets.iter().find(|(le, _)| *le == le_us).map(|b| b.1);
            assert_eq!(theirs, Some(n), "Prometheus's bucket le={le_us} us");
        }
    }
    let seconds = series("sum");
    let cli_seconds = row["sum_us"].as_f64().unwrap() / 1e6;
    assert!(
        (seconds - cli_seconds).abs() < 0.001 * 30.0,
        "{seconds} vs {cli_seconds}"
    );
}

#[test]
fn latency_histograms_of_serve_and_the_cli_agree_with_the_receivers_truth() {
    latency_cli_beside_serve(|_, _| None);
}

/// A real Prometheus server scrapes `serve --latency`: its `_count` and
/// `_bucket` series of the histogram are the exporter's, which are the
/// CLI's wherever the receiver's truth pins each wait's bucket.
#[test]
fn prometheus_server_sees_the_latency_histogram_of_the_cli() {
    let dir = std::env::temp_dir().join(format!("udptrace-prom-latency-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    latency_cli_beside_serve(|addr, port| {
        let (prometheus, web) = prometheus_scraping(&dir, addr);
        let dport = format!("{{dport=\"{port}\"}}");
        let count = format!("udptrace_receive_queue_seconds_count{dport}");
        let deadline = Instant::now() + Duration::from_secs(60);
        while query_first(web, &count) != Some(30.0) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(500));
        }
        let count = query_first(web, &count).unwrap_or(0.0);
        let buckets = query_all(
            web,
            &format!("udptrace_receive_queue_seconds_bucket{dport}"),
        )
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(labels, v)| {
            let le: f64 = labels["le"].as_str()?.parse().ok()?;
            Some(((le * 1e6).round() as u64, v))
        })
        .collect();
        drop(prometheus);
        Some((count, buckets))
    });
    let _ = std::fs::remove_dir_all(&dir);
}

/// The distribution's Prometheus server scraping `addr` every second, its
/// data in `dir`; killed when the first value is dropped. Its API's address.
fn prometheus_scraping(dir: &std::path::Path, addr: SocketAddr) -> (Reaped, SocketAddr) {
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: udptrace\n    static_configs:\n      - targets: ['{addr}']\n"
        ),
    )
    .unwrap();
    let web = SocketAddr::from((Ipv4Addr::LOCALHOST, free_tcp_port()));
    let prometheus = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={web}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus (the prometheus package)");
    (Reaped(prometheus), web)
}

/// Every series an instant query of Prometheus's API at `web` returns: its
/// labels and value. None until it answers.
fn query_all(web: SocketAddr, q: &str) -> Option<Vec<(serde_json::Value, f64)>> {
    let (status, _, body) =
        try_get(web, &format!("/api/v1/query?query={}", url_encode(q)), "").ok()?;
    if status != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    v["data"]["result"]
        .as_array()?
        .iter()
        .map(|r| Some((r["metric"].clone(), r["value"][1].as_str()?.parse().ok()?)))
        .collect()
}

/// The value of the first series a query returns.
fn query_first(web: SocketAddr, q: &str) -> Option<f64> {
    query_all(web, q)?.first().map(|(_, v)| *v)
}

/// A child process killed when dropped.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Sets this process's open-file limit (soft and hard) to `n`.
fn set_open_files(n: u64) -> std::io::Result<()> {
    let limit = libc::rlimit {
        rlim_cur: n,
        rlim_max: n,
    };
    // SAFETY: setrlimit reads the struct given.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// A client that asks for /metrics and never reads the answer: its receive
/// buffer as small as the kernel allows, set before it connects so that its
/// window stays shut.
fn non_reader(addr: SocketAddr) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    let SocketAddr::V4(v4) = addr else {
        unreachable!("serve listens on 127.0.0.1 here")
    };
    // SAFETY: plain socket calls on a descriptor this function owns.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        if fd < 0 {
            return None;
        }
        let fd = std::os::fd::OwnedFd::from_raw_fd(fd);
        let one: libc::c_int = 1;
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &one as *const _ as *const _,
            4,
        );
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as _,
            sin_port: v4.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*v4.ip()).to_be(),
            },
            sin_zero: [0; 8],
        };
        let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
        if libc::connect(
            raw,
            &sin as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        ) != 0
        {
            return None;
        }
        let request = b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n";
        libc::send(
            raw,
            request.as_ptr() as *const _,
            request.len(),
            libc::MSG_NOSIGNAL,
        );
        Some(fd)
    }
}

fn open_files_of(child: &Child) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", child.id()))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn rss_mib_of(child: &Child) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap()
        / 1024
}

/// Rounds of 950 clients that ask for a large /metrics (3,000 series) and
/// never read it, against `serve` under the 1,024 open files a systemd
/// service gets: the exporter caps its connections below its limit (and
/// says so once), drops the stalled ones, and serves a normal scrape again
/// within seconds, its files and memory back near where they started.
#[test]
fn http_clients_that_never_read_do_not_take_the_exporter_down() {
    const ROUNDS: usize = 4;
    const CLIENTS: usize = 950;
    set_open_files(16_384).unwrap();
    let sink = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let sink_addr = sink.local_addr().unwrap();
    let (child, stderr, addr) = serve_with(
        &["--by", "sport", "--port", &sink_addr.port().to_string()],
        "http",
        |cmd| {
            // SAFETY: setrlimit is async-signal-safe.
            unsafe {
                std::os::unix::process::CommandExt::pre_exec(cmd, || set_open_files(1024));
            }
        },
    );
    // Traffic from 3,000 source ports: a body of some 400 KB.
    for _ in 0..3000 {
        let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        s.send_to(b"x", sink_addr).unwrap();
    }
    let (_, _, body) = get(addr, "/metrics", "");
    assert!(body.len() > 300_000, "{} bytes", body.len());
    let (files_before, rss_before) = (open_files_of(&child), rss_mib_of(&child));

    let mut held = Vec::new();
    for _ in 0..ROUNDS {
        held.extend((0..CLIENTS).filter_map(|_| non_reader(addr)));
        std::thread::sleep(Duration::from_secs(1));
    }
    let busiest = open_files_of(&child);
    // Back to normal while every stalled client is still connected.
    let deadline = Instant::now() + Duration::from_secs(40);
    let recovered = loop {
        let scraped = matches!(try_get(addr, "/metrics", ""), Ok((200, _, _)));
        if scraped && open_files_of(&child) < files_before + 50 {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let (files_after, rss_after) = (open_files_of(&child), rss_mib_of(&child));
    drop(held);
    let said: Vec<String> = stderr.try_iter().collect();
    stop(child);
    assert!(
        recovered,
        "{files_after} files open (from {files_before}), {rss_after} MiB: {said:?}"
    );
    assert!(busiest < 1024, "{busiest} files open at the busiest");
    assert!(
        rss_after < rss_before + 100,
        "{rss_after} MiB after, {rss_before} MiB before"
    );
    let capped = said
        .iter()
        .filter(|l| l.contains("the most it serves at once"))
        .count();
    // Once: the rounds follow each other while connections stay at the cap.
    assert_eq!(capped, 1, "{said:?}");
}

/// Started under the soft limit of open files systemd gives a service
/// (1,024) below a higher hard one, `serve` raises its soft limit to the
/// hard one, for connections beside its own files.
#[test]
fn http_raises_its_soft_open_file_limit_to_the_hard_one() {
    let (child, _stderr, _) = serve_with(&["--by", "comm"], "http", |cmd| {
        // SAFETY: setrlimit is async-signal-safe.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(cmd, || {
                let limit = libc::rlimit {
                    rlim_cur: 1024,
                    rlim_max: 4096,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    });
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap();
    let open_files: Vec<&str> = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .split_whitespace()
        .skip(3)
        .take(2)
        .collect();
    stop(child);
    assert_eq!(open_files, ["4096", "4096"], "{limits}");
}

/// A scrape that shuts its side down once its request is sent, as
/// `nc -N` does, gets its answer; so do `/` and a 404.
#[test]
fn http_half_closed_requests_get_their_answer() {
    let (child, _stderr, addr) = serve(&["--by", "comm"]);
    for (path, want) in [("/metrics", 200), ("/", 200), ("/nowhere", 404)] {
        for _ in 0..10 {
            let mut s = TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            write!(s, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
            s.shutdown(std::net::Shutdown::Write).unwrap();
            let mut reply = String::new();
            s.read_to_string(&mut reply).unwrap();
            assert!(
                reply.starts_with(&format!("HTTP/1.1 {want} ")),
                "{path}: {reply:?}"
            );
        }
    }
    stop(child);
}

/// Runs openssl with `args` in `dir`.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl");
    assert!(out.status.success(), "openssl {args:?}: {out:?}");
}

/// A CA, and server and client certificates it signed (the server's for
/// 127.0.0.1), as PEM files in `dir`: ca.pem, server.pem, server.key,
/// client.pem, client.key.
fn certificates(dir: &std::path::Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec![
        "req",
        "-x509",
        "-days",
        "2",
        "-subj",
        "/CN=udptrace test CA",
    ];
    ca.extend(ec);
    ca.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
    openssl(dir, &ca);
    for (name, ext) in [
        (
            "server",
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        ),
        ("client", "extendedKeyUsage=clientAuth\n"),
    ] {
        let mut req = vec!["req", "-new", "-subj"];
        let subject = format!("/CN=udptrace test {name}");
        req.push(&subject);
        req.extend(ec);
        let (key, csr, pem, extfile) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.ext"),
        );
        req.extend(["-keyout", &key, "-out", &csr]);
        openssl(dir, &req);
        std::fs::write(dir.join(&extfile), ext).unwrap();
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-days",
                "2",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-extfile",
                &extfile,
                "-out",
                &pem,
            ],
        );
    }
}

/// `curl` against `url` with `args`: the HTTP status (000 where no reply).
fn curl_status(url: &str, args: &[&str]) -> String {
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "20",
        ])
        .args(args)
        .arg(url)
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `serve --web-config-file` as Prometheus exporters take it: TLS with
/// basic auth (a bcrypt hash), then mutual TLS. The distribution's
/// Prometheus scrapes it with `scheme: https`, `tls_config` and
/// `basic_auth`, and fails where the password or the client certificate is
/// wrong; plain HTTP is refused, and curl gets 401 without the password.
#[test]
fn prometheus_scrapes_over_tls_with_basic_auth() {
    let dir = std::env::temp_dir().join(format!("udptrace-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    certificates(&dir);
    let path = |name: &str| dir.join(name).display().to_string();
    let hash = bcrypt::hash("s3cret pass", 6).unwrap();
    // Relative to the file's directory (not serve's), as exporter-toolkit reads them.
    let web = dir.join("web.yml");
    std::fs::write(
        &web,
        format!(
            "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\nbasic_auth_users:\n  scraper: {hash}\n"
        ),
    )
    .unwrap();
    let mutual = dir.join("web-mutual.yml");
    std::fs::write(
        &mutual,
        format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\n  client_ca_file: {}\n  \
             client_auth_type: RequireAndVerifyClientCert\n",
            path("server.pem"),
            path("server.key"),
            path("ca.pem")
        ),
    )
    .unwrap();
    let (child, _stderr, addr) = serve_with(&["--by", "comm"], "https", |cmd| {
        cmd.arg("--web-config-file").arg(&web);
    });
    let (mutual_child, _mutual_stderr, mutual_addr) =
        serve_with(&["--by", "comm"], "https", |cmd| {
            cmd.arg("--web-config-file").arg(&mutual);
        });

    // Plain HTTP is refused; TLS without the password gets 401.
    let (status, _, body) = get(addr, "/metrics", "");
    assert_eq!(status, 400, "{body}");
    let url = format!("https://{addr}/metrics");
    let ca = path("ca.pem");
    assert_eq!(curl_status(&url, &["--cacert", &ca]), "401");
    assert_eq!(
        curl_status(&url, &["--cacert", &ca, "-u", "scraper:wrong"]),
        "401"
    );
    assert_eq!(
        curl_status(&url, &["--cacert", &ca, "-u", "scraper:s3cret pass"]),
        "200"
    );
    let mutual_url = format!("https://{mutual_addr}/metrics");
    assert_eq!(curl_status(&mutual_url, &["--cacert", &ca]), "000");

    let job = |name: &str, target: SocketAddr, extra: &str| {
        format!(
            "  - job_name: {name}\n    scheme: https\n    static_configs:\n      - targets: ['{target}']\n    \
             tls_config:\n      ca_file: {ca}\n{extra}"
        )
    };
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n{}{}{}{}",
            job(
                "tls_auth",
                addr,
                "    basic_auth:\n      username: scraper\n      password: s3cret pass\n"
            ),
            job(
                "tls_wrong_password",
                addr,
                "    basic_auth:\n      username: scraper\n      password: guess\n"
            ),
            job(
                "mutual",
                mutual_addr,
                &format!(
                    "      cert_file: {}\n      key_file: {}\n",
                    path("client.pem"),
                    path("client.key")
                )
            ),
            job("mutual_without_certificate", mutual_addr, ""),
        ),
    )
    .unwrap();
    let web_listen = SocketAddr::from((Ipv4Addr::LOCALHOST, free_tcp_port()));
    let prometheus = Reaped(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", path("data")))
            .arg(format!("--web.listen-address={web_listen}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (the prometheus package)"),
    );
    let up = |job: &str| -> Option<f64> {
        let q = url_encode(&format!("up{{job=\"{job}\"}}"));
        let (status, _, body) =
            try_get(web_listen, &format!("/api/v1/query?query={q}"), "").ok()?;
        if status != 200 {
            return None;
        }
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        v["data"]["result"].as_array()?.first()?["value"][1]
            .as_str()?
            .parse()
            .ok()
    };
    let jobs = [
        ("tls_auth", 1.0),
        ("tls_wrong_password", 0.0),
        ("mutual", 1.0),
        ("mutual_without_certificate", 0.0),
    ];
    let deadline = Instant::now() + Duration::from_secs(60);
    let seen = loop {
        let seen: Vec<(&str, Option<f64>)> = jobs.iter().map(|(j, _)| (*j, up(j))).collect();
        if seen
            .iter()
            .zip(&jobs)
            .all(|((_, got), (_, want))| *got == Some(*want))
            || Instant::now() > deadline
        {
            break seen;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    drop(prometheus);
    stop(child);
    stop(mutual_child);
    let _ = std::fs::remove_dir_all(&dir);
    let want: Vec<(&str, Option<f64>)> = jobs.iter().map(|(j, v)| (*j, Some(*v))).collect();
    assert_eq!(seen, want);
}

#[test]
fn a_bad_web_config_file_is_one_line_and_a_failure() {
    let dir = std::env::temp_dir().join(format!("udptrace-bad-web-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cases = [
        ("tls_server_config:\n  cert_file: /nonexistent/cert.pem\n  key_file: /nonexistent/key.pem\n", "cert_file /nonexistent/cert.pem"),
        ("basic_auth_users:\n  alice: plaintext\n", "the password of 'alice' is not a bcrypt hash"),
        ("tls_server_config: [\n", "web config file"),
    ];
    for (i, (text, want)) in cases.into_iter().enumerate() {
        let file = dir.join(format!("web{i}.yml"));
        std::fs::write(&file, text).unwrap();
        let (code, stderr) = serve_fails(&["--web-config-file", file.to_str().unwrap()]);
        assert_eq!(code, 1, "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(want), "{stderr}");
        assert!(!stderr.contains("Tracing"), "{stderr}");
    }
    let (code, stderr) = serve_fails(&["--web-config-file", "/nonexistent/web.yml"]);
    assert_eq!((code, stderr.lines().count()), (1, 1), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
