//! In-kernel aggregation (`udptrace count`): events are added up in a BPF
//! hash table keyed by the fields asked for, and never cross the ring buffer.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

use crate::bpf::types::{
    compact_key, compact_key_bits, count_field, count_key, count_slots_size, count_value,
};
use crate::drop_reason::drop_reason_name;
use crate::errno::errno_text;
use crate::event::{Comm, EventKind};

/// Keys of ports, pid, event kind and task name count first in this many
/// slots per CPU, a key's slot found by a hash of it; a key whose slot
/// another key holds counts in the table of
/// [`count_table_size`](crate::TracerBuilder::count_table_size) keys, as
/// every key with an address does, and a drop's key with its reason.
pub const COUNT_SLOTS_PER_CPU: usize = count_slots_size::COUNT_SLOTS.0 as usize;

/// A field events can be counted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CountField {
    /// Destination port of the datagram (the remote port of a send, the local of a receive).
    Dport,
    Sport,
    Daddr,
    Saddr,
    Pid,
    Comm,
    Event,
    /// The drop reason (drops only).
    Reason,
    /// The task's cgroup v2 id ([`CgroupResolver`](crate::CgroupResolver) names it).
    Cgroup,
    /// The socket's network namespace (inode number).
    Netns,
    /// The errno of a failed send or receive; none for the others.
    Errno,
}

impl CountField {
    pub const ALL: [CountField; 11] = [
        Self::Dport,
        Self::Sport,
        Self::Daddr,
        Self::Saddr,
        Self::Pid,
        Self::Comm,
        Self::Event,
        Self::Reason,
        Self::Cgroup,
        Self::Netns,
        Self::Errno,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Dport => "dport",
            Self::Sport => "sport",
            Self::Daddr => "daddr",
            Self::Saddr => "saddr",
            Self::Pid => "pid",
            Self::Comm => "comm",
            Self::Event => "event",
            Self::Reason => "reason",
            Self::Cgroup => "cgroup",
            Self::Netns => "netns",
            Self::Errno => "errno",
        }
    }

    /// Its bit in the BPF programs' `count_keys`.
    pub(crate) fn bit(self) -> u16 {
        let field = match self {
            Self::Dport => count_field::COUNT_DPORT,
            Self::Sport => count_field::COUNT_SPORT,
            Self::Daddr => count_field::COUNT_DADDR,
            Self::Saddr => count_field::COUNT_SADDR,
            Self::Pid => count_field::COUNT_PID,
            Self::Comm => count_field::COUNT_COMM,
            Self::Event => count_field::COUNT_EVENT,
            Self::Reason => count_field::COUNT_REASON,
            Self::Cgroup => count_field::COUNT_CGROUP,
            Self::Netns => count_field::COUNT_NETNS,
            Self::Errno => count_field::COUNT_ERRNO,
        };
        field.0 as u16
    }
}

impl fmt::Display for CountField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

impl std::str::FromStr for CountField {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown count key '{}' (expected dport, sport, daddr, saddr, pid, comm, \
                 event, reason, cgroup, netns or errno)",
                    s.escape_debug()
                )
            })
    }
}

/// The value of one [`CountField`] in a row.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CountValue {
    Port(u16),
    Addr(IpAddr),
    Pid(u32),
    Comm(String),
    Event(EventKind),
    /// A drop reason; `-` for events that are not drops.
    Reason(Option<String>),
    /// A cgroup v2 id.
    Cgroup(u64),
    /// A network namespace's inode number.
    Netns(u32),
    /// The errno name of a failed call; `-` for the others.
    Errno(Option<String>),
}

impl fmt::Display for CountValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Port(p) => fmt::Display::fmt(p, f),
            Self::Addr(a) => f.pad(&a.to_string()),
            Self::Pid(p) => fmt::Display::fmt(p, f),
            Self::Comm(c) => f.pad(c),
            Self::Event(k) => fmt::Display::fmt(k, f),
            Self::Reason(r) | Self::Errno(r) => f.pad(r.as_deref().unwrap_or("-")),
            Self::Cgroup(id) => fmt::Display::fmt(id, f),
            Self::Netns(ns) => fmt::Display::fmt(ns, f),
        }
    }
}

/// One row of the table: the key's values, in the order the fields were asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountRow {
    pub key: Vec<CountValue>,
    pub events: u64,
    /// Bytes of payload the counted sends, receives and packets carried.
    pub bytes: u64,
}

// SAFETY: a plain C struct of integers and byte arrays: any bytes are a valid value.
unsafe impl plain::Plain for count_key {}

/// Decodes one entry of the BPF table: its key as the map holds it, and its
/// value summed over the CPUs.
pub(crate) fn decode_row(fields: &[CountField], key: &[u8], v: &count_value) -> Option<CountRow> {
    let k: &count_key = plain::from_bytes(key).ok()?;
    row_of(fields, k, v)
}

/// The wide key a compact one stands for (bpf/count.h), as the BPF
/// programs build it when a compact key finds its slot taken.
pub(crate) fn widen(k: &compact_key) -> count_key {
    use compact_key_bits as bits;
    let field = |shift: bits, mask: u64| (k.word >> shift.0) & mask;
    count_key {
        dport: (k.word & 0xffff) as u16,
        sport: field(bits::COMPACT_SPORT_SHIFT, 0xffff) as u16,
        pid: field(bits::COMPACT_PID_SHIFT, u64::from(bits::COMPACT_PID_MASK.0)) as u32,
        kind: field(bits::COMPACT_KIND_SHIFT, 0xff) as u8,
        comm: k.comm,
        ..Default::default()
    }
}

/// A row from a key of the BPF programs and its value summed over the CPUs.
pub(crate) fn row_of(fields: &[CountField], k: &count_key, v: &count_value) -> Option<CountRow> {
    Some(CountRow {
        key: key_of(fields, k)?,
        events: v.events,
        bytes: v.bytes,
    })
}

/// The values of `fields` in a key of the BPF programs; None if one is not
/// a value udptrace knows (an event kind of a newer build).
pub(crate) fn key_of(fields: &[CountField], k: &count_key) -> Option<Vec<CountValue>> {
    let addr = |raw: [u8; 16]| {
        let v6 = Ipv6Addr::from(raw);
        match (i32::from(k.family), v6.to_ipv4_mapped()) {
            (libc::AF_INET, Some(v4)) => IpAddr::V4(v4),
            _ => IpAddr::V6(v6),
        }
    };
    let key = fields
        .iter()
        .map(|f| match f {
            CountField::Dport => Some(CountValue::Port(k.dport)),
            CountField::Sport => Some(CountValue::Port(k.sport)),
            CountField::Daddr => Some(CountValue::Addr(addr(k.daddr))),
            CountField::Saddr => Some(CountValue::Addr(addr(k.saddr))),
            CountField::Pid => Some(CountValue::Pid(k.pid)),
            CountField::Comm => {
                let comm: [u8; 16] = k.comm.map(|c| c as u8);
                Some(CountValue::Comm(Comm::from_raw(comm).to_string()))
            }
            CountField::Event => EventKind::from_wire(k.kind).map(CountValue::Event),
            CountField::Reason => Some(CountValue::Reason(
                (k.is_drop != 0).then(|| drop_reason_name(k.reason)),
            )),
            CountField::Cgroup => Some(CountValue::Cgroup(k.cgroup)),
            CountField::Netns => Some(CountValue::Netns(k.netns)),
            CountField::Errno => Some(CountValue::Errno(
                (k.err != 0).then(|| errno_text(i32::from(k.err))),
            )),
        })
        .collect::<Option<Vec<_>>>()?;
    Some(key)
}

/// Sorts rows by events, then bytes, both descending, then by key.
pub fn sort_rows(rows: &mut [CountRow]) {
    rows.sort_by(|a, b| {
        (b.events, b.bytes)
            .cmp(&(a.events, a.bytes))
            .then_with(|| a.key.cmp(&b.key))
    });
}
