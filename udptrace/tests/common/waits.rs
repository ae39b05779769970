//! A receiver that knows how long each of its datagrams waited in its
//! queue, by its own clocks, and the check of a histogram's waits against
//! that: shared by the library's latency suite and the CLI's.
//!
//! The kernel's wait of a datagram runs from its stamp (UDP's enqueue on
//! fentry/kprobe, its socket filter just before on the tracepoint backend)
//! to the receive taking it off the queue (inside recvmsg). The receiver
//! brackets it without trusting any tolerance: the stamp comes after the
//! datagram's arrival stamp (SO_TIMESTAMPNS) and before the receiver sees
//! its socket's receive memory grow (SO_MEMINFO, polled right after the
//! send); the receive comes after recvmsg is called and before it returns.
//! So the wait is at least (recvmsg called - seen queued) and at most
//! (recvmsg returned - arrival). A machine that defers the sender's softirq
//! (a virtual machine under emulation can, by milliseconds) widens the
//! bracket of that datagram alone, as it should.

use std::collections::VecDeque;
use std::mem;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use udptrace::{HistRow, HIST_BUCKETS};

/// The two clocks (CLOCK_REALTIME for the arrival stamp, CLOCK_MONOTONIC in
/// the kernel) may run apart by a slew this small over a test.
const CLOCK_SLEW_NS: u64 = 20_000;

const SO_TIMESTAMPNS: libc::c_int = 35;
const SO_MEMINFO: libc::c_int = 55;

/// What the receiver knows of one datagram's wait, in nanoseconds.
#[derive(Debug, Clone, Copy)]
pub struct Bracket {
    pub at_least: u64,
    pub at_most: u64,
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A socket whose every datagram is sent by [`send`](Self::send), to be
/// read by [`recv`](Self::recv) with its wait bracketed.
pub struct TimedReceiver {
    pub socket: UdpSocket,
    /// When each datagram still queued was seen queued (CLOCK_MONOTONIC).
    seen: VecDeque<u64>,
}

impl TimedReceiver {
    pub fn new(socket: UdpSocket) -> TimedReceiver {
        let on: libc::c_int = 1;
        // SAFETY: SO_TIMESTAMPNS takes an int.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                SO_TIMESTAMPNS,
                (&on as *const libc::c_int).cast(),
                mem::size_of_val(&on) as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "SO_TIMESTAMPNS");
        TimedReceiver {
            socket,
            seen: VecDeque::new(),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.socket.local_addr().unwrap()
    }

    /// The receive memory its queue holds (SK_MEMINFO_RMEM_ALLOC).
    fn queued_memory(&self) -> u32 {
        let mut info = [0u32; 9];
        let mut len = mem::size_of_val(&info) as libc::socklen_t;
        // SAFETY: SO_MEMINFO writes at most `len` bytes of u32s.
        let rc = unsafe {
            libc::getsockopt(
                self.socket.as_raw_fd(),
                libc::SOL_SOCKET,
                SO_MEMINFO,
                info.as_mut_ptr().cast(),
                &mut len,
            )
        };
        assert_eq!(rc, 0, "SO_MEMINFO");
        info[0]
    }

    /// Sends `payload` from `tx` and returns once the datagram is queued.
    pub fn send(&mut self, tx: &UdpSocket, payload: &[u8]) {
        let before = self.queued_memory();
        tx.send_to(payload, self.addr()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.queued_memory() <= before {
            assert!(Instant::now() < deadline, "the datagram was never queued");
            std::hint::spin_loop();
        }
        self.seen.push_back(clock_ns(libc::CLOCK_MONOTONIC));
    }

    /// Receives one datagram with `flags` (MSG_PEEK leaves it queued);
    /// returns its length and its wait's bracket.
    pub fn recv(&mut self, flags: libc::c_int) -> (usize, Bracket) {
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
        let called = clock_ns(libc::CLOCK_MONOTONIC);
        // SAFETY: as above.
        let n = unsafe { libc::recvmsg(self.socket.as_raw_fd(), &mut msg, flags) };
        let returned = clock_ns(libc::CLOCK_REALTIME);
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
        let seen = if flags & libc::MSG_PEEK != 0 {
            self.seen[0]
        } else {
            self.seen.pop_front().expect("a datagram sent by send()")
        };
        let bracket = Bracket {
            at_least: called.saturating_sub(seen),
            at_most: returned.saturating_sub(arrival) + CLOCK_SLEW_NS,
        };
        (n as usize, bracket)
    }
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

/// Each datagram's wait in a bucket its bracket allows, and the count, sum
/// and maximum within the brackets'. Which wait is whose the histogram does
/// not say: each bucket, smallest first, takes the bracket that ends first
/// among those it fits (if any matching exists, that one succeeds).
pub fn assert_waits_match(row: &HistRow, brackets: &[Bracket]) {
    let got = buckets_of(row);
    assert_eq!(
        got.len(),
        brackets.len(),
        "one wait per datagram read: {row:?}"
    );
    assert_eq!(row.count, brackets.len() as u64);
    let ranges: Vec<(usize, usize)> = brackets
        .iter()
        .map(|b| (bucket_of_ns(b.at_least), bucket_of_ns(b.at_most)))
        .collect();
    let mut taken = vec![false; ranges.len()];
    for &bucket in &got {
        let pick = (0..ranges.len())
            .filter(|&i| !taken[i] && ranges[i].0 <= bucket && bucket <= ranges[i].1)
            .min_by_key(|&i| ranges[i].1);
        let Some(i) = pick else {
            panic!(
                "a wait in bucket {bucket} fits no datagram's bracket: kernel buckets {got:?}, \
                 brackets (us) {:?}",
                brackets
                    .iter()
                    .map(|b| (b.at_least / 1000, b.at_most / 1000))
                    .collect::<Vec<_>>()
            );
        };
        taken[i] = true;
    }
    let least: u64 = brackets.iter().map(|b| b.at_least).sum();
    let most: u64 = brackets.iter().map(|b| b.at_most).sum();
    assert!(
        (least..=most).contains(&row.sum),
        "sum {} ns outside {least}..={most}",
        row.sum
    );
    let longest_least = brackets.iter().map(|b| b.at_least).max().unwrap();
    let longest_most = brackets.iter().map(|b| b.at_most).max().unwrap();
    assert!(
        (longest_least..=longest_most).contains(&row.max),
        "max {} ns outside {longest_least}..={longest_most}",
        row.max
    );
}
