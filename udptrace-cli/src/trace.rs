//! `udptrace trace`: stream socket events as text columns or NDJSON.

use std::io::{self, BufWriter, Write};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use udptrace::{parse_addr_filter, Backend, EventKind, Family, Filter, IpNet, Stats, Tracer};

use crate::output::{self, Format};

#[derive(Args, Debug, Default)]
pub struct TraceArgs {
    /// Write one JSON object per event (NDJSON) instead of text columns
    #[arg(long)]
    json: bool,
    /// Only this process id
    #[arg(short, long, value_name = "PID")]
    pid: Option<u32>,
    /// Only threads with this name (as in /proc/PID/task/TID/comm)
    #[arg(short, long, value_name = "NAME")]
    comm: Option<String>,
    /// Only traffic with this port on either side
    #[arg(long, value_name = "PORT")]
    port: Option<u16>,
    /// Only traffic with an address in this network on either side (10.0.0.1, 10.0.0.0/8, fd00::/8)
    #[arg(long, value_name = "ADDR[/PREFIX]", value_parser = parse_net)]
    addr: Option<IpNet>,
    /// Only IPv4 sockets
    #[arg(short = '4', long = "ipv4", conflicts_with = "ipv6")]
    ipv4: bool,
    /// Only IPv6 sockets (including IPv4-mapped traffic on them)
    #[arg(short = '6', long = "ipv6")]
    ipv6: bool,
    /// Only these events (comma-separated: send,recv,connect,close)
    #[arg(short, long, value_name = "LIST", value_delimiter = ',')]
    events: Vec<EventKind>,
    /// Stop after this many seconds (fractions allowed)
    #[arg(short, long, value_name = "SECONDS", value_parser = parse_seconds)]
    duration: Option<Duration>,
    /// Also show receives that failed with EAGAIN (busy-polling servers make millions)
    #[arg(long)]
    show_eagain: bool,
    /// Probe backend: auto (the best this kernel runs), fentry, kprobe or tracepoint
    #[arg(long, value_name = "NAME", default_value = "auto", value_parser = parse_backend)]
    backend: BackendChoice,
    /// List every attached probe on stderr
    #[arg(short, long)]
    verbose: bool,
}

fn parse_net(s: &str) -> Result<IpNet, String> {
    parse_addr_filter(s).map_err(|e| e.to_string())
}

fn parse_seconds(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("'{s}' is not a number of seconds"))?;
    Duration::try_from_secs_f64(secs)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("'{s}' is not a positive number of seconds"))
}

/// `auto` (None) or a forced backend.
#[derive(Debug, Clone, Copy, Default)]
struct BackendChoice(Option<Backend>);

fn parse_backend(s: &str) -> Result<BackendChoice, String> {
    match s {
        "auto" => Ok(BackendChoice(None)),
        other => other.parse().map(|b| BackendChoice(Some(b))),
    }
}

impl TraceArgs {
    fn filter(&self) -> Filter {
        Filter {
            pid: self.pid,
            comm: self.comm.clone(),
            family: match (self.ipv4, self.ipv6) {
                (true, _) => Some(Family::V4),
                (_, true) => Some(Family::V6),
                _ => None,
            },
            port: self.port,
            addr: self.addr,
            kinds: self.events.clone(),
        }
    }
}

/// How long the loop waits for an event before checking the clock.
const TICK: Duration = Duration::from_millis(50);

pub fn run(args: TraceArgs) -> Result<()> {
    let mut builder = Tracer::builder()
        .filter(args.filter())
        .report_eagain(args.show_eagain);
    if let Some(backend) = args.backend.0 {
        builder = builder.backend(backend);
    }
    let mut tracer = builder.start()?;
    let stop = tracer.stop_handle();
    ctrlc::set_handler(move || stop.stop()).context("installing the signal handler")?;

    eprintln!(
        "Tracing UDP with the {} backend ({} probes). Hit Ctrl-C to end.",
        tracer.backend(),
        tracer.probes().len()
    );
    if args.verbose {
        for probe in tracer.probes() {
            eprintln!("  attached {probe}");
        }
    }

    let format = if args.json {
        Format::Json
    } else {
        Format::Text
    };
    let deadline = args.duration.map(|d| Instant::now() + d);
    let mut out = BufWriter::with_capacity(64 << 10, io::stdout().lock());
    if format == Format::Text {
        output::write_header(&mut out)?;
    }
    let mut out_open = true;
    while !tracer.is_finished() {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            tracer.stop();
        }
        // Flush only when caught up, so a flood is written in large blocks.
        let ev = match tracer.recv_timeout(Duration::ZERO) {
            Some(ev) => Some(ev),
            None => {
                if out_open && out.flush().is_err() {
                    out_open = false;
                    tracer.stop();
                }
                tracer.recv_timeout(TICK)
            }
        };
        if let (Some(ev), true) = (ev, out_open) {
            if output::write_event(&mut out, format, &ev).is_err() {
                // The reader went away (e.g. `| head`): stop quietly.
                out_open = false;
                tracer.stop();
            }
        }
    }
    if out_open {
        let _ = out.flush();
    }
    print_summary(&tracer.stats());
    if let Some(err) = tracer.error() {
        anyhow::bail!("tracing stopped early: {err}");
    }
    Ok(())
}

fn print_summary(stats: &Stats) {
    let kinds: Vec<String> = EventKind::ALL
        .iter()
        .map(|k| format!("{} {}", k, stats.events_of(*k)))
        .collect();
    let mut line = format!(
        "{} events ({}); lost {}",
        stats.total_events(),
        kinds.join(", "),
        stats.lost
    );
    if stats.recv_eagain > 0 {
        line += &format!("; EAGAIN receives not shown {}", stats.recv_eagain);
    }
    if stats.recv_peek > 0 {
        line += &format!("; MSG_PEEK receives not shown {}", stats.recv_peek);
    }
    if stats.connect_failed > 0 {
        line += &format!("; failed connects {}", stats.connect_failed);
    }
    if stats.counters_full > 0 {
        line += &format!(
            "; datagrams without socket counters (map full) {}",
            stats.counters_full
        );
    }
    if stats.undecodable > 0 {
        line += &format!("; undecodable records {}", stats.undecodable);
    }
    eprintln!("{line}");
}
