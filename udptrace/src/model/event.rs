//! Typed events, decoded from the BPF records.

use std::fmt;
use std::mem;
use std::net::SocketAddr;
use std::sync::Arc;

use serde::ser::{Serialize, SerializeMap, Serializer};

use crate::bpf::types::{udp_close_event, udp_event, udp_event_kind};
use crate::cgroups::CgroupInfo;
use crate::drop_reason::drop_reason_name;
use crate::errno::errno_text;
pub(crate) use crate::family::ip_of;
pub use crate::family::Family;
use crate::life::SockLife;

/// What happened on the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    /// A datagram was sent (or a send failed).
    Send,
    /// A datagram was received (or a receive failed).
    Recv,
    /// The socket was connected to a remote address (or the connect failed).
    Connect,
    /// The socket was released; it carries the final counters.
    Close,
    /// One UDP datagram left a UDP socket, with its IP and UDP headers.
    PacketSend,
    /// One UDP datagram, with valid headers, arrived for a UDP socket.
    PacketRecv,
    /// The kernel discarded a UDP datagram; the event carries the reason.
    Drop,
}

impl EventKind {
    pub const ALL: [EventKind; 7] = [
        Self::Send,
        Self::Recv,
        Self::Connect,
        Self::Close,
        Self::PacketSend,
        Self::PacketRecv,
        Self::Drop,
    ];

    /// The socket-level events: what a tracer reports unless asked otherwise.
    pub const SOCKET: [EventKind; 4] = [Self::Send, Self::Recv, Self::Connect, Self::Close];

    /// Events carrying a datagram's headers ([`Event::packet`]).
    pub fn is_packet(self) -> bool {
        matches!(self, Self::PacketSend | Self::PacketRecv | Self::Drop)
    }

    /// The name used in text and JSON output.
    pub fn name(self) -> &'static str {
        match self {
            Self::Send => "send",
            Self::Recv => "recv",
            Self::Connect => "connect",
            Self::Close => "close",
            Self::PacketSend => "packet-send",
            Self::PacketRecv => "packet-recv",
            Self::Drop => "drop",
        }
    }

    /// The value of `enum udp_event_kind` in bpf/udptrace.h, which the C
    /// API's kind constants repeat: public so that a test can tie them.
    #[doc(hidden)]
    pub fn wire(self) -> u8 {
        let kind = match self {
            Self::Send => udp_event_kind::UDP_EVENT_SEND,
            Self::Recv => udp_event_kind::UDP_EVENT_RECV,
            Self::Connect => udp_event_kind::UDP_EVENT_CONNECT,
            Self::Close => udp_event_kind::UDP_EVENT_CLOSE,
            Self::PacketSend => udp_event_kind::UDP_EVENT_PACKET_SEND,
            Self::PacketRecv => udp_event_kind::UDP_EVENT_PACKET_RECV,
            Self::Drop => udp_event_kind::UDP_EVENT_DROP,
        };
        kind.0 as u8
    }

    pub(crate) fn from_wire(v: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.wire() == v)
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

impl std::str::FromStr for EventKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown event kind '{}' (expected send, recv, connect, close, \
                     packet-send, packet-recv or drop)",
                    s.escape_debug()
                )
            })
    }
}

/// Cumulative traffic of one socket since tracing started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SockCounters {
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub tx_packets: u64,
}

/// The IP and UDP headers of one datagram, in host byte order, as DTrace's
/// `udp` provider gives them (`ipinfo_t`, `udpinfo_t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet {
    /// 4 or 6.
    pub ip_ver: u8,
    /// The IP payload: total length minus the IP header.
    pub ip_plength: u16,
    /// The UDP header's length field (header and payload).
    pub udp_length: u16,
    /// The UDP checksum field as the packet carries it. On loopback and with
    /// checksum offload, outgoing datagrams carry only the pseudo-header sum.
    pub udp_checksum: u16,
    /// With UDP GSO, the datagrams this send leaves the host as (it is
    /// reported once, as the socket handed it to IP); 1 otherwise.
    pub gso_segs: u16,
    /// Arriving (the event's local address is the datagram's destination).
    pub inbound: bool,
    /// Drops: the kernel's reason (`enum skb_drop_reason`).
    pub drop_reason: Option<u32>,
}

/// A task name as the kernel keeps it: at most 15 bytes, NUL-padded.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Comm([u8; 16]);

impl Comm {
    pub(crate) fn from_raw(raw: [u8; 16]) -> Comm {
        Comm(raw)
    }

    pub fn as_bytes(&self) -> &[u8] {
        let len = self.0.iter().position(|&b| b == 0).unwrap_or(self.0.len());
        &self.0[..len]
    }

    /// The raw 16 bytes, NUL-terminated unless the name fills them.
    pub fn raw(&self) -> &[u8; 16] {
        &self.0
    }

    pub fn to_string_lossy(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(self.as_bytes())
    }
}

impl fmt::Debug for Comm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.to_string_lossy())
    }
}

impl fmt::Display for Comm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.to_string_lossy())
    }
}

/// One UDP socket event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Wall-clock time, ns since the Unix epoch.
    pub ts_ns: u64,
    pub kind: EventKind,
    /// Process (thread group) id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    pub uid: u32,
    /// Name of the thread that made the call.
    pub comm: Comm,
    /// cgroup v2 id of the task.
    pub cgroup: u64,
    /// What `cgroup` is: its path, container and pod. `None` where unknown
    /// (id 0, or the cgroup was removed before udptrace first saw it).
    pub cgroup_info: Option<Arc<CgroupInfo>>,
    /// The network namespace it happened in: the socket's (a drop without
    /// one, the device's), by inode number as `ls -l /proc/PID/ns/net`
    /// shows it; 0 where unknown.
    pub netns: u32,
    /// The kernel's socket cookie: a unique id of the socket.
    pub sock: u64,
    pub family: Family,
    pub local: SocketAddr,
    /// The peer; unspecified (`0.0.0.0:0` / `[::]:0`) when the kernel does not
    /// say it, e.g. `recv()` without an address on an unconnected socket.
    pub remote: SocketAddr,
    /// Bytes of this datagram (send/recv), 0 (connect/close), or `-errno`.
    pub ret: i32,
    /// Socket events: the socket's counters, including this event (zero for
    /// packet events and drops).
    pub counters: SockCounters,
    /// Packet events and drops: the datagram's headers.
    pub packet: Option<Packet>,
    /// Close events: what the socket table knew of the socket (its drops and
    /// receive buffer only when tracking sockets).
    pub life: Option<SockLife>,
    /// Packet events and drops, with a snap length
    /// ([`TracerBuilder::snaplen`](crate::TracerBuilder::snaplen)): the first
    /// bytes of the UDP payload, at most the snap length. Shorter than the
    /// datagram's payload ([`Event::truncated`]) when the snap length cut it,
    /// or the kernel held the rest where a probe cannot read it (paged data
    /// on the fentry and kprobe backends).
    pub payload: Option<Vec<u8>>,
}

impl Event {
    /// Bytes sent or received, for a send or receive that succeeded; the
    /// UDP payload of a packet event or drop.
    pub fn bytes(&self) -> Option<u32> {
        match self.kind {
            EventKind::Connect | EventKind::Close => None,
            _ if self.ret >= 0 => Some(self.ret as u32),
            _ => None,
        }
    }

    /// A captured payload is shorter than the datagram's.
    pub fn truncated(&self) -> bool {
        match (&self.payload, self.packet) {
            (Some(data), Some(p)) => data.len() < usize::from(p.ip_plength.saturating_sub(8)),
            _ => false,
        }
    }

    /// The datagram was arriving: a receive, a received packet, or the drop of one.
    pub fn inbound(&self) -> bool {
        self.kind == EventKind::Recv || self.packet.is_some_and(|p| p.inbound)
    }

    /// Where the datagram came from: the local end for outgoing ones.
    pub fn source(&self) -> SocketAddr {
        if self.inbound() {
            self.remote
        } else {
            self.local
        }
    }

    /// Where the datagram went.
    pub fn destination(&self) -> SocketAddr {
        if self.inbound() {
            self.local
        } else {
            self.remote
        }
    }

    /// Drops: the reason's name as the kernel spells it without its prefix,
    /// e.g. `SOCKET_RCVBUFF`, `NO_SOCKET`, `UDP_CSUM`.
    pub fn drop_reason(&self) -> Option<String> {
        self.packet?.drop_reason.map(drop_reason_name)
    }

    /// The positive errno of a failed call.
    pub fn errno(&self) -> Option<i32> {
        // i32::MIN is no errno (and has no positive twin).
        (self.ret < 0).then(|| self.ret.checked_neg()).flatten()
    }

    /// The errno name of a failed call, e.g. `ECONNREFUSED`.
    pub fn error(&self) -> Option<String> {
        self.errno().map(errno_text)
    }

    /// Decodes one ring-buffer record; `mono_to_wall_ns` converts the kernel's
    /// monotonic timestamp.
    pub(crate) fn decode(data: &[u8], mono_to_wall_ns: i64, captures: bool) -> Option<Event> {
        let raw: &udp_event = plain::from_bytes(data).ok()?;
        let family = match i32::from(raw.family) {
            libc::AF_INET => Family::V4,
            libc::AF_INET6 => Family::V6,
            _ => return None,
        };
        let kind = EventKind::from_wire(raw.kind)?;
        // SAFETY: both members of the union are plain integers; the kind says which was written.
        let (counters, packet) = unsafe { (raw.detail.counters, raw.detail.packet) };
        let mut payload = None;
        let (counters, packet) = if kind.is_packet() {
            // Records of a run with a snap length carry their payload, if any.
            if captures {
                let caplen = usize::from(packet.caplen);
                payload = Some(
                    data.get(mem::size_of::<udp_event>()..)?
                        .get(..caplen)?
                        .to_vec(),
                );
            }
            let packet = Packet {
                ip_ver: packet.ip_ver,
                ip_plength: packet.ip_plength,
                udp_length: packet.udp_length,
                udp_checksum: packet.udp_checksum,
                gso_segs: packet.gso_segs,
                inbound: packet.inbound != 0,
                drop_reason: (kind == EventKind::Drop).then_some(packet.drop_reason),
            };
            (SockCounters::default(), Some(packet))
        } else {
            let counters = SockCounters {
                rx_bytes: counters.rx_bytes,
                tx_bytes: counters.tx_bytes,
                rx_packets: counters.rx_packets,
                tx_packets: counters.tx_packets,
            };
            (counters, None)
        };
        let life = match kind {
            EventKind::Close => plain::from_bytes::<udp_close_event>(data)
                .ok()
                .map(|c| SockLife::from_raw(&c.life, mono_to_wall_ns)),
            _ => None,
        };
        Some(Event {
            life,
            ts_ns: raw.ts_ns.saturating_add_signed(mono_to_wall_ns),
            kind,
            pid: raw.pid,
            tid: raw.tid,
            uid: raw.uid,
            comm: Comm(raw.comm.map(|c| c as u8)),
            cgroup: raw.cgroup_id,
            cgroup_info: None,
            netns: raw.netns,
            sock: raw.sock_cookie,
            family,
            local: SocketAddr::new(ip_of(family, raw.laddr), raw.lport),
            remote: SocketAddr::new(ip_of(family, raw.raddr), raw.rport),
            ret: raw.ret,
            counters,
            packet,
            payload,
        })
    }
}

/// A send at `ts_ns`, for unit tests.
#[cfg(test)]
pub(crate) fn test_event(ts_ns: u64) -> Event {
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    Event {
        ts_ns,
        kind: EventKind::Send,
        pid: 0,
        tid: 0,
        uid: 0,
        comm: Comm([0; 16]),
        cgroup: 0,
        cgroup_info: None,
        netns: 0,
        sock: 0,
        family: Family::V4,
        local: any,
        remote: any,
        ret: 0,
        counters: SockCounters::default(),
        packet: None,
        life: None,
        payload: None,
    }
}

// SAFETY: udp_event is a C struct of integers and byte arrays: any bytes are a valid value.
unsafe impl plain::Plain for udp_event {}
// SAFETY: as above.
unsafe impl plain::Plain for udp_close_event {}

/// Lower-case hex, two digits a byte.
pub(crate) fn hex(data: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(2 * data.len());
    for b in data {
        text.push(DIGITS[usize::from(b >> 4)] as char);
        text.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    text
}

/// The NDJSON schema: keys are stable once shipped.
impl Serialize for Event {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("ts", &self.ts_ns)?;
        m.serialize_entry("event", self.kind.name())?;
        m.serialize_entry("pid", &self.pid)?;
        m.serialize_entry("tid", &self.tid)?;
        m.serialize_entry("uid", &self.uid)?;
        m.serialize_entry("comm", &self.comm.to_string_lossy())?;
        m.serialize_entry("cgroup", &self.cgroup)?;
        let info = self.cgroup_info.as_deref();
        m.serialize_entry("cgroup_path", &info.map(|i| &i.path))?;
        m.serialize_entry("container_id", &info.and_then(|i| i.container_id.as_ref()))?;
        m.serialize_entry("pod_uid", &info.and_then(|i| i.pod_uid.as_ref()))?;
        m.serialize_entry("netns", &(self.netns != 0).then_some(self.netns))?;
        m.serialize_entry("sock", &self.sock)?;
        m.serialize_entry("family", &self.family.number())?;
        m.serialize_entry("laddr", &self.local.ip())?;
        m.serialize_entry("lport", &self.local.port())?;
        m.serialize_entry("raddr", &self.remote.ip())?;
        m.serialize_entry("rport", &self.remote.port())?;
        m.serialize_entry("bytes", &self.bytes())?;
        match &self.packet {
            None => {
                m.serialize_entry("rx_bytes", &self.counters.rx_bytes)?;
                m.serialize_entry("tx_bytes", &self.counters.tx_bytes)?;
                m.serialize_entry("rx_packets", &self.counters.rx_packets)?;
                m.serialize_entry("tx_packets", &self.counters.tx_packets)?;
            }
            Some(p) => {
                m.serialize_entry("ip_ver", &p.ip_ver)?;
                m.serialize_entry("ip_plength", &p.ip_plength)?;
                m.serialize_entry("saddr", &self.source().ip())?;
                m.serialize_entry("daddr", &self.destination().ip())?;
                m.serialize_entry("sport", &self.source().port())?;
                m.serialize_entry("dport", &self.destination().port())?;
                m.serialize_entry("udp_length", &p.udp_length)?;
                m.serialize_entry("udp_checksum", &p.udp_checksum)?;
                m.serialize_entry("gso_segs", &p.gso_segs)?;
                if let Some(reason) = self.drop_reason() {
                    m.serialize_entry("reason", &reason)?;
                }
                if let Some(data) = &self.payload {
                    m.serialize_entry("payload", &hex(data))?;
                    m.serialize_entry("truncated", &self.truncated())?;
                }
            }
        }
        if let Some(err) = self.error() {
            m.serialize_entry("error", &err)?;
        }
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEND: u8 = udp_event_kind::UDP_EVENT_SEND.0 as u8;
    const RECV: u8 = udp_event_kind::UDP_EVENT_RECV.0 as u8;

    fn record(kind: u8, family: u16, ret: i32) -> udp_event {
        let mut e = udp_event {
            ts_ns: 1_000,
            sock_cookie: 42,
            cgroup_id: 7,
            pid: 100,
            tid: 101,
            uid: 0,
            ret,
            lport: 5000,
            rport: 53,
            kind,
            family: family as u8,
            ..Default::default()
        };
        e.detail.counters.tx_bytes = 10;
        e.detail.counters.tx_packets = 1;
        e.laddr[10..].copy_from_slice(&[0xff, 0xff, 127, 0, 0, 1]);
        e.raddr[10..].copy_from_slice(&[0xff, 0xff, 10, 1, 2, 3]);
        e.comm[..3].copy_from_slice(&[b'd' as _, b'i' as _, b'g' as _]);
        e
    }

    fn bytes_of(e: &udp_event) -> &[u8] {
        // SAFETY: reading a plain C struct as bytes.
        unsafe { plain::as_bytes(e) }
    }

    #[test]
    fn decodes_ipv4_send() {
        let raw = record(SEND, libc::AF_INET as u16, 10);
        let ev = Event::decode(bytes_of(&raw), 5_000, false).unwrap();
        assert_eq!(ev.kind, EventKind::Send);
        assert_eq!(ev.ts_ns, 6_000);
        assert_eq!(ev.local, "127.0.0.1:5000".parse().unwrap());
        assert_eq!(ev.remote, "10.1.2.3:53".parse().unwrap());
        assert_eq!(ev.comm.to_string(), "dig");
        assert_eq!(ev.bytes(), Some(10));
        assert_eq!(ev.error(), None);
        assert_eq!(ev.counters.tx_packets, 1);
    }

    #[test]
    fn ipv6_socket_keeps_mapped_addresses() {
        let raw = record(RECV, libc::AF_INET6 as u16, 0);
        let ev = Event::decode(bytes_of(&raw), 0, false).unwrap();
        assert_eq!(ev.family, Family::V6);
        assert_eq!(ev.local.to_string(), "[::ffff:127.0.0.1]:5000");
        assert_eq!(ev.bytes(), Some(0), "a 0-byte datagram is a receive");
    }

    #[test]
    fn failed_call_carries_errno_name_not_bytes() {
        let raw = record(SEND, libc::AF_INET as u16, -111);
        let ev = Event::decode(bytes_of(&raw), 0, false).unwrap();
        assert_eq!(ev.bytes(), None);
        assert_eq!(ev.error().as_deref(), Some("ECONNREFUSED"));
        let json = serde_json::to_value(ev).unwrap();
        assert_eq!(json["error"], "ECONNREFUSED");
        assert!(json["bytes"].is_null());
    }

    #[test]
    fn rejects_short_or_unknown_records() {
        let raw = record(9, libc::AF_INET as u16, 0);
        assert!(Event::decode(bytes_of(&raw), 0, false).is_none());
        let raw = record(SEND, 1, 0);
        assert!(Event::decode(bytes_of(&raw), 0, false).is_none());
        assert!(Event::decode(&[0u8; 10], 0, false).is_none());
    }

    #[test]
    fn json_has_the_stable_keys() {
        let raw = record(SEND, libc::AF_INET as u16, 10);
        let json = serde_json::to_value(Event::decode(bytes_of(&raw), 0, false).unwrap()).unwrap();
        let keys: Vec<_> = json.as_object().unwrap().keys().cloned().collect();
        for k in [
            "ts",
            "event",
            "pid",
            "tid",
            "uid",
            "comm",
            "cgroup",
            "sock",
            "family",
            "laddr",
            "lport",
            "raddr",
            "rport",
            "bytes",
            "rx_bytes",
            "tx_bytes",
            "rx_packets",
            "tx_packets",
        ] {
            assert!(keys.contains(&k.to_string()), "missing key {k}");
        }
        assert_eq!(json["family"], 4);
        assert_eq!(json["laddr"], "127.0.0.1");
        assert_eq!(json["event"], "send");
    }
}

/// Any record the ring could hand over, well-formed or not: decoded or
/// refused, and a decoded one serialises and describes itself, never panics.
#[cfg(test)]
mod decode_props {
    use proptest::prelude::*;

    use super::*;

    /// A record's size and alignment, as the ring buffer hands them over.
    #[repr(C, align(8))]
    struct Aligned([u8; 256]);

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        #[test]
        fn any_record_decodes_or_is_refused(
            bytes in proptest::collection::vec(any::<u8>(), 0..256),
            kind in 0u8..10,
            family in prop_oneof![Just(libc::AF_INET as u8), Just(libc::AF_INET6 as u8), any::<u8>()],
            offset in any::<i64>(),
            ret in prop_oneof![Just(i32::MIN), Just(-1), any::<i32>()],
            captures in any::<bool>(),
        ) {
            let mut buf = Aligned([0; 256]);
            buf.0[..bytes.len()].copy_from_slice(&bytes);
            let size = std::mem::size_of::<udp_event>();
            let (kind_at, family_at) = (
                std::mem::offset_of!(udp_event, kind),
                std::mem::offset_of!(udp_event, family),
            );
            // Valid kinds and families often enough to reach the decoded paths.
            if bytes.len() >= size {
                buf.0[kind_at] = kind;
                buf.0[family_at] = family;
                let ret_at = std::mem::offset_of!(udp_event, ret);
                buf.0[ret_at..ret_at + 4].copy_from_slice(&ret.to_ne_bytes());
            }
            if let Some(ev) = Event::decode(&buf.0[..bytes.len()], offset, captures) {
                let _ = serde_json::to_string(&ev).unwrap();
                let _ = (ev.error(), ev.errno(), ev.comm.to_string());
            }
        }
    }
}
