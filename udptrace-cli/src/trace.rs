//! `udptrace trace` and `udptrace drops`: stream events as text columns,
//! DTrace's packet lines, or NDJSON; the filter arguments all commands share.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::builder::{PathBufValueParser, TypedValueParser};
use clap::Args;
use udptrace::{
    check_cgroup_path, check_comm, check_container_prefix, check_netns, parse_addr_filter,
    parse_netns, Backend, EventKind, Family, Filter, IpNet, Stats, Tracer, TracerBuilder,
};

use crate::output::{self, Format};
use crate::parse::{parse_pid, parse_port, parse_ring_size, parse_seconds, parse_snaplen, unique};
use crate::sink::Sink;

/// What to trace: the filters and the backend, shared by `trace`, `drops` and `count`.
#[derive(Args, Debug, Default)]
pub struct SelectArgs {
    /// Only this process id (1 to kernel.pid_max - 1)
    #[arg(short, long, value_name = "PID", value_parser = parse_pid)]
    pid: Option<u32>,
    /// Only threads with this name (as in /proc/PID/task/TID/comm)
    #[arg(short, long, value_name = "NAME", value_parser = parse_comm)]
    comm: Option<String>,
    /// Only traffic with this port on either side (a receive's remote side
    /// is its sender, whether or not the reader asked for the address)
    #[arg(long, value_name = "PORT", value_parser = parse_port)]
    pub port: Option<u16>,
    /// Only traffic with an address in this network on either side (10.0.0.1, 10.0.0.0/8, fd00::/8)
    #[arg(long, value_name = "ADDR[/PREFIX]", value_parser = parse_net)]
    addr: Option<IpNet>,
    /// Only tasks in this cgroup v2 or below it: a path below the cgroup
    /// mount (/system.slice/nginx.service) or under it (/sys/fs/cgroup/...)
    #[arg(long, value_name = "PATH", conflicts_with = "container", value_parser = cgroup_parser())]
    cgroup: Option<PathBuf>,
    /// Only tasks of the container whose id starts with this (as docker
    /// takes ids: docker, containerd, CRI-O and Podman cgroups)
    #[arg(long, value_name = "ID", value_parser = parse_container)]
    container: Option<String>,
    /// Only sockets of this network namespace: its inode number (as
    /// `ls -l /proc/PID/ns/net` shows it), net:[N], or a file of it
    /// (/proc/PID/ns/net, /run/netns/NAME)
    #[arg(long, value_name = "NETNS", value_parser = parse_netns_arg)]
    netns: Option<u32>,
    /// Only IPv4 sockets (packets and drops: IPv4 headers)
    #[arg(short = '4', long = "ipv4", conflicts_with = "ipv6")]
    ipv4: bool,
    /// Only IPv6 sockets, including IPv4-mapped traffic on them (packets and drops: IPv6 headers)
    #[arg(short = '6', long = "ipv6")]
    ipv6: bool,
    /// Stop after this many seconds (fractions allowed; at most a year)
    #[arg(short, long, value_name = "SECONDS", value_parser = parse_seconds)]
    pub duration: Option<Duration>,
    /// Probe backend: auto (the best this kernel runs), fentry, kprobe or tracepoint
    #[arg(long, value_name = "NAME", default_value = "auto", value_parser = parse_backend)]
    backend: BackendChoice,
    /// List every attached probe on stderr
    #[arg(short, long)]
    verbose: bool,
}

#[derive(Args, Debug, Default)]
pub struct TraceArgs {
    /// Write one JSON object per event (NDJSON) instead of text columns
    #[arg(long)]
    json: bool,
    /// Only these events (comma-separated, each counted once: send, recv,
    /// connect, close, packet-send, packet-recv, drop) [default: send,recv,connect,close]
    #[arg(short, long, value_name = "LIST", value_delimiter = ',')]
    events: Vec<EventKind>,
    /// Every UDP datagram leaving or arriving, with its IP and UDP headers, in
    /// the format of DTrace's udp provider script (packet-send,packet-recv)
    #[arg(long, conflicts_with = "events")]
    packets: bool,
    /// Also show receives that failed with EAGAIN (busy-polling servers make millions)
    #[arg(long)]
    show_eagain: bool,
    /// Add CONTAINER (short id) and NETNS (inode number) columns to the text
    #[arg(long)]
    wide: bool,
    /// Write the datagrams to FILE as a pcapng capture ('-': standard
    /// output, e.g. `| wireshark -k -i -`), each with its process, cgroup
    /// and direction; packet-send, packet-recv and drop events unless -e
    /// says which
    #[arg(short = 'w', long = "write", value_name = "FILE", conflicts_with_all = ["json", "wide", "show_eagain"])]
    write: Option<PathBuf>,
    /// Capture the first BYTES of each datagram's UDP payload (0 to 65535;
    /// with -w whole datagrams by default, else none): in the capture, or in
    /// --json as hex `payload` with `truncated`
    #[arg(long, value_name = "BYTES", value_parser = parse_snaplen)]
    snaplen: Option<u32>,
    /// Each CPU's ring buffer, in bytes: a power of two of at least 4096, K
    /// and M suffixes allowed [default: 4M on up to 4 CPUs, 16M shared out beyond]
    #[arg(long, value_name = "BYTES", value_parser = parse_ring_size)]
    ring_buffer_size: Option<u32>,
    /// With -w: leave drops out of the capture (by default each drop is a
    /// packet whose comment names the kernel's reason)
    #[arg(long, requires = "write", conflicts_with = "events")]
    no_drops: bool,
    #[command(flatten)]
    select: SelectArgs,
}

/// The payload captured with -w unless --snaplen says otherwise: whole
/// datagrams, as tcpdump and tshark capture them (a DNS answer with DNSSEC
/// or a QUIC Initial is longer than a few hundred bytes). Records are as
/// long as each datagram, so small ones cost no more for it.
const DEFAULT_WRITE_SNAPLEN: u32 = udptrace::MAX_SNAPLEN;

#[derive(Args, Debug, Default)]
pub struct DropsArgs {
    /// Write one JSON object per drop (NDJSON) instead of text columns
    #[arg(long)]
    json: bool,
    /// Add CONTAINER (short id) and NETNS (inode number) columns to the text
    #[arg(long)]
    wide: bool,
    #[command(flatten)]
    select: SelectArgs,
}

// The filters' values are checked by the library's own rules as they are
// parsed: a value it would refuse at start is a usage error, before
// anything is attached.

fn parse_comm(s: &str) -> Result<String, String> {
    check_comm(s).map_err(reason)?;
    Ok(s.into())
}

/// A cgroup path, UTF-8 or not, as a path argument may be.
fn cgroup_parser() -> impl TypedValueParser<Value = PathBuf> {
    PathBufValueParser::new().try_map(|path| {
        check_cgroup_path(&path).map_err(reason)?;
        Ok::<_, String>(path)
    })
}

fn parse_container(s: &str) -> Result<String, String> {
    check_container_prefix(s).map_err(reason)?;
    Ok(s.into())
}

fn parse_netns_arg(s: &str) -> Result<u32, String> {
    let inode = parse_netns(s).map_err(reason)?;
    check_netns(inode).map_err(reason)?;
    Ok(inode)
}

fn parse_net(s: &str) -> Result<IpNet, String> {
    parse_addr_filter(s).map_err(reason)
}

/// Why a filter's value is refused, for clap's `invalid value ... for
/// '--OPTION'`, which says already that it is invalid.
fn reason(e: udptrace::Error) -> String {
    match e {
        udptrace::Error::InvalidFilter(why) => why,
        other => other.to_string(),
    }
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

impl SelectArgs {
    /// The filters, for `kinds` (empty: socket events).
    pub fn filter(&self, kinds: Vec<EventKind>) -> Filter {
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
            cgroup: self.cgroup.clone(),
            container: self.container.clone(),
            netns: self.netns,
            kinds,
        }
    }

    /// A tracer builder with these filters, for `kinds` (empty: socket events).
    pub fn builder(&self, kinds: Vec<EventKind>) -> TracerBuilder {
        let builder = Tracer::builder().filter(self.filter(kinds));
        match self.backend.0 {
            Some(backend) => builder.backend(backend),
            None => builder,
        }
    }

    /// Starts `builder`'s tracer, lets Ctrl-C and SIGTERM stop it (after
    /// draining), and announces it.
    pub fn start(&self, builder: TracerBuilder) -> Result<Tracer> {
        let tracer = builder.start()?;
        let stop = tracer.stop_handle();
        ctrlc::set_handler(move || stop.stop()).context("installing the signal handler")?;
        self.announce(&tracer);
        Ok(tracer)
    }

    /// The `Tracing` line on stderr (and with --verbose each probe).
    pub fn announce(&self, tracer: &Tracer) {
        let until = match self.duration {
            Some(d) => format!(" for {} s; Ctrl-C ends it sooner.", d.as_secs_f64()),
            None => ". Hit Ctrl-C to end.".to_string(),
        };
        for limit in tracer.limits() {
            eprintln!("udptrace: note: {limit}");
        }
        eprintln!(
            "Tracing UDP with the {} backend ({} probes){until}",
            tracer.backend(),
            tracer.probes().len()
        );
        if self.verbose {
            for probe in tracer.probes() {
                eprintln!("  attached {probe}");
            }
        }
    }
}

/// How long the loop waits for an event before checking the clock.
const TICK: Duration = Duration::from_millis(50);

pub fn run(args: TraceArgs) -> Result<()> {
    let kinds = if let (Some(_), true) = (&args.write, args.events.is_empty()) {
        let mut kinds = vec![EventKind::PacketSend, EventKind::PacketRecv];
        if !args.no_drops {
            kinds.push(EventKind::Drop);
        }
        kinds
    } else if args.packets {
        vec![EventKind::PacketSend, EventKind::PacketRecv]
    } else {
        unique(&args.events)
    };
    let snaplen = match (args.snaplen, &args.write) {
        (Some(n), _) => n,
        (None, Some(_)) => DEFAULT_WRITE_SNAPLEN,
        (None, None) => 0,
    };
    if let Some(kind) = kinds.iter().find(|k| !k.is_packet()) {
        if args.write.is_some() {
            anyhow::bail!(
                "-w writes datagrams: {kind} is not one (packet-send, packet-recv and drop are)"
            );
        }
    }
    if snaplen > 0 && !kinds.iter().any(|k| k.is_packet()) {
        anyhow::bail!(
            "--snaplen captures the payload of packet events: add --packets, -e packet-send,packet-recv,drop or -w FILE"
        );
    }
    let format = match (&args.write, args.json, args.packets) {
        (Some(_), _, _) => Format::Pcapng { snaplen },
        (None, true, _) => Format::Json,
        (None, false, true) => Format::Packets,
        (None, false, false) => Format::Text,
    };
    // A file to write is emptied once tracing runs: a failed start leaves an
    // earlier capture of that name as it was, and none where there was none.
    let new_file = match &args.write {
        Some(path) => check_capture(path)?,
        None => NewFile(None),
    };
    let write = args.write.clone();
    let out = move || {
        new_file.keep();
        match &write {
            Some(path) => capture_sink(path, true),
            None => Ok(Sink::stdout()),
        }
    };
    let builder = args
        .select
        .builder(kinds.clone())
        .report_eagain(args.show_eagain)
        .snaplen(snaplen);
    let builder = match args.ring_buffer_size {
        Some(bytes) => builder.ring_buffer_size(bytes),
        None => builder,
    };
    stream(
        builder,
        &args.select,
        output::Writer::new(format, args.wide),
        out,
        &kinds,
    )
}

/// Before tracing starts: whether -w's output can be written, without
/// emptying an existing file. A file it had to create is handed back, to be
/// removed again unless tracing starts.
fn check_capture(path: &Path) -> Result<NewFile> {
    if path.as_os_str() != "-" {
        let created = OpenOptions::new().write(true).create_new(true).open(path);
        if created.is_ok() {
            return Ok(NewFile(Some(path.to_owned())));
        }
    }
    // It exists, or cannot be created: opening it says which.
    capture_sink(path, false)?;
    Ok(NewFile(None))
}

/// A capture file created before tracing started, removed when dropped
/// unless kept: a failed start leaves no empty capture behind.
struct NewFile(Option<PathBuf>);

impl NewFile {
    /// Tracing started: the file is the capture's.
    fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for NewFile {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Where -w writes: a file (emptied if `truncate`), or standard output
/// unless a terminal, which a capture would only garble.
fn capture_sink(path: &Path, truncate: bool) -> Result<Sink> {
    if path.as_os_str() == "-" {
        // SAFETY: isatty only inspects the descriptor.
        if unsafe { libc::isatty(1) } == 1 {
            anyhow::bail!(
                "not writing a binary capture to a terminal: redirect it (> x.pcapng) or pipe it (| wireshark -k -i -)"
            );
        }
        return Ok(Sink::stdout());
    }
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(truncate)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    Ok(Sink::file(file))
}

pub fn run_drops(args: DropsArgs) -> Result<()> {
    let format = if args.json {
        Format::Json
    } else {
        Format::Drops
    };
    let kinds = vec![EventKind::Drop];
    stream(
        args.select.builder(kinds.clone()),
        &args.select,
        output::Writer::new(format, args.wide),
        || Ok(Sink::stdout()),
        &kinds,
    )
}

/// Starts the tracer and writes its events until stopped or `--duration` ends.
fn stream(
    builder: TracerBuilder,
    select: &SelectArgs,
    mut writer: output::Writer,
    out: impl FnOnce() -> Result<Sink>,
    kinds: &[EventKind],
) -> Result<()> {
    let mut tracer = select.start(builder)?;
    let mut out = out()?;
    out.text(|buf| writer.header(buf));
    until_stopped(&mut tracer, &mut out, select.duration, |ev, out| {
        if let Some(ev) = ev {
            out.record(|buf| writer.event(buf, &ev));
        }
    });
    out.flush();
    print_summary(&tracer.stats(), kinds, out.failure().map(|(_, n)| n));
    outcome(&tracer, &out)
}

/// Runs until the tracer stops: on Ctrl-C, at the end of `duration`, or
/// when the output's reader goes away (e.g. `| head`) or it fails (what the
/// tracer still delivers then counts as not written). Hands `each` every
/// event, and None on each idle tick.
pub(crate) fn until_stopped(
    tracer: &mut Tracer,
    out: &mut Sink,
    duration: Option<Duration>,
    mut each: impl FnMut(Option<udptrace::Event>, &mut Sink),
) {
    let deadline = duration.map(|d| Instant::now() + d);
    while !tracer.is_finished() {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            tracer.stop();
        }
        let ev = next_event(tracer, out);
        each(ev, out);
        if !out.is_open() {
            tracer.stop();
        }
    }
}

/// How a run ends, once its summary is out: an error if the tracer stopped
/// early or the output failed.
pub(crate) fn outcome(tracer: &Tracer, out: &Sink) -> Result<()> {
    if let Some(err) = tracer.error() {
        anyhow::bail!("tracing stopped early: {err}");
    }
    match out.failure() {
        Some((e, _)) => Err(anyhow::anyhow!("writing the output: {e}")),
        None => Ok(()),
    }
}

/// The next event: at once if one is waiting, else within a tick, after
/// flushing the output (only when caught up, so that a flood is written in
/// large blocks) and noticing whether its reader went away.
pub(crate) fn next_event(tracer: &mut Tracer, out: &mut Sink) -> Option<udptrace::Event> {
    if let Some(ev) = tracer.recv_timeout(Duration::ZERO) {
        return Some(ev);
    }
    out.flush();
    out.check_reader();
    tracer.recv_timeout(TICK)
}

/// Counts of the kinds asked for (empty: the socket events), and every loss:
/// events the kernel could not queue, and events a failed output did not take.
fn print_summary(stats: &Stats, kinds: &[EventKind], not_written: Option<u64>) {
    let kinds = if kinds.is_empty() {
        &EventKind::SOCKET[..]
    } else {
        kinds
    };
    let kinds: Vec<String> = kinds
        .iter()
        .map(|k| format!("{} {}", k, stats.events_of(*k)))
        .collect();
    let mut line = format!(
        "{} events ({}); lost {}",
        stats.total_events(),
        kinds.join(", "),
        stats.lost
    );
    if let Some(n) = not_written {
        line += &format!("; not written {n}");
    }
    if stats.recv_eagain > 0 {
        line += &format!("; EAGAIN receives not shown {}", stats.recv_eagain);
    }
    if stats.recv_peek > 0 {
        line += &format!("; MSG_PEEK receives not shown {}", stats.recv_peek);
    }
    if stats.connect_failed > 0 {
        line += &format!("; failed connects {}", stats.connect_failed);
    }
    line += &table_shortfalls(stats);
    if stats.undecodable > 0 {
        line += &format!("; undecodable records {}", stats.undecodable);
    }
    eprintln!("{line}");
}

/// What the kernel could not follow, for every view's summary: runs of a
/// hook it skipped, and what its tables had no room for; empty when nothing.
pub(crate) fn table_shortfalls(stats: &Stats) -> String {
    let mut text = String::new();
    if stats.skipped > 0 {
        text += &format!(
            "; hook runs the kernel skipped {} (a task preempted in a hook: up to as many events missing or without their sender)",
            stats.skipped
        );
    }
    if stats.connect_full > 0 {
        text += &format!(
            "; connects not followed (connect table full) {}",
            stats.connect_full
        );
    }
    // Of the events the filters select.
    if stats.counters_full > 0 {
        text += &format!(
            "; events without socket counters (socket table full) {}",
            stats.counters_full
        );
    }
    // Shown with an unspecified remote end; an address or port filter kept
    // only those whose local side it matched.
    if stats.recv_sender_unknown > 0 {
        text += &format!("; receives of unknown sender {}", stats.recv_sender_unknown);
    }
    text
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use proptest::prelude::*;
    use proptest::sample::select;

    use super::*;
    use crate::{Cli, Command};

    fn trace_args(argv: &[&str]) -> Result<TraceArgs, clap::Error> {
        let cli = Cli::try_parse_from(["udptrace", "trace"].iter().chain(argv))?;
        match cli.command {
            Some(Command::Trace(args)) => Ok(args),
            _ => unreachable!("trace parses as trace"),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn any_event_list_is_known_kinds_or_an_error(s in "\\PC{0,40}") {
            if let Ok(args) = trace_args(&["-e", &s]) {
                let names: Vec<&str> = args.events.iter().map(|k| k.name()).collect();
                prop_assert_eq!(names.join(","), s);
            }
        }

        #[test]
        fn event_lists_round_trip_and_count_each_kind_once(
            kinds in proptest::collection::vec(select(EventKind::ALL.to_vec()), 1..12),
        ) {
            let text = kinds.iter().map(|k| k.name()).collect::<Vec<_>>().join(",");
            let args = trace_args(&["-e", &text]).unwrap();
            prop_assert_eq!(&args.events, &kinds);
            let once = unique(&args.events);
            prop_assert!(kinds.iter().all(|k| once.contains(k)));
            prop_assert!(once.iter().all(|k| once.iter().filter(|j| *j == k).count() == 1));
        }

        #[test]
        fn any_address_text_is_a_network_or_an_error(s in "[0-9a-f.:/]{0,40}") {
            if let Ok(args) = trace_args(&["--addr", &s]) {
                prop_assert!(args.select.addr.is_some());
            }
        }
    }
}
