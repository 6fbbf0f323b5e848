//! A bounded latency histogram: log-linear buckets over microseconds (32 sub-buckets per power
//! of two, so a reported percentile is within about 3 % of the true value), constant memory
//! however many samples arrive. The simulator's modelled latencies and the streaming job's
//! measured ones are both kept in it.

use serde::Serialize;

const SUB_BITS: u32 = 5;
const SUB: u64 = 1 << SUB_BITS;
const BUCKETS: usize = ((64 - SUB_BITS as usize) + 1) * SUB as usize;

/// Latency samples in microseconds.
#[derive(Clone, Debug)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max_us: u64,
    sum_us: u128,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
            max_us: 0,
            sum_us: 0,
        }
    }
}

fn bucket(v: u64) -> usize {
    if v < SUB {
        return v as usize;
    }
    let e = 63 - v.leading_zeros(); // >= SUB_BITS
    let sub = (v >> (e - SUB_BITS)) & (SUB - 1);
    ((e - SUB_BITS + 1) as u64 * SUB + sub) as usize
}

/// The largest value that falls in bucket `b`.
fn upper(b: usize) -> u64 {
    let b = b as u64;
    if b < SUB {
        return b;
    }
    let e = b / SUB + u64::from(SUB_BITS) - 1;
    let sub = b % SUB;
    let low = (1u64 << e) | (sub << (e - u64::from(SUB_BITS)));
    // Width less one first: the last bucket ends at u64::MAX.
    low + ((1u64 << (e - u64::from(SUB_BITS))) - 1)
}

impl std::fmt::Display for Percentiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.count == 0 {
            return f.write_str("n=0");
        }
        write!(
            f,
            "n={} p50={:.1}ms p99={:.1}ms max={:.1}ms",
            self.count, self.p50_ms, self.p99_ms, self.max_ms
        )
    }
}

/// Percentiles of a histogram, in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// Median, ms.
    pub p50_ms: f64,
    /// 95th percentile, ms.
    pub p95_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Largest, ms.
    pub max_ms: f64,
    /// Mean, ms.
    pub mean_ms: f64,
}

impl Histogram {
    /// Records one sample.
    pub fn record_us(&mut self, v: u64) {
        self.counts[bucket(v)] += 1;
        self.total += 1;
        self.max_us = self.max_us.max(v);
        self.sum_us += u128::from(v);
    }

    /// Records a duration that may be negative (clock skew between machines): it counts as 0.
    pub fn record_signed_us(&mut self, v: i64) {
        self.record_us(v.max(0) as u64);
    }

    /// Records a duration in milliseconds (negative counts as 0).
    pub fn record_ms(&mut self, ms: i64) {
        self.record_signed_us(ms.saturating_mul(1000));
    }

    /// Adds another histogram's samples.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.max_us = self.max_us.max(other.max_us);
        self.sum_us += other.sum_us;
    }

    /// Number of samples.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// Sum of every sample, microseconds.
    pub fn sum_us(&self) -> u128 {
        self.sum_us
    }

    /// For each bound (ascending, microseconds), the samples at most that bound, in one pass:
    /// a Prometheus histogram's cumulative buckets. A bucket counts below a bound only when its
    /// whole range is, so a sample within 1/32 under a bound may count above it.
    pub fn counts_at_most_us(&self, bounds_us: &[u64]) -> Vec<u64> {
        debug_assert!(bounds_us.is_sorted(), "bounds ascend");
        let mut out = Vec::with_capacity(bounds_us.len());
        let mut seen = 0;
        let mut b = 0;
        for &bound in bounds_us {
            while b < self.counts.len() && upper(b) <= bound {
                seen += self.counts[b];
                b += 1;
            }
            out.push(seen);
        }
        out
    }

    /// The value at quantile `q` (0-1), microseconds; 0 with no samples.
    pub fn quantile_us(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (b, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return upper(b).min(self.max_us);
            }
        }
        self.max_us
    }

    /// The usual percentiles, in milliseconds.
    pub fn percentiles(&self) -> Percentiles {
        let ms = |us: u64| us as f64 / 1000.0;
        Percentiles {
            count: self.total,
            p50_ms: ms(self.quantile_us(0.50)),
            p95_ms: ms(self.quantile_us(0.95)),
            p99_ms: ms(self.quantile_us(0.99)),
            max_ms: ms(self.max_us),
            mean_ms: if self.total == 0 {
                0.0
            } else {
                self.sum_us as f64 / self.total as f64 / 1000.0
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves bucket bounds contain their values and percentiles are within 1/32 of the truth.
    #[test]
    fn buckets_and_percentiles() {
        for v in [
            0u64,
            1,
            31,
            32,
            33,
            63,
            64,
            1000,
            123_456,
            9_999_999,
            u64::MAX / 4,
        ] {
            assert!(upper(bucket(v)) >= v, "{v}");
            assert!(upper(bucket(v)) - v <= v / 32 + 1, "{v}");
        }
        let mut h = Histogram::default();
        for v in 1..=10_000u64 {
            h.record_us(v);
        }
        let p50 = h.quantile_us(0.5) as f64;
        let p99 = h.quantile_us(0.99) as f64;
        assert!((p50 - 5000.0).abs() / 5000.0 < 0.04, "{p50}");
        assert!((p99 - 9900.0).abs() / 9900.0 < 0.04, "{p99}");
        assert_eq!(h.quantile_us(1.0), 10_000);
        assert_eq!(Histogram::default().percentiles().max_ms, 0.0);
        let mut m = Histogram::default();
        m.merge(&h);
        m.record_signed_us(-5);
        assert_eq!(m.count(), 10_001);
        assert_eq!(m.quantile_us(0.0), 0);
        assert_eq!(m.quantile_us(1.0), 10_000);
    }

    // Proves the cumulative counts at bounds: exact where a bound ends a bucket, never above the
    // true count, and at most one bucket (1/32) short of it.
    #[test]
    fn counts_at_most_bounds() {
        let mut h = Histogram::default();
        for v in [0u64, 5, 31, 1_000, 1_000, 20_000, 5_000_000] {
            h.record_us(v);
        }
        assert_eq!(
            h.counts_at_most_us(&[0, 31, 999, 1_023, 1_000_000, u64::MAX]),
            [1, 3, 3, 5, 6, 7]
        );
        assert_eq!(h.sum_us(), 5_022_036);
        let mut g = Histogram::default();
        for v in 1..=100_000u64 {
            g.record_us(v);
        }
        for bound in [1_000u64, 2_500, 10_000, 50_000] {
            let n = g.counts_at_most_us(&[bound])[0];
            assert!(n <= bound && n + bound / 32 + 1 >= bound, "{bound}: {n}");
        }
    }
}
