//! The streaming job: Kafka -> engine -> MongoDB, PostgreSQL, the `dead-letters` topic and the
//! console — the tokio shell of the driver ([`crate::driver`]).
//!
//! Everything between the source and the sinks is the driver's: the canonical merge of the
//! partitions, batching into three lanes, the write -> checkpoint -> commit order, retries with
//! backoff, backpressure, the end of input. This shell only carries its actions out — it polls
//! Kafka and hands the records over with each partition's position and end, sends writes to
//! one task per lane and sink ([`sinks`]), stores checkpoints in files ([`checkpoint`]), commits
//! offsets, pauses and resumes partitions — and reports what came back, with the time. The
//! simulator's memory backend carries out the same actions on its in-memory log and stores, so
//! what runs here is what the simulation proves.
//!
//! The job never exits because a service is slow or away: a sink write that fails or times out
//! is retried by the driver for as long as it takes (one warning per sink per period), a Kafka
//! error is reported and polling goes on, and unacknowledged output past its bound pauses every
//! partition. Only a configuration error, a checkpoint with no valid predecessor, or a shutdown
//! signal ends it (and, for tests and replays, the end of the input).
//!
//! With `metrics_addr` set, [`exporter`] serves Prometheus `/metrics`, `/healthz` and `/readyz`
//! from a snapshot of the driver's and the engine's stats ([`status`]) that the loop publishes;
//! the driver and the engine know nothing of it.
//!
//! **Invariant:** [`WallClock`] is the only reader of the clock in the job; the driver and the
//! engine get processing time as an argument.

pub mod checkpoint;
pub mod exporter;
pub mod metrics;
pub mod scale;
mod shell;
pub mod sinks;
pub mod status;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::driver::{CheckpointData, Driver, DriverConfig, DriverError, DriverStats, StartAt};
use crate::engine::{ConfigError, Counters, EngineConfig, Query};
use crate::sink::SinkError;
use crate::sink::dead_letter_topic::DeadLetterTopic;
use crate::sink::mongo::{self, MongoConfig, MongoSink};
use crate::sink::postgres::{self, PostgresConfig};
use crate::source::SourceError;
use crate::source::kafka::{self, KafkaConfig, KafkaSource, Start};
use crate::time::Millis;

pub use crate::driver::StopReason;
use checkpoint::CheckpointError;
use exporter::MetricsServer;
use metrics::Metrics;
use sinks::{LaneSink, LaneTasks};
use status::{JobStatus, Phase, StatusBoard};

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

/// Where the job's output goes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SinkMode {
    /// MongoDB, PostgreSQL and the `dead-letters` topic: production.
    #[default]
    Databases,
    /// A null sink that acknowledges every write at once and keeps nothing: for benchmarks
    /// that measure the job alone (or side by side with a peer writing to a null sink too).
    /// MongoDB and PostgreSQL are neither waited for nor touched; checkpoints and Kafka
    /// commits go on as in production.
    Null,
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
    /// Driver configuration: batching, checkpoints, retries, bounds, idle exit.
    pub driver: DriverConfig,
    /// Most records taken from Kafka per poll.
    pub poll_max_records: usize,
    /// Longest sleep between two looks at Kafka's positions and ends, milliseconds.
    pub tick_interval_ms: u64,
    /// Stop (checkpointed, windows left open) after consuming this many records.
    pub max_records: Option<u64>,
    /// End of input: once this many records were consumed, flush every window final and exit
    /// (a replay knows how many records it produced).
    pub end_after_records: Option<u64>,
    /// Replaying simulated time (the simulator's services backend); `None` in production.
    pub replay: Option<Replay>,
    /// Attempts to reach each service at start; 0: until it answers.
    pub ready_attempts: u32,
    /// Pause between attempts, milliseconds.
    pub ready_interval_ms: u64,
    /// Longest wait of one attempt, milliseconds.
    pub ready_timeout_ms: u64,
    /// Print the console table.
    pub console: bool,
    /// Period of the latency summary line, milliseconds.
    pub metrics_log_interval_ms: u64,
    /// Where to serve `/metrics`, `/healthz` and `/readyz`; `None`: nowhere.
    pub metrics_addr: Option<SocketAddr>,
    /// Where the output goes: the databases, or a null sink for benchmarks.
    pub sink_mode: SinkMode,
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
                read_ahead_kbytes: crate::source::DEFAULT_READ_AHEAD_KBYTES,
                session_timeout_ms: 10_000,
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
            driver: DriverConfig::default(),
            poll_max_records: 2000,
            tick_interval_ms: 100,
            max_records: None,
            end_after_records: None,
            replay: None,
            ready_attempts: 0,
            ready_interval_ms: 1000,
            ready_timeout_ms: 1000,
            console: true,
            metrics_log_interval_ms: 60_000,
            metrics_addr: None,
            sink_mode: SinkMode::Databases,
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
    /// Setting up Kafka failed (topics, metadata, assignment).
    #[error(transparent)]
    Source(#[from] SourceError),
    /// Setting up a sink failed.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// No valid checkpoint where one was written.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The engine configuration is invalid.
    #[error("invalid engine configuration: {0}")]
    Config(#[from] ConfigError),
    /// The driver configuration is invalid.
    #[error(transparent)]
    Driver(#[from] DriverError),
    /// The metrics address cannot be listened on.
    #[error(
        "cannot serve /metrics on {addr}: {error}; is another process listening there? Set \
         PIPELINE_METRICS_ADDR (or --metrics-addr) to a free address, or unset it"
    )]
    Metrics {
        /// The address asked for.
        addr: SocketAddr,
        /// Why binding failed.
        error: std::io::Error,
    },
}

/// What a run did.
#[derive(Clone, Debug)]
pub struct RunReport {
    /// Why it stopped.
    pub stop: StopReason,
    /// Records consumed by this run.
    pub records: u64,
    /// Writes sent (first attempts, over all lanes).
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
    /// The driver's counters.
    pub driver: DriverStats,
    /// Size of the last checkpoint stored, bytes.
    pub checkpoint_bytes: usize,
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
    board: Option<&StatusBoard>,
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
    let attempts = config.ready_attempts;
    let timeout = Duration::from_millis(config.ready_timeout_ms.max(1));
    let mut last_error = String::new();
    let mut n: u32 = 0;
    // `ready_attempts` 0: wait for as long as it takes, saying so at each attempt.
    while attempts == 0 || n < attempts {
        n += 1;
        if let Some(b) = board {
            let last = if last_error.is_empty() {
                String::new()
            } else {
                format!(", last error: {last_error}")
            };
            b.set_phase(Phase::Starting(format!(
                "waiting for {service} at {address} (attempt {n}{last})"
            )));
        }
        match tokio::time::timeout(timeout, attempt()).await {
            Ok(Ok(v)) => {
                println!("{service} is ready at {address}");
                return Ok(v);
            }
            Ok(Err(e)) => last_error = e.to_string(),
            Err(_) => last_error = format!("no answer within {} ms", timeout.as_millis()),
        }
        tracing::info!(service, address, attempt = n, attempts, error = %last_error, "Waiting for a service.");
        if attempts == 0 || n < attempts {
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

/// Runs the streaming job until `shutdown` resolves, `max_records` are consumed, or the input
/// ends (`idle_exit_ms` of the driver, `end_after_records`).
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
    let (board, _server) = serve_metrics(&config).await?;
    run_job(config, shutdown, started, board, false).await
}

/// The status board and its server when `metrics_addr` is set. The server answers from the
/// start: /healthz at once, /readyz with what the job waits for.
async fn serve_metrics(
    config: &StreamingConfig,
) -> Result<(Option<StatusBoard>, Option<MetricsServer>), StreamingError> {
    let Some(addr) = config.metrics_addr else {
        return Ok((None, None));
    };
    let board = StatusBoard::new(JobStatus::starting("starting"));
    let server = start_metrics(addr, board.clone()).await?;
    Ok((Some(board), Some(server)))
}

/// Runs the job scaled out (docs/scale-out.md, [`scale`]): stage 1 here until `shutdown`
/// resolves, and stage 2 whenever this instance holds the lease. Returns when `shutdown`
/// resolved, or when stage 2 ended by itself (the input ended, `idle_exit_ms`): its report, or
/// an empty one if this instance never ran stage 2.
pub async fn run_scaled(
    config: StreamingConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<RunReport, StreamingError> {
    let (board, _server) = serve_metrics(&config).await?;
    wait_for_kafka(&config, board.as_ref()).await?;
    scale::prepare(&config.kafka).await?;
    let stats = std::sync::Arc::new(scale::ScaleStats::default());
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    // Stage 1 checks with the engine configuration stage 2 applies with: a checkpoint's, when
    // there is one (it carries the configuration it was taken with), else this instance's.
    let engine = match checkpoint::load(&config.checkpoint_dir)? {
        Some(l) => l.data.engine.config().clone(),
        None => config.engine.clone(),
    };
    let forwarder = tokio::spawn(scale::forward(
        config.kafka.clone(),
        engine,
        std::sync::Arc::clone(&stats),
        stop.clone(),
    ));
    let lease = scale::Lease::join(&config.kafka, std::sync::Arc::clone(&stats))?;
    let publisher = board.clone().map(|b| {
        let stats = std::sync::Arc::clone(&stats);
        tokio::spawn(async move {
            loop {
                b.set_scale(stats.status());
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    });
    let mut shutdown = std::pin::pin!(shutdown);
    let mut held = lease.held();
    let mut report = empty_report(false);
    let result = loop {
        if let Some(b) = &board {
            // A fresh snapshot: what stage 2 showed while it ran here is not this instance's now.
            let mut standby = JobStatus::starting("");
            standby.phase = Phase::Standby;
            b.publish(standby);
        }
        tokio::select! {
            () = &mut shutdown => break Ok(()),
            r = held.wait_for(|h| *h) => if r.is_err() { break Ok(()) },
        }
        stats
            .applying
            .store(true, std::sync::atomic::Ordering::Release);
        let mut lost = held.clone();
        let mut stop2 = stop.clone();
        let mut stage2_config = config.clone();
        stage2_config.driver.input = crate::driver::InputFormat::Checked;
        // Stage 2 stops when the lease is taken away, or on the shutdown (which stops stage 1
        // too).
        let stage2 = run_job(
            stage2_config,
            async move {
                tokio::select! {
                    _ = lost.wait_for(|h| !*h) => {}
                    _ = stop2.wait_for(|s| *s) => {}
                }
            },
            |_| {},
            board.clone(),
            true,
        );
        let mut stage2 = std::pin::pin!(stage2);
        let outcome = loop {
            tokio::select! {
                r = &mut stage2 => break r,
                () = &mut shutdown, if !*stop_tx.borrow() => {
                    let _ = stop_tx.send(true);
                }
            }
        };
        stats
            .applying
            .store(false, std::sync::atomic::Ordering::Release);
        match outcome {
            Ok(r) => {
                let by_itself = matches!(r.stop, StopReason::Idle | StopReason::EndOfInput);
                report = r;
                if *stop_tx.borrow() || by_itself {
                    break Ok(());
                }
                tracing::info!("Stage 2 stopped: the lease moved; stage 1 goes on.");
            }
            Err(e) => break Err(e),
        }
    };
    let _ = stop_tx.send(true);
    let _ = forwarder.await;
    lease.leave();
    if let Some(p) = publisher {
        p.abort();
    }
    result.map(|()| report)
}

/// The job: with `checked`, stage 2 of a scale-out (reading the checked topics).
///
/// The set-up (waiting for the services, restoring the checkpoint, taking the partitions) races
/// `shutdown`: a stop asked for while the job waits for a service ends it there, and a stage 2
/// whose lease was taken away while it started never runs, so it cannot store the checkpoint
/// it restored over one its successor stored since.
async fn run_job(
    config: StreamingConfig,
    shutdown: impl Future<Output = ()>,
    started: impl FnOnce(Option<ReplayClock>),
    board: Option<StatusBoard>,
    checked: bool,
) -> Result<RunReport, StreamingError> {
    let mut shutdown = std::pin::pin!(shutdown);
    let set_up = tokio::select! {
        r = set_up_job(&config, board.as_ref(), checked) => r?,
        () = &mut shutdown => {
            tracing::info!("Stopped while starting: nothing was read and nothing stored.");
            return Ok(empty_report(false));
        }
    };
    let SetUp {
        driver,
        source,
        lanes,
        loops,
        results,
        restored,
    } = set_up;
    let (results_tx, results_rx) = results;
    let clock = WallClock;
    let windowed = Query::ALL
        .iter()
        .filter(|q| **q != Query::ParkingAggregations)
        .count();
    println!("Started {windowed} streaming queries (+ parking per zone)");
    let _ = std::io::Write::flush(&mut std::io::stdout());
    let replay = config.replay.map(|r| ReplayClock {
        sim_origin_ms: r.sim_origin_ms,
        wall_origin_ms: clock.now_ms(),
        speed: r.speed,
    });
    started(replay);
    let shell = shell::Shell::new(
        config, driver, source, lanes, results_tx, results_rx, replay, restored, board,
    );
    let (report, _) = tokio::join!(shell.run(shutdown), futures_util::future::join_all(loops));
    report
}

/// What [`run_job`]'s set-up hands its shell.
struct SetUp {
    driver: Driver,
    source: KafkaSource,
    lanes: LaneTasks,
    loops: Vec<sinks::TaskLoop>,
    results: (
        tokio::sync::mpsc::UnboundedSender<sinks::Outcome>,
        tokio::sync::mpsc::UnboundedReceiver<sinks::Outcome>,
    ),
    restored: bool,
}

/// The services waited for, the engine restored, the sinks opened and the partitions taken.
async fn set_up_job(
    config: &StreamingConfig,
    board: Option<&StatusBoard>,
    checked: bool,
) -> Result<SetUp, StreamingError> {
    let clock = WallClock;
    let starting = |what: &str| {
        if let Some(b) = board {
            b.set_phase(Phase::Starting(what.to_owned()));
        }
    };
    let clients = match config.sink_mode {
        SinkMode::Databases => Some(wait_for_services(config, board).await?),
        SinkMode::Null => {
            wait_for_kafka(config, board).await?;
            None
        }
    };
    starting("restoring the checkpoint and opening the sinks");
    let loaded = checkpoint::load(&config.checkpoint_dir)?;
    let restored = loaded.is_some();
    // Stage 2 of a scale-out resumes its mirror of the checked topics from the checkpoint.
    let mirror_from: Vec<(crate::driver::PartitionId, i64)> = loaded
        .as_ref()
        .map(|l| l.data.positions.iter().map(|(k, v)| (*k, *v)).collect())
        .unwrap_or_default();
    let rewind = loaded.as_ref().is_some_and(|l| l.newest_refused.is_some());
    if let Some(l) = &loaded {
        if let Some(why) = &l.newest_refused {
            tracing::warn!(path = %l.path.display(), reason = %why, "The newest checkpoint is not usable; restoring the previous one.");
        }
        tracing::info!(
            path = %l.path.display(),
            id = l.data.id,
            bytes = l.bytes,
            partitions = l.data.positions.len(),
            "Restored the engine from its checkpoint."
        );
    }
    let wall_now = clock.now_ms();
    // The driver's processing time: the wall clock, or in a replay the simulated time, which
    // stands at the replay's origin until the replay clock starts below.
    let now = config.replay.map_or(wall_now, |r| r.sim_origin_ms);
    let mut driver_config = config.driver.clone();
    if driver_config.jitter_seed == 0 {
        // Retry jitter needs no reproducibility here, only spread between instances.
        driver_config.jitter_seed = wall_now as u64 ^ u64::from(std::process::id()).rotate_left(32);
    }
    let specs = sinks::specs(config.sink_mode).to_vec();
    let mut driver = match loaded {
        Some(l) => Driver::from_checkpoint(driver_config, l.data, specs, now)?,
        None => Driver::new(driver_config, config.engine.clone(), specs, now)?,
    };
    let (results_tx, results_rx) = tokio::sync::mpsc::unbounded_channel();
    let (lanes, loops) = match clients {
        Some((pg_client, mongo_client)) => {
            // The schema is created and migrated once, before the lanes open their own
            // connections.
            postgres::PostgresSink::new(pg_client, &config.postgres.schema).await?;
            start_sinks(config, &mongo_client, &results_tx).await?
        }
        None => LaneTasks::start(&sinks::NULL_SPECS, |_, _| Some(LaneSink::Null), &results_tx),
    };
    starting("taking the Kafka partitions");
    let mut source = match checked {
        true => KafkaSource::connect_checked(config.kafka.clone(), mirror_from, rewind).await?,
        false => KafkaSource::connect(config.kafka.clone()).await?,
    };
    let partitions = source.partitions().to_vec();
    let starts = driver.handle_assigned(now, &partitions);
    let resolved = source
        .assign(
            &starts
                .iter()
                .map(|(id, s)| {
                    let start = match s {
                        StartAt::After(o) => Start::At(o + 1),
                        StartAt::Beginning => Start::Beginning,
                        StartAt::Committed => Start::Committed,
                    };
                    (*id, start)
                })
                .collect::<Vec<_>>(),
        )
        .await?;
    for (id, next) in &resolved {
        driver.handle_progress(now, *id, Some(*next), None);
    }
    tracing::info!(partitions = ?resolved, "Assigned the Kafka partitions.");
    Ok(SetUp {
        driver,
        source,
        lanes,
        loops,
        results: (results_tx, results_rx),
        restored,
    })
}

/// Starts the metrics server, saying where.
async fn start_metrics(
    addr: SocketAddr,
    board: StatusBoard,
) -> Result<MetricsServer, StreamingError> {
    let server = MetricsServer::start(addr, board)
        .await
        .map_err(|error| StreamingError::Metrics { addr, error })?;
    tracing::info!(address = %server.local_addr(), "Serving /metrics, /healthz and /readyz.");
    Ok(server)
}

/// Waits for Kafka, saying so.
async fn wait_for_kafka(
    config: &StreamingConfig,
    board: Option<&StatusBoard>,
) -> Result<(), StreamingError> {
    let kafka_address = config.kafka.bootstrap_servers.clone();
    wait_for(
        config,
        board,
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
    .await
}

/// Waits for Kafka, PostgreSQL and MongoDB, in that order, saying so for each.
async fn wait_for_services(
    config: &StreamingConfig,
    board: Option<&StatusBoard>,
) -> Result<(tokio_postgres::Client, ::mongodb::Client), StreamingError> {
    wait_for_kafka(config, board).await?;
    let pg_client = wait_for(
        config,
        board,
        "PostgreSQL",
        redact_url(&config.postgres.url),
        "POSTGRES_URL",
        "postgres-url",
        || postgres::connect(&config.postgres.url),
    )
    .await?;
    let mongo_timeout = Duration::from_millis(config.ready_timeout_ms);
    let mongo_client = wait_for(
        config,
        board,
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
    Ok((pg_client, mongo_client))
}

/// Opens each lane's sinks: MongoDB (one sink, cloned: its pooled client and its bound on
/// commands in flight shared), PostgreSQL (a connection per
/// lane) and the dead-letter topic (the bulk lane only).
async fn start_sinks(
    config: &StreamingConfig,
    mongo_client: &::mongodb::Client,
    results: &tokio::sync::mpsc::UnboundedSender<sinks::Outcome>,
) -> Result<(LaneTasks, Vec<sinks::TaskLoop>), StreamingError> {
    let mut made: Vec<Option<LaneSink>> = Vec::new();
    // One MongoDB sink cloned into every lane: the clones share its bound on commands in flight.
    let mongo = MongoSink::new(mongo_client, &config.mongo.database).await?;
    for lane in crate::driver::Lane::ALL {
        for (i, spec) in sinks::SPECS.iter().enumerate() {
            if !spec.lanes[lane.index()] {
                made.push(None);
                continue;
            }
            let sink = match i {
                0 => LaneSink::Mongo(mongo.clone()),
                1 => LaneSink::Postgres {
                    sink: None,
                    url: config.postgres.url.clone(),
                    schema: config.postgres.schema.clone(),
                },
                _ => LaneSink::DeadLetters(DeadLetterTopic::new(&config.kafka)?),
            };
            made.push(Some(sink));
        }
    }
    let n = sinks::SPECS.len();
    Ok(LaneTasks::start(
        &sinks::SPECS,
        |lane, i| made[lane.index() * n + i].take(),
        results,
    ))
}

/// A checkpoint stored in the background: its id, its size or the error, and how long encoding
/// and storing it took.
type StoreResult = (u64, Result<usize, CheckpointError>, Duration);

/// Stores checkpoint bytes on a blocking thread (encoding and fsync take milliseconds).
fn store_in_background(
    dir: PathBuf,
    data: std::sync::Arc<CheckpointData>,
) -> tokio::task::JoinHandle<StoreResult> {
    tokio::task::spawn_blocking(move || {
        let started = WallClock.instant();
        let bytes = data.encode();
        let result = checkpoint::store(&dir, &bytes).map(|()| bytes.len());
        (data.id, result, started.elapsed())
    })
}

/// The summary line of an interval or of the run.
fn log_summary(message: &str, m: &Metrics, report: &RunReport, driver: &Driver) {
    let r = m.report();
    tracing::info!(
        records = report.records,
        writes = report.flushes,
        open_windows = driver.engine().open_windows(),
        pending_items = driver.pending_items(),
        buffered = driver.buffered(),
        alert_latency = %r.alert_latency,
        window_latency = %r.window_latency,
        sink_write = %r.sink_write,
        trigger_write = %r.trigger_write,
        waiting_on = %driver.waiting_on(),
        "{message}"
    );
}

/// A fresh report.
fn empty_report(restored: bool) -> RunReport {
    RunReport {
        stop: StopReason::Shutdown,
        records: 0,
        flushes: 0,
        rows: 0,
        dead_letters: 0,
        late: 0,
        archive: 0,
        restored,
        elapsed_ms: 0,
        counters: Counters::default(),
        metrics: Metrics::default(),
        driver: DriverStats::default(),
        checkpoint_bytes: 0,
    }
}

/// Milliseconds of processing time as a wall-clock duration from now, for a replay or not.
fn wall_wait(replay: Option<ReplayClock>, now_wall: Millis, deadline: Millis) -> Duration {
    let wall_deadline = replay.map_or(deadline, |r| r.wall_ms(deadline));
    Duration::from_millis((wall_deadline - now_wall).max(0) as u64)
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

    // Proves a stop asked for while the job waits for a service ends it there, with nothing
    // stored: before, the set-up ignored it and waited (by default for ever) for the service.
    // Stage 2 of a scale-out relies on it: a lease lost while it starts must stop it.
    #[tokio::test]
    async fn a_stop_while_waiting_for_a_service_ends_the_job() {
        // Port 1 on loopback is closed: nothing listens there, and the job waits for ever.
        let mut c = StreamingConfig::new("127.0.0.1:1", "mongodb://127.0.0.1:1", "postgres://x");
        c.ready_interval_ms = 50;
        c.ready_timeout_ms = 200;
        c.console = false;
        let dir = std::env::temp_dir().join(format!("stop-in-set-up-{}", std::process::id()));
        c.checkpoint_dir = dir.clone();
        let stop = tokio::time::sleep(Duration::from_millis(300));
        let report = tokio::time::timeout(Duration::from_secs(30), run(c, stop))
            .await
            .expect("the job did not stop while it waited for Kafka")
            .expect("a stop is not an error");
        assert_eq!(report.stop, StopReason::Shutdown);
        assert_eq!(report.records, 0);
        assert!(!dir.exists(), "a checkpoint directory was made");
    }
}
