//! What a tracer counts: events delivered by kind, from the reader thread,
//! and what the kernel counted instead of emitting, from its `stats` map.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use libbpf_rs::{MapCore, MapFlags, MapHandle};

use crate::bpf::types::udp_stat;
use crate::event::EventKind;

/// What the reader thread counts as it decodes, shared with the handle.
#[derive(Default)]
pub(crate) struct Shared {
    pub events: [AtomicU64; KINDS],
    pub undecodable: AtomicU64,
    pub error: Mutex<Option<String>>,
}

pub(crate) const KINDS: usize = EventKind::ALL.len();

/// Counts since the tracer started. Every event the kernel produced is in
/// exactly one of: delivered by kind, `lost`, or `undecodable`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Events read from the kernel, by kind (indexed as [`EventKind::ALL`]).
    pub events: [u64; KINDS],
    /// Events the kernel could not store (the ring buffer was full) or,
    /// with kprobes, could not follow (the table of calls in flight was full).
    pub lost: u64,
    /// Runs of an event hook the kernel skipped: its previous run on that
    /// CPU had not ended, as when a task is preempted in it (kernels that
    /// preempt there: Linux 7.x by default) and the next task on the CPU
    /// passes the same hook. Each may have been an event (or a receive's
    /// sender), or one the filters drop: at most this many events are
    /// missing beyond `lost`, or shown without their sender. kprobes run
    /// with preemption off, but are skipped too when another BPF program is
    /// running on the CPU (counted from Linux 6.7); and a kretprobe misses
    /// returns when more calls are in flight than it has instances (as few
    /// as one per CPU on kernels without preemption before 5.11), counted
    /// here when the thread calls again or has exited.
    pub skipped: u64,
    /// Records that did not decode (a bug if ever non-zero).
    pub undecodable: u64,
    /// Receives that failed with EAGAIN, counted but not emitted. Like the
    /// next two, only those the filters select.
    pub recv_eagain: u64,
    /// MSG_PEEK receives, which leave the datagram queued: not receives.
    pub recv_peek: u64,
    /// Events of sockets whose counters found no room in the kernel's socket
    /// table: their counters are zero.
    pub counters_full: u64,
    /// connect() calls that failed: not reported as events (the socket did
    /// not connect), counted when the socket is next used or closed, and
    /// only when connect events are selected.
    pub connect_failed: u64,
    /// connect() calls the filters select that the kernel could not follow
    /// (the table of pending connects was full): neither reported nor counted.
    pub connect_full: u64,
    /// Counting mode: events not counted because the table was full.
    pub count_full: u64,
    /// Receives whose sender is unknown: where no hook reads it from the
    /// datagram (the tracepoint backend), the caller did not ask for the
    /// address and the socket had datagrams of more than one sender pending,
    /// or existed before tracing began. Reported with an unspecified remote
    /// end; address and port filters keep them when their local side
    /// matches. Counted for the tasks the filters select, kept or not.
    pub recv_sender_unknown: u64,
    /// Histograms of receive-queue waits: receives not added because their
    /// datagram's wait is unknown (it was queued before tracing began, or
    /// its stamp was lost: see the latency page of the manual). Only those
    /// the filters select.
    pub wait_unknown: u64,
}

impl Stats {
    pub fn events_of(&self, kind: EventKind) -> u64 {
        self.events[kind.index()]
    }

    pub fn total_events(&self) -> u64 {
        self.events.iter().sum()
    }
}

/// A tracer's [`Stats`], readable from any thread and after the tracer is
/// dropped (then they are final).
#[derive(Clone)]
pub struct StatsReader(Arc<StatsSource>);

struct StatsSource {
    stats_map: MapHandle,
    /// The programs whose skipped runs may be missing events.
    skippable: Vec<OwnedFd>,
    /// kprobe calls in flight (`args_by_call`), by function << 32 | thread.
    calls_map: MapHandle,
    shared: Arc<Shared>,
}

impl StatsReader {
    pub(crate) fn new(
        stats_map: MapHandle,
        skippable: Vec<OwnedFd>,
        calls_map: MapHandle,
        shared: Arc<Shared>,
    ) -> StatsReader {
        StatsReader(Arc::new(StatsSource {
            stats_map,
            skippable,
            calls_map,
            shared,
        }))
    }

    /// Counts so far, read from the kernel and the reader thread.
    pub fn stats(&self) -> Stats {
        let StatsSource {
            stats_map,
            skippable,
            calls_map,
            shared,
        } = &*self.0;
        let kernel = |stat: udp_stat| -> u64 {
            let idx = stat.0;
            stats_map
                .lookup_percpu(&idx.to_ne_bytes(), MapFlags::ANY)
                .ok()
                .flatten()
                .map(|cpus| cpus.iter().filter_map(|v| v.get(..8)).map(u64_ne).sum())
                .unwrap_or(0)
        };
        Stats {
            events: std::array::from_fn(|i| shared.events[i].load(Ordering::Relaxed)),
            lost: kernel(udp_stat::UDP_STAT_LOST),
            skipped: skippable.iter().map(skipped_runs).sum::<u64>()
                + kernel(udp_stat::UDP_STAT_RETURN_MISSED)
                + calls_of_gone_threads(calls_map),
            undecodable: shared.undecodable.load(Ordering::Relaxed),
            recv_eagain: kernel(udp_stat::UDP_STAT_RECV_EAGAIN),
            recv_peek: kernel(udp_stat::UDP_STAT_RECV_PEEK),
            counters_full: kernel(udp_stat::UDP_STAT_COUNTERS_FULL),
            connect_failed: kernel(udp_stat::UDP_STAT_CONNECT_FAILED),
            connect_full: kernel(udp_stat::UDP_STAT_CONNECT_FULL),
            count_full: kernel(udp_stat::UDP_STAT_COUNT_FULL),
            recv_sender_unknown: kernel(udp_stat::UDP_STAT_RECV_NO_SENDER),
            wait_unknown: kernel(udp_stat::UDP_STAT_WAIT_UNKNOWN),
        }
    }
}

/// The runs of a program the kernel skipped because its previous run on the
/// same CPU had not ended (`recursion_misses`, Linux 5.12+; 0 before).
fn skipped_runs(prog: &OwnedFd) -> u64 {
    use libbpf_rs::libbpf_sys as sys;
    let mut info = sys::bpf_prog_info::default();
    let mut len = std::mem::size_of::<sys::bpf_prog_info>() as u32;
    // SAFETY: `info` is a bpf_prog_info of `len` bytes; the kernel fills at
    // most that and asks for no other buffers (their pointers are zero).
    let rc = unsafe {
        sys::bpf_obj_get_info_by_fd(
            prog.as_raw_fd(),
            (&mut info as *mut sys::bpf_prog_info).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        info.recursion_misses
    } else {
        0
    }
}

/// kprobe send and receive calls whose thread has exited without its return
/// probe running: each may have been an event (a thread's last call, which
/// no later call of it can reveal as UDP_STAT_RETURN_MISSED does).
fn calls_of_gone_threads(calls: &MapHandle) -> u64 {
    // bpf/udptrace.bpf.c: FN_UDP_SEND to FN_UDP6_RECV, the calls that make events.
    const EVENT_CALLS: std::ops::RangeInclusive<u64> = 1..=4;
    calls
        .keys()
        .filter_map(|key| Some(u64::from_ne_bytes(key.as_slice().try_into().ok()?)))
        .filter(|key| EVENT_CALLS.contains(&(key >> 32)))
        .filter(|key| !std::path::Path::new(&format!("/proc/{}", key & 0xffff_ffff)).exists())
        .count() as u64
}

/// Each CPU's `stats` value is one `__u64`.
fn u64_ne(b: &[u8]) -> u64 {
    u64::from_ne_bytes(b.try_into().expect("8-byte slice"))
}
