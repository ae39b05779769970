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
