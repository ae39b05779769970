//! `udptrace life`: one line per UDP socket as it closes, with its traffic,
//! its peer and how long it lived: tcplife for UDP.

use std::io::Write;
use std::time::Instant;

use anyhow::Result;
use clap::Args;
use serde_json::{json, Value};
use udptrace::{EventKind, Tracer};

use crate::output::{escape_text, now_ns};
use crate::sink::Sink;
use crate::sockets::{addr_text, Remote, SocketRow};
use crate::trace::{next_event, SelectArgs};

#[derive(Args, Debug)]
pub struct LifeArgs {
    /// Write one JSON object per socket (NDJSON) instead of text columns
    #[arg(long)]
    json: bool,
    /// On exit, also list the sockets still open, with their life so far
    #[arg(long)]
    open: bool,
    /// Also each socket's mean and longest time its datagrams waited in its
    /// receive queue (WAIT_AVG(us), WAIT_MAX(us)); costs a stamp per
    /// datagram queued (see the latency page)
    #[arg(long)]
    latency: bool,
    #[command(flatten)]
    select: SelectArgs,
}

pub fn run(args: LifeArgs) -> Result<()> {
    let builder = args.select.builder(vec![EventKind::Close]);
    let mut tracer = args
        .select
        .start(builder.track_sockets(true).track_waits(args.latency))?;

    let deadline = args.select.duration.map(|d| Instant::now() + d);
    let shown = Shown {
        json: args.json,
        state: args.open,
        waits: args.latency,
    };
    let mut out = Sink::stdout();
    if !args.json {
        out.text(|buf| header(buf, shown));
    }
    let mut closed = 0u64;
    while !tracer.is_finished() {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            tracer.stop();
        }
        let ev = next_event(&mut tracer, &mut out);
        if let Some(row) = ev.as_ref().and_then(SocketRow::from_close) {
            closed += 1;
            out.record(|buf| line(buf, &row, shown, 0));
        }
        if !out.is_open() {
            tracer.stop();
        }
    }
    let mut still_open = 0;
    if args.open && out.is_open() {
        let now = now_ns();
        let filter = args.select.filter(vec![EventKind::Close]);
        let mut open: Vec<SocketRow> = tracer
            .sockets()?
            .iter()
            .filter(|s| filter.keeps_socket(s))
            .map(SocketRow::from_open)
            .collect();
        open.sort_by_key(|r| (r.pid, r.life.born_ns));
        still_open = open.len();
        for row in &open {
            out.record(|buf| {
                line(
                    buf,
                    row,
                    Shown {
                        state: true,
                        ..shown
                    },
                    now,
                )
            });
        }
    }
    out.flush();
    finish(&tracer, &out, closed, args.open.then_some(still_open))
}

/// The summary on stderr, and the run's result.
fn finish(tracer: &Tracer, out: &Sink, closed: u64, open: Option<usize>) -> Result<()> {
    let stats = tracer.stats();
    let mut summary = format!("{closed} sockets closed");
    if let Some(n) = open {
        summary += &format!(", {n} open");
    }
    summary += &format!("; lost {}", stats.lost);
    if let Some((_, n)) = out.failure() {
        summary += &format!("; not written {n}");
    }
    summary += &crate::trace::table_shortfalls(&stats);
    eprintln!("{summary}");
    crate::trace::outcome(tracer, out)
}

const ADDR_WIDTH: usize = 24;

/// A wait in microseconds, to a tenth; `-` for a socket without receives of known wait.
fn us_cell(ns: Option<u64>) -> String {
    ns.map_or_else(|| "-".into(), |ns| format!("{:.1}", ns as f64 / 1000.0))
}

/// What each line shows beside the socket: its state (`--open`), its waits (`--latency`).
#[derive(Clone, Copy)]
struct Shown {
    json: bool,
    state: bool,
    waits: bool,
}

fn header(out: &mut impl Write, shown: Shown) -> std::io::Result<()> {
    write!(
        out,
        "{:>7} {:<16} {:<w$} {:<w$} {:>9} {:>10} {:>9} {:>10} {:>6} {:>10}",
        "PID",
        "COMM",
        "LOCAL",
        "REMOTE",
        "TX_DGRAMS",
        "TX_BYTES",
        "RX_DGRAMS",
        "RX_BYTES",
        "DROPS",
        "MS",
        w = ADDR_WIDTH
    )?;
    if shown.waits {
        write!(out, " {:>12} {:>12}", "WAIT_AVG(us)", "WAIT_MAX(us)")?;
    }
    if shown.state {
        write!(out, " STATE")?;
    }
    writeln!(out)
}

/// One socket; `now_ns` ends the life of an open one.
fn line(out: &mut impl Write, row: &SocketRow, shown: Shown, now_ns: u64) -> std::io::Result<()> {
    let ms = row.lifetime_ns(now_ns).map(|ns| ns as f64 / 1e6);
    let max_wait_ns = (row.life.waits > 0).then_some(row.life.wait_max_ns);
    if shown.json {
        let mut m = row.core_json();
        let ms = ms.map(|ms| (ms * 1000.0).round() / 1000.0);
        m.insert("duration_ms".into(), json!(ms));
        m.insert("drops".into(), json!(row.life.drops));
        m.insert("seen_from_creation".into(), json!(row.life.from_creation));
        if shown.waits {
            let us = |ns: Option<u64>| ns.map(|ns| ns as f64 / 1000.0);
            m.insert("waits".into(), json!(row.life.waits));
            m.insert("wait_mean_us".into(), json!(us(row.life.mean_wait_ns())));
            m.insert("wait_max_us".into(), json!(us(max_wait_ns)));
        }
        serde_json::to_writer(&mut *out, &Value::Object(m))?;
        return writeln!(out);
    }
    // An unconnected socket's usual peer is marked `*`; a life seen only
    // from when tracing met the socket, `>` (it is longer).
    let remote = match row.remote {
        Remote::Usual(a) => format!("{a}*"),
        _ => addr_text(row.remote_addr()),
    };
    let ms = match ms {
        Some(ms) if row.life.from_creation => format!("{ms:.2}"),
        Some(ms) => format!(">{ms:.2}"),
        None => "-".to_string(),
    };
    let c = &row.counters;
    write!(
        out,
        "{:>7} {:<16} {:<w$} {:<w$} {:>9} {:>10} {:>9} {:>10} {:>6} {:>10}",
        row.pid,
        escape_text(&row.comm.to_string_lossy()),
        addr_text(row.local),
        remote,
        c.tx_packets,
        c.tx_bytes,
        c.rx_packets,
        c.rx_bytes,
        row.life.drops,
        ms,
        w = ADDR_WIDTH
    )?;
    if shown.waits {
        write!(
            out,
            " {:>12} {:>12}",
            us_cell(row.life.mean_wait_ns()),
            us_cell(max_wait_ns)
        )?;
    }
    if shown.state {
        write!(
            out,
            " {}",
            if row.closed_ns.is_some() {
                "closed"
            } else {
                "open"
            }
        )?;
    }
    writeln!(out)
}
