//! `udptrace top`: UDP traffic and drops by process (or any count key, or
//! socket), counted in the kernel and shown every interval: a live screen
//! on a terminal, plain tables (`--batch`) or JSON lines otherwise.

use std::collections::HashMap;
use std::io::{self, IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use serde_json::{json, Value};
use udptrace::{CountField, EventKind, Histogram};

use crate::output::local_time;
use crate::parse::{parse_seconds, parse_top};
use crate::sink::Sink;
use crate::trace::SelectArgs;

mod sample;
mod tui;

use sample::{key_headers, key_widths, Sample, Sampler, Source, TopKeys};

#[derive(Args, Debug)]
pub struct TopArgs {
    /// Rows by these count keys (comma-separated: dport, sport, daddr, saddr,
    /// pid, comm), or by `socket` (with its receive queue's peak)
    #[arg(
        long,
        value_name = "KEY[,KEY...]|socket",
        default_value = "pid,comm",
        value_parser = parse_top_keys
    )]
    by: TopKeys,
    /// Seconds between refreshes (fractions allowed; at most a year)
    #[arg(short, long, value_name = "SECONDS", default_value = "1", value_parser = parse_seconds)]
    interval: Duration,
    /// Plain tables, one per interval, as `top -b` (the default when the
    /// output is not a terminal)
    #[arg(short = 'b', long)]
    batch: bool,
    /// One JSON object per interval instead of a table
    #[arg(long)]
    json: bool,
    /// Only the N busiest rows (1 or more)
    #[arg(long, value_name = "N", value_parser = parse_top)]
    top: Option<usize>,
    /// Also each row's p99 time in the receive queue (WAIT_P99(us)), by
    /// keys; costs a stamp per datagram queued (see the latency page)
    #[arg(long)]
    latency: bool,
    #[command(flatten)]
    select: SelectArgs,
}

impl TopArgs {
    /// What the parsers cannot see alone: waits asked for by socket.
    pub fn check(&self) -> Result<(), String> {
        if self.latency && self.by == TopKeys::Socket {
            return Err(
                "--latency shows each key's p99 wait, not each socket's (udptrace life --latency has those)".into(),
            );
        }
        Ok(())
    }
}

fn parse_top_keys(s: &str) -> Result<TopKeys, String> {
    if s == "socket" {
        return Ok(TopKeys::Socket);
    }
    let mut fields = Vec::new();
    for name in s.split(',') {
        if name == "socket" {
            return Err("'socket' is a key of its own: --by socket".into());
        }
        let field: CountField = name.parse()?;
        if matches!(field, CountField::Event | CountField::Reason) {
            return Err(format!(
                "top shows '{name}' as its columns (sends, receives, drops and their top reason), not as a key"
            ));
        }
        if fields.contains(&field) {
            return Err(format!("key '{name}' is given twice"));
        }
        fields.push(field);
    }
    Ok(TopKeys::Fields(fields))
}

pub fn run(args: TopArgs) -> Result<()> {
    let kinds = vec![EventKind::Send, EventKind::Recv, EventKind::Drop];
    let (tracer, source) = match &args.by {
        TopKeys::Fields(fields) => {
            let mut by = fields.clone();
            by.extend([CountField::Event, CountField::Reason]);
            let mut builder = args.select.builder(kinds).count_by(by);
            if args.latency {
                builder = builder.histogram_beside_counts(Histogram::QueueWait);
            }
            let tracer = builder.start()?;
            (tracer, Source::Counts(fields.clone()))
        }
        TopKeys::Socket => {
            let tracer = args
                .select
                .builder(vec![EventKind::Close])
                .track_sockets(true)
                .start()?;
            (tracer, Source::Sockets(HashMap::new()))
        }
    };
    let stop = tracer.stop_handle();
    ctrlc::set_handler(move || stop.stop()).context("installing the signal handler")?;
    let interactive = !args.batch && !args.json && io::stdout().is_terminal();
    let mut sampler = Sampler {
        tracer,
        source,
        filter: args.select.filter(vec![EventKind::Close]),
        last: Instant::now(),
        lost: 0,
        skipped: 0,
    };
    if interactive {
        let deadline = args.select.duration.map(|d| Instant::now() + d);
        let view = tui::View::new(
            &args.by,
            sampler.backend_name(),
            args.interval,
            args.top,
            args.latency,
        );
        tui::run(view, &mut sampler, deadline, args.interval)?;
        // The screen is gone: what it cannot show any more goes to stderr.
        let stats = sampler.tracer.stats();
        eprintln!(
            "lost {}{}",
            stats.lost,
            crate::trace::table_shortfalls(&stats)
        );
        return Ok(());
    }
    args.select.announce(&sampler.tracer);
    batch(&args, &mut sampler)
}

/// Plain tables or JSON lines, one per interval, until stopped.
fn batch(args: &TopArgs, sampler: &mut Sampler) -> Result<()> {
    let start = Instant::now();
    let deadline = args.select.duration.map(|d| start + d);
    let mut next = start + args.interval;
    let mut out = Sink::stdout();
    let tick = Duration::from_millis(50);
    loop {
        std::thread::sleep(tick);
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            sampler.tracer.stop();
        }
        out.check_reader();
        if !out.is_open() {
            sampler.tracer.stop();
        }
        // The last interval, however short, so that every event is shown.
        if now >= next || sampler.tracer.stop_requested() {
            let mut sample = sampler.sample()?;
            if let Some(n) = args.top {
                sample.rows.truncate(n);
            }
            write_sample(&mut out, args, sampler.backend_name(), &sample);
            out.flush();
            next += args.interval;
        }
        if sampler.tracer.stop_requested() {
            break;
        }
    }
    let stats = sampler.tracer.stats();
    let mut summary = format!("lost {}", stats.lost);
    if stats.count_full > 0 {
        summary += &format!("; not counted (table full) {}", stats.count_full);
    }
    summary += &crate::trace::table_shortfalls(&stats);
    if let Some((_, n)) = out.failure() {
        summary += &format!("; rows not written {n}");
    }
    eprintln!("{summary}");
    crate::trace::outcome(&sampler.tracer, &out)
}

fn write_sample(out: &mut Sink, args: &TopArgs, backend: &str, s: &Sample) {
    let socket = args.by == TopKeys::Socket;
    let waits = args.latency && !socket;
    if args.json {
        let rows: Vec<Value> = s
            .rows
            .iter()
            .map(|r| {
                let mut m = r.json.clone();
                m.insert("rx_packets".into(), json!(r.rx_packets));
                m.insert("rx_bytes".into(), json!(r.rx_bytes));
                m.insert("tx_packets".into(), json!(r.tx_packets));
                m.insert("tx_bytes".into(), json!(r.tx_bytes));
                m.insert("drops".into(), json!(r.drops));
                m.insert("top_drop_reason".into(), json!(r.top_drop));
                if let Some(q) = r.rcvq {
                    m.insert("rcvq_peak_share".into(), json!(q));
                }
                if waits {
                    m.insert("wait_p99_us".into(), json!(r.wait_p99_us));
                }
                Value::Object(m)
            })
            .collect();
        let line = json!({
            "ts": s.ts_ns,
            "seconds": s.seconds,
            "backend": backend,
            "lost": s.lost,
            "skipped": s.skipped,
            "rows": rows,
        });
        out.records(s.rows.len() as u64, |buf| {
            serde_json::to_writer(&mut *buf, &line)?;
            writeln!(buf)
        });
        return;
    }
    let t = s.total();
    out.text(|buf| {
        writeln!(
            buf,
            "{} over {:.2} s: {} datagrams received ({} bytes), {} sent ({} bytes), {} dropped; lost {}{}; {} backend",
            local_time(s.ts_ns),
            s.seconds,
            t.rx_packets,
            t.rx_bytes,
            t.tx_packets,
            t.tx_bytes,
            t.drops,
            s.lost,
            skipped_note(s.skipped),
            backend
        )
    });
    let headers = key_headers(&args.by);
    let widths = key_widths(&headers, &s.rows);
    out.text(|buf| {
        for (h, w) in headers.iter().zip(&widths) {
            write!(buf, "{h:<w$} ")?;
        }
        write!(
            buf,
            "{:>10} {:>12} {:>10} {:>12} {:>8} {:<16}",
            "RX", "RX_BYTES", "TX", "TX_BYTES", "DROPS", "TOP_DROP"
        )?;
        if socket {
            write!(buf, " {:>6}", "RCVQ%")?;
        } else if waits {
            write!(buf, " {:>12}", "WAIT_P99(us)")?;
        }
        writeln!(buf)
    });
    for r in &s.rows {
        out.record(|buf| {
            for (c, w) in r.cells.iter().zip(&widths) {
                write!(buf, "{c:<w$} ")?;
            }
            write!(
                buf,
                "{:>10} {:>12} {:>10} {:>12} {:>8} {:<16}",
                r.rx_packets,
                r.rx_bytes,
                r.tx_packets,
                r.tx_bytes,
                r.drops,
                r.top_drop.as_deref().unwrap_or("-")
            )?;
            if let Some(q) = r.rcvq {
                write!(buf, " {:>6.1}", q * 100.0)?;
            }
            if waits {
                write!(buf, " {:>12}", p99_cell(r.wait_p99_us))?;
            }
            writeln!(buf)
        });
    }
    out.text(|buf| writeln!(buf));
}

/// A row's p99 wait as its column shows it: `<=N` (the bucket's bound), or
/// `-` without receives of known wait.
pub(super) fn p99_cell(us: Option<u64>) -> String {
    us.map_or_else(|| "-".into(), |us| format!("<={us}"))
}

/// The interval's skipped hook runs, where there were any.
fn skipped_note(skipped: u64) -> String {
    if skipped == 0 {
        return String::new();
    }
    format!("; hook runs the kernel skipped {skipped}")
}

#[cfg(test)]
mod tests {
    use super::sample::{sort_rows, Row};
    use super::*;

    fn row(name: &str, rx: u64, tx: u64, drops: u64) -> Row {
        Row {
            cells: vec![name.into()],
            rx_packets: rx,
            tx_packets: tx,
            drops,
            ..Default::default()
        }
    }

    fn names(rows: &[Row]) -> Vec<&str> {
        rows.iter().map(|r| r.cells[0].as_str()).collect()
    }

    #[test]
    fn rows_sort_by_datagrams_or_a_column_and_reverse() {
        let mut rows = vec![row("a", 5, 0, 0), row("b", 0, 9, 0), row("c", 1, 1, 7)];
        sort_rows(&mut rows, None, false);
        assert_eq!(names(&rows), ["b", "a", "c"]);
        sort_rows(&mut rows, Some(0), false);
        assert_eq!(names(&rows), ["a", "c", "b"]);
        // By drops, reversed: the fewest first, ties by all datagrams.
        sort_rows(&mut rows, Some(4), true);
        assert_eq!(names(&rows), ["a", "b", "c"]);
    }

    #[test]
    fn keys_are_count_fields_or_socket_alone() {
        assert_eq!(
            parse_top_keys("pid,comm"),
            Ok(TopKeys::Fields(vec![CountField::Pid, CountField::Comm]))
        );
        assert_eq!(parse_top_keys("socket"), Ok(TopKeys::Socket));
        for bad in ["event", "reason", "pid,socket", "dport,dport", "", "nope"] {
            assert!(parse_top_keys(bad).is_err(), "{bad}");
        }
    }
}
