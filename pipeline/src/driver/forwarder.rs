//! Stage 1's bookkeeping (docs/scale-out.md), sans IO: which input partitions this instance's
//! stage 1 owns — each ownership an *epoch* of its own —, what Kafka acknowledged of the checked
//! records it forwarded, and which input offsets to commit. The shells (the Kafka job's
//! `streaming::scale`, the simulator's instances) carry the records, the acknowledgements, the
//! rebalances and the commits.
//!
//! The rules it keeps: an input offset is committed only once the checked record of every offset
//! up to it was acknowledged (acknowledgements of one partition arrive in order: one idempotent
//! producer); only for a partition still owned, in the ownership the record was sent in — an
//! acknowledgement arriving after the partition was revoked, or after it came back in a later
//! ownership starting from another instance's commit, must not move the commit; and a
//! revocation commits what was acknowledged first, so the next owner forwards as little as
//! possible again. What is forwarded twice is harmless (stage 2's mirror drops it by source
//! offset); what is committed without being acknowledged would be lost.

use std::collections::BTreeMap;

use super::PartitionId;

#[derive(Clone, Copy, Debug)]
struct Owned {
    epoch: u64,
    /// The last source offset whose checked record was acknowledged in this ownership.
    acked: Option<i64>,
    /// The last source offset committed in this ownership.
    committed: Option<i64>,
}

/// Stage 1's view of its input partitions, keyed by `P` (the Kafka job's `PartitionId`, the
/// simulator's partition index).
#[derive(Debug)]
pub struct Forwarder<P = PartitionId> {
    next_epoch: u64,
    parts: BTreeMap<P, Owned>,
}

impl<P> Default for Forwarder<P> {
    fn default() -> Self {
        Forwarder {
            next_epoch: 0,
            parts: BTreeMap::new(),
        }
    }
}

impl<P: Ord + Copy> Forwarder<P> {
    /// A stage 1 that owns nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The group gave it these partitions: each starts an ownership of its own (a partition it
    /// held already keeps its ownership).
    pub fn assigned(&mut self, ids: impl IntoIterator<Item = P>) {
        for id in ids {
            if self.parts.contains_key(&id) {
                continue;
            }
            self.next_epoch += 1;
            let owned = Owned {
                epoch: self.next_epoch,
                acked: None,
                committed: None,
            };
            self.parts.insert(id, owned);
        }
    }

    /// The group takes these partitions away. Returns, per partition, the last acknowledged
    /// source offset not committed yet: commit it before giving the partition up.
    pub fn revoked(&mut self, ids: impl IntoIterator<Item = P>) -> Vec<(P, i64)> {
        let mut out = Vec::new();
        for id in ids {
            if let Some(o) = self.parts.remove(&id)
                && let Some(a) = o.acked
                && o.committed.is_none_or(|c| c < a)
            {
                out.push((id, a));
            }
        }
        out
    }

    /// Every partition taken away (an eager rebalance, a stop): see [`Forwarder::revoked`].
    pub fn revoke_all(&mut self) -> Vec<(P, i64)> {
        let ids: Vec<P> = self.parts.keys().copied().collect();
        self.revoked(ids)
    }

    /// The ownership a record of partition `id` is forwarded in, or `None` when `id` is not
    /// owned (a record read before a revocation took effect): do not forward it.
    pub fn send(&self, id: P) -> Option<u64> {
        self.parts.get(&id).map(|o| o.epoch)
    }

    /// Kafka acknowledged the checked record of source `offset` of partition `id`, sent in
    /// ownership `epoch`.
    pub fn acked(&mut self, id: P, epoch: u64, offset: i64) {
        if let Some(o) = self.parts.get_mut(&id)
            && o.epoch == epoch
        {
            o.acked = Some(o.acked.map_or(offset, |a| a.max(offset)));
        }
    }

    /// What to commit now: per owned partition, the last acknowledged source offset, when it
    /// moved since the last commit (taken as made: a lost commit is superseded by the next).
    pub fn to_commit(&mut self) -> Vec<(P, i64)> {
        let mut out = Vec::new();
        for (id, o) in &mut self.parts {
            if let Some(a) = o.acked
                && o.committed.is_none_or(|c| c < a)
            {
                o.committed = Some(a);
                out.push((*id, a));
            }
        }
        out
    }

    /// A commit of `positions` (what [`Self::to_commit`] or [`Self::revoked`] returned) failed:
    /// they are owed again, so the next `to_commit` returns them though nothing more was
    /// acknowledged (else a quiet partition's input offsets would stay uncommitted until its
    /// next record). A newer commit already under way supersedes the failed one.
    pub fn commit_failed(&mut self, positions: &[(P, i64)]) {
        for (id, last) in positions {
            if let Some(o) = self.parts.get_mut(id)
                && o.committed == Some(*last)
            {
                o.committed = None;
            }
        }
    }

    /// Partitions owned now.
    pub fn owned(&self) -> usize {
        self.parts.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves a failed commit is owed again without a new acknowledgement, that a newer commit
    // supersedes it, and that a partition given up meanwhile is not committed by this owner.
    #[test]
    fn a_failed_commit_is_owed_again() {
        let mut f: Forwarder<u8> = Forwarder::new();
        f.assigned([0, 1, 2]);
        let e = [0, 1, 2].map(|p| f.send(p).expect("owned"));
        for p in 0..3 {
            f.acked(p, e[p as usize], 9);
        }
        let lost = f.to_commit();
        assert_eq!(lost, [(0, 9), (1, 9), (2, 9)]);
        assert_eq!(f.to_commit(), [], "nothing new acknowledged");
        f.acked(1, e[1], 12);
        let newer = f.to_commit();
        assert_eq!(newer, [(1, 12)]);
        let _ = f.revoked([2]);
        f.commit_failed(&lost);
        assert_eq!(
            f.to_commit(),
            [(0, 9)],
            "partition 1's newer commit supersedes the lost one; partition 2 is gone"
        );
        f.commit_failed(&[(0, 9)]);
        assert_eq!(
            f.revoked([0]),
            [(0, 9)],
            "a revocation commits what is owed"
        );
    }

    // Proves only acknowledged offsets of owned partitions are committed, each once, in order.
    #[test]
    fn commits_follow_acknowledgements() {
        let mut f: Forwarder<u8> = Forwarder::new();
        assert_eq!(f.send(0), None, "nothing owned: nothing forwarded");
        f.assigned([0, 1]);
        let e0 = f.send(0).expect("owned");
        let e1 = f.send(1).expect("owned");
        assert_ne!(e0, e1);
        assert_eq!(f.to_commit(), [], "nothing acknowledged yet");
        f.acked(0, e0, 10);
        f.acked(0, e0, 11);
        assert_eq!(f.to_commit(), [(0, 11)]);
        assert_eq!(f.to_commit(), [], "committed once");
        f.acked(1, e1, 3);
        assert_eq!(f.to_commit(), [(1, 3)]);
        assert_eq!(f.owned(), 2);
    }

    // Proves an acknowledgement from an earlier ownership never moves the commit of a later one,
    // which started from another instance's commit further on.
    #[test]
    fn a_late_acknowledgement_of_an_earlier_ownership_is_not_committed() {
        let mut f: Forwarder<u8> = Forwarder::new();
        f.assigned([0]);
        let first = f.send(0).expect("owned");
        f.acked(0, first, 5);
        assert_eq!(
            f.revoked([0]),
            [(0, 5)],
            "a revocation commits what was acknowledged"
        );
        // Another instance forwarded and committed up to 100; this one gets the partition back
        // and starts there, while its first ownership's last sends are still acknowledged.
        f.assigned([0]);
        let second = f.send(0).expect("owned again");
        assert_ne!(first, second);
        f.acked(0, first, 6);
        assert_eq!(
            f.to_commit(),
            [],
            "6 is behind the commit of 100 another instance made"
        );
        f.acked(0, second, 101);
        assert_eq!(f.to_commit(), [(0, 101)]);
        assert_eq!(
            f.revoke_all(),
            [],
            "nothing acknowledged past the last commit"
        );
        assert_eq!(f.send(0), None);
    }

    // Proves a revocation hands back only what was acknowledged and not committed, and a
    // partition assigned again while owned keeps its ownership.
    #[test]
    fn revocations_and_repeated_assignments() {
        let mut f: Forwarder<u8> = Forwarder::new();
        f.assigned([0, 1, 2]);
        let e = [0, 1, 2].map(|p| f.send(p).expect("owned"));
        f.assigned([1]);
        assert_eq!(f.send(1), Some(e[1]), "still the same ownership");
        f.acked(0, e[0], 7);
        f.acked(1, e[1], 3);
        assert_eq!(f.to_commit(), [(0, 7), (1, 3)]);
        f.acked(1, e[1], 4);
        assert_eq!(f.revoked([0, 1, 2]), [(1, 4)]);
        assert_eq!(f.owned(), 0);
    }
}
