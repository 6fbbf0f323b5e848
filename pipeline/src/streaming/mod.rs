//! The streaming job: Kafka -> engine -> MongoDB, PostgreSQL, the `dead-letters` topic and the
//! console.
//!
//! One `tokio::select!` loop ([`run`]) owns everything: bounded Kafka polls, a wall-clock ticker
//! that feeds [`Engine::tick`] and decides when to flush, and shutdown. Exactly-once in effect:
//!
//! 1. the engine's output since the last flush is written to every sink (MongoDB and PostgreSQL
//!    concurrently, each write an idempotent upsert or insert-if-absent);
//! 2. then the engine state and the consumed positions are checkpointed atomically;
//! 3. then the Kafka offsets are committed.
//!
//! Rows of windows still open live in the checkpointed engine state, so a crash after step 2
//! loses nothing, and a crash before it re-processes records from the previous checkpoint, which
//! only re-upserts rows with identical ids. A restart restores the checkpoint and seeks Kafka to
//! its positions (the checkpoint, not the group's commit, is the authority).
//!
//! **Invariant:** [`WallClock`] is the only reader of the clock in the job; the engine gets
//! processing time through `tick`.

pub mod checkpoint;
pub mod metrics;

use std::collections::BTreeMap;
use std::future::Future;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::engine::{ConfigError, Counters, Engine, EngineConfig, Output, RawRecord, RestoreError};
use crate::engine::{Query, SourcePosition};
use crate::model::Topic;
use crate::sink::console::ConsoleSink;
use crate::sink::dead_letter_topic::DeadLetterTopic;
use crate::sink::mongo::{self, MongoConfig, MongoSink};
use crate::sink::postgres::{self, PostgresConfig, PostgresSink};
use crate::sink::{Sink, SinkError};
use crate::source::kafka::{self, KafkaConfig, KafkaSource};
use crate::source::{Source, SourceError};
use crate::time::Millis;

use checkpoint::{Checkpoint, CheckpointError};
use metrics::Metrics;

/// The wall clock: the one place the job reads the time.
#[derive(Clone, Copy, Debug, Default)]
pub struct WallClock;

impl WallClock {
    /// Milliseconds since the Unix epoch.
    #[allow(clippy::disallowed_methods)] // The streaming shell's processing time is wall time.
    pub fn now_ms(self) -> Millis {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as Millis)
    }

    /// A monotonic instant, for durations.
    #[allow(clippy::disallowed_methods)] // Latency is measured in wall time, in the shell only.
    pub fn instant(self) -> Instant {
        Instant::now()
    }
}

/// A replay of simulated time (the simulator's services backend): records carry a scenario's
/// simulated times as their Kafka timestamps and are produced `speed` times faster than real
/// time from `sim_origin_ms` on. The job fixes the wall-clock origin when it has started (see
/// [`run_with`]) and from then on its processing time — what [`Engine::tick`] is given — is the
/// replayed simulated time, as in the simulator's memory backend; a record's produce time for
/// the alert latency is the wall instant it was due.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Replay {
    /// The first simulated instant, ms since the epoch.
    pub sim_origin_ms: Millis,
    /// Simulated milliseconds per wall millisecond (> 0).
    pub speed: f64,
}

/// A replay's clock: the simulated instant `sim_origin_ms` falls on the wall-clock instant
/// `wall_origin_ms`, and simulated time runs `speed` times faster.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ReplayClock {
    /// A simulated instant, ms since the epoch.
    pub sim_origin_ms: Millis,
    /// The wall-clock instant it is replayed at, ms since the epoch.
    pub wall_origin_ms: Millis,
    /// Simulated milliseconds per wall millisecond (> 0).
    pub speed: f64,
}

impl ReplayClock {
    /// The simulated instant replayed at wall instant `wall_ms`.
    pub fn sim_ms(&self, wall_ms: Millis) -> Millis {
        self.sim_origin_ms + ((wall_ms - self.wall_origin_ms) as f64 * self.speed) as Millis
    }

    /// The wall instant simulated instant `sim_ms` is replayed at.
    pub fn wall_ms(&self, sim_ms: Millis) -> Millis {
        self.wall_origin_ms + ((sim_ms - self.sim_origin_ms) as f64 / self.speed) as Millis
    }
}

/// Everything the streaming job is told.
#[derive(Clone, Debug)]
pub struct StreamingConfig {
    /// Kafka.
    pub kafka: KafkaConfig,
    /// MongoDB.
    pub mongo: MongoConfig,
    /// PostgreSQL.
    pub postgres: PostgresConfig,
    /// Directory of the checkpoint file.
    pub checkpoint_dir: PathBuf,
    /// Engine configuration, used when there is no checkpoint (a checkpoint carries its own).
    pub engine: EngineConfig,
    /// Most records taken from Kafka per poll.
    pub poll_max_records: usize,
    /// Flush once this many records were consumed since the last flush.
    pub flush_max_records: usize,
    /// Flush at most this long after output or consumption started pending, milliseconds.
    pub flush_interval_ms: u64,
    /// Period of the wall-clock ticker, milliseconds.
    pub tick_interval_ms: u64,
    /// Stop (checkpointed, windows left open) after consuming this many records.
    pub max_records: Option<u64>,
    /// End of input: after this long without a record (not counting the time spent writing
    /// the last records), flush every window final and exit.
    pub idle_exit_ms: Option<u64>,
    /// End of input: once this many records were consumed, flush every window final and exit
    /// (a replay knows how many records it produced).
    pub end_after_records: Option<u64>,
    /// Replaying simulated time (the simulator's services backend); `None` in production.
    pub replay: Option<Replay>,
    /// Attempts to reach each service at start.
    pub ready_attempts: u32,
    /// Pause between attempts, milliseconds.
    pub ready_interval_ms: u64,
    /// Longest wait of one attempt, milliseconds.
    pub ready_timeout_ms: u64,
    /// Attempts of one sink write before the job fails (writes are idempotent, so retrying is
    /// safe).
    pub sink_attempts: u32,
    /// Longest wait for one batch to be acknowledged by every sink, milliseconds.
    pub sink_timeout_ms: u64,
    /// Print the console table.
    pub console: bool,
    /// Period of the latency summary line, milliseconds.
    pub metrics_log_interval_ms: u64,
}

impl StreamingConfig {
    /// Defaults for the given service addresses.
    pub fn new(kafka_bootstrap_servers: &str, mongodb_uri: &str, postgres_url: &str) -> Self {
        StreamingConfig {
            kafka: KafkaConfig {
                bootstrap_servers: kafka_bootstrap_servers.to_owned(),
                group_id: "smart-city-pipeline".to_owned(),
                topic_prefix: String::new(),
                partitions_if_created: 1,
            },
            mongo: MongoConfig {
                uri: mongodb_uri.to_owned(),
                database: "smart_city".to_owned(),
            },
            postgres: PostgresConfig {
                url: postgres_url.to_owned(),
                schema: "public".to_owned(),
            },
            checkpoint_dir: PathBuf::from("checkpoint"),
            engine: EngineConfig::default(),
            poll_max_records: 2000,
            flush_max_records: 5000,
            flush_interval_ms: 200,
            tick_interval_ms: 50,
            max_records: None,
            idle_exit_ms: None,
            end_after_records: None,
            replay: None,
            ready_attempts: 30,
            ready_interval_ms: 1000,
            ready_timeout_ms: 1000,
            sink_attempts: 3,
            sink_timeout_ms: 30_000,
            console: true,
            metrics_log_interval_ms: 60_000,
        }
    }
}

/// Why the streaming job stopped.
#[derive(Debug, thiserror::Error)]
pub enum StreamingError {
    /// A service never answered at start.
    #[error(
        "{service} at {address} is not reachable after {attempts} attempts over {waited_s:.0} s \
         ({last_error}); is it running? Set {env_var} (or --{flag}) to where it is"
    )]
    ServiceUnavailable {
        /// Kafka, PostgreSQL or MongoDB.
        service: &'static str,
        /// Where it was looked for (without credentials).
        address: String,
        /// Attempts made.
        attempts: u32,
        /// Seconds waited in all.
        waited_s: f64,
        /// The last attempt's error.
        last_error: String,
        /// The environment variable that says where it is.
        env_var: &'static str,
        /// The flag that overrides it.
        flag: &'static str,
    },
    /// Reading Kafka failed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// A sink write failed after its retries.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// Reading or writing the checkpoint failed.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The checkpoint's engine state cannot be restored.
    #[error(
        "cannot restore the engine from the checkpoint: {0}; move the checkpoint away to start from scratch"
    )]
    Restore(#[from] RestoreError),
    /// The engine configuration is invalid.
    #[error("invalid engine configuration: {0}")]
    Config(#[from] ConfigError),
}

/// How the job ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// SIGINT/SIGTERM or the caller's shutdown future: state checkpointed, windows left open.
    Shutdown,
    /// `max_records` consumed: state checkpointed, windows left open.
    MaxRecords,
    /// No record for `idle_exit_ms`: every window flushed final, then checkpointed.
    Idle,
    /// `end_after_records` consumed: every window flushed final, then checkpointed.
    EndOfInput,
}

/// What a run did.
#[derive(Clone, Debug)]
pub struct RunReport {
    /// Why it stopped.
    pub stop: StopReason,
    /// Records consumed by this run.
    pub records: u64,
    /// Sink batches written.
    pub flushes: u64,
    /// Result rows written (before per-batch de-duplication).
    pub rows: u64,
    /// Dead letters written.
    pub dead_letters: u64,
    /// Late records written.
    pub late: u64,
    /// Archive rows written.
    pub archive: u64,
    /// Whether the run started from a checkpoint.
    pub restored: bool,
    /// Wall time of the run from "Started" to the end, milliseconds.
    pub elapsed_ms: u64,
    /// The engine's counters at the end.
    pub counters: Counters,
    /// Latency figures of the whole run.
    pub metrics: Metrics,
}

/// `scheme://user:password@host:port/db?options` -> `host:port/db`: what may be printed.
pub fn redact_url(url: &str) -> String {
    let url = url.trim();
    let Some((_, rest)) = url.split_once("://") else {
        if url.contains('=') {
            // A key=value connection string: keep only where it points.
            let kept: Vec<&str> = url
                .split_whitespace()
                .filter(|kv| {
                    matches!(
                        kv.split_once('=').map(|(k, _)| k),
                        Some("host" | "port" | "dbname")
                    )
                })
                .collect();
            return kept.join(" ");
        }
        return url.to_owned();
    };
    let rest = rest.split_once('?').map_or(rest, |(a, _)| a);
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let path = path.trim_end_matches('/');
    format!("{host}{path}")
}

/// Waits for SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "Cannot listen for SIGTERM; only Ctrl-C stops the job.");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

/// Retries `attempt` until it succeeds, `attempts` times at most.
#[allow(clippy::too_many_arguments)] // One call per service; the names make the error message.
async fn wait_for<T, F, Fut, E>(
    config: &StreamingConfig,
    service: &'static str,
    address: String,
    env_var: &'static str,
    flag: &'static str,
    mut attempt: F,
) -> Result<T, StreamingError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let clock = WallClock;
    let started = clock.instant();
    let attempts = config.ready_attempts.max(1);
    let timeout = Duration::from_millis(config.ready_timeout_ms.max(1));
    let mut last_error = String::new();
    for n in 1..=attempts {
        match tokio::time::timeout(timeout, attempt()).await {
            Ok(Ok(v)) => {
                println!("{service} is ready at {address}");
                return Ok(v);
            }
            Ok(Err(e)) => last_error = e.to_string(),
            Err(_) => last_error = format!("no answer within {} ms", timeout.as_millis()),
        }
        tracing::info!(service, address, attempt = n, attempts, error = %last_error, "Waiting for a service.");
        if n < attempts {
            tokio::time::sleep(Duration::from_millis(config.ready_interval_ms)).await;
        }
    }
    Err(StreamingError::ServiceUnavailable {
        service,
        address,
        attempts,
        waited_s: started.elapsed().as_secs_f64(),
        last_error,
        env_var,
        flag,
    })
}

/// The sinks of the job.
struct Sinks {
    mongo: MongoSink,
    postgres: PostgresSink,
    dead_letters: DeadLetterTopic,
    console: Option<ConsoleSink>,
}

/// Output waiting to be written, with what the latency measures need.
#[derive(Default)]
struct Pending {
    out: Output,
    /// Kafka timestamps of the records whose alerts are in `out`.
    alert_kafka_ts: Vec<Millis>,
    /// When each final window row in `out` was emitted.
    final_emitted: Vec<Instant>,
    /// Whether `out` holds a trigger's rows.
    has_trigger: bool,
    /// Records consumed since the last flush.
    records: usize,
    /// When the oldest unflushed work started.
    since: Option<Instant>,
}

/// Runs the streaming job until `shutdown` resolves, `max_records` are consumed, or the input
/// ends (`idle_exit_ms`, `end_after_records`).
pub async fn run(
    config: StreamingConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<RunReport, StreamingError> {
    run_with(config, shutdown, |_| {}).await
}

/// [`run`], calling `started` once every service answered, the sinks are ready and the
/// partitions are assigned, with the replay's clock when the configuration asks for a replay:
/// a replaying producer paces itself by that clock.
pub async fn run_with(
    config: StreamingConfig,
    shutdown: impl Future<Output = ()>,
    started: impl FnOnce(Option<ReplayClock>),
) -> Result<RunReport, StreamingError> {
    let clock = WallClock;
    let kafka_address = config.kafka.bootstrap_servers.clone();
    wait_for(
        &config,
        "Kafka",
        kafka_address,
        "KAFKA_BOOTSTRAP_SERVERS",
        "kafka-bootstrap-servers",
        || {
            kafka::ping(
                &config.kafka,
                Duration::from_millis(config.ready_timeout_ms),
            )
        },
    )
    .await?;
    let pg_client = wait_for(
        &config,
        "PostgreSQL",
        redact_url(&config.postgres.url),
        "POSTGRES_URL",
        "postgres-url",
        || postgres::connect(&config.postgres.url),
    )
    .await?;
    let mongo_timeout = Duration::from_millis(config.ready_timeout_ms);
    let mongo_client = wait_for(
        &config,
        "MongoDB",
        redact_url(&config.mongo.uri),
        "MONGODB_URI",
        "mongodb-uri",
        || async {
            let c = mongo::client(&config.mongo.uri, mongo_timeout).await?;
            mongo::ping(&c).await?;
            Ok::<_, SinkError>(c)
        },
    )
    .await?;

    let restored = checkpoint::load(&config.checkpoint_dir)?;
    let (mut engine, mut positions, was_restored) = match restored {
        Some(c) => {
            let engine = Engine::restore(&c.engine)?;
            tracing::info!(
                path = %checkpoint::path_in(&config.checkpoint_dir).display(),
                partitions = c.positions.len(),
                "Restored the engine from its checkpoint."
            );
            (engine, c.positions, true)
        }
        None => (Engine::new(config.engine.clone())?, BTreeMap::new(), false),
    };
    let mut sinks = Sinks {
        mongo: MongoSink::new(&mongo_client, &config.mongo.database).await?,
        postgres: PostgresSink::new(pg_client, &config.postgres.schema).await?,
        dead_letters: DeadLetterTopic::new(&config.kafka)?,
        console: config
            .console
            .then(|| ConsoleSink::new(Box::new(std::io::stdout()))),
    };
    let mut source =
        KafkaSource::connect(config.kafka.clone(), was_restored.then_some(&positions)).await?;
    tracing::info!(partitions = ?source.partitions(), resume_after = ?positions, "Assigned the Kafka partitions.");
    let windowed = Query::ALL
        .iter()
        .filter(|q| **q != Query::ParkingAggregations)
        .count();
    println!("Started {windowed} streaming queries (+ parking per zone)");
    let _ = std::io::stdout().flush();
    let replay = config.replay.map(|r| ReplayClock {
        sim_origin_ms: r.sim_origin_ms,
        wall_origin_ms: clock.now_ms(),
        speed: r.speed,
    });
    started(replay);

    let started = clock.instant();
    let mut report = RunReport {
        stop: StopReason::Shutdown,
        records: 0,
        flushes: 0,
        rows: 0,
        dead_letters: 0,
        late: 0,
        archive: 0,
        restored: was_restored,
        elapsed_ms: 0,
        counters: Counters::default(),
        metrics: Metrics::default(),
    };
    let mut total = Metrics::default();
    let mut interval = Metrics::default();
    let mut pending = Pending::default();
    let mut dirty_positions = false;
    let mut ticker = tokio::time::interval(Duration::from_millis(config.tick_interval_ms.max(1)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_record = clock.instant();
    let mut last_log = clock.instant();
    let mut shutdown = std::pin::pin!(shutdown);

    let stop = loop {
        let remaining = config
            .max_records
            .map_or(usize::MAX, |m| m.saturating_sub(report.records) as usize);
        if remaining == 0 {
            break StopReason::MaxRecords;
        }
        let poll_max = config.poll_max_records.max(1).min(remaining);
        tokio::select! {
            biased;
            () = &mut shutdown => break StopReason::Shutdown,
            _ = ticker.tick() => {
                let now = replay.map_or_else(|| clock.now_ms(), |r| r.sim_ms(clock.now_ms()));
                let before = pending.out.rows.len();
                engine.tick(now, &mut pending.out);
                let triggered = pending.out.rows.len() > before || pending.out.console_due;
                if triggered {
                    pending.has_trigger |= pending.out.rows.len() > before;
                    pending.since.get_or_insert_with(|| clock.instant());
                }
                let overdue = pending.since.is_some_and(|s| {
                    s.elapsed() >= Duration::from_millis(config.flush_interval_ms)
                });
                if triggered || overdue {
                    let had_records = pending.records > 0;
                    flush(&config, replay, &engine, &mut sinks, &mut source, &mut pending, &positions,
                          &mut dirty_positions, &mut report, &mut interval).await?;
                    if had_records {
                        // Time spent writing records is not idle time: give the input a poll first.
                        last_record = clock.instant();
                    }
                }
                if last_log.elapsed() >= Duration::from_millis(config.metrics_log_interval_ms) {
                    log_summary("Streaming latency over the last interval.", &interval, &engine, &report);
                    total.merge(&interval);
                    interval = Metrics::default();
                    last_log = clock.instant();
                }
                if config.idle_exit_ms.is_some_and(|ms| last_record.elapsed() >= Duration::from_millis(ms)) {
                    break StopReason::Idle;
                }
            }
            polled = source.poll(poll_max) => {
                let records = polled?;
                if records.is_empty() {
                    continue;
                }
                last_record = clock.instant();
                pending.since.get_or_insert(last_record);
                for r in &records {
                    let before = pending.out.rows.len();
                    engine.ingest(&RawRecord {
                        topic: r.topic,
                        key: &r.key,
                        value: &r.value,
                        kafka_timestamp_ms: r.timestamp_ms,
                        position: SourcePosition { partition: r.partition, offset: r.offset },
                    }, &mut pending.out);
                    let mut emitted_final = false;
                    for row in &pending.out.rows[before..] {
                        if row.query().is_alert() {
                            pending.alert_kafka_ts.push(r.timestamp_ms);
                        } else if row.is_final {
                            emitted_final = true;
                        }
                    }
                    if emitted_final {
                        let now = clock.instant();
                        let n = pending.out.rows[before..].iter().filter(|x| !x.query().is_alert() && x.is_final).count();
                        pending.final_emitted.extend(std::iter::repeat_n(now, n));
                    }
                    positions.insert((r.topic, r.partition), r.offset);
                }
                dirty_positions = true;
                report.records += records.len() as u64;
                pending.records += records.len();
                if config.end_after_records.is_some_and(|n| report.records >= n) {
                    break StopReason::EndOfInput;
                }
                if pending.records >= config.flush_max_records {
                    flush(&config, replay, &engine, &mut sinks, &mut source, &mut pending, &positions,
                          &mut dirty_positions, &mut report, &mut interval).await?;
                    last_record = clock.instant();
                }
            }
        }
    };
    tracing::info!(
        ?stop,
        records = report.records,
        "Stopping the streaming job."
    );
    if matches!(stop, StopReason::Idle | StopReason::EndOfInput) {
        let before = pending.out.rows.len();
        engine.flush(&mut pending.out);
        let now = clock.instant();
        let n = pending.out.rows.len() - before;
        pending.final_emitted.extend(std::iter::repeat_n(now, n));
        pending.since.get_or_insert(now);
    }
    // Whatever is pending is written and checkpointed before the job ends.
    dirty_positions |= pending.since.is_some();
    flush(
        &config,
        replay,
        &engine,
        &mut sinks,
        &mut source,
        &mut pending,
        &positions,
        &mut dirty_positions,
        &mut report,
        &mut interval,
    )
    .await?;
    total.merge(&interval);
    report.stop = stop;
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    report.counters = engine.counters().clone();
    report.metrics = total.clone();
    log_summary("Streaming job stopped.", &total, &engine, &report);
    Ok(report)
}

/// A sink write bounded in time: a write that is never acknowledged is an error naming the sink.
async fn timed(
    limit: Duration,
    sink: &'static str,
    out: &Output,
    write: impl Future<Output = Result<(), SinkError>>,
) -> Result<(), SinkError> {
    match tokio::time::timeout(limit, write).await {
        Ok(r) => r,
        Err(_) => Err(SinkError::Backend {
            sink,
            detail: format!(
                "a batch of {} rows, {} archive rows and {} dead letters was not acknowledged within {} ms",
                out.rows.len(),
                out.archive.len(),
                out.dead_letters.len(),
                limit.as_millis()
            ),
        }),
    }
}

fn log_summary(message: &str, m: &Metrics, engine: &Engine, report: &RunReport) {
    let r = m.report();
    tracing::info!(
        records = report.records,
        flushes = report.flushes,
        open_windows = engine.open_windows(),
        alert_latency = %r.alert_latency,
        window_latency = %r.window_latency,
        sink_write = %r.sink_write,
        trigger_write = %r.trigger_write,
        "{message}"
    );
}

/// Writes the pending output to every sink, then checkpoints, then commits Kafka offsets.
#[allow(clippy::too_many_arguments)] // The loop's state, borrowed piecewise.
async fn flush(
    config: &StreamingConfig,
    replay: Option<ReplayClock>,
    engine: &Engine,
    sinks: &mut Sinks,
    source: &mut KafkaSource,
    pending: &mut Pending,
    positions: &BTreeMap<(Topic, i32), i64>,
    dirty_positions: &mut bool,
    report: &mut RunReport,
    metrics: &mut Metrics,
) -> Result<(), StreamingError> {
    let clock = WallClock;
    if pending.out.is_empty() && !pending.out.console_due && !*dirty_positions {
        pending.since = None;
        return Ok(());
    }
    let started = clock.instant();
    let out = &pending.out;
    let mongo_done;
    let postgres_done;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let limit = Duration::from_millis(config.sink_timeout_ms);
        let mongo = async {
            let r = timed(limit, "mongodb", out, sinks.mongo.write(out)).await;
            (r, clock.now_ms())
        };
        let postgres = async {
            let r = timed(limit, "postgresql", out, sinks.postgres.write(out)).await;
            (r, clock.now_ms())
        };
        let ((m, m_at_ms), (p, p_at_ms), d) = tokio::join!(
            mongo,
            postgres,
            timed(
                limit,
                "kafka-dead-letters",
                out,
                sinks.dead_letters.write(out)
            )
        );
        let result = m.and(p).and(d).map(|()| m_at_ms);
        match result {
            Ok(m_at_ms) => {
                mongo_done = m_at_ms;
                postgres_done = p_at_ms;
                break;
            }
            Err(e) if attempt < config.sink_attempts.max(1) => {
                tracing::warn!(attempt, error = %e, "A sink write failed; retrying the whole batch (writes are idempotent).");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    if let Some(console) = sinks.console.as_mut() {
        console.write(out).await?;
    }
    let acked = clock.instant();
    let write_us = acked.duration_since(started).as_micros() as i64;
    metrics.sink_write.record_signed_us(write_us);
    if pending.has_trigger {
        metrics.trigger_write.record_signed_us(write_us);
    }
    for &ts in &pending.alert_kafka_ts {
        let produced = replay.map_or(ts, |r| r.wall_ms(ts));
        metrics.alert_latency.record_ms(mongo_done - produced);
    }
    for emitted in &pending.final_emitted {
        metrics
            .window_latency
            .record_signed_us(acked.duration_since(*emitted).as_micros() as i64);
    }
    report.flushes += 1;
    report.rows += out.rows.len() as u64;
    report.dead_letters += out.dead_letters.len() as u64;
    report.late += out.late.len() as u64;
    report.archive += out.archive.len() as u64;
    let started_ms = clock.now_ms() - write_us / 1000;
    tracing::debug!(
        rows = out.rows.len(),
        archive = out.archive.len(),
        write_ms = write_us as f64 / 1000.0,
        mongodb_ms = mongo_done - started_ms,
        postgresql_ms = postgres_done - started_ms,
        "Wrote a batch."
    );
    pending.out.clear();
    pending.alert_kafka_ts.clear();
    pending.final_emitted.clear();
    pending.has_trigger = false;
    pending.records = 0;
    pending.since = None;

    checkpoint::store(
        &config.checkpoint_dir,
        &Checkpoint {
            engine: engine.checkpoint(),
            positions: positions.clone(),
        },
    )?;
    let list: Vec<(Topic, i32, i64)> = positions.iter().map(|(&(t, p), &o)| (t, p, o)).collect();
    source.commit(&list).await?;
    *dirty_positions = false;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves credentials and options never reach a printed address.
    #[test]
    fn redacts_credentials() {
        assert_eq!(
            redact_url("postgres://postgres@127.0.0.1:5432/smart_city"),
            "127.0.0.1:5432/smart_city"
        );
        assert_eq!(
            redact_url("postgresql://u:s3cret@db:5432/x?sslmode=disable&password=p"),
            "db:5432/x"
        );
        assert_eq!(redact_url("mongodb://127.0.0.1:27017"), "127.0.0.1:27017");
        assert_eq!(
            redact_url("mongodb://a:b@h1:1,h2:2/?authMechanism=PLAIN"),
            "h1:1,h2:2"
        );
        assert_eq!(
            redact_url("host=h port=5 user=u password=p dbname=d"),
            "host=h port=5 dbname=d"
        );
        assert_eq!(redact_url("127.0.0.1:9092"), "127.0.0.1:9092");
    }
}
