//! Waits for the ring buffers' wake-ups.
//!
//! libbpf's own poll is level-triggered: it returns at once while any record
//! is pending. Under load a record is always pending by the time a pass ends,
//! so the reader would spin through passes of a few events each, waking the
//! consumer thread for every one. Edge-triggered, a wait ends only when a
//! producer wakes the reader (as a ring's pending data crosses the wake-up
//! threshold) or the drain interval runs out.

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

pub(crate) struct RingWaiter {
    epoll: OwnedFd,
}

impl RingWaiter {
    pub fn new<F: AsFd>(rings: &[F]) -> io::Result<RingWaiter> {
        // SAFETY: epoll_create1 returns a new descriptor or -1.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a descriptor we own from here on.
        let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
        for ring in rings {
            let mut ev = libc::epoll_event {
                events: (libc::EPOLLIN | libc::EPOLLET) as u32,
                u64: 0,
            };
            let ring = ring.as_fd().as_raw_fd();
            // SAFETY: both descriptors are open; `ev` outlives the call.
            if unsafe { libc::epoll_ctl(fd, libc::EPOLL_CTL_ADD, ring, &mut ev) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(RingWaiter { epoll })
    }

    /// Until a producer wakes the reader, or `timeout`. An interrupted wait
    /// just ends early: the pass that follows does the work either way.
    pub fn wait(&self, timeout: Duration) {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 8];
        let ms = timeout.as_millis().clamp(1, i32::MAX as u128) as i32;
        // SAFETY: `events` has room for the 8 entries the call may write.
        unsafe { libc::epoll_wait(self.epoll.as_raw_fd(), events.as_mut_ptr(), 8, ms) };
    }
}
