//! Sources: where records come from. One trait, with an in-memory partitioned log here (used by
//! the simulator and tests) and the Kafka consumer beside it.

#[cfg(feature = "services")]
pub mod kafka;
pub mod memory;

use std::future::Future;

use crate::model::Topic;
use crate::time::Millis;

/// Default of the Kafka consumer's read-ahead (`kafka::KafkaConfig::read_ahead_kbytes`): 1 MiB,
/// for memory. Throughput does not need more once the fetch backoff is short: `simulator bench
/// --latency-s 0 --catch-up-hours 6` (285,355 records) drained 31-42 k records/s with 1 MiB and
/// librdkafka's default 1 s `fetch.queue.backoff.ms`, 88-118 k with 1 MiB and 10 ms, and no more
/// with 4 or 16 MiB.
pub const DEFAULT_READ_AHEAD_KBYTES: u32 = 1024;

/// One record read from a source, owning its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceRecord {
    /// Topic.
    pub topic: Topic,
    /// Partition.
    pub partition: i32,
    /// Offset in the partition.
    pub offset: i64,
    /// Key bytes.
    pub key: Vec<u8>,
    /// Value bytes.
    pub value: Vec<u8>,
    /// Kafka timestamp (produce time).
    pub timestamp_ms: Millis,
}

/// A source that failed.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The backend could not be reached or refused.
    #[error("{source_name}: {detail}")]
    Backend {
        /// Which source.
        source_name: &'static str,
        /// What went wrong, and what to do.
        detail: String,
    },
}

/// A consumer of the four topics with explicit commits.
pub trait Source {
    /// Up to `max` records that are available now, in per-partition offset order.
    fn poll(&mut self, max: usize) -> impl Future<Output = Result<Vec<SourceRecord>, SourceError>>;

    /// Commits consumption up to and including these positions (topic, partition, offset):
    /// after a restart, reading resumes after them.
    fn commit(
        &mut self,
        positions: &[(Topic, i32, i64)],
    ) -> impl Future<Output = Result<(), SourceError>>;
}
