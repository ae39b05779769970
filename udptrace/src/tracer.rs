//! The tracer handle: events in time order from the reader thread, stopping,
//! and the stats and counts of the running tracer.

use std::mem;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::backend::Backend;
use crate::count::{CountField, CountRow};
use crate::count_table::CountTable;
use crate::event::Event;
use crate::hist::HistRow;
use crate::hist_table::HistTable;
use crate::reader::Ready;
use crate::sockets::{SocketInfo, SocketTable};
use crate::stats::{Shared, Stats, StatsReader};
use crate::Error;

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

/// A running tracer. Iterate it, or call [`recv_timeout`](Self::recv_timeout).
/// Dropping it detaches every probe.
pub struct Tracer {
    batches: Receiver<Vec<Event>>,
    /// The rest of the batch being handed out.
    pending: std::vec::IntoIter<Event>,
    stop: Arc<AtomicBool>,
    shared: Arc<Shared>,
    stats: StatsReader,
    counts: CountTable,
    hists: HistTable,
    sockets: SocketTable,
    reader: Option<JoinHandle<()>>,
    backend: Backend,
    probes: Vec<String>,
    finished: bool,
}

impl Tracer {
    /// The handle of a reader thread that has attached every probe.
    pub(crate) fn new(
        ready: Ready,
        count_by: Vec<CountField>,
        histogram: bool,
        reader: JoinHandle<()>,
        batches: Receiver<Vec<Event>>,
        stop: Arc<AtomicBool>,
        shared: Arc<Shared>,
    ) -> Tracer {
        Tracer {
            batches,
            pending: Vec::new().into_iter(),
            stop,
            stats: StatsReader::new(
                ready.stats_map,
                ready.skippable,
                ready.calls_map,
                shared.clone(),
            ),
            shared,
            hists: HistTable::new(ready.hists_map, histogram.then(|| count_by.clone())),
            counts: CountTable::new(ready.counts_map, ready.count_slots_map, count_by),
            sockets: SocketTable::new(ready.sock_states_map),
            reader: Some(reader),
            backend: ready.backend,
            probes: ready.probes,
            finished: false,
        }
    }

    /// The backend producing the events.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Every attached probe, e.g. `tp_btf/sock_send_length`, `cgroup/connect4`.
    pub fn probes(&self) -> &[String] {
        &self.probes
    }

    /// What the kernel cannot give this tracer's events, one line each
    /// (drop reasons before Linux 5.17); empty on current kernels.
    pub fn limits(&self) -> Vec<&'static str> {
        crate::features::limits_of(&self.probes)
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
    /// unsorted, one per key. An event counted meanwhile lands in this
    /// call's rows or the next one's.
    pub fn take_counts(&self) -> Result<Vec<CountRow>, Error> {
        self.counts.take_rows()
    }

    /// Histogram mode ([`TracerBuilder::histogram`](crate::TracerBuilder::histogram)):
    /// the histograms added up since the last call (or the start), unsorted,
    /// one per key. Receives whose wait is unknown are counted in
    /// [`Stats::wait_unknown`](crate::Stats::wait_unknown) instead.
    pub fn take_histograms(&self) -> Result<Vec<HistRow>, Error> {
        self.hists.take_rows()
    }

    /// The open sockets the kernel keeps state for: those created while
    /// tracing, those that existed when it began (where the mode seeds
    /// them: tracking sockets, packet events, drops, kprobes), and any seen
    /// sending or receiving. Their life is complete when
    /// [`track_sockets`](crate::TracerBuilder::track_sockets) is on.
    pub fn sockets(&self) -> Result<Vec<SocketInfo>, Error> {
        self.sockets.sockets()
    }
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

#[cfg(test)]
mod tests {
    #[test]
    fn tracer_can_move_between_threads() {
        fn assert_send<T: Send>() {}
        assert_send::<super::Tracer>();
    }
}
