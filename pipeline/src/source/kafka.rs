//! The Kafka source: an rdkafka consumer of the four topics with explicit, synchronous commits.
//!
//! The consumer is *assigned* every partition of the four topics rather than subscribed through
//! the group protocol: the engine's state is city-wide (the mobility index spans every sensor),
//! so one pipeline instance must own every partition, and a rebalance could only split that state
//! wrongly. Assignment also lets a restart start exactly at the positions stored in the
//! checkpoint. The consumer group (`smart-city-pipeline` by default) is still used to commit
//! offsets, so `kafka-consumer-groups` shows the lag. With a checkpoint, the checkpoint is the
//! authority: a partition it lists resumes right after its position, and a partition it does not
//! list was never consumed into that state, so it starts at the beginning. Without a checkpoint
//! (first start, or a lost one) every partition resumes from the group's committed offset, or
//! the earliest one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{FutureExt, StreamExt};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use crate::driver::PartitionId;
use crate::driver::mirror::Mirror;
use crate::model::Topic;
use crate::streaming::WallClock;

use super::{Source, SourceError, SourceRecord};

/// A partition, the next offset the consumer hands over, and its end, each when known.
pub type Progress = (PartitionId, Option<i64>, Option<i64>);

const NAME: &str = "kafka";

/// What a checked topic's name adds to its input topic's.
const CHECKED_SUFFIX: &str = "-checked";

/// How to reach Kafka and which topics to read.
#[derive(Clone, Debug)]
pub struct KafkaConfig {
    /// `host:port[,host:port]`.
    pub bootstrap_servers: String,
    /// Consumer group used for offset commits.
    pub group_id: String,
    /// Prefix put before every topic name (empty in production; tests use a unique one).
    pub topic_prefix: String,
    /// Partitions of a topic the pipeline has to create because it does not exist yet.
    pub partitions_if_created: i32,
    /// librdkafka's read-ahead: kilobytes of fetched records its consumer queue may hold before
    /// it stops fetching (`queued.max.messages.kbytes`); default
    /// [`super::DEFAULT_READ_AHEAD_KBYTES`].
    pub read_ahead_kbytes: u32,
    /// Scale-out (docs/scale-out.md): how long the group waits for a silent instance before it
    /// hands its input partitions, or the lease, to the others (`session.timeout.ms`).
    pub session_timeout_ms: u32,
}

impl KafkaConfig {
    /// The Kafka topic name of `topic` with the configured prefix.
    pub fn topic_name(&self, topic: Topic) -> String {
        format!("{}{}", self.topic_prefix, topic.name())
    }

    /// The dead-letter topic's name with the configured prefix.
    pub fn dead_letter_topic(&self) -> String {
        format!("{}dead-letters", self.topic_prefix)
    }

    /// The topic a Kafka topic name stands for, if it is one of the four (with the prefix).
    pub fn topic_of(&self, name: &str) -> Option<Topic> {
        name.strip_prefix(&self.topic_prefix)?.parse().ok()
    }

    /// Scale-out: the checked topic of `topic`, where stage 1 forwards its checked records,
    /// partition for partition.
    pub fn checked_topic_name(&self, topic: Topic) -> String {
        format!("{}{}{CHECKED_SUFFIX}", self.topic_prefix, topic.name())
    }

    /// The topic a checked topic's name stands for.
    pub fn checked_topic_of(&self, name: &str) -> Option<Topic> {
        self.topic_of(name.strip_suffix(CHECKED_SUFFIX)?)
    }

    /// Scale-out: the one-partition topic whose owner in [`KafkaConfig::lease_group`] runs
    /// stage 2.
    pub fn lease_topic(&self) -> String {
        format!("{}pipeline-lease", self.topic_prefix)
    }

    /// Scale-out: the group every instance joins for the lease.
    pub fn lease_group(&self) -> String {
        format!("{}-lease", self.group_id)
    }

    /// Scale-out: the group stage 2 commits its checked offsets in (it assigns itself the
    /// checked partitions; stage 1's group is `group_id`).
    pub fn apply_group(&self) -> String {
        format!("{}-apply", self.group_id)
    }

    /// A client configuration with the bootstrap servers set.
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap_servers);
        c
    }
}

/// The name of the topic read for `topic`: the input topic, or with `checked` (stage 2) its
/// checked topic.
fn read_name(config: &KafkaConfig, checked: bool, topic: Topic) -> String {
    match checked {
        true => config.checked_topic_name(topic),
        false => config.topic_name(topic),
    }
}

/// The list a commit of `positions` (the last offset processed per partition) sends: each
/// partition's next offset, in the topics read (see [`read_name`]).
pub(crate) fn commit_list(
    config: &KafkaConfig,
    checked: bool,
    positions: &[(PartitionId, i64)],
) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for &((t, p), last) in positions {
        // An offset is always accepted for a partition just added.
        let _ =
            tpl.add_partition_offset(&read_name(config, checked, t), p, Offset::Offset(last + 1));
    }
    tpl
}

pub(crate) fn backend(detail: String) -> SourceError {
    SourceError::Backend {
        source_name: NAME,
        detail,
    }
}

/// Checks that a broker answers a metadata request within `timeout`.
pub async fn ping(config: &KafkaConfig, timeout: Duration) -> Result<(), SourceError> {
    let client_config = config.client_config();
    let servers = config.bootstrap_servers.clone();
    // Metadata requests block the calling thread; keep them off the runtime's workers.
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = client_config
            .create()
            .map_err(|e| backend(format!("cannot create a client for {servers}: {e}")))?;
        consumer
            .fetch_metadata(None, timeout)
            .map(|_| ())
            .map_err(|e| backend(format!("no metadata from {servers}: {e}")))
    })
    .await
    .map_err(|e| backend(format!("metadata task failed: {e}")))?
}

/// Creates the topics that do not exist yet (the four input topics and `dead-letters`), with
/// `partitions_if_created` partitions and replication factor 1. Existing topics are left as they
/// are.
pub async fn ensure_topics(config: &KafkaConfig) -> Result<(), SourceError> {
    let mut names: Vec<String> = Topic::ALL.iter().map(|t| config.topic_name(*t)).collect();
    names.push(config.dead_letter_topic());
    let partitions = config.partitions_if_created.max(1);
    let topics: Vec<(String, i32)> = names.into_iter().map(|n| (n, partitions)).collect();
    create_topics(config, &topics).await
}

/// Scale-out: creates the checked topics that do not exist yet, each with its input topic's
/// partition count (`partitions`: every input partition), and the one-partition lease topic.
pub async fn ensure_checked_topics(
    config: &KafkaConfig,
    partitions: &[PartitionId],
) -> Result<(), SourceError> {
    let mut topics: Vec<(String, i32)> = Topic::ALL
        .iter()
        .map(|&t| {
            let n = partitions.iter().filter(|(x, _)| *x == t).count() as i32;
            (config.checked_topic_name(t), n.max(1))
        })
        .collect();
    topics.push((config.lease_topic(), 1));
    create_topics(config, &topics).await
}

/// Creates the topics (name, partitions) that do not exist yet, replication factor 1.
async fn create_topics(config: &KafkaConfig, topics: &[(String, i32)]) -> Result<(), SourceError> {
    let admin: AdminClient<DefaultClientContext> = config
        .client_config()
        .create()
        .map_err(|e| backend(format!("cannot create an admin client: {e}")))?;
    let names: Vec<&String> = topics.iter().map(|(n, _)| n).collect();
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(n, p)| NewTopic::new(n, *p, TopicReplication::Fixed(1)))
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .create_topics(new.iter(), &opts)
        .await
        .map_err(|e| backend(format!("cannot create topics {names:?}: {e}")))?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(backend(format!("cannot create topic {name}: {code}")));
            }
        }
    }
    Ok(())
}

/// The Kafka consumer. See the module docs.
pub struct KafkaSource {
    consumer: Arc<StreamConsumer>,
    config: KafkaConfig,
    partitions: Vec<(Topic, i32)>,
    /// Each partition's topic name, by index in `partitions`: the input topic's, or the
    /// checked topic's for stage 2.
    names: Vec<String>,
    /// Each partition's high watermark as last fetched (-1 until known), by index in
    /// `partitions`: always the *input* partition's (for stage 2 too, so that a partition is
    /// caught up only when every input record was applied, whatever stage 1 forwarded yet).
    ends: Arc<Vec<AtomicI64>>,
    /// Stage 2 of a scale-out (docs/scale-out.md): the checked partitions are read in place of
    /// the input partitions, through the mirror.
    checked: Option<Checked>,
    /// Tells the watermark thread to stop.
    stop: Arc<AtomicBool>,
}

/// Stage 2's reading of the checked topics: the mirror, and each input partition's first offset
/// (where a partition stands before the mirror handed anything over).
struct Checked {
    mirror: Mirror,
    low: Vec<i64>,
    /// Start every checked partition at its beginning: the checkpoint restored is older than
    /// the newest one, so the group's committed offsets may be past it.
    rewind: bool,
}

impl Drop for KafkaSource {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// How often the watermark thread asks the broker where each partition ends.
const WATERMARK_PERIOD: Duration = Duration::from_millis(100);

/// Keeps `ends` current: the broker's high watermark of every partition, asked every
/// [`WATERMARK_PERIOD`]. A value is at most that old, so a partition looks caught up for at most
/// that long after new records landed — far below any watermark delay. A failed query makes the
/// partition's end unknown (-1) until one succeeds: kept, a stale end would make a partition
/// that keeps receiving records look caught up for as long as the queries fail, and the
/// driver's merge would release other partitions' later records ahead of its own. Unknown, the
/// driver waits `idle_partition_ms` for a partition gone silent instead. Failures are said at
/// most once a minute, and their end once.
fn watch_watermarks(
    consumer: Arc<StreamConsumer>,
    names: Vec<(String, i32)>,
    ends: Arc<Vec<AtomicI64>>,
    stop: Arc<AtomicBool>,
) {
    let mut failing: Option<(Instant, u64)> = None;
    let mut warned: Option<Instant> = None;
    while !stop.load(Ordering::Relaxed) {
        for (i, (name, p)) in names.iter().enumerate() {
            match consumer.fetch_watermarks(name, *p, Duration::from_secs(1)) {
                Ok((_, hi)) => ends[i].store(hi, Ordering::Relaxed),
                Err(e) => {
                    ends[i].store(-1, Ordering::Relaxed);
                    let (since, errors) = failing.get_or_insert_with(|| (WallClock.instant(), 0));
                    *errors += 1;
                    if warned.is_none_or(|w| w.elapsed() >= Duration::from_secs(60)) {
                        warned = Some(WallClock.instant());
                        tracing::warn!(
                            topic = %name,
                            partition = *p,
                            error = %e,
                            errors = *errors,
                            failing_for_s = since.elapsed().as_secs(),
                            "Cannot ask Kafka where partitions end; until it answers, a partition \
                             gone silent is waited for idle_partition_ms before the others' \
                             records are released."
                        );
                    }
                }
            }
        }
        if let Some((since, errors)) =
            failing.take_if(|_| ends.iter().all(|e| e.load(Ordering::Relaxed) >= 0))
        {
            warned = None;
            tracing::info!(
                errors,
                failed_for_s = since.elapsed().as_secs(),
                "Kafka answers again where partitions end."
            );
        }
        std::thread::sleep(WATERMARK_PERIOD);
    }
}

impl std::fmt::Debug for KafkaSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSource")
            .field("config", &self.config)
            .field("partitions", &self.partitions)
            .finish_non_exhaustive()
    }
}

/// Where to start reading a partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// At this offset.
    At(i64),
    /// At the first offset the partition still holds.
    Beginning,
    /// At the group's committed offset, or the earliest.
    Committed,
}

impl KafkaSource {
    /// Connects and creates missing topics; returns the source with its partitions known but
    /// nothing assigned yet (see [`KafkaSource::assign`]).
    pub async fn connect(config: KafkaConfig) -> Result<Self, SourceError> {
        Self::connect_with(config, None).await
    }

    /// Stage 2 of a scale-out: reads the checked topics (creating them like the input's, one
    /// checked partition per input partition) through a [`Mirror`] restored from the
    /// checkpoint's `positions`; records come out with their source offsets, the partitions'
    /// ends are the input's, and commits of source positions go to the checked offsets that
    /// hold them, in [`KafkaConfig::apply_group`]. `rewind`: the checkpoint is older than the
    /// newest (which was refused), so every checked partition is read from its beginning and the
    /// mirror drops what the checkpoint covers.
    pub async fn connect_checked(
        mut config: KafkaConfig,
        positions: impl IntoIterator<Item = (PartitionId, i64)>,
        rewind: bool,
    ) -> Result<Self, SourceError> {
        config.group_id = config.apply_group();
        let checked = Checked {
            mirror: Mirror::restored(positions),
            low: Vec::new(),
            rewind,
        };
        Self::connect_with(config, Some(checked)).await
    }

    async fn connect_with(
        config: KafkaConfig,
        mut checked: Option<Checked>,
    ) -> Result<Self, SourceError> {
        ensure_topics(&config).await?;
        let consumer: StreamConsumer = config
            .client_config()
            .set("group.id", &config.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            // Small fetch waits keep alert latency low at the thesis load.
            .set("fetch.wait.max.ms", "50")
            // The driver holds what it reads ahead; librdkafka's own read-ahead is bounded too
            // (its default is 64 MB; one bound for the consumer queue of all partitions), and one
            // fetch may overshoot it by `fetch.max.bytes`.
            .set(
                "queued.max.messages.kbytes",
                config.read_ahead_kbytes.max(1).to_string(),
            )
            .set("fetch.max.bytes", "4194304")
            // When the read-ahead is full librdkafka postpones the next fetch by this much
            // (default 1 s): with a small read-ahead that pause, not the job, set the pace.
            .set("fetch.queue.backoff.ms", "10")
            .create()
            .map_err(|e| backend(format!("cannot create a consumer: {e}")))?;
        let consumer = Arc::new(consumer);
        let c = Arc::clone(&consumer);
        let config2 = config.clone();
        let partitions = tokio::task::spawn_blocking(move || partitions_of(&*c, &config2))
            .await
            .map_err(|e| backend(format!("metadata task failed: {e}")))??;
        let ends: Arc<Vec<AtomicI64>> =
            Arc::new(partitions.iter().map(|_| AtomicI64::new(-1)).collect());
        let stop = Arc::new(AtomicBool::new(false));
        let inputs: Vec<String> = partitions
            .iter()
            .map(|(t, _)| config.topic_name(*t))
            .collect();
        let names: Vec<String> = match &mut checked {
            None => inputs.clone(),
            Some(c) => {
                ensure_checked_topics(&config, &partitions).await?;
                c.low = vec![0; partitions.len()];
                partitions
                    .iter()
                    .map(|(t, _)| config.checked_topic_name(*t))
                    .collect()
            }
        };
        let watched = inputs.into_iter().zip(partitions.iter().map(|p| p.1));
        let watched = watched.collect();
        let (c, e, st) = (Arc::clone(&consumer), Arc::clone(&ends), Arc::clone(&stop));
        std::thread::Builder::new()
            .name("kafka-watermarks".into())
            .spawn(move || watch_watermarks(c, watched, e, st))
            .map_err(|e| backend(format!("cannot start the watermark thread: {e}")))?;
        Ok(KafkaSource {
            consumer,
            config,
            partitions,
            names,
            ends,
            stop,
            checked,
        })
    }

    /// The partitions of the four topics.
    pub fn partitions(&self) -> &[(Topic, i32)] {
        &self.partitions
    }

    /// Assigns the partitions where told. A committed start is resolved to the group's
    /// committed offset (or the partition's first offset) first, so every partition's next
    /// offset is known from the start; returns it per partition.
    ///
    /// Stage 2 resumes each checked partition at its group's committed offset (commits follow
    /// checkpoints, so that is at or before the checkpoint's position; the mirror drops what
    /// the checkpoint covers), or at its beginning where told so or rewound; the offsets
    /// returned are source offsets: the mirror's next one, or the input partition's first.
    pub async fn assign(
        &mut self,
        starts: &[((Topic, i32), Start)],
    ) -> Result<Vec<((Topic, i32), i64)>, SourceError> {
        let consumer = Arc::clone(&self.consumer);
        let config = self.config.clone();
        let mut starts = starts.to_vec();
        let checked = self.checked.as_ref().map(|c| c.rewind);
        if let Some(rewind) = checked {
            for (_, s) in &mut starts {
                *s = match s {
                    Start::Beginning => Start::Beginning,
                    _ if rewind => Start::Beginning,
                    Start::At(_) | Start::Committed => Start::Committed,
                };
            }
        }
        let resolved = tokio::task::spawn_blocking(move || {
            let resolved = assign_blocking(&consumer, &config, &starts, checked.is_some())?;
            if checked.is_none() {
                return Ok(resolved);
            }
            // Where each input partition starts, for the partitions the mirror has not
            // handed anything over from yet.
            let timeout = Duration::from_secs(10);
            let mut lows = Vec::with_capacity(resolved.len());
            for &((t, p), _) in &resolved {
                let name = config.topic_name(t);
                let (low, _) = consumer
                    .fetch_watermarks(&name, p, timeout)
                    .map_err(|e| backend(format!("no watermarks of {name}/{p}: {e}")))?;
                lows.push(((t, p), low));
            }
            Ok(lows)
        })
        .await
        .map_err(|e| backend(format!("assignment task failed: {e}")))??;
        let Some(c) = self.checked.as_mut() else {
            return Ok(resolved);
        };
        let mut out = Vec::with_capacity(resolved.len());
        for (id, low) in resolved {
            if let Some(i) = self.partitions.iter().position(|p| *p == id) {
                c.low[i] = low;
            }
            out.push((id, c.mirror.next_source(id).unwrap_or(low)));
        }
        Ok(out)
    }

    /// Where each assigned partition stands, without a network round trip: the next offset the
    /// consumer hands over, and the partition's end (its high watermark, at most
    /// [`WATERMARK_PERIOD`] old), when known.
    pub fn progress(&self) -> Vec<Progress> {
        let positions = match self.checked {
            Some(_) => None,
            None => self.consumer.position().ok(),
        };
        self.partitions
            .iter()
            .enumerate()
            .map(|(i, &(t, p))| {
                let next = match &self.checked {
                    Some(c) => Some(c.mirror.next_source((t, p)).unwrap_or(c.low[i])),
                    None => positions
                        .as_ref()
                        .and_then(|tpl| tpl.find_partition(&self.names[i], p))
                        .and_then(|e| e.offset().to_raw())
                        .filter(|o| *o >= 0),
                };
                let end = Some(self.ends[i].load(Ordering::Relaxed)).filter(|hi| *hi >= 0);
                ((t, p), next, end)
            })
            .collect()
    }

    /// Stops fetching these partitions (librdkafka drops what it read ahead of them and resumes
    /// from the last record handed over).
    pub fn pause(&self, partitions: &[(Topic, i32)]) -> Result<(), SourceError> {
        let tpl = self.tpl(partitions);
        self.consumer
            .pause(&tpl)
            .map_err(|e| backend(format!("cannot pause {partitions:?}: {e}")))
    }

    /// Fetches these partitions again.
    pub fn resume(&self, partitions: &[(Topic, i32)]) -> Result<(), SourceError> {
        let tpl = self.tpl(partitions);
        self.consumer
            .resume(&tpl)
            .map_err(|e| backend(format!("cannot resume {partitions:?}: {e}")))
    }

    fn tpl(&self, partitions: &[(Topic, i32)]) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        for &(t, p) in partitions {
            tpl.add_partition(&read_name(&self.config, self.checked.is_some(), t), p);
        }
        tpl
    }

    /// What to commit for source positions (last offset processed per partition): the
    /// partitions read and the last offset of each read; for stage 2, the checked offsets
    /// holding those positions.
    fn commit_list(&mut self, positions: &[(PartitionId, i64)]) -> TopicPartitionList {
        match self.checked.as_mut() {
            Some(c) => commit_list(&self.config, true, &c.mirror.commit(positions)),
            None => commit_list(&self.config, false, positions),
        }
    }

    /// Commits positions (last offset processed per partition) without blocking the caller's
    /// task: the commit is a synchronous round trip on a blocking thread.
    pub fn commit_in_background(
        &mut self,
        positions: Vec<((Topic, i32), i64)>,
    ) -> tokio::task::JoinHandle<Result<(), SourceError>> {
        let consumer = Arc::clone(&self.consumer);
        let tpl = self.commit_list(&positions);
        tokio::task::spawn_blocking(move || {
            if tpl.count() == 0 {
                return Ok(());
            }
            consumer
                .commit(&tpl, CommitMode::Sync)
                .map_err(|e| backend(format!("commit of {positions:?} failed: {e}")))
        })
    }

    /// The record as the driver is to see it. Stage 2: a checked record is its source offset
    /// (8 bytes, little-endian) then the checked record; it comes out with the source offset,
    /// or not at all when it was forwarded twice (or is not a checked record).
    fn record(&mut self, m: &BorrowedMessage<'_>) -> Option<SourceRecord> {
        let payload = m.payload().unwrap_or_default();
        let (topic, offset, value) = match self.checked.as_mut() {
            None => (self.config.topic_of(m.topic())?, m.offset(), payload),
            Some(c) => {
                let topic = self.config.checked_topic_of(m.topic())?;
                let (head, value) = payload.split_at_checked(8)?;
                let source = i64::from_le_bytes(head.try_into().ok()?);
                if !c.mirror.accept((topic, m.partition()), m.offset(), source) {
                    return None;
                }
                (topic, source, value)
            }
        };
        Some(SourceRecord {
            topic,
            partition: m.partition(),
            offset,
            key: m.key().map(<[u8]>::to_vec).unwrap_or_default(),
            value: value.to_vec(),
            timestamp_ms: m.timestamp().to_millis().unwrap_or(0),
        })
    }

    /// Stage 2: records dropped because stage 1 forwarded them twice.
    pub fn forwarded_twice(&self) -> u64 {
        self.checked.as_ref().map_or(0, |c| c.mirror.dropped)
    }
}

/// The group's committed offsets. A group's coordinator may not be ready yet (a new group, a
/// broker that just started: `NotCoordinator`, `CoordinatorLoadInProgress`): that is retried,
/// saying so, for up to a minute.
fn committed_with_retries(
    consumer: &StreamConsumer,
    tpl: &TopicPartitionList,
    timeout: Duration,
) -> Result<TopicPartitionList, SourceError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match consumer.committed_offsets(tpl.clone(), timeout) {
            Ok(c) => return Ok(c),
            Err(e) if attempt < 120 => {
                tracing::info!(attempt, error = %e, "The consumer group's coordinator is not ready; asking again.");
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => return Err(backend(format!("cannot read the committed offsets: {e}"))),
        }
    }
}

/// Resolves committed starts and assigns; see [`KafkaSource::assign`].
fn assign_blocking(
    consumer: &StreamConsumer,
    config: &KafkaConfig,
    starts: &[(PartitionId, Start)],
    checked: bool,
) -> Result<Vec<(PartitionId, i64)>, SourceError> {
    let timeout = Duration::from_secs(10);
    let name_of = |t: Topic| read_name(config, checked, t);
    let committed = if starts.iter().any(|(_, s)| *s == Start::Committed) {
        let mut tpl = TopicPartitionList::new();
        for ((t, p), _) in starts {
            tpl.add_partition(&name_of(*t), *p);
        }
        Some(committed_with_retries(consumer, &tpl, timeout)?)
    } else {
        None
    };
    let mut tpl = TopicPartitionList::new();
    let mut resolved = Vec::with_capacity(starts.len());
    for &((t, p), start) in starts {
        let name = name_of(t);
        let (low, _) = consumer
            .fetch_watermarks(&name, p, timeout)
            .map_err(|e| backend(format!("no watermarks of {name}/{p}: {e}")))?;
        let offset = match start {
            Start::At(o) => o.max(low),
            Start::Beginning => low,
            Start::Committed => committed
                .as_ref()
                .and_then(|c| c.find_partition(&name, p))
                .and_then(|e| e.offset().to_raw())
                .filter(|o| *o >= 0)
                .map_or(low, |o| o.max(low)),
        };
        tpl.add_partition_offset(&name, p, Offset::Offset(offset))
            .map_err(|e| backend(format!("cannot place {t}/{p}: {e}")))?;
        resolved.push(((t, p), offset));
    }
    consumer
        .assign(&tpl)
        .map_err(|e| backend(format!("cannot assign {starts:?}: {e}")))?;
    Ok(resolved)
}

/// The partitions of the four topics, waiting (bounded) for freshly created topics to show up in
/// the metadata.
pub(crate) fn partitions_of<C: ConsumerContext>(
    consumer: &impl Consumer<C>,
    config: &KafkaConfig,
) -> Result<Vec<(Topic, i32)>, SourceError> {
    let mut out = Vec::new();
    for topic in Topic::ALL {
        let name = config.topic_name(topic);
        let mut found = Vec::new();
        for _attempt in 0..50 {
            let md = consumer
                .fetch_metadata(Some(&name), Duration::from_secs(5))
                .map_err(|e| backend(format!("no metadata for topic {name}: {e}")))?;
            found = md
                .topics()
                .iter()
                .filter(|t| t.name() == name && t.error().is_none())
                .flat_map(|t| t.partitions().iter().map(|p| p.id()))
                .collect();
            if !found.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if found.is_empty() {
            return Err(backend(format!(
                "topic {name} has no partitions after 5 s; create it or check the broker"
            )));
        }
        found.sort_unstable();
        out.extend(found.into_iter().map(|p| (topic, p)));
    }
    Ok(out)
}

impl Source for KafkaSource {
    /// Waits for the first record or error, then takes what is already buffered, up to `max`.
    /// The only await is the first receive, which is cancellation safe: a `select!` that drops
    /// this future loses no record.
    ///
    /// Errors queued among the records are passed over (the client logged each): records read
    /// in the same poll are returned, never dropped for an error behind them, and a poll that
    /// found only errors reports the last one with their count. librdkafka queues an error for
    /// every failed connection while Kafka is away (several a second); read one a poll, with the
    /// shell's pause after each, that backlog held the records back for minutes after Kafka
    /// came back.
    async fn poll(&mut self, max: usize) -> Result<Vec<SourceRecord>, SourceError> {
        let mut out = Vec::with_capacity(max.min(4096));
        if max == 0 {
            return Ok(out);
        }
        let mut last_error = None;
        let mut errors = 0u64;
        let consumer = Arc::clone(&self.consumer);
        match consumer.recv().await {
            Ok(first) => out.extend(self.record(&first)),
            Err(e) => {
                errors += 1;
                last_error = Some(e);
            }
        }
        let mut stream = consumer.stream();
        while out.len() < max && errors < MAX_ERRORS_A_POLL {
            match stream.next().now_or_never() {
                Some(Some(Ok(m))) => out.extend(self.record(&m)),
                Some(Some(Err(e))) => {
                    errors += 1;
                    last_error = Some(e);
                }
                Some(None) | None => break,
            }
        }
        match last_error {
            Some(e) if out.is_empty() => Err(backend(format!(
                "receiving failed: {e}{}; check the broker at KAFKA_BOOTSTRAP_SERVERS",
                if errors > 1 {
                    format!(" (and {} more errors)", errors - 1)
                } else {
                    String::new()
                }
            ))),
            _ => Ok(out),
        }
    }

    async fn commit(&mut self, positions: &[(Topic, i32, i64)]) -> Result<(), SourceError> {
        let positions: Vec<(PartitionId, i64)> =
            positions.iter().map(|&(t, p, o)| ((t, p), o)).collect();
        let tpl = self.commit_list(&positions);
        if tpl.count() == 0 {
            return Ok(());
        }
        // A synchronous commit blocks this thread for one round trip; tell the runtime so.
        tokio::task::block_in_place(|| self.consumer.commit(&tpl, CommitMode::Sync))
            .map_err(|e| backend(format!("commit of {positions:?} failed: {e}")))
    }
}

/// Queued errors one poll passes over at most, so that a poll ends even if errors never stop.
const MAX_ERRORS_A_POLL: u64 = 10_000;
