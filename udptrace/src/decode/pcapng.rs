//! Packet events as a pcapng capture, the format Wireshark, tshark and
//! tcpdump read: each datagram an IP packet on one raw-IP interface, with
//! nanosecond timestamps, its direction, and a comment naming the process
//! (and, for drops, the kernel's reason).
//!
//! The IP and UDP headers are rebuilt from the event: addresses, ports, the
//! IP payload length, the UDP length and checksum are the datagram's; the
//! IPv4 identification, TTL (64) and flags are not kept by udptrace and are
//! written as constants. The payload is what the snap length captured.

use std::io::Write;
use std::net::IpAddr;

use crate::event::Event;

/// LINKTYPE_RAW: each packet begins with its IPv4 or IPv6 header.
const LINKTYPE_RAW: u16 = 101;

const SECTION_HEADER: u32 = 0x0A0D_0D0A;
const INTERFACE_DESCRIPTION: u32 = 1;
const ENHANCED_PACKET: u32 = 6;
const BYTE_ORDER_MAGIC: u32 = 0x1A2B_3C4D;

const OPT_END: u16 = 0;
const OPT_COMMENT: u16 = 1;
const SHB_USERAPPL: u16 = 4;
const IF_NAME: u16 = 2;
const IF_TSRESOL: u16 = 9;
const EPB_FLAGS: u16 = 2;

/// epb_flags' direction bits.
const INBOUND: u32 = 1;
const OUTBOUND: u32 = 2;

const IPV4_HEADER: usize = 20;
const IPV6_HEADER: usize = 40;
const UDP_HEADER: usize = 8;

/// The section and interface headers every capture starts with; `snaplen`
/// is the payload bytes each packet carries at most.
pub fn write_header(out: &mut impl Write, snaplen: u32) -> std::io::Result<()> {
    let mut options = Vec::new();
    option(
        &mut options,
        SHB_USERAPPL,
        concat!("udptrace ", env!("CARGO_PKG_VERSION")).as_bytes(),
    );
    option(&mut options, OPT_END, &[]);
    let mut body = Vec::new();
    body.extend_from_slice(&BYTE_ORDER_MAGIC.to_le_bytes());
    body.extend_from_slice(&1u16.to_le_bytes()); // version 1.0
    body.extend_from_slice(&0u16.to_le_bytes());
    body.extend_from_slice(&(-1i64).to_le_bytes()); // section length: not given
    body.extend_from_slice(&options);
    block(out, SECTION_HEADER, &body)?;

    let mut options = Vec::new();
    option(&mut options, IF_NAME, b"udptrace");
    option(&mut options, IF_TSRESOL, &[9]); // 10^-9 s: nanoseconds
    option(&mut options, OPT_END, &[]);
    let mut body = Vec::new();
    body.extend_from_slice(&LINKTYPE_RAW.to_le_bytes());
    body.extend_from_slice(&0u16.to_le_bytes());
    // The longest packet a record can hold: IPv6 and UDP headers, then the payload.
    let max = (IPV6_HEADER + UDP_HEADER) as u32 + snaplen;
    body.extend_from_slice(&max.to_le_bytes());
    body.extend_from_slice(&options);
    block(out, INTERFACE_DESCRIPTION, &body)
}

/// One packet event or drop as an enhanced packet block; other events are
/// not packets, and write nothing (false).
pub fn write_packet(out: &mut impl Write, ev: &Event) -> std::io::Result<bool> {
    let Some(p) = ev.packet else {
        return Ok(false);
    };
    let payload = ev.payload.as_deref().unwrap_or(&[]);
    let packet = ip_packet(ev, payload);
    let ip_header = if p.ip_ver == 6 {
        IPV6_HEADER
    } else {
        IPV4_HEADER
    };
    let original = ip_header + usize::from(p.ip_plength).max(UDP_HEADER);

    let mut options = Vec::new();
    let flags = if p.inbound { INBOUND } else { OUTBOUND };
    option(&mut options, EPB_FLAGS, &flags.to_le_bytes());
    option(&mut options, OPT_COMMENT, comment(ev).as_bytes());
    option(&mut options, OPT_END, &[]);

    let mut body = Vec::with_capacity(20 + packet.len() + 3 + options.len());
    body.extend_from_slice(&0u32.to_le_bytes()); // interface 0
    body.extend_from_slice(&((ev.ts_ns >> 32) as u32).to_le_bytes());
    body.extend_from_slice(&(ev.ts_ns as u32).to_le_bytes());
    body.extend_from_slice(&(packet.len() as u32).to_le_bytes());
    body.extend_from_slice(&(original.max(packet.len()) as u32).to_le_bytes());
    body.extend_from_slice(&packet);
    pad(&mut body);
    body.extend_from_slice(&options);
    block(out, ENHANCED_PACKET, &body)?;
    Ok(true)
}

/// What the capture says of the datagram beyond its bytes.
pub fn comment(ev: &Event) -> String {
    let mut text = format!(
        "pid={} tid={} comm={} uid={}",
        ev.pid,
        ev.tid,
        ev.comm.to_string_lossy(),
        ev.uid
    );
    match ev.cgroup_info.as_deref() {
        Some(info) => {
            text += &format!(" cgroup={}", info.path);
            if let Some(id) = &info.container_id {
                text += &format!(" container={id}");
            }
            if let Some(uid) = &info.pod_uid {
                text += &format!(" pod={uid}");
            }
        }
        None if ev.cgroup != 0 => text += &format!(" cgroup_id={}", ev.cgroup),
        None => {}
    }
    if ev.netns != 0 {
        text += &format!(" netns={}", ev.netns);
    }
    text += &format!(" sock={}", ev.sock);
    if let Some(reason) = ev.drop_reason() {
        text += &format!(" drop={reason}");
    }
    text
}

/// The datagram as the wire had it, up to the captured payload: an IPv4 or
/// IPv6 header (by the packet's IP version), the UDP header, the payload.
fn ip_packet(ev: &Event, payload: &[u8]) -> Vec<u8> {
    let p = ev.packet.expect("a packet event");
    let (src, dst) = (ev.source(), ev.destination());
    let mut pkt = Vec::with_capacity(IPV6_HEADER + UDP_HEADER + payload.len());
    if p.ip_ver == 6 {
        pkt.extend_from_slice(&0x6000_0000u32.to_be_bytes());
        pkt.extend_from_slice(&p.ip_plength.to_be_bytes());
        pkt.push(libc::IPPROTO_UDP as u8);
        pkt.push(64); // hop limit
        pkt.extend_from_slice(&v6_octets(src.ip()));
        pkt.extend_from_slice(&v6_octets(dst.ip()));
    } else {
        let total = (IPV4_HEADER as u16).saturating_add(p.ip_plength);
        pkt.extend_from_slice(&[0x45, 0]);
        pkt.extend_from_slice(&total.to_be_bytes());
        pkt.extend_from_slice(&[0, 0, 0x40, 0]); // id 0, don't fragment
        pkt.extend_from_slice(&[64, libc::IPPROTO_UDP as u8, 0, 0]);
        pkt.extend_from_slice(&v4_octets(src.ip()));
        pkt.extend_from_slice(&v4_octets(dst.ip()));
        let sum = ipv4_checksum(&pkt);
        pkt[10..12].copy_from_slice(&sum.to_be_bytes());
    }
    pkt.extend_from_slice(&src.port().to_be_bytes());
    pkt.extend_from_slice(&dst.port().to_be_bytes());
    pkt.extend_from_slice(&p.udp_length.to_be_bytes());
    pkt.extend_from_slice(&p.udp_checksum.to_be_bytes());
    pkt.extend_from_slice(payload);
    pkt
}

fn v4_octets(ip: IpAddr) -> [u8; 4] {
    match ip {
        IpAddr::V4(v4) => v4.octets(),
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or([0; 4], |v4| v4.octets()),
    }
}

fn v6_octets(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// The IPv4 header checksum: the ones' complement of the ones' complement sum.
fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An option: code, length, value padded to 32 bits.
fn option(out: &mut Vec<u8>, code: u16, value: &[u8]) {
    out.extend_from_slice(&code.to_le_bytes());
    out.extend_from_slice(&(value.len() as u16).to_le_bytes());
    out.extend_from_slice(value);
    pad(out);
}

fn pad(out: &mut Vec<u8>) {
    out.resize(out.len().next_multiple_of(4), 0);
}

/// A block: type, total length, body, total length again.
fn block(out: &mut impl Write, kind: u32, body: &[u8]) -> std::io::Result<()> {
    let total = (body.len() + 12) as u32;
    out.write_all(&kind.to_le_bytes())?;
    out.write_all(&total.to_le_bytes())?;
    out.write_all(body)?;
    out.write_all(&total.to_le_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{test_event, EventKind, Family, Packet};

    fn packet_event(inbound: bool, payload: &[u8]) -> Event {
        let mut ev = test_event(0x1_0000_0002);
        ev.kind = EventKind::PacketSend;
        ev.local = "127.0.0.1:5000".parse().unwrap();
        ev.remote = "127.0.0.2:53".parse().unwrap();
        ev.family = Family::V4;
        ev.packet = Some(Packet {
            ip_ver: 4,
            ip_plength: 8 + 5,
            udp_length: 8 + 5,
            udp_checksum: 0xabcd,
            gso_segs: 1,
            inbound,
            drop_reason: None,
        });
        ev.payload = Some(payload.to_vec());
        ev
    }

    #[test]
    fn checksum_of_a_known_header() {
        // The example of RFC 1071's usual illustration (Wikipedia's IPv4 header).
        let header = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(ipv4_checksum(&header), 0xb861);
    }

    #[test]
    fn an_outgoing_packet_block() {
        let mut out = Vec::new();
        assert!(write_packet(&mut out, &packet_event(false, b"hello")).unwrap());
        assert_eq!(&out[..4], &ENHANCED_PACKET.to_le_bytes());
        let total = u32::from_le_bytes(out[4..8].try_into().unwrap()) as usize;
        assert_eq!(total, out.len());
        assert_eq!(&out[total - 4..], &out[4..8]);
        // Timestamp high and low words, captured and original lengths.
        assert_eq!(&out[12..16], &1u32.to_le_bytes());
        assert_eq!(&out[16..20], &2u32.to_le_bytes());
        assert_eq!(&out[20..24], &(20u32 + 8 + 5).to_le_bytes());
        assert_eq!(&out[24..28], &(20u32 + 8 + 5).to_le_bytes());
        let ip = &out[28..28 + 33];
        assert_eq!(&ip[12..16], &[127, 0, 0, 1]);
        assert_eq!(&ip[16..20], &[127, 0, 0, 2]);
        assert_eq!(&ip[20..22], &5000u16.to_be_bytes());
        assert_eq!(&ip[22..24], &53u16.to_be_bytes());
        assert_eq!(&ip[28..], b"hello");
        assert_eq!(ipv4_checksum(&ip[..20]), 0, "a valid header sums to zero");
        // Padded to 32 bits, then the flags option: outbound.
        let opts = &out[28 + 36..];
        assert_eq!(&opts[..4], &[2, 0, 4, 0]);
        assert_eq!(&opts[4..8], &OUTBOUND.to_le_bytes());
    }

    #[test]
    fn a_truncated_payload_keeps_the_original_length() {
        let mut ev = packet_event(true, b"he");
        ev.packet.as_mut().unwrap().ip_plength = 8 + 1000;
        let mut out = Vec::new();
        write_packet(&mut out, &ev).unwrap();
        assert_eq!(&out[20..24], &(20u32 + 8 + 2).to_le_bytes());
        assert_eq!(&out[24..28], &(20u32 + 8 + 1000).to_le_bytes());
    }

    #[test]
    fn socket_events_are_not_packets() {
        let mut out = Vec::new();
        assert!(!write_packet(&mut out, &test_event(1)).unwrap());
        assert!(out.is_empty());
    }
}
