//! Per-partition read state and the canonical merge.
//!
//! Records are handed to the engine in one order that depends only on the partitions' contents,
//! never on how their reads interleave: the smallest head by (Kafka timestamp, key, topic,
//! partition, offset) first, and only while no partition that may still deliver an earlier
//! record holds the merge back. That is the event-time alignment of Kafka Streams (records of a
//! task's partitions processed in timestamp order, waiting for empty partitions): with it a
//! backlog, a catch-up or a restart hands the engine exactly the sequence a single produce-ordered
//! stream would, so the engine's watermark, and with it which records are late and every final
//! row, equals `pipeline replay`'s whatever the partition count and read order.
//!
//! A partition holds the merge back when it has nothing buffered and may still have earlier
//! records: it is not caught up (its next offset is below its known end) and not idle. A
//! partition whose end is unknown stops holding it back after `idle_partition_ms` without a
//! record (Flink's `withIdleness`); the caught-up test depends only on offsets, so it is the same
//! in every run.

use std::collections::VecDeque;

use crate::engine::{RawRecord, SourcePosition};
use crate::model::Topic;
use crate::time::Millis;

use super::PartitionId;

/// The newest timestamp seen per topic, to tell how far out of order a topic's records come:
/// the driver's hand-over to the engine, and a replay's producer reading Kafka's
/// acknowledgements.
#[derive(Clone, Copy, Debug)]
pub struct NewestPerTopic([Millis; 4]);

impl Default for NewestPerTopic {
    fn default() -> Self {
        NewestPerTopic([Millis::MIN; 4])
    }
}

impl NewestPerTopic {
    /// How far `timestamp_ms` trails the newest timestamp of `topic` seen before it (0 when it
    /// is the newest), noting it.
    pub fn behind(&mut self, topic: Topic, timestamp_ms: Millis) -> Millis {
        let newest = &mut self.0[topic as usize];
        if timestamp_ms < *newest {
            *newest - timestamp_ms
        } else {
            *newest = timestamp_ms;
            0
        }
    }
}

/// One buffered record: where its bytes lie in the partition's arena.
#[derive(Clone, Copy, Debug)]
struct Entry {
    offset: i64,
    timestamp_ms: Millis,
    start: usize,
    key_len: usize,
    value_len: usize,
}

/// Below this many bytes an arena is not worth compacting.
const COMPACT_BYTES: usize = 1 << 16;

/// What the driver knows of one assigned partition.
#[derive(Debug)]
pub(super) struct PartitionState {
    pub id: PartitionId,
    /// Offset of the last record handed to the engine: what a checkpoint records.
    pub released: Option<i64>,
    /// Offset of the last record received (handed over or buffered).
    pub received: Option<i64>,
    /// The next offset the source will hand over, when it said so.
    pub next_offset: Option<i64>,
    /// The offset the partition's next record will get (its end), when known.
    pub end_offset: Option<i64>,
    /// Processing time at which the partition last delivered a record (or was assigned).
    pub last_record_ms: Millis,
    /// Highest Kafka timestamp handed to the engine.
    pub max_timestamp_ms: Option<Millis>,
    /// Records received here.
    pub records_in: u64,
    /// Whether the driver asked the source to pause it because its buffer is full.
    pub buffer_full: bool,
    /// Whether the source was last told to pause it (and not to resume it since).
    pub paused_at_source: bool,
    records: VecDeque<Entry>,
    bytes: Vec<u8>,
    /// Key and value bytes of the records buffered (the arena may hold more, already released).
    live_bytes: usize,
}

impl PartitionState {
    pub fn new(id: PartitionId, released: Option<i64>, now: Millis) -> Self {
        PartitionState {
            id,
            released,
            received: released,
            next_offset: released.map(|r| r + 1),
            end_offset: None,
            last_record_ms: now,
            max_timestamp_ms: None,
            records_in: 0,
            buffer_full: false,
            paused_at_source: false,
            records: VecDeque::new(),
            bytes: Vec::new(),
            live_bytes: 0,
        }
    }

    /// Records buffered, waiting for the merge.
    pub fn buffered(&self) -> usize {
        self.records.len()
    }

    /// Key and value bytes of the records buffered.
    pub fn buffered_bytes(&self) -> usize {
        self.live_bytes
    }

    /// Whether the source has handed over everything the partition holds.
    pub fn caught_up(&self) -> bool {
        let next = self.next_offset.or(self.received.map(|r| r + 1));
        matches!((next, self.end_offset), (Some(n), Some(e)) if n >= e)
    }

    /// Whether the partition, having nothing buffered, may still deliver a record that sorts
    /// before what other partitions hold.
    pub fn holds_back(&self, now: Millis, idle_ms: u64) -> bool {
        if !self.records.is_empty() || self.caught_up() {
            return false;
        }
        // A known end ahead of the position means there is something to read: wait for it.
        // Without a known end, stop waiting after `idle_ms` of silence.
        self.end_offset.is_some() || now.saturating_sub(self.last_record_ms) < idle_ms as Millis
    }

    /// Whether a record at `offset` was received before (a redelivery).
    pub fn is_redelivery(&self, offset: i64) -> bool {
        self.received.is_some_and(|r| offset <= r)
    }

    pub fn note_received(&mut self, offset: i64, now: Millis) {
        self.received = Some(offset);
        self.next_offset = Some(self.next_offset.map_or(offset + 1, |n| n.max(offset + 1)));
        self.last_record_ms = now;
        self.records_in += 1;
    }

    pub fn note_released(&mut self, offset: i64, timestamp_ms: Millis) {
        debug_assert!(self.released.is_none_or(|r| r < offset));
        self.released = Some(offset);
        self.max_timestamp_ms = Some(
            self.max_timestamp_ms
                .map_or(timestamp_ms, |m| m.max(timestamp_ms)),
        );
    }

    /// Keeps a record for the merge.
    pub fn push(&mut self, rec: &RawRecord<'_>) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(rec.key);
        self.bytes.extend_from_slice(rec.value);
        self.live_bytes += rec.key.len() + rec.value.len();
        self.records.push_back(Entry {
            offset: rec.position.offset,
            timestamp_ms: rec.kafka_timestamp_ms,
            start,
            key_len: rec.key.len(),
            value_len: rec.value.len(),
        });
    }

    /// The sort key of the first buffered record.
    pub fn head(&self) -> Option<HeadKey<'_>> {
        let e = self.records.front()?;
        Some(HeadKey {
            timestamp_ms: e.timestamp_ms,
            key: &self.bytes[e.start..e.start + e.key_len],
            topic: self.id.0,
            partition: self.id.1,
            offset: e.offset,
        })
    }

    /// The first buffered record, as the engine takes it.
    pub fn front(&self) -> Option<RawRecord<'_>> {
        let e = self.records.front()?;
        Some(RawRecord {
            topic: self.id.0,
            key: &self.bytes[e.start..e.start + e.key_len],
            value: &self.bytes[e.start + e.key_len..e.start + e.key_len + e.value_len],
            kafka_timestamp_ms: e.timestamp_ms,
            position: SourcePosition {
                partition: self.id.1,
                offset: e.offset,
            },
        })
    }

    /// Drops the first buffered record, reclaiming the arena when it is worth it.
    ///
    /// The arena's capacity follows what is buffered: a catch-up's peak is not kept for the
    /// rest of the run (it would count in the job's memory as if still read ahead).
    pub fn pop(&mut self) {
        if let Some(e) = self.records.pop_front() {
            self.live_bytes -= e.key_len + e.value_len;
        }
        match self.records.front() {
            None => {
                self.bytes.clear();
                if self.bytes.capacity() > 16 * COMPACT_BYTES {
                    self.bytes.shrink_to(COMPACT_BYTES);
                }
                if self.records.capacity() > 4096 {
                    self.records.shrink_to(1024);
                }
            }
            Some(first) if first.start > COMPACT_BYTES && first.start > self.bytes.len() / 2 => {
                let shift = first.start;
                self.bytes.drain(..shift);
                for e in &mut self.records {
                    e.start -= shift;
                }
                if self.bytes.capacity() > 4 * self.bytes.len().max(COMPACT_BYTES) {
                    self.bytes
                        .shrink_to(2 * self.bytes.len().max(COMPACT_BYTES));
                }
            }
            Some(_) => {}
        }
    }

    /// Forgets everything buffered (the partition was revoked).
    pub fn clear(&mut self) {
        self.records.clear();
        self.bytes.clear();
        self.live_bytes = 0;
    }
}

/// The canonical order of records across partitions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct HeadKey<'a> {
    pub timestamp_ms: Millis,
    pub key: &'a [u8],
    pub topic: Topic,
    pub partition: i32,
    pub offset: i64,
}

/// The index of the partition whose head comes first, if any partition has a buffered record.
pub(super) fn first_head(parts: &[PartitionState]) -> Option<usize> {
    let mut best: Option<(usize, HeadKey<'_>)> = None;
    for (i, p) in parts.iter().enumerate() {
        if let Some(h) = p.head()
            && best.is_none_or(|(_, b)| h < b)
        {
            best = Some((i, h));
        }
    }
    best.map(|(i, _)| i)
}
