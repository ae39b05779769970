//! udptrace-bench: what tracing UDP costs, measured side by side.
//!
//! Runs the same loopback UDP flood untraced and under each tool, interleaved
//! over several rounds (these machines are noisy: only ratios taken in one
//! run mean anything), and reports datagrams/s, the ratio to untraced, events
//! delivered and lost, the tool's CPU time, peak memory and attach time.

mod floor;
mod load;
mod serve;
mod tracer;

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tracer::{Scenario, TracerRun};

#[derive(Parser)]
#[command(
    name = "udptrace-bench",
    version,
    about,
    after_help = "Needs root, bpftrace and tcpdump."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    /// About three minutes: 3 rounds of 2 s per scenario
    #[arg(long, conflicts_with = "full")]
    quick: bool,
    /// 5 rounds of 10 s per scenario
    #[arg(long)]
    full: bool,
    /// Rounds (each runs every scenario once, in turn)
    #[arg(long)]
    rounds: Option<usize>,
    /// Seconds of load per scenario and round
    #[arg(long)]
    seconds: Option<f64>,
    #[arg(long, default_value_t = 1)]
    senders: usize,
    #[arg(long, default_value_t = 1)]
    receivers: usize,
    /// UDP payload bytes
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// Datagrams per sendmmsg / recvmmsg call
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// IPv6 (::1) instead of IPv4 (127.0.0.1)
    #[arg(short = '6', long)]
    ipv6: bool,
    /// Where to write results.json and results.md
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// Also measure the time the kernel spends in each tool's BPF programs,
    /// per datagram (kernel.bpf_stats_enabled, which slows every program
    /// run a little: compare throughput ratios without it)
    #[arg(long)]
    bpf_stats: bool,
    /// Exit non-zero unless every scenario ran and udptrace lost no event
    /// (the CI smoke test: ratios are left to people, not to a noisy machine)
    #[arg(long)]
    check: bool,
}

#[derive(Subcommand)]
enum Cmd {
    /// (internal) The udptrace consumer: decodes every event (or reads the
    /// count table) until SIGINT, then prints what it got and what was lost
    #[command(hide = true)]
    Consume {
        #[arg(value_enum)]
        what: Consume,
    },
    /// (internal) The hook floor of a udptrace mode: the cheapest program
    /// on each hook the mode attaches, until SIGINT
    #[command(hide = true)]
    Floor {
        #[arg(value_enum)]
        of: Consume,
    },
    /// Runs the load alone and prints its rate: for profiling a tracer by
    /// hand (bpftool prog profile, perf) while it runs; with --bpf-stats, also
    /// each BPF program's runs and ns per run during the load
    Load,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Consume {
    /// Socket events.
    Events,
    /// packet-send and packet-recv.
    Packets,
    /// The same, with the first 64 bytes of payload.
    Payload64,
    /// The same, with whole datagrams' payload (snap length 65535).
    PayloadWhole,
    /// Sends and receives counted by destination port, in the kernel.
    Count,
    /// Receives' waits in histograms by destination port, in the kernel.
    Latency,
    /// Drop events.
    Drops,
    /// `udptrace top`: by process and event, drops by reason, in the kernel.
    Top,
    /// Sockets tracked (`udptrace life`): close events only.
    Sockets,
    /// Receive buffers tracked (`udptrace rcvbuf`): close events only.
    Rcvbuf,
}

#[derive(serde::Serialize)]
struct Row {
    scenario: Scenario,
    name: &'static str,
    /// Datagrams/s per round.
    rates: Vec<f64>,
    median_rate: f64,
    ratio_to_untraced: f64,
    spread: (f64, f64),
    events_per_round: Vec<u64>,
    /// Kernel time in the tool's BPF programs per datagram received, ns
    /// (median of the rounds; with --bpf-stats).
    bpf_ns_per_datagram: Option<f64>,
    /// udptrace modes: the median rate over that of the mode's hook floor.
    ratio_to_floor: Option<f64>,
    /// udptrace modes: BPF ns per datagram above the floor's (--bpf-stats).
    bpf_ns_above_floor: Option<f64>,
    lost_total: u64,
    tracer: Option<TracerRun>,
}

fn main() {
    if let Err(e) = run(Cli::parse()) {
        eprintln!("udptrace-bench: error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    let (rounds, seconds) = match (cli.quick, cli.full) {
        (_, true) => (5, 10.0),
        _ => (3, 2.0),
    };
    let spec = load::LoadSpec {
        senders: cli.senders,
        receivers: cli.receivers,
        payload: cli.payload,
        batch: cli.batch,
        ipv6: cli.ipv6,
        seconds: cli.seconds.unwrap_or(seconds),
    };
    match cli.command {
        Some(Cmd::Consume { what }) => return consume(what),
        Some(Cmd::Floor { of }) => return floor::run(of),
        Some(Cmd::Load) => {
            let _bpf_stats = cli.bpf_stats.then(tracer::enable_bpf_stats).transpose()?;
            let before = tracer::program_run_times();
            let r = load::run(&spec).context("running the load")?;
            println!("{:.0} datagrams/s received ({} sent)", r.rate(), r.sent);
            if cli.bpf_stats {
                tracer::print_program_costs(&before, &tracer::program_run_times(), r.received);
            }
            return Ok(());
        }
        None => {}
    }
    let rounds = cli.rounds.unwrap_or(rounds).max(1);
    tracer::ensure_tracefs()?;
    let _bpf_stats = cli.bpf_stats.then(tracer::enable_bpf_stats).transpose()?;
    eprintln!(
        "load: {spec:?}; {rounds} rounds of {} scenarios",
        Scenario::ALL.len()
    );

    let mut runs: Vec<Vec<(load::LoadResult, Option<TracerRun>)>> =
        vec![Vec::new(); Scenario::ALL.len()];
    let n = Scenario::ALL.len();
    for round in 1..=rounds {
        // Each round starts one scenario later, so that none always runs
        // first or after the same neighbour (the host's speed drifts).
        for i in (0..n).map(|k| (k + round - 1) % n) {
            let scenario = Scenario::ALL[i];
            let tracer = tracer::start(scenario)?;
            let result = load::run(&spec).context("running the load")?;
            let tracer_run = tracer.map(|t| t.stop()).transpose()?;
            eprintln!(
                "round {round}: {:<28} {:>10.0} datagrams/s received ({} sent)",
                scenario.name(),
                result.rate(),
                result.sent
            );
            runs[i].push((result, tracer_run));
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    let untraced = median(runs[0].iter().map(|(r, _)| r.rate()).collect());
    let rows: Vec<Row> = Scenario::ALL
        .iter()
        .zip(&runs)
        .map(|(&scenario, rs)| {
            let rates: Vec<f64> = rs.iter().map(|(r, _)| r.rate()).collect();
            let tracers: Vec<TracerRun> = rs.iter().filter_map(|(_, t)| *t).collect();
            let min = rates.iter().cloned().fold(f64::INFINITY, f64::min);
            let max = rates.iter().cloned().fold(0.0, f64::max);
            let median_rate = median(rates.clone());
            Row {
                scenario,
                name: scenario.name(),
                median_rate,
                ratio_to_untraced: median_rate / untraced,
                spread: (min, max),
                rates,
                events_per_round: tracers.iter().map(|t| t.events).collect(),
                // tcpdump's classic BPF filter is not an eBPF program: no figure.
                bpf_ns_per_datagram: Some(
                    rs.iter()
                        .filter_map(|(r, t)| {
                            let ns = t.as_ref()?.bpf_ns;
                            (ns > 0).then(|| ns as f64 / r.received.max(1) as f64)
                        })
                        .collect::<Vec<f64>>(),
                )
                .filter(|per_round| cli.bpf_stats && !per_round.is_empty())
                .map(median),
                ratio_to_floor: None,
                bpf_ns_above_floor: None,
                lost_total: tracers.iter().map(|t| t.lost).sum(),
                tracer: (!tracers.is_empty()).then(|| TracerRun {
                    events: tracers.iter().map(|t| t.events).sum(),
                    lost: tracers.iter().map(|t| t.lost).sum(),
                    cpu_seconds: median(tracers.iter().map(|t| t.cpu_seconds).collect()),
                    peak_rss_kib: tracers.iter().map(|t| t.peak_rss_kib).max().unwrap_or(0),
                    attach_ms: median(tracers.iter().map(|t| t.attach_ms).collect()),
                    bpf_ns: tracers.iter().map(|t| t.bpf_ns).sum(),
                }),
            }
        })
        .collect();
    let mut rows = rows;
    against_floors(&mut rows);
    // serve's scale, with no other load running.
    let scale = serve::scale(SCALE_SERIES).context("measuring serve's scrape of many series")?;

    let mut table = markdown(&rows, &spec, rounds);
    table += &format!(
        "\nudptrace serve with {} series: a scrape takes {:.1} ms (median of {}), peak RSS {:.1} MiB\n",
        scale.series,
        scale.scrape_ms,
        scale.scrapes_ms.len(),
        scale.peak_rss_mib
    );
    println!("{table}");
    std::fs::create_dir_all(&cli.out)?;
    std::fs::write(cli.out.join("results.md"), &table)?;
    let json = serde_json::json!({
        "load": spec,
        "rounds": rounds,
        "scenarios": rows,
        "serve_scale": scale,
    });
    std::fs::write(
        cli.out.join("results.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    eprintln!("wrote {}/results.md and results.json", cli.out.display());
    if cli.check {
        check(&rows, rounds)?;
        anyhow::ensure!(
            scale.series >= u64::from(SCALE_SERIES),
            "serve showed {} series of the {SCALE_SERIES} made",
            scale.series
        );
    }
    Ok(())
}

/// Label sets the scale check makes `serve` hold.
const SCALE_SERIES: u16 = 10_000;

fn check(rows: &[Row], rounds: usize) -> Result<()> {
    for r in rows {
        anyhow::ensure!(
            r.rates.len() == rounds && r.median_rate > 0.0,
            "{} did not run",
            r.name
        );
    }
    for ours in rows.iter().filter(|r| r.scenario.is_udptrace()) {
        anyhow::ensure!(
            ours.lost_total == 0,
            "{} lost {} events",
            ours.name,
            ours.lost_total
        );
        anyhow::ensure!(
            !ours.scenario.always_reports() || ours.events_per_round.iter().all(|&e| e > 0),
            "{} delivered no events in a round",
            ours.name
        );
    }
    for floor in rows
        .iter()
        .filter_map(|r| r.scenario.floor())
        .filter(|f| f.always_reports())
    {
        let row = rows.iter().find(|r| r.scenario == floor);
        anyhow::ensure!(
            row.is_some_and(|r| r.events_per_round.iter().all(|&e| e > 0)),
            "{} never ran its programs",
            floor.name()
        );
    }
    eprintln!("check: every scenario ran; udptrace lost no event");
    Ok(())
}

/// Each udptrace mode next to its hook floor, measured in the same rounds.
fn against_floors(rows: &mut [Row]) {
    let floors: Vec<(Scenario, f64, Option<f64>)> = rows
        .iter()
        .map(|r| (r.scenario, r.median_rate, r.bpf_ns_per_datagram))
        .collect();
    for row in rows.iter_mut() {
        let Some(floor) = row.scenario.floor() else {
            continue;
        };
        let Some(&(_, rate, ns)) = floors.iter().find(|(s, _, _)| *s == floor) else {
            continue;
        };
        row.ratio_to_floor = Some(row.median_rate / rate);
        row.bpf_ns_above_floor = row.bpf_ns_per_datagram.zip(ns).map(|(ours, f)| ours - f);
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn markdown(rows: &[Row], spec: &load::LoadSpec, rounds: usize) -> String {
    let mut s = format!(
        "Load: {} sender(s), {} receiver(s), {} B payload, batch {}, {}, {} s x {} rounds (median, min-max)\n\n",
        spec.senders,
        spec.receivers,
        spec.payload,
        spec.batch,
        if spec.ipv6 { "IPv6" } else { "IPv4" },
        spec.seconds,
        rounds
    );
    let bpf_column = rows.iter().any(|r| r.bpf_ns_per_datagram.is_some());
    s += "| scenario | datagrams/s | vs untraced | vs floor | spread | events/round | lost | tracer CPU s | peak RSS MiB | attach ms |";
    s += if bpf_column {
        " BPF ns/datagram | above floor |\n"
    } else {
        "\n"
    };
    s += "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |";
    s += if bpf_column { " ---: | ---: |\n" } else { "\n" };
    for r in rows {
        let (events, cpu, rss, attach) = match &r.tracer {
            Some(t) => (
                format!(
                    "{:.0}",
                    median(r.events_per_round.iter().map(|&e| e as f64).collect())
                ),
                format!("{:.2}", t.cpu_seconds),
                format!("{:.1}", t.peak_rss_kib as f64 / 1024.0),
                format!("{:.0}", t.attach_ms),
            ),
            None => ("-".into(), "-".into(), "-".into(), "-".into()),
        };
        s += &format!(
            "| {} | {:.0} | {:.2}x | {} | {:.0}-{:.0} | {} | {} | {} | {} | {} |",
            r.name,
            r.median_rate,
            r.ratio_to_untraced,
            r.ratio_to_floor.map_or("-".into(), |f| format!("{f:.2}x")),
            r.spread.0,
            r.spread.1,
            events,
            if r.tracer.is_some() {
                r.lost_total.to_string()
            } else {
                "-".into()
            },
            cpu,
            rss,
            attach
        );
        if bpf_column {
            let cell = |v: Option<f64>| v.map_or("-".into(), |ns| format!("{ns:.0}"));
            s += &format!(
                " {} | {} |\n",
                cell(r.bpf_ns_per_datagram),
                cell(r.bpf_ns_above_floor)
            );
        } else {
            s += "\n";
        }
    }
    s
}

/// The tracer of a udptrace scenario (and of its floor, for its hooks).
fn builder_for(what: Consume) -> udptrace::TracerBuilder {
    use udptrace::{CountField, EventKind, Filter, Histogram, Tracer};
    match what {
        Consume::Events => Tracer::builder(),
        Consume::Packets => Tracer::builder().filter(Filter {
            kinds: vec![EventKind::PacketSend, EventKind::PacketRecv],
            ..Default::default()
        }),
        Consume::Payload64 => builder_for(Consume::Packets).snaplen(64),
        // Default rings: records are as long as each datagram's payload.
        Consume::PayloadWhole => builder_for(Consume::Packets).snaplen(udptrace::MAX_SNAPLEN),
        Consume::Count => Tracer::builder()
            .filter(Filter {
                kinds: vec![EventKind::Send, EventKind::Recv],
                ..Default::default()
            })
            .count_by(vec![CountField::Dport]),
        Consume::Latency => Tracer::builder()
            .count_by(vec![CountField::Dport])
            .histogram(Histogram::QueueWait),
        Consume::Drops => Tracer::builder().filter(Filter {
            kinds: vec![EventKind::Drop],
            ..Default::default()
        }),
        Consume::Top => Tracer::builder()
            .filter(Filter {
                kinds: vec![EventKind::Send, EventKind::Recv, EventKind::Drop],
                ..Default::default()
            })
            .count_by(vec![
                CountField::Pid,
                CountField::Comm,
                CountField::Event,
                CountField::Reason,
            ]),
        Consume::Sockets => Tracer::builder().track_sockets(true).filter(Filter {
            kinds: vec![EventKind::Close],
            ..Default::default()
        }),
        Consume::Rcvbuf => Tracer::builder()
            .track_receive_buffers(true)
            .filter(Filter {
                kinds: vec![EventKind::Close],
                ..Default::default()
            }),
    }
}

/// The udptrace scenario's consumer: every event is decoded by the library
/// and counted; prints one JSON line with the totals when stopped.
fn consume(what: Consume) -> Result<()> {
    let mut tracer = builder_for(what).start()?;
    let stop = tracer.stop_handle();
    ctrlc::set_handler(move || stop.stop())?;
    // The benchmark reads these lines; if it has gone, there is no one to tell.
    let say = |line: &str| {
        let _ = writeln!(std::io::stdout(), "{line}");
    };
    say("ready");
    let (mut events, mut datagrams, mut queueing) = (0u64, 0u64, 0u64);
    let sent_and_received = |c: &udptrace::SockCounters| c.tx_packets + c.rx_packets;
    while !tracer.is_finished() {
        if let Some(ev) = tracer.recv_timeout(Duration::from_millis(100)) {
            // Touch the decoded event so the work is not optimised away.
            events += u64::from(ev.local.port() != 0 || ev.ret != i32::MIN);
            datagrams += sent_and_received(&ev.counters);
            queueing += u64::from(ev.life.is_some_and(|l| l.rcvbuf > 0));
        }
    }
    let stats = tracer.stats();
    let (events, lost) = match what {
        Consume::Count | Consume::Top => {
            let rows = tracer.take_counts()?;
            (rows.iter().map(|r| r.events).sum(), stats.count_full)
        }
        // Receives, in the histograms or of an unknown wait (the load's
        // queue was not empty when tracing began).
        Consume::Latency => {
            let rows = tracer.take_histograms()?;
            let waits: u64 = rows.iter().map(|r| r.count).sum();
            (waits + stats.wait_unknown, stats.count_full)
        }
        // Close events are few: report the datagrams the sockets accounted.
        // (The table outlives the programs: the sockets still open are in it.)
        Consume::Sockets => {
            let open: u64 = tracer
                .sockets()?
                .iter()
                .map(|s| sent_and_received(&s.counters))
                .sum();
            (datagrams + open, stats.lost)
        }
        // No traffic is counted: the sockets seen queueing datagrams.
        Consume::Rcvbuf => {
            let open = tracer
                .sockets()?
                .iter()
                .filter(|s| s.life.rcvbuf > 0)
                .count();
            (queueing + open as u64, stats.lost)
        }
        _ => (events, stats.lost),
    };
    say(&serde_json::json!({ "events": events, "lost": lost }).to_string());
    Ok(())
}
