//! `udptrace quic`: one line per QUIC long-header packet (Initial, 0-RTT,
//! Handshake, Retry, Version Negotiation) with its process, version,
//! connection ids, and the server name a client's Initial asks for.

use std::borrow::Cow;
use std::io::Write;

use anyhow::Result;
use clap::Args;
use udptrace::quic::{cid_hex, parse_datagram, version_hex, QuicPacketEvent, QUIC_SNAPLEN};
use udptrace::{Event, EventKind};

use crate::output::{escape_bytes, local_time};
use crate::parse::parse_snaplen;

/// A snap length that holds a long header at least (two 20-byte connection ids).
fn parse_quic_snaplen(s: &str) -> Result<u32, String> {
    match parse_snaplen(s)? {
        n if n < 64 => Err("a QUIC snap length must be at least 64 bytes".into()),
        n => Ok(n),
    }
}
use crate::sink::Sink;
use crate::trace::{outcome, until_stopped, SelectArgs};

#[derive(Args, Debug)]
pub struct QuicArgs {
    /// Write one JSON object per packet (NDJSON) instead of text columns
    #[arg(long)]
    json: bool,
    /// Capture the first BYTES of each datagram: a client's Initial must fit
    /// whole for its server name to be read
    #[arg(long, value_name = "BYTES", default_value_t = QUIC_SNAPLEN, value_parser = parse_quic_snaplen)]
    snaplen: u32,
    /// The filters; --port is the QUIC port (443 if not given)
    #[command(flatten)]
    select: SelectArgs,
}

const QUIC_PORT: u16 = 443;

#[derive(Default)]
struct Totals {
    packets: u64,
    short_only: u64,
    not_quic: u64,
}

pub fn run(mut args: QuicArgs) -> Result<()> {
    args.select.port.get_or_insert(QUIC_PORT);
    let kinds = vec![EventKind::PacketSend, EventKind::PacketRecv];
    let builder = args.select.builder(kinds).snaplen(args.snaplen);
    let mut tracer = args.select.start(builder)?;
    let mut out = Sink::stdout();
    let mut totals = Totals::default();
    if !args.json {
        out.text(header);
    }
    until_stopped(&mut tracer, &mut out, args.select.duration, |ev, out| {
        if let Some(ev) = ev {
            datagram(out, &ev, args.json, &mut totals);
        }
    });
    out.flush();
    eprintln!(
        "{} long-header packets; datagrams of short-header packets only {}; not QUIC {}; lost {}",
        totals.packets,
        totals.short_only,
        totals.not_quic,
        tracer.stats().lost
    );
    outcome(&tracer, &out)
}

fn header(out: &mut Vec<u8>) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<15} {:>7} {:<16} {:<11} {:<24} {:<24} {:<10} {:<9} {:<16} {:<16} SNI",
        "TIME", "PID", "COMM", "EVENT", "LOCAL", "REMOTE", "VERSION", "TYPE", "DCID", "SCID"
    )
}

fn datagram(out: &mut Sink, ev: &Event, json: bool, totals: &mut Totals) {
    let payload = ev.payload.as_deref().unwrap_or_default();
    let packets = match parse_datagram(payload, datagram_len(ev)) {
        Ok(packets) if !payload.is_empty() => packets,
        _ => {
            totals.not_quic += 1;
            return;
        }
    };
    if packets.is_empty() {
        totals.short_only += 1;
    }
    for packet in &packets {
        totals.packets += 1;
        out.record(|buf| {
            if json {
                serde_json::to_writer(&mut *buf, &QuicPacketEvent { event: ev, packet })?;
                return buf.write_all(b"\n");
            }
            writeln!(
                buf,
                "{:<15} {:>7} {:<16} {:<11} {:<24} {:<24} {:<10} {:<9} {:<16} {:<16} {}",
                local_time(ev.ts_ns),
                ev.pid,
                escape_bytes(ev.comm.as_bytes()),
                ev.kind,
                ev.local,
                ev.remote,
                version_hex(packet.version),
                packet.packet_type.name(),
                cid_hex(&packet.dcid),
                cid_hex(&packet.scid),
                sni_text(packet.sni.as_deref())
            )
        });
    }
}

/// The UDP payload's length, of which the event may carry only the start.
fn datagram_len(ev: &Event) -> usize {
    ev.packet
        .map_or(0, |p| usize::from(p.ip_plength.saturating_sub(8)))
}

/// The SNI column: the name with what is not printable UTF-8 as `\xNN`, or `-`.
fn sni_text(sni: Option<&[u8]>) -> Cow<'_, str> {
    sni.map_or("-".into(), escape_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_name_that_is_not_utf8_prints_its_bytes() {
        assert_eq!(
            sni_text(Some(b"\xff\xfe\x80host.example")),
            r"\xff\xfe\x80host.example"
        );
        assert_eq!(sni_text(Some(b"quic.test")), "quic.test");
        assert_eq!(sni_text(None), "-");
    }
}
