//! Dead letters to the Kafka topic `dead-letters`, so operators can inspect and replay them with
//! the usual Kafka tools. The key is the record's source position (`topic|partition|offset`):
//! a replay after a crash may produce a dead letter again (this topic is at-least-once), and the
//! key lets a reader drop the repeat.
//!
//! A write that did not go through (an error, or the shell's write timeout) makes the next write
//! start on a new producer. librdkafka (2.12) can stay stuck after a metadata response names no
//! leader (-1) for a partition, as a broker's controlled shutdown does: every later message times
//! out although the broker is back (the services test saw 17 minutes of it; the same report is
//! open against Vector's Kafka sink). A new client asks for fresh metadata.

use std::time::Duration;

use futures_util::future::try_join_all;
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::engine::Output;
use crate::source::kafka::KafkaConfig;

use super::{Sink, SinkError, dead_letter_id};

const NAME: &str = "kafka-dead-letters";

/// Longest wait for a dead letter to be queued in the producer.
const QUEUE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long librdkafka tries to deliver a dead letter: below the driver's default write timeout
/// (30 s), so a failed write names librdkafka's error rather than the timeout.
const MESSAGE_TIMEOUT_MS: &str = "25000";

/// The dead-letter topic producer.
pub struct DeadLetterTopic {
    producer: FutureProducer,
    client: ClientConfig,
    topic: String,
    /// Whether the last write went through (else the next one starts on a new producer).
    healthy: bool,
}

impl std::fmt::Debug for DeadLetterTopic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetterTopic")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl DeadLetterTopic {
    /// A producer for the configured dead-letter topic.
    pub fn new(config: &KafkaConfig) -> Result<Self, SinkError> {
        let mut client = config.client_config();
        client
            .set("message.timeout.ms", MESSAGE_TIMEOUT_MS)
            .set("linger.ms", "5");
        Ok(DeadLetterTopic {
            producer: create(&client)?,
            client,
            topic: config.dead_letter_topic(),
            healthy: true,
        })
    }

    /// Replaces the producer with a new one; the old one is dropped off the runtime's workers
    /// (librdkafka's teardown purges, flushes and joins its threads).
    fn renew(&mut self) -> Result<(), SinkError> {
        let old = std::mem::replace(&mut self.producer, create(&self.client)?);
        tokio::task::spawn_blocking(move || drop(old));
        tracing::info!(
            topic = %self.topic,
            "A new dead-letter producer after a failed write (a stuck librdkafka client does \
             not recover by itself)."
        );
        Ok(())
    }
}

fn create(client: &ClientConfig) -> Result<FutureProducer, SinkError> {
    client.create().map_err(|e| SinkError::Backend {
        sink: NAME,
        detail: format!("cannot create a producer: {e}"),
    })
}

impl Sink for DeadLetterTopic {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn write(&mut self, batch: &Output) -> Result<(), SinkError> {
        if batch.dead_letters.is_empty() {
            return Ok(());
        }
        if !self.healthy {
            self.renew()?;
        }
        // Cleared until the write goes through: an error, or a timeout that drops this future.
        self.healthy = false;
        let items: Vec<(String, String)> = batch
            .dead_letters
            .iter()
            .map(|d| {
                // A dead letter is plain data with string keys: serialising cannot fail.
                (
                    dead_letter_id(d),
                    serde_json::to_string(d).unwrap_or_default(),
                )
            })
            .collect();
        let sends = items.iter().map(|(key, payload)| {
            let record = FutureRecord::to(&self.topic).key(key).payload(payload);
            self.producer.send(record, QUEUE_TIMEOUT)
        });
        try_join_all(sends)
            .await
            .map_err(|(e, _)| SinkError::Backend {
                sink: NAME,
                detail: format!("cannot produce to {}: {e}", self.topic),
            })?;
        self.healthy = true;
        Ok(())
    }
}
