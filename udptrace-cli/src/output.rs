//! How events are written: text columns, DTrace's packet lines, drop lines,
//! NDJSON or a pcapng capture.

use std::borrow::Cow;
use std::io::{self, Write};
use std::mem::MaybeUninit;
use std::net::SocketAddr;

use udptrace::{Event, EventKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One line per event: time, process, event, local and remote ends, bytes.
    Text,
    /// The DTrace udp provider script's lines: delta, source, destination, bytes.
    Packets,
    /// One line per drop, with its reason.
    Drops,
    Json,
    /// A pcapng capture whose packets carry this much payload at most.
    Pcapng {
        snaplen: u32,
    },
}

const ADDR_WIDTH: usize = 24;

pub struct Writer {
    format: Format,
    /// Text and drop lines end with the container and network namespace.
    wide: bool,
    /// Time of the previous packet line (ns), for DTrace's DELTA(us) column.
    last_ts: Option<u64>,
}

impl Writer {
    pub fn new(format: Format, wide: bool) -> Writer {
        Writer {
            format,
            wide,
            last_ts: None,
        }
    }

    pub fn header(&mut self, out: &mut impl Write) -> io::Result<()> {
        if self.wide && matches!(self.format, Format::Text | Format::Drops) {
            let mut line = Vec::new();
            self.plain_header(&mut line)?;
            line.pop(); // the newline
            return writeln!(
                out,
                "{} {:<12} {:>10}",
                String::from_utf8_lossy(&line),
                "CONTAINER",
                "NETNS"
            );
        }
        self.plain_header(out)
    }

    fn plain_header(&mut self, out: &mut impl Write) -> io::Result<()> {
        match self.format {
            Format::Json => Ok(()),
            Format::Pcapng { snaplen } => udptrace::pcapng::write_header(out, snaplen),
            Format::Text => writeln!(
                out,
                "{:<15} {:>7} {:<16} {:<11} {:<w$} {:<w$} {:>8}",
                "TIME",
                "PID",
                "COMM",
                "EVENT",
                "LOCAL",
                "REMOTE",
                "BYTES",
                w = ADDR_WIDTH
            ),
            // The script's header, then the owner, which DTrace cannot give for receives.
            Format::Packets => writeln!(
                out,
                " {:>10} {:>36}    {:<36} {:>6} {:>7} COMM",
                "DELTA(us)", "SOURCE", "DEST", "BYTES", "PID"
            ),
            Format::Drops => writeln!(
                out,
                "{:<15} {:>7} {:<16} {:<20} {:<w$}    {:<w$} {:>6}",
                "TIME",
                "PID",
                "COMM",
                "REASON",
                "SOURCE",
                "DEST",
                "BYTES",
                w = ADDR_WIDTH
            ),
        }
    }

    pub fn event(&mut self, out: &mut impl Write, ev: &Event) -> io::Result<()> {
        if self.wide && matches!(self.format, Format::Text | Format::Drops) {
            let mut line = Vec::new();
            self.plain_event(&mut line, ev)?;
            line.pop(); // the newline
            let container = ev
                .cgroup_info
                .as_deref()
                .and_then(|i| i.short_container_id());
            let netns = (ev.netns != 0).then(|| ev.netns.to_string());
            out.write_all(&line)?;
            return writeln!(
                out,
                " {:<12} {:>10}",
                container.unwrap_or("-"),
                netns.as_deref().unwrap_or("-")
            );
        }
        self.plain_event(out, ev)
    }

    fn plain_event(&mut self, out: &mut impl Write, ev: &Event) -> io::Result<()> {
        match self.format {
            Format::Pcapng { .. } => udptrace::pcapng::write_packet(out, ev).map(|_| ()),
            Format::Json => {
                serde_json::to_writer(&mut *out, ev)?;
                out.write_all(b"\n")
            }
            Format::Text => {
                let result = match (ev.bytes(), ev.error(), ev.drop_reason()) {
                    (_, _, Some(reason)) => reason,
                    (Some(bytes), _, _) => bytes.to_string(),
                    (None, Some(err), _) => err,
                    (None, None, _) => "-".into(),
                };
                writeln!(
                    out,
                    "{:<15} {:>7} {:<16} {:<11} {:<w$} {:<w$} {:>8}",
                    local_time(ev.ts_ns),
                    ev.pid,
                    escape_bytes(ev.comm.as_bytes()),
                    ev.kind,
                    ev.local,
                    ev.remote,
                    result,
                    w = ADDR_WIDTH
                )
            }
            Format::Packets => self.packet_line(out, ev),
            Format::Drops => writeln!(
                out,
                "{:<15} {:>7} {:<16} {:<20} {:<w$} -> {:<w$} {:>6}",
                local_time(ev.ts_ns),
                ev.pid,
                escape_bytes(ev.comm.as_bytes()),
                ev.drop_reason().unwrap_or_default(),
                ev.source(),
                ev.destination(),
                ev.packet.map_or(0, |p| p.udp_length),
                w = ADDR_WIDTH
            ),
        }
    }

    /// ` DELTA(us)  local:port -> remote:port  BYTES` for sends and `<-` for
    /// receives, as the provider's script prints them (BYTES is udp_length).
    fn packet_line(&mut self, out: &mut impl Write, ev: &Event) -> io::Result<()> {
        let Some(p) = ev.packet else {
            return Ok(());
        };
        let delta_us = self
            .last_ts
            .map_or(0, |last| ev.ts_ns.saturating_sub(last) / 1000);
        self.last_ts = Some(ev.ts_ns);
        let arrow = if ev.kind == EventKind::PacketRecv {
            "<-"
        } else {
            "->"
        };
        writeln!(
            out,
            " {:>10} {:>30}:{:<5} {} {:<36} {:>6} {:>7} {}",
            delta_us,
            ip_text(ev.local),
            ev.local.port(),
            arrow,
            format!("{}:{}", ip_text(ev.remote), ev.remote.port()),
            p.udp_length,
            ev.pid,
            escape_bytes(ev.comm.as_bytes())
        )
    }
}

/// Untrusted bytes (a task name: prctl takes any) made safe for a terminal,
/// as `ps` does: control characters (C0, DEL and C1, which a terminal takes as
/// commands), the invisible characters that reorder or hide text (bidi
/// overrides, zero-width marks) and bytes that are not UTF-8 become `\xNN`,
/// a backslash `\\`. Escapes are ASCII, so columns still pad by what the
/// terminal shows. The usual name, printable ASCII, is returned as it is.
pub fn escape_bytes(bytes: &[u8]) -> Cow<'_, str> {
    if let Some(plain) = plain_ascii(bytes) {
        return Cow::Borrowed(plain);
    }
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        escape_into(&mut out, chunk.valid());
        for b in chunk.invalid() {
            out += &format!("\\x{b:02x}");
        }
    }
    Cow::Owned(out)
}

/// [`escape_bytes`] for text that is already UTF-8.
pub fn escape_text(text: &str) -> Cow<'_, str> {
    escape_bytes(text.as_bytes())
}

/// `bytes` as text if they need no escaping: printable ASCII, no backslash.
fn plain_ascii(bytes: &[u8]) -> Option<&str> {
    let plain = bytes
        .iter()
        .all(|&b| (0x20..0x7f).contains(&b) && b != b'\\');
    plain.then(|| std::str::from_utf8(bytes).expect("ASCII is UTF-8"))
}

fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        if c.is_control() || is_invisible_format(c) {
            for b in c.encode_utf8(&mut [0; 4]).bytes() {
                *out += &format!("\\x{b:02x}");
            }
        } else if c == '\\' {
            *out += "\\\\";
        } else {
            out.push(c);
        }
    }
}

/// Format characters a terminal does not show but obeys: zero-width marks,
/// bidi embeddings, overrides and isolates, the byte order mark.
fn is_invisible_format(c: char) -> bool {
    matches!(c, '\u{061c}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}'
        | '\u{2060}'..='\u{2069}' | '\u{feff}')
}

/// An address without brackets, as DTrace prints ip_saddr.
fn ip_text(addr: SocketAddr) -> String {
    addr.ip().to_string()
}

/// Wall-clock time, ns since the Unix epoch.
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// `HH:MM:SS.micros` in the local time zone.
pub fn local_time(ts_ns: u64) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_controls_invalid_bytes_and_backslashes() {
        assert_eq!(escape_bytes(b"python3"), "python3");
        assert_eq!(escape_bytes(b"\x1b[2J\x07"), r"\x1b[2J\x07");
        assert_eq!(escape_bytes("\u{9b}".as_bytes()), r"\xc2\x9b");
        assert_eq!(escape_bytes(b"a\xffb\x7f"), r"a\xffb\x7f");
        assert_eq!(escape_bytes("x\u{202e}y".as_bytes()), r"x\xe2\x80\xaey");
        assert!(matches!(escape_bytes(b"nginx: worker"), Cow::Borrowed(_)));
        assert_eq!(escape_bytes(br"a\x1b"), r"a\\x1b");
        assert_eq!(escape_bytes("caf\u{e9}".as_bytes()), "caf\u{e9}");
        assert_eq!(escape_text("tab\there"), r"tab\x09here");
    }
}
