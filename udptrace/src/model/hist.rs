//! Histograms (`udptrace latency`): each received datagram's time in its
//! socket's receive queue, or each datagram's size, added up in the kernel
//! into power-of-two buckets under a count's key (bpf/hist.h).

use std::fmt;

use crate::bpf::types::{hist_buckets, hist_value};
use crate::count::CountValue;

/// Buckets per histogram: bucket 0 holds values below 1 unit, bucket k >= 1
/// values in [2^(k-1), 2^k), the last also everything above.
pub const HIST_BUCKETS: usize = hist_buckets::HIST_BUCKETS.0 as usize;

/// What a histogram adds up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Histogram {
    /// Each received datagram's time in its socket's receive queue, from UDP
    /// queueing it to the receive that takes it off: buckets of
    /// microseconds, sums and maximums in nanoseconds. A peek is not a
    /// receive; a datagram dropped or left queued at close waited for none.
    QueueWait,
    /// Each datagram's size in bytes (sends and receives that carried data,
    /// as the event kinds select).
    Size,
}

impl Histogram {
    pub(crate) fn wire(self) -> u8 {
        match self {
            Self::QueueWait => 1, // HIST_WAIT
            Self::Size => 2,      // HIST_SIZE
        }
    }

    /// The unit of the buckets' bounds.
    pub fn unit(self) -> &'static str {
        match self {
            Self::QueueWait => "usecs",
            Self::Size => "bytes",
        }
    }
}

impl fmt::Display for Histogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Self::QueueWait => "receive-queue wait",
            Self::Size => "datagram size",
        })
    }
}

/// One key's histogram, summed over the CPUs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistRow {
    pub key: Vec<CountValue>,
    pub count: u64,
    /// In the value's own unit: nanoseconds for waits, bytes for sizes.
    pub sum: u64,
    pub max: u64,
    /// Non-cumulative counts; bucket `i` ends below [`bucket_upper_bound`]`(i)`.
    pub buckets: [u64; HIST_BUCKETS],
}

/// Where bucket `i` ends (exclusive), in the bucket unit: 2^i.
pub fn bucket_upper_bound(i: usize) -> u64 {
    1u64 << i.min(63)
}

impl HistRow {
    pub(crate) fn from_value(key: Vec<CountValue>, v: &hist_value) -> HistRow {
        HistRow {
            key,
            count: v.count,
            sum: v.sum,
            max: v.max,
            buckets: v.buckets,
        }
    }

    /// Adds `other`'s counts (the same key, another CPU or read).
    pub fn merge(&mut self, other: &HistRow) {
        self.count += other.count;
        self.sum += other.sum;
        self.max = self.max.max(other.max);
        for (a, b) in self.buckets.iter_mut().zip(other.buckets) {
            *a += b;
        }
    }

    /// The upper bound of the bucket that holds quantile `q` (0..=1), in the
    /// bucket unit, as Prometheus's `histogram_quantile` would bound it; never
    /// above the maximum seen (`max_in_unit`). 0 for an empty row.
    pub fn quantile_bound(&self, q: f64, max_in_unit: u64) -> u64 {
        match self.quantile_bucket(q) {
            Some(i) => bucket_upper_bound(i).min(max_in_unit.max(1)),
            None => 0,
        }
    }

    /// The bucket that holds quantile `q` (0..=1); None for an empty row.
    pub fn quantile_bucket(&self, q: f64) -> Option<usize> {
        if self.count == 0 {
            return None;
        }
        // In whole parts per million: 0.9 of 70 is rank 63, not 64.
        let ppm = (q.clamp(0.0, 1.0) * 1e6).round() as u128;
        let rank = (u128::from(self.count) * ppm)
            .div_ceil(1_000_000)
            .clamp(1, u128::from(self.count)) as u64;
        let mut seen = 0;
        self.buckets.iter().position(|n| {
            seen += n;
            seen >= rank
        })
    }
}

/// Sorts rows by count, descending, then by key.
pub fn sort_hist_rows(rows: &mut [HistRow]) {
    rows.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.key.cmp(&b.key)));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(buckets: &[(usize, u64)]) -> HistRow {
        let mut r = HistRow {
            key: Vec::new(),
            count: 0,
            sum: 0,
            max: 0,
            buckets: [0; HIST_BUCKETS],
        };
        for &(i, n) in buckets {
            r.buckets[i] = n;
            r.count += n;
        }
        r
    }

    #[test]
    fn quantiles_are_bucket_bounds_capped_by_the_maximum() {
        // 90 waits in [1, 2) us, 9 in [1024, 2048), 1 in [16384, 32768).
        let r = row(&[(1, 90), (11, 9), (15, 1)]);
        assert_eq!(r.quantile_bound(0.5, 20_000), 2);
        assert_eq!(r.quantile_bound(0.9, 20_000), 2);
        assert_eq!(r.quantile_bound(0.99, 20_000), 2048);
        assert_eq!(r.quantile_bound(1.0, 20_000), 20_000);
        assert_eq!(row(&[]).quantile_bound(0.5, 0), 0);
        // 0.9 of 70 is the 63rd: in the first bucket, not the second.
        assert_eq!(row(&[(1, 63), (2, 7)]).quantile_bucket(0.9), Some(1));
    }
}
