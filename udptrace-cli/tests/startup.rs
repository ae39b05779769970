//! Start-up interrupted: the `udptrace` binary killed at every phase leaves
//! nothing in the kernel. Its own test binary, so that no other tracer of the
//! suite creates or frees BPF objects meanwhile. Needs root.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// The ids of every BPF object of one kind in the kernel (`BPF_*_GET_NEXT_ID`).
fn bpf_object_ids(next_id_cmd: u32) -> std::collections::BTreeSet<u32> {
    let mut ids = std::collections::BTreeSet::new();
    let mut id = 0u32;
    loop {
        let mut attr = [id, 0u32, 0u32];
        let rc = bpf_id_command(next_id_cmd, &mut attr);
        if rc != 0 {
            return ids;
        }
        id = attr[1];
        ids.insert(id);
    }
}

const BPF_PROG_GET_NEXT_ID: u32 = 11;
const BPF_MAP_GET_NEXT_ID: u32 = 12;
const BPF_LINK_GET_NEXT_ID: u32 = 31;

/// Programs, maps and links (cgroup attachments among them) in the kernel.
fn bpf_objects() -> [std::collections::BTreeSet<u32>; 3] {
    [
        bpf_object_ids(BPF_PROG_GET_NEXT_ID),
        bpf_object_ids(BPF_MAP_GET_NEXT_ID),
        bpf_object_ids(BPF_LINK_GET_NEXT_ID),
    ]
}

/// A tracer of every kind of event, so that start-up goes through every
/// phase (the socket, packet and drop hooks, and seeding existing sockets).
fn tracer() -> Command {
    let mut cmd = Command::new(udptrace_bin());
    cmd.args([
        "-e",
        "send,recv,connect,close,packet-send,drop",
        "--port",
        "9",
    ])
    .stdout(Stdio::null());
    cmd
}

/// SIGKILL at every phase of start-up (creating the rings, loading,
/// attaching, seeding the existing sockets, tracing) leaves no program, map
/// or link behind.
#[test]
fn sigkill_at_any_phase_of_start_up_leaves_nothing() {
    let before = bpf_objects();
    for delay_ms in [0, 2, 5, 10, 20, 40, 80, 160, 320] {
        let mut child = tracer().stderr(Stdio::null()).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        child.kill().unwrap();
        child.wait().unwrap();
    }
    // At each phase as the kernel shows it: as its first program, map (the
    // rings come first) and link appear.
    for (kind, existing) in before.iter().enumerate() {
        let mut child = tracer().stderr(Stdio::null()).spawn().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while bpf_objects()[kind].is_subset(existing) {
            assert!(
                std::time::Instant::now() < deadline,
                "no new object of kind {kind}"
            );
        }
        child.kill().unwrap();
        child.wait().unwrap();
    }
    // And once tracing, when every object exists.
    let mut child = tracer().stderr(Stdio::piped()).spawn().unwrap();
    // Notes on what the kernel cannot give come first (older kernels).
    let banner = BufReader::new(child.stderr.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .find(|line| !line.starts_with("udptrace: note: "))
        .unwrap_or_default();
    assert!(banner.starts_with("Tracing"), "{banner}");
    let during = bpf_objects();
    assert!(
        during.iter().zip(&before).all(|(d, b)| d.len() > b.len()),
        "the tracer's programs, maps and links are visible"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    // The kernel frees them with their last fd, asynchronously.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let now = bpf_objects();
        let left: Vec<Vec<&u32>> = now
            .iter()
            .zip(&before)
            .map(|(now, before)| now.difference(before).collect())
            .collect();
        if left.iter().all(Vec::is_empty) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "left behind (programs, maps, links): {left:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
