//! Dead letters to the Kafka topic `dead-letters`, so operators can inspect and replay them with
//! the usual Kafka tools. The key is the record's source position (`topic|partition|offset`):
//! a replay after a crash may produce a dead letter again (this topic is at-least-once), and the
//! key lets a reader drop the repeat.

use std::time::Duration;

use futures_util::future::try_join_all;
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::engine::Output;
use crate::source::kafka::KafkaConfig;

use super::{Sink, SinkError, dead_letter_id};

const NAME: &str = "kafka-dead-letters";

/// Longest wait for a dead letter to be queued in the producer.
const QUEUE_TIMEOUT: Duration = Duration::from_secs(5);

/// The dead-letter topic producer.
pub struct DeadLetterTopic {
    producer: FutureProducer,
    topic: String,
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
        let producer: FutureProducer = config
            .client_config()
            .set("message.timeout.ms", "30000")
            .set("linger.ms", "5")
            .create()
            .map_err(|e| SinkError::Backend {
                sink: NAME,
                detail: format!("cannot create a producer: {e}"),
            })?;
        Ok(DeadLetterTopic {
            producer,
            topic: config.dead_letter_topic(),
        })
    }
}

impl Sink for DeadLetterTopic {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn write(&mut self, batch: &Output) -> Result<(), SinkError> {
        if batch.dead_letters.is_empty() {
            return Ok(());
        }
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
        Ok(())
    }
}
