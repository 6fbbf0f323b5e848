//! Throughput over simulated time: per bucket of simulated time, the records offered (produced
//! to the log, by produce time) and the records processed (their output acknowledged by every
//! sink, as the durable checkpoint that covers them proves, by the simulated instant it became
//! durable). The report draws both; a pipeline that keeps up draws two curves on top of each
//! other, one that falls behind draws the processed curve below and to the right.

use pipeline::time::Millis;
use serde::Serialize;

/// Width of a bucket: one simulated minute.
pub const BUCKET_MS: Millis = 60_000;

/// One bucket of simulated time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ThroughputSample {
    /// The bucket's first simulated instant, ms since the epoch.
    pub start_ms: Millis,
    /// Records produced in the bucket.
    pub offered: u64,
    /// Records whose output every sink acknowledged in the bucket.
    pub processed: u64,
}

/// Offered and processed records by bucket of simulated time, from the run's first instant.
///
/// Bounded by the run's span: one sample per simulated minute (and the few minutes after the
/// last record that the final flush takes).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ThroughputSeries {
    origin_ms: Millis,
    samples: Vec<ThroughputSample>,
}

impl ThroughputSeries {
    /// An empty series whose first bucket starts at `origin_ms`.
    pub fn new(origin_ms: Millis) -> Self {
        ThroughputSeries {
            origin_ms,
            samples: Vec::new(),
        }
    }

    /// The bucket holding `at` (instants before the origin fall in the first one).
    fn bucket(&mut self, at: Millis) -> &mut ThroughputSample {
        let i = ((at - self.origin_ms).max(0) / BUCKET_MS) as usize;
        while self.samples.len() <= i {
            let start_ms = self.origin_ms + self.samples.len() as Millis * BUCKET_MS;
            self.samples.push(ThroughputSample {
                start_ms,
                ..ThroughputSample::default()
            });
        }
        &mut self.samples[i]
    }

    /// `n` records produced at `at`.
    pub fn offer(&mut self, at: Millis, n: u64) {
        self.bucket(at).offered += n;
    }

    /// `n` records whose output was acknowledged at `at`.
    pub fn process(&mut self, at: Millis, n: u64) {
        if n > 0 {
            self.bucket(at).processed += n;
        }
    }

    /// The buckets, in time order, none missing between the first and the last.
    pub fn samples(&self) -> &[ThroughputSample] {
        &self.samples
    }

    /// Records offered in all.
    pub fn offered(&self) -> u64 {
        self.samples.iter().map(|s| s.offered).sum()
    }

    /// Records processed in all.
    pub fn processed(&self) -> u64 {
        self.samples.iter().map(|s| s.processed).sum()
    }
}

/// Counts the records newly covered by checkpoint positions: per partition, what lies past the
/// highest position already counted. A restart from an older checkpoint moves no high-water
/// mark back, so a record replayed after a crash is counted once.
#[derive(Clone, Debug)]
pub struct Covered<K: Ord> {
    counted: std::collections::BTreeMap<K, i64>,
}

impl<K: Ord> Default for Covered<K> {
    fn default() -> Self {
        Covered {
            counted: std::collections::BTreeMap::new(),
        }
    }
}

impl<K: Ord + Clone> Covered<K> {
    /// Records past the marks in `positions` (the offset of the last record covered, per
    /// partition, offsets starting at `first_offset`); the marks move up to them.
    pub fn advance<'a>(
        &mut self,
        positions: impl IntoIterator<Item = (&'a K, i64)>,
        first_offset: impl Fn(&K) -> i64,
    ) -> u64
    where
        K: 'a,
    {
        let mut n = 0;
        for (k, last) in positions {
            let mark = self
                .counted
                .entry(k.clone())
                .or_insert_with(|| first_offset(k) - 1);
            if last > *mark {
                n += (last - *mark) as u64;
                *mark = last;
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves records land in the bucket of their instant and none are lost between buckets.
    #[test]
    fn buckets_by_minute() {
        let mut s = ThroughputSeries::new(1_000);
        s.offer(1_000, 3);
        s.offer(61_000, 2);
        s.process(130_999, 4);
        s.process(500, 1);
        let got: Vec<(Millis, u64, u64)> = s
            .samples()
            .iter()
            .map(|x| (x.start_ms, x.offered, x.processed))
            .collect();
        assert_eq!(got, vec![(1_000, 3, 1), (61_000, 2, 0), (121_000, 0, 4)]);
        assert_eq!((s.offered(), s.processed()), (5, 5));
    }

    // Proves a checkpoint older than one already counted (a restart) counts nothing twice.
    #[test]
    fn covered_counts_each_record_once() {
        let mut c: Covered<&str> = Covered::default();
        let first = |_: &&str| 0;
        assert_eq!(c.advance([(&"a", 4), (&"b", 0)], first), 6);
        assert_eq!(c.advance([(&"a", 2)], first), 0);
        assert_eq!(c.advance([(&"a", 9), (&"b", 0)], first), 5);
    }
}
