//! Scale-out on a Kafka consumer group (docs/scale-out.md): every instance runs stage 1, the
//! holder of the lease runs stage 2.
//!
//! - **Stage 1, check** ([`forward`]): a consumer *subscribed* to the input topics in the job's
//!   group (`KAFKA_GROUP_ID`), so the group spreads the input partitions over the instances. Each
//!   record goes through the engine's stateless checks ([`Engine::check`]) and is produced to its
//!   checked topic, same partition, same key and Kafka timestamp, its source offset in front of
//!   the checked record ([`Engine::forward`]). Input offsets are committed once Kafka
//!   acknowledged the produce, so a rebalance hands nothing over: the next owner starts at the
//!   committed offset, and what it forwards again is dropped by stage 2's mirror.
//! - **The lease** ([`Lease`]): every instance joins a second group on a one-partition topic; the
//!   member holding that partition runs stage 2. The lease group rebalances cooperatively
//!   (sticky): an instance joining or leaving does not move the lease unless its holder left.
//!   Giving the lease up waits until stage 2 has stopped (its last writes and checkpoint made),
//!   so its successor, which restores that checkpoint from the shared checkpoint location,
//!   never runs beside it.
//! - **Stage 2, apply**: today's job ([`super::run_job`]) reading the checked topics through
//!   the mirror ([`KafkaSource::connect_checked`]), with [`InputFormat::Checked`].
//!
//! A killed instance's input partitions wait for the group's session timeout
//! (`KAFKA_SESSION_TIMEOUT_MS`), and a killed holder's lease too; stage 2 waits for stalled
//! partitions (it is told the input partitions' ends), so the output does not depend on it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use rdkafka::TopicPartitionList;
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaResult;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::sync::watch;

use crate::driver::PartitionId;
use crate::driver::forwarder::Forwarder;
use crate::engine::{Engine, EngineConfig, RawRecord, SourcePosition};
use crate::model::Topic;
use crate::source::SourceError;
use crate::source::kafka::{self, KafkaConfig, backend};

use super::WallClock;
use super::status::ScaleStatus;

/// Checked records produced and not yet acknowledged, at most: past it stage 1 waits for
/// acknowledgements before it takes the next record.
const MAX_IN_FLIGHT: usize = 20_000;

/// Stage 1 commits what Kafka acknowledged this often.
const COMMIT_EVERY: Duration = Duration::from_secs(1);

/// After stage 1 failed (the producer or the consumer broke), wait this long and start it again.
const RESTART_PAUSE: Duration = Duration::from_secs(1);

/// Giving up the lease waits at most this long for stage 2 to stop; then the group goes on
/// (the rebalance cannot wait for ever: `max.poll.interval.ms`).
const RELEASE_WAIT: Duration = Duration::from_secs(120);

/// What the instance's two stages did, for `/metrics` and the logs.
#[derive(Debug, Default)]
pub struct ScaleStats {
    /// Rebalances of the input group that changed this instance's stage-1 partitions.
    pub rebalances: AtomicU64,
    /// Input partitions stage 1 holds now.
    pub assigned: AtomicU64,
    /// Records stage 1 forwarded (acknowledged by Kafka).
    pub forwarded: AtomicU64,
    /// Times stage 1 failed and was started again.
    pub restarts: AtomicU64,
    /// Whether this instance holds the lease.
    pub lease_held: AtomicBool,
    /// Times this instance took the lease.
    pub leases_taken: AtomicU64,
    /// Whether stage 2 runs here now (giving the lease up waits until it does not).
    pub applying: AtomicBool,
}

impl ScaleStats {
    /// A copy for the status board.
    pub fn status(&self) -> ScaleStatus {
        ScaleStatus {
            rebalances: self.rebalances.load(Ordering::Relaxed),
            assigned: self.assigned.load(Ordering::Relaxed),
            forwarded: self.forwarded.load(Ordering::Relaxed),
            restarts: self.restarts.load(Ordering::Relaxed),
            lease_held: self.lease_held.load(Ordering::Relaxed),
            leases_taken: self.leases_taken.load(Ordering::Relaxed),
        }
    }
}

/// The input group's member: its [`Forwarder`], told of every rebalance. A revocation commits
/// what was acknowledged of the partitions taken away before the group hands them on.
struct InputContext {
    stats: Arc<ScaleStats>,
    config: KafkaConfig,
    forwarder: Mutex<Forwarder>,
}

impl InputContext {
    fn forwarder(&self) -> std::sync::MutexGuard<'_, Forwarder> {
        self.forwarder
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The positions (last source offset per partition) a commit list holds.
    fn positions(&self, tpl: &TopicPartitionList) -> Vec<(PartitionId, i64)> {
        tpl.elements()
            .iter()
            .filter_map(|e| {
                let next = e.offset().to_raw().filter(|o| *o > 0)?;
                Some(((self.config.topic_of(e.topic())?, e.partition()), next - 1))
            })
            .collect()
    }

    /// The input partitions of a rebalance's list.
    fn ids(&self, tpl: &TopicPartitionList) -> Vec<PartitionId> {
        tpl.elements()
            .iter()
            .filter_map(|e| Some((self.config.topic_of(e.topic())?, e.partition())))
            .collect()
    }
}

impl ClientContext for InputContext {}

impl ConsumerContext for InputContext {
    fn pre_rebalance(&self, c: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else {
            return;
        };
        let ids = self.ids(tpl);
        let positions = self.forwarder().revoked(ids.iter().copied());
        self.stats.rebalances.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            removed = ids.len(),
            committed = positions.len(),
            "Stage 1: the group takes input partitions from this instance."
        );
        commit(c, &self.config, &positions, CommitMode::Sync);
    }

    /// An asynchronous commit's outcome: one that failed (Kafka away, say) is owed again, so
    /// the next commit tick retries it even if the input went quiet meanwhile.
    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        if let Err(e) = result {
            let positions = self.positions(offsets);
            tracing::warn!(error = %e, partitions = positions.len(), "Stage 1: committing input offsets failed; the next commit retries them.");
            self.forwarder().commit_failed(&positions);
        }
    }

    fn post_rebalance(&self, _c: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let mut f = self.forwarder();
        match rebalance {
            Rebalance::Assign(tpl) => {
                let ids = self.ids(tpl);
                f.assigned(ids.iter().copied());
                self.stats.rebalances.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    added = ids.len(),
                    holds = f.owned(),
                    "Stage 1: the group gave this instance input partitions."
                );
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => tracing::warn!(error = %e, "Stage 1: rebalancing failed."),
        }
        self.stats
            .assigned
            .store(f.owned() as u64, Ordering::Relaxed);
    }
}

/// A group member's common settings: cooperative rebalancing, the session timeout, explicit
/// commits.
fn member_config(config: &KafkaConfig, group: &str) -> ClientConfig {
    let mut c = config.client_config();
    c.set("group.id", group)
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("session.timeout.ms", config.session_timeout_ms.to_string())
        .set(
            "heartbeat.interval.ms",
            (config.session_timeout_ms / 4).max(100).to_string(),
        )
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest");
    c
}

/// Stage 1 until `stop` says so, started again after each failure (saying so): the job never
/// exits because Kafka is slow or away.
pub async fn forward(
    config: KafkaConfig,
    engine: EngineConfig,
    stats: Arc<ScaleStats>,
    mut stop: watch::Receiver<bool>,
) {
    let checker = match Engine::new(engine) {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(error = %e, "Stage 1 cannot check records: invalid engine configuration.");
            return;
        }
    };
    loop {
        match forward_once(&config, &checker, &stats, &mut stop).await {
            Ok(()) => return,
            Err(e) => {
                stats.restarts.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "Stage 1 failed; starting it again (records not committed are forwarded again, and dropped by stage 2).");
                tokio::select! {
                    () = stopped(&mut stop) => return,
                    () = tokio::time::sleep(RESTART_PAUSE) => {}
                }
            }
        }
    }
}

/// Resolves once `stop` says so (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// An acknowledgement: the partition, its ownership epoch, the source offset, and whether Kafka
/// took it.
type Ack = (PartitionId, u64, i64, Result<(), String>);

async fn forward_once(
    config: &KafkaConfig,
    checker: &Engine,
    stats: &Arc<ScaleStats>,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), String> {
    let ctx = InputContext {
        stats: Arc::clone(stats),
        config: config.clone(),
        forwarder: Mutex::new(Forwarder::new()),
    };
    let consumer: StreamConsumer<InputContext> = member_config(config, &config.group_id)
        .set("fetch.wait.max.ms", "50")
        .set(
            "queued.max.messages.kbytes",
            config.read_ahead_kbytes.max(1).to_string(),
        )
        .set("fetch.queue.backoff.ms", "10")
        .create_with_context(ctx)
        .map_err(|e| format!("cannot create the stage-1 consumer: {e}"))?;
    let producer: FutureProducer = config
        .client_config()
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        // Kafka away for any time: keep the records and retry (idempotent, so in order and once).
        .set("message.timeout.ms", "0")
        .create()
        .map_err(|e| format!("cannot create the stage-1 producer: {e}"))?;
    let names: Vec<String> = Topic::ALL.iter().map(|t| config.topic_name(*t)).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    consumer
        .subscribe(&refs)
        .map_err(|e| format!("cannot subscribe to {names:?}: {e}"))?;
    let mut in_flight = FuturesOrdered::new();
    let mut commit_tick = tokio::time::interval(COMMIT_EVERY);
    let mut buf = Vec::new();
    loop {
        tokio::select! {
            biased;
            () = stopped(stop) => break,
            Some(ack) = in_flight.next(), if !in_flight.is_empty() => {
                let (id, epoch, offset, result): Ack = ack;
                result?;
                stats.forwarded.fetch_add(1, Ordering::Relaxed);
                consumer.context().forwarder().acked(id, epoch, offset);
            }
            _ = commit_tick.tick() => {
                let positions = consumer.context().forwarder().to_commit();
                commit(&consumer, config, &positions, CommitMode::Async);
            }
            m = consumer.recv(), if in_flight.len() < MAX_IN_FLIGHT => {
                let m = match m {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(error = %e, "Stage 1: receiving failed; polling on.");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                };
                let Some(topic) = config.topic_of(m.topic()) else { continue };
                let id = (topic, m.partition());
                // Read before a revocation took effect: the next owner forwards it.
                let Some(epoch) = consumer.context().forwarder().send(id) else { continue };
                let value = m.payload().unwrap_or_default();
                let key = m.key().unwrap_or_default();
                let ts = m.timestamp().to_millis().unwrap_or(0);
                let raw = RawRecord {
                    topic,
                    key,
                    value,
                    kafka_timestamp_ms: ts,
                    position: SourcePosition { partition: m.partition(), offset: m.offset() },
                };
                buf.clear();
                buf.extend_from_slice(&m.offset().to_le_bytes());
                checker.forward(&raw, &mut buf);
                let name = config.checked_topic_name(topic);
                let mut record = FutureRecord::to(&name)
                    .partition(m.partition())
                    .key(key)
                    .payload(&buf)
                    .timestamp(ts);
                let delivery = loop {
                    match producer.send_result(record) {
                        Ok(d) => break d,
                        Err((e, back)) => {
                            // The producer's queue is full: wait for room.
                            if !matches!(e, rdkafka::error::KafkaError::MessageProduction(
                                rdkafka::types::RDKafkaErrorCode::QueueFull)) {
                                return Err(format!("cannot produce to {name}: {e}"));
                            }
                            record = back;
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    }
                };
                let offset = m.offset();
                in_flight.push_back(async move {
                    let result = match delivery.await {
                        Ok(Ok(_)) => Ok(()),
                        Ok(Err((e, _))) => Err(format!("Kafka refused a checked record: {e}")),
                        Err(_) => Err("the producer went away".to_owned()),
                    };
                    (id, epoch, offset, result)
                });
            }
        }
    }
    // Stopping: what was sent is acknowledged (bounded), committed, and the group left.
    let deadline = tokio::time::sleep(Duration::from_secs(10));
    tokio::pin!(deadline);
    while !in_flight.is_empty() {
        tokio::select! {
            Some((id, epoch, offset, result)) = in_flight.next() => {
                if result.is_ok() {
                    stats.forwarded.fetch_add(1, Ordering::Relaxed);
                    consumer.context().forwarder().acked(id, epoch, offset);
                }
            }
            () = &mut deadline => break,
        }
    }
    tokio::task::block_in_place(|| {
        let positions = consumer.context().forwarder().to_commit();
        commit(&consumer, config, &positions, CommitMode::Sync);
        consumer.unsubscribe();
    });
    Ok(())
}

/// Commits stage 1's `positions` (the last source offset acknowledged per partition):
/// asynchronously while running (a failed one is owed again: the commit callback, or the error
/// here, tells the forwarder, and the next tick retries it), synchronously when giving
/// partitions up.
fn commit<C: Consumer<InputContext>>(
    consumer: &C,
    config: &KafkaConfig,
    positions: &[(PartitionId, i64)],
    mode: CommitMode,
) {
    let tpl = kafka::commit_list(config, false, positions);
    if tpl.count() > 0
        && let Err(e) = consumer.commit(&tpl, mode)
    {
        tracing::warn!(error = %e, "Stage 1: committing input offsets failed; the next commit retries.");
        consumer.context().forwarder().commit_failed(positions);
    }
}

/// The lease group's member: says when the lease is taken and given up; giving it up waits
/// until stage 2 stopped.
struct LeaseContext {
    stats: Arc<ScaleStats>,
    held: watch::Sender<bool>,
}

impl ClientContext for LeaseContext {}

impl ConsumerContext for LeaseContext {
    fn pre_rebalance(&self, _c: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else {
            return;
        };
        if tpl.count() == 0 {
            return;
        }
        tracing::info!("The lease is taken from this instance: stopping stage 2.");
        self.stats.lease_held.store(false, Ordering::Relaxed);
        self.held.send_replace(false);
        let clock = WallClock;
        let started = clock.instant();
        while self.stats.applying.load(Ordering::Acquire) && started.elapsed() < RELEASE_WAIT {
            std::thread::sleep(Duration::from_millis(20));
        }
        if self.stats.applying.load(Ordering::Acquire) {
            tracing::warn!(
                waited_s = RELEASE_WAIT.as_secs(),
                "Stage 2 did not stop in time; giving the lease up anyway."
            );
        }
    }

    fn post_rebalance(&self, _c: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance
            && tpl.count() > 0
        {
            tracing::info!("This instance holds the lease: starting stage 2.");
            self.stats.lease_held.store(true, Ordering::Relaxed);
            self.stats.leases_taken.fetch_add(1, Ordering::Relaxed);
            self.held.send_replace(true);
        }
    }
}

/// This instance's membership of the lease group, polled on a thread of its own (a revocation
/// blocks its thread until stage 2 stopped).
#[derive(Debug)]
pub struct Lease {
    held: watch::Receiver<bool>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Lease {
    /// Joins the lease group.
    pub fn join(config: &KafkaConfig, stats: Arc<ScaleStats>) -> Result<Self, SourceError> {
        let (tx, held) = watch::channel(false);
        let consumer: BaseConsumer<LeaseContext> = member_config(config, &config.lease_group())
            .create_with_context(LeaseContext { stats, held: tx })
            .map_err(|e| backend(format!("cannot create the lease consumer: {e}")))?;
        let topic = config.lease_topic();
        consumer
            .subscribe(&[&topic])
            .map_err(|e| backend(format!("cannot subscribe to {topic}: {e}")))?;
        let stop = Arc::new(AtomicBool::new(false));
        let s = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("lease".into())
            .spawn(move || {
                while !s.load(Ordering::Relaxed) {
                    // Nothing is ever produced to the lease topic: polling serves the group.
                    let _ = consumer.poll(Duration::from_millis(100));
                }
                consumer.unsubscribe();
                // Serve the revocation the unsubscribe causes, then leave.
                let _ = consumer.poll(Duration::from_millis(100));
            })
            .map_err(|e| backend(format!("cannot start the lease thread: {e}")))?;
        Ok(Lease {
            held,
            stop,
            thread: Some(thread),
        })
    }

    /// A receiver of whether the lease is held.
    pub fn held(&self) -> watch::Receiver<bool> {
        self.held.clone()
    }

    /// Leaves the lease group (stage 2 must have stopped).
    pub fn leave(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = tokio::task::block_in_place(|| t.join());
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The input partitions, the checked topics and the lease topic, made sure of.
pub async fn prepare(config: &KafkaConfig) -> Result<Vec<PartitionId>, SourceError> {
    kafka::ensure_topics(config).await?;
    let c = config.clone();
    let partitions = tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = c
            .client_config()
            .create()
            .map_err(|e| backend(format!("cannot create a client: {e}")))?;
        kafka::partitions_of(&consumer, &c)
    })
    .await
    .map_err(|e| backend(format!("metadata task failed: {e}")))??;
    kafka::ensure_checked_topics(config, &partitions).await?;
    Ok(partitions)
}
