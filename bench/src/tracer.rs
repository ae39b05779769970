//! The tracing tools under test, each run as its own process so that its CPU
//! time and memory are its own.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::serve::{self, Scraper};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// The load alone.
    Untraced,
    /// udptrace socket events, every one delivered to a consumer that decodes it.
    UdptraceEvents,
    /// udptrace packet events (packet-send, packet-recv), every one decoded.
    UdptracePackets,
    /// The same with the payload captured: --snaplen 64 (all of the load's
    /// datagrams) and whole datagrams (snap length 65535, as `-w` captures).
    UdptracePayload64,
    UdptracePayloadWhole,
    /// udptrace counting sends and receives by destination port in the kernel.
    UdptraceCount,
    /// `udptrace latency --by dport`: receives' times in the queue, added up
    /// into histograms in the kernel.
    UdptraceLatency,
    /// udptrace drop events alone, while the load drops nothing (or little):
    /// what watching for drops costs the traffic that is not dropped.
    UdptraceDrops,
    /// `udptrace top`: sends, receives and drops counted by process and
    /// event (and drop reason) in the kernel.
    UdptraceTop,
    /// `udptrace serve` (the binary), scraped every second: `top`'s hooks
    /// counting by task name, event, drop reason and errno.
    UdptraceServe,
    /// Tracking sockets (`udptrace life`): each socket's counters, peer,
    /// drops and receive-queue peak, close events only.
    UdptraceSockets,
    /// Tracking receive buffers alone (`udptrace rcvbuf`): each socket's
    /// drops and receive-queue peak, from the receive side's hooks.
    UdptraceRcvbuf,
    /// The hook floor of each udptrace mode: the cheapest program on each
    /// of the hooks that mode attaches.
    FloorEvents,
    FloorPackets,
    FloorCount,
    FloorLatency,
    FloorDrops,
    FloorTop,
    FloorSockets,
    FloorRcvbuf,
    /// bpftrace printing every UDP send and receive from the same tracepoints.
    Bpftrace,
    /// tcpdump capturing UDP on loopback to /dev/null.
    Tcpdump,
}

impl Scenario {
    pub const ALL: [Scenario; 22] = [
        Self::Untraced,
        Self::UdptraceEvents,
        Self::FloorEvents,
        Self::UdptracePackets,
        Self::UdptracePayload64,
        Self::UdptracePayloadWhole,
        Self::FloorPackets,
        Self::UdptraceCount,
        Self::FloorCount,
        Self::UdptraceLatency,
        Self::FloorLatency,
        Self::UdptraceDrops,
        Self::FloorDrops,
        Self::UdptraceTop,
        Self::FloorTop,
        Self::UdptraceServe,
        Self::UdptraceSockets,
        Self::FloorSockets,
        Self::UdptraceRcvbuf,
        Self::FloorRcvbuf,
        Self::Bpftrace,
        Self::Tcpdump,
    ];

    /// Ours: run by the benchmark's own consumer, which reports counted losses.
    pub fn is_udptrace(self) -> bool {
        matches!(
            self,
            Self::UdptraceEvents
                | Self::UdptracePackets
                | Self::UdptracePayload64
                | Self::UdptracePayloadWhole
                | Self::UdptraceCount
                | Self::UdptraceLatency
                | Self::UdptraceDrops
                | Self::UdptraceTop
                | Self::UdptraceServe
                | Self::UdptraceSockets
                | Self::UdptraceRcvbuf
        )
    }

    /// Whether its tool has something to report in every round: drops
    /// happen only when the load overflows a receive buffer.
    pub fn always_reports(self) -> bool {
        !matches!(self, Self::UdptraceDrops | Self::FloorDrops)
    }

    /// A udptrace mode's hook floor.
    pub fn floor(self) -> Option<Scenario> {
        match self {
            Self::UdptraceEvents => Some(Self::FloorEvents),
            Self::UdptracePackets | Self::UdptracePayload64 | Self::UdptracePayloadWhole => {
                Some(Self::FloorPackets)
            }
            Self::UdptraceCount => Some(Self::FloorCount),
            Self::UdptraceLatency => Some(Self::FloorLatency),
            Self::UdptraceDrops => Some(Self::FloorDrops),
            // The same hooks as top's.
            Self::UdptraceTop | Self::UdptraceServe => Some(Self::FloorTop),
            Self::UdptraceSockets => Some(Self::FloorSockets),
            Self::UdptraceRcvbuf => Some(Self::FloorRcvbuf),
            _ => None,
        }
    }

    /// The benchmark's own subcommand that runs this scenario's tool, if
    /// it is ours: it prints a JSON line of results when stopped.
    fn own_command(self) -> Option<(&'static str, &'static str)> {
        Some(match self {
            Self::UdptraceEvents => ("consume", "events"),
            Self::UdptracePackets => ("consume", "packets"),
            Self::UdptracePayload64 => ("consume", "payload64"),
            Self::UdptracePayloadWhole => ("consume", "payload-whole"),
            Self::UdptraceCount => ("consume", "count"),
            Self::UdptraceLatency => ("consume", "latency"),
            Self::FloorLatency => ("floor", "latency"),
            Self::FloorEvents => ("floor", "events"),
            Self::FloorPackets => ("floor", "packets"),
            Self::FloorCount => ("floor", "count"),
            Self::UdptraceDrops => ("consume", "drops"),
            Self::FloorDrops => ("floor", "drops"),
            Self::UdptraceTop => ("consume", "top"),
            Self::FloorTop => ("floor", "top"),
            Self::UdptraceSockets => ("consume", "sockets"),
            Self::FloorSockets => ("floor", "sockets"),
            Self::UdptraceRcvbuf => ("consume", "rcvbuf"),
            Self::FloorRcvbuf => ("floor", "rcvbuf"),
            _ => return None,
        })
    }

    fn is_ours(self) -> bool {
        self.own_command().is_some()
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Untraced => "untraced",
            Self::UdptraceEvents => "udptrace socket events",
            Self::UdptracePackets => "udptrace packet events",
            Self::UdptracePayload64 => "udptrace packet events, --snaplen 64",
            Self::UdptracePayloadWhole => "udptrace packet events, whole datagrams (-w's default)",
            Self::UdptraceCount => "udptrace count --by dport",
            Self::FloorEvents => "hook floor of socket events",
            Self::FloorPackets => "hook floor of packet events",
            Self::FloorCount => "hook floor of count",
            Self::UdptraceLatency => "udptrace latency --by dport",
            Self::FloorLatency => "hook floor of latency",
            Self::UdptraceDrops => "udptrace drops",
            Self::FloorDrops => "hook floor of drops",
            Self::UdptraceTop => "udptrace top",
            Self::FloorTop => "hook floor of top",
            Self::UdptraceServe => "udptrace serve, scraped every 1 s",
            Self::UdptraceSockets => "udptrace life (sockets tracked)",
            Self::FloorSockets => "hook floor of life",
            Self::UdptraceRcvbuf => "udptrace rcvbuf (receive buffers)",
            Self::FloorRcvbuf => "hook floor of rcvbuf",
            Self::Bpftrace => "bpftrace printf per event",
            Self::Tcpdump => "tcpdump -w /dev/null",
        }
    }
}

/// What a tracer reported about one run.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct TracerRun {
    /// Events the tool delivered to its consumer (lines, records, packets).
    pub events: u64,
    /// Events the tool says it lost.
    pub lost: u64,
    /// User + system CPU seconds of the tool while the load ran.
    pub cpu_seconds: f64,
    /// Peak resident memory of the tool, KiB.
    pub peak_rss_kib: u64,
    /// From start to "every probe attached", ms.
    pub attach_ms: f64,
    /// Time the kernel spent running the tool's BPF programs, ns (with
    /// `--bpf-stats`, else 0).
    pub bpf_ns: u64,
}

const BPFTRACE_SCRIPT: &str = r#"
tracepoint:sock:sock_send_length /args->protocol == 17/ { printf("%d %s send %d\n", pid, comm, args->ret); }
tracepoint:sock:sock_recv_length /args->protocol == 17/ { printf("%d %s recv %d\n", pid, comm, args->ret); }
"#;

/// A running tracer process and the lines it printed.
pub struct Running {
    scenario: Scenario,
    child: Child,
    lines: mpsc::Receiver<String>,
    event_lines: Arc<AtomicU64>,
    started: Instant,
    /// When it was started, as program load times count (CLOCK_BOOTTIME).
    started_boottime: Duration,
    attach_ms: f64,
    cpu_at_ready: f64,
    /// `serve`: what scrapes it.
    scraper: Option<Scraper>,
}

/// Reads a tool's output: per-event lines (bpftrace's printf) are only
/// counted, the rest is passed on.
fn spawn_reader(
    stream: impl std::io::Read + Send + 'static,
    tx: mpsc::Sender<String>,
    events: Arc<AtomicU64>,
) {
    thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if line.contains(" send ") || line.contains(" recv ") {
                events.fetch_add(1, Ordering::Relaxed);
            } else if tx.send(line).is_err() {
                break;
            }
        }
    });
}

/// Ends a tool as Ctrl-C would: SIGINT, sent again if it is still running
/// after a while (bpftrace has once missed one), then SIGKILL, so that a
/// tool that never stops fails the run instead of hanging it.
fn interrupt(child: &mut Child) -> Result<std::process::ExitStatus> {
    const PATIENCE: Duration = Duration::from_secs(10);
    for signal in [libc::SIGINT, libc::SIGINT, libc::SIGKILL] {
        // SAFETY: signalling our own child, not yet reaped.
        unsafe { libc::kill(child.id() as i32, signal) };
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait()? {
                if signal == libc::SIGKILL {
                    bail!("pid {} ignored SIGINT twice and was killed", child.id());
                }
                return Ok(status);
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
    bail!("pid {} did not exit even on SIGKILL", child.id())
}

/// tracepoint:* in bpftrace needs tracefs, which is not always mounted.
pub fn ensure_tracefs() -> Result<()> {
    if Path::new("/sys/kernel/tracing/events").exists() {
        return Ok(());
    }
    let status = Command::new("mount")
        .args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"])
        .status()?;
    if !status.success() {
        bail!("cannot mount tracefs at /sys/kernel/tracing (bpftrace needs it)");
    }
    Ok(())
}

/// Starts the tool and waits until it has attached; `None` for `Untraced`.
pub fn start(scenario: Scenario) -> Result<Option<Running>> {
    let mut serve_addr = None;
    let (mut cmd, ready): (Command, &str) = match scenario {
        Scenario::Untraced => return Ok(None),
        Scenario::Bpftrace => {
            let mut c = Command::new("bpftrace");
            c.args(["-e", BPFTRACE_SCRIPT]);
            (c, "Attaching")
        }
        Scenario::Tcpdump => {
            let mut c = Command::new("tcpdump");
            c.args(["-i", "lo", "-n", "-w", "/dev/null", "udp"]);
            (c, "listening on")
        }
        Scenario::UdptraceServe => {
            serve_addr = Some(serve::listen_addr()?);
            (serve::command(serve_addr.unwrap(), &[])?, serve::READY)
        }
        ours => {
            let (command, what) = ours.own_command().expect("run by the benchmark");
            let mut c = Command::new(std::env::current_exe()?);
            c.args([command, what]);
            (c, "ready")
        }
    };
    let started = Instant::now();
    let started_boottime = boottime();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {} (is it installed?)", scenario.name()))?;
    let (tx, lines) = mpsc::channel();
    let event_lines = Arc::new(AtomicU64::new(0));
    spawn_reader(
        child.stdout.take().unwrap(),
        tx.clone(),
        event_lines.clone(),
    );
    spawn_reader(child.stderr.take().unwrap(), tx, event_lines.clone());
    let deadline = started + Duration::from_secs(30);
    let mut last_line = String::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains(ready) => break,
            Ok(line) => last_line = line,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                bail!("{} did not start within 30 s", scenario.name());
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.wait()?;
                bail!("{} exited ({status}): {last_line}", scenario.name());
            }
        }
    }
    let attach_ms = started.elapsed().as_secs_f64() * 1e3;
    let cpu_at_ready = cpu_seconds(child.id());
    Ok(Some(Running {
        scenario,
        child,
        lines,
        event_lines,
        started,
        started_boottime,
        attach_ms,
        cpu_at_ready,
        scraper: serve_addr.map(Scraper::start),
    }))
}

impl Running {
    /// Stops the tool and collects what it delivered and lost.
    pub fn stop(mut self) -> Result<TracerRun> {
        // What serve counted, as a scrape shows it, before it stops.
        let scraped = self.scraper.take().map(Scraper::finish).transpose()?;
        let pid = self.child.id();
        let cpu = cpu_seconds(pid) - self.cpu_at_ready;
        let peak_rss_kib = status_kib(pid, "VmHWM:");
        let bpf_ns = bpf_run_time_since(self.started_boottime);
        let status = interrupt(&mut self.child)?;
        // The readers finish when the pipes close.
        thread::sleep(Duration::from_millis(100));
        let lines: Vec<String> = self.lines.try_iter().collect();
        let mut run = TracerRun {
            cpu_seconds: cpu,
            peak_rss_kib,
            attach_ms: self.attach_ms,
            bpf_ns,
            ..Default::default()
        };
        match self.scenario {
            Scenario::Untraced => {}
            Scenario::Bpftrace => {
                run.events = self.event_lines.load(Ordering::Relaxed);
                run.lost = lines
                    .iter()
                    .filter_map(|l| number_before(l, " events"))
                    .sum();
            }
            Scenario::UdptraceServe => {
                let body = scraped.unwrap_or_default();
                run.events = serve::total(&body, "udptrace_datagrams_total")
                    + serve::total(&body, "udptrace_drops_total");
                run.lost = serve::total(&body, "udptrace_lost_events_total")
                    + serve::total(&body, "udptrace_kernel_table_full_events_total");
            }
            Scenario::Tcpdump => {
                run.events = lines
                    .iter()
                    .find_map(|l| number_before(l, " packets captured"))
                    .unwrap_or(0);
                run.lost = lines
                    .iter()
                    .find_map(|l| number_before(l, " packets dropped by kernel"))
                    .unwrap_or(0);
            }
            // The benchmark's own: udptrace's consumer or a hook floor.
            _ => {
                let last = lines.iter().rev().find(|l| l.starts_with('{'));
                let v: serde_json::Value =
                    serde_json::from_str(last.context("no result from the consumer")?)?;
                run.events = v["events"].as_u64().unwrap_or(0);
                run.lost = v["lost"].as_u64().unwrap_or(0);
            }
        }
        if !status.success()
            && (self.scenario.is_ours() || self.scenario == Scenario::UdptraceServe)
        {
            bail!(
                "{} failed after {:?}",
                self.scenario.name(),
                self.started.elapsed()
            );
        }
        Ok(run)
    }
}

/// Turns on the kernel's per-program run-time accounting (which itself costs
/// two clock reads per program run); the previous setting is put back when
/// the returned guard is dropped.
pub fn enable_bpf_stats() -> Result<BpfStatsGuard> {
    let previous = std::fs::read_to_string(BPF_STATS_SYSCTL)
        .with_context(|| format!("reading {BPF_STATS_SYSCTL}"))?;
    std::fs::write(BPF_STATS_SYSCTL, "1").with_context(|| format!("writing {BPF_STATS_SYSCTL}"))?;
    Ok(BpfStatsGuard { previous })
}

const BPF_STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

pub struct BpfStatsGuard {
    previous: String,
}

impl Drop for BpfStatsGuard {
    fn drop(&mut self) {
        let _ = std::fs::write(BPF_STATS_SYSCTL, self.previous.trim());
    }
}

/// Run time of the BPF programs loaded since `since`: the tool's own (each
/// scenario's tool is the only one loading programs while it runs).
fn bpf_run_time_since(since: Duration) -> u64 {
    libbpf_rs::query::ProgInfoIter::default()
        .filter(|p| p.load_time >= since)
        .map(|p| p.run_time_ns)
        .sum()
}

/// A loaded program's accounting so far (kernel.bpf_stats_enabled).
pub struct ProgramRunTime {
    id: u32,
    name: String,
    run_time_ns: u64,
    runs: u64,
}

pub fn program_run_times() -> Vec<ProgramRunTime> {
    libbpf_rs::query::ProgInfoIter::default()
        .map(|p| ProgramRunTime {
            id: p.id,
            name: p.name.to_string_lossy().into_owned(),
            run_time_ns: p.run_time_ns,
            runs: p.run_cnt,
        })
        .collect()
}

/// The programs that ran between two samples: runs, ns per run, and ns per
/// datagram received.
pub fn print_program_costs(before: &[ProgramRunTime], after: &[ProgramRunTime], datagrams: u64) {
    println!("| program | runs | ns/run | ns/datagram |\n| --- | ---: | ---: | ---: |");
    for p in after {
        let (ns0, runs0) = before
            .iter()
            .find(|b| b.id == p.id)
            .map_or((0, 0), |b| (b.run_time_ns, b.runs));
        let (ns, runs) = (p.run_time_ns - ns0, p.runs - runs0);
        if runs > 0 {
            println!(
                "| {} | {runs} | {:.0} | {:.1} |",
                p.name,
                ns as f64 / runs as f64,
                ns as f64 / datagrams.max(1) as f64
            );
        }
    }
}

fn boottime() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// `12 packets captured` → 12; `Lost 5 events` → 5.
fn number_before(line: &str, suffix: &str) -> Option<u64> {
    let head = &line[..line.find(suffix)?];
    head.split_whitespace().last()?.parse().ok()
}

fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the parenthesised comm; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    ticks as f64 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(key).map(str::to_owned))
        })
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::number_before;

    #[test]
    fn parses_tool_summaries() {
        assert_eq!(
            number_before("1234 packets captured", " packets captured"),
            Some(1234)
        );
        assert_eq!(
            number_before("0 packets dropped by kernel", " packets dropped by kernel"),
            Some(0)
        );
        assert_eq!(number_before("Lost 77 events", " events"), Some(77));
        assert_eq!(number_before("Attaching 2 probes...", " events"), None);
    }
}
