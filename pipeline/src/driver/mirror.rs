//! Stage 2's view of the checked partitions (docs/scale-out.md), sans IO: checked partition p
//! mirrors input partition p, each checked record carrying its source offset. Records are
//! handed to the driver with their *source* offsets, so the canonical merge, the checkpoints and
//! the sinks' idempotent keys are those of a one-instance job; a source offset at or below the
//! last one handed over was forwarded twice (stage 1 restarts from its group's committed
//! offset after a kill or a rebalance) and is dropped. A commit of source positions becomes a
//! commit of the checked offsets that hold them. The shells (the simulator's memory backend,
//! the Kafka job) carry the records, the offsets and the commits.

use std::collections::{BTreeMap, VecDeque};

use super::PartitionId;

#[derive(Debug, Default)]
struct Part {
    /// The last source offset handed over.
    last: Option<i64>,
    /// Handed over and not yet covered by a commit: (source offset, checked offset).
    held: VecDeque<(i64, i64)>,
}

/// Stage 2's mirror of the checked partitions.
#[derive(Debug, Default)]
pub struct Mirror {
    parts: BTreeMap<PartitionId, Part>,
    /// Records dropped because they were forwarded twice.
    pub dropped: u64,
}

impl Mirror {
    /// A mirror that has handed nothing over: every record is new.
    pub fn new() -> Self {
        Mirror::default()
    }

    /// A mirror resuming from a checkpoint: the records at or below each partition's position
    /// were applied already and are dropped if read again.
    pub fn restored(positions: impl IntoIterator<Item = (PartitionId, i64)>) -> Self {
        let mut m = Mirror::new();
        for (id, last) in positions {
            m.parts.entry(id).or_default().last = Some(last);
        }
        m
    }

    /// Whether the record at `checked` in partition `id`, forwarded from `source`, is to be
    /// handed over (new) or dropped (forwarded twice).
    pub fn accept(&mut self, id: PartitionId, checked: i64, source: i64) -> bool {
        let p = self.parts.entry(id).or_default();
        if p.last.is_some_and(|l| source <= l) {
            self.dropped += 1;
            return false;
        }
        p.last = Some(source);
        p.held.push_back((source, checked));
        true
    }

    /// The next source offset partition `id` will hand over, once it handed one over or was
    /// restored: the driver's position in it.
    pub fn next_source(&self, id: PartitionId) -> Option<i64> {
        self.parts.get(&id).and_then(|p| p.last).map(|l| l + 1)
    }

    /// The checked offsets to commit for a commit of source `positions` (the last source offset
    /// applied per partition): per partition, the checked offset of the last record handed over
    /// at or below it. The same positions map to the same offsets again (a commit retried after
    /// a failure); partitions with nothing handed over are left out.
    pub fn commit(&mut self, positions: &[(PartitionId, i64)]) -> Vec<(PartitionId, i64)> {
        let mut out = Vec::new();
        for &(id, source) in positions {
            let Some(p) = self.parts.get_mut(&id) else {
                continue;
            };
            // Keep the last covered entry: it answers this commit again.
            while p.held.len() > 1 && p.held[1].0 <= source {
                p.held.pop_front();
            }
            if let Some(&(s, c)) = p.held.front()
                && s <= source
            {
                out.push((id, c));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Topic;

    const P: PartitionId = (Topic::Traffic, 0);

    // Proves records forwarded twice are dropped by their source offset, wherever they sit in
    // the checked partition, and that a commit of source positions maps to the checked offset
    // of the last record it covers.
    #[test]
    fn duplicates_are_dropped_and_commits_mapped() {
        let mut m = Mirror::new();
        // Checked offsets 0..5 hold source 0..5; stage 1 died before committing 3 and 4, and
        // its successor forwarded 3.. again: checked 5, 6 hold source 3, 4; checked 7 holds 5.
        let sources = [0, 1, 2, 3, 4, 3, 4, 5];
        let kept: Vec<bool> = sources
            .iter()
            .enumerate()
            .map(|(c, &s)| m.accept(P, c as i64, s))
            .collect();
        assert_eq!(kept, [true, true, true, true, true, false, false, true]);
        assert_eq!(m.dropped, 2);
        assert_eq!(m.next_source(P), Some(6));
        assert_eq!(m.commit(&[(P, 2)]), [(P, 2)]);
        assert_eq!(m.commit(&[(P, 2)]), [(P, 2)], "a retried commit maps again");
        assert_eq!(m.commit(&[(P, 5)]), [(P, 7)]);
        assert_eq!(m.commit(&[((Topic::Parking, 0), 5)]), []);
    }

    // Proves a mirror restored from a checkpoint drops what the checkpoint covers.
    #[test]
    fn a_restored_mirror_drops_what_the_checkpoint_covers() {
        let mut m = Mirror::restored([(P, 4)]);
        assert_eq!(m.next_source(P), Some(5));
        assert!(!m.accept(P, 10, 4));
        assert!(m.accept(P, 11, 5));
        assert_eq!(m.next_source((Topic::Parking, 1)), None);
    }
}
