//! A socket's address family, and its addresses as the programs write them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Address family of the socket (not of the peer: an IPv6 socket can talk to
/// IPv4 peers through IPv4-mapped addresses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    /// 4 or 6.
    pub fn number(self) -> u8 {
        match self {
            Self::V4 => 4,
            Self::V6 => 6,
        }
    }

    pub(crate) fn af(self) -> u8 {
        match self {
            Self::V4 => libc::AF_INET as u8,
            Self::V6 => libc::AF_INET6 as u8,
        }
    }
}

/// The kernel side carries IPv4 as IPv4-mapped IPv6; an IPv4 socket shows plain IPv4.
pub(crate) fn ip_of(family: Family, addr: [u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from(addr);
    match family {
        Family::V4 => IpAddr::V4(v6.to_ipv4_mapped().unwrap_or(Ipv4Addr::UNSPECIFIED)),
        Family::V6 => IpAddr::V6(v6),
    }
}
