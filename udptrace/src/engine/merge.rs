//! Puts the events of the per-CPU ring buffers back in time order.
//!
//! Each CPU's ring is in order; together they are not. A drain pass reads
//! every ring to its end, so an event stamped well before the pass began
//! (each program writes its event within one short run) has been read by the
//! pass's end: those are released, sorted; newer ones wait for the next pass.

use std::time::Duration;

use crate::event::Event;

/// How much earlier than the start of a pass an event must be stamped to be
/// released by it: far longer than a BPF program runs, interrupts included.
pub(crate) const SETTLE: Duration = Duration::from_millis(2);

#[derive(Default)]
pub(crate) struct TimeMerge {
    held: Vec<Event>,
}

impl TimeMerge {
    /// An event read in the current pass, in any order.
    pub fn push(&mut self, event: Event) {
        self.held.push(event);
    }

    /// Events stamped before `horizon_ns`, oldest first; `None` releases all
    /// (the last pass). Equal stamps keep the order they were read in.
    pub fn release(&mut self, horizon_ns: Option<u64>) -> Vec<Event> {
        // Runs of ordered events, as the rings give them, sort in linear time.
        if !self.held.windows(2).all(|w| w[0].ts_ns <= w[1].ts_ns) {
            self.held.sort_by_key(|e| e.ts_ns);
        }
        let split = match horizon_ns {
            Some(h) => self.held.partition_point(|e| e.ts_ns < h),
            None => self.held.len(),
        };
        let rest = self.held.split_off(split);
        std::mem::replace(&mut self.held, rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::test_event;

    fn stamps(events: &[Event]) -> Vec<u64> {
        events.iter().map(|e| e.ts_ns).collect()
    }

    #[test]
    fn interleaves_rings_and_holds_back_recent_events() {
        let mut m = TimeMerge::default();
        // Ring 0, then ring 1, as one pass reads them.
        for ts in [10, 30, 50, 20, 40, 60] {
            m.push(test_event(ts));
        }
        assert_eq!(stamps(&m.release(Some(45))), [10, 20, 30, 40]);
        // Ring 0 yields an event stamped before the held ones.
        m.push(test_event(55));
        assert_eq!(stamps(&m.release(Some(100))), [50, 55, 60]);
        assert!(m.release(None).is_empty());
    }

    #[test]
    fn last_pass_releases_everything() {
        let mut m = TimeMerge::default();
        m.push(test_event(7));
        m.push(test_event(3));
        assert!(m.release(Some(3)).is_empty());
        assert_eq!(stamps(&m.release(None)), [3, 7]);
    }

    #[test]
    fn equal_stamps_keep_their_read_order() {
        let mut m = TimeMerge::default();
        let mut a = test_event(5);
        a.pid = 1;
        let mut b = test_event(5);
        b.pid = 2;
        m.push(a);
        m.push(b);
        let pids: Vec<u32> = m.release(None).iter().map(|e| e.pid).collect();
        assert_eq!(pids, [1, 2]);
    }
}
