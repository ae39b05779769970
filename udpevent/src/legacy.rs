//! The original UDP Event API, same symbols and struct layout, without its
//! defects: the queue is bounded and counts what it drops, events are copies
//! (no pointers into a freed buffer), nothing calls `exit()`, and calls made
//! out of order are safe and defined.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use udptrace::{Event, Family, StatsReader, StopHandle, Tracer};

use crate::copy_cstr;

/// One event as the original library delivered it. The byte layout is the
/// contract: packed, 190 bytes.
#[repr(C, packed)]
#[derive(Clone, Copy)]
pub struct udp_event_t {
    /// AF_INET or AF_INET6.
    pub family: u16,
    pub pid: u32,
    pub UserId: u32,
    /// ns since the Unix epoch.
    pub EventTime: u64,
    /// Local port.
    pub SPT: u16,
    /// Remote port.
    pub DPT: u16,
    /// comm of the calling thread, NUL-terminated.
    pub task: [libc::c_char; 16],
    /// Cumulative bytes received on this socket.
    pub rx_b: u64,
    /// Cumulative bytes sent on this socket.
    pub tx_b: u64,
    /// Cumulative datagrams received on this socket.
    pub rxPkts: u32,
    /// Cumulative datagrams sent on this socket.
    pub txPkts: u32,
    /// Local address, inet_ntop text.
    pub SADDR: [libc::c_char; 64],
    /// Remote address, inet_ntop text.
    pub DADDR: [libc::c_char; 64],
}

const _: () = assert!(std::mem::size_of::<udp_event_t>() == 190);

impl udp_event_t {
    fn zeroed() -> Self {
        // SAFETY: all-zero is a valid value of this plain C struct.
        unsafe { std::mem::zeroed() }
    }

    fn from_event(ev: &Event) -> Self {
        let mut out = Self::zeroed();
        out.family = match ev.family {
            Family::V4 => libc::AF_INET as u16,
            Family::V6 => libc::AF_INET6 as u16,
        };
        out.pid = ev.pid;
        out.UserId = ev.uid;
        out.EventTime = ev.ts_ns;
        out.SPT = ev.local.port();
        out.DPT = ev.remote.port();
        copy_cstr(&mut out.task, ev.comm.as_bytes());
        out.rx_b = ev.counters.rx_bytes;
        out.tx_b = ev.counters.tx_bytes;
        // The original's fields are 32-bit; they wrap as its counters did.
        out.rxPkts = ev.counters.rx_packets as u32;
        out.txPkts = ev.counters.tx_packets as u32;
        inet_ntop(ev.local.ip(), &mut out.SADDR);
        inet_ntop(ev.remote.ip(), &mut out.DADDR);
        out
    }
}

extern "C" {
    // POSIX, in every libc; the libc crate does not declare it.
    #[link_name = "inet_ntop"]
    fn c_inet_ntop(
        af: libc::c_int,
        src: *const libc::c_void,
        dst: *mut libc::c_char,
        size: libc::socklen_t,
    ) -> *const libc::c_char;
}

/// The C library's own text for an address, as the original produced it.
fn inet_ntop(ip: IpAddr, dst: &mut [libc::c_char; 64]) {
    let (af, octets): (i32, Vec<u8>) = match ip {
        IpAddr::V4(a) => (libc::AF_INET, a.octets().to_vec()),
        IpAddr::V6(a) => (libc::AF_INET6, a.octets().to_vec()),
    };
    // SAFETY: `octets` holds an address of family `af`; `dst` has room for
    // INET6_ADDRSTRLEN (46) bytes, and inet_ntop NUL-terminates what it writes.
    unsafe {
        c_inet_ntop(
            af,
            octets.as_ptr().cast(),
            dst.as_mut_ptr(),
            dst.len() as u32,
        )
    };
}

/// Events queued for `DequeuePerfEvent`: about 12 MiB at most.
const QUEUE_CAPACITY: usize = 65536;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    Starting,
    Running,
    Stopped,
}

struct Queue {
    events: VecDeque<udp_event_t>,
    phase: Phase,
    /// Events dropped because the consumer let the queue fill up.
    dropped: u64,
    /// The tracer's counts, among them the events the kernel could not
    /// queue because this library did not read them in time.
    stats: Option<StatsReader>,
    probes: Vec<String>,
    stop: Option<StopHandle>,
    /// The tracer is gone: every probe is detached.
    detached: bool,
    /// Attaching failed: the next AddProbe or setupBPF tries again.
    failed: bool,
}

/// One AddProbe..cleanup lifetime.
struct Session {
    queue: Mutex<Queue>,
    changed: Condvar,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Session {
    fn new() -> Arc<Session> {
        Arc::new(Session {
            queue: Mutex::new(Queue {
                events: VecDeque::new(),
                phase: Phase::Starting,
                dropped: 0,
                stats: None,
                probes: Vec::new(),
                stop: None,
                detached: false,
                failed: false,
            }),
            changed: Condvar::new(),
            thread: Mutex::new(None),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Events lost so far: by the kernel, and by the queue.
    fn lost(&self) -> Lost {
        let (stats, queue) = {
            let q = self.lock();
            (q.stats.clone(), q.dropped)
        };
        // Read outside the lock: the tracer thread takes it for every event.
        let kernel = stats.map_or(0, |s| s.stats().lost);
        Lost { kernel, queue }
    }

    /// Receives delivered without their sender (DADDR 0.0.0.0, DPT 0).
    fn recv_sender_unknown(&self) -> u64 {
        let stats = self.lock().stats.clone();
        stats.map_or(0, |s| s.stats().recv_sender_unknown)
    }

    /// Attaches, then moves events into the queue until stopped; marks the
    /// session detached once the tracer is dropped.
    fn run(&self) -> i32 {
        let rc = match Tracer::builder().start() {
            Ok(tracer) => {
                self.pump(tracer);
                0
            }
            Err(e) => {
                eprintln!("udpEvent: setupBPF failed: {e}");
                1
            }
        };
        let mut q = self.lock();
        q.phase = Phase::Stopped;
        q.detached = true;
        q.failed = rc != 0;
        drop(q);
        self.changed.notify_all();
        rc
    }

    /// Waits for the thread AddProbe started, if any.
    fn join(&self) {
        let handle = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }

    fn pump(&self, mut tracer: Tracer) {
        {
            let mut q = self.lock();
            q.probes = tracer.probes().to_vec();
            q.stats = Some(tracer.stats_reader());
            if q.phase == Phase::Stopped {
                return; // cleanup() came first
            }
            q.stop = Some(tracer.stop_handle());
            q.phase = Phase::Running;
        }
        self.changed.notify_all();
        while !tracer.is_finished() {
            let Some(ev) = tracer.recv_timeout(Duration::from_millis(50)) else {
                continue;
            };
            // The legacy struct cannot carry an error: failed calls are left out.
            if ev.ret < 0 {
                continue;
            }
            let mut q = self.lock();
            if q.phase == Phase::Stopped {
                break;
            }
            if q.events.len() >= QUEUE_CAPACITY {
                q.dropped += 1;
                continue;
            }
            q.events.push_back(udp_event_t::from_event(&ev));
            drop(q);
            self.changed.notify_one();
        }
    }
}

/// Events that never reached `DequeuePerfEvent`.
#[derive(Clone, Copy)]
struct Lost {
    /// The kernel's ring buffers were full: this library fell behind.
    kernel: u64,
    /// The queue was full: the consumer fell behind.
    queue: u64,
}

impl Lost {
    fn total(self) -> u64 {
        self.kernel + self.queue
    }
}

/// What `GetLostEvents` reports once `cleanup()` has ended a session.
static LOST_BY_LAST_SESSION: AtomicU64 = AtomicU64::new(0);

/// The session between AddProbe (or setupBPF) and cleanup, if any.
static CURRENT: Mutex<Option<Arc<Session>>> = Mutex::new(None);

fn current() -> MutexGuard<'static, Option<Arc<Session>>> {
    CURRENT.lock().unwrap_or_else(|p| p.into_inner())
}

/// Prints the version and starts tracing on a background thread; returns at
/// once. `getStatus()` turns 1 when every probe is attached. Calling it again
/// while tracing does not attach twice; after a failed attach, it tries again.
#[no_mangle]
pub extern "C" fn AddProbe() {
    println!(
        "udpEvent {} (udptrace): UDP event tracing with eBPF",
        env!("CARGO_PKG_VERSION")
    );
    let mut cur = current();
    if !make_room(&mut cur) {
        return;
    }
    let session = Session::new();
    *cur = Some(session.clone());
    let worker = session.clone();
    let spawned = thread::Builder::new()
        .name("udpEvent".into())
        .spawn(move || {
            worker.run();
        });
    match spawned {
        Ok(handle) => *session.thread.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle),
        Err(e) => {
            eprintln!("udpEvent: cannot start the tracer thread: {e}");
            let mut q = session.lock();
            q.phase = Phase::Stopped;
            q.detached = true;
            q.failed = true;
        }
    }
}

/// Clears the way for a new session unless one is starting or running: a
/// session whose attach failed is done, and is replaced so that a retry
/// really attaches (the usual `while (!getStatus())` loop would spin
/// forever otherwise). False if a live session is there.
fn make_room(cur: &mut Option<Arc<Session>>) -> bool {
    match cur {
        Some(s) if !s.lock().failed => false,
        _ => {
            if let Some(failed) = cur.take() {
                failed.join();
            }
            true
        }
    }
}

/// Attaches the probes and delivers events until `cleanup()`: it blocks, as
/// the original did (AddProbe runs it on its own thread). Returns 1 at once,
/// with the reason on stderr, if attaching fails (a later call tries again);
/// 0 when tracing ends, or at once if tracing is already running.
#[no_mangle]
pub extern "C" fn setupBPF() -> libc::c_int {
    let session = {
        let mut cur = current();
        if !make_room(&mut cur) {
            return 0;
        }
        let s = Session::new();
        *cur = Some(s.clone());
        s
    };
    session.run()
}

/// 1 once every probe is attached and events flow, else 0.
#[no_mangle]
pub extern "C" fn getStatus() -> libc::c_int {
    let session = current().clone();
    session.is_some_and(|s| s.lock().phase == Phase::Running) as libc::c_int
}

/// The next event, in FIFO order, waiting for one while tracing runs. Returns
/// a zeroed event at once when no tracer is running (before `AddProbe`, after
/// `cleanup`, or when attaching failed).
#[no_mangle]
pub extern "C" fn DequeuePerfEvent() -> udp_event_t {
    let Some(session) = current().clone() else {
        return udp_event_t::zeroed();
    };
    let mut q = session.lock();
    loop {
        if let Some(ev) = q.events.pop_front() {
            return ev;
        }
        if q.phase == Phase::Stopped {
            return udp_event_t::zeroed();
        }
        q = session.changed.wait(q).unwrap_or_else(|p| p.into_inner());
    }
}

/// Detaches every probe and releases everything, printing what it detached.
/// A second call does nothing.
#[no_mangle]
pub extern "C" fn cleanup() {
    let Some(session) = current().take() else {
        return;
    };
    println!("Cleaning up!");
    let stop = {
        let mut q = session.lock();
        q.phase = Phase::Stopped;
        q.events.clear();
        q.stop.take()
    };
    session.changed.notify_all();
    if let Some(stop) = stop {
        stop.stop();
    }
    // setupBPF may run on a thread of the caller's, so wait for the detach
    // itself rather than for a thread.
    let mut q = session.lock();
    while !q.detached {
        q = session.changed.wait(q).unwrap_or_else(|p| p.into_inner());
    }
    drop(q);
    session.join();
    for probe in &session.lock().probes {
        println!("detach {probe} OK");
    }
    report_lost(session.lost());
    let unknown = session.recv_sender_unknown();
    if unknown > 0 {
        eprintln!("udpEvent: {unknown} receives of unknown sender (DADDR 0.0.0.0, DPT 0)");
    }
    println!("bpf.detach_kprobe OK");
}

/// On stderr, so that stdout stays what the original printed.
fn report_lost(lost: Lost) {
    LOST_BY_LAST_SESSION.store(lost.total(), Ordering::Relaxed);
    if lost.total() > 0 {
        eprintln!(
            "udpEvent: {} events lost: {} not read from the kernel in time, {} dropped from a full queue",
            lost.total(),
            lost.kernel,
            lost.queue
        );
    }
}

/// Events lost since `AddProbe` (or `setupBPF`): never delivered by
/// `DequeuePerfEvent` because the kernel's ring buffers or the library's
/// queue were full when they happened. After `cleanup()`, the final count of
/// that session; 0 before the first `AddProbe`. Not in the original API.
#[no_mangle]
pub extern "C" fn GetLostEvents() -> u64 {
    let session = current().clone();
    match session {
        Some(s) => s.lost().total(),
        None => LOST_BY_LAST_SESSION.load(Ordering::Relaxed),
    }
}
