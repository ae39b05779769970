//! Configuring a tracer, and starting it on the best backend the kernel runs.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crate::backend::Backend;
use crate::cgroups::{cgroup_target, container_cgroup};
use crate::count::CountField;
use crate::event::EventKind;
use crate::filter::Filter;
use crate::hist::Histogram;
use crate::reader::{ReaderCtx, BATCHES_IN_FLIGHT};
use crate::settings::Settings;
use crate::stats::Shared;
use crate::tracer::Tracer;
use crate::{features, load, sys, Error};

/// Configures and starts a [`Tracer`].
#[derive(Debug, Clone, Default)]
pub struct TracerBuilder {
    settings: Settings,
}

impl Tracer {
    pub fn builder() -> TracerBuilder {
        TracerBuilder::default()
    }
}

impl TracerBuilder {
    /// In-kernel filters: only matching events reach user space.
    pub fn filter(mut self, filter: Filter) -> Self {
        self.settings.filter = filter;
        self
    }

    /// Forces a backend instead of the best one the kernel supports.
    pub fn backend(mut self, backend: Backend) -> Self {
        self.settings.backend = Some(backend);
        self
    }

    /// Size of each CPU's ring buffer (a power of two, at least one page).
    /// The default is 4 MiB, less on machines of more than 4 CPUs so that all
    /// together take 16 MiB, but never less than 1 MiB.
    pub fn ring_buffer_size(mut self, bytes: u32) -> Self {
        self.settings.ring_buffer_bytes = Some(bytes);
        self
    }

    /// The consumer is woken once this much is pending in a CPU's ring, and
    /// otherwise drains every [`drain_interval`](Self::drain_interval): a
    /// wake-up per event would cost more than the tracing itself. The
    /// default is 64 KiB of 136-byte records, as many records for larger
    /// ones, and at most a quarter of the ring; a value set here is used as
    /// it is.
    pub fn wakeup_bytes(mut self, bytes: u64) -> Self {
        self.settings.wakeup_bytes = Some(bytes);
        self
    }

    /// The longest an event waits in the ring buffer when traffic is light.
    pub fn drain_interval(mut self, interval: Duration) -> Self {
        self.settings.drain_interval = interval;
        self
    }

    /// Emit receives that failed with EAGAIN. Off by default: busy-polling
    /// servers make millions; they are counted in
    /// [`Stats::recv_eagain`](crate::Stats::recv_eagain).
    pub fn report_eagain(mut self, on: bool) -> Self {
        self.settings.report_eagain = on;
        self
    }

    /// Counts events in the kernel by these fields instead of delivering
    /// them: read the table with [`Tracer::take_counts`]. No event crosses
    /// the ring buffer, so none can be lost.
    pub fn count_by(mut self, fields: Vec<CountField>) -> Self {
        self.settings.count_by = Some(fields);
        self
    }

    /// Adds up receives (or, for sizes, the datagrams the event kinds
    /// select) into power-of-two histograms in the kernel, keyed by the
    /// [`count_by`](Self::count_by) fields (none: one histogram), instead of
    /// counting or delivering them: read them with
    /// [`Tracer::take_histograms`]. No event crosses the ring buffer.
    pub fn histogram(mut self, what: Histogram) -> Self {
        self.settings.histogram = Some(what);
        self.settings.histogram_beside_counts = false;
        self
    }

    /// As [`histogram`](Self::histogram), and the events are still counted
    /// by [`count_by`](Self::count_by) for [`Tracer::take_counts`] (`udptrace
    /// serve`): every key then counts in the hash table, not in per-CPU slots.
    pub fn histogram_beside_counts(mut self, what: Histogram) -> Self {
        self.settings.histogram = Some(what);
        self.settings.histogram_beside_counts = true;
        self
    }

    /// How many sockets the kernel keeps counters and owners for (default
    /// 262,144). The events of sockets beyond it carry no counters, and are
    /// counted in [`Stats::counters_full`](crate::Stats::counters_full).
    pub fn socket_table_size(mut self, sockets: u32) -> Self {
        self.settings.socket_table_size = Some(sockets);
        self
    }

    /// How many distinct keys counting's table holds (default 65,536), beside
    /// the [`COUNT_SLOTS_PER_CPU`](crate::COUNT_SLOTS_PER_CPU) slots that
    /// keys without addresses (nor a drop's reason) fill first. Events of keys
    /// beyond both are counted in [`Stats::count_full`](crate::Stats::count_full).
    pub fn count_table_size(mut self, keys: u32) -> Self {
        self.settings.count_table_size = Some(keys);
        self
    }

    /// Keeps, for each socket, the peer of most of its datagrams, its drops
    /// and its receive buffer's peak: close events carry them
    /// ([`Event::life`](crate::Event::life)), and [`Tracer::sockets`](crate::Tracer::sockets)
    /// lists the open sockets with them. It loads the drop and receive-queue
    /// hooks whatever events are wanted; their events are still only
    /// delivered if wanted.
    pub fn track_sockets(mut self, on: bool) -> Self {
        self.settings.track_sockets = on;
        self
    }

    /// With [`track_sockets`](Self::track_sockets): each socket's life also
    /// keeps how long its receives waited in its queue (count, sum, most:
    /// [`SockLife::waits`](crate::SockLife::waits)), from the hooks
    /// [`Histogram::QueueWait`] uses.
    pub fn track_waits(mut self, on: bool) -> Self {
        self.settings.track_waits = on;
        self
    }

    /// Packet events and drops carry the first `bytes` of each datagram's UDP
    /// payload ([`Event::payload`](crate::Event::payload)); 0, the default,
    /// for headers only. At most [`MAX_SNAPLEN`](crate::MAX_SNAPLEN). Every
    /// packet record then takes this much more room in the ring buffers,
    /// whatever its datagram's size: raise
    /// [`ring_buffer_size`](Self::ring_buffer_size) for large snap lengths
    /// under heavy traffic. Not with [`count_by`](Self::count_by).
    pub fn snaplen(mut self, bytes: u32) -> Self {
        self.settings.snaplen = bytes;
        self
    }

    /// Keeps, for each socket, only what its receive side shows: its drops
    /// and its receive buffer's peak ([`SockLife`](crate::SockLife)'s
    /// `rcvbuf`, `peak_queued`, `drops`, `rcvbuf_drops`, `local`), from the
    /// hooks where datagrams are queued and dropped alone: unless sends or
    /// receives are wanted as events, their hooks are not loaded, and the
    /// sockets' counters and peers stay empty. The cheap half of
    /// [`track_sockets`](Self::track_sockets).
    pub fn track_receive_buffers(mut self, on: bool) -> Self {
        self.settings.track_receive_buffers = on;
        self
    }

    /// Treats these kernel functions as missing, as on a kernel that renamed
    /// or inlined them: tests the fentry and kprobe backends' per-function
    /// fallback to the length tracepoints.
    #[doc(hidden)]
    pub fn assume_missing_functions(mut self, names: Vec<String>) -> Self {
        self.settings.assume_missing = names;
        self
    }

    /// Loads and attaches the programs; returns once every probe is attached.
    pub fn start(mut self) -> Result<Tracer, Error> {
        self.settings.filter.check()?;
        self.settings.cgroup_target = match (
            &self.settings.filter.cgroup,
            &self.settings.filter.container,
        ) {
            (Some(path), _) => Some(cgroup_target(path)?),
            (None, Some(id)) => Some(cgroup_target(&container_cgroup(id)?)?),
            (None, None) => None,
        };
        // A histogram may have no key: one for everything.
        if self.settings.histogram.is_none()
            && self
                .settings
                .count_by
                .as_ref()
                .is_some_and(|f| f.is_empty())
        {
            return Err(Error::InvalidFilter(
                "counting needs at least one field to count by".into(),
            ));
        }
        if self.settings.histogram.is_some() && self.settings.count_by.is_none() {
            return Err(Error::InvalidFilter(
                "a histogram needs count_by's fields to key it by".into(),
            ));
        }
        // Beside counts, the other events are counted alone.
        if self.settings.histogram == Some(Histogram::QueueWait)
            && !self.settings.histogram_beside_counts
        {
            let kinds = &mut self.settings.filter.kinds;
            if kinds.is_empty() {
                kinds.push(EventKind::Recv);
            }
            if kinds.iter().any(|k| *k != EventKind::Recv) {
                return Err(Error::InvalidFilter(
                    "receive-queue waits are receives': select receives alone".into(),
                ));
            }
        }
        if [
            self.settings.socket_table_size,
            self.settings.count_table_size,
        ]
        .contains(&Some(0))
        {
            return Err(Error::InvalidFilter(
                "a kernel table needs room for at least one entry".into(),
            ));
        }
        if let Some(bytes) = self.settings.ring_buffer_bytes {
            if !bytes.is_power_of_two() || bytes < 4096 {
                return Err(Error::InvalidFilter(format!(
                    "ring buffer size {bytes} is not a power of two of at least 4096"
                )));
            }
        }
        if self.settings.snaplen > crate::MAX_SNAPLEN {
            return Err(Error::InvalidFilter(format!(
                "snap length {} is more than a UDP payload can be ({})",
                self.settings.snaplen,
                crate::MAX_SNAPLEN
            )));
        }
        if self.settings.snaplen > 0 && self.settings.count_by.is_some() {
            return Err(Error::InvalidFilter(
                "a count keeps no payload: no snap length with count_by".into(),
            ));
        }
        let record = load::packet_record_bytes(self.settings.snaplen);
        if self
            .settings
            .ring_buffer_bytes
            .is_some_and(|ring| ring < 2 * record)
        {
            return Err(Error::InvalidFilter(format!(
                "a ring buffer must hold at least two records of {record} bytes with this snap length"
            )));
        }
        load::route_libbpf_log();
        sys::check_btf()?;
        sys::check_privileges()?;
        features::check_ring_buffers()?;
        let cgroup_root = sys::cgroup2_mount()?;
        // A forced backend, or each the kernel's BTF allows, in order of
        // preference, until one loads and attaches.
        let candidates: Vec<Backend> = match self.settings.backend {
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
        match (self.settings.backend, refusals.pop()) {
            (Some(b), Some((_, reason))) => Err(Error::BackendUnavailable {
                backend: b.name(),
                reason,
            }),
            _ => Err(Error::NoBackend(summary)),
        }
    }

    /// Loads and attaches one backend on a new reader thread.
    fn start_backend(self, backend: Backend, cgroup_root: PathBuf) -> Result<Tracer, Error> {
        let count_by = self.settings.count_by.clone().unwrap_or_default();
        let histogram = self.settings.histogram.is_some();
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
                        settings: self.settings,
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
        Ok(Tracer::new(
            ready, count_by, histogram, reader, batch_rx, stop, shared,
        ))
    }
}
