//! What the socket table knows of each socket over its life (with
//! [`TracerBuilder::track_sockets`](crate::TracerBuilder::track_sockets)):
//! its birth, its usual peer, its drops and its receive buffer's peak.

use std::net::SocketAddr;

use libbpf_rs::{MapCore, MapFlags, MapHandle};

use crate::bpf::types::{sock_life, sock_state};
use crate::event::{ip_of, Comm, Event, Family, SockCounters};
use crate::{clock, Error};

/// A socket's life as the socket table kept it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SockLife {
    /// Wall-clock time (ns since the Unix epoch) the socket was created, or,
    /// unless [`from_creation`](Self::from_creation), first seen: it existed
    /// before tracing began, or its creation was not seen.
    /// 0 when unknown: the socket table had no room for the socket.
    pub born_ns: u64,
    pub from_creation: bool,
    /// The socket's family (meaningful once `local` is known).
    pub family: Family,
    /// The local address at its last datagram; `None` before any.
    pub local: Option<SocketAddr>,
    /// The peer of most of its datagrams: exact whenever one peer had more
    /// than half of them (a majority vote), else one of the frequent ones.
    /// `None` if no datagram named a peer.
    pub peer: Option<SocketAddr>,
    /// Datagrams of this socket the kernel dropped, for any reason.
    pub drops: u64,
    /// Of those, refused because its receive buffer was full (`SOCKET_RCVBUFF`).
    pub rcvbuf_drops: u64,
    /// The truesize of the refused datagrams.
    pub rcvbuf_drop_bytes: u64,
    /// The most a burst needed: the bytes it queued and refused, a burst
    /// lasting until the queue is next seen empty.
    pub burst_need: u64,
    /// The receive buffer (`SO_RCVBUF` as the kernel holds it: twice what
    /// `setsockopt` was given) at its last queued datagram; 0 before any.
    pub rcvbuf: u32,
    /// The most bytes (truesize) its receive queue held with a datagram just
    /// queued: within one datagram's truesize of `rcvbuf` when it overflowed.
    pub peak_queued: u32,
    /// Its network namespace (inode number), with `local`; 0 before any datagram.
    pub netns: u32,
}

impl SockLife {
    /// A receive buffer (as the kernel holds it) that would have held every
    /// burst seen, all it queued and refused, rounded up to 4 KiB; the
    /// current one if it never overflowed. `setsockopt(SO_RCVBUF)` takes
    /// half of it (the kernel doubles what it is given), within
    /// `net.core.rmem_max`. A reader that never catches up makes one burst
    /// that grows with the overload: no buffer holds that.
    pub fn suggested_rcvbuf(&self) -> u64 {
        if self.rcvbuf_drops == 0 {
            return u64::from(self.rcvbuf).max(u64::from(self.peak_queued));
        }
        self.burst_need.div_ceil(4096) * 4096
    }

    /// How long the socket lived, from `born_ns` to `end_ns`; `None` when its
    /// birth is unknown (the socket table had no room for it).
    pub fn lifetime_ns(&self, end_ns: u64) -> Option<u64> {
        (self.born_ns != 0).then(|| end_ns.saturating_sub(self.born_ns))
    }

    /// `born_ns` is CLOCK_MONOTONIC in the record.
    pub(crate) fn from_raw(raw: &sock_life, mono_to_wall_ns: i64) -> SockLife {
        let family = match i32::from(raw.family) {
            libc::AF_INET6 => Family::V6,
            _ => Family::V4,
        };
        let addr = |ip, port| SocketAddr::new(ip_of(family, ip), port);
        SockLife {
            // 0: no entry in the table (full), so no birth known.
            born_ns: match raw.born_ns {
                0 => 0,
                mono => mono.saturating_add_signed(mono_to_wall_ns),
            },
            from_creation: raw.from_creation != 0,
            family,
            local: (raw.lport != 0).then(|| addr(raw.laddr, raw.lport)),
            peer: (raw.peer_port != 0).then(|| addr(raw.peer_addr, raw.peer_port)),
            drops: raw.drops,
            rcvbuf_drops: raw.rcvbuf_drops,
            rcvbuf_drop_bytes: raw.rcvbuf_drop_bytes,
            burst_need: raw.burst_need,
            rcvbuf: raw.rcvbuf,
            peak_queued: raw.peak_queued,
            netns: raw.netns,
        }
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
