//! `generator produce`: publishes the generator's stream to Kafka.
//!
//! Topics are created with the requested partition count if missing; each record is keyed by its
//! entity id and carries its produce time as the Kafka timestamp. Pacing maps simulated time to
//! the wall clock (`--speed`, real time by default) — the one place the generator binary reads
//! the clock, which is why `--start now` is resolved here and nowhere else.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use generator::Generator;
use pipeline::model::Topic;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

use super::{ProduceArgs, load_config};

/// How long to wait for Kafka to answer the topic creation before giving up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Wall-clock milliseconds since the epoch: only for `--start now`.
#[allow(clippy::disallowed_methods)] // Resolving `--start now` is a shell's job, not the core's.
fn wall_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A monotonic instant for pacing.
#[allow(clippy::disallowed_methods)] // Pacing in real time needs the clock; outputs do not.
fn instant_now() -> Instant {
    Instant::now()
}

fn create_topics(bootstrap: &str, prefix: &str, partitions: i32) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .with_context(|| format!("cannot create a Kafka admin client for {bootstrap}"))?;
    let names: Vec<String> = Topic::ALL
        .iter()
        .map(|t| format!("{prefix}{}", t.name()))
        .collect();
    let topics: Vec<NewTopic<'_>> = names
        .iter()
        .map(|n| NewTopic::new(n, partitions, TopicReplication::Fixed(1)))
        .collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let options = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(10)))
        .request_timeout(Some(Duration::from_secs(10)));
    let unreachable = || {
        format!(
            "Kafka at {bootstrap} is not reachable after {} s; is it running? \
             set KAFKA_BOOTSTRAP_SERVERS or --bootstrap-servers",
            CONNECT_TIMEOUT.as_secs()
        )
    };
    let results = runtime
        .block_on(async {
            tokio::time::timeout(
                CONNECT_TIMEOUT,
                admin.create_topics(topics.iter(), &options),
            )
            .await
        })
        .map_err(|_| anyhow::anyhow!(unreachable()))?
        .with_context(unreachable)?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => bail!("cannot create topic {name}: {code}"),
        }
    }
    Ok(())
}

/// Runs `generator produce`.
pub fn run(args: ProduceArgs) -> Result<()> {
    let Some(seed) = args.generate.seed else {
        bail!("--seed is required: the seed makes the stream reproducible (e.g. --seed 42)");
    };
    if !(args.speed.is_finite() && args.speed > 0.0) {
        bail!("--speed must be a positive number (1 = real time)");
    }
    let mut config = load_config(&args.generate)?;
    if config.start == "now" {
        let tick = config.tick_interval_ms.max(1) as i64;
        config.start = pipeline::time::format_rfc3339(wall_now_ms() / tick * tick);
    }
    let generator = Generator::new(&config, seed)?;
    let bootstrap = args.bootstrap_servers.as_str();
    create_topics(bootstrap, &args.topic_prefix, args.partitions)?;
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "200000")
        .set("compression.type", "lz4")
        .create()
        .with_context(|| format!("cannot create a Kafka producer for {bootstrap}"))?;
    eprintln!(
        "Producing {} from {} (seed {seed}) to Kafka at {bootstrap}, {}.",
        humanize(config.duration_s),
        config.start,
        if args.max_speed {
            "as fast as possible".to_owned()
        } else {
            format!("{}x real time", args.speed)
        }
    );

    let topics: Vec<String> = Topic::ALL
        .iter()
        .map(|t| format!("{}{}", args.topic_prefix, t.name()))
        .collect();
    let started = instant_now();
    let sim_start = generator.start_ms();
    let mut value = Vec::with_capacity(512);
    let mut sent: BTreeMap<Topic, u64> = BTreeMap::new();
    for record in generator.records() {
        if !args.max_speed {
            let due = Duration::from_secs_f64(
                (record.produce_time_ms - sim_start).max(0) as f64 / 1000.0 / args.speed,
            );
            let elapsed = started.elapsed();
            if due > elapsed {
                std::thread::sleep(due - elapsed);
            }
        }
        value.clear();
        record.write_value(&mut value);
        let topic = &topics[Topic::ALL
            .iter()
            .position(|t| *t == record.topic)
            .unwrap_or(0)];
        let mut message = BaseRecord::to(topic)
            .key(record.key.as_bytes())
            .payload(&value[..])
            .timestamp(record.produce_time_ms);
        loop {
            match producer.send(message) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    // The local queue is full: let the background thread drain it, then retry.
                    std::thread::sleep(Duration::from_millis(5));
                    message = back;
                }
                Err((e, _)) => bail!("cannot publish to {topic} at {bootstrap}: {e}"),
            }
        }
        *sent.entry(record.topic).or_default() += 1;
    }
    producer
        .flush(Duration::from_secs(60))
        .context("Kafka did not acknowledge every record within 60 s")?;
    let secs = started.elapsed().as_secs_f64();
    let total: u64 = sent.values().sum();
    let per_topic: Vec<String> = sent.iter().map(|(t, n)| format!("{t} {n}")).collect();
    eprintln!(
        "Sent {total} records ({}) in {secs:.1} s: {:.0} records/s.",
        per_topic.join(", "),
        total as f64 / secs.max(1e-9)
    );
    Ok(())
}

fn humanize(seconds: u64) -> String {
    if seconds.is_multiple_of(3600) {
        format!("{} h", seconds / 3600)
    } else {
        format!("{seconds} s")
    }
}
