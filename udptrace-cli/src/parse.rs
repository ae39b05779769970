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
