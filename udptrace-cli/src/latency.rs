//! `udptrace latency`: how long received datagrams waited in their socket's
//! receive queue (or, with --size, how large datagrams were), as
//! power-of-two histograms added up in the kernel, printed as bcc's tools
//! print them on exit or every `--interval`.

use std::io::{self, Write};
use std::time::Duration;

use anyhow::Result;
use clap::Args;
use serde_json::{json, Map, Value};
use udptrace::{
    bucket_upper_bound, sort_hist_rows, CountField, EventKind, HistRow, Histogram, Tracer,
};

use crate::count::{cell, json_value, print_tables};
use crate::output::{local_time, now_ns};
use crate::parse::{parse_seconds, parse_top, unique};
use crate::sink::Sink;
use crate::trace::SelectArgs;

#[derive(Args, Debug)]
pub struct LatencyArgs {
    /// Keys to split the histograms by (comma-separated, each once): dport
    /// (the receiving port), sport, daddr, saddr, pid, comm, cgroup, netns;
    /// none: one histogram of everything
    #[arg(short, long, value_name = "KEY[,KEY...]", value_delimiter = ',')]
    by: Vec<CountField>,
    /// Datagram sizes in bytes instead of waits (of receives; -e send,recv
    /// for both, split with --by event)
    #[arg(long)]
    size: bool,
    /// With --size: the events whose sizes count (send, recv)
    #[arg(
        short,
        long,
        value_name = "LIST",
        value_delimiter = ',',
        default_value = "recv",
        requires = "size"
    )]
    events: Vec<EventKind>,
    /// Print (and reset) the histograms every this many seconds instead of
    /// once on exit (fractions allowed; at most a year)
    #[arg(short, long, value_name = "SECONDS", value_parser = parse_seconds)]
    interval: Option<Duration>,
    /// Only the N histograms with the most datagrams (1 or more)
    #[arg(long, value_name = "N", value_parser = parse_top)]
    top: Option<usize>,
    /// Write each interval as one JSON object per line
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    select: SelectArgs,
}

impl LatencyArgs {
    /// What the parsers cannot see alone: keys given twice, keys no receive
    /// has, events without a size.
    pub fn check(&self) -> Result<(), String> {
        if let Some(twice) = self
            .by
            .iter()
            .find(|f| self.by.iter().filter(|g| g == f).count() > 1)
        {
            return Err(format!("key '{twice}' is given twice"));
        }
        if let Some(k) = self.by.iter().find(|k| {
            matches!(k, CountField::Reason | CountField::Errno)
                || (**k == CountField::Event && !self.size)
        }) {
            return Err(format!(
                "key '{k}' does not split datagrams that were received (keys: dport, sport, daddr, saddr, pid, comm, cgroup, netns; event with --size)"
            ));
        }
        if let Some(k) = self
            .events
            .iter()
            .find(|k| !matches!(k, EventKind::Send | EventKind::Recv))
        {
            return Err(format!(
                "--size counts the sizes of sends and receives, not of '{k}' events"
            ));
        }
        Ok(())
    }

    fn histogram(&self) -> Histogram {
        if self.size {
            Histogram::Size
        } else {
            Histogram::QueueWait
        }
    }
}

pub fn run(args: LatencyArgs) -> Result<()> {
    let what = args.histogram();
    let kinds = if args.size {
        unique(&args.events)
    } else {
        vec![EventKind::Recv]
    };
    let builder = args
        .select
        .builder(kinds)
        .count_by(args.by.clone())
        .histogram(what);
    let tracer = args.select.start(builder)?;

    let (mut total, mut total_rows) = (0u64, 0usize);
    let mut out = Sink::stdout();
    let print = |tracer: &Tracer, out: &mut Sink| -> Result<()> {
        let mut rows = tracer.take_histograms()?;
        total += rows.iter().map(|r| r.count).sum::<u64>();
        total_rows += rows.len();
        sort_hist_rows(&mut rows);
        if let Some(top) = args.top {
            rows.truncate(top);
        }
        if args.json {
            out.records(rows.len() as u64, |buf| {
                write_json(buf, what, &args.by, &rows)
            });
        } else {
            write_text(out, what, &args.by, &rows, args.interval.is_some());
        }
        out.flush();
        Ok(())
    };
    print_tables(
        &tracer,
        &mut out,
        args.select.duration,
        args.interval,
        print,
    )?;
    let stats = tracer.stats();
    let noun = if args.size { "datagrams" } else { "receives" };
    let mut line = format!("{noun} {total} in {total_rows} histograms");
    if stats.wait_unknown > 0 {
        line += &format!(
            "; receives of unknown wait {} (queued before tracing began, or their stamp was lost)",
            stats.wait_unknown
        );
    }
    if stats.count_full > 0 {
        line += &format!("; not added (table full) {}", stats.count_full);
    }
    if stats.lost > 0 {
        line += &format!("; lost {}", stats.lost);
    }
    line += &crate::trace::table_shortfalls(&stats);
    if let Some((_, rows)) = out.failure() {
        line += &format!("; histograms not written {rows}");
    }
    eprintln!("{line}");
    crate::trace::outcome(&tracer, &out)
}

/// A bucket's values as a row of bcc's histograms: its first and last
/// integer (waits in whole microseconds, sizes in bytes).
fn bucket_range(i: usize) -> (u64, u64) {
    if i == 0 {
        (0, 0)
    } else {
        (bucket_upper_bound(i - 1), bucket_upper_bound(i) - 1)
    }
}

/// Where bucket `i` ends, as the JSON and Prometheus `le` give it: waits are
/// below 2^i us, sizes at most 2^i - 1 bytes.
pub(crate) fn bucket_le(what: Histogram, i: usize) -> u64 {
    match what {
        Histogram::Size => bucket_range(i).1,
        _ => bucket_upper_bound(i),
    }
}

/// The buckets from the first to the last that holds anything.
fn used_buckets(row: &HistRow) -> std::ops::RangeInclusive<usize> {
    let first = row.buckets.iter().position(|&n| n > 0).unwrap_or(0);
    let last = row.buckets.iter().rposition(|&n| n > 0).unwrap_or(0);
    first..=last
}

/// A row's maximum in the bucket unit (microseconds, rounded up; bytes).
fn max_in_unit(what: Histogram, row: &HistRow) -> u64 {
    match what {
        Histogram::Size => row.max,
        _ => row.max.div_ceil(1000),
    }
}

/// Quantile `q` as the bound of its bucket (as `le` gives it), never above
/// the maximum seen; 0 for an empty row.
fn quantile(what: Histogram, row: &HistRow, q: f64) -> u64 {
    row.quantile_bucket(q)
        .map_or(0, |i| bucket_le(what, i).min(max_in_unit(what, row)))
}

/// A value of the row's own unit (ns or bytes) in the shown unit.
fn in_unit(what: Histogram, v: u64) -> f64 {
    match what {
        Histogram::Size => v as f64,
        _ => v as f64 / 1000.0,
    }
}

fn key_line(fields: &[CountField], row: &HistRow) -> String {
    fields
        .iter()
        .zip(&row.key)
        .map(|(f, v)| format!("{f} = {}", cell(v)))
        .collect::<Vec<_>>()
        .join(", ")
}

const BAR: usize = 40;

fn write_text(
    out: &mut Sink,
    what: Histogram,
    fields: &[CountField],
    rows: &[HistRow],
    stamped: bool,
) {
    if stamped {
        out.text(|buf| writeln!(buf, "{}", local_time(now_ns())));
    }
    let unit = what.unit();
    for row in rows {
        let key = key_line(fields, row);
        let peak = row.buckets.iter().copied().max().unwrap_or(0).max(1);
        out.record(|buf| {
            if !key.is_empty() {
                writeln!(buf, "{key}")?;
            }
            writeln!(buf, "{unit:>10}{:15}: count    distribution", "")?;
            for i in used_buckets(row) {
                let (lo, hi) = bucket_range(i);
                let n = row.buckets[i];
                let stars = (n as u128 * BAR as u128).div_ceil(peak as u128) as usize;
                writeln!(
                    buf,
                    "{lo:>10} -> {hi:<10} : {n:<8} |{:<BAR$}|",
                    "*".repeat(stars.min(BAR))
                )?;
            }
            let q = |p| quantile(what, row, p);
            writeln!(
                buf,
                "count {}  mean {:.1}  p50 {}  p90 {}  p99 {}  max {:.1} ({unit}; quantiles are bucket bounds)\n",
                row.count,
                in_unit(what, row.sum) / row.count.max(1) as f64,
                q(0.5),
                q(0.9),
                q(0.99),
                in_unit(what, row.max),
            )
        });
    }
    if rows.is_empty() {
        let noun = match what {
            Histogram::Size => "datagram",
            _ => "receive",
        };
        out.text(|buf| writeln!(buf, "(no {noun} of a known {})", what));
    }
}

fn write_json(
    out: &mut impl Write,
    what: Histogram,
    fields: &[CountField],
    rows: &[HistRow],
) -> io::Result<()> {
    let suffix = match what {
        Histogram::Size => "bytes",
        _ => "us",
    };
    let rows: Vec<Value> = rows
        .iter()
        .map(|r| {
            let mut m = Map::new();
            for (f, v) in fields.iter().zip(&r.key) {
                m.insert(f.name().into(), json_value(v));
            }
            m.insert("count".into(), json!(r.count));
            m.insert(format!("sum_{suffix}"), json!(in_unit(what, r.sum)));
            m.insert(format!("max_{suffix}"), json!(in_unit(what, r.max)));
            for (name, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99)] {
                m.insert(format!("{name}_{suffix}"), json!(quantile(what, r, q)));
            }
            let buckets: Vec<Value> = used_buckets(r)
                .filter(|_| r.count > 0)
                .map(|i| json!({ format!("le_{suffix}"): bucket_le(what, i), "count": r.buckets[i] }))
                .collect();
            m.insert("buckets".into(), Value::Array(buckets));
            Value::Object(m)
        })
        .collect();
    let kind = match what {
        Histogram::Size => "size",
        _ => "wait",
    };
    serde_json::to_writer(
        &mut *out,
        &json!({ "ts": now_ns(), "histogram": kind, "rows": rows }),
    )?;
    writeln!(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_print_their_integer_ranges() {
        assert_eq!(bucket_range(0), (0, 0));
        assert_eq!(bucket_range(1), (1, 1));
        assert_eq!(bucket_range(2), (2, 3));
        assert_eq!(bucket_range(11), (1024, 2047));
        assert_eq!(bucket_le(Histogram::QueueWait, 11), 2048);
        assert_eq!(bucket_le(Histogram::Size, 11), 2047);
    }
}
