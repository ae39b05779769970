//! `udptrace top`: UDP traffic and drops by process (or any count key, or
//! socket), counted in the kernel and shown every interval: a live screen
//! on a terminal, plain tables (`--batch`) or JSON lines otherwise.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use serde_json::{json, Map, Value};
use udptrace::{CountField, CountValue, EventKind, Filter, SocketInfo, Tracer};

use crate::count::{cell, json_value};
use crate::output::{escape_text, local_time, now_ns};
use crate::parse::{parse_seconds, parse_top};
use crate::sink::Sink;
use crate::sockets::addr_text;
use crate::trace::SelectArgs;
use crate::tui;

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
    #[command(flatten)]
    select: SelectArgs,
}

/// What rows are keyed by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopKeys {
    Fields(Vec<CountField>),
    Socket,
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

/// One row of an interval: its key and what it did in the interval.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Row {
    /// The key as the table shows it, one cell per key column.
    pub cells: Vec<String>,
    /// The key as JSON names it.
    pub json: Map<String, Value>,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub drops: u64,
    /// The reason of most of its drops.
    pub top_drop: Option<String>,
    /// Sockets: the receive queue's peak as a share of its buffer (0-1+).
    pub rcvq: Option<f64>,
}

impl Row {
    fn datagrams(&self) -> u64 {
        self.rx_packets + self.tx_packets
    }
}

/// One interval's rows and totals.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    pub ts_ns: u64,
    pub seconds: f64,
    pub rows: Vec<Row>,
    pub lost: u64,
}

impl Sample {
    pub fn total(&self) -> Row {
        let mut t = Row::default();
        for r in &self.rows {
            t.rx_packets += r.rx_packets;
            t.rx_bytes += r.rx_bytes;
            t.tx_packets += r.tx_packets;
            t.tx_bytes += r.tx_bytes;
            t.drops += r.drops;
        }
        t
    }
}

/// Where the rows come from: the count table, or the socket table.
enum Source {
    Counts(Vec<CountField>),
    /// Each socket's counters at the last sample, to take differences.
    Sockets(HashMap<u64, SocketInfo>),
}

/// Columns the rows can be sorted by, in the order `s` cycles through them.
pub const SORT_COLUMNS: [&str; 5] = ["RX/s", "RXB/s", "TX/s", "TXB/s", "DROPS/s"];

/// The value of a row under sort column `i`.
pub fn sort_value(row: &Row, i: usize) -> u64 {
    match i {
        0 => row.rx_packets,
        1 => row.rx_bytes,
        2 => row.tx_packets,
        3 => row.tx_bytes,
        _ => row.drops,
    }
}

/// Busiest first by column `sort` (ties by all datagrams, then key);
/// `reverse` flips it.
pub fn sort_rows(rows: &mut [Row], sort: Option<usize>, reverse: bool) {
    rows.sort_by(|a, b| {
        let value = |r: &Row| (sort.map_or(0, |i| sort_value(r, i)), r.datagrams(), r.drops);
        value(b).cmp(&value(a)).then_with(|| a.cells.cmp(&b.cells))
    });
    if reverse {
        rows.reverse();
    }
}

pub fn run(args: TopArgs) -> Result<()> {
    let kinds = vec![EventKind::Send, EventKind::Recv, EventKind::Drop];
    let (tracer, source) = match &args.by {
        TopKeys::Fields(fields) => {
            let mut by = fields.clone();
            by.extend([CountField::Event, CountField::Reason]);
            let tracer = args.select.builder(kinds).count_by(by).start()?;
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
    };
    if interactive {
        let deadline = args.select.duration.map(|d| Instant::now() + d);
        let view = tui::View::new(&args.by, sampler.backend_name(), args.interval, args.top);
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

pub struct Sampler {
    tracer: Tracer,
    source: Source,
    filter: Filter,
    last: Instant,
    lost: u64,
}

impl Sampler {
    fn backend_name(&self) -> &'static str {
        self.tracer.backend().name()
    }

    pub fn stop_requested(&self) -> bool {
        self.tracer.stop_requested()
    }

    /// What happened since the last sample, busiest first.
    pub fn sample(&mut self) -> Result<Sample> {
        let now = Instant::now();
        let seconds = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        let mut rows = match &mut self.source {
            Source::Counts(fields) => count_rows(&self.tracer, fields)?,
            Source::Sockets(last) => {
                // The sockets closed meanwhile, from their close events.
                let mut closed = Vec::new();
                while let Some(ev) = self.tracer.recv_timeout(Duration::ZERO) {
                    closed.extend(SocketInfo::closed_by(&ev));
                }
                socket_rows(&self.tracer, &self.filter, last, closed)?
            }
        };
        sort_rows(&mut rows, None, false);
        let lost = self.tracer.stats().lost;
        let sample = Sample {
            ts_ns: now_ns(),
            seconds,
            rows,
            lost: lost - self.lost,
        };
        self.lost = lost;
        Ok(sample)
    }
}

/// The count table's rows (keyed by `fields`, then event and reason) folded
/// into one row per key of `fields`.
fn count_rows(tracer: &Tracer, fields: &[CountField]) -> Result<Vec<Row>> {
    let mut by_key: BTreeMap<Vec<CountValue>, (Row, BTreeMap<String, u64>)> = BTreeMap::new();
    for r in tracer.take_counts()? {
        let (key, rest) = r.key.split_at(fields.len());
        let (row, reasons) = by_key.entry(key.to_vec()).or_insert_with(|| {
            let row = Row {
                cells: key.iter().map(cell).collect(),
                json: fields
                    .iter()
                    .zip(key)
                    .map(|(f, v)| (f.name().to_string(), json_value(v)))
                    .collect(),
                ..Default::default()
            };
            (row, BTreeMap::new())
        });
        match rest {
            [CountValue::Event(EventKind::Send), ..] => {
                row.tx_packets += r.events;
                row.tx_bytes += r.bytes;
            }
            [CountValue::Event(EventKind::Recv), ..] => {
                row.rx_packets += r.events;
                row.rx_bytes += r.bytes;
            }
            [CountValue::Event(EventKind::Drop), CountValue::Reason(reason)] => {
                row.drops += r.events;
                let reason = reason.clone().unwrap_or_else(|| "-".into());
                *reasons.entry(reason).or_default() += r.events;
            }
            _ => {}
        }
    }
    Ok(by_key
        .into_values()
        .map(|(mut row, reasons)| {
            row.top_drop = reasons
                .into_iter()
                .max_by_key(|(name, n)| (*n, std::cmp::Reverse(name.clone())))
                .map(|(name, _)| name);
            row
        })
        .collect())
}

/// Each socket's traffic since the last sample: those open from the socket
/// table, and those `closed` meanwhile (the kernel filtered their events).
fn socket_rows(
    tracer: &Tracer,
    filter: &Filter,
    last: &mut HashMap<u64, SocketInfo>,
    closed: Vec<SocketInfo>,
) -> Result<Vec<Row>> {
    let open: Vec<SocketInfo> = tracer.sockets()?;
    let now: HashMap<u64, SocketInfo> = open
        .into_iter()
        .filter(|s| filter.keeps_socket(s))
        .chain(closed.iter().copied())
        .map(|s| (s.sock, s))
        .collect();
    let mut rows = Vec::new();
    for (sock, s) in &now {
        let before = last.get(sock);
        let was = |f: fn(&SocketInfo) -> u64| before.map_or(0, f);
        let c = &s.counters;
        let row = Row {
            cells: vec![
                s.pid.to_string(),
                escape_text(&s.comm.to_string_lossy()).into_owned(),
                addr_text(s.life.local),
            ],
            json: Map::from_iter([
                ("sock".to_string(), json!(sock)),
                ("pid".to_string(), json!(s.pid)),
                ("comm".to_string(), json!(s.comm.to_string_lossy())),
                ("laddr".to_string(), json!(s.life.local.map(|a| a.ip()))),
                ("lport".to_string(), json!(s.life.local.map(|a| a.port()))),
            ]),
            rx_packets: c.rx_packets - was(|b| b.counters.rx_packets),
            rx_bytes: c.rx_bytes - was(|b| b.counters.rx_bytes),
            tx_packets: c.tx_packets - was(|b| b.counters.tx_packets),
            tx_bytes: c.tx_bytes - was(|b| b.counters.tx_bytes),
            drops: s.life.drops - was(|b| b.life.drops),
            top_drop: top_socket_drop(
                s.life.drops - was(|b| b.life.drops),
                s.life.rcvbuf_drops - was(|b| b.life.rcvbuf_drops),
            ),
            rcvq: (s.life.rcvbuf > 0)
                .then(|| f64::from(s.life.peak_queued) / f64::from(s.life.rcvbuf)),
        };
        // Sockets that did nothing this interval stay off the screen.
        if row.datagrams() > 0 || row.drops > 0 {
            rows.push(row);
        }
    }
    // A closed socket's last interval is shown; it has no next one.
    *last = now;
    for s in &closed {
        last.remove(&s.sock);
    }
    Ok(rows)
}

/// A socket's table tells its receive-buffer drops from the others, whose
/// reasons it does not keep.
fn top_socket_drop(drops: u64, rcvbuf_drops: u64) -> Option<String> {
    match drops {
        0 => None,
        _ if rcvbuf_drops * 2 >= drops => Some("SOCKET_RCVBUFF".into()),
        _ => Some("other".into()),
    }
}

/// The key columns' headers.
pub fn key_headers(by: &TopKeys) -> Vec<String> {
    match by {
        TopKeys::Fields(fields) => fields.iter().map(|f| f.name().to_uppercase()).collect(),
        TopKeys::Socket => vec!["PID".into(), "COMM".into(), "LOCAL".into()],
    }
}

fn write_sample(out: &mut Sink, args: &TopArgs, backend: &str, s: &Sample) {
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
                Value::Object(m)
            })
            .collect();
        let line = json!({
            "ts": s.ts_ns,
            "seconds": s.seconds,
            "backend": backend,
            "lost": s.lost,
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
            "{} over {:.2} s: {} datagrams received ({} bytes), {} sent ({} bytes), {} dropped; lost {}; {} backend",
            local_time(s.ts_ns),
            s.seconds,
            t.rx_packets,
            t.rx_bytes,
            t.tx_packets,
            t.tx_bytes,
            t.drops,
            s.lost,
            backend
        )
    });
    let headers = key_headers(&args.by);
    let widths = key_widths(&headers, &s.rows);
    let socket = args.by == TopKeys::Socket;
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
            writeln!(buf)
        });
    }
    out.text(|buf| writeln!(buf));
}

/// Each key column as wide as its header and its widest cell.
pub fn key_widths(headers: &[String], rows: &[Row]) -> Vec<usize> {
    headers
        .iter()
        .enumerate()
        .map(|(i, h)| {
            rows.iter()
                .map(|r| r.cells.get(i).map_or(0, |c| c.chars().count()))
                .chain([h.len()])
                .max()
                .unwrap_or(0)
        })
        .collect()
}

#[cfg(test)]
mod tests {
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
