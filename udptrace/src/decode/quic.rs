//! QUIC long-header packets (RFC 9000 section 17.2, RFC 9369 for version
//! 2) from datagrams' payload: version, connection ids and packet type, and
//! for a client's Initial packet the server name its TLS ClientHello asks
//! for, read by removing the Initial packet protection as RFC 9001 section 5
//! defines (keys derived from the destination connection id).

use ring::aead::quic::{HeaderProtectionKey, AES_128};
use serde::ser::{Serialize, SerializeMap, Serializer};

use crate::event::Event;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM};
use ring::hkdf::{KeyType, Salt, HKDF_SHA256};

/// Payload bytes a QUIC tracer asks for: a whole datagram on an Ethernet
/// path, which a client's Initial packet must fit for its decryption.
pub const QUIC_SNAPLEN: u32 = 1500;

pub const VERSION_1: u32 = 0x0000_0001;
pub const VERSION_2: u32 = 0x6b33_43cf;

/// RFC 9001 section 5.2 and RFC 9369 section 3.3.1.
const INITIAL_SALT_V1: [u8; 20] = [
    0x38, 0x76, 0x2c, 0xf7, 0xf5, 0x59, 0x34, 0xb3, 0x4d, 0x17, 0x9a, 0xe6, 0xa4, 0xc8, 0x0c, 0xad,
    0xcc, 0xbb, 0x7f, 0x0a,
];
const INITIAL_SALT_V2: [u8; 20] = [
    0x0d, 0xed, 0xe3, 0xde, 0xf7, 0x00, 0xa6, 0xdb, 0x81, 0x93, 0x81, 0xbe, 0x6e, 0x26, 0x9d, 0xcb,
    0xf9, 0xbd, 0x2e, 0xd9,
];

/// A long-header packet's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketType {
    Initial,
    ZeroRtt,
    Handshake,
    Retry,
    VersionNegotiation,
    /// A version whose type bits udptrace cannot read.
    Unknown,
}

impl PacketType {
    pub fn name(self) -> &'static str {
        match self {
            PacketType::Initial => "initial",
            PacketType::ZeroRtt => "0rtt",
            PacketType::Handshake => "handshake",
            PacketType::Retry => "retry",
            PacketType::VersionNegotiation => "version_negotiation",
            PacketType::Unknown => "unknown",
        }
    }
}

/// One long-header packet of a datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuicPacket {
    pub version: u32,
    pub packet_type: PacketType,
    pub dcid: Vec<u8>,
    pub scid: Vec<u8>,
    /// A client Initial's server name (TLS SNI), where its protection came
    /// off and its ClientHello holds one: its bytes as sent, which a client
    /// need not make UTF-8 or printable.
    pub sni: Option<Vec<u8>>,
}

/// Why a datagram on the QUIC port is not QUIC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotQuic;

/// The long-header packets of a datagram of `datagram_len` bytes, of which
/// `data` is all or, under a capture's snap length, the start; in order (a
/// datagram may coalesce several); empty when it starts with a short-header
/// packet (1-RTT data). A long header cut short or with impossible lengths
/// (beyond the datagram) is not QUIC, unless `data` is only the datagram's
/// start and a packet after the first is what was cut: the packets before
/// it are returned.
pub fn parse_datagram(data: &[u8], datagram_len: usize) -> Result<Vec<QuicPacket>, NotQuic> {
    let datagram_len = datagram_len.max(data.len());
    let complete = data.len() == datagram_len;
    let mut packets = Vec::new();
    let mut at = 0;
    while at < data.len() && data[at] & 0x80 != 0 {
        let (packet, next) = match parse_long(&data[at..], datagram_len - at) {
            Ok(parsed) => parsed,
            Err(_) if !complete && !packets.is_empty() => break,
            Err(e) => return Err(e),
        };
        packets.push(packet);
        match next {
            Some(next) => at += next,
            None => break,
        }
    }
    Ok(packets)
}

/// One long-header packet at the start of `data`, the first bytes of the
/// `room` left in the datagram, and where the next begins (None: the rest
/// of the datagram is this packet's).
fn parse_long(data: &[u8], room: usize) -> Result<(QuicPacket, Option<usize>), NotQuic> {
    let mut r = Reader { data, at: 1 };
    let first = data[0];
    let version = u32::from_be_bytes(r.take(4)?.try_into().unwrap());
    let dcid_len = r.byte()? as usize;
    let dcid = r.take(dcid_len)?.to_vec();
    let scid_len = r.byte()? as usize;
    let scid = r.take(scid_len)?.to_vec();
    let mut packet = QuicPacket {
        version,
        packet_type: PacketType::Unknown,
        dcid,
        scid,
        sni: None,
    };
    if version == 0 {
        packet.packet_type = PacketType::VersionNegotiation;
        return Ok((packet, None));
    }
    if packet.dcid.len() > 20 || packet.scid.len() > 20 {
        return Err(NotQuic);
    }
    let bits = (first >> 4) & 3;
    packet.packet_type = match version {
        VERSION_2 => [
            PacketType::Retry,
            PacketType::Initial,
            PacketType::ZeroRtt,
            PacketType::Handshake,
        ][bits as usize],
        // Version 1 and its drafts (0xff0000xx).
        v if v == VERSION_1 || v >> 8 == 0xff_0000 => [
            PacketType::Initial,
            PacketType::ZeroRtt,
            PacketType::Handshake,
            PacketType::Retry,
        ][bits as usize],
        _ => return Ok((packet, None)),
    };
    match packet.packet_type {
        PacketType::Retry => return Ok((packet, None)),
        PacketType::Initial => {
            let token = r.varint()? as usize;
            r.take(token)?;
        }
        _ => {}
    }
    let length = usize::try_from(r.varint()?).map_err(|_| NotQuic)?;
    let pn_offset = r.at;
    let end = pn_offset.checked_add(length).ok_or(NotQuic)?;
    if length < 20 {
        return Err(NotQuic); // a packet number, a sample's worth and a tag at least
    }
    if end > room {
        return Err(NotQuic); // more than the datagram holds
    }
    if packet.packet_type == PacketType::Initial && end <= data.len() {
        packet.sni = client_initial_sni(version, &packet.dcid, &data[..end], pn_offset);
    }
    Ok((packet, (end < data.len()).then_some(end)))
}

/// A byte cursor whose reads fail past the end.
struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], NotQuic> {
        let bytes = self
            .data
            .get(self.at..self.at.checked_add(n).ok_or(NotQuic)?);
        let bytes = bytes.ok_or(NotQuic)?;
        self.at += n;
        Ok(bytes)
    }

    fn byte(&mut self) -> Result<u8, NotQuic> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, NotQuic> {
        Ok(u16::from_be_bytes(self.take(2)?.try_into().unwrap()))
    }

    fn u24(&mut self) -> Result<usize, NotQuic> {
        let b = self.take(3)?;
        Ok(usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]))
    }

    /// A QUIC variable-length integer (RFC 9000 section 16).
    fn varint(&mut self) -> Result<u64, NotQuic> {
        let first = self.byte()?;
        let len = 1usize << (first >> 6);
        let mut v = u64::from(first & 0x3f);
        for &b in self.take(len - 1)? {
            v = v << 8 | u64::from(b);
        }
        Ok(v)
    }

    fn rest(&self) -> &'a [u8] {
        &self.data[self.at.min(self.data.len())..]
    }
}

/// HKDF-Expand-Label's output length, for ring.
struct Len(usize);

impl KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// HKDF-Expand-Label (RFC 8446 section 7.1) with an empty context.
fn expand_label(prk: &ring::hkdf::Prk, label: &str, len: usize) -> Option<Vec<u8>> {
    let full = format!("tls13 {label}");
    let info = [
        &(len as u16).to_be_bytes()[..],
        &[full.len() as u8][..],
        full.as_bytes(),
        &[0u8][..],
    ];
    let mut out = vec![0u8; len];
    prk.expand(&info, Len(len)).ok()?.fill(&mut out).ok()?;
    Some(out)
}

/// The client's Initial key, IV and header protection key for `dcid`.
fn client_initial_keys(version: u32, dcid: &[u8]) -> Option<(Vec<u8>, Vec<u8>, Vec<u8>)> {
    let (salt, prefix) = match version {
        VERSION_2 => (&INITIAL_SALT_V2, "quicv2 "),
        _ => (&INITIAL_SALT_V1, "quic "),
    };
    let initial = Salt::new(HKDF_SHA256, salt).extract(dcid);
    let client = expand_label(&initial, "client in", 32)?;
    let client = ring::hkdf::Prk::new_less_safe(HKDF_SHA256, &client);
    Some((
        expand_label(&client, &format!("{prefix}key"), 16)?,
        expand_label(&client, &format!("{prefix}iv"), 12)?,
        expand_label(&client, &format!("{prefix}hp"), 16)?,
    ))
}

/// Removes a client Initial packet's protection and reads its ClientHello's
/// server name; None where this is no client Initial (a server's does not
/// open with the client's keys) or it names no server.
fn client_initial_sni(
    version: u32,
    dcid: &[u8],
    packet: &[u8],
    pn_offset: usize,
) -> Option<Vec<u8>> {
    let (key, iv, hp) = client_initial_keys(version, dcid)?;
    let sample = packet.get(pn_offset + 4..pn_offset + 20)?;
    let mask = HeaderProtectionKey::new(&AES_128, &hp)
        .ok()?
        .new_mask(sample)
        .ok()?;
    let mut packet = packet.to_vec();
    packet[0] ^= mask[0] & 0x0f;
    let pn_len = usize::from(packet[0] & 3) + 1;
    let mut pn = 0u64;
    for i in 0..pn_len {
        packet[pn_offset + i] ^= mask[1 + i];
        pn = pn << 8 | u64::from(packet[pn_offset + i]);
    }
    let mut nonce = [0u8; 12];
    nonce.copy_from_slice(&iv);
    for (n, p) in nonce[4..].iter_mut().zip(pn.to_be_bytes()) {
        *n ^= p;
    }
    let key = LessSafeKey::new(UnboundKey::new(&AES_128_GCM, &key).ok()?);
    let (header, payload) = packet.split_at_mut(pn_offset + pn_len);
    let plain = key
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(&header[..]),
            payload,
        )
        .ok()?;
    server_name(&crypto_stream(plain)?)
}

/// The CRYPTO frames' data from offset 0 on, as far as it is contiguous.
fn crypto_stream(frames: &[u8]) -> Option<Vec<u8>> {
    let mut r = Reader {
        data: frames,
        at: 0,
    };
    let mut chunks: Vec<(u64, &[u8])> = Vec::new();
    while !r.rest().is_empty() {
        match r.varint().ok()? {
            0x00 | 0x01 => {} // PADDING, PING
            kind @ (0x02 | 0x03) => {
                // ACK: largest, delay, range count, first range, ranges, ECN counts.
                r.varint().ok()?;
                r.varint().ok()?;
                let ranges = r.varint().ok()?;
                r.varint().ok()?;
                for _ in 0..ranges.min(1024) * 2 {
                    r.varint().ok()?;
                }
                if kind == 0x03 {
                    for _ in 0..3 {
                        r.varint().ok()?;
                    }
                }
            }
            0x06 => {
                let offset = r.varint().ok()?;
                let len = r.varint().ok()? as usize;
                chunks.push((offset, r.take(len).ok()?));
            }
            0x1c => {
                // CONNECTION_CLOSE: error, frame type, reason.
                r.varint().ok()?;
                r.varint().ok()?;
                let len = r.varint().ok()? as usize;
                r.take(len).ok()?;
            }
            _ => break, // no other frame may be in an Initial packet
        }
    }
    chunks.sort_by_key(|c| c.0);
    let mut stream = Vec::new();
    for (offset, data) in chunks {
        let offset = offset as usize;
        if offset > stream.len() {
            break;
        }
        let skip = stream.len() - offset;
        stream.extend_from_slice(data.get(skip..).unwrap_or_default());
    }
    (!stream.is_empty()).then_some(stream)
}

/// The host name of a TLS ClientHello's server_name extension (RFC 6066),
/// read as far as the ClientHello is there; its bytes, whatever they are.
fn server_name(hello: &[u8]) -> Option<Vec<u8>> {
    let mut r = Reader { data: hello, at: 0 };
    if r.byte().ok()? != 1 {
        return None; // not a ClientHello
    }
    r.u24().ok()?;
    r.take(2 + 32).ok()?; // legacy version, random
    let session = r.byte().ok()? as usize;
    r.take(session).ok()?;
    let suites = r.u16().ok()? as usize;
    r.take(suites).ok()?;
    let compression = r.byte().ok()? as usize;
    r.take(compression).ok()?;
    r.u16().ok()?; // extensions' length
    loop {
        let kind = r.u16().ok()?;
        let len = r.u16().ok()? as usize;
        let ext = r.take(len).ok()?;
        if kind != 0 {
            continue;
        }
        let mut names = Reader { data: ext, at: 2 };
        while !names.rest().is_empty() {
            let name_type = names.byte().ok()?;
            let len = names.u16().ok()? as usize;
            let name = names.take(len).ok()?;
            if name_type == 0 {
                return Some(name.to_vec());
            }
        }
        return None;
    }
}

/// Lower-case hex of a connection id.
pub fn cid_hex(cid: &[u8]) -> String {
    crate::event::hex(cid)
}

/// A version as `udptrace quic` shows it, e.g. `0x00000001`.
pub fn version_hex(version: u32) -> String {
    format!("{version:#010x}")
}

/// One packet with the event of its datagram: the NDJSON schema of `udptrace quic`.
pub struct QuicPacketEvent<'a> {
    pub event: &'a Event,
    pub packet: &'a QuicPacket,
}

impl Serialize for QuicPacketEvent<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (ev, p) = (self.event, self.packet);
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("ts", &ev.ts_ns)?;
        m.serialize_entry("event", ev.kind.name())?;
        m.serialize_entry("pid", &ev.pid)?;
        m.serialize_entry("tid", &ev.tid)?;
        m.serialize_entry("comm", &ev.comm.to_string_lossy())?;
        m.serialize_entry("sock", &ev.sock)?;
        m.serialize_entry("laddr", &ev.local.ip())?;
        m.serialize_entry("lport", &ev.local.port())?;
        m.serialize_entry("raddr", &ev.remote.ip())?;
        m.serialize_entry("rport", &ev.remote.port())?;
        m.serialize_entry("version", &version_hex(p.version))?;
        m.serialize_entry("packet_type", p.packet_type.name())?;
        m.serialize_entry("dcid", &cid_hex(&p.dcid))?;
        m.serialize_entry("scid", &cid_hex(&p.scid))?;
        // As `comm`: JSON strings are UTF-8, what does not decode is U+FFFD.
        let sni = p.sni.as_deref().map(String::from_utf8_lossy);
        m.serialize_entry("sni", &sni)?;
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// RFC 9001 appendix A.1: the keys of the example connection id.
    #[test]
    fn client_keys_of_rfc_9001_appendix_a() {
        let (key, iv, hp) = client_initial_keys(VERSION_1, &unhex("8394c8f03e515708")).unwrap();
        assert_eq!(key, unhex("1f369613dd76d5467730efcbe3b1a22d"));
        assert_eq!(iv, unhex("fa044b2f42a3fd3b46fb255c"));
        assert_eq!(hp, unhex("9f50449e04a0e810283a1e9933adedd2"));
    }

    /// RFC 9369 appendix A.1: version 2's.
    #[test]
    fn client_keys_of_rfc_9369_appendix_a() {
        let (key, iv, hp) = client_initial_keys(VERSION_2, &unhex("8394c8f03e515708")).unwrap();
        assert_eq!(key, unhex("8b1a0bc121284290a29e0971b5cd045d"));
        assert_eq!(iv, unhex("91f73e2351d8fa91660e909f"));
        assert_eq!(hp, unhex("45b95e15235d6f45a6b19cbcb0294ba9"));
    }

    #[test]
    fn a_version_negotiation_packet() {
        let vn = unhex("80 00000000 04 01020304 02 0a0b 00000001 6b3343cf");
        let packets = parse_datagram(&vn, vn.len()).unwrap();
        assert_eq!(packets.len(), 1);
        assert_eq!(packets[0].packet_type, PacketType::VersionNegotiation);
        assert_eq!(
            (packets[0].dcid.as_slice(), packets[0].scid.as_slice()),
            (&[1, 2, 3, 4][..], &[10, 11][..])
        );
    }

    #[test]
    fn short_headers_are_quic_without_long_packets() {
        assert_eq!(parse_datagram(&[0x40, 1, 2, 3], 4), Ok(vec![]));
    }

    #[test]
    fn cut_long_headers_are_not_quic() {
        assert_eq!(
            parse_datagram(&unhex("c0 00000001 08 0102"), 8),
            Err(NotQuic)
        );
        assert_eq!(parse_datagram(&unhex("c0 00000001 15"), 6), Err(NotQuic));
        // A handshake packet (20 bytes of packet number and payload), then a cut one.
        let mut two = unhex("e0 00000001 01 aa 01 bb 14");
        two.extend_from_slice(&[0; 20]);
        two.extend_from_slice(&unhex("e0 00000001 08 01"));
        assert_eq!(parse_datagram(&two, two.len()), Err(NotQuic));
        // Captured in part: the second packet is what the snap length cut.
        let first = parse_datagram(&two, two.len() + 100).unwrap();
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].packet_type, PacketType::Handshake);
    }

    /// A length beyond the datagram is no QUIC packet: the 59 bytes of a
    /// handshake header whose Length is 2^62 - 1.
    #[test]
    fn a_length_beyond_the_datagram_is_not_quic() {
        let mut datagram =
            unhex("e0 00000001 08 0102030405060708 08 1112131415161718 ffffffffffffffff");
        datagram.extend_from_slice(&[0; 28]);
        assert_eq!(datagram.len(), 59);
        assert_eq!(parse_datagram(&datagram, 59), Err(NotQuic));
        // Nor when only its start was captured: no datagram is that long.
        assert_eq!(parse_datagram(&datagram, 1200), Err(NotQuic));
        // A Length of 1000: beyond what was captured, within the datagram.
        datagram[23..31].copy_from_slice(&unhex("c0000000000003e8"));
        let packets = parse_datagram(&datagram, 1200).unwrap();
        assert_eq!(packets.len(), 1);
        assert_eq!(packets[0].packet_type, PacketType::Handshake);
        assert_eq!(parse_datagram(&datagram, 59), Err(NotQuic));
    }

    /// A ClientHello: handshake header, version, random, empty session, one
    /// suite, null compression, then the server_name extension naming `name`.
    fn client_hello(name: &[u8]) -> Vec<u8> {
        let mut hello = vec![1, 0, 0, 0, 3, 3];
        hello.extend_from_slice(&[0; 32]);
        hello.extend_from_slice(&[0, 0, 2, 0x13, 0x01, 1, 0]);
        let ext_len = 2 + 1 + 2 + name.len();
        hello.extend_from_slice(&((4 + ext_len) as u16).to_be_bytes());
        hello.extend_from_slice(&[0, 0]);
        hello.extend_from_slice(&(ext_len as u16).to_be_bytes());
        hello.extend_from_slice(&((ext_len - 2) as u16).to_be_bytes());
        hello.push(0);
        hello.extend_from_slice(&(name.len() as u16).to_be_bytes());
        hello.extend_from_slice(name);
        hello
    }

    #[test]
    fn a_server_name_keeps_its_bytes() {
        let name = b"\xff\xfe\x80host.example";
        assert_eq!(server_name(&client_hello(name)).as_deref(), Some(&name[..]));
    }

    #[test]
    fn a_client_hello_names_its_server() {
        let hello = client_hello(b"quic.test");
        assert_eq!(server_name(&hello).as_deref(), Some(&b"quic.test"[..]));
        // The same split into two CRYPTO frames, out of order, behind PADDING.
        let mut frames = vec![0, 0, 0x06, 0x40, 20];
        frames.push(hello.len() as u8 - 20);
        frames.extend_from_slice(&hello[20..]);
        frames.extend_from_slice(&[0x06, 0, 20]);
        frames.extend_from_slice(&hello[..20]);
        assert_eq!(crypto_stream(&frames).unwrap(), hello);
    }
}
