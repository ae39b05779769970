//! DNS transactions over UDP, from packet events with payload: each query
//! matched with its response on the same socket by id and peer, or reported
//! unanswered after a timeout. Clients' transactions run from their query's
//! send to the response's arrival; servers' from the query's arrival to the
//! response's send (the server's own time to answer).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::{Header, MessageType, Query};
use hickory_proto::rr::Name;
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
use serde::ser::{Serialize, SerializeMap, Serializer};

use crate::event::{Comm, Event, EventKind};

/// Payload bytes a DNS tracer asks for: a message's header and question fit
/// (a name is at most 255 bytes), which is all that is decoded.
pub const DNS_SNAPLEN: u32 = 512;

/// Queries awaiting their response at most; more are counted, not kept.
pub const MAX_PENDING: usize = 65_536;

/// What a DNS message says, as far as udptrace reads it: its header and first question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsMessage {
    pub id: u16,
    pub response: bool,
    /// The TC bit: the answer did not fit, and the client should retry over TCP.
    pub truncated: bool,
    /// The header's response code (its low 4 bits).
    pub rcode: u8,
    pub answers: u16,
    /// The first question: its name in presentation form ([`name_text`]) and
    /// its type's mnemonic, e.g. `AAAA`. A query always has one; a response
    /// may leave it out (FORMERR, NOTIMP).
    pub question: Option<(String, String)>,
}

/// Decodes the header and first question of a DNS message; None when it is
/// not one (too short, a query without a question, a malformed name).
pub fn parse_message(payload: &[u8]) -> Option<DnsMessage> {
    let mut decoder = BinDecoder::new(payload);
    let header = Header::read(&mut decoder).ok()?;
    let response = header.metadata.message_type == MessageType::Response;
    let question = match header.counts.queries {
        0 if response => None,
        0 => return None,
        _ => {
            let query = Query::read(&mut decoder).ok()?;
            Some((name_text(query.name()), query.query_type().to_string()))
        }
    };
    Some(DnsMessage {
        id: header.metadata.id,
        response,
        truncated: header.metadata.truncation,
        rcode: header.metadata.response_code.low(),
        answers: header.counts.answers,
        question,
    })
}

/// A name in presentation form, as dig prints it (RFC 1035 section 5.1):
/// each label followed by a dot; inside a label, a character that means
/// something in that form (`.`, `\`, `"`, `(`, `)`, `;`, `@`, `$`) after a
/// backslash, and a byte that is not printable ASCII as `\DDD`, in decimal.
/// The text is printable ASCII, safe on a terminal as it is, and reads back
/// as the same name.
pub fn name_text(name: &Name) -> String {
    if name.is_root() {
        return ".".into();
    }
    let mut text = String::new();
    for label in name.iter() {
        for &b in label {
            match b {
                b'.' | b'\\' | b'"' | b'(' | b')' | b';' | b'@' | b'$' => {
                    text.push('\\');
                    text.push(char::from(b));
                }
                0x21..=0x7e => text.push(char::from(b)),
                _ => text += &format!("\\{b:03}"),
            }
        }
        text.push('.');
    }
    text
}

/// The mnemonic of a header's response code (RFC 6895's registry).
pub fn rcode_name(rcode: u8) -> String {
    let name = match rcode {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        6 => "YXDOMAIN",
        7 => "YXRRSET",
        8 => "NXRRSET",
        9 => "NOTAUTH",
        10 => "NOTZONE",
        11 => "DSOTYPENI",
        other => return format!("RCODE{other}"),
    };
    name.into()
}

/// Which end of the transaction the traced socket is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// It sent the query.
    Client,
    /// It received the query and answers it.
    Server,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Client => "client",
            Role::Server => "server",
        }
    }
}

/// The response of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsResponse {
    pub rcode: u8,
    pub answers: u16,
    /// The TC bit.
    pub truncated: bool,
    /// From the query's event to the response's.
    pub latency: Duration,
}

/// One query and its response, or the query alone once it timed out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsTransaction {
    /// The query's time (wall clock, ns since the Unix epoch).
    pub ts_ns: u64,
    pub role: Role,
    /// The task: a client's that sent the query; a server's that sent the
    /// response (or, unanswered, that owns the socket).
    pub pid: u32,
    pub tid: u32,
    pub comm: Comm,
    pub sock: u64,
    pub local: SocketAddr,
    /// The other end: the server for a client, the client for a server.
    pub remote: SocketAddr,
    pub id: u16,
    /// In presentation form ([`name_text`]): printable ASCII.
    pub name: String,
    pub qtype: String,
    /// None when no response came (within the timeout, or before tracing ended).
    pub response: Option<DnsResponse>,
    /// No response came within the timeout (else, if none, tracing ended first).
    pub timed_out: bool,
    /// The query was sent again (same socket, id and peer) before its response.
    pub retransmits: u32,
}

impl DnsTransaction {
    /// The server's address: the remote end of a client, the local end of a server.
    pub fn server(&self) -> SocketAddr {
        match self.role {
            Role::Client => self.remote,
            Role::Server => self.local,
        }
    }
}

/// The NDJSON schema of `udptrace dns`.
impl Serialize for DnsTransaction {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("ts", &self.ts_ns)?;
        m.serialize_entry("role", self.role.name())?;
        m.serialize_entry("pid", &self.pid)?;
        m.serialize_entry("tid", &self.tid)?;
        m.serialize_entry("comm", &self.comm.to_string_lossy())?;
        m.serialize_entry("sock", &self.sock)?;
        m.serialize_entry("laddr", &self.local.ip())?;
        m.serialize_entry("lport", &self.local.port())?;
        m.serialize_entry("raddr", &self.remote.ip())?;
        m.serialize_entry("rport", &self.remote.port())?;
        m.serialize_entry("id", &self.id)?;
        m.serialize_entry("name", &self.name)?;
        m.serialize_entry("qtype", &self.qtype)?;
        let r = self.response.as_ref();
        m.serialize_entry("rcode", &r.map(|r| rcode_name(r.rcode)))?;
        m.serialize_entry("answers", &r.map(|r| r.answers))?;
        m.serialize_entry("latency_us", &r.map(|r| r.latency.as_nanos() as f64 / 1e3))?;
        m.serialize_entry("timeout", &self.timed_out)?;
        m.serialize_entry("truncated", &r.is_some_and(|r| r.truncated))?;
        m.serialize_entry("retransmits", &self.retransmits)?;
        m.end()
    }
}

/// A query waiting for its response: by role, socket, id and peer.
type PendingKey = (Role, u64, u16, SocketAddr);

/// What a stream of packet events tells of DNS: transactions as they
/// complete or time out, and the messages that were not DNS.
#[derive(Debug)]
pub struct DnsTracker {
    timeout: Duration,
    pending: HashMap<PendingKey, DnsTransaction>,
    /// Payloads on the DNS port that are no DNS message.
    pub malformed: u64,
    /// Responses no traced query was waiting for (sent before tracing began, or repeated).
    pub unmatched: u64,
    /// Queries not followed: MAX_PENDING were waiting already.
    pub pending_full: u64,
}

impl DnsTracker {
    /// A query unanswered for `timeout` is reported as such.
    pub fn new(timeout: Duration) -> DnsTracker {
        DnsTracker {
            timeout,
            pending: HashMap::new(),
            malformed: 0,
            unmatched: 0,
            pending_full: 0,
        }
    }

    /// Takes one packet event; returns the transaction its response completes.
    pub fn event(&mut self, ev: &Event) -> Option<DnsTransaction> {
        let outbound = match ev.kind {
            EventKind::PacketSend => true,
            EventKind::PacketRecv => false,
            _ => return None,
        };
        let Some(msg) = ev.payload.as_deref().and_then(parse_message) else {
            self.malformed += 1;
            return None;
        };
        // A client sends queries and receives responses; a server the reverse.
        let role = match (msg.response, outbound) {
            (false, true) | (true, false) => Role::Client,
            (false, false) | (true, true) => Role::Server,
        };
        let key = (role, ev.sock, msg.id, ev.remote);
        if !msg.response {
            // A retry waits on: the latency runs from the first send.
            if let Some(waiting) = self.pending.get_mut(&key) {
                waiting.retransmits += 1;
                return None;
            }
            if self.pending.len() >= MAX_PENDING {
                self.pending_full += 1;
                return None;
            }
            let (name, qtype) = msg.question.unwrap_or_default();
            let query = DnsTransaction {
                ts_ns: ev.ts_ns,
                role,
                pid: ev.pid,
                tid: ev.tid,
                comm: ev.comm,
                sock: ev.sock,
                local: ev.local,
                remote: ev.remote,
                id: msg.id,
                name,
                qtype,
                response: None,
                timed_out: false,
                retransmits: 0,
            };
            self.pending.insert(key, query);
            return None;
        }
        let Some(mut t) = self.pending.remove(&key) else {
            self.unmatched += 1;
            return None;
        };
        if role == Role::Server {
            (t.pid, t.tid, t.comm) = (ev.pid, ev.tid, ev.comm);
        }
        t.response = Some(DnsResponse {
            rcode: msg.rcode,
            answers: msg.answers,
            truncated: msg.truncated,
            latency: Duration::from_nanos(ev.ts_ns.saturating_sub(t.ts_ns)),
        });
        Some(t)
    }

    /// The queries unanswered for the timeout at `now_ns` (wall clock), oldest first.
    pub fn expire(&mut self, now_ns: u64) -> Vec<DnsTransaction> {
        let limit = self.timeout.as_nanos() as u64;
        let mut expired: Vec<DnsTransaction> = Vec::new();
        self.pending.retain(|_, t| {
            let keep = now_ns.saturating_sub(t.ts_ns) < limit;
            if !keep {
                t.timed_out = true;
                expired.push(t.clone());
            }
            keep
        });
        expired.sort_by_key(|t| t.ts_ns);
        expired
    }

    /// The queries still waiting when tracing ends, oldest first: neither
    /// answered nor timed out.
    pub fn finish(&mut self) -> Vec<DnsTransaction> {
        let mut waiting: Vec<DnsTransaction> = self.pending.drain().map(|(_, t)| t).collect();
        waiting.sort_by_key(|t| t.ts_ns);
        waiting
    }

    /// Queries still waiting, neither answered nor timed out.
    pub fn waiting(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{test_event, Packet};

    /// A query or response for www.example. of type A (id 0x1234).
    fn message(response: bool, rcode: u8, answers: u16, tc: bool) -> Vec<u8> {
        let flags: u16 = (u16::from(response) << 15) | (u16::from(tc) << 9) | u16::from(rcode);
        let mut m = vec![0x12, 0x34];
        m.extend_from_slice(&flags.to_be_bytes());
        m.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
        m[6..8].copy_from_slice(&answers.to_be_bytes());
        m.extend_from_slice(b"\x03www\x07example\x00\x00\x01\x00\x01");
        m
    }

    fn packet(kind: EventKind, ts_ns: u64, payload: Vec<u8>) -> Event {
        let mut ev = test_event(ts_ns);
        ev.kind = kind;
        ev.sock = 7;
        ev.local = "127.0.0.1:40000".parse().unwrap();
        ev.remote = "127.0.0.53:53".parse().unwrap();
        ev.packet = Some(Packet {
            ip_ver: 4,
            ip_plength: 8 + payload.len() as u16,
            udp_length: 8 + payload.len() as u16,
            udp_checksum: 0,
            gso_segs: 1,
            inbound: kind == EventKind::PacketRecv,
            drop_reason: None,
        });
        ev.payload = Some(payload);
        ev
    }

    #[test]
    fn parses_header_and_question() {
        let m = parse_message(&message(true, 3, 0, true)).unwrap();
        assert_eq!(
            (m.id, m.response, m.truncated, m.rcode, m.answers),
            (0x1234, true, true, 3, 0)
        );
        let (name, qtype) = m.question.unwrap();
        assert_eq!((name.as_str(), qtype.as_str()), ("www.example.", "A"));
        assert_eq!(rcode_name(m.rcode), "NXDOMAIN");
    }

    /// Bytes a label may hold, as dig prints them: once escaped, and
    /// unambiguous (a dot inside a label is not a label's end).
    #[test]
    fn names_print_as_dig_prints_them() {
        let mut m = message(false, 0, 0, false);
        m.truncate(12);
        m.extend_from_slice(b"\x03a\nb\x03x.y\x0aback\\slash\x05caf\xc3\xa9\x00\x00\x01\x00\x01");
        let (name, _) = parse_message(&m).unwrap().question.unwrap();
        assert_eq!(name, r"a\010b.x\.y.back\\slash.caf\195\169.");
        let root =
            parse_message(b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x01");
        assert_eq!(root.unwrap().question.unwrap().0, ".");
    }

    #[test]
    fn garbage_and_truncated_messages_are_not_dns() {
        assert_eq!(parse_message(b""), None);
        assert_eq!(parse_message(b"not a dns message at all"), None);
        let m = message(false, 0, 0, false);
        assert_eq!(parse_message(&m[..m.len() - 3]), None);
    }

    #[test]
    fn a_client_query_meets_its_response() {
        let mut t = DnsTracker::new(Duration::from_secs(5));
        assert_eq!(
            t.event(&packet(
                EventKind::PacketSend,
                1_000,
                message(false, 0, 0, false)
            )),
            None
        );
        let done = t
            .event(&packet(
                EventKind::PacketRecv,
                501_000,
                message(true, 0, 2, false),
            ))
            .expect("answered");
        assert_eq!(done.role, Role::Client);
        assert_eq!(done.server(), "127.0.0.53:53".parse().unwrap());
        let r = done.response.unwrap();
        assert_eq!(
            (r.rcode, r.answers, r.latency),
            (0, 2, Duration::from_micros(500))
        );
        assert_eq!(t.waiting(), 0);
    }

    #[test]
    fn unanswered_queries_expire_after_the_timeout() {
        let mut t = DnsTracker::new(Duration::from_secs(1));
        t.event(&packet(
            EventKind::PacketSend,
            1_000,
            message(false, 0, 0, false),
        ));
        assert!(t.expire(999_999_999).is_empty());
        let expired = t.expire(1_000_001_000);
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].response, None);
        assert!(expired[0].timed_out);
        // A late response finds nothing waiting.
        t.event(&packet(
            EventKind::PacketRecv,
            2_000_000_000,
            message(true, 0, 1, false),
        ));
        assert_eq!(t.unmatched, 1);
    }

    #[test]
    fn a_retry_keeps_the_first_send_and_a_bare_response_answers_it() {
        let mut t = DnsTracker::new(Duration::from_secs(5));
        t.event(&packet(
            EventKind::PacketSend,
            1_000,
            message(false, 0, 0, false),
        ));
        t.event(&packet(
            EventKind::PacketSend,
            9_000,
            message(false, 0, 0, false),
        ));
        // FORMERR without the question.
        let mut bare = message(true, 1, 0, false);
        bare.truncate(12);
        bare[5] = 0;
        let done = t
            .event(&packet(EventKind::PacketRecv, 11_000, bare))
            .expect("answered");
        assert_eq!((done.retransmits, done.name.as_str()), (1, "www.example."));
        let r = done.response.unwrap();
        assert_eq!((r.rcode, r.latency), (1, Duration::from_micros(10)));
    }

    #[test]
    fn queries_waiting_at_the_end_are_handed_back() {
        let mut t = DnsTracker::new(Duration::from_secs(5));
        t.event(&packet(
            EventKind::PacketSend,
            1_000,
            message(false, 0, 0, false),
        ));
        let waiting = t.finish();
        assert_eq!(waiting.len(), 1);
        assert!(!waiting[0].timed_out && waiting[0].response.is_none());
        assert_eq!(t.waiting(), 0);
    }

    #[test]
    fn garbage_is_counted_malformed() {
        let mut t = DnsTracker::new(Duration::from_secs(1));
        assert_eq!(
            t.event(&packet(EventKind::PacketRecv, 1, b"\xff\xff".to_vec())),
            None
        );
        assert_eq!(t.malformed, 1);
    }
}
