//! Parsers for option values: each refuses what the run could not use, so a
//! mistake is a usage error naming the option before anything is attached.

use std::time::Duration;

/// The longest `--duration` or `--interval`: a year is more than any run
/// needs, and far from where adding it to the clock could overflow.
pub const MAX_SECONDS: u64 = 365 * 24 * 3600;

pub fn parse_seconds(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("'{s}' is not a number of seconds"))?;
    let duration = Duration::try_from_secs_f64(secs)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("'{s}' is not a positive number of seconds"))?;
    if duration > Duration::from_secs(MAX_SECONDS) {
        return Err(format!(
            "'{s}' is more than a year: at most {MAX_SECONDS} seconds"
        ));
    }
    Ok(duration)
}

pub fn parse_port(s: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(0) | Err(_) => Err("port must be 1 to 65535".into()),
        Ok(port) => Ok(port),
    }
}

/// A snap length: bytes of UDP payload, 0 to a whole datagram's.
pub fn parse_snaplen(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(n) if n <= udptrace::MAX_SNAPLEN => Ok(n),
        _ => Err(format!(
            "snap length must be 0 to {} bytes",
            udptrace::MAX_SNAPLEN
        )),
    }
}

/// A ring buffer's size: bytes, or with a K or M suffix; a power of two of at least 4 KiB.
pub fn parse_ring_size(s: &str) -> Result<u32, String> {
    let (digits, unit) = match s.strip_suffix(['K', 'k']) {
        Some(d) => (d, 1u64 << 10),
        None => match s.strip_suffix(['M', 'm']) {
            Some(d) => (d, 1 << 20),
            None => (s, 1),
        },
    };
    match digits.parse::<u64>().map(|n| n * unit) {
        Ok(n) if n.is_power_of_two() && (4096..=1 << 30).contains(&n) => Ok(n as u32),
        _ => Err("a ring buffer is a power of two of 4K to 1024M bytes".into()),
    }
}

/// Where the kernel's `pid_max` cannot be read: the most it can be set to.
const PID_MAX_LIMIT: u32 = 4 << 20;

/// The kernel's `kernel.pid_max`: no process id reaches it.
fn pid_max() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(PID_MAX_LIMIT)
}

pub fn parse_pid(s: &str) -> Result<u32, String> {
    pid_in_range(s, pid_max())
}

/// A process id below `pid_max`, the bound the kernel gives ids.
fn pid_in_range(s: &str, pid_max: u32) -> Result<u32, String> {
    let bad = || format!("a process id is 1 to {} (kernel.pid_max)", pid_max - 1);
    match s.parse::<u32>() {
        Ok(pid) if pid > 0 && pid < pid_max => Ok(pid),
        _ => Err(bad()),
    }
}

/// `--top N`: a table of no rows is no answer.
pub fn parse_top(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) | Err(_) => Err(format!("'{s}' is not a number of rows (1 or more)")),
        Ok(n) => Ok(n),
    }
}

/// Each item once, in the order first given (`-e send,send` is `-e send`).
pub fn unique<T: PartialEq + Copy>(items: &[T]) -> Vec<T> {
    let mut seen = Vec::with_capacity(items.len());
    for &item in items {
        if !seen.contains(&item) {
            seen.push(item);
        }
    }
    seen
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use proptest::prelude::*;

    use super::*;

    /// Few cases: these run in CI on every change, in a few seconds.
    fn config() -> ProptestConfig {
        ProptestConfig::with_cases(512)
    }

    /// Text that looks like a number often enough to reach the corners.
    fn number_like() -> impl Strategy<Value = String> {
        prop_oneof![
            "\\PC*",
            "[-+]?[0-9]{0,25}(\\.[0-9]{0,12})?([eE][-+]?[0-9]{1,4})?",
            "[-+]?(inf|infinity|nan|NaN|INF)",
        ]
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn any_text_is_seconds_the_clock_can_add_or_an_error(s in number_like()) {
            if let Ok(d) = parse_seconds(&s) {
                prop_assert!(!d.is_zero() && d <= Duration::from_secs(MAX_SECONDS));
                prop_assert!(Instant::now().checked_add(d).is_some());
            }
        }

        #[test]
        fn any_number_of_seconds_round_trips_or_is_refused(secs in any::<f64>()) {
            let parsed = parse_seconds(&secs.to_string());
            let usable = secs.is_finite() && secs >= 1e-9 && secs <= MAX_SECONDS as f64;
            if usable {
                let d = parsed.unwrap();
                prop_assert!((d.as_secs_f64() - secs).abs() <= 1e-9 + secs * 1e-15, "{secs} -> {d:?}");
            } else if !(secs > 0.0 && secs < 1e-9) {
                // Below a nanosecond the duration rounds either way.
                prop_assert!(parsed.is_err(), "{} accepted", secs);
            }
        }

        #[test]
        fn ports_round_trip(port in 1u16..) {
            prop_assert_eq!(parse_port(&port.to_string()), Ok(port));
        }

        #[test]
        fn any_text_is_a_port_or_an_error(s in number_like()) {
            match parse_port(&s) {
                Ok(port) => prop_assert_eq!(Ok(port), s.parse::<u16>()),
                Err(_) => prop_assert!(!matches!(s.parse::<u16>(), Ok(1..))),
            }
        }

        #[test]
        fn pids_are_below_pid_max(s in number_like(), pid_max in 2u32..=PID_MAX_LIMIT) {
            if let Ok(pid) = pid_in_range(&s, pid_max) {
                prop_assert!(pid > 0 && pid < pid_max);
                prop_assert_eq!(s.parse::<u32>(), Ok(pid));
            }
        }

        #[test]
        fn pids_round_trip(pid_max in 2u32..=PID_MAX_LIMIT, pick in any::<u32>()) {
            let pid = 1 + pick % (pid_max - 1);
            prop_assert_eq!(pid_in_range(&pid.to_string(), pid_max), Ok(pid));
            prop_assert!(pid_in_range(&pid_max.to_string(), pid_max).is_err());
        }

        #[test]
        fn any_text_is_some_rows_or_an_error(s in number_like()) {
            if let Ok(n) = parse_top(&s) {
                prop_assert!(n > 0);
                prop_assert_eq!(s.parse::<usize>(), Ok(n));
            }
        }

        #[test]
        fn unique_keeps_each_item_once_in_first_order(items in proptest::collection::vec(0u8..6, 0..20)) {
            let once = unique(&items);
            let mut expected = Vec::new();
            for item in &items {
                if !expected.contains(item) {
                    expected.push(*item);
                }
            }
            prop_assert_eq!(once, expected);
        }
    }
}
