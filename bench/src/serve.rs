//! `udptrace serve` under the benchmark: the real binary, scraped every
//! second as Prometheus would; and its scale: the time a scrape of 10,000
//! series takes and the exporter's memory.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The CLI binary: `UDPTRACE_BIN`, else the one built beside the benchmark.
pub fn udptrace_bin() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("UDPTRACE_BIN") {
        return Ok(bin.into());
    }
    let bin = std::env::current_exe()?.with_file_name("udptrace");
    if !bin.exists() {
        bail!(
            "{} is missing: build it first (cargo build --release -p udptrace-cli), \
             or name the binary in UDPTRACE_BIN",
            bin.display()
        );
    }
    Ok(bin)
}

/// A free loopback port for `serve` to listen on.
pub fn listen_addr() -> Result<SocketAddr> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?)
}

/// `serve` on `addr` with `args`, not yet waited for.
pub fn command(addr: SocketAddr, args: &[&str]) -> Result<Command> {
    let mut c = Command::new(udptrace_bin()?);
    c.args(["serve", "--listen", &addr.to_string()]).args(args);
    Ok(c)
}

/// The line `serve` prints once it serves.
pub const READY: &str = "Serving Prometheus metrics";

/// One scrape of `/metrics`: its body.
pub fn scrape(addr: SocketAddr) -> Result<String> {
    let mut s = TcpStream::connect(addr).context("connecting to serve")?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")?;
    let mut reply = String::new();
    s.read_to_string(&mut reply)?;
    match reply.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.1 200") => Ok(body.to_string()),
        _ => bail!(
            "serve answered: {}",
            reply.lines().next().unwrap_or("nothing")
        ),
    }
}

/// The sum of a metric's samples in a text-format scrape.
pub fn total(body: &str, name: &str) -> u64 {
    body.lines()
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Scrapes every second, as Prometheus would, until stopped; keeps the last body.
pub struct Scraper {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    last: Arc<Mutex<Option<String>>>,
    thread: thread::JoinHandle<()>,
}

impl Scraper {
    pub fn start(addr: SocketAddr) -> Scraper {
        let stop = Arc::new(AtomicBool::new(false));
        let last = Arc::new(Mutex::new(None));
        let thread = {
            let (stop, last) = (stop.clone(), last.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(body) = scrape(addr) {
                        *last.lock().unwrap() = Some(body);
                    }
                    for _ in 0..10 {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        thread::sleep(Duration::from_millis(100));
                    }
                }
            })
        };
        Scraper {
            addr,
            stop,
            last,
            thread,
        }
    }

    /// Stops scraping and takes a last scrape: everything counted so far.
    pub fn finish(self) -> Result<String> {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        scrape(self.addr).or_else(|e| self.last.lock().unwrap().take().context(e))
    }
}

/// The scale check's result.
#[derive(Debug, serde::Serialize)]
pub struct Scale {
    pub series: u64,
    /// Median of the scrapes, ms.
    pub scrape_ms: f64,
    pub scrapes_ms: Vec<f64>,
    pub peak_rss_mib: f64,
}

/// `serve --by dport` with a datagram to each of `ports` closed ports (a
/// send and a drop each: one label set per port); times a few scrapes and
/// reads the exporter's peak memory.
pub fn scale(ports: u16) -> Result<Scale> {
    let addr = listen_addr()?;
    let mut child: Child = command(addr, &["--by", "dport", "--max-series", "20000"])?
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting udptrace serve")?;
    let stderr = child.stderr.take().expect("piped");
    let ready = thread::spawn(move || {
        let mut text = String::new();
        let mut stderr = stderr;
        let mut buf = [0u8; 256];
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 {
                break;
            }
            text.push_str(&String::from_utf8_lossy(&buf[..n]));
            if text.contains(READY) {
                return true;
            }
        }
        false
    });
    if !ready.join().unwrap_or(false) {
        let _ = child.kill();
        bail!("udptrace serve did not start");
    }
    let tx = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
    // High ports nothing listens on, well away from the ephemeral range's usual traffic.
    for port in 0..ports {
        tx.send_to(b"series", (Ipv4Addr::LOCALHOST, 20_000 + port))?;
    }
    let mut scrapes_ms = Vec::new();
    let mut body = String::new();
    for _ in 0..5 {
        let started = Instant::now();
        body = scrape(addr)?;
        scrapes_ms.push(started.elapsed().as_secs_f64() * 1e3);
    }
    let peak_rss_kib = std::fs::read_to_string(format!("/proc/{}/status", child.id()))
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmHWM:"))?.to_string();
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .unwrap_or(0);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait()?;
    if !status.success() {
        bail!("udptrace serve failed: {status}");
    }
    let mut sorted = scrapes_ms.clone();
    sorted.sort_by(f64::total_cmp);
    Ok(Scale {
        series: total(&body, "udptrace_series"),
        scrape_ms: sorted[sorted.len() / 2],
        scrapes_ms,
        peak_rss_mib: peak_rss_kib as f64 / 1024.0,
    })
}
