//! `udptrace dns`: one line per DNS transaction over UDP, from the
//! datagrams' payload: who asked, which server, what, the answer and how
//! long it took; and every query left unanswered.

use std::io::Write;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use clap::Args;
use udptrace::dns::{rcode_name, DnsTracker, DnsTransaction, DNS_SNAPLEN};
use udptrace::{EventKind, Tracer};

use crate::output::{escape_bytes, local_time};
use crate::parse::parse_seconds;
use crate::sink::Sink;
use crate::trace::{outcome, until_stopped, SelectArgs};

#[derive(Args, Debug)]
pub struct DnsArgs {
    /// Write one JSON object per transaction (NDJSON) instead of text columns
    #[arg(long)]
    json: bool,
    /// Report a query unanswered after this many seconds
    #[arg(long, value_name = "SECONDS", default_value = "5", value_parser = parse_seconds)]
    timeout: Duration,
    /// The filters; --port is the DNS port (53 if not given)
    #[command(flatten)]
    select: SelectArgs,
}

const DNS_PORT: u16 = 53;
const EXPIRY_TICK: Duration = Duration::from_millis(100);

pub fn run(mut args: DnsArgs) -> Result<()> {
    args.select.port.get_or_insert(DNS_PORT);
    let kinds = vec![EventKind::PacketSend, EventKind::PacketRecv];
    let builder = args.select.builder(kinds.clone()).snaplen(DNS_SNAPLEN);
    let mut tracer = args.select.start(builder)?;
    let mut dns = DnsTracker::new(args.timeout);
    let mut out = Sink::stdout();
    let mut done = Totals::default();
    let mut last_expiry = Instant::now();
    if !args.json {
        out.text(header);
    }
    until_stopped(&mut tracer, &mut out, args.select.duration, |ev, out| {
        if let Some(t) = ev.and_then(|ev| dns.event(&ev)) {
            write(out, &t, args.json, &mut done);
        }
        // Timeouts are looked for on a tick, not at each event: many queries may wait.
        if last_expiry.elapsed() >= EXPIRY_TICK {
            last_expiry = Instant::now();
            for t in dns.expire(now_ns()) {
                write(out, &t, args.json, &mut done);
            }
        }
    });
    // Every query gets its line: those still waiting as such.
    for t in dns.expire(now_ns()).into_iter().chain(dns.finish()) {
        write(&mut out, &t, args.json, &mut done);
    }
    out.flush();
    summary(&tracer, &dns, &done);
    outcome(&tracer, &out)
}

#[derive(Default)]
struct Totals {
    answered: u64,
    timed_out: u64,
    waiting: u64,
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn header(out: &mut Vec<u8>) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<15} {:>7} {:<16} {:<6} {:<24} {:>5} {:<6} {:<32} {:<8} {:>3} {:>10}",
        "TIME", "PID", "COMM", "ROLE", "SERVER", "ID", "TYPE", "NAME", "RCODE", "ANS", "LATENCY"
    )
}

fn write(out: &mut Sink, t: &DnsTransaction, json: bool, done: &mut Totals) {
    match (&t.response, t.timed_out) {
        (Some(_), _) => done.answered += 1,
        (None, true) => done.timed_out += 1,
        (None, false) => done.waiting += 1,
    }
    if json {
        out.record(|buf| {
            serde_json::to_writer(&mut *buf, t)?;
            buf.write_all(b"\n")
        });
        return;
    }
    out.record(|buf| {
        let (rcode, answers, latency) = match &t.response {
            Some(r) => (
                format!(
                    "{}{}",
                    rcode_name(r.rcode),
                    if r.truncated { ",TC" } else { "" }
                ),
                r.answers.to_string(),
                format!("{:.3} ms", r.latency.as_secs_f64() * 1e3),
            ),
            None if t.timed_out => ("-".into(), "-".into(), "timeout".into()),
            None => ("-".into(), "-".into(), "waiting".into()),
        };
        writeln!(
            buf,
            "{:<15} {:>7} {:<16} {:<6} {:<24} {:>5} {:<6} {:<32} {:<8} {:>3} {:>10}",
            local_time(t.ts_ns),
            t.pid,
            escape_bytes(t.comm.as_bytes()),
            t.role.name(),
            t.server(),
            t.id,
            t.qtype,
            // Escaped by the decoder as dig escapes it, into printable ASCII:
            // escaping it again would double its backslashes.
            t.name,
            rcode,
            answers,
            latency
        )
    });
}

fn summary(tracer: &Tracer, dns: &DnsTracker, done: &Totals) {
    let stats = tracer.stats();
    let mut line = format!(
        "{} queries (answered {}, timed out {}, still waiting at the end {}); not DNS {}; lost {}",
        done.answered + done.timed_out + done.waiting,
        done.answered,
        done.timed_out,
        done.waiting,
        dns.malformed,
        stats.lost
    );
    if dns.unmatched > 0 {
        line += &format!("; responses to no traced query {}", dns.unmatched);
    }
    if dns.pending_full > 0 {
        line += &format!(
            "; queries not followed (too many waiting) {}",
            dns.pending_full
        );
    }
    eprintln!("{line}");
}
