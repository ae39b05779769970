//! `udptrace trace -w`: a pcapng capture that tshark and tcpdump read
//! without complaint, holding the same datagrams, byte for byte, as tshark's
//! own capture of `lo` taken at the same time, each with its process and
//! direction. Needs root, tshark and tcpdump.

mod common;

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, Ipv6Addr, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

/// One datagram as tshark shows it: direction flags (ours only), source
/// address, ports, payload in hex, comment.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Datagram {
    direction: String,
    src: String,
    sport: u16,
    dport: u16,
    payload: String,
    comment: String,
}

/// `tshark -r FILE`'s datagrams, asserting it printed no warning.
fn tshark_read(file: &Path) -> Vec<Datagram> {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(file)
        .args(["-T", "fields", "-E", "separator=|", "-E", "occurrence=f"])
        .args([
            "-e",
            "frame.packet_flags_direction",
            "-e",
            "ip.src",
            "-e",
            "ipv6.src",
        ])
        .args([
            "-e",
            "udp.srcport",
            "-e",
            "udp.dstport",
            "-e",
            "udp.payload",
        ])
        .args(["-e", "frame.comment"])
        .output()
        .expect("tshark runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // tshark says it runs as root; anything else is a complaint about the file.
    let complaints: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.contains("Running as user \"root\""))
        .collect();
    assert!(out.status.success() && complaints.is_empty(), "{stderr}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| {
            let f: Vec<&str> = line.split('|').collect();
            assert_eq!(f.len(), 7, "{line}");
            Datagram {
                direction: f[0].into(),
                src: if f[1].is_empty() { f[2] } else { f[1] }.into(),
                sport: f[3].parse().unwrap(),
                dport: f[4].parse().unwrap(),
                payload: f[5].into(),
                comment: f[6].into(),
            }
        })
        .collect()
}

/// tshark capturing `lo` for `port`, once it says it is capturing.
fn tshark_capture(file: &Path, port: u16) -> Child {
    let mut child = Command::new("tshark")
        .args(["-i", "lo", "-w"])
        .arg(file)
        .args(["-f", &format!("udp port {port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tshark runs");
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("Capturing on") {
        line.clear();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "tshark ended");
    }
    child
}

fn interrupt(child: &Child) {
    // SAFETY: signalling our own child, which ends cleanly on SIGINT.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
}

fn temp(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("udptrace-{}-{name}", std::process::id()))
}

/// Sends datagrams of several sizes (up to 9,000 bytes: more than one
/// Ethernet frame holds), IPv4 and IPv6, and one to a closed
/// port (a drop), from sockets on `port`; returns once all arrived.
fn workload(tx4: &UdpSocket, tx6: &UdpSocket, closed: u16) {
    let rx4 = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let rx6 = UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)).unwrap();
    let mut buf = vec![0u8; 65536];
    for (i, len) in [0usize, 1, 100, 1400, 9000].into_iter().enumerate() {
        let data: Vec<u8> = (0..len).map(|b| (b as u8) ^ (i as u8 * 40)).collect();
        tx4.send_to(&data, rx4.local_addr().unwrap()).unwrap();
        tx6.send_to(&data, rx6.local_addr().unwrap()).unwrap();
        assert_eq!(rx4.recv(&mut buf).unwrap(), len);
        assert_eq!(rx6.recv(&mut buf).unwrap(), len);
    }
    tx4.send_to(b"nobody listens", (Ipv4Addr::LOCALHOST, closed))
        .unwrap();
}

#[test]
fn capture_matches_tshark_on_lo_with_process_and_direction() {
    set_comm("pcapng-test");
    let tx4 = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = tx4.local_addr().unwrap().port();
    let tx6 = UdpSocket::bind((Ipv6Addr::LOCALHOST, port)).unwrap();
    let closed = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (ours, theirs) = (temp("ours.pcapng"), temp("theirs.pcapng"));
    let witness = tshark_capture(&theirs, port);
    // Whole datagrams by default, as tshark captures them.
    let (tracer, stderr) = start(&[
        "trace",
        "-w",
        ours.to_str().unwrap(),
        "--port",
        &port.to_string(),
        "-d",
        "60",
    ]);
    workload(&tx4, &tx6, closed);
    std::thread::sleep(Duration::from_millis(300));
    interrupt(&tracer);
    let (out, summary) = finish(tracer, stderr);
    assert!(out.status.success(), "{summary:?}");
    assert!(summary.iter().any(|l| l.contains("lost 0")), "{summary:?}");
    interrupt(&witness);
    witness.wait_with_output().unwrap();

    let ours_read = tshark_read(&ours);
    let theirs_read = tshark_read(&theirs);
    // tcpdump reads it too, a line per packet.
    let dump = Command::new("tcpdump")
        .args(["-n", "-r"])
        .arg(&ours)
        .output()
        .unwrap();
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&dump.stdout).lines().count(),
        ours_read.len()
    );
    let _ = std::fs::remove_file(&ours);
    let _ = std::fs::remove_file(&theirs);

    // On lo, tshark sees each datagram once; udptrace sees it leave and arrive.
    assert_eq!(theirs_read.len(), 11, "{theirs_read:#?}");
    let strip = |d: &Datagram| (d.src.clone(), d.sport, d.dport, d.payload.clone());
    let sent: Vec<&Datagram> = ours_read
        .iter()
        .filter(|d| d.direction == "0x00000002")
        .collect();
    let arrived: Vec<&Datagram> = ours_read
        .iter()
        .filter(|d| d.direction == "0x00000001")
        .collect();
    assert_eq!(
        sent.len() + arrived.len(),
        ours_read.len(),
        "{ours_read:#?}"
    );
    let witnessed: Vec<_> = theirs_read.iter().map(strip).collect();
    assert_eq!(sent.iter().map(|d| strip(d)).collect::<Vec<_>>(), witnessed);
    // Every datagram arrived but the last, which the kernel dropped: it arrives as a drop.
    assert_eq!(
        arrived.iter().map(|d| strip(d)).collect::<Vec<_>>(),
        witnessed
    );

    let pid = format!("pid={} ", std::process::id());
    for d in &sent {
        assert!(d.comment.starts_with(&pid), "{d:?}");
        assert!(d.comment.contains(" comm=pcapng-test "), "{d:?}");
        assert!(d.comment.contains(" cgroup="), "{d:?}");
    }
    let (dropped, delivered) = arrived.split_last().unwrap();
    assert_eq!(dropped.dport, closed);
    assert!(dropped.comment.ends_with(" drop=NO_SOCKET"), "{dropped:?}");
    for d in delivered {
        // A receive is the receiving socket's owner's: this test's.
        assert!(d.comment.starts_with(&pid), "{d:?}");
        assert!(!d.comment.contains("drop="), "{d:?}");
    }
}

/// `-w -` streams the capture to standard output, as `| wireshark -k -i -`
/// reads it; `--no-drops` leaves drops out; a short snap length truncates.
#[test]
fn capture_to_standard_output_without_drops() {
    let tx4 = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = tx4.local_addr().unwrap().port();
    let tx6 = UdpSocket::bind((Ipv6Addr::LOCALHOST, port)).unwrap();
    let (tracer, stderr) = start(&[
        "trace",
        "-w",
        "-",
        "--no-drops",
        "--snaplen",
        "10",
        "--port",
        &port.to_string(),
        "-d",
        "60",
    ]);
    workload(&tx4, &tx6, 9);
    std::thread::sleep(Duration::from_millis(300));
    interrupt(&tracer);
    let (out, summary) = finish(tracer, stderr);
    assert!(out.status.success(), "{summary:?}");
    let file = temp("stdout.pcapng");
    std::fs::write(&file, &out.stdout).unwrap();
    let read = tshark_read(&file);
    let _ = std::fs::remove_file(&file);
    // Ten datagrams each way, and the send to port 9 whose drop is left out.
    assert_eq!(read.len(), 21, "{read:#?}");
    assert_eq!(read.iter().filter(|d| d.dport == 9).count(), 1);
    assert!(read.iter().all(|d| !d.comment.contains("drop=")));
    assert!(read.iter().all(|d| d.payload.len() <= 20), "{read:#?}");
    let longest = read.iter().map(|d| d.payload.len()).max();
    assert_eq!(longest, Some(20), "10 bytes at most, in hex");
}

/// The lengths of a pcapng file's blocks, each read from its header, as far
/// as they go; their sum is the file's length when it ends with a whole one.
fn block_lengths(capture: &[u8]) -> Vec<usize> {
    let mut lengths = Vec::new();
    let mut at = 0;
    while let Some(header) = capture.get(at + 4..at + 8) {
        let total = u32::from_le_bytes(header.try_into().unwrap()) as usize;
        if total == 0 {
            break;
        }
        lengths.push(total);
        at += total;
    }
    lengths
}

/// A disk that fills mid-capture: the run fails in one line, and the file is
/// cut back to its last whole block, which tshark reads without complaint.
#[test]
fn a_full_disk_leaves_a_capture_of_whole_blocks() {
    let fs = SmallFs::mount("64k");
    let file = fs.dir.join("full.pcapng");
    let rx = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = rx.local_addr().unwrap().port().to_string();
    let (tracer, stderr) = start(&[
        "trace",
        "-w",
        file.to_str().unwrap(),
        "--snaplen",
        "1000",
        "--port",
        &port,
        "-d",
        "30",
    ]);
    // Each datagram is a block of over 1000 bytes as it leaves and another
    // as it arrives (or is dropped): 100 of them fill 64 KiB three times.
    let tx = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    for _ in 0..100 {
        tx.send_to(&[0x5a; 1000], rx.local_addr().unwrap()).unwrap();
    }
    let (out, stderr) = finish(tracer, stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr:?}");
    assert_eq!(
        stderr.last().unwrap(),
        "udptrace: error: writing the output: No space left on device (os error 28)"
    );
    let errors = stderr.iter().filter(|l| l.contains("error")).count();
    assert_eq!(errors, 1, "{stderr:?}");

    let capture = std::fs::read(&file).unwrap();
    let blocks = block_lengths(&capture);
    assert!(blocks.len() > 2, "{} bytes", capture.len());
    assert_eq!(blocks.iter().sum::<usize>(), capture.len(), "{blocks:?}");
    let read = Command::new("tshark")
        .arg("-r")
        .arg(&file)
        .output()
        .unwrap();
    let complaint = String::from_utf8_lossy(&read.stderr);
    assert!(read.status.success(), "{complaint}");
    assert!(!complaint.contains("cut short"), "{complaint}");
    // The header blocks, then a packet per block.
    let packets = String::from_utf8_lossy(&read.stdout).lines().count();
    assert_eq!(packets, blocks.len() - 2);
}
