//! A socket's life as the socket table keeps it: its birth, its usual peer,
//! its drops, its receive buffer's peak and its receives' waits. Close events carry it, and the
//! socket table lists it for open sockets.

use std::net::SocketAddr;

use crate::bpf::types::sock_life;
use crate::family::{ip_of, Family};

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
    /// With [`track_waits`](crate::TracerBuilder::track_waits): its receives
    /// whose time in the queue is known, their sum and the longest (ns).
    pub waits: u64,
    pub wait_sum_ns: u64,
    pub wait_max_ns: u64,
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
            waits: raw.waits,
            wait_sum_ns: raw.wait_sum_ns,
            wait_max_ns: raw.wait_max_ns,
        }
    }

    /// The mean time its receives waited in the queue (ns); `None` without any.
    pub fn mean_wait_ns(&self) -> Option<u64> {
        (self.waits > 0).then(|| self.wait_sum_ns / self.waits)
    }
}
