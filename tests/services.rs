//! End-to-end tests against real Kafka, MongoDB (or FerretDB) and PostgreSQL.
//!
//! They read `KAFKA_BOOTSTRAP_SERVERS`, `MONGODB_URI` and `POSTGRES_URL` from the environment
//! (`eval "$(bash scripts/services.sh env)"`) and are marked `#[ignore = "needs the services"]`:
//! a plain `cargo test` lists them as ignored, never as passed; `.ci/run` starts the services and
//! runs them with `--include-ignored`, and there an unreachable service fails the test loudly.
//! Every test uses its own topic prefix, consumer group, MongoDB database, PostgreSQL schema and
//! checkpoint directory, and removes them at the end. Topics have four partitions, as `generator
//! produce` creates them: the job's final rows must not depend on how many there are.
//!
//! The fault tests (`faults_*`) run the job as a process of its own (`pipeline streaming`, the
//! binary named by `PIPELINE_BIN`, by default the one next to this test's target folder), so a
//! kill is a real SIGKILL, and stop and start the services with `scripts/services.sh`.
#![cfg(feature = "services")]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use pipeline::digest::OutputDigest;
use pipeline::engine::{Engine, EngineConfig, Output, Query, RawRecord, SourcePosition};
use pipeline::model::Topic;
use pipeline::sink::Sink;
use pipeline::sink::mongo::{self, MongoSink};
use pipeline::sink::postgres::{self, PostgresSink};
use pipeline::streaming::{RunReport, StopReason, StreamingConfig, StreamingError, WallClock};
use pipeline::time::{MINUTE_MS, Millis, format_rfc3339};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

#[path = "services/faults.rs"]
mod faults;
#[path = "services/scale.rs"]
mod scale;

/// One test at a time on the services: they share one Kafka, FerretDB and PostgreSQL on a small
/// machine, and the scenario tests measure latencies.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Where the services are: the environment's addresses (`scripts/services.sh env`), or the
/// defaults `scripts/services.sh` listens on.
fn services() -> (String, String, String) {
    // The job's logs, when RUST_LOG asks for them (`RUST_LOG=info cargo test ... -- --nocapture`).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let var = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.into());
    (
        var("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
        var("MONGODB_URI", "mongodb://127.0.0.1:27017"),
        var(
            "POSTGRES_URL",
            "postgres://postgres@127.0.0.1:5432/smart_city",
        ),
    )
}

/// Partitions of every input topic.
const PARTITIONS: i32 = 4;

/// One record of the test stream.
#[derive(Clone, Debug)]
struct Rec {
    topic: Topic,
    key: String,
    value: Vec<u8>,
    ts: Millis,
}

/// The generator's thesis city for `minutes` minutes from `t0`, with faults on purpose:
/// malformed JSON, impossible values, duplicates and late readings.
fn city_stream(t0: Millis, minutes: i64) -> Vec<Rec> {
    generated(
        t0,
        minutes,
        7,
        r#"
        [[fault]]
        kind = "late"
        topic = "traffic-sensors"
        probability = 0.01
        delay_ms = 180000
        "#,
    )
}

/// The generator's city from `t0` for `minutes` with seed `seed`: malformed JSON, impossible
/// values and duplicates on purpose, then `extra` TOML (more faults, hostile entries).
fn generated(t0: Millis, minutes: i64, seed: u64, extra: &str) -> Vec<Rec> {
    let config = generator::GeneratorConfig::from_toml_str(&format!(
        r#"
        start = "{}"
        duration_s = {}

        [[fault]]
        kind = "malformed_json"
        topic = "traffic-sensors"
        probability = 0.01

        [[fault]]
        kind = "out_of_range"
        probability = 0.005

        [[fault]]
        kind = "duplicate"
        topic = "parking"
        probability = 0.01

        {}
        "#,
        format_rfc3339(t0),
        minutes * 60,
        extra
    ))
    .expect("a valid generator configuration");
    let generator = generator::Generator::new(&config, seed).expect("a valid generator");
    let mut value = Vec::new();
    generator
        .records()
        .map(|r| {
            value.clear();
            r.write_value(&mut value);
            Rec {
                topic: r.topic,
                key: r.key.to_string(),
                value: value.clone(),
                ts: r.produce_time_ms,
            }
        })
        .collect()
}

/// What the engine gives for the stream in memory, every window flushed final at the end.
struct Expected {
    digest: OutputDigest,
    by_query: BTreeMap<Query, usize>,
    dead_letters: usize,
    late: usize,
    archive: BTreeMap<Topic, usize>,
}

/// The engine's output for the stream in memory, every window flushed final at the end.
fn engine_output(records: &[Rec], config: &EngineConfig) -> Output {
    let mut engine = Engine::new(config.clone()).unwrap();
    let mut out = Output::default();
    let mut offsets: BTreeMap<Topic, i64> = BTreeMap::new();
    for r in records {
        let offset = offsets.entry(r.topic).or_default();
        engine.ingest(
            &RawRecord {
                topic: r.topic,
                key: r.key.as_bytes(),
                value: &r.value,
                kafka_timestamp_ms: r.ts,
                position: SourcePosition {
                    partition: 0,
                    offset: *offset,
                },
            },
            &mut out,
        );
        *offset += 1;
    }
    engine.flush(&mut out);
    out
}

fn expected(records: &[Rec]) -> Expected {
    expected_with(records, &EngineConfig::default())
}

/// What the in-memory engine with `config` makes of `records`, read in produce order.
fn expected_with(records: &[Rec], config: &EngineConfig) -> Expected {
    let out = engine_output(records, config);
    let mut digest = OutputDigest::new();
    let mut ids: BTreeMap<Query, std::collections::BTreeSet<String>> = BTreeMap::new();
    for row in &out.rows {
        digest.add(row);
        ids.entry(row.query()).or_default().insert(row.id.clone());
    }
    let mut archive = BTreeMap::new();
    for a in &out.archive {
        *archive.entry(a.topic).or_default() += 1;
    }
    Expected {
        digest,
        by_query: ids.into_iter().map(|(q, s)| (q, s.len())).collect(),
        dead_letters: out.dead_letters.len(),
        late: out.late.len(),
        archive,
    }
}

/// One test's private corner of every service.
struct Scope {
    name: String,
    kafka: String,
    mongo_uri: String,
    pg_url: String,
    checkpoint_dir: PathBuf,
}

impl Scope {
    fn new(test: &str) -> Self {
        let (kafka, mongo_uri, pg_url) = services();
        let name = format!("t{}_{test}", std::process::id());
        let checkpoint_dir = std::env::temp_dir().join(format!("smart-city-{name}"));
        let _ = std::fs::remove_dir_all(&checkpoint_dir);
        Scope {
            name,
            kafka,
            mongo_uri,
            pg_url,
            checkpoint_dir,
        }
    }

    fn prefix(&self) -> String {
        format!("{}-", self.name)
    }

    fn config(&self) -> StreamingConfig {
        let mut c = StreamingConfig::new(&self.kafka, &self.mongo_uri, &self.pg_url);
        c.kafka.topic_prefix = self.prefix();
        c.kafka.group_id = self.name.clone();
        c.mongo.database = self.name.clone();
        c.postgres.schema = self.name.clone();
        c.checkpoint_dir = self.checkpoint_dir.clone();
        c.console = false;
        c.ready_attempts = 10;
        c.driver.idle_exit_ms = Some(2_500);
        c
    }

    fn admin(&self) -> AdminClient<DefaultClientContext> {
        ClientConfig::new()
            .set("bootstrap.servers", &self.kafka)
            .create()
            .expect("admin client")
    }

    fn topics(&self) -> Vec<String> {
        let mut t: Vec<String> = Topic::ALL
            .iter()
            .map(|t| format!("{}{}", self.prefix(), t.name()))
            .collect();
        t.push(format!("{}dead-letters", self.prefix()));
        t
    }

    /// Creates the topics with [`PARTITIONS`] partitions each.
    async fn create_topics(&self) {
        let names = self.topics();
        let new: Vec<NewTopic<'_>> = names
            .iter()
            .map(|n| NewTopic::new(n, PARTITIONS, TopicReplication::Fixed(1)))
            .collect();
        let results = self
            .admin()
            .create_topics(new.iter(), &AdminOptions::new())
            .await
            .expect("Kafka reachable: check KAFKA_BOOTSTRAP_SERVERS");
        for r in results {
            r.expect("topic created");
        }
    }

    /// Creates the topics and produces the records in order, keyed by device as the generator
    /// keys them (so each device's readings stay in order on one partition).
    async fn produce(&self, records: &[Rec]) {
        self.create_topics().await;
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &self.kafka)
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            // Room to enqueue a six-hour backlog before waiting for its deliveries.
            .set("queue.buffering.max.messages", "1000000")
            .set("queue.buffering.max.kbytes", "1048576")
            .create()
            .expect("producer");
        let prefix = self.prefix();
        // Enqueue everything first (the producer batches), then wait for every delivery.
        let mut deliveries = Vec::with_capacity(records.len());
        for r in records {
            let topic = format!("{prefix}{}", r.topic.name());
            let record = FutureRecord::to(&topic)
                .key(&r.key)
                .payload(&r.value)
                .timestamp(r.ts);
            match producer.send_result(record) {
                Ok(d) => deliveries.push(d),
                Err((e, _)) => panic!("cannot enqueue a record for {topic}: {e}"),
            }
        }
        for (i, d) in deliveries.into_iter().enumerate() {
            match d.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => panic!("producing record {i} failed: {e}"),
                Err(_) => panic!("record {i}: the producer went away"),
            }
        }
    }

    async fn run(&self, config: StreamingConfig) -> RunReport {
        pipeline::streaming::run(config, std::future::pending())
            .await
            .unwrap_or_else(|e| panic!("{}: the streaming job failed: {e}", self.name))
    }

    async fn sinks(&self) -> (MongoSink, PostgresSink) {
        let client = mongo::client(&self.mongo_uri, Duration::from_secs(5))
            .await
            .expect("MongoDB client");
        let m = MongoSink::new(&client, &self.name).await.expect("MongoDB");
        let pg = postgres::connect(&self.pg_url).await.expect("PostgreSQL");
        let p = PostgresSink::new(pg, &self.name).await.expect("PostgreSQL");
        (m, p)
    }

    /// Reads everything back from both databases.
    async fn read_back(&self) -> (Stored, Stored) {
        let (m, p) = self.sinks().await;
        let mut mongo = Stored::default();
        let mut pg = Stored::default();
        for q in Query::ALL {
            let rows = m.read_rows(q).await.expect("read MongoDB");
            mongo.add(q, &rows);
            let rows = p.read_rows(q).await.expect("read PostgreSQL");
            pg.add(q, &rows);
        }
        mongo.dead_letters = m.count(mongo::DEAD_LETTERS).await.unwrap() as usize;
        mongo.late = m.count(mongo::LATE_RECORDS).await.unwrap() as usize;
        pg.dead_letters = p.count("dead_letters").await.unwrap() as usize;
        pg.late = p.count("late_records").await.unwrap() as usize;
        for t in Topic::ALL {
            let table = postgres::archive_table(t).name;
            pg.archive.insert(t, p.count(table).await.unwrap() as usize);
        }
        (mongo, pg)
    }

    /// Removes the test's topics, database, schema and checkpoint.
    async fn cleanup(&self) {
        let (m, p) = self.sinks().await;
        let _ = m.database().drop().await;
        let _ = p
            .client()
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name))
            .await;
        let names = self.topics();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let _ = self
            .admin()
            .delete_topics(&refs, &AdminOptions::new())
            .await;
        let _ = std::fs::remove_dir_all(&self.checkpoint_dir);
    }
}

/// What a database holds.
#[derive(Debug, Default)]
struct Stored {
    digest: OutputDigest,
    by_query: BTreeMap<Query, usize>,
    not_final: usize,
    dead_letters: usize,
    late: usize,
    archive: BTreeMap<Topic, usize>,
}

impl Stored {
    fn add(&mut self, q: Query, rows: &[pipeline::engine::Row]) {
        for r in rows {
            assert_eq!(r.query(), q);
            self.digest.add(r);
            if !r.is_final {
                self.not_final += 1;
            }
        }
        if !rows.is_empty() {
            self.by_query.insert(q, rows.len());
        }
    }
}

/// A start time two hours back, on a minute: recent enough for the broker's retention.
fn t0() -> Millis {
    let now = WallClock.now_ms();
    now - now.rem_euclid(MINUTE_MS) - 120 * MINUTE_MS
}

fn check(name: &str, db: &str, stored: &Stored, want: &Expected) {
    assert_eq!(
        stored.digest.hex(),
        want.digest.hex(),
        "{name}: {db} final rows differ from the in-memory run ({} stored, {} expected; by query {:?} vs {:?})",
        stored.digest.len(),
        want.digest.len(),
        stored.by_query,
        want.by_query
    );
    assert_eq!(
        stored.by_query, want.by_query,
        "{name}: {db} rows per query"
    );
    assert_eq!(stored.not_final, 0, "{name}: {db} holds non-final rows");
    assert_eq!(
        stored.dead_letters, want.dead_letters,
        "{name}: {db} dead letters"
    );
    assert_eq!(stored.late, want.late, "{name}: {db} late records");
}

// Proves the whole path: records produced to Kafka, consumed by the streaming job, written to
// MongoDB and PostgreSQL, read back, give exactly the final rows of the in-memory engine, and
// the archive, dead-letter and late tables hold each record once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the services"]
async fn end_to_end_matches_memory() {
    let scope = Scope::new("e2e");
    let _one_at_a_time = SERIAL.lock().await;
    // E2E_MINUTES makes it a longer backlog (360: six hours, ~285,000 records).
    let minutes = std::env::var("E2E_MINUTES")
        .ok()
        .map(|m| m.parse().expect("E2E_MINUTES is a number of minutes"))
        .unwrap_or(40);
    let records = city_stream(t0() - (minutes - 40).max(0) * MINUTE_MS, minutes);
    let want = expected(&records);
    assert!(
        want.dead_letters >= 3 && want.late >= 1,
        "the stream has faults"
    );
    scope.produce(&records).await;
    let report = scope.run(scope.config()).await;
    let (mongo, pg) = scope.read_back().await;
    scope.cleanup().await;
    eprintln!(
        "e2e: {} records; {}",
        report.records,
        report.metrics.report()
    );
    assert_eq!(report.stop, StopReason::Idle);
    assert_eq!(report.records, records.len() as u64);
    check("e2e", "MongoDB", &mongo, &want);
    check("e2e", "PostgreSQL", &pg, &want);
    assert_eq!(pg.archive, want.archive, "archive rows per topic");
    assert!(report.counters.check_conservation().is_ok());
}

// Proves a stop mid-stream and a restart on the same checkpoint give the same final rows as an
// uninterrupted run, with no row, archive row, dead letter or late record duplicated — also when
// the restart goes back to an older checkpoint (a crash after the sinks were written but before
// the checkpoint), so records are processed twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the services"]
async fn restart_resumes_exactly() {
    let scope = Scope::new("restart");
    let _one_at_a_time = SERIAL.lock().await;
    let records = city_stream(t0(), 40);
    let want = expected(&records);
    scope.produce(&records).await;
    let third = records.len() as u64 / 3;

    let mut c = scope.config();
    c.max_records = Some(third);
    let first = scope.run(c.clone()).await;
    let ckpt = pipeline::streaming::checkpoint::path_in(&scope.checkpoint_dir);
    let older = std::fs::read(&ckpt).expect("a checkpoint after the first stop");

    let second = scope.run(c).await;
    // The crash: the second run's writes are in the databases, its checkpoint is lost.
    std::fs::write(&ckpt, &older).unwrap();

    let third_run = scope.run(scope.config()).await;
    let (mongo, pg) = scope.read_back().await;
    scope.cleanup().await;
    assert_eq!(first.stop, StopReason::MaxRecords);
    assert_eq!(second.stop, StopReason::MaxRecords);
    assert_eq!((first.records, second.records), (third, third));
    assert!(second.restored && third_run.restored);
    assert_eq!(third_run.stop, StopReason::Idle);
    // The third run re-read what the second had consumed, and what the first had read ahead
    // of four partitions without handing it to the engine yet (not in its checkpoint).
    let total = records.len() as u64;
    assert!(
        (total - third..=total).contains(&third_run.records),
        "resumed at the older checkpoint: read {} of {total}",
        third_run.records
    );
    check("restart", "MongoDB", &mongo, &want);
    check("restart", "PostgreSQL", &pg, &want);
    assert_eq!(pg.archive, want.archive, "archive rows per topic");
}

// Proves both sinks keep their promise to readers, written to directly: a partial row is
// replaced by a later partial and by its final, a final row is never replaced by a partial that
// comes after it, and writing everything twice (a replay: rows, dead letters, late records,
// archive) changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the services"]
async fn sinks_replace_partials_and_keep_finals() {
    let scope = Scope::new("sinks");
    let _one_at_a_time = SERIAL.lock().await;
    let out = engine_output(&city_stream(t0(), 20), &EngineConfig::default());
    let want = expected(&city_stream(t0(), 20));
    let window = out
        .rows
        .iter()
        .find(|r| r.query() == Query::TrafficAggregations && r.is_final)
        .expect("a final window row")
        .clone();
    let mut partial = window.clone();
    partial.is_final = false;
    let batch = |rows: Vec<pipeline::engine::Row>| Output {
        rows,
        ..Output::default()
    };
    let (mut m, mut p) = scope.sinks().await;
    let steps: [(&str, Output, bool); 4] = [
        ("a partial row", batch(vec![partial.clone()]), false),
        (
            "the same partial again",
            batch(vec![partial.clone()]),
            false,
        ),
        ("its final row", batch(vec![window.clone()]), true),
        (
            "a partial after the final",
            batch(vec![partial.clone()]),
            true,
        ),
    ];
    for (what, b, want_final) in steps {
        m.write(&b).await.expect("MongoDB write");
        p.write(&b).await.expect("PostgreSQL write");
        let in_mongo = m.read_rows(Query::TrafficAggregations).await.unwrap();
        let in_pg = p.read_rows(Query::TrafficAggregations).await.unwrap();
        for (db, rows) in [("MongoDB", &in_mongo), ("PostgreSQL", &in_pg)] {
            assert_eq!(rows.len(), 1, "{what}: {db} holds {rows:?}");
            assert_eq!(rows[0].is_final, want_final, "{what}: {db}");
            assert_eq!(rows[0].id, window.id, "{what}: {db}");
        }
    }
    // Everything, twice: the second write meets every row already stored.
    for _ in 0..2 {
        m.write(&out).await.expect("MongoDB write");
        p.write(&out).await.expect("PostgreSQL write");
    }
    let (mongo, pg) = scope.read_back().await;
    scope.cleanup().await;
    check("sinks", "MongoDB", &mongo, &want);
    check("sinks", "PostgreSQL", &pg, &want);
    assert_eq!(pg.archive, want.archive, "archive rows per topic");
}

fn quick(config: &mut StreamingConfig) {
    config.ready_attempts = 2;
    config.ready_interval_ms = 100;
    config.ready_timeout_ms = 500;
    config.console = false;
}

async fn unreachable(config: StreamingConfig) -> String {
    match pipeline::streaming::run(config, std::future::pending()).await {
        Err(e @ StreamingError::ServiceUnavailable { .. }) => e.to_string(),
        Err(other) => panic!("expected an unreachable service, got: {other}"),
        Ok(r) => panic!("expected an unreachable service, the job ran: {r:?}"),
    }
}

// Proves a service that is not there stops the job quickly with an error naming the service,
// its address (never a password) and the variable to set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the services"]
async fn unreachable_service_is_named() {
    let _one_at_a_time = SERIAL.lock().await;
    // Port 1 on loopback is closed: nothing listens there.
    let mut c = StreamingConfig::new(
        "127.0.0.1:1",
        "mongodb://127.0.0.1:1",
        "postgres://u:s3cret@127.0.0.1:1/x",
    );
    quick(&mut c);
    let e = unreachable(c).await;
    assert!(
        e.contains("Kafka at 127.0.0.1:1") && e.contains("KAFKA_BOOTSTRAP_SERVERS"),
        "{e}"
    );
    let (kafka, mongo_uri, pg_url) = services();
    let mut c = StreamingConfig::new(&kafka, &mongo_uri, "postgres://u:s3cret@127.0.0.1:1/x");
    quick(&mut c);
    let e = unreachable(c).await;
    assert!(
        e.contains("PostgreSQL at 127.0.0.1:1/x") && e.contains("POSTGRES_URL"),
        "{e}"
    );
    assert!(!e.contains("s3cret"), "a password was printed: {e}");
    let mut c = StreamingConfig::new(&kafka, "mongodb://127.0.0.1:1", &pg_url);
    quick(&mut c);
    let e = unreachable(c).await;
    assert!(
        e.contains("MongoDB at 127.0.0.1:1") && e.contains("MONGODB_URI"),
        "{e}"
    );
}

/// Runs a shipped scenario on the services backend (addresses from the environment) and on the
/// memory backend, same seed.
fn scenario_on_both(name: &str, speed: f64) -> (simulator::Report, simulator::Report) {
    services();
    let _one_at_a_time = SERIAL.blocking_lock();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios")
        .join(format!("{name}.toml"));
    let options = simulator::RunOptions {
        backend: Some(simulator::Backend::Services),
        speed: Some(speed),
        ..Default::default()
    };
    let on_services =
        simulator::run_file(&path, &options).unwrap_or_else(|e| panic!("{name} on services: {e}"));
    let in_memory = simulator::run_file(&path, &simulator::RunOptions::default())
        .unwrap_or_else(|e| panic!("{name} in memory: {e}"));
    eprintln!("{}", on_services.summary());
    (on_services, in_memory)
}

fn passes_and_matches_memory(name: &str, speed: f64) {
    let (services, memory) = scenario_on_both(name, speed);
    assert!(memory.passed, "{name} in memory:\n{}", memory.failures());
    assert!(
        services.passed,
        "{name} on services at {speed}x:\n{}",
        services.failures()
    );
    // Differential: what MongoDB holds (and, by the built-in check that passed, PostgreSQL too)
    // is exactly the memory backend's output for the same scenario and seed.
    assert_eq!(
        services.digest, memory.digest,
        "{name}: services and memory digests differ"
    );
}

// Proves the thesis city, replayed through Kafka -> pipeline streaming -> FerretDB and
// PostgreSQL at 50x, meets every expectation of thesis_baseline (792 msg/min kept up, latencies
// under 2 s, the pinned digest) and stores exactly the memory backend's rows in both databases.
#[test]
#[ignore = "needs the services"]
fn thesis_baseline_on_services_matches_memory() {
    passes_and_matches_memory("thesis_baseline", 50.0);
}

// Proves the same for the four hours of rush_hour: the peak's falling mobility index, late
// buses and overcrowding alerts come out of the real path as out of the memory backend, with
// alert latency p99 under 2 s. At 25x: at 50x FerretDB's trigger writes (~0.7 s each, every
// 1.2 s of wall time) put the p99 right at 2 s on this 2-core machine (1.5 s and 2.1 s measured).
#[test]
#[ignore = "needs the services"]
fn rush_hour_on_services_matches_memory() {
    passes_and_matches_memory("rush_hour", 25.0);
}

// Proves faults survive the real path: every malformed, out-of-range, missing-field, duplicate
// and late record of sensor_faults is found in MongoDB's dead letters or late records at its
// Kafka position with the right reason, as on the memory backend.
#[test]
#[ignore = "needs the services"]
fn sensor_faults_on_services_matches_memory() {
    passes_and_matches_memory("sensor_faults", 100.0);
}
