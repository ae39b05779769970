//! `udptrace count`: events added up in the kernel by the chosen keys, printed
//! as a sorted table on exit or every `--interval`.

use std::io::{self, Write};
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Args;
use serde_json::{json, Map, Value};
use udptrace::{sort_rows, CountField, CountRow, CountValue, EventKind, Tracer};

use crate::output::{escape_text, local_time, now_ns};
use crate::parse::{parse_seconds, parse_top, unique};
use crate::sink::Sink;
use crate::trace::SelectArgs;

#[derive(Args, Debug)]
pub struct CountArgs {
    /// Keys to count by (comma-separated, each once): dport, sport, daddr,
    /// saddr, pid, comm, event, reason (drops only: needs -e drop), cgroup
    /// (the task's cgroup id), netns, errno (of failed sends and receives)
    #[arg(
        short,
        long,
        value_name = "KEY[,KEY...]",
        value_delimiter = ',',
        required = true
    )]
    by: Vec<CountField>,
    /// Events to count (comma-separated, each counted once: send, recv,
    /// connect, close, packet-send, packet-recv, drop)
    #[arg(
        short,
        long,
        value_name = "LIST",
        value_delimiter = ',',
        default_value = "send,recv"
    )]
    events: Vec<EventKind>,
    /// Print (and reset) the table every this many seconds instead of once on
    /// exit (fractions allowed; at most a year)
    #[arg(short, long, value_name = "SECONDS", value_parser = parse_seconds)]
    interval: Option<Duration>,
    /// Only the N rows with the most events (1 or more)
    #[arg(long, value_name = "N", value_parser = parse_top)]
    top: Option<usize>,
    /// Write each table as one JSON object per line
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    select: SelectArgs,
}

const TICK: Duration = Duration::from_millis(50);

impl CountArgs {
    /// What the parsers cannot see alone: keys given twice, and a drop
    /// reason asked for without drops, which would never count anything.
    pub fn check(&self) -> Result<(), String> {
        if let Some(twice) = self
            .by
            .iter()
            .find(|f| self.by.iter().filter(|g| g == f).count() > 1)
        {
            return Err(format!("count key '{twice}' is given twice"));
        }
        if self.by.contains(&CountField::Reason) && !self.events.contains(&EventKind::Drop) {
            return Err("count key 'reason' needs drop events: add -e drop (e.g. -e drop, or -e send,recv,drop)".into());
        }
        Ok(())
    }
}

pub fn run(args: CountArgs) -> Result<()> {
    let fields = args.by.clone();
    let builder = args.select.builder(unique(&args.events));
    let tracer = args.select.start(builder.count_by(fields.clone()))?;

    let (mut total_events, mut total_rows) = (0u64, 0usize);
    let mut out = Sink::stdout();
    let print = |tracer: &Tracer, out: &mut Sink| -> Result<()> {
        let mut rows = tracer.take_counts()?;
        total_events += rows.iter().map(|r| r.events).sum::<u64>();
        total_rows += rows.len();
        sort_rows(&mut rows);
        if let Some(top) = args.top {
            rows.truncate(top);
        }
        if args.json {
            out.records(rows.len() as u64, |buf| write_json(buf, &fields, &rows));
        } else {
            write_table(out, &fields, &rows, args.interval.is_some());
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
    let mut line = format!("counted {total_events} events in {total_rows} rows");
    if stats.count_full > 0 {
        line += &format!("; not counted (table full) {}", stats.count_full);
    }
    // Only kprobe calls whose return could not be followed: nothing else
    // crosses a ring buffer when counting.
    if stats.lost > 0 {
        line += &format!("; lost {}", stats.lost);
    }
    line += &crate::trace::table_shortfalls(&stats);
    let failure = out.failure();
    if let Some((_, rows)) = failure {
        line += &format!("; rows not written {rows}");
    }
    eprintln!("{line}");
    crate::trace::outcome(&tracer, &out)
}

/// Prints a table with `print` every `interval` (if any) and once at the
/// end, until the run's `duration` is over, Ctrl-C, or the output's reader
/// goes away (a closed pipe ends the run like Ctrl-C, a failed write as an
/// error): the loop of `count` and `latency`.
pub(crate) fn print_tables(
    tracer: &Tracer,
    out: &mut Sink,
    duration: Option<Duration>,
    interval: Option<Duration>,
    mut print: impl FnMut(&Tracer, &mut Sink) -> Result<()>,
) -> Result<()> {
    let start = Instant::now();
    let deadline = duration.map(|d| start + d);
    let mut next_print = interval.map(|i| start + i);
    loop {
        std::thread::sleep(TICK);
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            tracer.stop();
        }
        out.check_reader();
        if !out.is_open() {
            tracer.stop();
        }
        if tracer.stop_requested() {
            break;
        }
        if let (Some(at), Some(interval)) = (next_print, interval) {
            if now >= at {
                print(tracer, out)?;
                next_print = Some(at + interval);
            }
        }
    }
    print(tracer, out)
}

/// A key's value as the table shows it: a task name escaped, since a
/// process chooses its own.
pub(crate) fn cell(value: &CountValue) -> String {
    match value {
        CountValue::Comm(name) => escape_text(name).into_owned(),
        other => other.to_string(),
    }
}

fn header(f: CountField) -> String {
    f.name().to_uppercase()
}

/// The table, each row a record of the sink.
fn write_table(out: &mut Sink, fields: &[CountField], rows: &[CountRow], stamped: bool) {
    if stamped {
        out.text(|buf| writeln!(buf, "{}", local_time(now_ns())));
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.key.iter().map(cell).collect())
        .collect();
    let widths: Vec<usize> = fields
        .iter()
        .enumerate()
        .map(|(i, f)| {
            cells
                .iter()
                .map(|c| c[i].chars().count())
                .chain([header(*f).len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut line = String::new();
    for (f, w) in fields.iter().zip(&widths) {
        line += &format!("{:<w$}  ", header(*f));
    }
    out.text(|buf| writeln!(buf, "{line}{:>12} {:>14}", "EVENTS", "BYTES"));
    for (row, cells) in rows.iter().zip(&cells) {
        let mut line = String::new();
        for ((value, cell), w) in row.key.iter().zip(cells).zip(&widths) {
            // Numbers right-aligned, names and addresses left-aligned.
            match value {
                CountValue::Port(_) | CountValue::Pid(_) => line += &format!("{cell:>w$}  "),
                _ => line += &format!("{cell:<w$}  "),
            }
        }
        out.record(|buf| writeln!(buf, "{line}{:>12} {:>14}", row.events, row.bytes));
    }
    if stamped {
        out.text(|buf| writeln!(buf));
    }
}

pub(crate) fn json_value(v: &CountValue) -> Value {
    match v {
        CountValue::Port(p) => json!(p),
        CountValue::Pid(p) => json!(p),
        CountValue::Addr(a) => json!(a.to_string()),
        CountValue::Comm(c) => json!(c),
        CountValue::Event(k) => json!(k.name()),
        CountValue::Reason(r) | CountValue::Errno(r) => json!(r),
        CountValue::Cgroup(id) => json!(id),
        CountValue::Netns(ns) => json!(ns),
    }
}

fn write_json(out: &mut impl Write, fields: &[CountField], rows: &[CountRow]) -> io::Result<()> {
    let rows: Vec<Value> = rows
        .iter()
        .map(|r| {
            let mut m = Map::new();
            for (f, v) in fields.iter().zip(&r.key) {
                m.insert(f.name().into(), json_value(v));
            }
            m.insert("events".into(), json!(r.events));
            m.insert("bytes".into(), json!(r.bytes));
            Value::Object(m)
        })
        .collect();
    serde_json::to_writer(&mut *out, &json!({ "ts": now_ns(), "rows": rows }))?;
    writeln!(out)
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use proptest::prelude::*;
    use proptest::sample::subsequence;

    use super::*;
    use crate::{Cli, Command};

    fn count_args(argv: &[&str]) -> Result<CountArgs, clap::Error> {
        let cli = Cli::try_parse_from(["udptrace", "count"].iter().chain(argv))?;
        match cli.command {
            Some(Command::Count(args)) => Ok(args),
            _ => unreachable!("count parses as count"),
        }
    }

    fn key_list() -> impl Strategy<Value = Vec<CountField>> {
        subsequence(CountField::ALL.to_vec(), 1..=CountField::ALL.len()).prop_shuffle()
    }

    fn names(keys: &[CountField]) -> String {
        keys.iter().map(|k| k.name()).collect::<Vec<_>>().join(",")
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn any_by_text_is_known_keys_or_an_error(s in "\\PC{0,40}") {
            if let Ok(args) = count_args(&["--by", &s]) {
                let given: Vec<&str> = s.split(',').collect();
                prop_assert_eq!(names(&args.by), given.join(","));
                let _ = args.check();
            }
        }

        #[test]
        fn key_lists_round_trip(keys in key_list()) {
            let args = count_args(&["--by", &names(&keys), "-e", "send,drop"]).unwrap();
            prop_assert_eq!(&args.by, &keys);
            prop_assert_eq!(args.check(), Ok(()));
            // reason counts drops only: without them it is refused.
            let args = count_args(&["--by", &names(&keys)]).unwrap();
            prop_assert_eq!(args.check().is_ok(), !keys.contains(&CountField::Reason));
        }

        #[test]
        fn a_key_given_twice_is_refused(keys in key_list(), pick in any::<usize>()) {
            let mut twice = keys.clone();
            twice.push(keys[pick % keys.len()]);
            let args = count_args(&["--by", &names(&twice), "-e", "drop"]).unwrap();
            prop_assert!(args.check().unwrap_err().contains("twice"));
        }
    }
}
