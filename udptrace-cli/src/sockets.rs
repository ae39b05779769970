//! One UDP socket as `life` and `rcvbuf` show it: from its close event, or
//! from the socket table while it is open.

use std::net::SocketAddr;

use serde_json::{json, Map, Value};
use udptrace::{Comm, Event, Family, SockCounters, SockLife, SocketInfo};

/// Where a row's remote end comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Remote {
    /// The peer the socket was connected to when it closed.
    Connected(SocketAddr),
    /// The peer of most of its datagrams (an unconnected socket, or an open
    /// one, whose connection the table does not keep).
    Usual(SocketAddr),
    None,
}

#[derive(Debug, Clone)]
pub struct SocketRow {
    pub pid: u32,
    pub comm: Comm,
    pub sock: u64,
    pub family: Option<Family>,
    pub local: Option<SocketAddr>,
    pub remote: Remote,
    pub counters: SockCounters,
    pub life: SockLife,
    /// When it closed (ns since the epoch); `None` while open.
    pub closed_ns: Option<u64>,
}

impl SocketRow {
    /// A close event's socket; `None` for other events.
    pub fn from_close(ev: &Event) -> Option<SocketRow> {
        let life = ev.life?;
        let remote = if ev.remote.port() != 0 {
            Remote::Connected(ev.remote)
        } else {
            life.peer.map_or(Remote::None, Remote::Usual)
        };
        Some(SocketRow {
            pid: ev.pid,
            comm: ev.comm,
            sock: ev.sock,
            family: Some(ev.family),
            // Released sockets may be unbound already: then the last seen.
            local: Some(ev.local).filter(|l| l.port() != 0).or(life.local),
            remote,
            counters: ev.counters,
            life,
            closed_ns: Some(ev.ts_ns),
        })
    }

    pub fn from_open(s: &SocketInfo) -> SocketRow {
        SocketRow {
            pid: s.pid,
            comm: s.comm,
            sock: s.sock,
            family: s.family(),
            local: s.life.local,
            remote: s.life.peer.map_or(Remote::None, Remote::Usual),
            counters: s.counters,
            life: s.life,
            closed_ns: None,
        }
    }

    /// From its birth (or first sight) to its close, or to `now_ns` if open;
    /// `None` if its birth is unknown.
    pub fn lifetime_ns(&self, now_ns: u64) -> Option<u64> {
        self.life.lifetime_ns(self.closed_ns.unwrap_or(now_ns))
    }

    pub fn remote_addr(&self) -> Option<SocketAddr> {
        match self.remote {
            Remote::Connected(a) | Remote::Usual(a) => Some(a),
            Remote::None => None,
        }
    }

    /// The keys that say which socket (as `trace --json` names them).
    pub fn identity_json(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("pid".into(), json!(self.pid));
        m.insert("comm".into(), json!(self.comm.to_string_lossy()));
        m.insert("sock".into(), json!(self.sock));
        m.insert("family".into(), json!(self.family.map(|f| f.number())));
        m.insert("laddr".into(), json!(self.local.map(|a| a.ip())));
        m.insert("lport".into(), json!(self.local.map(|a| a.port())));
        m.insert("raddr".into(), json!(self.remote_addr().map(|a| a.ip())));
        m.insert("rport".into(), json!(self.remote_addr().map(|a| a.port())));
        m.insert(
            "remote_from".into(),
            json!(match self.remote {
                Remote::Connected(_) => Some("connected"),
                Remote::Usual(_) => Some("usual_peer"),
                Remote::None => None,
            }),
        );
        m.insert("open".into(), json!(self.closed_ns.is_none()));
        m
    }

    /// Its identity and its traffic since tracing began.
    pub fn core_json(&self) -> Map<String, Value> {
        let mut m = self.identity_json();
        let c = &self.counters;
        m.insert("rx_bytes".into(), json!(c.rx_bytes));
        m.insert("tx_bytes".into(), json!(c.tx_bytes));
        m.insert("rx_packets".into(), json!(c.rx_packets));
        m.insert("tx_packets".into(), json!(c.tx_packets));
        m
    }
}

/// `addr:port`, `[v6]:port`, or `-` when unknown.
pub fn addr_text(addr: Option<SocketAddr>) -> String {
    addr.map_or_else(|| "-".to_string(), |a| a.to_string())
}
