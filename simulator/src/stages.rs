//! Several instances of the job in one consumer group, run as the two stages of
//! docs/scale-out.md on the simulated clock: each live instance's stage 1 forwards the records of
//! the input partitions the group assigned it to the checked partitions (input partition p to
//! checked partition p, in order); the lease holder's stage 2 — the memory backend's driver —
//! reads them. Instances are killed, join and leave at planned instants; a rebalance stops
//! every stage 1, reassigns the partitions over the live instances and restarts each from the
//! offset the group committed for it, so the records forwarded after that commit are forwarded
//! again: stage 2 sees them twice and drops the second copy by its source offset. Each
//! instance's stage 1 keeps its books in the Kafka job's [`Forwarder`]: what it may forward,
//! what Kafka acknowledged in which ownership, what it commits, and what a revocation commits.
//!
//! Stage 2 is told each partition's *input* end, not how far stage 1 has forwarded, so a
//! partition whose stage 1 is stopped holds the canonical merge back instead of letting later
//! records of other partitions pass: the output does not depend on stage 1's pace, kills or
//! rebalances, only latency does.

use std::collections::{BTreeMap, VecDeque};

use pipeline::driver::forwarder::Forwarder;
use pipeline::time::Millis;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::faults::{InstanceEvent, InstancesPlan};

/// From a stage-1 read to its checked records acknowledged by Kafka, milliseconds: usually.
const FORWARD_MS: Millis = 5;
/// The share of forwards that wait longer for their acknowledgement.
const SLOW_SHARE: f64 = 0.05;
/// One forward in twenty waits longer for its acknowledgement (a busy broker, a leader moving):
/// up to this long, milliseconds — longer than a commit period, so a commit that ran ahead of
/// the acknowledgements would cover records still in flight.
const SLOW_FORWARD_MS: Millis = 3_000;
/// Stage 1 commits what was acknowledged this long after, milliseconds (an asynchronous
/// commit after each acknowledged batch).
const COMMIT_MS: Millis = 1_000;

/// Checked records of one read, on their way to Kafka.
#[derive(Clone, Copy, Debug)]
struct Forward {
    /// When Kafka acknowledges them.
    at: Millis,
    /// The input partition's records `[from, to)`.
    from: i64,
    to: i64,
    /// The instance that forwarded them, and its ownership of the partition.
    instance: u32,
    epoch: u64,
}

/// What a step of the instances did that the memory backend must act on.
#[derive(Debug, Default)]
pub(crate) struct Step {
    /// The lease holder was killed: stage 2 dies with it and restarts on the next holder at
    /// `restart_at` (once the group noticed and rebalanced).
    pub holder_killed: Option<Millis>,
    /// Checked records that reached Kafka, in order: (partition, from, to, instance) — the
    /// input partition's records `[from, to)`, appended to its checked partition, as the
    /// instance that forwarded them checked them.
    pub landed: Vec<(usize, i64, i64, u32)>,
}

/// The group's instances and their stage 1, per input partition (the memory backend's
/// topic-major partition indices).
#[derive(Debug)]
pub(crate) struct Stages {
    plan: InstancesPlan,
    next_event: usize,
    /// Live instances, by number.
    alive: Vec<u32>,
    next_id: u32,
    /// Per partition: the instance whose stage 1 reads it; none during a rebalance.
    owner: Vec<Option<u32>>,
    /// Pending rebalance starts (a kill is noticed after the session timeout).
    rebalance_at: Vec<Millis>,
    /// Every stage 1 is stopped until then (a rebalance in progress).
    stopped_until: Option<Millis>,
    /// Per partition: stage 1's next offset to read.
    pos: Vec<i64>,
    /// Per partition: the offset the group committed for stage 1 (the next one to read).
    committed: Vec<i64>,
    /// Per partition: the checked partition holds the input's records below this offset.
    forwarded: Vec<i64>,
    /// Per partition: forwards not acknowledged yet, in order.
    in_flight: Vec<VecDeque<Forward>>,
    /// Commits due: (at, instance): it commits what its stage 1 has acknowledged by then.
    commits: VecDeque<(Millis, u32)>,
    /// Each live instance's stage 1, by number.
    forwarders: BTreeMap<u32, Forwarder<usize>>,
    /// Kafka is away until then: stage 1 reads nothing, its produces are not acknowledged and
    /// its commits are lost (owed again, and sent once Kafka is back).
    down_until: Option<Millis>,
    /// The share of forwards acknowledged slowly ([`SLOW_SHARE`]; tests raise it).
    slow_share: f64,
    /// Rebalances so far.
    pub rebalances: u32,
    /// Records forwarded a second time (after a kill or a rebalance).
    pub reforwarded: u64,
    /// Stage-1 commits lost because Kafka was away (each retried once it is back).
    pub commits_lost: u64,
}

impl Stages {
    pub fn new(plan: InstancesPlan, partitions: usize) -> Self {
        let alive: Vec<u32> = (0..plan.count.max(1)).collect();
        let mut s = Stages {
            next_id: alive.len() as u32,
            alive,
            plan,
            next_event: 0,
            owner: vec![None; partitions],
            rebalance_at: Vec::new(),
            stopped_until: None,
            pos: vec![0; partitions],
            committed: vec![0; partitions],
            forwarded: vec![0; partitions],
            in_flight: vec![VecDeque::new(); partitions],
            commits: VecDeque::new(),
            forwarders: BTreeMap::new(),
            down_until: None,
            slow_share: SLOW_SHARE,
            rebalances: 0,
            reforwarded: 0,
            commits_lost: 0,
        };
        s.assign();
        s
    }

    /// The holder of the stage-2 lease: the live instance with the lowest number.
    pub fn holder(&self) -> Option<u32> {
        self.alive.first().copied()
    }

    /// The offset below which the group committed partition `i` for stage 1: the input
    /// partition's records below it are never read again.
    pub fn committed(&self, i: usize) -> i64 {
        self.committed[i]
    }

    /// The next instant at which the instances act, if any.
    pub fn next_instant(&self) -> Option<Millis> {
        let mut t: Option<Millis> = None;
        let mut at = |x: Option<Millis>| {
            if let Some(x) = x {
                t = Some(t.map_or(x, |t| t.min(x)));
            }
        };
        at(self.plan.events.get(self.next_event).map(|e| e.0));
        at(self.rebalance_at.iter().copied().min());
        at(self.stopped_until);
        // What needs Kafka waits for it to come back.
        let back = |t: Millis| self.down_until.map_or(t, |u| t.max(u));
        at(self
            .in_flight
            .iter()
            .filter_map(|q| q.front().map(|f| back(f.at)))
            .min());
        // A commit is sent when due, Kafka there or not (one sent while it is away is lost).
        at(self.commits.front().map(|c| c.0));
        t
    }

    /// Everything due by `now`; `visible_end` is each input partition's end as consumers see
    /// it; `kafka_down_until`: Kafka is away until then.
    pub fn step(
        &mut self,
        now: Millis,
        visible_end: &[i64],
        rng: &mut ChaCha8Rng,
        kafka_down_until: Option<Millis>,
    ) -> Step {
        let mut step = Step::default();
        self.down_until = kafka_down_until;
        while let Some(&(at, event)) = self.plan.events.get(self.next_event)
            && at <= now
        {
            self.next_event += 1;
            self.event(now, event, rng, &mut step);
        }
        if self.rebalance_at.iter().any(|&t| t <= now) {
            self.rebalance_at.retain(|&t| t > now);
            self.start_rebalance(now);
        }
        if self.stopped_until.is_some_and(|t| t <= now) {
            self.stopped_until = None;
            self.assign();
        }
        if self.down_until.is_some() {
            self.commit_due(now);
            return step;
        }
        for (i, &end) in visible_end.iter().enumerate().take(self.pos.len()) {
            if let Some(o) = self.owner[i]
                && self.pos[i] < end
                && let Some(epoch) = self.forwarders.get(&o).and_then(|f| f.send(i))
            {
                let from = self.pos[i];
                let delay = if rng.random_bool(self.slow_share) {
                    rng.random_range(FORWARD_MS..=SLOW_FORWARD_MS)
                } else {
                    FORWARD_MS
                };
                // Acknowledged in order: never before an earlier forward of the partition.
                let at = self.in_flight[i]
                    .back()
                    .map_or(now + delay, |b| b.at.max(now + delay));
                self.in_flight[i].push_back(Forward {
                    at,
                    from,
                    to: end,
                    instance: o,
                    epoch,
                });
                self.pos[i] = end;
            }
            while let Some(&f) = self.in_flight[i].front()
                && f.at <= now
            {
                self.in_flight[i].pop_front();
                self.acknowledged(i, f, &mut step);
                self.commits.push_back((f.at + COMMIT_MS, f.instance));
            }
        }
        self.commit_due(now);
        step
    }

    /// Stage 1's commits due by `now`: the group takes them, or, while Kafka is away, they are
    /// lost (asynchronous: stage 1 goes on) and what they held is owed again; the instance's
    /// next commit, once Kafka is back, takes it.
    fn commit_due(&mut self, now: Millis) {
        while let Some(&(at, o)) = self.commits.front()
            && at <= now
        {
            self.commits.pop_front();
            let Some(f) = self.forwarders.get_mut(&o) else {
                continue;
            };
            let positions = f.to_commit();
            match self.down_until {
                None => self.commit(&positions),
                Some(up) => {
                    f.commit_failed(&positions);
                    if !positions.is_empty() {
                        self.commits_lost += 1;
                        self.commits.push_back((up + COMMIT_MS, o));
                    }
                }
            }
        }
    }

    /// The group takes stage 1's commit of `positions` (the last source offset acknowledged
    /// per partition).
    fn commit(&mut self, positions: &[(usize, i64)]) {
        for &(i, last) in positions {
            self.committed[i] = self.committed[i].max(last + 1);
        }
    }

    fn event(&mut self, now: Millis, event: InstanceEvent, rng: &mut ChaCha8Rng, step: &mut Step) {
        match event {
            // The last instance is never killed: a group with none would stop the run.
            InstanceEvent::Kill | InstanceEvent::KillHolder if self.alive.len() > 1 => {
                let victim = match event {
                    InstanceEvent::KillHolder => self.alive[0],
                    _ => self.alive[rng.random_range(0..self.alive.len())],
                };
                let was_holder = self.holder() == Some(victim);
                self.alive.retain(|&a| a != victim);
                self.forwarders.remove(&victim);
                // Of its forwards in flight, a partition's first few reach Kafka, by seed (in
                // order, as from one idempotent producer; none while Kafka is away); it commits
                // nothing more.
                for i in 0..self.in_flight.len() {
                    let mine = self.take_in_flight(i, victim);
                    let reached = match self.down_until {
                        None if !mine.is_empty() => rng.random_range(0..=mine.len()),
                        _ => 0,
                    };
                    for f in mine.iter().take(reached) {
                        self.land(i, f.from, f.to, f.instance, step);
                    }
                    if self.owner[i] == Some(victim) {
                        self.owner[i] = None;
                    }
                }
                self.commits.retain(|c| c.1 != victim);
                let noticed = now + self.plan.session_timeout_ms;
                self.rebalance_at.push(noticed);
                if was_holder {
                    step.holder_killed = Some(noticed + self.plan.rebalance_ms);
                }
            }
            InstanceEvent::Kill | InstanceEvent::KillHolder => {}
            InstanceEvent::Join => {
                self.alive.push(self.next_id);
                self.next_id += 1;
                self.rebalance_at.push(now);
            }
            InstanceEvent::Leave => {
                let holder = self.holder();
                let leavers: Vec<u32> = self
                    .alive
                    .iter()
                    .copied()
                    .filter(|a| Some(*a) != holder)
                    .collect();
                if leavers.is_empty() {
                    return;
                }
                let who = leavers[rng.random_range(0..leavers.len())];
                // A graceful leave: its forwards are acknowledged, then it gives its partitions
                // up, committing what was acknowledged.
                for i in 0..self.in_flight.len() {
                    for f in self.take_in_flight(i, who) {
                        self.acknowledged(i, f, step);
                    }
                }
                let mut leaving = self.forwarders.remove(&who).unwrap_or_default();
                let positions = leaving.revoke_all();
                self.commit(&positions);
                self.commits.retain(|c| c.1 != who);
                self.alive.retain(|&a| a != who);
                self.rebalance_at.push(now);
            }
        }
    }

    /// Takes `instance`'s forwards in flight to partition `i` out of its queue, in order.
    fn take_in_flight(&mut self, i: usize, instance: u32) -> VecDeque<Forward> {
        let (mine, kept) = std::mem::take(&mut self.in_flight[i])
            .into_iter()
            .partition(|f| f.instance == instance);
        self.in_flight[i] = kept;
        mine
    }

    /// Kafka acknowledged forward `f` to partition `i`: its records land, and its instance's
    /// stage 1 (if alive) is told.
    fn acknowledged(&mut self, i: usize, f: Forward, step: &mut Step) {
        self.land(i, f.from, f.to, f.instance, step);
        if let Some(fw) = self.forwarders.get_mut(&f.instance) {
            fw.acked(i, f.epoch, f.to - 1);
        }
    }

    /// Checked records of `[from, to)` reach partition `i`: those below what it already holds
    /// are there twice.
    fn land(&mut self, i: usize, from: i64, to: i64, instance: u32, step: &mut Step) {
        if from < self.forwarded[i] {
            self.reforwarded += (self.forwarded[i].min(to) - from).max(0) as u64;
        }
        self.forwarded[i] = self.forwarded[i].max(to);
        step.landed.push((i, from, to, instance));
    }

    /// An eager rebalance: every stage 1 gives its partitions up (committing what was
    /// acknowledged, as the Kafka job's revocation does) and waits for the new assignment. What
    /// it still had in flight lands in an ownership that ended: never committed, the next owner
    /// forwards it again.
    fn start_rebalance(&mut self, now: Millis) {
        self.rebalances += 1;
        let mut positions = Vec::new();
        for f in self.forwarders.values_mut() {
            positions.extend(f.revoke_all());
        }
        self.commit(&positions);
        self.commits.clear();
        self.owner.fill(None);
        let until = now + self.plan.rebalance_ms;
        self.stopped_until = Some(self.stopped_until.map_or(until, |t| t.max(until)));
    }

    /// The partitions spread over the live instances (round robin by number); each stage 1
    /// starts from the group's committed offset.
    fn assign(&mut self) {
        if self.alive.is_empty() {
            return;
        }
        let n = self.alive.len();
        for i in 0..self.owner.len() {
            let o = self.alive[i % n];
            self.owner[i] = Some(o);
            self.forwarders.entry(o).or_default().assigned([i]);
            self.pos[i] = self.committed[i];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn stages(count: u32, events: Vec<(Millis, InstanceEvent)>) -> Stages {
        Stages::new(
            InstancesPlan {
                count,
                events,
                session_timeout_ms: 1_000,
                rebalance_ms: 100,
                uneven_config: false,
            },
            4,
        )
    }

    fn run(s: &mut Stages, until: Millis, ends: &[i64]) -> Vec<Step> {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut steps = Vec::new();
        let mut now = 0;
        while now <= until {
            steps.push(s.step(now, ends, &mut rng, None));
            now += 10;
        }
        steps
    }

    // Proves the group's rules: the last instance is never killed, a leave never takes the
    // lease holder, killing the holder says when stage 2 restarts (session timeout plus the
    // rebalance), and the partitions end up spread over the live instances.
    #[test]
    fn kills_leaves_and_the_lease() {
        let mut one = stages(1, vec![(0, InstanceEvent::Kill), (0, InstanceEvent::Leave)]);
        let steps = run(&mut one, 1_100, &[5; 4]);
        assert_eq!(one.holder(), Some(0));
        let landed: Vec<_> = steps.iter().flat_map(|s| s.landed.clone()).collect();
        assert_eq!(
            landed,
            [(0, 0, 5, 0), (1, 0, 5, 0), (2, 0, 5, 0), (3, 0, 5, 0)]
        );
        assert_eq!((0..4).map(|i| one.committed(i)).collect::<Vec<_>>(), [5; 4]);

        let mut two = stages(2, vec![(50, InstanceEvent::Leave)]);
        run(&mut two, 2_000, &[5; 4]);
        assert_eq!(two.holder(), Some(0));
        assert_eq!(two.owner, [Some(0); 4]);

        let mut three = stages(3, vec![(50, InstanceEvent::KillHolder)]);
        let steps = run(&mut three, 3_000, &[5; 4]);
        let killed: Vec<Millis> = steps.iter().filter_map(|s| s.holder_killed).collect();
        assert_eq!(killed, [50 + 1_000 + 100]);
        assert_eq!(three.holder(), Some(1));
        assert_eq!(three.owner, [Some(1), Some(2), Some(1), Some(2)]);
        assert_eq!(three.rebalances, 1);
    }

    // Proves records forwarded but not committed when their instance dies are forwarded again
    // by the next owner.
    #[test]
    fn a_kill_forwards_again_what_was_not_committed() {
        let mut s = stages(2, vec![(500, InstanceEvent::Kill)]);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut landed = Vec::new();
        for t in (0..3_000).step_by(5) {
            landed.extend(s.step(t, &[10; 4], &mut rng, None).landed);
        }
        // Each partition once at first; killed before its commit (due at 1,005), the victim's
        // two partitions again from offset 0 by the survivor.
        assert_eq!(landed.len(), 6, "{landed:?}");
        assert!(landed.iter().all(|&(_, from, to, _)| (from, to) == (0, 10)));
        assert_eq!(s.reforwarded, 20);
        assert_eq!((0..4).map(|i| s.committed(i)).collect::<Vec<_>>(), [10; 4]);
    }

    // Proves a commit due while Kafka is away is lost and owed again: once Kafka is back the
    // instance commits it, though nothing more was acknowledged (the input went quiet).
    #[test]
    fn a_commit_lost_while_kafka_is_away_is_made_once_it_is_back() {
        let mut s = stages(1, Vec::new());
        s.slow_share = 0.0;
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let down = |t: Millis| (500..3_000).contains(&t).then_some(3_000);
        let mut t = 0;
        while t < 3_000 {
            s.step(t, &[10; 4], &mut rng, down(t));
            t += 5;
        }
        assert_eq!((0..4).map(|i| s.committed(i)).collect::<Vec<_>>(), [0; 4]);
        while t < 6_000 {
            s.step(t, &[10; 4], &mut rng, down(t));
            t += 5;
        }
        assert_eq!((0..4).map(|i| s.committed(i)).collect::<Vec<_>>(), [10; 4]);
        // One commit due a second after each partition's acknowledgement, all while away.
        assert_eq!(s.commits_lost, 4);
    }

    // Proves stage 1 forwards nothing, has nothing acknowledged and commits nothing while
    // Kafka is away, and that a kill then loses what was in flight: the next owner forwards it
    // again from the last commit.
    #[test]
    fn nothing_lands_or_commits_while_kafka_is_away() {
        let mut s = stages(2, vec![(1_500, InstanceEvent::Kill)]);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut landed = Vec::new();
        // Kafka away from 2 ms on, so the first forwards (due at 5) wait.
        for t in (0..1_400).step_by(2) {
            landed.extend(
                s.step(t, &[10; 4], &mut rng, (t >= 2).then_some(2_000))
                    .landed,
            );
        }
        assert!(landed.is_empty(), "{landed:?}");
        assert_eq!(
            s.next_instant(),
            Some(1_500),
            "the kill is next: what waits for Kafka is not due before it is back"
        );
        assert_eq!((0..4).map(|i| s.committed(i)).collect::<Vec<_>>(), [0; 4]);
        for t in (1_400..4_000).step_by(2) {
            landed.extend(
                s.step(t, &[10; 4], &mut rng, (t < 2_000).then_some(2_000))
                    .landed,
            );
        }
        // The victim's forwards were lost with it; the survivor's landed once Kafka was back,
        // and the victim's partitions were forwarded again by the survivor.
        assert_eq!(landed.len(), 4, "{landed:?}");
        assert_eq!(s.reforwarded, 0);
        assert_eq!((0..4).map(|i| s.committed(i)).collect::<Vec<_>>(), [10; 4]);
    }

    // Proves stage 1 never commits past what reached Kafka, so a kill loses nothing: with every
    // forward acknowledged slowly, commits running while forwards are in flight and a kill
    // dropping some of them, every input offset still reaches the checked partitions. Fails if
    // the Forwarder is told of a forward when it is sent instead of when it is acknowledged.
    #[test]
    fn slow_acknowledgements_and_a_kill_lose_nothing() {
        for seed in 0..20 {
            let mut s = stages(3, vec![(4_000, InstanceEvent::Kill)]);
            s.slow_share = 1.0;
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut reached = [0i64; 4];
            let mut end = 0;
            for t in (0..12_000).step_by(10) {
                if t < 8_000 {
                    end += 1;
                }
                for (i, from, to, _) in s.step(t, &[end; 4], &mut rng, None).landed {
                    assert!(
                        from <= reached[i],
                        "seed {seed}: partition {i} skipped to {from}"
                    );
                    reached[i] = reached[i].max(to);
                }
            }
            assert_eq!(reached, [end; 4], "seed {seed}: every offset reached Kafka");
        }
    }
}
