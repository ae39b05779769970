//! Text columns and NDJSON for socket events.

use std::io::{self, Write};
use std::mem::MaybeUninit;

use udptrace::Event;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

const ADDR_WIDTH: usize = 24;

pub fn write_header(out: &mut impl Write) -> io::Result<()> {
    writeln!(
        out,
        "{:<15} {:>7} {:<16} {:<7} {:<w$} {:<w$} {:>8}",
        "TIME",
        "PID",
        "COMM",
        "EVENT",
        "LOCAL",
        "REMOTE",
        "BYTES",
        w = ADDR_WIDTH
    )
}

pub fn write_event(out: &mut impl Write, format: Format, ev: &Event) -> io::Result<()> {
    match format {
        Format::Json => {
            serde_json::to_writer(&mut *out, ev)?;
            out.write_all(b"\n")
        }
        Format::Text => {
            let result = match (ev.bytes(), ev.error()) {
                (Some(bytes), _) => bytes.to_string(),
                (None, Some(err)) => err,
                (None, None) => "-".into(),
            };
            writeln!(
                out,
                "{:<15} {:>7} {:<16} {:<7} {:<w$} {:<w$} {:>8}",
                local_time(ev.ts_ns),
                ev.pid,
                ev.comm,
                ev.kind,
                ev.local,
                ev.remote,
                result,
                w = ADDR_WIDTH
            )
        }
    }
}

/// `HH:MM:SS.micros` in the local time zone.
fn local_time(ts_ns: u64) -> String {
    let secs = (ts_ns / 1_000_000_000) as libc::time_t;
    let micros = (ts_ns % 1_000_000_000) / 1_000;
    let mut tm = MaybeUninit::<libc::tm>::uninit();
    // SAFETY: localtime_r fills `tm` and returns NULL only on overflow.
    let tm = unsafe {
        if libc::localtime_r(&secs, tm.as_mut_ptr()).is_null() {
            return format!("{secs}.{micros:06}");
        }
        tm.assume_init()
    };
    format!(
        "{:02}:{:02}:{:02}.{micros:06}",
        tm.tm_hour, tm.tm_min, tm.tm_sec
    )
}
