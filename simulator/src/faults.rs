//! Faults of the job's environment, injected by the memory backend on the simulated clock: crashes
//! of the job, sinks down or slow, Kafka away, partitions' ends unknown, partitions read in a
//! seeded interleaving with their own lag, records delivered twice. A scenario names them in its
//! `[faults]` table; the swarm draws a mix of them from each seed ([`FaultsConfig::swarm`]), so
//! every failure it finds is reproduced by `simulator run <scenario> --seed N --swarm`.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::scenario::{instant, parse_duration_ms};

/// Which stand-in a sink fault hits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkTarget {
    /// The MongoDB stand-in.
    Documents,
    /// The PostgreSQL stand-in.
    Tables,
    /// Both.
    #[default]
    Both,
}

impl SinkTarget {
    /// Whether the fault hits sink `i` (0: documents, 1: tables).
    pub fn hits(self, i: usize) -> bool {
        matches!(
            (self, i),
            (SinkTarget::Both, _) | (SinkTarget::Documents, 0) | (SinkTarget::Tables, 1)
        )
    }
}

/// A span of simulated time: `from` (HH:MM on the first day, or RFC 3339) for `duration`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Span {
    /// When it starts.
    pub from: String,
    /// How long it lasts: `30s`, `2m`, ...
    pub duration: String,
}

/// A sink down or slow for a span.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkFault {
    /// Which sink.
    #[serde(default)]
    pub sink: SinkTarget,
    /// When.
    #[serde(flatten)]
    pub span: Span,
    /// Slow instead of down: every write takes this much longer, milliseconds (past the
    /// driver's `write_timeout_ms` it times out, and may still land later).
    #[serde(default)]
    pub slow_ms: Option<i64>,
}

/// The `[faults]` table.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FaultsConfig {
    /// Crash the job at these instants (HH:MM on the first day, or RFC 3339).
    pub crash_at: Vec<String>,
    /// Crash the job at this many seeded instants besides.
    pub random_crashes: u32,
    /// From a crash to the restarted job reading again, milliseconds (default 2000).
    pub restart_ms: Option<i64>,
    /// Read partitions in a seeded order and seeded chunk sizes.
    pub interleave: bool,
    /// Most records one poll takes from a partition (default 500).
    pub max_poll_records: Option<usize>,
    /// Each partition's records reach the consumer up to this much later than produced, a
    /// seeded amount per partition and minute, milliseconds.
    pub partition_lag_ms: i64,
    /// Probability that a poll first hands over again up to 10 records it already delivered.
    pub duplicate_delivery: f64,
    /// Sinks down or slow.
    pub sink: Vec<SinkFault>,
    /// Spans when Kafka is unavailable: polls and commits fail, producers hold their records.
    pub kafka: Vec<Span>,
    /// Spans when the consumer cannot learn where partitions end (its queries of the high
    /// watermarks fail) while its fetches succeed: the job is told each partition's position
    /// with no end, so it cannot tell a caught-up partition from one with records still to
    /// read, and waits `idle_partition_ms` for a partition gone silent before it releases the
    /// others' later records.
    pub ends_unknown: Vec<Span>,
    /// Instances of the job in one consumer group (docs/scale-out.md), default 1. With more (or
    /// with any join), the job runs as two stages: each instance checks the records of the input
    /// partitions the group gives it and forwards them to the checked partitions, and the
    /// holder of the lease (the instance with the lowest number) applies them. The reference
    /// for `digest_equals_fault_free` is the one-instance run.
    pub instances: u32,
    /// Kill one instance at each of these instants, chosen by seed (the lease holder too: its
    /// stage 2 crashes and the next holder restarts it from the last checkpoint).
    pub kill_instance_at: Vec<String>,
    /// Kill the lease holder (the instance running stage 2) at each of these instants.
    pub kill_holder_at: Vec<String>,
    /// A new instance joins at each of these instants.
    pub join_instance_at: Vec<String>,
    /// One instance that does not hold the lease leaves gracefully at each of these instants.
    pub leave_instance_at: Vec<String>,
    /// A killed instance is noticed after this long (Kafka's session timeout), milliseconds
    /// (default 10000).
    pub session_timeout_ms: Option<i64>,
    /// A rebalance stops every instance's stage 1 for this long, milliseconds (default 3000).
    pub rebalance_ms: Option<i64>,
    /// The odd-numbered instances' stage 1 checks with another engine configuration than the
    /// scenario's: `max_string_bytes` at most 12, which refuses most of the city's road names.
    /// Stage 2 applies with the scenario's wherever it runs, so the run shows whether what stage
    /// 2 computes depends on which instance checked a record (it must not: stage 2 checks again
    /// a record checked with another configuration). Needs `instances`.
    pub uneven_config: bool,
}

/// What happens to the group's instances.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InstanceEvent {
    /// One instance, chosen by seed, dies.
    Kill,
    /// The lease holder dies.
    KillHolder,
    /// A new instance joins.
    Join,
    /// One instance that does not hold the lease leaves.
    Leave,
}

/// The instances of a run (more than one: the two stages of docs/scale-out.md).
#[derive(Clone, Debug, PartialEq)]
pub struct InstancesPlan {
    /// Instances at the start.
    pub count: u32,
    /// (instant, event), sorted.
    pub events: Vec<(i64, InstanceEvent)>,
    /// See [`FaultsConfig::session_timeout_ms`].
    pub session_timeout_ms: i64,
    /// See [`FaultsConfig::rebalance_ms`].
    pub rebalance_ms: i64,
    /// See [`FaultsConfig::uneven_config`].
    pub uneven_config: bool,
}

/// The faults of a run, resolved to simulated instants.
#[derive(Clone, Debug, PartialEq)]
pub struct FaultPlan {
    /// Crash instants, sorted.
    pub crashes: Vec<i64>,
    /// Crash to restart, ms.
    pub restart_ms: i64,
    /// Seeded interleaving of partition reads.
    pub interleave: bool,
    /// Records per poll at most.
    pub max_poll_records: usize,
    /// Per-partition lag bound, ms.
    pub partition_lag_ms: i64,
    /// Redelivery probability per poll.
    pub duplicate_delivery: f64,
    /// (sink target, from, to, slow_ms).
    pub sink: Vec<(SinkTarget, i64, i64, Option<i64>)>,
    /// (from, to).
    pub kafka: Vec<(i64, i64)>,
    /// (from, to): the partitions' ends unknown.
    pub ends_unknown: Vec<(i64, i64)>,
    /// A tighter bound on pending output than the scenario's `[driver]` one, to exercise
    /// backpressure.
    pub max_pending_items: Option<usize>,
    /// Several instances in one consumer group: the job runs as two stages.
    pub instances: Option<InstancesPlan>,
}

impl Default for FaultPlan {
    /// No fault: partitions read in order, 500 records a poll at most.
    fn default() -> Self {
        FaultPlan {
            crashes: Vec::new(),
            restart_ms: 2_000,
            interleave: false,
            max_poll_records: 500,
            partition_lag_ms: 0,
            duplicate_delivery: 0.0,
            sink: Vec::new(),
            kafka: Vec::new(),
            ends_unknown: Vec::new(),
            max_pending_items: None,
            instances: None,
        }
    }
}

impl FaultPlan {
    /// Whether any fault is planned.
    pub fn is_empty(&self) -> bool {
        self.crashes.is_empty()
            && !self.interleave
            && self.partition_lag_ms == 0
            && self.duplicate_delivery == 0.0
            && self.sink.is_empty()
            && self.kafka.is_empty()
            && self.ends_unknown.is_empty()
            && self.max_pending_items.is_none()
            && self.instances.is_none()
    }

    /// One line per fault, for reports and the swarm.
    pub fn describe(&self) -> Vec<String> {
        let mut out = Vec::new();
        let t = |ms: i64| pipeline::time::format_rfc3339(ms);
        for c in &self.crashes {
            out.push(format!("crash at {}", t(*c)));
        }
        if self.interleave {
            out.push(format!(
                "interleaved reads, up to {} records a poll",
                self.max_poll_records
            ));
        }
        if self.partition_lag_ms > 0 {
            out.push(format!("partition lag up to {} ms", self.partition_lag_ms));
        }
        if self.duplicate_delivery > 0.0 {
            out.push(format!(
                "duplicate delivery p={:.3}",
                self.duplicate_delivery
            ));
        }
        for (s, a, b, slow) in &self.sink {
            let what = slow.map_or("down".to_owned(), |ms| format!("slow by {ms} ms"));
            out.push(format!("{s:?} {what} {} .. {}", t(*a), t(*b)));
        }
        for (a, b) in &self.kafka {
            out.push(format!("kafka away {} .. {}", t(*a), t(*b)));
        }
        for (a, b) in &self.ends_unknown {
            out.push(format!("partitions' ends unknown {} .. {}", t(*a), t(*b)));
        }
        if let Some(n) = self.max_pending_items {
            out.push(format!("pending output bound {n} items"));
        }
        if let Some(i) = &self.instances {
            let events: Vec<String> = i
                .events
                .iter()
                .map(|(at, e)| format!("{e:?} at {}", t(*at)).to_lowercase())
                .collect();
            out.push(format!(
                "{} instances{}{}{}",
                i.count,
                if i.uneven_config {
                    " (odd ones checking with another configuration)"
                } else {
                    ""
                },
                if events.is_empty() { "" } else { ": " },
                events.join(", ")
            ));
        }
        out
    }
}

/// A `[faults]` table that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("[faults]: {0}")]
pub struct FaultsError(pub String);

fn when(text: &str, start_ms: i64, what: &str) -> Result<i64, FaultsError> {
    instant(text, start_ms).ok_or_else(|| {
        FaultsError(format!(
            "{what} = `{text}`: use HH:MM (on the scenario's first day) or an RFC 3339 instant"
        ))
    })
}

fn span(s: &Span, start_ms: i64, what: &str) -> Result<(i64, i64), FaultsError> {
    let from = when(&s.from, start_ms, &format!("{what}.from"))?;
    let d =
        parse_duration_ms(&s.duration).map_err(|e| FaultsError(format!("{what}.duration: {e}")))?;
    if d <= 0 {
        return Err(FaultsError(format!("{what}.duration must be positive")));
    }
    Ok((from, from + d))
}

impl FaultsConfig {
    /// Resolves the table for a run of `[start_ms, end_ms)` with `seed`.
    pub fn plan(&self, seed: u64, start_ms: i64, end_ms: i64) -> Result<FaultPlan, FaultsError> {
        let mut crashes = Vec::new();
        for (i, c) in self.crash_at.iter().enumerate() {
            crashes.push(when(c, start_ms, &format!("crash_at[{i}]"))?);
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xC4A5_11ED);
        for _ in 0..self.random_crashes {
            crashes.push(rng.random_range(start_ms..end_ms.max(start_ms + 1)));
        }
        crashes.sort_unstable();
        if !(0.0..=1.0).contains(&self.duplicate_delivery) {
            return Err(FaultsError("duplicate_delivery must be within 0..1".into()));
        }
        let mut sink = Vec::new();
        for (i, f) in self.sink.iter().enumerate() {
            let (a, b) = span(&f.span, start_ms, &format!("sink[{i}]"))?;
            sink.push((f.sink, a, b, f.slow_ms));
        }
        let mut kafka = Vec::new();
        for (i, s) in self.kafka.iter().enumerate() {
            kafka.push(span(s, start_ms, &format!("kafka[{i}]"))?);
        }
        let mut ends_unknown = Vec::new();
        for (i, s) in self.ends_unknown.iter().enumerate() {
            ends_unknown.push(span(s, start_ms, &format!("ends_unknown[{i}]"))?);
        }
        let mut events = Vec::new();
        for (list, what, event) in [
            (
                &self.kill_instance_at,
                "kill_instance_at",
                InstanceEvent::Kill,
            ),
            (
                &self.kill_holder_at,
                "kill_holder_at",
                InstanceEvent::KillHolder,
            ),
            (
                &self.join_instance_at,
                "join_instance_at",
                InstanceEvent::Join,
            ),
            (
                &self.leave_instance_at,
                "leave_instance_at",
                InstanceEvent::Leave,
            ),
        ] {
            for (i, at) in list.iter().enumerate() {
                events.push((when(at, start_ms, &format!("{what}[{i}]"))?, event));
            }
        }
        events.sort_by_key(|(at, _)| *at);
        let count = self.instances.max(1);
        let instances = (count > 1 || !events.is_empty()).then(|| InstancesPlan {
            count,
            events,
            session_timeout_ms: self.session_timeout_ms.unwrap_or(10_000).max(0),
            rebalance_ms: self.rebalance_ms.unwrap_or(3_000).max(0),
            uneven_config: self.uneven_config,
        });
        Ok(FaultPlan {
            crashes,
            restart_ms: self.restart_ms.unwrap_or(2_000).max(0),
            interleave: self.interleave,
            max_poll_records: self.max_poll_records.unwrap_or(500).max(1),
            partition_lag_ms: self.partition_lag_ms.max(0),
            duplicate_delivery: self.duplicate_delivery,
            sink,
            kafka,
            ends_unknown,
            max_pending_items: None,
            instances,
        })
    }

    /// A seeded mix of every kind of fault, each present with probability one half, for the
    /// swarm: what seed `seed` of `simulator swarm` runs. Partition lag stays below
    /// `lag_bound_ms` (see [`swarm_lag_bound_ms`]).
    pub fn swarm(seed: u64, start_ms: i64, end_ms: i64, lag_bound_ms: i64) -> FaultPlan {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5EA2_F00D);
        let span_ms = (end_ms - start_ms).max(1);
        let at = |rng: &mut ChaCha8Rng| start_ms + rng.random_range(0..span_ms);
        let mut plan = FaultPlan::default();
        if rng.random_bool(0.5) {
            for _ in 0..rng.random_range(1..=3) {
                plan.crashes.push(at(&mut rng));
            }
            plan.crashes.sort_unstable();
            plan.restart_ms = rng.random_range(100..10_000);
        }
        if rng.random_bool(0.5) {
            plan.interleave = true;
            plan.max_poll_records = rng.random_range(1..=2_000);
        }
        if rng.random_bool(0.5) && lag_bound_ms > 0 {
            plan.partition_lag_ms = rng.random_range(0..lag_bound_ms);
        }
        if rng.random_bool(0.5) {
            plan.duplicate_delivery = rng.random_range(0.0..0.05);
        }
        if rng.random_bool(0.5) {
            let target = [SinkTarget::Documents, SinkTarget::Tables, SinkTarget::Both]
                [rng.random_range(0..3)];
            let from = at(&mut rng);
            let len = rng.random_range(5_000..180_000);
            let slow = rng.random_bool(0.5).then(|| rng.random_range(100..60_000));
            plan.sink.push((target, from, from + len, slow));
        }
        if rng.random_bool(0.5) {
            let from = at(&mut rng);
            plan.kafka
                .push((from, from + rng.random_range(5_000..120_000)));
        }
        if rng.random_bool(0.5) {
            plan.max_pending_items = Some(rng.random_range(500..20_000));
        }
        if rng.random_bool(0.5) {
            let mut events = Vec::new();
            for (event, most) in [
                (InstanceEvent::Kill, 2),
                (InstanceEvent::Join, 1),
                (InstanceEvent::Leave, 1),
            ] {
                for _ in 0..rng.random_range(0..=most) {
                    events.push((at(&mut rng), event));
                }
            }
            events.sort_by_key(|(at, _)| *at);
            plan.instances = Some(InstancesPlan {
                count: rng.random_range(2..=4),
                events,
                session_timeout_ms: rng.random_range(1_000..120_000),
                rebalance_ms: rng.random_range(100..5_000),
                uneven_config: rng.random_bool(0.5),
            });
        }
        // Drawn last, so that every earlier draw of a seed is the one it always was. Only for
        // one instance: with several, stage 2 hears of a record when stage 1 forwards it, and
        // without an end to wait for, the order it applies records in follows stage 1's pace
        // (which is what telling stage 2 the input's ends is for; docs/scale-out.md).
        if rng.random_bool(0.5) && plan.instances.is_none() {
            let from = at(&mut rng);
            plan.ends_unknown
                .push((from, from + rng.random_range(1_000..300_000)));
        }
        plan
    }
}

/// The partition lag the swarm may inject into a scenario without changing what a correct job
/// computes. A record that reaches the job later than records of other partitions produced
/// after it is judged against a watermark those records advanced; that is harmless while its
/// event time stays within the watermark delay, so the lag bound is a third of what the
/// generator's own out-of-order delays leave of it. A scenario that makes records late on
/// purpose (`late`, `clock_skew`) gets none: any reordering changes which windows a record that
/// is already late misses, by the definition of late data, not by a fault of the job.
pub fn swarm_lag_bound_ms(generator: &generator::GeneratorConfig, watermark_delay_ms: i64) -> i64 {
    use generator::FaultKind;
    if generator
        .fault
        .iter()
        .any(|f| matches!(f.kind, FaultKind::Late | FaultKind::ClockSkew))
    {
        return 0;
    }
    let out_of_order = generator
        .fault
        .iter()
        .filter(|f| f.kind == FaultKind::OutOfOrder)
        .map(|f| f.delay_ms.unwrap_or(10_000) as i64)
        .max()
        .unwrap_or(0);
    ((watermark_delay_ms - out_of_order) / 3).max(0)
}
