//! The tracer: loads and attaches the BPF programs on a reader thread that
//! drains the per-CPU ring buffers and hands decoded events to the caller in
//! batches, in time order.

use std::cell::RefCell;
use std::mem::{self, MaybeUninit};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{
    MapCore, MapFlags, MapHandle, MapType, OpenObject, PrintLevel, RingBuffer, RingBufferBuilder,
};

use crate::backend::{self, Backend, Peers, Plan};
use crate::bpf::{types, UdptraceSkel, UdptraceSkelBuilder};
use crate::count::{decode_row, CountField, CountRow};
use crate::drop_reason::drop_reason_code;
use crate::event::{Event, EventKind};
use crate::filter::{addr_and_mask, Filter};
use crate::merge::{TimeMerge, SETTLE};
use crate::wakeup::RingWaiter;
use crate::{clock, sys, Error};

/// Decoded batches in flight between the reader thread and the consumer, and
/// the most events in one. When the consumer falls this far behind (at most
/// 16 x 4096 events, about 8 MiB), the reader stops draining, the ring buffers
/// fill and the kernel counts what it cannot store as lost.
const BATCHES_IN_FLIGHT: usize = 16;
const MAX_BATCH: usize = 4096;

/// Configures and starts a [`Tracer`].
#[derive(Debug, Clone)]
pub struct TracerBuilder {
    filter: Filter,
    backend: Option<Backend>,
    ring_buffer_bytes: Option<u32>,
    wakeup_bytes: u64,
    drain_interval: Duration,
    report_eagain: bool,
    count_by: Option<Vec<CountField>>,
    assume_missing: Vec<String>,
}

impl Default for TracerBuilder {
    fn default() -> Self {
        TracerBuilder {
            filter: Filter::default(),
            backend: None,
            ring_buffer_bytes: None,
            wakeup_bytes: 64 << 10,
            drain_interval: Duration::from_millis(10),
            report_eagain: false,
            count_by: None,
            assume_missing: Vec::new(),
        }
    }
}

impl TracerBuilder {
    /// In-kernel filters: only matching events reach user space.
    pub fn filter(mut self, filter: Filter) -> Self {
        self.filter = filter;
        self
    }

    /// Forces a backend instead of the best one the kernel supports.
    pub fn backend(mut self, backend: Backend) -> Self {
        self.backend = Some(backend);
        self
    }

    /// Size of each CPU's ring buffer (a power of two, at least one page).
    /// The default is 4 MiB, less on machines of more than 4 CPUs so that all
    /// together take 16 MiB, but never less than 1 MiB.
    pub fn ring_buffer_size(mut self, bytes: u32) -> Self {
        self.ring_buffer_bytes = Some(bytes);
        self
    }

    /// The consumer is woken once this much is pending in a CPU's ring, and
    /// otherwise drains every [`drain_interval`](Self::drain_interval): a
    /// wake-up per event would cost more than the tracing itself.
    pub fn wakeup_bytes(mut self, bytes: u64) -> Self {
        self.wakeup_bytes = bytes;
        self
    }

    /// The longest an event waits in the ring buffer when traffic is light.
    pub fn drain_interval(mut self, interval: Duration) -> Self {
        self.drain_interval = interval;
        self
    }

    /// Emit receives that failed with EAGAIN. Off by default: busy-polling
    /// servers make millions; they are counted in [`Stats::recv_eagain`].
    pub fn report_eagain(mut self, on: bool) -> Self {
        self.report_eagain = on;
        self
    }

    /// Counts events in the kernel by these fields instead of delivering
    /// them: read the table with [`Tracer::take_counts`]. No event crosses
    /// the ring buffer, so none can be lost.
    pub fn count_by(mut self, fields: Vec<CountField>) -> Self {
        self.count_by = Some(fields);
        self
    }

    /// Treats these kernel functions as missing, as on a kernel that renamed
    /// or inlined them: tests the fentry and kprobe backends' per-function
    /// fallback to the length tracepoints.
    #[doc(hidden)]
    pub fn assume_missing_functions(mut self, names: Vec<String>) -> Self {
        self.assume_missing = names;
        self
    }

    /// Loads and attaches the programs; returns once every probe is attached.
    pub fn start(self) -> Result<Tracer, Error> {
        self.filter.check()?;
        if self.count_by.as_ref().is_some_and(|f| f.is_empty()) {
            return Err(Error::InvalidFilter(
                "counting needs at least one field to count by".into(),
            ));
        }
        if let Some(bytes) = self.ring_buffer_bytes {
            if !bytes.is_power_of_two() || bytes < 4096 {
                return Err(Error::InvalidFilter(format!(
                    "ring buffer size {bytes} is not a power of two of at least 4096"
                )));
            }
        }
        route_libbpf_log();
        sys::check_btf()?;
        sys::check_privileges()?;
        let cgroup_root = sys::cgroup2_mount()?;
        // A forced backend, or each the kernel's BTF allows, in order of
        // preference, until one loads and attaches.
        let candidates: Vec<Backend> = match self.backend {
            Some(b) => vec![b],
            None => Backend::ALL.to_vec(),
        };
        let mut refusals = Vec::new();
        for backend in candidates {
            if let Some(reason) = backend.unavailable_reason() {
                refusals.push((backend, reason));
                continue;
            }
            match self.clone().start_backend(backend, cgroup_root.clone()) {
                Ok(tracer) => return Ok(tracer),
                // Privileges, filters and the like fail every backend alike.
                Err(Error::Bpf { what, source }) => {
                    refusals.push((backend, format!("{what}: {source}")))
                }
                Err(e) => return Err(e),
            }
        }
        let summary = refusals
            .iter()
            .map(|(b, why)| format!("{b}: {why}"))
            .collect::<Vec<_>>()
            .join("; ");
        match (self.backend, refusals.pop()) {
            (Some(b), Some((_, reason))) => Err(Error::BackendUnavailable {
                backend: b.name(),
                reason,
            }),
            _ => Err(Error::NoBackend(summary)),
        }
    }

    /// Loads and attaches one backend on a new reader thread.
    fn start_backend(
        self,
        backend: Backend,
        cgroup_root: std::path::PathBuf,
    ) -> Result<Tracer, Error> {
        let self_count_by = self.count_by.clone().unwrap_or_default();
        let shared = Arc::new(Shared::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::sync_channel(1);
        let (batch_tx, batch_rx) = mpsc::sync_channel(BATCHES_IN_FLIGHT);
        let reader = {
            let (shared, stop) = (shared.clone(), stop.clone());
            thread::Builder::new()
                .name("udptrace-reader".into())
                .spawn(move || {
                    let ctx = ReaderCtx {
                        builder: self,
                        backend,
                        cgroup_root,
                        shared,
                        stop,
                    };
                    ctx.run(ready_tx, batch_tx)
                })
                .map_err(|e| Error::System(format!("cannot start the reader thread: {e}")))?
        };
        let ready = match ready_rx.recv() {
            Ok(Ok(ready)) => ready,
            Ok(Err(e)) => {
                let _ = reader.join();
                return Err(e);
            }
            Err(_) => {
                let _ = reader.join();
                return Err(Error::ReaderGone);
            }
        };
        Ok(Tracer {
            batches: batch_rx,
            pending: Vec::new().into_iter(),
            stop,
            stats: StatsReader(Arc::new(StatsSource {
                stats_map: ready.stats_map,
                shared: shared.clone(),
            })),
            shared,
            counts_map: ready.counts_map,
            count_by: self_count_by,
            reader: Some(reader),
            backend: ready.backend,
            probes: ready.probes,
            finished: false,
        })
    }
}

/// libbpf prints warnings and whole verifier logs to stderr; users get our
/// one-line errors instead, and `UDPTRACE_DEBUG=1` brings libbpf's log back.
fn route_libbpf_log() {
    fn to_stderr(_: PrintLevel, msg: String) {
        eprint!("libbpf: {msg}");
    }
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let debug = std::env::var_os("UDPTRACE_DEBUG").is_some_and(|v| !v.is_empty() && v != "0");
        libbpf_rs::set_print(debug.then_some((PrintLevel::Debug, to_stderr as _)));
    });
}

const KINDS: usize = EventKind::ALL.len();

/// Counts since the tracer started. Every event the kernel produced is in
/// exactly one of: delivered by kind, `lost`, or `undecodable`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Events read from the kernel, by kind (indexed as [`EventKind::ALL`]).
    pub events: [u64; KINDS],
    /// Events the kernel could not store (the ring buffer was full) or,
    /// with kprobes, could not follow (the table of calls in flight was full).
    pub lost: u64,
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
    /// not connect), counted when the socket is next used or closed.
    pub connect_failed: u64,
    /// connect() calls the filters select that the kernel could not follow
    /// (the table of pending connects was full): neither reported nor counted.
    pub connect_full: u64,
    /// Counting mode: events not counted because the table was full.
    pub count_full: u64,
}

impl Stats {
    pub fn events_of(&self, kind: EventKind) -> u64 {
        self.events[kind.index()]
    }

    pub fn total_events(&self) -> u64 {
        self.events.iter().sum()
    }
}

/// State the reader thread shares with the handle.
#[derive(Default)]
struct Shared {
    events: [AtomicU64; KINDS],
    undecodable: AtomicU64,
    error: Mutex<Option<String>>,
}

/// Stops a tracer from another thread (a signal handler, a timer).
#[derive(Debug, Clone)]
pub struct StopHandle(Arc<AtomicBool>);

impl StopHandle {
    /// Detaches after draining what the kernel already produced; the tracer
    /// then delivers the remaining events and ends.
    pub fn stop(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// A tracer's [`Stats`], readable from any thread and after the tracer is
/// dropped (then they are final).
#[derive(Clone)]
pub struct StatsReader(Arc<StatsSource>);

struct StatsSource {
    stats_map: MapHandle,
    shared: Arc<Shared>,
}

impl StatsReader {
    /// Counts so far, read from the kernel and the reader thread.
    pub fn stats(&self) -> Stats {
        let StatsSource { stats_map, shared } = &*self.0;
        let kernel = |stat: types::udp_stat| -> u64 {
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
            lost: kernel(types::udp_stat::UDP_STAT_LOST),
            undecodable: shared.undecodable.load(Ordering::Relaxed),
            recv_eagain: kernel(types::udp_stat::UDP_STAT_RECV_EAGAIN),
            recv_peek: kernel(types::udp_stat::UDP_STAT_RECV_PEEK),
            counters_full: kernel(types::udp_stat::UDP_STAT_COUNTERS_FULL),
            connect_failed: kernel(types::udp_stat::UDP_STAT_CONNECT_FAILED),
            connect_full: kernel(types::udp_stat::UDP_STAT_CONNECT_FULL),
            count_full: kernel(types::udp_stat::UDP_STAT_COUNT_FULL),
        }
    }
}

/// A running tracer. Iterate it, or call [`recv_timeout`](Self::recv_timeout).
/// Dropping it detaches every probe.
pub struct Tracer {
    batches: Receiver<Vec<Event>>,
    /// The rest of the batch being handed out.
    pending: std::vec::IntoIter<Event>,
    stop: Arc<AtomicBool>,
    shared: Arc<Shared>,
    stats: StatsReader,
    counts_map: MapHandle,
    count_by: Vec<CountField>,
    reader: Option<JoinHandle<()>>,
    backend: Backend,
    probes: Vec<String>,
    finished: bool,
}

impl Tracer {
    pub fn builder() -> TracerBuilder {
        TracerBuilder::default()
    }

    /// The backend producing the events.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Every attached probe, e.g. `tp_btf/sock_send_length`, `cgroup/connect4`.
    pub fn probes(&self) -> &[String] {
        &self.probes
    }

    pub fn stop_handle(&self) -> StopHandle {
        StopHandle(self.stop.clone())
    }

    /// See [`StopHandle::stop`].
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Whether [`stop`](Self::stop) was called (here or through a [`StopHandle`]).
    pub fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// True once the tracer was stopped and every event has been delivered.
    pub fn is_finished(&self) -> bool {
        self.finished && self.pending.len() == 0
    }

    /// The next event, waiting at most `timeout`. `None` on timeout or once
    /// the tracer is finished.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Option<Event> {
        if let Some(ev) = self.pending.next() {
            return Some(ev);
        }
        if self.finished {
            return None;
        }
        match self.batches.recv_timeout(timeout) {
            Ok(batch) => {
                self.pending = batch.into_iter();
                self.pending.next()
            }
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => {
                self.finished = true;
                None
            }
        }
    }

    /// An error that ended the reader thread early, if one did.
    pub fn error(&self) -> Option<String> {
        self.shared.error.lock().ok()?.clone()
    }

    /// Counts so far, read from the kernel and the reader thread.
    pub fn stats(&self) -> Stats {
        self.stats.stats()
    }

    /// Reads [`stats`](Self::stats) without borrowing the tracer, so another
    /// thread can while this one waits in [`recv_timeout`](Self::recv_timeout).
    pub fn stats_reader(&self) -> StatsReader {
        self.stats.clone()
    }

    /// Counting mode: the rows counted since the last call (or the start),
    /// unsorted. Each row is read and removed in one step, so an event
    /// counted meanwhile lands in this call's rows or the next one's.
    pub fn take_counts(&self) -> Result<Vec<CountRow>, Error> {
        if self.count_by.is_empty() {
            return Ok(Vec::new());
        }
        let cpus =
            libbpf_rs::num_possible_cpus().map_err(Error::bpf("counting the possible CPUs"))?;
        let keys: Vec<Vec<u8>> = self.counts_map.keys().collect();
        let mut rows = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some(value) = self.take_count(&key, cpus)? {
                rows.extend(decode_row(&self.count_by, &key, &value));
            }
        }
        Ok(rows)
    }

    /// Reads and removes one row of the per-CPU table, summed over the CPUs.
    fn take_count(&self, key: &[u8], cpus: usize) -> Result<Option<[u8; 16]>, Error> {
        // The kernel writes one 8-byte-aligned value per possible CPU.
        let size = mem::size_of::<types::count_value>();
        let mut values = vec![0u8; cpus * size];
        // SAFETY: `key` has the map's key size (it came from the map) and
        // `values` holds a value for every possible CPU, as the call writes.
        let rc = unsafe {
            libbpf_rs::libbpf_sys::bpf_map_lookup_and_delete_elem(
                self.counts_map.as_fd().as_raw_fd(),
                key.as_ptr().cast(),
                values.as_mut_ptr().cast(),
            )
        };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::ENOENT) {
                return Ok(None); // gone since the keys were listed
            }
            return Err(Error::System(format!("reading the count table: {err}")));
        }
        let (mut events, mut bytes) = (0u64, 0u64);
        for cpu in values.chunks_exact(size) {
            events += u64_ne(&cpu[..8]);
            bytes += u64_ne(&cpu[8..16]);
        }
        let mut sum = [0u8; 16];
        sum[..8].copy_from_slice(&events.to_ne_bytes());
        sum[8..].copy_from_slice(&bytes.to_ne_bytes());
        Ok(Some(sum))
    }
}

fn u64_ne(b: &[u8]) -> u64 {
    u64::from_ne_bytes(b.try_into().expect("8-byte slice"))
}

/// Blocks for the next event until the tracer is finished.
impl Iterator for Tracer {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        while !self.is_finished() {
            if let Some(ev) = self.recv_timeout(Duration::from_millis(100)) {
                return Some(ev);
            }
        }
        None
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        self.stop();
        // Unblocks a reader waiting for room in the channel.
        drop(mem::replace(&mut self.batches, mpsc::sync_channel(0).1));
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// What the reader thread hands back once every probe is attached.
struct Ready {
    /// What runs: see [`Plan::effective_backend`].
    backend: Backend,
    stats_map: MapHandle,
    counts_map: MapHandle,
    probes: Vec<String>,
}

struct ReaderCtx {
    builder: TracerBuilder,
    backend: Backend,
    cgroup_root: std::path::PathBuf,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
}

impl ReaderCtx {
    fn run(self, ready_tx: SyncSender<Result<Ready, Error>>, batch_tx: SyncSender<Vec<Event>>) {
        let mut storage = MaybeUninit::uninit();
        let plan = self.plan();
        let (skel, rings) = match self.load(&mut storage, &plan) {
            Ok(loaded) => loaded,
            Err(e) => {
                let _ = ready_tx.send(Err(e));
                return;
            }
        };
        // Declared after the skeleton so that they drop (detach) first.
        let probes = match backend::attach(&skel, &plan, &self.cgroup_root) {
            Ok(p) => p,
            Err(e) => {
                let _ = ready_tx.send(Err(e));
                return;
            }
        };
        let offset = clock::monotonic_to_wall_offset_ns();
        // Events are decoded straight into the merge, which sorts them in place.
        let merge = RefCell::new(TimeMerge::default());
        let decode = |data: &[u8]| {
            match Event::decode(data, offset) {
                Some(ev) => merge.borrow_mut().push(ev),
                None => {
                    self.shared.undecodable.fetch_add(1, Ordering::Relaxed);
                }
            }
            0
        };
        let mut rb = RingBufferBuilder::new();
        let ring = rings
            .iter()
            .try_for_each(|r| rb.add(r, decode).map(|_| ()))
            .and_then(|()| rb.build())
            .map_err(Error::bpf("opening the ring buffers"))
            .and_then(|ring| {
                let waiter = RingWaiter::new(&rings)
                    .map_err(|e| Error::System(format!("waiting on the ring buffers: {e}")))?;
                Ok((ring, waiter))
            });
        let maps = MapHandle::try_from(&skel.maps.stats)
            .and_then(|stats| Ok((stats, MapHandle::try_from(&skel.maps.counts)?)))
            .map_err(Error::bpf("opening the stats and count maps"));
        let (ring, waiter) = match (ring, maps) {
            (Ok(ring), Ok((stats_map, counts_map))) => {
                let names = probes.iter().map(|p| p.name.clone()).collect();
                if ready_tx
                    .send(Ok(Ready {
                        backend: plan.effective_backend(),
                        stats_map,
                        counts_map,
                        probes: names,
                    }))
                    .is_err()
                {
                    return;
                }
                ring
            }
            (Err(e), _) | (_, Err(e)) => {
                let _ = ready_tx.send(Err(e));
                return;
            }
        };

        self.drain(&ring, &waiter, &merge, offset, &batch_tx);
        drop(probes);
    }

    /// Passes over the rings until stopped (the last pass drains them all):
    /// each wakes on a producer's wake-up or the drain interval, reads every
    /// ring to its end, and hands on the events the merge releases.
    fn drain(
        &self,
        ring: &RingBuffer,
        waiter: &RingWaiter,
        merge: &RefCell<TimeMerge>,
        offset: i64,
        batch_tx: &SyncSender<Vec<Event>>,
    ) {
        loop {
            // Read the flag before draining, so a stop still gets a last full drain.
            let stopping = self.stop.load(Ordering::Relaxed);
            if !stopping {
                waiter.wait(self.builder.drain_interval);
            }
            // Events stamped before this are in their rings by now: the pass
            // below reads each ring to its end, so it releases them all.
            let horizon = clock::monotonic_ns() + offset - SETTLE.as_nanos() as i64;
            loop {
                let consumed = ring.consume_raw_n(MAX_BATCH);
                if consumed < 0 {
                    *self.shared.error.lock().unwrap_or_else(|p| p.into_inner()) = Some(format!(
                        "reading the ring buffers: {}",
                        std::io::Error::from_raw_os_error(-consumed)
                    ));
                    return;
                }
                if (consumed as usize) < MAX_BATCH {
                    break;
                }
            }
            let ready = merge
                .borrow_mut()
                .release((!stopping).then_some(horizon.max(0) as u64));
            for events in into_batches(ready) {
                self.count(&events);
                if batch_tx.send(events).is_err() {
                    return; // the handle is gone
                }
            }
            if stopping {
                return;
            }
        }
    }

    fn count(&self, events: &[Event]) {
        let mut by_kind = [0u64; KINDS];
        for ev in events {
            by_kind[ev.kind.index()] += 1;
        }
        for (count, n) in self.shared.events.iter().zip(by_kind) {
            count.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// The programs this tracer loads.
    fn plan(&self) -> Plan {
        let (b, f) = (&self.builder, &self.builder.filter);
        let mut plan = Plan::new(
            self.backend,
            &b.assume_missing,
            f.wants_any(&EventKind::SOCKET),
            f.wants_any(&[EventKind::PacketSend, EventKind::PacketRecv]),
            f.wants_any(&[EventKind::Drop]),
        );
        // A count needs a send's peer only to key by destination, a receive's
        // only to key by source; a port or address filter needs both.
        if let Some(fields) = &b.count_by {
            let keyed_by = |these: &[CountField]| fields.iter().any(|f| these.contains(f));
            let filtered = f.port.is_some() || f.addr.is_some();
            plan.peers = Peers {
                send: filtered || keyed_by(&[CountField::Daddr, CountField::Dport]),
                recv: filtered || keyed_by(&[CountField::Saddr, CountField::Sport]),
            };
        }
        plan
    }

    fn load<'obj>(
        &self,
        storage: &'obj mut MaybeUninit<OpenObject>,
        plan: &Plan,
    ) -> Result<(UdptraceSkel<'obj>, Vec<MapHandle>), Error> {
        let b = &self.builder;
        let rings = self.create_rings()?;
        let mut open = UdptraceSkelBuilder::default()
            .open(storage)
            .map_err(Error::bpf("opening the BPF object"))?;
        open.maps
            .events
            .set_inner_map_fd(rings[0].as_fd())
            .and_then(|()| open.maps.events.set_max_entries(rings.len() as u32))
            .map_err(Error::bpf("sizing the ring buffers"))?;
        let f = &b.filter;
        for mut prog in open.open_object_mut().progs_mut() {
            prog.set_autoload(plan.wants_program(&prog.section().to_string_lossy()));
        }
        let ro = open
            .maps
            .rodata_data
            .as_deref_mut()
            .expect("the object has .rodata");
        ro.filter_pid = f.pid.unwrap_or(0);
        if let Some(comm) = &f.comm {
            ro.filter_comm_on = true;
            for (dst, src) in ro.filter_comm.iter_mut().zip(comm.bytes()) {
                *dst = src as _;
            }
        }
        ro.filter_family = f.family.map_or(0, |fam| fam.af());
        ro.filter_port = f.port.unwrap_or(0);
        if let Some(net) = &f.addr {
            let (addr, mask) = addr_and_mask(net);
            ro.filter_addr_on = true;
            ro.filter_addr = addr;
            ro.filter_addr_mask = mask;
        }
        ro.event_kinds = f.kind_mask();
        ro.emit_eagain = b.report_eagain;
        ro.wakeup_bytes = b.wakeup_bytes;
        if let Some(fields) = &b.count_by {
            ro.count_mode = true;
            ro.count_keys = fields.iter().fold(0, |m, f| m | f.bit());
        }
        ro.kfree_skb_has_rx_sk = plan.drops && backend::kfree_skb_has_rx_sk();
        ro.cgroup_skb_task_btf = plan.packets.is_some() && backend::cgroup_skb_has_task_btf();
        (ro.tp_send_families, ro.tp_recv_families) = plan.tracepoint_families();
        (ro.peers_of_sends, ro.peers_of_recvs) = (plan.peers.send, plan.peers.recv);
        if plan.drops {
            let code = |name| drop_reason_code(name).unwrap_or(u32::MAX);
            ro.reason_rcvbuff = code("SOCKET_RCVBUFF");
            ro.reason_proto_mem = code("PROTO_MEM");
        }
        let skel = open
            .load()
            .map_err(Error::bpf("loading the BPF programs"))?;
        for (cpu, ring) in rings.iter().enumerate() {
            let fd = ring.as_fd().as_raw_fd() as u32;
            skel.maps
                .events
                .update(
                    &(cpu as u32).to_ne_bytes(),
                    &fd.to_ne_bytes(),
                    MapFlags::ANY,
                )
                .map_err(Error::bpf("installing the ring buffers"))?;
        }
        Ok((skel, rings))
    }

    /// A ring buffer for each possible CPU (one page each when counting:
    /// nothing goes through them then).
    fn create_rings(&self) -> Result<Vec<MapHandle>, Error> {
        let cpus =
            libbpf_rs::num_possible_cpus().map_err(Error::bpf("counting the possible CPUs"))?;
        let b = &self.builder;
        let bytes = match b.count_by {
            Some(_) => 4096,
            None => b.ring_buffer_bytes.unwrap_or(default_ring_bytes(cpus)),
        };
        let opts = libbpf_rs::libbpf_sys::bpf_map_create_opts {
            sz: mem::size_of::<libbpf_rs::libbpf_sys::bpf_map_create_opts>() as _,
            ..Default::default()
        };
        (0..cpus)
            .map(|_| MapHandle::create(MapType::RingBuf, Some("udptrace_ring"), 0, 0, bytes, &opts))
            .collect::<Result<_, _>>()
            .map_err(Error::bpf("creating the ring buffers"))
    }
}

/// `events` in batches of at most MAX_BATCH: moved whole when they fit in
/// one (the usual case: a pass is a wake-up's worth), else each moved once.
fn into_batches(events: Vec<Event>) -> Vec<Vec<Event>> {
    if events.len() <= MAX_BATCH {
        return if events.is_empty() {
            Vec::new()
        } else {
            vec![events]
        };
    }
    let mut events = events.into_iter();
    let mut batches = Vec::with_capacity(events.len().div_ceil(MAX_BATCH));
    while events.len() > 0 {
        batches.push(events.by_ref().take(MAX_BATCH).collect());
    }
    batches
}

/// 4 MiB per CPU on up to 4 CPUs; beyond, 16 MiB shared out, but at least 1 MiB each.
fn default_ring_bytes(cpus: usize) -> u32 {
    let share = (16usize << 20) / cpus.max(1);
    let power_of_two = 1usize << share.ilog2();
    power_of_two.clamp(1 << 20, 4 << 20) as u32
}

#[cfg(test)]
mod tests {
    use super::{default_ring_bytes, into_batches, MAX_BATCH};
    use crate::event::test_event;

    #[test]
    fn batches_keep_order_and_size() {
        let events: Vec<_> = (0..2 * MAX_BATCH as u64 + 1).map(test_event).collect();
        let batches = into_batches(events);
        let sizes: Vec<usize> = batches.iter().map(Vec::len).collect();
        assert_eq!(sizes, [MAX_BATCH, MAX_BATCH, 1]);
        let stamps: Vec<u64> = batches.iter().flatten().map(|e| e.ts_ns).collect();
        assert!(stamps.iter().copied().eq(0..2 * MAX_BATCH as u64 + 1));
        assert!(into_batches(Vec::new()).is_empty());
    }

    #[test]
    fn default_rings_take_at_most_16_mib_but_1_mib_each() {
        assert_eq!(default_ring_bytes(1), 4 << 20);
        assert_eq!(default_ring_bytes(4), 4 << 20);
        assert_eq!(default_ring_bytes(6), 2 << 20);
        assert_eq!(default_ring_bytes(16), 1 << 20);
        assert_eq!(default_ring_bytes(256), 1 << 20);
    }

    #[test]
    fn tracer_can_move_between_threads() {
        fn assert_send<T: Send>() {}
        assert_send::<super::Tracer>();
    }
}
