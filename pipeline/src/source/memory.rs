//! An in-memory partitioned log with offsets and committed consumer positions, like a Kafka
//! topic with one consumer group. Keys are assigned to partitions by a stable hash, so records of
//! one entity stay in order. Records below every committed position are dropped (bounded
//! retention).

use std::collections::{BTreeMap, VecDeque};
use std::future::{Future, ready};

use crate::model::Topic;
use crate::time::Millis;

use super::{Source, SourceError, SourceRecord};

/// One partition: the retained records and the offset of the first one.
#[derive(Debug, Default)]
struct Partition {
    base: i64,
    records: VecDeque<(Vec<u8>, Vec<u8>, Millis)>,
    /// Next offset to read.
    position: i64,
    /// Committed offset (next to read after a restart).
    committed: i64,
}

/// An in-memory log of the four topics.
#[derive(Debug)]
pub struct MemoryLog {
    partitions_per_topic: i32,
    partitions: BTreeMap<(Topic, i32), Partition>,
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

impl MemoryLog {
    /// An empty log with `partitions` partitions per topic.
    pub fn new(partitions: i32) -> Self {
        let partitions = partitions.max(1);
        let mut map = BTreeMap::new();
        for t in Topic::ALL {
            for p in 0..partitions {
                map.insert((t, p), Partition::default());
            }
        }
        MemoryLog {
            partitions_per_topic: partitions,
            partitions: map,
            cursor: 0,
        }
    }

    /// Appends a record; returns its (partition, offset).
    pub fn append(&mut self, topic: Topic, key: &[u8], value: Vec<u8>, ts: Millis) -> (i32, i64) {
        let p = partition_for(key, self.partitions_per_topic);
        let part = self.partitions.entry((topic, p)).or_default();
        let offset = part.base + part.records.len() as i64;
        part.records.push_back((key.to_vec(), value, ts));
        (p, offset)
    }

    /// Records appended but not yet read.
    pub fn lag(&self) -> u64 {
        self.partitions
            .values()
            .map(|p| (p.base + p.records.len() as i64 - p.position) as u64)
            .sum()
    }

    /// Forgets uncommitted reads, as a consumer restarting from its committed offsets does.
    pub fn rewind_to_committed(&mut self) {
        for p in self.partitions.values_mut() {
            p.position = p.committed;
        }
    }

    /// Reads up to `max` records synchronously (what [`Source::poll`] does).
    pub fn read(&mut self, max: usize) -> Vec<SourceRecord> {
        let mut out = Vec::new();
        let n = self.partitions.len();
        let keys: Vec<(Topic, i32)> = self.partitions.keys().copied().collect();
        for i in 0..n {
            if out.len() >= max {
                break;
            }
            let (topic, pid) = keys[(self.cursor + i) % n];
            let part = self
                .partitions
                .get_mut(&(topic, pid))
                .expect("partition exists");
            while out.len() < max {
                let idx = (part.position - part.base) as usize;
                let Some((k, v, ts)) = part.records.get(idx) else {
                    break;
                };
                out.push(SourceRecord {
                    topic,
                    partition: pid,
                    offset: part.position,
                    key: k.clone(),
                    value: v.clone(),
                    timestamp_ms: *ts,
                });
                part.position += 1;
            }
        }
        self.cursor = (self.cursor + 1) % n.max(1);
        out
    }

    /// Commits positions (offset of the last record processed) and drops what every reader is past.
    pub fn commit_positions(&mut self, positions: &[(Topic, i32, i64)]) {
        for &(t, p, offset) in positions {
            if let Some(part) = self.partitions.get_mut(&(t, p)) {
                part.committed = part.committed.max(offset + 1);
                while part.base < part.committed && !part.records.is_empty() {
                    part.records.pop_front();
                    part.base += 1;
                }
            }
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

    // Proves offsets are per partition, reads resume where they stopped, and a restart resumes
    // from the committed position, re-reading only uncommitted records.
    #[test]
    fn offsets_commits_and_restart() {
        let mut log = MemoryLog::new(2);
        let mut placed = Vec::new();
        for i in 0..10u8 {
            placed.push(log.append(Topic::Traffic, &[i], vec![i], i64::from(i)));
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
        assert_eq!(partition_for(b"TS-001", 4), partition_for(b"TS-001", 4));
    }
}
