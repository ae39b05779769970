//! `udptrace rcvbuf`: the receiving sockets closest to (or over) their
//! receive buffer, with their drops and the buffer that would have held
//! their peak.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Args;
use serde_json::{json, Value};
use udptrace::{EventKind, Filter, Tracer};

use crate::output::{escape_text, local_time, now_ns};
use crate::parse::{parse_seconds, parse_top};
use crate::sink::Sink;
use crate::sockets::{addr_text, SocketRow};
use crate::trace::SelectArgs;

#[derive(Args, Debug)]
pub struct RcvbufArgs {
    /// Print the table every this many seconds (peaks and drops since the
    /// start), not only on exit (fractions allowed; at most a year)
    #[arg(short, long, value_name = "SECONDS", value_parser = parse_seconds)]
    interval: Option<Duration>,
    /// Only the N sockets closest to their limit (1 or more)
    #[arg(long, value_name = "N", value_parser = parse_top)]
    top: Option<usize>,
    /// Write each table as one JSON object per line
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    select: SelectArgs,
}

const TICK: Duration = Duration::from_millis(50);

pub fn run(args: RcvbufArgs) -> Result<()> {
    let builder = args.select.builder(vec![EventKind::Close]);
    let mut tracer = args.select.start(builder.track_receive_buffers(true))?;

    let filter = args.select.filter(vec![EventKind::Close]);
    let start = Instant::now();
    let deadline = args.select.duration.map(|d| start + d);
    let mut next_print = args.interval.map(|i| start + i);
    let mut out = Sink::stdout();
    // Sockets that closed during the run, by cookie: their last state.
    let mut closed: BTreeMap<u64, SocketRow> = BTreeMap::new();
    let mut shown = 0;
    while !tracer.is_finished() {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            tracer.stop();
        }
        // Close events are few: one at a time, or a tick's wait.
        if let Some(row) = tracer
            .recv_timeout(TICK)
            .and_then(|ev| SocketRow::from_close(&ev))
            .filter(worth_keeping)
        {
            keep_closed(&mut closed, row);
        }
        out.check_reader();
        if !out.is_open() {
            tracer.stop();
        }
        if let (Some(at), Some(interval)) = (next_print, args.interval) {
            if Instant::now() >= at && !tracer.stop_requested() {
                shown = print(&args, &tracer, &filter, &closed, &mut out)?;
                next_print = Some(at + interval);
            }
        }
    }
    if out.is_open() {
        shown = print(&args, &tracer, &filter, &closed, &mut out)?;
    }
    let stats = tracer.stats();
    let mut summary = format!("{shown} receiving sockets; lost {}", stats.lost);
    summary += &crate::trace::table_shortfalls(&stats);
    if let Some((_, n)) = out.failure() {
        summary += &format!("; not written {n}");
    }
    eprintln!("{summary}");
    crate::trace::outcome(&tracer, &out)
}

/// Sockets that had a datagram queued or refused: the others have no buffer to show.
fn received(row: &SocketRow) -> bool {
    row.life.rcvbuf > 0 || row.life.rcvbuf_drops > 0
}

/// The most closed sockets kept for the table: a host that opens a socket
/// per query closes thousands a second.
const CLOSED_KEPT: usize = 4096;

/// Closed sockets worth a row: those that overflowed or came within half of
/// their buffer (the calm ones are many, and gone).
fn worth_keeping(row: &SocketRow) -> bool {
    received(row) && (row.life.rcvbuf_drops > 0 || fill(row) >= 500)
}

/// Keeps `row`, and the fullest CLOSED_KEPT closed sockets at most.
fn keep_closed(closed: &mut BTreeMap<u64, SocketRow>, row: SocketRow) {
    closed.insert(row.sock, row);
    if closed.len() > CLOSED_KEPT {
        let calmest = closed
            .values()
            .min_by_key(|r| (r.life.rcvbuf_drops, fill(r)))
            .map(|r| r.sock);
        if let Some(sock) = calmest {
            closed.remove(&sock);
        }
    }
}

/// How full the buffer got in the fullest burst, with what it refused, in
/// thousandths (over 1000 when it overflowed).
fn fill(row: &SocketRow) -> u64 {
    let needed = u64::from(row.life.peak_queued).max(row.life.burst_need);
    needed * 1000 / u64::from(row.life.rcvbuf.max(1))
}

/// The rows, fullest first: open sockets from the table, then those closed.
fn rows(
    tracer: &Tracer,
    filter: &Filter,
    closed: &BTreeMap<u64, SocketRow>,
) -> Result<Vec<SocketRow>> {
    let mut rows: Vec<SocketRow> = tracer
        .sockets()?
        .iter()
        .filter(|s| filter.keeps_socket(s))
        .map(SocketRow::from_open)
        .filter(received)
        .collect();
    rows.extend(closed.values().cloned());
    rows.sort_by_key(|r| std::cmp::Reverse((r.life.rcvbuf_drops, fill(r), r.sock)));
    Ok(rows)
}

/// Writes the table (or its JSON line); returns how many sockets it has.
fn print(
    args: &RcvbufArgs,
    tracer: &Tracer,
    filter: &Filter,
    closed: &BTreeMap<u64, SocketRow>,
    out: &mut Sink,
) -> Result<usize> {
    let mut rows = rows(tracer, filter, closed)?;
    let total = rows.len();
    if let Some(top) = args.top {
        rows.truncate(top);
    }
    if args.json {
        let objects: Vec<Value> = rows.iter().map(json_row).collect();
        out.records(rows.len() as u64, |buf| {
            serde_json::to_writer(&mut *buf, &json!({ "ts": now_ns(), "sockets": objects }))?;
            writeln!(buf)
        });
    } else {
        if args.interval.is_some() {
            out.text(|buf| writeln!(buf, "{}", local_time(now_ns())));
        }
        out.text(|buf| {
            writeln!(
                buf,
                "{:>7} {:<16} {:<24} {:>10} {:>10} {:>6} {:>8} {:>10} STATE",
                "PID", "COMM", "LOCAL", "RCVBUF", "PEAK", "FILL%", "DROPS", "SUGGESTED"
            )
        });
        for row in &rows {
            out.record(|buf| text_row(buf, row));
        }
        if args.interval.is_some() {
            out.text(|buf| writeln!(buf));
        }
    }
    out.flush();
    Ok(total)
}

fn text_row(out: &mut impl Write, row: &SocketRow) -> std::io::Result<()> {
    let l = &row.life;
    writeln!(
        out,
        "{:>7} {:<16} {:<24} {:>10} {:>10} {:>6} {:>8} {:>10} {}",
        row.pid,
        escape_text(&row.comm.to_string_lossy()),
        addr_text(row.local),
        l.rcvbuf,
        l.peak_queued,
        format!("{:.1}", fill(row) as f64 / 10.0),
        l.rcvbuf_drops,
        l.suggested_rcvbuf(),
        if row.closed_ns.is_some() {
            "closed"
        } else {
            "open"
        }
    )
}

fn json_row(row: &SocketRow) -> Value {
    // Its traffic is not tracked (only its receive side's queue and drops):
    // the counters' keys are there, null.
    let mut m = row.identity_json();
    for key in ["rx_bytes", "tx_bytes", "rx_packets", "tx_packets"] {
        m.insert(key.into(), Value::Null);
    }
    let l = &row.life;
    m.insert("rcvbuf".into(), json!(l.rcvbuf));
    m.insert("peak_queued".into(), json!(l.peak_queued));
    m.insert("drops".into(), json!(l.rcvbuf_drops));
    m.insert("suggested_rcvbuf".into(), json!(l.suggested_rcvbuf()));
    Value::Object(m)
}
