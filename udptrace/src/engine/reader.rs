//! The reader thread: it loads and attaches the programs, then drains the
//! per-CPU ring buffers and hands decoded events to the [`Tracer`] in
//! batches, in time order.
//!
//! [`Tracer`]: crate::Tracer

use std::cell::RefCell;
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;

use libbpf_rs::{MapHandle, RingBuffer, RingBufferBuilder};

use crate::backend::{self, Backend};
use crate::cgroups::{CgroupInfo, CgroupResolver};
use crate::event::Event;
use crate::merge::{TimeMerge, SETTLE};
use crate::settings::Settings;
use crate::stats::{Shared, KINDS};
use crate::wakeup::RingWaiter;
use crate::{clock, load, Error};

/// Decoded batches in flight between the reader thread and the consumer, and
/// the most events in one. When the consumer falls this far behind (at most
/// 16 x 4096 events, about 8 MiB), the reader stops draining, the ring buffers
/// fill and the kernel counts what it cannot store as lost.
pub(crate) const BATCHES_IN_FLIGHT: usize = 16;
const MAX_BATCH: usize = 4096;

/// What the reader thread hands back once every probe is attached.
pub(crate) struct Ready {
    /// What runs: see [`Plan::effective_backend`](crate::backend::Plan::effective_backend).
    pub backend: Backend,
    pub stats_map: MapHandle,
    pub counts_map: MapHandle,
    pub count_slots_map: MapHandle,
    pub hists_map: MapHandle,
    pub sock_states_map: MapHandle,
    pub probes: Vec<String>,
    /// The programs whose skipped runs may be missing events.
    pub skippable: Vec<OwnedFd>,
    /// The kprobe calls in flight, whose return probe may never run.
    pub calls_map: MapHandle,
}

pub(crate) struct ReaderCtx {
    pub settings: Settings,
    pub backend: Backend,
    pub cgroup_root: PathBuf,
    pub shared: Arc<Shared>,
    pub stop: Arc<AtomicBool>,
}

/// Names events' cgroups: most events in a row share a cgroup, so the last
/// one is kept beside the resolver's cache.
#[derive(Default)]
struct CgroupNames {
    resolver: CgroupResolver,
    last: Option<(u64, Option<Arc<CgroupInfo>>)>,
}

impl CgroupNames {
    fn resolve(&mut self, id: u64) -> Option<Arc<CgroupInfo>> {
        match &self.last {
            Some((last, info)) if *last == id => info.clone(),
            _ => {
                let info = self.resolver.resolve(id);
                self.last = Some((id, info.clone()));
                info
            }
        }
    }
}

impl ReaderCtx {
    pub fn run(self, ready_tx: SyncSender<Result<Ready, Error>>, batch_tx: SyncSender<Vec<Event>>) {
        let mut storage = MaybeUninit::uninit();
        let plan = load::plan(&self.settings, self.backend);
        let (skel, rings) = match load::load(&self.settings, &mut storage, &plan) {
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
        let cgroups = RefCell::new(CgroupNames::default());
        let captures = self.settings.snaplen > 0;
        let decode = |data: &[u8]| {
            match Event::decode(data, offset, captures) {
                Some(mut ev) => {
                    ev.cgroup_info = cgroups.borrow_mut().resolve(ev.cgroup);
                    merge.borrow_mut().push(ev)
                }
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
            .and_then(|stats| {
                let counts = MapHandle::try_from(&skel.maps.counts)?;
                let slots = MapHandle::try_from(&skel.maps.count_slots)?;
                Ok((
                    stats,
                    (counts, slots, MapHandle::try_from(&skel.maps.hists)?),
                    MapHandle::try_from(&skel.maps.sock_states)?,
                    MapHandle::try_from(&skel.maps.args_by_call)?,
                ))
            })
            .map_err(Error::bpf("opening the stats, count and socket maps"));
        let (ring, waiter) = match (ring, maps) {
            (
                Ok(ring),
                Ok((
                    stats_map,
                    (counts_map, count_slots_map, hists_map),
                    sock_states_map,
                    calls_map,
                )),
            ) => {
                let names = probes.iter().map(|p| p.name.clone()).collect();
                let skippable = match probes
                    .iter()
                    .filter_map(|p| p.skippable.as_ref())
                    .map(|fd| fd.try_clone())
                    .collect::<Result<Vec<_>, _>>()
                {
                    Ok(fds) => fds,
                    Err(e) => {
                        let _ =
                            ready_tx.send(Err(Error::System(format!("keeping the programs: {e}"))));
                        return;
                    }
                };
                if ready_tx
                    .send(Ok(Ready {
                        backend: plan.effective_backend(),
                        stats_map,
                        counts_map,
                        count_slots_map,
                        hists_map,
                        sock_states_map,
                        probes: names,
                        skippable,
                        calls_map,
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
                waiter.wait(self.settings.drain_interval);
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

#[cfg(test)]
mod tests {
    use super::{into_batches, MAX_BATCH};
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
}
