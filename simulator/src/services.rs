//! The services backend: a scenario replayed through real Kafka, MongoDB and PostgreSQL.
//!
//! The generator's records are produced to Kafka, paced on a replay clock (`speed` simulated
//! seconds per wall second), each carrying its simulated produce time as the Kafka timestamp; the
//! production job ([`pipeline::streaming::run_with`]) runs in this process on those topics with
//! the scenario's engine configuration, its processing time being the replayed simulated time;
//! once it consumed every record it flushes every window final and stops. Then both databases
//! are read back, and the expectations are checked against what they hold — the digest comes
//! from MongoDB, and the built-in invariant that both stores agree compares PostgreSQL with it.
//!
//! Every run works in a corner of its own — topic prefix, consumer group, MongoDB database,
//! PostgreSQL schema, checkpoint directory, all named after the scenario, the seed and the
//! process — removed at the end unless asked to keep it. Each topic has the scenario's number of
//! partitions (4 by default, as `generator produce` creates): the job's driver hands the engine
//! its records in one canonical order whatever the partitions and their interleaving, so the same
//! seed gives the memory backend's digest.
//!
//! Latencies are wall-clock measures of the real path: alert latency from the instant a record
//! was due to be produced to its alert row acknowledged by MongoDB, window latency from a final
//! row's emission to its acknowledgement by every sink, trigger processing as one trigger
//! batch's sink writes. "Pipeline wall" is the job's whole run, waits for paced input included,
//! so the sustainable rate it gives is a lower bound.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use generator::{FaultKind, Generator};
use pipeline::driver::NewestPerTopic;
use pipeline::engine::Query;
use pipeline::model::Topic;
use pipeline::sink::memory::{Flavour, MemoryStore};
use pipeline::sink::mongo::{self, MongoSink};
use pipeline::sink::postgres::{self, PostgresSink};
use pipeline::streaming::{Replay, ReplayClock, RunReport, StopReason, StreamingConfig};
use pipeline::time::Millis;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};

use crate::SimError;
use crate::run::{FaultTrace, ProduceOrder, Progress, RunResult};
use crate::scenario::Scenario;
use crate::throughput::{Covered, ThroughputSeries};
use crate::wallclock::{Stopwatch, epoch_ms};

/// Where the services are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Addresses {
    /// Kafka bootstrap servers, `host:port[,host:port]`.
    pub kafka: String,
    /// A MongoDB connection string (MongoDB or FerretDB).
    pub mongodb_uri: String,
    /// A PostgreSQL URL.
    pub postgres_url: String,
}

impl Addresses {
    /// `KAFKA_BOOTSTRAP_SERVERS`, `MONGODB_URI` and `POSTGRES_URL`, with the loopback addresses
    /// of `scripts/services.sh` for those unset.
    pub fn from_env() -> Self {
        let var = |name: &str, default: &str| {
            std::env::var(name)
                .ok()
                .filter(|v| !v.trim().is_empty())
                .unwrap_or_else(|| default.to_owned())
        };
        Addresses {
            kafka: var("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
            mongodb_uri: var("MONGODB_URI", "mongodb://127.0.0.1:27017"),
            postgres_url: var(
                "POSTGRES_URL",
                "postgres://postgres@127.0.0.1:5432/smart_city",
            ),
        }
    }
}

/// How a services run goes.
#[derive(Clone, Debug)]
pub struct ServicesOptions {
    /// Simulated seconds per wall second.
    pub speed: f64,
    /// Keep the run's topics, database, schema and checkpoint for inspection.
    pub keep: bool,
    /// Extra wall time allowed beyond the paced replay before the run counts as stuck.
    pub slack: Duration,
}

impl Default for ServicesOptions {
    fn default() -> Self {
        ServicesOptions {
            speed: DEFAULT_SPEED,
            keep: false,
            slack: Duration::from_secs(120),
        }
    }
}

/// The default replay speed: an hour of the thesis city in 72 s of wall time, slow enough for
/// FerretDB on a 2-core machine to keep thesis_baseline's and rush_hour's latencies under 2 s.
pub const DEFAULT_SPEED: f64 = 50.0;

fn failed(what: impl std::fmt::Display) -> SimError {
    SimError::Backend(format!("services backend: {what}"))
}

/// The run's corner of every service.
#[derive(Clone, Debug)]
pub(crate) struct Corner {
    /// Database, schema, group and topic-prefix stem: lowercase letters, digits, `_`.
    pub(crate) name: String,
    pub(crate) checkpoint_dir: PathBuf,
}

impl Corner {
    pub(crate) fn new(scenario: &str, seed: u64) -> Self {
        static RUNS: AtomicU64 = AtomicU64::new(0);
        let stem: String = scenario
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .take(24)
            .collect();
        let name = format!(
            "sim_{stem}_{seed}_{}_{}",
            std::process::id(),
            RUNS.fetch_add(1, Ordering::Relaxed)
        );
        let checkpoint_dir = std::env::temp_dir().join(format!("smart-city-{name}"));
        Corner {
            name,
            checkpoint_dir,
        }
    }

    pub(crate) fn prefix(&self) -> String {
        format!("{}.", self.name)
    }

    fn topics(&self) -> Vec<String> {
        let mut names: Vec<String> = Topic::ALL
            .iter()
            .map(|t| format!("{}{}", self.prefix(), t.name()))
            .collect();
        names.push(format!("{}dead-letters", self.prefix()));
        names
    }
}

/// Delivery reports of the producer: failures, and the offsets of records that carried a fault
/// label (bounded by the number of faults injected).
#[derive(Default)]
struct Deliveries {
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
    /// (label index + 1 as sent, topic name, partition, offset).
    labelled: Mutex<Vec<(usize, String, i32, i64)>>,
    /// The replay's clock, to tell when each acknowledged record was due.
    clock: Option<ReplayClock>,
    /// The run's topic-name prefix, to tell an acknowledged record's topic.
    prefix: String,
    /// How the acknowledgements came.
    order: Mutex<Order>,
}

/// What [`Deliveries`] learns of the order Kafka took records in.
#[derive(Default)]
struct Order {
    newest: NewestPerTopic,
    produced: ProduceOrder,
}

impl Deliveries {
    /// Notes when `m` was acknowledged: how long after it was due, and how far behind a record
    /// of its topic acknowledged before it.
    fn note_ack(&self, m: &rdkafka::message::BorrowedMessage<'_>) {
        let (Some(clock), Some(ts)) = (self.clock, m.timestamp().to_millis()) else {
            return;
        };
        let Some(topic) = m
            .topic()
            .strip_prefix(&self.prefix)
            .and_then(|t| t.parse::<Topic>().ok())
        else {
            return;
        };
        let Ok(mut o) = self.order.lock() else {
            return;
        };
        let Order { newest, produced } = &mut *o;
        produced.slowest_ack_wall_ms = produced
            .slowest_ack_wall_ms
            .max(epoch_ms() - clock.wall_ms(ts));
        let behind = newest.behind(topic, ts);
        if behind > produced.disorder_ms {
            produced.disorder_ms = behind;
            produced.disorder_at = Some((topic, m.partition(), m.offset()));
        }
    }
}

impl rdkafka::ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, label: usize) {
        match result {
            Ok(m) => {
                self.note_ack(m);
                if label > 0
                    && let Ok(mut l) = self.labelled.lock()
                {
                    l.push((label, m.topic().to_owned(), m.partition(), m.offset()));
                }
            }
            Err((e, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut first) = self.first_error.lock() {
                    first.get_or_insert_with(|| e.to_string());
                }
            }
        }
    }
}

/// What the producer sent.
struct Sent {
    offered: BTreeMap<Topic, u64>,
    /// (topic, partition, offset, label) of every labelled record.
    faults: Vec<(Topic, i32, i64, FaultKind)>,
    /// Records produced per simulated minute (the processed ones are added after the replay).
    throughput: ThroughputSeries,
    /// How Kafka took the records in.
    produced: ProduceOrder,
}

/// Progress shared between the producer thread and the replay: how far it got, and whether it
/// must stop (the replay ended, whichever way).
#[derive(Debug, Default)]
struct Shared {
    done_sim_ms: AtomicI64,
    stop: AtomicBool,
}

/// Sets `stop` when the replay ends, so no producer outlives it.
struct StopOnDrop(Arc<Shared>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop.store(true, Ordering::Relaxed);
    }
}

/// Produces every record of `generator` on the replay clock.
fn produce(
    generator: &Generator,
    addresses: &Addresses,
    corner: &Corner,
    clock: ReplayClock,
    shared: &Shared,
) -> Result<Sent, SimError> {
    let producer: ThreadedProducer<Deliveries> = ClientConfig::new()
        .set("bootstrap.servers", &addresses.kafka)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "200000")
        .create_with_context(Deliveries {
            clock: Some(clock),
            prefix: corner.prefix(),
            ..Deliveries::default()
        })
        .map_err(|e| failed(format!("cannot create a Kafka producer: {e}")))?;
    let names: Vec<String> = Topic::ALL
        .iter()
        .map(|t| format!("{}{}", corner.prefix(), t.name()))
        .collect();
    let mut labels: Vec<FaultKind> = Vec::new();
    let mut offered: BTreeMap<Topic, u64> = BTreeMap::new();
    let mut throughput = ThroughputSeries::new(generator.start_ms());
    let mut value = Vec::with_capacity(512);
    for record in generator.records() {
        if shared.stop.load(Ordering::Relaxed) {
            return Err(failed("the producer stopped: the replay ended first"));
        }
        let due = clock.wall_ms(record.produce_time_ms);
        let ahead = due - epoch_ms();
        if ahead > 0 {
            std::thread::sleep(Duration::from_millis(ahead as u64));
        }
        value.clear();
        record.write_value(&mut value);
        let label = match record.fault {
            Some(kind) => {
                labels.push(kind);
                labels.len()
            }
            None => 0,
        };
        let topic = &names[Topic::ALL
            .iter()
            .position(|t| *t == record.topic)
            .unwrap_or(0)];
        let message = BaseRecord::with_opaque_to(topic, label)
            .key(record.key.as_bytes())
            .payload(&value[..])
            .timestamp(record.produce_time_ms);
        send_waiting(&producer, message)
            .map_err(|e| failed(format!("cannot produce to {topic}: {e}")))?;
        *offered.entry(record.topic).or_default() += 1;
        throughput.offer(record.produce_time_ms, 1);
        shared
            .done_sim_ms
            .store(record.produce_time_ms, Ordering::Relaxed);
    }
    producer
        .flush(Duration::from_secs(60))
        .map_err(|e| failed(format!("Kafka did not acknowledge every record: {e}")))?;
    let deliveries = producer.context();
    let lost = deliveries.failed.load(Ordering::Relaxed);
    if lost > 0 {
        let first = deliveries
            .first_error
            .lock()
            .ok()
            .and_then(|f| f.clone())
            .unwrap_or_default();
        return Err(failed(format!(
            "Kafka refused {lost} records (first: {first})"
        )));
    }
    let labelled = std::mem::take(
        &mut *deliveries
            .labelled
            .lock()
            .map_err(|_| failed("a delivery report panicked"))?,
    );
    let prefix = corner.prefix();
    let produced = deliveries
        .order
        .lock()
        .map(|o| o.produced.clone())
        .map_err(|_| failed("a delivery report panicked"))?;
    let faults = labelled
        .into_iter()
        .filter_map(|(label, name, partition, offset)| {
            let topic: Topic = name.strip_prefix(&prefix)?.parse().ok()?;
            Some((topic, partition, offset, *labels.get(label - 1)?))
        })
        .collect();
    Ok(Sent {
        offered,
        faults,
        throughput,
        produced,
    })
}

/// Sends `message`, waiting while the producer's queue is full.
pub(crate) fn send_waiting<C: ProducerContext>(
    producer: &ThreadedProducer<C>,
    mut message: BaseRecord<'_, [u8], [u8], C::DeliveryOpaque>,
) -> Result<(), KafkaError> {
    loop {
        match producer.send(message) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                std::thread::sleep(Duration::from_millis(1));
                message = back;
            }
            Err((e, _)) => return Err(e),
        }
    }
}

async fn admin(addresses: &Addresses) -> Result<AdminClient<DefaultClientContext>, SimError> {
    ClientConfig::new()
        .set("bootstrap.servers", &addresses.kafka)
        .create()
        .map_err(|e| failed(format!("cannot create a Kafka admin client: {e}")))
}

/// Creates the run's topics with `partitions` partitions each, records kept whatever their
/// timestamps say (a scenario's simulated time may lie days in the past or hours in the future).
pub(crate) async fn create_topics(
    addresses: &Addresses,
    corner: &Corner,
    partitions: i32,
) -> Result<(), SimError> {
    let admin = admin(addresses).await?;
    let names = corner.topics();
    let forever = i64::MAX.to_string();
    let new: Vec<NewTopic<'_>> = names
        .iter()
        .map(|n| {
            NewTopic::new(n, partitions, TopicReplication::Fixed(1))
                .set("retention.ms", "-1")
                .set("message.timestamp.before.max.ms", &forever)
                .set("message.timestamp.after.max.ms", &forever)
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = tokio::time::timeout(
        Duration::from_secs(20),
        admin.create_topics(new.iter(), &options),
    )
    .await
    .map_err(|_| {
        failed(format!(
            "Kafka at {} did not answer within 20 s; start the services with \
             `bash scripts/services.sh up` or set KAFKA_BOOTSTRAP_SERVERS",
            addresses.kafka
        ))
    })?
    .map_err(|e| failed(format!("cannot create topics at {}: {e}", addresses.kafka)))?;
    for r in results {
        r.map_err(|(name, code)| failed(format!("cannot create topic {name}: {code}")))?;
    }
    Ok(())
}

async fn sinks(
    addresses: &Addresses,
    corner: &Corner,
) -> Result<(MongoSink, PostgresSink), SimError> {
    let client = mongo::client(&addresses.mongodb_uri, Duration::from_secs(10))
        .await
        .map_err(failed)?;
    let m = MongoSink::new(&client, &corner.name)
        .await
        .map_err(failed)?;
    let pg = postgres::connect(&addresses.postgres_url)
        .await
        .map_err(failed)?;
    let p = PostgresSink::new(pg, &corner.name).await.map_err(failed)?;
    Ok((m, p))
}

/// Reads both databases back into stores the expectations can check.
async fn read_back(
    addresses: &Addresses,
    corner: &Corner,
) -> Result<(MemoryStore, MemoryStore), SimError> {
    let (m, p) = sinks(addresses, corner).await?;
    let mut docs = Vec::new();
    let mut rows = Vec::new();
    for q in Query::ALL {
        docs.extend(m.read_rows(q).await.map_err(failed)?);
        rows.extend(p.read_rows(q).await.map_err(failed)?);
    }
    let mut archived = BTreeMap::new();
    for t in Topic::ALL {
        let n = p
            .count(postgres::archive_table(t).name)
            .await
            .map_err(failed)?;
        if n > 0 {
            archived.insert(t, n as u64);
        }
    }
    let documents = MemoryStore::loaded(
        Flavour::Documents,
        docs,
        m.read_dead_letters().await.map_err(failed)?,
        m.read_late().await.map_err(failed)?,
        BTreeMap::new(),
    );
    let tables = MemoryStore::loaded(
        Flavour::Tables,
        rows,
        p.read_dead_letters().await.map_err(failed)?,
        p.read_late().await.map_err(failed)?,
        archived,
    );
    Ok((documents, tables))
}

/// Removes the run's topics, database, schema and checkpoint; best effort.
pub(crate) async fn clean_up(addresses: &Addresses, corner: &Corner) {
    if let Ok((m, p)) = sinks(addresses, corner).await {
        let _ = m.database().drop().await;
        let _ = p
            .client()
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", corner.name))
            .await;
    }
    if let Ok(admin) = admin(addresses).await {
        let names = corner.topics();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let _ = admin.delete_topics(&refs, &AdminOptions::new()).await;
    }
    let _ = std::fs::remove_dir_all(&corner.checkpoint_dir);
}

/// Runs a scenario on real services at `addresses`.
pub fn run_services(
    scenario: &Scenario,
    seed: u64,
    addresses: &Addresses,
    options: &ServicesOptions,
    progress: Progress<'_>,
) -> Result<RunResult, SimError> {
    if !(options.speed.is_finite() && options.speed > 0.0) {
        return Err(failed("the replay speed must be a positive number"));
    }
    let total = Stopwatch::start();
    let generator = Generator::new(&scenario.generator, seed).map_err(failed)?;
    let (start, end) = (generator.start_ms(), generator.end_ms());
    let records = generator.records().count() as u64;
    let corner = Corner::new(&scenario.name, seed);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| failed(format!("cannot start the async runtime: {e}")))?;

    let mut config = StreamingConfig::new(
        &addresses.kafka,
        &addresses.mongodb_uri,
        &addresses.postgres_url,
    );
    config.kafka.topic_prefix = corner.prefix();
    config.kafka.group_id.clone_from(&corner.name);
    config.mongo.database.clone_from(&corner.name);
    config.postgres.schema.clone_from(&corner.name);
    config.checkpoint_dir.clone_from(&corner.checkpoint_dir);
    config.engine = scenario.pipeline.clone();
    config.driver = scenario.driver.clone();
    config.console = false;
    config.ready_attempts = 5;
    config.end_after_records = Some(records);
    config.replay = Some(Replay {
        sim_origin_ms: start,
        speed: options.speed,
    });
    let _ = std::fs::remove_dir_all(&corner.checkpoint_dir);

    let outcome = runtime.block_on(async {
        create_topics(
            addresses,
            &corner,
            scenario.network.partitions.unwrap_or(4).max(1),
        )
        .await?;
        replay(
            config,
            (scenario, seed),
            addresses,
            &corner,
            options,
            (start, end),
            progress,
        )
        .await
    });
    let outcome = match outcome {
        Ok((report, sent)) => runtime
            .block_on(read_back(addresses, &corner))
            .map(|stores| (report, sent, stores)),
        Err(e) => Err(e),
    };
    if !options.keep {
        runtime.block_on(clean_up(addresses, &corner));
    }
    let (report, sent, (documents, tables)) = outcome?;

    let faults = sent
        .faults
        .iter()
        .map(|&(topic, partition, offset, fault)| {
            let at = |t: Topic, p: i32, o: i64| t == topic && p == partition && o == offset;
            FaultTrace {
                fault,
                dead_letter: documents
                    .dead_letters()
                    .iter()
                    .find(|d| at(d.topic, d.position.partition, d.position.offset))
                    .map(|d| d.reason),
                late_for: documents
                    .late()
                    .iter()
                    .filter(|l| at(l.topic, l.position.partition, l.position.offset))
                    .map(|l| l.query)
                    .collect(),
            }
        })
        .collect();
    Ok(RunResult {
        scenario: scenario.name.clone(),
        seed,
        duration_ms: end - start,
        offered: sent.offered,
        counters: report.counters,
        documents,
        tables,
        alert_latency: report.metrics.alert_latency,
        window_latency: report.metrics.window_latency,
        trigger_processing: report.metrics.trigger_write,
        pipeline_wall: Duration::from_millis(report.elapsed_ms),
        replay_speed: Some(options.speed),
        total_wall: total.elapsed(),
        faults,
        alert_latency_recovery: pipeline::stats::Histogram::default(),
        injected: Vec::new(),
        crashes: 0,
        pending_items_max: report.driver.pending_items_max,
        driver: report.driver,
        driver_max_pending: None,
        commit_behind_max_ms: None,
        writes_unhindered: None,
        partition_lag_ms: None,
        instances: None,
        throughput: sent.throughput,
        produced: Some(sent.produced),
    })
}

/// The replay itself: the job on the runtime, the producer on a thread of its own once the job
/// has started, progress reported from here.
async fn replay(
    config: StreamingConfig,
    (scenario, seed): (&Scenario, u64),
    addresses: &Addresses,
    corner: &Corner,
    options: &ServicesOptions,
    (start, end): (Millis, Millis),
    progress: Progress<'_>,
) -> Result<(RunReport, Sent), SimError> {
    let records = config.end_after_records.unwrap_or(0);
    let paced = Duration::from_secs_f64((end - start).max(0) as f64 / 1000.0 / options.speed);
    let limit = paced + options.slack;
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let job = pipeline::streaming::run_with(
        config,
        async move {
            let _ = stop_rx.await;
        },
        move |clock| {
            let _ = started_tx.send(clock);
        },
    );
    let mut job = std::pin::pin!(job);
    // Until the job has started, only it can make progress (or fail to reach a service).
    let clock = tokio::select! {
        started = started_rx => started.ok().flatten(),
        result = &mut job => {
            return Err(match result {
                Ok(r) => failed(format!("the streaming job stopped before it started ({:?})", r.stop)),
                Err(e) => failed(e),
            });
        }
    };
    let clock = clock.ok_or_else(|| failed("the streaming job gave no replay clock"))?;
    let shared = Arc::new(Shared {
        done_sim_ms: AtomicI64::new(start),
        stop: AtomicBool::new(false),
    });
    let _stop_producer = StopOnDrop(Arc::clone(&shared));
    let (sent_tx, mut sent_rx) = tokio::sync::oneshot::channel();
    {
        let (config, addresses, corner, shared) = (
            scenario.generator.clone(),
            addresses.clone(),
            corner.clone(),
            Arc::clone(&shared),
        );
        std::thread::spawn(move || {
            let sent = Generator::new(&config, seed)
                .map_err(failed)
                .and_then(|g| produce(&g, &addresses, &corner, clock, &shared));
            let _ = sent_tx.send(sent);
        });
    }
    let mut stop_tx = Some(stop_tx);
    let watch = Stopwatch::start();
    let mut every = tokio::time::interval(Duration::from_millis(250));
    let mut sent = None;
    let mut processed = Processed::new(corner, clock, start);
    let mut ticks = 0u64;
    let result = loop {
        tokio::select! {
            result = &mut job => break result,
            produced = &mut sent_rx, if sent.is_none() => match produced {
                Ok(Ok(s)) => sent = Some(s),
                Ok(Err(e)) => {
                    // Let the job checkpoint and stop, then report the producer's error.
                    if let Some(tx) = stop_tx.take() {
                        let _ = tx.send(());
                    }
                    let _ = (&mut job).await;
                    return Err(e);
                }
                Err(_) => return Err(failed("the producer thread panicked")),
            },
            _ = every.tick() => {
                ticks += 1;
                if ticks.is_multiple_of(4) {
                    processed.sample();
                }
                let done = shared.done_sim_ms.load(Ordering::Relaxed);
                progress((done - start).clamp(0, end - start), end - start);
                if watch.elapsed() > limit
                    && let Some(tx) = stop_tx.take()
                {
                    let _ = tx.send(());
                }
            }
        }
    };
    let report = result.map_err(failed)?;
    if report.stop != StopReason::EndOfInput {
        return Err(failed(format!(
            "the streaming job consumed {} of {records} records within {:.0} s ({:?}); \
             the services are too slow for {}x: lower --speed",
            report.records,
            limit.as_secs_f64(),
            report.stop,
            options.speed
        )));
    }
    // Every record was consumed, so every record was produced: the producer is done or flushing.
    let mut sent = match sent {
        Some(s) => s,
        None => sent_rx
            .await
            .map_err(|_| failed("the producer thread panicked"))??,
    };
    processed.sample();
    for s in processed.series.samples() {
        sent.throughput.process(s.start_ms, s.processed);
    }
    progress(end - start, end - start);
    Ok((report, sent))
}

/// The processed side of the throughput series on a real backend: the job's checkpoint file is
/// stored only after every sink acknowledged the output of the records it covers, so the records
/// its positions newly cover were processed by the replayed instant it is read at.
struct Processed {
    dir: PathBuf,
    clock: ReplayClock,
    covered: Covered<pipeline::driver::PartitionId>,
    series: ThroughputSeries,
}

impl Processed {
    fn new(corner: &Corner, clock: ReplayClock, start: Millis) -> Self {
        Processed {
            dir: corner.checkpoint_dir.clone(),
            clock,
            covered: Covered::default(),
            series: ThroughputSeries::new(start),
        }
    }

    /// Reads the newest checkpoint; one being replaced as it is read is read next time.
    fn sample(&mut self) {
        let Ok(Some(loaded)) = pipeline::streaming::checkpoint::load(&self.dir) else {
            return;
        };
        // The run's topics are new: every partition's first offset is 0.
        let n = self.covered.advance(
            loaded.data.positions.iter().map(|(id, last)| (id, *last)),
            |_| 0,
        );
        self.series.process(self.clock.sim_ms(epoch_ms()), n);
    }
}
