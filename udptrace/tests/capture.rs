//! Packet events against an independent witness: a `tcpdump` capture on `lo`
//! taken at the same time must show the same datagrams with the same header
//! fields, IPv4 and IPv6. Needs root and tcpdump.

mod common;

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, UdpSocket};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::settle;
use udptrace::{Event, EventKind, Filter, Tracer};

/// The header fields both sides report, in host byte order.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Headers {
    ip_ver: u8,
    saddr: IpAddr,
    daddr: IpAddr,
    sport: u16,
    dport: u16,
    ip_plength: u16,
    udp_length: u16,
    udp_checksum: u16,
}

fn of_event(e: &Event) -> Headers {
    let p = e.packet.expect("a packet event");
    Headers {
        ip_ver: p.ip_ver,
        saddr: e.source().ip(),
        daddr: e.destination().ip(),
        sport: e.source().port(),
        dport: e.destination().port(),
        ip_plength: p.ip_plength,
        udp_length: p.udp_length,
        udp_checksum: p.udp_checksum,
    }
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// The UDP datagrams of a pcap file of `lo` (Ethernet link type).
fn read_pcap(bytes: &[u8]) -> Vec<Headers> {
    let magic = u32::from_le_bytes(bytes[0..4].try_into().unwrap());
    assert!(
        magic == 0xa1b2c3d4 || magic == 0xa1b23c4d,
        "a little-endian pcap"
    );
    let linktype = u32::from_le_bytes(bytes[20..24].try_into().unwrap());
    assert_eq!(linktype, 1, "Ethernet framing on lo");
    let mut out = Vec::new();
    let mut at = 24;
    while at + 16 <= bytes.len() {
        let caplen = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap()) as usize;
        let frame = &bytes[at + 16..at + 16 + caplen];
        at += 16 + caplen;
        let ip = &frame[14..];
        let h = match ip[0] >> 4 {
            4 => {
                let ihl = usize::from(ip[0] & 0xf) * 4;
                let udp = &ip[ihl..];
                let octets = |o: usize| IpAddr::from(<[u8; 4]>::try_from(&ip[o..o + 4]).unwrap());
                Headers {
                    ip_ver: 4,
                    saddr: octets(12),
                    daddr: octets(16),
                    sport: be16(udp, 0),
                    dport: be16(udp, 2),
                    ip_plength: be16(ip, 2) - ihl as u16,
                    udp_length: be16(udp, 4),
                    udp_checksum: be16(udp, 6),
                }
            }
            6 => {
                let udp = &ip[40..];
                let octets = |o: usize| IpAddr::from(<[u8; 16]>::try_from(&ip[o..o + 16]).unwrap());
                Headers {
                    ip_ver: 6,
                    saddr: octets(8),
                    daddr: octets(24),
                    sport: be16(udp, 0),
                    dport: be16(udp, 2),
                    ip_plength: be16(ip, 4),
                    udp_length: be16(udp, 4),
                    udp_checksum: be16(udp, 6),
                }
            }
            v => panic!("IP version {v}"),
        };
        out.push(h);
    }
    out
}

#[test]
fn packet_fields_agree_with_tcpdump_ipv4_and_ipv6() {
    let tx4 = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = tx4.local_addr().unwrap().port();
    let tx6 = UdpSocket::bind((Ipv6Addr::LOCALHOST, port)).unwrap();
    let rx4 = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let rx6 = UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)).unwrap();
    let pcap = std::env::temp_dir().join(format!("udptrace-capture-{}.pcap", std::process::id()));

    // Immediate mode: otherwise libpcap hands packets over in blocks and the
    // last block is lost when tcpdump is interrupted.
    let mut tcpdump = Command::new("tcpdump")
        .args(["-i", "lo", "--immediate-mode", "-U", "-n", "-w"])
        .arg(&pcap)
        .args(["udp", "port", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tcpdump runs");
    let mut stderr = BufReader::new(tcpdump.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("listening on") {
        line.clear();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "tcpdump ended");
    }

    let filter = Filter {
        port: Some(port),
        kinds: vec![EventKind::PacketSend, EventKind::PacketRecv],
        ..Default::default()
    };
    let mut tracer = Tracer::builder().filter(filter).start().unwrap();
    for len in [0, 1, 100, 1400] {
        tx4.send_to(&vec![4u8; len], rx4.local_addr().unwrap())
            .unwrap();
        tx6.send_to(&vec![6u8; len], rx6.local_addr().unwrap())
            .unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    settle();
    tracer.stop();
    let events: Vec<Event> = tracer.by_ref().collect();
    assert_eq!(tracer.stats().lost, 0);
    // SAFETY: signalling our own child; tcpdump writes out and exits on SIGINT.
    unsafe { libc::kill(tcpdump.id() as i32, libc::SIGINT) };
    tcpdump.wait().unwrap();
    let captured = read_pcap(&std::fs::read(&pcap).unwrap());
    let _ = std::fs::remove_file(&pcap);

    assert_eq!(captured.len(), 8, "{captured:#?}");
    let of_kind = |kind| -> Vec<Headers> {
        events
            .iter()
            .filter(|e| e.kind == kind)
            .map(of_event)
            .collect()
    };
    assert_eq!(of_kind(EventKind::PacketSend), captured, "packet-send");
    assert_eq!(of_kind(EventKind::PacketRecv), captured, "packet-recv");
}
