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

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use crate::model::Topic;

use super::{Source, SourceError, SourceRecord};

const NAME: &str = "kafka";

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

    /// A client configuration with the bootstrap servers set.
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap_servers);
        c
    }
}

fn backend(detail: String) -> SourceError {
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
    let admin: AdminClient<DefaultClientContext> = config
        .client_config()
        .create()
        .map_err(|e| backend(format!("cannot create an admin client: {e}")))?;
    let mut names: Vec<String> = Topic::ALL.iter().map(|t| config.topic_name(*t)).collect();
    names.push(config.dead_letter_topic());
    let partitions = config.partitions_if_created.max(1);
    let new: Vec<NewTopic<'_>> = names
        .iter()
        .map(|n| NewTopic::new(n, partitions, TopicReplication::Fixed(1)))
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
    consumer: StreamConsumer,
    config: KafkaConfig,
    partitions: Vec<(Topic, i32)>,
}

impl std::fmt::Debug for KafkaSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSource")
            .field("config", &self.config)
            .field("partitions", &self.partitions)
            .finish_non_exhaustive()
    }
}

impl KafkaSource {
    /// Connects, creates missing topics, and assigns every partition of the four topics where
    /// the checkpoint's `positions` say (see the module docs); `None` when there is no
    /// checkpoint.
    pub async fn connect(
        config: KafkaConfig,
        positions: Option<&BTreeMap<(Topic, i32), i64>>,
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
            .create()
            .map_err(|e| backend(format!("cannot create a consumer: {e}")))?;
        let positions = positions.cloned();
        let consumer = tokio::task::spawn_blocking(move || -> Result<_, SourceError> {
            let partitions = partitions_of(&consumer, &config)?;
            let mut tpl = TopicPartitionList::new();
            for &(topic, p) in &partitions {
                let offset = match positions.as_ref() {
                    Some(known) => match known.get(&(topic, p)) {
                        Some(last) => Offset::Offset(last + 1),
                        None => Offset::Beginning,
                    },
                    None => Offset::Stored,
                };
                tpl.add_partition_offset(&config.topic_name(topic), p, offset)
                    .map_err(|e| backend(format!("cannot place {topic}/{p}: {e}")))?;
            }
            consumer
                .assign(&tpl)
                .map_err(|e| backend(format!("cannot assign {partitions:?}: {e}")))?;
            Ok(KafkaSource {
                consumer,
                config,
                partitions,
            })
        });
        consumer
            .await
            .map_err(|e| backend(format!("assignment task failed: {e}")))?
    }

    /// The partitions assigned.
    pub fn partitions(&self) -> &[(Topic, i32)] {
        &self.partitions
    }

    fn record(&self, m: &BorrowedMessage<'_>) -> Option<SourceRecord> {
        let topic = self.config.topic_of(m.topic())?;
        Some(SourceRecord {
            topic,
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec).unwrap_or_default(),
            value: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
            timestamp_ms: m.timestamp().to_millis().unwrap_or(0),
        })
    }
}

/// The partitions of the four topics, waiting (bounded) for freshly created topics to show up in
/// the metadata.
fn partitions_of(
    consumer: &StreamConsumer,
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
    /// Waits for the first record, then takes what is already buffered, up to `max`. The only
    /// await is the first receive, which is cancellation safe: a `select!` that drops this future
    /// loses no record.
    async fn poll(&mut self, max: usize) -> Result<Vec<SourceRecord>, SourceError> {
        let mut out = Vec::with_capacity(max.min(4096));
        if max == 0 {
            return Ok(out);
        }
        let first = self.consumer.recv().await.map_err(|e| poll_error(&e))?;
        out.extend(self.record(&first));
        drop(first);
        let mut stream = self.consumer.stream();
        while out.len() < max {
            match stream.next().now_or_never() {
                Some(Some(Ok(m))) => out.extend(self.record(&m)),
                Some(Some(Err(e))) => return Err(poll_error(&e)),
                Some(None) | None => break,
            }
        }
        Ok(out)
    }

    async fn commit(&mut self, positions: &[(Topic, i32, i64)]) -> Result<(), SourceError> {
        if positions.is_empty() {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for &(t, p, last) in positions {
            tpl.add_partition_offset(&self.config.topic_name(t), p, Offset::Offset(last + 1))
                .map_err(|e| backend(format!("cannot commit {t}/{p}@{last}: {e}")))?;
        }
        // A synchronous commit blocks this thread for one round trip; tell the runtime so.
        tokio::task::block_in_place(|| self.consumer.commit(&tpl, CommitMode::Sync))
            .map_err(|e| backend(format!("commit of {positions:?} failed: {e}")))
    }
}

fn poll_error(e: &KafkaError) -> SourceError {
    backend(format!(
        "receiving failed: {e}; check the broker at KAFKA_BOOTSTRAP_SERVERS"
    ))
}
