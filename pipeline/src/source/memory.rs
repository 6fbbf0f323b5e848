//! An in-memory partitioned log with offsets and committed consumer positions, like Kafka topics
//! read by one consumer group. Keys are assigned to partitions by a stable hash, so the records of
//! one entity stay in order. Records below the committed position are dropped (bounded
//! retention: the log holds only what is not yet committed).

use std::collections::VecDeque;
use std::future::{Future, ready};

use crate::engine::{RawRecord, SourcePosition};
use crate::model::Topic;
use crate::time::Millis;

use super::{Source, SourceError, SourceRecord};

/// Where one record's bytes lie in its partition's buffer.
#[derive(Clone, Copy, Debug, Default)]
struct Entry {
    start: usize,
    key_len: usize,
    value_len: usize,
    timestamp: Millis,
}

/// One partition: the retained records, their bytes in one buffer (no allocation per record),
/// and the offset of the first one.
#[derive(Debug, Default)]
struct Partition {
    topic_index: usize,
    id: i32,
    base: i64,
    data: Vec<u8>,
    records: VecDeque<Entry>,
    /// Next offset to read.
    position: i64,
    /// Committed offset (next to read after a restart).
    committed: i64,
}

/// Below this many bytes a partition's buffer is not worth compacting.
const COMPACT_BYTES: usize = 1 << 16;

impl Partition {
    fn end(&self) -> i64 {
        self.base + self.records.len() as i64
    }

    fn get(&self, offset: i64) -> Option<(&[u8], &[u8], Millis)> {
        let e = self
            .records
            .get(usize::try_from(offset - self.base).ok()?)?;
        let key = self.data.get(e.start..e.start + e.key_len)?;
        let value = self
            .data
            .get(e.start + e.key_len..e.start + e.key_len + e.value_len)?;
        Some((key, value, e.timestamp))
    }

    /// Hands up to `max` unread records to `f` in offset order; returns how many.
    fn consume(&mut self, max: usize, f: &mut impl FnMut(RawRecord<'_>)) -> usize {
        let topic = Topic::ALL[self.topic_index];
        let mut n = 0;
        while n < max {
            let Some((key, value, ts)) = self.get(self.position) else {
                break;
            };
            f(RawRecord {
                topic,
                key,
                value,
                kafka_timestamp_ms: ts,
                position: SourcePosition {
                    partition: self.id,
                    offset: self.position,
                },
            });
            self.position += 1;
            n += 1;
        }
        n
    }

    /// Drops records below the committed offset, reclaiming their bytes.
    fn truncate(&mut self) {
        while self.base < self.committed && self.records.pop_front().is_some() {
            self.base += 1;
        }
        match self.records.front() {
            None => self.data.clear(),
            Some(first) if first.start > COMPACT_BYTES && first.start > self.data.len() / 2 => {
                let shift = first.start;
                self.data.drain(..shift);
                for e in &mut self.records {
                    e.start -= shift;
                }
            }
            Some(_) => {}
        }
    }
}

/// An in-memory log of the four topics.
#[derive(Debug)]
pub struct MemoryLog {
    partitions_per_topic: i32,
    /// Topic-major: index = topic index * partitions_per_topic + partition.
    partitions: Vec<Partition>,
    /// Round-robin cursor over partitions, so polls are fair.
    cursor: usize,
}

/// The partition of a key: FNV-1a, stable across processes and runs.
pub fn partition_for(key: &[u8], partitions: i32) -> i32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % partitions.max(1) as u64) as i32
}

/// A topic's index in [`Topic::ALL`]: its discriminant, as `ALL` lists the topics in the order
/// they are declared (checked below at compile time). Every read asks for it.
#[inline]
fn topic_index(t: Topic) -> usize {
    t as usize
}

const _: () = {
    let mut i = 0;
    while i < Topic::ALL.len() {
        assert!(
            Topic::ALL[i] as usize == i,
            "Topic::ALL is not in declaration order"
        );
        i += 1;
    }
};

impl MemoryLog {
    /// An empty log with `partitions` partitions per topic.
    pub fn new(partitions: i32) -> Self {
        let ppt = partitions.max(1);
        let mut parts = Vec::new();
        for ti in 0..Topic::ALL.len() {
            for id in 0..ppt {
                parts.push(Partition {
                    topic_index: ti,
                    id,
                    ..Partition::default()
                });
            }
        }
        MemoryLog {
            partitions_per_topic: ppt,
            partitions: parts,
            cursor: 0,
        }
    }

    #[inline]
    fn index(&self, topic: Topic, partition: i32) -> usize {
        topic_index(topic) * self.partitions_per_topic as usize + partition as usize
    }

    /// Appends a record; returns its (partition, offset).
    pub fn append(&mut self, topic: Topic, key: &[u8], value: &[u8], ts: Millis) -> (i32, i64) {
        let p = partition_for(key, self.partitions_per_topic);
        let i = self.index(topic, p);
        let part = &mut self.partitions[i];
        let offset = part.end();
        let start = part.data.len();
        part.data.extend_from_slice(key);
        part.data.extend_from_slice(value);
        part.records.push_back(Entry {
            start,
            key_len: key.len(),
            value_len: value.len(),
            timestamp: ts,
        });
        (p, offset)
    }

    /// Partitions per topic.
    pub fn partitions_per_topic(&self) -> i32 {
        self.partitions_per_topic
    }

    #[inline]
    fn part(&self, topic: Topic, partition: i32) -> Option<&Partition> {
        (0..self.partitions_per_topic)
            .contains(&partition)
            .then(|| &self.partitions[self.index(topic, partition)])
    }

    fn part_mut(&mut self, topic: Topic, partition: i32) -> Option<&mut Partition> {
        if !(0..self.partitions_per_topic).contains(&partition) {
            return None;
        }
        let i = self.index(topic, partition);
        Some(&mut self.partitions[i])
    }

    /// The next offset a consumer reads from a partition.
    #[inline]
    pub fn position(&self, topic: Topic, partition: i32) -> i64 {
        self.part(topic, partition).map_or(0, |p| p.position)
    }

    /// [`Self::position`] of the partition at `index` in topic-major order ([`Topic::ALL`], then
    /// partition): a simulator asks it for every partition at every poll.
    #[inline]
    pub fn position_at(&self, index: usize) -> i64 {
        self.partitions.get(index).map_or(0, |p| p.position)
    }

    /// [`Self::end_offset`] of the partition at `index`, as [`Self::position_at`].
    #[inline]
    pub fn end_offset_at(&self, index: usize) -> i64 {
        self.partitions.get(index).map_or(0, Partition::end)
    }

    /// The offset a partition's next record will get.
    pub fn end_offset(&self, topic: Topic, partition: i32) -> i64 {
        self.part(topic, partition).map_or(0, Partition::end)
    }

    /// The first offset a partition still holds.
    pub fn start_offset(&self, topic: Topic, partition: i32) -> i64 {
        self.part(topic, partition).map_or(0, |p| p.base)
    }

    /// The record at `offset` of a partition, if the partition still holds it.
    pub fn record(&self, topic: Topic, partition: i32, offset: i64) -> Option<RawRecord<'_>> {
        let p = self.part(topic, partition)?;
        let (key, value, ts) = p.get(offset)?;
        Some(RawRecord {
            topic,
            key,
            value,
            kafka_timestamp_ms: ts,
            position: SourcePosition { partition, offset },
        })
    }

    /// Moves a partition's read position, as a consumer seeking does (kept within what the
    /// partition holds).
    pub fn seek(&mut self, topic: Topic, partition: i32, offset: i64) {
        if let Some(p) = self.part_mut(topic, partition) {
            p.position = offset.clamp(p.base, p.end());
        }
    }

    /// Reads up to `max` records of one partition below offset `until` (what the consumer can
    /// see) without copying them, handing each to `f`; returns how many.
    pub fn consume_partition_below(
        &mut self,
        topic: Topic,
        partition: i32,
        max: usize,
        until: i64,
        mut f: impl FnMut(RawRecord<'_>),
    ) -> usize {
        let Some(p) = self.part_mut(topic, partition) else {
            return 0;
        };
        let n = max.min(usize::try_from(until - p.position).unwrap_or(0));
        p.consume(n, &mut f)
    }

    /// Drops a partition's records below `offset`: nothing will read them again.
    pub fn truncate_below(&mut self, topic: Topic, partition: i32, offset: i64) {
        if let Some(p) = self.part_mut(topic, partition) {
            p.committed = p.committed.max(offset).min(p.position).min(p.end());
            p.truncate();
        }
    }

    /// Records appended but not yet read.
    pub fn lag(&self) -> u64 {
        self.partitions
            .iter()
            .map(|p| (p.end() - p.position) as u64)
            .sum()
    }

    /// Records retained (appended and not yet committed).
    pub fn retained(&self) -> usize {
        self.partitions.iter().map(|p| p.records.len()).sum()
    }

    /// Forgets uncommitted reads, as a consumer restarting from its committed offsets does.
    pub fn rewind_to_committed(&mut self) {
        for p in &mut self.partitions {
            p.position = p.committed;
        }
    }

    /// Reads up to `max` records without copying them, handing each to `f`; returns how many.
    /// Partitions are visited round-robin from a moving cursor, each in offset order.
    pub fn consume_with(&mut self, max: usize, mut f: impl FnMut(RawRecord<'_>)) -> usize {
        let mut n = 0;
        let count = self.partitions.len();
        for i in 0..count {
            if n >= max {
                break;
            }
            n += self.partitions[(self.cursor + i) % count].consume(max - n, &mut f);
        }
        self.cursor = (self.cursor + 1) % count.max(1);
        n
    }

    /// Reads up to `max` unread records of one partition without copying them, handing each to
    /// `f`; returns how many. For a consumer that knows where new records landed.
    pub fn consume_partition(
        &mut self,
        topic: Topic,
        partition: i32,
        max: usize,
        mut f: impl FnMut(RawRecord<'_>),
    ) -> usize {
        if partition < 0 || partition >= self.partitions_per_topic {
            return 0;
        }
        let i = self.index(topic, partition);
        self.partitions[i].consume(max, &mut f)
    }

    /// Reads up to `max` records, copying them out (what [`Source::poll`] does).
    pub fn read(&mut self, max: usize) -> Vec<SourceRecord> {
        let mut out = Vec::new();
        self.consume_with(max, |r| {
            out.push(SourceRecord {
                topic: r.topic,
                partition: r.position.partition,
                offset: r.position.offset,
                key: r.key.to_vec(),
                value: r.value.to_vec(),
                timestamp_ms: r.kafka_timestamp_ms,
            })
        });
        out
    }

    /// Commits positions (offset of the last record processed) and drops what is committed.
    pub fn commit_positions(&mut self, positions: &[(Topic, i32, i64)]) {
        for &(t, p, offset) in positions {
            if p < 0 || p >= self.partitions_per_topic {
                continue;
            }
            let i = self.index(t, p);
            let part = &mut self.partitions[i];
            part.committed = part.committed.max(offset + 1).min(part.end());
            part.truncate();
        }
    }

    /// Commits everything read so far.
    pub fn commit_all_read(&mut self) {
        for part in &mut self.partitions {
            part.committed = part.position;
            part.truncate();
        }
    }
}

impl Source for MemoryLog {
    fn poll(&mut self, max: usize) -> impl Future<Output = Result<Vec<SourceRecord>, SourceError>> {
        ready(Ok(self.read(max)))
    }

    fn commit(
        &mut self,
        positions: &[(Topic, i32, i64)],
    ) -> impl Future<Output = Result<(), SourceError>> {
        self.commit_positions(positions);
        ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves the by-index reads name the partition at that index of topic-major order.
    #[test]
    fn by_index_is_topic_major() {
        let mut log = MemoryLog::new(3);
        for n in 0..60u32 {
            let key = format!("device-{n}");
            let topic = Topic::ALL[n as usize % 4];
            log.append(topic, key.as_bytes(), b"{}", 0);
        }
        for (t, topic) in Topic::ALL.iter().enumerate() {
            for p in 0..3 {
                log.seek(*topic, p, 1 + i64::from(p));
                let i = t * 3 + p as usize;
                assert_eq!(log.position_at(i), log.position(*topic, p));
                assert_eq!(log.end_offset_at(i), log.end_offset(*topic, p));
            }
        }
        assert_eq!(log.position_at(12), 0, "past the last partition");
    }

    // Proves offsets are per partition, reads resume where they stopped, and a restart resumes
    // from the committed position, re-reading only uncommitted records.
    #[test]
    fn offsets_commits_and_restart() {
        let mut log = MemoryLog::new(2);
        for i in 0..10u8 {
            log.append(Topic::Traffic, &[i], &[i, i], i64::from(i));
        }
        let first = log.read(4);
        assert_eq!(first.len(), 4);
        let last = first.last().unwrap();
        log.commit_positions(&[(last.topic, last.partition, last.offset)]);
        let rest = log.read(100);
        assert_eq!(first.len() + rest.len(), 10);
        log.rewind_to_committed();
        let again = log.read(100);
        // Everything after the committed offset is read again; nothing before it.
        assert_eq!(again.len(), 10 - (last.offset as usize + 1));
        assert!(
            again
                .iter()
                .all(|r| r.partition != last.partition || r.offset > last.offset)
        );
        assert_eq!(log.lag(), 0);
        log.commit_all_read();
        assert_eq!(log.retained(), 0);
        assert_eq!(partition_for(b"TS-001", 4), partition_for(b"TS-001", 4));
    }
}
