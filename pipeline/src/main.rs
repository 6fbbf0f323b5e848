//! `pipeline`: the production job's command line.
//!
//! - `pipeline replay --input events.jsonl --output outputs.jsonl` runs the engine offline over
//!   the generator's JSONL.
//! - `pipeline streaming` is the Kafka -> MongoDB/PostgreSQL job (built with the `services`
//!   feature); its configuration comes from the environment like the original's, each variable
//!   also a flag that overrides it. Without a subcommand the job type comes from
//!   `PIPELINE_JOB_TYPE`.
//! - `pipeline batch` (built with the `services` feature) computes the historical features of
//!   SPEC §4 from the PostgreSQL archive into feature tables (`POSTGRES_URL`, `POSTGRES_SCHEMA`,
//!   `--from`/`--to`); `PIPELINE_JOB_TYPE=batch` chooses it too.
//!
//! Logs go to stderr as human-readable lines, or one JSON object per line with `--log-format
//! json` (`PIPELINE_LOG_FORMAT`); `pipeline streaming --metrics-addr` (`PIPELINE_METRICS_ADDR`)
//! serves Prometheus `/metrics`, `/healthz` and `/readyz`.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

use pipeline::engine::{Engine, EngineConfig, Query};
use pipeline::logging::LogFormat;
use pipeline::model::Topic;

#[derive(Debug, Parser)]
#[command(
    name = "pipeline",
    version,
    about = "Smart-city streaming job: Kafka -> 7 queries -> MongoDB, PostgreSQL, console."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Job to run when no subcommand is given: `streaming` or `batch`.
    #[arg(
        long,
        env = "PIPELINE_JOB_TYPE",
        default_value = "streaming",
        global = true
    )]
    job_type: String,
    /// Log lines as text for people (`human`) or one JSON object per line (`json`), to stderr.
    #[arg(
        long,
        env = "PIPELINE_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Human,
        global = true
    )]
    log_format: LogFormat,
}

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // Parsed once at start; boxing would only add noise.
enum Command {
    /// Replays the generator's JSONL through the engine offline, processing time following event
    /// time, then flushes every window final.
    Replay {
        /// Generator JSONL (`generator --format jsonl`); `-` for standard input.
        #[arg(long)]
        input: PathBuf,
        /// Where to write one output line per row, dead letter and late record; `-` for stdout.
        #[arg(long)]
        output: PathBuf,
        /// Engine configuration (TOML, keys of EngineConfig); SPEC defaults otherwise.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// The streaming job: Kafka -> engine -> MongoDB, PostgreSQL and the console.
    Streaming(StreamingArgs),
    /// The batch job: historical features from the PostgreSQL archive (SPEC §4).
    Batch(BatchArgs),
}

/// Configuration of the batch job: environment variables, each overridden by its flag.
#[derive(Debug, Clone, Parser)]
#[command(name = "pipeline batch")]
struct BatchArgs {
    /// PostgreSQL connection URL.
    #[arg(
        long,
        env = "POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/smart_city",
        hide_env_values = true
    )]
    postgres_url: String,
    /// PostgreSQL schema of the archive and of the feature tables.
    #[arg(long, env = "POSTGRES_SCHEMA", default_value = "public")]
    postgres_schema: String,
    /// First instant of the range, RFC 3339 (default: the archive's first reading).
    #[arg(long, value_name = "RFC3339")]
    from: Option<String>,
    /// First instant after the range, RFC 3339 (default: just after the archive's last
    /// reading).
    #[arg(long, value_name = "RFC3339")]
    to: Option<String>,
    /// Step of the zone features, seconds.
    #[arg(long, default_value_t = 300)]
    zone_step_s: u32,
    /// Attempts to reach PostgreSQL at start, one second apart; 0 (the default) waits until it
    /// answers.
    #[arg(long, env = "READY_ATTEMPTS", default_value_t = 0)]
    ready_attempts: u32,
}

/// Configuration of the streaming job: environment variables, each overridden by its flag.
#[derive(Debug, Clone, Parser)]
#[command(name = "pipeline streaming")]
struct StreamingArgs {
    /// Kafka bootstrap servers, `host:port[,host:port]`.
    #[arg(
        long,
        env = "KAFKA_BOOTSTRAP_SERVERS",
        default_value = "127.0.0.1:9092"
    )]
    kafka_bootstrap_servers: String,
    /// MongoDB (or FerretDB) connection string; without credentials for FerretDB.
    #[arg(
        long,
        env = "MONGODB_URI",
        default_value = "mongodb://127.0.0.1:27017",
        hide_env_values = true
    )]
    mongodb_uri: String,
    /// PostgreSQL connection URL.
    #[arg(
        long,
        env = "POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/smart_city",
        hide_env_values = true
    )]
    postgres_url: String,
    /// Directory of the checkpoint (engine state + consumed Kafka positions).
    #[arg(long, env = "CHECKPOINT_DIR", default_value = "./checkpoint")]
    checkpoint_dir: PathBuf,
    /// Engine configuration (TOML, keys of EngineConfig); SPEC defaults otherwise. Ignored when
    /// a checkpoint is restored: the checkpoint carries the configuration it was taken with.
    #[arg(long)]
    engine_config: Option<PathBuf>,
    /// Kafka consumer group used for offset commits.
    #[arg(long, env = "KAFKA_GROUP_ID", default_value = "smart-city-pipeline")]
    group_id: String,
    /// Prefix of every Kafka topic name (for side-by-side test deployments).
    #[arg(long, env = "KAFKA_TOPIC_PREFIX", default_value = "")]
    topic_prefix: String,
    /// Kilobytes of fetched records the Kafka consumer may hold ahead of the job
    /// (librdkafka's `queued.max.messages.kbytes`): more drains a backlog faster, less bounds
    /// memory tighter.
    #[arg(long, env = "KAFKA_READ_AHEAD_KB", default_value_t = pipeline::source::DEFAULT_READ_AHEAD_KBYTES)]
    kafka_read_ahead_kb: u32,
    /// Run as one of several instances in the consumer group (docs/scale-out.md): every
    /// instance checks the input partitions the group gives it and forwards them to the checked
    /// topics; the one holding the lease applies them and writes the output. Instances share the
    /// group id, the topic prefix, the checkpoint directory and the sinks.
    #[arg(long, env = "PIPELINE_SCALE_OUT")]
    scale_out: bool,
    /// Scale-out: milliseconds the group waits for a silent instance before its input
    /// partitions, or the lease, go to the others (Kafka's `session.timeout.ms`; the broker
    /// allows 6,000 to 1,800,000 by default).
    #[arg(long, env = "KAFKA_SESSION_TIMEOUT_MS", default_value_t = 10_000)]
    session_timeout_ms: u32,
    /// MongoDB database.
    #[arg(long, env = "MONGODB_DATABASE", default_value = "smart_city")]
    mongodb_database: String,
    /// PostgreSQL schema of the tables.
    #[arg(long, env = "POSTGRES_SCHEMA", default_value = "public")]
    postgres_schema: String,
    /// Driver configuration (TOML, keys of DriverConfig: batching, checkpoints, retries,
    /// bounds); the flags below override it.
    #[arg(long)]
    driver_config: Option<PathBuf>,
    /// Cut output into a batch once this many records were consumed since the last cut.
    #[arg(long)]
    flush_max_records: Option<usize>,
    /// Cut archive copies, dead letters and late records into a batch at most this many
    /// milliseconds after they started pending (alerts and final windows go at once).
    #[arg(long)]
    flush_interval_ms: Option<u64>,
    /// A write not acknowledged within this many milliseconds is retried.
    #[arg(long)]
    write_timeout_ms: Option<u64>,
    /// Unacknowledged output items past which every partition is paused.
    #[arg(long)]
    max_pending_items: Option<usize>,
    /// Take a checkpoint at most this many milliseconds apart.
    #[arg(long)]
    checkpoint_interval_ms: Option<u64>,
    /// Stop after consuming this many records (state checkpointed, windows left open).
    #[arg(long)]
    max_records: Option<u64>,
    /// Treat the input as finished after this many milliseconds without a record and with
    /// nothing left to write, every partition's end known and reached: flush every window
    /// final, checkpoint, and exit.
    #[arg(long)]
    idle_exit_ms: Option<u64>,
    /// Attempts to reach each service at start, one second apart; 0 (the default) waits until
    /// it answers.
    #[arg(long, env = "READY_ATTEMPTS", default_value_t = 0)]
    ready_attempts: u32,
    /// Do not print the console table every 30 s.
    #[arg(long)]
    no_console: bool,
    /// Serve Prometheus `/metrics`, `/healthz` and `/readyz` on this address (for example
    /// `0.0.0.0:9898`); not served when unset.
    #[arg(long, env = "PIPELINE_METRICS_ADDR", value_name = "HOST:PORT")]
    metrics_addr: Option<SocketAddr>,
    /// Where the output goes: `databases` (MongoDB, PostgreSQL and the `dead-letters` topic),
    /// or `null`, a benchmarking mode: every write is acknowledged at once and nothing is kept,
    /// MongoDB and PostgreSQL are not contacted, checkpoints and offset commits go on as usual,
    /// and alert latency is measured up to the null sink's acknowledgement.
    #[arg(long, value_enum, default_value_t = SinkArg::Databases)]
    sink: SinkArg,
    /// At exit, write what the run did as JSON to this file: records, wall time, rows sent,
    /// latency percentiles (alert, window, sink write, trigger write) and per-query counts.
    #[arg(long, value_name = "FILE")]
    report_json: Option<PathBuf>,
}

/// `--sink`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum SinkArg {
    /// MongoDB, PostgreSQL and the `dead-letters` topic.
    Databases,
    /// Acknowledge every write at once and keep nothing (benchmarks).
    Null,
}

/// The driver configuration: the file's, then the flags'.
#[cfg(feature = "services")]
fn driver_config(args: &StreamingArgs) -> Result<pipeline::driver::DriverConfig> {
    let mut c: pipeline::driver::DriverConfig = match &args.driver_config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            toml::from_str(&text).with_context(|| format!("invalid {}", path.display()))?
        }
        None => pipeline::driver::DriverConfig::default(),
    };
    if let Some(v) = args.flush_max_records {
        c.flush_max_records = v;
    }
    if let Some(v) = args.flush_interval_ms {
        c.flush_interval_ms = v;
    }
    if let Some(v) = args.write_timeout_ms {
        c.write_timeout_ms = v;
    }
    if let Some(v) = args.max_pending_items {
        c.max_pending_items = v;
    }
    if let Some(v) = args.checkpoint_interval_ms {
        c.checkpoint_interval_ms = v;
    }
    if args.idle_exit_ms.is_some() {
        c.idle_exit_ms = args.idle_exit_ms;
    }
    c.validate()?;
    Ok(c)
}

fn load_config(path: Option<&PathBuf>) -> Result<EngineConfig> {
    let Some(path) = path else {
        return Ok(EngineConfig::default());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read engine configuration {}", path.display()))?;
    toml::from_str(&text)
        .with_context(|| format!("invalid engine configuration {}", path.display()))
}

fn replay(input: PathBuf, output: PathBuf, config: Option<PathBuf>) -> Result<()> {
    let mut config = load_config(config.as_ref())?;
    // The raw archive only matters to the PostgreSQL sink.
    config.archive_raw = false;
    let mut engine = Engine::new(config)?;
    let reader: Box<dyn std::io::BufRead> = if input.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        let f = File::open(&input).with_context(|| format!("cannot open {}", input.display()))?;
        Box::new(BufReader::with_capacity(1 << 20, f))
    };
    let writer: Box<dyn Write> = if output.as_os_str() == "-" {
        Box::new(std::io::stdout().lock())
    } else {
        let f =
            File::create(&output).with_context(|| format!("cannot create {}", output.display()))?;
        Box::new(f)
    };
    let summary = pipeline::replay::replay(
        &mut engine,
        reader,
        BufWriter::with_capacity(1 << 20, writer),
    )?;
    let c = engine.counters();
    let mut err = std::io::stderr().lock();
    writeln!(err, "replayed {} records", summary.records)?;
    for topic in Topic::ALL {
        if let Some(t) = c.topics.get(&topic) {
            let reasons: Vec<String> = t
                .dead_letter_reasons
                .iter()
                .map(|(r, n)| format!("{}={n}", r.name()))
                .collect();
            writeln!(
                err,
                "  {:<17} in {:>9}  accepted {:>9}  dead-lettered {:>6} {}",
                topic.name(),
                t.records_in,
                t.accepted,
                t.dead_lettered,
                if reasons.is_empty() {
                    String::new()
                } else {
                    format!("({})", reasons.join(", "))
                }
            )?;
        }
    }
    for q in Query::ALL {
        if let Some(x) = c.queries.get(&q) {
            writeln!(
                err,
                "  {:<22} aggregated {:>9}  late {:>5}  over limit {:>3}  partial rows {:>6}  final rows {:>6}  alerts {:>6}",
                q.name(),
                x.aggregated,
                x.late,
                x.over_limit,
                x.partial_rows,
                x.final_rows,
                x.alerts
            )?;
        }
    }
    match c.check_conservation() {
        Ok(()) => writeln!(
            err,
            "conservation holds: in = aggregated + dead-lettered + late"
        )?,
        Err(e) => bail!("conservation violated: {e}"),
    }
    writeln!(
        err,
        "wrote {} rows, {} dead letters, {} late records",
        summary.rows, summary.dead_letters, summary.late
    )?;
    writeln!(err, "output digest: {}", summary.digest)?;
    Ok(())
}

#[cfg(feature = "services")]
fn streaming(args: StreamingArgs, log_format: LogFormat) -> Result<()> {
    use pipeline::streaming::{SinkMode, StreamingConfig, run, run_scaled, shutdown_signal};

    pipeline::logging::init(log_format);
    let mut config = StreamingConfig::new(
        &args.kafka_bootstrap_servers,
        &args.mongodb_uri,
        &args.postgres_url,
    );
    config.engine = load_config(args.engine_config.as_ref())?;
    config.driver = driver_config(&args)?;
    config.checkpoint_dir = args.checkpoint_dir;
    config.kafka.group_id = args.group_id;
    config.kafka.topic_prefix = args.topic_prefix;
    config.kafka.read_ahead_kbytes = args.kafka_read_ahead_kb;
    config.kafka.session_timeout_ms = args.session_timeout_ms;
    config.mongo.database = args.mongodb_database;
    config.postgres.schema = args.postgres_schema;
    config.max_records = args.max_records;
    config.ready_attempts = args.ready_attempts;
    config.console = !args.no_console;
    config.metrics_addr = args.metrics_addr;
    config.sink_mode = match args.sink {
        SinkArg::Databases => SinkMode::Databases,
        SinkArg::Null => SinkMode::Null,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let report = match args.scale_out {
        true => runtime.block_on(run_scaled(config, shutdown_signal()))?,
        false => runtime.block_on(run(config, shutdown_signal()))?,
    };
    eprintln!(
        "stopped ({:?}) after {} records, {} batches; {}",
        report.stop,
        report.records,
        report.flushes,
        report.metrics.report()
    );
    if let Some(path) = &args.report_json {
        let text = serde_json::to_string_pretty(&report_json(&report))?;
        std::fs::write(path, text + "\n")
            .with_context(|| format!("cannot write the run report {}", path.display()))?;
    }
    Ok(())
}

/// `--report-json`: what a run did, for benchmark scripts.
#[cfg(feature = "services")]
fn report_json(report: &pipeline::streaming::RunReport) -> serde_json::Value {
    let m = report.metrics.report();
    let queries: serde_json::Map<String, serde_json::Value> = report
        .counters
        .queries
        .iter()
        .map(|(q, c)| {
            let v = serde_json::json!({
                "aggregated": c.aggregated,
                "late": c.late,
                "over_limit": c.over_limit,
                "partial_rows": c.partial_rows,
                "final_rows": c.final_rows,
                "alerts": c.alerts,
            });
            (q.name().to_owned(), v)
        })
        .collect();
    serde_json::json!({
        "stop": format!("{:?}", report.stop),
        "records": report.records,
        "elapsed_ms": report.elapsed_ms,
        "writes": report.flushes,
        "rows": report.rows,
        "dead_letters": report.dead_letters,
        "late": report.late,
        "archive": report.archive,
        "alert_latency": m.alert_latency,
        "window_latency": m.window_latency,
        "sink_write": m.sink_write,
        "trigger_write": m.trigger_write,
        "queries": queries,
    })
}

#[cfg(not(feature = "services"))]
fn streaming(_args: StreamingArgs, _log_format: LogFormat) -> Result<()> {
    bail!(
        "this `pipeline` was built without the `services` feature; rebuild with \
         `cargo build --release -p pipeline --features services` to run the Kafka job"
    )
}

#[cfg(feature = "services")]
fn batch(args: BatchArgs, log_format: LogFormat) -> Result<()> {
    use pipeline::batch::{BatchConfig, BatchError, run};
    use pipeline::time::format_rfc3339;

    pipeline::logging::init(log_format);
    let instant = |flag: &str, text: &Option<String>| -> Result<Option<i64>> {
        text.as_deref()
            .map(|t| {
                pipeline::time::parse(t)
                    .ok()
                    .and_then(|ts| ts.utc_millis())
                    .with_context(|| {
                        format!("--{flag} `{t}` is not an RFC 3339 instant (2026-11-24T00:00:00Z)")
                    })
            })
            .transpose()
    };
    let mut config = BatchConfig::new(&args.postgres_url, &args.postgres_schema);
    config.from_ms = instant("from", &args.from)?;
    config.to_ms = instant("to", &args.to)?;
    config.zone_step_ms = i64::from(args.zone_step_s) * 1000;
    config.ready_attempts = args.ready_attempts;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let report = match runtime.block_on(run(&config)) {
        Ok(report) => report,
        // Nothing to compute is an answer, not a failure of the program: the message alone,
        // without the error chain or a backtrace, and exit status 2.
        Err(e @ (BatchError::EmptyArchive { .. } | BatchError::NoDataInRange { .. })) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
        Err(e) => return Err(e.into()),
    };
    println!(
        "Computed historical features of {} traffic readings in [{}, {}) in {:.1} s:",
        report.traffic_readings,
        format_rfc3339(report.from_ms),
        format_rfc3339(report.to_ms),
        report.elapsed_ms as f64 / 1000.0
    );
    for s in &report.stages {
        println!(
            "  {:<24} {:>9} rows  {:>7.1} s",
            s.stage,
            s.rows,
            s.elapsed_ms as f64 / 1000.0
        );
    }
    let mae = |v: Option<f64>| v.map_or_else(|| "n/a".to_owned(), |m| format!("{m:.2}"));
    println!("Speed forecast MAE (km/h) on the held-out last week, per zone:");
    println!(
        "  {:<10} {:>8} {:>18} {:>6}",
        "zone", "seasonal", "naive (last week)", "hours"
    );
    for f in &report.forecasts {
        println!(
            "  {:<10} {:>8} {:>18} {:>6}",
            f.zone_id,
            mae(f.seasonal.mae_kmh),
            mae(f.naive.mae_kmh),
            f.seasonal.hours
        );
    }
    Ok(())
}

#[cfg(not(feature = "services"))]
fn batch(_args: BatchArgs, _log_format: LogFormat) -> Result<()> {
    bail!(
        "this `pipeline` was built without the `services` feature; rebuild with \
         `cargo build --release -p pipeline --features services` to run the batch job"
    )
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let command = match cli.command {
        Some(c) => c,
        None => match cli.job_type.as_str() {
            // The flags' values then come from the environment alone.
            "streaming" => Command::Streaming(StreamingArgs::parse_from(["pipeline streaming"])),
            "batch" => Command::Batch(BatchArgs::parse_from(["pipeline batch"])),
            other => bail!("PIPELINE_JOB_TYPE must be `streaming` or `batch`, not `{other}`"),
        },
    };
    match command {
        Command::Replay {
            input,
            output,
            config,
        } => replay(input, output, config),
        Command::Streaming(args) => streaming(args, cli.log_format),
        Command::Batch(args) => batch(args, cli.log_format),
    }
}
