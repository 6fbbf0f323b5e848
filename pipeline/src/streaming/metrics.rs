//! Latency figures of the streaming job, measured with the wall clock: alert latency (Kafka
//! timestamp of the triggering record -> its row acknowledged by MongoDB), window latency (final
//! row emitted -> acknowledged by every sink) and sink write time (per batch, and per batch that
//! carried a trigger's rows).
//!
//! Each is a fixed-size log-linear histogram (64 sub-buckets per power of two of microseconds,
//! under 1.6 % error), so memory stays bounded however long the job runs.

use std::fmt;

/// Sub-buckets per power of two.
const SUB: usize = 64;
/// Powers of two covered: 2^40 µs is about 12 days.
const POWERS: usize = 40;

/// A bounded histogram of durations in microseconds.
#[derive(Clone)]
pub struct Histogram {
    counts: Box<[u64]>,
    n: u64,
    max_us: u64,
    sum_us: u128,
}

impl fmt::Debug for Histogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.summary())
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; SUB * (POWERS + 1)].into_boxed_slice(),
            n: 0,
            max_us: 0,
            sum_us: 0,
        }
    }
}

fn bucket(us: u64) -> usize {
    if us < SUB as u64 {
        return us as usize;
    }
    let power = 63 - us.leading_zeros() as usize; // >= 6
    let shift = power - 6;
    let sub = ((us >> shift) as usize) - SUB; // 0..64
    ((power - 5) * SUB + sub).min(SUB * (POWERS + 1) - 1)
}

fn bucket_low(b: usize) -> u64 {
    if b < SUB {
        return b as u64;
    }
    let power = b / SUB + 5;
    let sub = (b % SUB) as u64;
    (SUB as u64 + sub) << (power - 6)
}

impl Histogram {
    /// Records one duration in microseconds (negative durations, from clock skew, count as 0).
    pub fn record_us(&mut self, us: i64) {
        let us = us.max(0) as u64;
        self.counts[bucket(us)] += 1;
        self.n += 1;
        self.max_us = self.max_us.max(us);
        self.sum_us += u128::from(us);
    }

    /// Records one duration in milliseconds.
    pub fn record_ms(&mut self, ms: i64) {
        self.record_us(ms.saturating_mul(1000));
    }

    /// Samples recorded.
    pub fn count(&self) -> u64 {
        self.n
    }

    /// The `q` quantile (0..=1), microseconds; the lower edge of its bucket, 0 when empty.
    pub fn quantile_us(&self, q: f64) -> u64 {
        if self.n == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.n as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (b, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return bucket_low(b).min(self.max_us);
            }
        }
        self.max_us
    }

    /// Adds another histogram's samples.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
        self.n += other.n;
        self.max_us = self.max_us.max(other.max_us);
        self.sum_us += other.sum_us;
    }

    /// p50, p99 and max in milliseconds.
    pub fn summary(&self) -> LatencySummary {
        let ms = |us: u64| us as f64 / 1000.0;
        LatencySummary {
            count: self.n,
            p50_ms: ms(self.quantile_us(0.50)),
            p99_ms: ms(self.quantile_us(0.99)),
            max_ms: ms(self.max_us),
        }
    }
}

/// p50 / p99 / max of one measure.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LatencySummary {
    /// Samples.
    pub count: u64,
    /// Median, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile, milliseconds.
    pub p99_ms: f64,
    /// Largest, milliseconds.
    pub max_ms: f64,
}

impl fmt::Display for LatencySummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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

/// The job's latency measures.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    /// Kafka timestamp of a record that raised an alert -> the alert row acknowledged by MongoDB.
    pub alert_latency: Histogram,
    /// A final window row emitted by the engine -> acknowledged by every sink.
    pub window_latency: Histogram,
    /// Time to write one batch to every sink.
    pub sink_write: Histogram,
    /// Time to write the batches that carried a trigger's partial rows.
    pub trigger_write: Histogram,
}

impl Metrics {
    /// Adds another set of measures.
    pub fn merge(&mut self, other: &Metrics) {
        self.alert_latency.merge(&other.alert_latency);
        self.window_latency.merge(&other.window_latency);
        self.sink_write.merge(&other.sink_write);
        self.trigger_write.merge(&other.trigger_write);
    }

    /// The summaries.
    pub fn report(&self) -> MetricsReport {
        MetricsReport {
            alert_latency: self.alert_latency.summary(),
            window_latency: self.window_latency.summary(),
            sink_write: self.sink_write.summary(),
            trigger_write: self.trigger_write.summary(),
        }
    }
}

/// Summaries of [`Metrics`], for logs and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct MetricsReport {
    /// See [`Metrics::alert_latency`].
    pub alert_latency: LatencySummary,
    /// See [`Metrics::window_latency`].
    pub window_latency: LatencySummary,
    /// See [`Metrics::sink_write`].
    pub sink_write: LatencySummary,
    /// See [`Metrics::trigger_write`].
    pub trigger_write: LatencySummary,
}

impl fmt::Display for MetricsReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "alert latency {}; window latency {}; sink write {}; trigger write {}",
            self.alert_latency, self.window_latency, self.sink_write, self.trigger_write
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves quantiles fall within the bucket error of the true values and max is exact.
    #[test]
    fn quantiles_are_close() {
        let mut h = Histogram::default();
        for us in 1..=10_000i64 {
            h.record_us(us * 100);
        }
        let p50 = h.quantile_us(0.5) as f64;
        let p99 = h.quantile_us(0.99) as f64;
        assert!((p50 - 500_000.0).abs() / 500_000.0 < 0.02, "{p50}");
        assert!((p99 - 990_000.0).abs() / 990_000.0 < 0.02, "{p99}");
        assert_eq!(h.summary().max_ms, 1000.0);
        assert_eq!(h.count(), 10_000);
        let mut m = Histogram::default();
        m.merge(&h);
        m.record_us(-5);
        assert_eq!(m.count(), 10_001);
        assert_eq!(Histogram::default().quantile_us(0.5), 0);
        for us in [0u64, 1, 63, 64, 65, 127, 128, 1 << 20, u64::MAX >> 1] {
            assert!(bucket_low(bucket(us)) <= us, "{us}");
        }
    }
}
