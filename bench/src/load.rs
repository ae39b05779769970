//! The UDP load: senders flooding one receiving socket on loopback with
//! sendmmsg, receivers draining it with recvmmsg.

use std::io;
use std::mem;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct LoadSpec {
    pub senders: usize,
    pub receivers: usize,
    pub payload: usize,
    pub batch: usize,
    pub ipv6: bool,
    pub seconds: f64,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct LoadResult {
    /// Datagrams the senders handed to the kernel (some may be dropped).
    pub sent: u64,
    pub received: u64,
    pub seconds: f64,
}

impl LoadResult {
    /// Datagrams delivered to the receivers per second.
    pub fn rate(&self) -> f64 {
        self.received as f64 / self.seconds
    }
}

/// Runs the load for `spec.seconds` and counts datagrams sent and received.
pub fn run(spec: &LoadSpec) -> io::Result<LoadResult> {
    let any: SocketAddr = if spec.ipv6 { "[::1]:0" } else { "127.0.0.1:0" }
        .parse()
        .unwrap();
    let rx = UdpSocket::bind(any)?;
    set_rcvbuf(&rx, 8 << 20);
    rx.set_read_timeout(Some(Duration::from_millis(50)))?;
    let dst = rx.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));

    let mut threads = Vec::new();
    for _ in 0..spec.receivers {
        let (rx, stop, received, batch) =
            (rx.try_clone()?, stop.clone(), received.clone(), spec.batch);
        threads.push(thread::spawn(move || receive(&rx, batch, &stop, &received)));
    }
    let start = Instant::now();
    for _ in 0..spec.senders {
        let tx = UdpSocket::bind(any)?;
        tx.connect(dst)?;
        let (stop, sent, spec) = (stop.clone(), sent.clone(), *spec);
        threads.push(thread::spawn(move || send(&tx, &spec, &stop, &sent)));
    }
    thread::sleep(Duration::from_secs_f64(spec.seconds));
    // Count what was received during the run only.
    let received_in_run = received.load(Ordering::Relaxed);
    let seconds = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    Ok(LoadResult {
        sent: sent.load(Ordering::Relaxed),
        received: received_in_run,
        seconds,
    })
}

fn set_rcvbuf(s: &UdpSocket, bytes: libc::c_int) {
    // SAFETY: setsockopt with an int option on our own socket. SO_RCVBUFFORCE
    // needs CAP_NET_ADMIN; without it the plain option still helps.
    unsafe {
        let p = &bytes as *const _ as *const libc::c_void;
        let len = mem::size_of_val(&bytes) as u32;
        if libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            p,
            len,
        ) != 0
        {
            libc::setsockopt(s.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUF, p, len);
        }
    }
}

fn send(tx: &UdpSocket, spec: &LoadSpec, stop: &AtomicBool, sent: &AtomicU64) {
    let payload = vec![0x5au8; spec.payload];
    let mut iov = libc::iovec {
        iov_base: payload.as_ptr() as *mut _,
        iov_len: payload.len(),
    };
    // SAFETY: all-zero mmsghdrs, each pointing at the one iovec.
    let mut msgs: Vec<libc::mmsghdr> = (0..spec.batch)
        .map(|_| unsafe {
            let mut m: libc::mmsghdr = mem::zeroed();
            m.msg_hdr.msg_iov = &mut iov;
            m.msg_hdr.msg_iovlen = 1;
            m
        })
        .collect();
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: msgs and the buffers they point at live across the call.
        let n = unsafe { libc::sendmmsg(tx.as_raw_fd(), msgs.as_mut_ptr(), msgs.len() as u32, 0) };
        if n > 0 {
            sent.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
}

fn receive(rx: &UdpSocket, batch: usize, stop: &AtomicBool, received: &AtomicU64) {
    let mut bufs = vec![[0u8; 2048]; batch];
    let mut iovs: Vec<libc::iovec> = bufs
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr() as *mut _,
            iov_len: b.len(),
        })
        .collect();
    // SAFETY: all-zero mmsghdrs, each pointing at its own iovec.
    let mut msgs: Vec<libc::mmsghdr> = iovs
        .iter_mut()
        .map(|iov| unsafe {
            let mut m: libc::mmsghdr = mem::zeroed();
            m.msg_hdr.msg_iov = iov;
            m.msg_hdr.msg_iovlen = 1;
            m
        })
        .collect();
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: msgs and the buffers they point at live across the call.
        let n = unsafe {
            libc::recvmmsg(
                rx.as_raw_fd(),
                msgs.as_mut_ptr(),
                msgs.len() as u32,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n > 0 {
            received.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
}
