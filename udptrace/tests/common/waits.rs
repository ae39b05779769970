//! A receiver that measures how long each datagram waited by its own
//! clock (SO_TIMESTAMPNS), and the check of a histogram's waits against it:
//! shared by the library's latency suite and the CLI's.

use std::mem;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;

use udptrace::{HistRow, HIST_BUCKETS};

/// How much shorter than the receiver's truth the kernel's wait may be. The
/// truth runs from the arrival stamp (taken as the datagram enters the
/// stack) to the receiver's clock after recvmsg() returns; the kernel's from
/// UDP queueing it (fentry/kprobe) or its socket filter just before
/// (tracepoint) to the receive taking it off the queue. Both gaps are code
/// paths of microseconds; a virtual machine under emulation stretches them
/// to hundreds, so the bound is 1 ms, still well inside the buckets of 2 ms
/// and 20 ms waits.
pub const SHORTER_BY_AT_MOST_NS: u64 = 1_000_000;
/// The two clocks (CLOCK_REALTIME for the truth, CLOCK_MONOTONIC in the
/// kernel) may disagree by a slew this small over a test.
pub const LONGER_BY_AT_MOST_NS: u64 = 20_000;

const SO_TIMESTAMPNS: libc::c_int = 35;

pub fn timestamps(s: &UdpSocket) {
    let on: libc::c_int = 1;
    // SAFETY: SO_TIMESTAMPNS takes an int.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            mem::size_of_val(&on) as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_TIMESTAMPNS");
}

pub fn realtime_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Receives one datagram with `flags`; returns its length and how long it
/// waited by the receiver's own clock (arrival stamp to now).
pub fn recv_timed(s: &UdpSocket, flags: libc::c_int) -> (usize, u64) {
    let mut buf = [0u8; 2048];
    let mut control = [0u64; 16];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain data; every pointer set below outlives the call.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = mem::size_of_val(&control);
    // SAFETY: as above.
    let n = unsafe { libc::recvmsg(s.as_raw_fd(), &mut msg, flags) };
    let now = realtime_ns();
    assert!(n >= 0, "recvmsg: {}", std::io::Error::last_os_error());
    // SAFETY: the CMSG macros walk the control buffer the kernel filled.
    let arrival = unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        let mut found = None;
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == SO_TIMESTAMPNS {
                let ts = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::timespec);
                found = Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64);
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
        found.expect("an arrival stamp (SO_TIMESTAMPNS)")
    };
    (n as usize, now.saturating_sub(arrival))
}

pub fn bucket_of_ns(ns: u64) -> usize {
    let us = ns / 1000;
    if us == 0 {
        0
    } else {
        ((64 - us.leading_zeros()) as usize).min(HIST_BUCKETS - 1)
    }
}

/// The kernel's waits, one bucket per datagram (ascending), from a row.
pub fn buckets_of(row: &HistRow) -> Vec<usize> {
    row.buckets
        .iter()
        .enumerate()
        .flat_map(|(i, &n)| std::iter::repeat_n(i, n as usize))
        .collect()
}

/// Each wait in the bucket its truth allows: the kernel's wait lies within
/// [truth - SHORTER, truth + LONGER]. Waits sorted against truths sorted:
/// if any pairing fits these bounds, that one does.
pub fn assert_waits_match(row: &HistRow, truths: &[u64]) {
    let mut truths = truths.to_vec();
    truths.sort_unstable();
    let got = buckets_of(row);
    assert_eq!(
        got.len(),
        truths.len(),
        "one wait per datagram read: {row:?}"
    );
    assert_eq!(row.count, truths.len() as u64);
    for (bucket, truth) in got.iter().zip(&truths) {
        let lo = bucket_of_ns(truth.saturating_sub(SHORTER_BY_AT_MOST_NS));
        let hi = bucket_of_ns(truth + LONGER_BY_AT_MOST_NS);
        assert!(
            (lo..=hi).contains(bucket),
            "a wait of {} us by the receiver's clock is in bucket {bucket}, not in {lo}..={hi}: \
             kernel buckets {got:?}, truths (us) {:?}",
            truth / 1000,
            truths.iter().map(|t| t / 1000).collect::<Vec<_>>()
        );
    }
    // The maximum is a real wait: at most the longest truth, and not much shorter.
    let longest = *truths.last().unwrap();
    assert!(
        row.max <= longest + LONGER_BY_AT_MOST_NS && row.max + SHORTER_BY_AT_MOST_NS >= longest,
        "max {} ns against the longest truth {longest} ns",
        row.max
    );
    let sum: u64 = truths.iter().sum();
    assert!(row.sum <= sum + LONGER_BY_AT_MOST_NS * truths.len() as u64);
}
