//! Event filters. They are applied in the kernel: the BPF programs read them
//! from `.rodata`, so an unset filter costs nothing.

use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use ipnet::IpNet;

use crate::cgroups::{check_cgroup_path, check_container_prefix};
use crate::event::{EventKind, Family};
use crate::Error;

/// Which events to deliver. Every set field must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only this process (thread group id).
    pub pid: Option<u32>,
    /// Only threads with this name (at most 15 bytes, as the kernel keeps it).
    pub comm: Option<String>,
    /// Only sockets of this family.
    pub family: Option<Family>,
    /// Only traffic with this port on either side.
    pub port: Option<u16>,
    /// Only traffic with an address in this network on either side.
    pub addr: Option<IpNet>,
    /// Only tasks in this cgroup v2 or below it: a path below the cgroup
    /// mount (`/system.slice/nginx.service`) or under it.
    pub cgroup: Option<PathBuf>,
    /// Only tasks of the container whose id starts with this (at least one
    /// hex digit, as `docker` takes ids): in its cgroup or below.
    pub container: Option<String>,
    /// Only sockets of this network namespace (its inode number, as
    /// `ls -l /proc/PID/ns/net` shows it; [`parse_netns`]).
    pub netns: Option<u32>,
    /// Only these kinds of event; empty means the socket events
    /// ([`EventKind::SOCKET`]). Packet events and drops are only produced
    /// (their hooks only attached) when asked for here.
    pub kinds: Vec<EventKind>,
}

/// Parses an address or CIDR network: `10.0.0.1`, `10.0.0.0/8`, `fe80::/10`.
pub fn parse_addr_filter(s: &str) -> Result<IpNet, Error> {
    if let Ok(net) = s.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    s.parse::<IpAddr>().map(IpNet::from).map_err(|_| {
        // Echoed escaped: an error is one line, whatever was passed.
        Error::InvalidFilter(format!(
            "'{}' is not an IP address or CIDR network",
            s.escape_debug()
        ))
    })
}

/// Parses a network namespace: its inode number (`4026531840`), as `ls`
/// shows it (`net:[4026531840]`), or a file that is one (`/proc/PID/ns/net`,
/// `/run/netns/NAME`).
pub fn parse_netns(s: &str) -> Result<u32, Error> {
    let number = s
        .strip_prefix("net:[")
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(s);
    if let Ok(inode) = number.parse::<u32>() {
        return Ok(inode);
    }
    let bad = |why: String| Error::InvalidFilter(format!("netns '{}': {why}", s.escape_debug()));
    if !s.contains('/') {
        return Err(bad(
            "expected an inode number, net:[N] or a namespace file".into()
        ));
    }
    let meta = std::fs::metadata(s).map_err(|e| bad(e.to_string()))?;
    u32::try_from(meta.ino()).map_err(|_| bad("not a network namespace".into()))
}

/// The rule of [`Filter::comm`]: a name the kernel can hold (1 to 15 bytes,
/// no NUL). Public so that a command line refuses it as it is parsed.
pub fn check_comm(comm: &str) -> Result<(), Error> {
    if comm.is_empty() || comm.len() > 15 || comm.contains('\0') {
        return Err(Error::InvalidFilter(format!(
            "comm '{}' must be 1 to 15 bytes: the kernel keeps no more of a task name",
            comm.escape_debug()
        )));
    }
    Ok(())
}

/// The rule of [`Filter::netns`]: no namespace has inode 0.
pub fn check_netns(inode: u32) -> Result<(), Error> {
    if inode == 0 {
        return Err(Error::InvalidFilter(
            "netns must be an inode number above 0".into(),
        ));
    }
    Ok(())
}

/// The 16-byte address and mask the kernel compares against. IPv4 networks
/// become IPv4-mapped IPv6 ones, the form the BPF programs keep addresses in.
pub(crate) fn addr_and_mask(net: &IpNet) -> ([u8; 16], [u8; 16]) {
    let (addr, prefix) = match net {
        IpNet::V4(n) => (n.network().to_ipv6_mapped().octets(), 96 + n.prefix_len()),
        IpNet::V6(n) => (n.network().octets(), n.prefix_len()),
    };
    let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
    (addr, mask.to_be_bytes())
}

impl Filter {
    pub(crate) fn check(&self) -> Result<(), Error> {
        if let Some(comm) = &self.comm {
            check_comm(comm)?;
        }
        if self.pid == Some(0) {
            return Err(Error::InvalidFilter("pid must be greater than 0".into()));
        }
        if self.port == Some(0) {
            return Err(Error::InvalidFilter("port must be 1 to 65535".into()));
        }
        if let Some(netns) = self.netns {
            check_netns(netns)?;
        }
        if let Some(path) = &self.cgroup {
            check_cgroup_path(path)?;
        }
        if let Some(prefix) = &self.container {
            check_container_prefix(prefix)?;
        }
        if self.cgroup.is_some() && self.container.is_some() {
            return Err(Error::InvalidFilter(
                "a cgroup and a container filter cannot be combined".into(),
            ));
        }
        Ok(())
    }

    /// Bit `1 << wire kind` for each wanted kind.
    pub(crate) fn kind_mask(&self) -> u8 {
        let kinds: &[EventKind] = if self.kinds.is_empty() {
            &EventKind::SOCKET
        } else {
            &self.kinds
        };
        kinds.iter().fold(0, |m, k| m | (1 << k.wire()))
    }

    /// Whether any of `kinds` is wanted.
    pub(crate) fn wants_any(&self, kinds: &[EventKind]) -> bool {
        let mask = self.kind_mask();
        kinds.iter().any(|k| mask & (1 << k.wire()) != 0)
    }
}

/// As the kernel compares: IPv4 networks match IPv4-mapped IPv6 addresses too.
pub(crate) fn net_contains(net: &IpNet, ip: IpAddr) -> bool {
    match (net, ip) {
        (IpNet::V4(n), IpAddr::V6(v6)) => v6.to_ipv4_mapped().is_some_and(|v4| n.contains(&v4)),
        _ => net.contains(&ip),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_addresses_and_networks() {
        assert_eq!(
            parse_addr_filter("10.1.2.3").unwrap().to_string(),
            "10.1.2.3/32"
        );
        assert_eq!(
            parse_addr_filter("10.1.2.3/8").unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(parse_addr_filter("::1").unwrap().to_string(), "::1/128");
        assert!(parse_addr_filter("10.0.0.0/33").is_err());
        assert!(parse_addr_filter("example.com").is_err());
    }

    #[test]
    fn ipv4_network_becomes_mapped_mask() {
        let (addr, mask) = addr_and_mask(&parse_addr_filter("10.0.0.0/8").unwrap());
        assert_eq!(&addr[10..], &[0xff, 0xff, 10, 0, 0, 0]);
        assert_eq!(mask[..13], [0xff; 13]);
        assert_eq!(mask[13..], [0, 0, 0]);
    }

    #[test]
    fn zero_prefix_matches_everything() {
        let (addr, mask) = addr_and_mask(&parse_addr_filter("::/0").unwrap());
        assert_eq!((addr, mask), ([0; 16], [0; 16]));
    }

    #[test]
    fn kind_mask_defaults_to_socket_events() {
        let mut f = Filter::default();
        assert_eq!(f.kind_mask(), 0b1_1110);
        assert!(!f.wants_any(&[EventKind::Drop]));
        f.kinds = vec![EventKind::Send, EventKind::Drop];
        assert_eq!(f.kind_mask(), (1 << 1) | (1 << 7));
        assert!(f.wants_any(&[EventKind::Drop, EventKind::PacketRecv]));
    }

    #[test]
    fn rejects_names_the_kernel_cannot_hold() {
        let f = Filter {
            comm: Some("a-very-long-thread-name".into()),
            ..Default::default()
        };
        assert!(f.check().is_err());
        let f = Filter {
            port: Some(0),
            ..Default::default()
        };
        assert!(f.check().is_err());
    }

    #[test]
    fn field_rules_refuse_what_start_would() {
        assert!(check_comm("nginx").is_ok());
        assert!(check_comm("").is_err());
        assert!(check_comm("a-23-byte-thread-name!!").is_err());
        assert!(check_container_prefix("3f4E").is_ok());
        assert!(check_container_prefix("zz").is_err());
        assert!(check_container_prefix(&"a".repeat(65)).is_err());
        assert!(check_netns(0).is_err());
        assert!(check_cgroup_path(std::path::Path::new("/system.slice/x.service")).is_ok());
        assert!(check_cgroup_path(std::path::Path::new("/sys/fs/cgroup/../x")).is_err());
        assert!(check_cgroup_path(std::path::Path::new("./x")).is_err());
        let f = Filter {
            container: Some("zz".into()),
            ..Default::default()
        };
        assert!(f.check().is_err());
    }
}
