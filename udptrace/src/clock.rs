//! Converts the kernel's CLOCK_MONOTONIC timestamps to wall-clock time.

use std::mem::MaybeUninit;

fn now_ns(clock: libc::clockid_t) -> i64 {
    let mut ts = MaybeUninit::<libc::timespec>::uninit();
    // SAFETY: clock_gettime writes a timespec; these clocks always exist on Linux.
    let ts = unsafe {
        libc::clock_gettime(clock, ts.as_mut_ptr());
        ts.assume_init()
    };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

/// Now, on the clock the kernel stamps events with (bpf_ktime_get_ns).
pub fn monotonic_ns() -> i64 {
    now_ns(libc::CLOCK_MONOTONIC)
}

/// Nanoseconds to add to a CLOCK_MONOTONIC reading to get ns since the epoch.
/// Takes the tightest of several monotonic/realtime/monotonic brackets, so the
/// error is at most half the shortest bracket (well under a microsecond).
pub fn monotonic_to_wall_offset_ns() -> i64 {
    let mut best = (i64::MAX, 0);
    for _ in 0..16 {
        let before = now_ns(libc::CLOCK_MONOTONIC);
        let wall = now_ns(libc::CLOCK_REALTIME);
        let after = now_ns(libc::CLOCK_MONOTONIC);
        let width = after - before;
        if width < best.0 {
            best = (width, wall - (before + width / 2));
        }
    }
    best.1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_maps_monotonic_now_to_wall_now() {
        let offset = monotonic_to_wall_offset_ns();
        let wall = now_ns(libc::CLOCK_MONOTONIC) + offset;
        let real = now_ns(libc::CLOCK_REALTIME);
        assert!((real - wall).abs() < 1_000_000, "off by {} ns", real - wall);
    }
}
