//! What the socket table knows of each socket over its life (with
//! [`TracerBuilder::track_sockets`](crate::TracerBuilder::track_sockets)):
//! its birth, its usual peer, its drops and its receive buffer's peak.

use libbpf_rs::{MapCore, MapFlags, MapHandle};

use crate::bpf::types::{sock_life, sock_state};
use crate::event::{Comm, Event, Family, SockCounters};
use crate::filter::{net_contains, Filter};
use crate::life::SockLife;
use crate::{clock, Error};

impl Filter {
    /// Whether an open socket is one the filters select: by its owner (not,
    /// as the kernel's filters, the task of each event) and by its local
    /// address or usual peer (not the addresses of each event).
    pub fn keeps_socket(&self, s: &SocketInfo) -> bool {
        let ends = [s.life.local, s.life.peer];
        let ends = ends.iter().flatten();
        s.in_cgroup
            && self.netns.is_none_or(|ns| ns == s.life.netns)
            && self.pid.is_none_or(|pid| pid == s.pid)
            && self
                .comm
                .as_ref()
                .is_none_or(|c| c.as_bytes() == s.comm.as_bytes())
            && self.family.is_none_or(|f| Some(f) == s.family())
            && self
                .port
                .is_none_or(|p| ends.clone().any(|e| e.port() == p))
            && self
                .addr
                .is_none_or(|net| ends.clone().any(|e| net_contains(&net, e.ip())))
    }
}

/// An open socket, as the socket table holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketInfo {
    /// The kernel's socket cookie.
    pub sock: u64,
    /// Its owner: the process that created it, or held it when tracing began.
    pub pid: u32,
    pub uid: u32,
    pub comm: Comm,
    pub cgroup: u64,
    /// Traffic since tracing began.
    pub counters: SockCounters,
    pub life: SockLife,
    /// Its owner is in the cgroup a filter named (or no filter named one).
    pub(crate) in_cgroup: bool,
}

impl SocketInfo {
    /// The socket a close event closed, as the table held it; `None` for
    /// other events. The event passed the filters, its socket with it.
    pub fn closed_by(ev: &Event) -> Option<SocketInfo> {
        Some(SocketInfo {
            sock: ev.sock,
            pid: ev.pid,
            uid: ev.uid,
            comm: ev.comm,
            cgroup: ev.cgroup,
            counters: ev.counters,
            life: ev.life?,
            in_cgroup: true,
        })
    }

    /// The socket's family, once a datagram showed its local address.
    pub fn family(&self) -> Option<Family> {
        self.life.local.map(|_| self.life.family)
    }
}

// SAFETY: sock_state is a C struct of integers and byte arrays: any bytes are a valid value.
unsafe impl plain::Plain for sock_state {}
// SAFETY: as above.
unsafe impl plain::Plain for sock_life {}

/// Reads the kernel's socket table.
pub(crate) struct SocketTable {
    map: MapHandle,
}

impl SocketTable {
    pub fn new(map: MapHandle) -> SocketTable {
        SocketTable { map }
    }

    /// Every socket in the table. A socket closing meanwhile may be missed.
    pub fn sockets(&self) -> Result<Vec<SocketInfo>, Error> {
        let offset = clock::monotonic_to_wall_offset_ns();
        let mut out = Vec::new();
        for key in self.map.keys() {
            let Some(value) = self
                .map
                .lookup(&key, MapFlags::ANY)
                .map_err(Error::bpf("reading the socket table"))?
            else {
                continue; // closed since its key was read
            };
            let (Ok(cookie), Ok(st)) = (
                <[u8; 8]>::try_from(key.as_slice()),
                plain::from_bytes::<sock_state>(&value),
            ) else {
                continue;
            };
            let c = &st.counters;
            out.push(SocketInfo {
                sock: u64::from_ne_bytes(cookie),
                pid: (st.owner.pid_tgid >> 32) as u32,
                uid: st.owner.uid,
                comm: Comm::from_raw(st.owner.comm.map(|c| c as u8)),
                cgroup: st.owner.cgroup_id,
                counters: SockCounters {
                    rx_bytes: c.rx_bytes,
                    tx_bytes: c.tx_bytes,
                    rx_packets: c.rx_packets,
                    tx_packets: c.tx_packets,
                },
                life: SockLife::from_raw(&st.life, offset),
                in_cgroup: st.owner.in_cgroup != 0,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn life(rcvbuf: u32, peak: u32, drops: u64, drop_bytes: u64) -> SockLife {
        SockLife {
            netns: 0,
            born_ns: 0,
            from_creation: true,
            family: Family::V4,
            local: None,
            peer: None,
            drops,
            rcvbuf_drops: drops,
            rcvbuf_drop_bytes: drop_bytes,
            burst_need: u64::from(peak) + drop_bytes,
            rcvbuf,
            peak_queued: peak,
            waits: 0,
            wait_sum_ns: 0,
            wait_max_ns: 0,
        }
    }

    #[test]
    fn suggestion_holds_what_was_queued_and_refused() {
        // 10 datagrams of truesize 768 queued, 5 refused: 11,520 bytes, to 12 KiB.
        assert_eq!(life(8192, 7680, 5, 3840).suggested_rcvbuf(), 12288);
        // Nothing refused: the buffer held it.
        assert_eq!(life(212992, 7680, 0, 0).suggested_rcvbuf(), 212992);
    }
}
