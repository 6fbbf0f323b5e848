//! `generator`: writes the seeded smart-city records as JSONL, ordered by produce time, or
//! (`generator produce`, feature `kafka`) publishes them to Kafka, or (`generator backfill`,
//! feature `postgres`) writes a history of them into the PostgreSQL raw archive.
//!
//! A thin shell over the library: it reads the configuration (built-in thesis city, then the
//! `GENERATION_INTERVAL` environment variable, then `--config`, then the flags), runs the
//! generator and writes each record's JSONL line through a buffered writer. It reads no clock;
//! progress goes to stderr only when stderr is a terminal.

use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use generator::{Generator, GeneratorConfig};
use indicatif::{ProgressBar, ProgressStyle};

/// Seeded smart-city IoT data generator: the thesis city (792 messages/minute) plus scenario
/// knobs, written as JSONL in produce-time order. The same seed and config give byte-identical
/// output.
#[derive(Debug, Parser)]
#[command(name = "generator", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    generate: GenerateArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write the records as JSONL (what the generator does when no subcommand is given).
    Generate(GenerateArgs),
    /// Publish the records to Kafka, keyed by entity id, paced in real time by
    /// `GENERATION_INTERVAL`, accelerated by `--speed`, or as fast as possible (`--max-speed`).
    /// Needs the `kafka` feature.
    Produce(ProduceArgs),
    /// Write a seeded history (`--days` before `--end`, one reading per device every
    /// `--resolution`, incidents on top) straight into the PostgreSQL raw archive with binary
    /// COPY, replacing the archive's rows of that span. Needs the `postgres` feature.
    Backfill(BackfillArgs),
}

/// Flags of `generator backfill`.
#[derive(Debug, Args)]
struct BackfillArgs {
    /// Seed of every random stream (required): the same seed gives the same rows.
    #[arg(long, value_name = "U64")]
    seed: Option<u64>,
    /// Days of history.
    #[arg(long, default_value_t = 180)]
    days: u32,
    /// One reading per device every so often: 5m, 1m, 30s, 1h ...
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration_s)]
    resolution: u64,
    /// First instant after the history, RFC 3339 (default: the configuration's `start`, so the
    /// history ends where the live generator begins).
    #[arg(long, value_name = "RFC3339")]
    end: Option<String>,
    /// A generator configuration in TOML, or a scenario file with a `[generator]` table (its
    /// start, duration and tick are replaced by the backfill's span and resolution).
    #[arg(long, value_name = "TOML")]
    config: Option<PathBuf>,
    /// PostgreSQL connection URL.
    #[arg(
        long,
        env = "POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/smart_city",
        hide_env_values = true
    )]
    postgres_url: String,
    /// PostgreSQL schema of the archive tables.
    #[arg(long, env = "POSTGRES_SCHEMA", default_value = "public")]
    postgres_schema: String,
    /// Attempts to reach PostgreSQL at start, one second apart; 0 (the default) waits until it
    /// answers.
    #[arg(long, env = "READY_ATTEMPTS", default_value_t = 0)]
    ready_attempts: u32,
}

/// Flags of `generator produce`.
#[derive(Debug, Args)]
struct ProduceArgs {
    #[command(flatten)]
    generate: GenerateArgs,
    /// Kafka bootstrap servers.
    #[arg(
        long,
        env = "KAFKA_BOOTSTRAP_SERVERS",
        default_value = "127.0.0.1:9092"
    )]
    bootstrap_servers: String,
    /// Partitions of each topic created (existing topics are left as they are).
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// Prefix of the four topic names (e.g. `test-` gives `test-traffic-sensors`).
    #[arg(long, default_value = "")]
    topic_prefix: String,
    /// Simulated seconds per wall-clock second: 1 is real time, 60 a minute per second.
    #[arg(long, default_value_t = 1.0)]
    speed: f64,
    /// Publish as fast as possible, ignoring produce times.
    #[arg(long, conflicts_with = "speed")]
    max_speed: bool,
}

#[derive(Debug, Args)]
struct GenerateArgs {
    /// Seed of every random stream (required).
    #[arg(long, value_name = "U64")]
    seed: Option<u64>,
    /// How much time to generate: 90s, 30m, 1h, 1h30m, 2d ... (overrides `duration_s`).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_s)]
    duration: Option<u64>,
    /// First instant generated, RFC 3339, e.g. 2026-11-24T07:00:00Z (overrides `start`);
    /// `generator produce` also takes `now`.
    #[arg(long, value_name = "RFC3339")]
    start: Option<String>,
    /// A generator configuration in TOML, or a scenario file with a `[generator]` table.
    /// `GENERATION_INTERVAL` (seconds) sets the tick unless the file sets `tick_interval_ms`.
    #[arg(long, value_name = "TOML")]
    config: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Jsonl)]
    format: Format,
    /// Output file (created or truncated); stdout when absent.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

/// Output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Format {
    /// One JSON object per line: topic, key, produce_time, value (or value_raw), fault.
    Jsonl,
}

/// Parses `90s`, `30m`, `1h`, `1h30m`, `2d` or a bare number of seconds.
fn parse_duration_s(text: &str) -> Result<u64, String> {
    let err = || format!("`{text}` is not a duration; write e.g. 90s, 30m, 1h, 1h30m or 2d");
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(seconds);
    }
    let mut total = 0u64;
    let mut number: Option<u64> = None;
    for c in text.chars() {
        if let Some(d) = c.to_digit(10) {
            number = Some(
                number
                    .unwrap_or(0)
                    .checked_mul(10)
                    .and_then(|n| n.checked_add(u64::from(d)))
                    .ok_or_else(err)?,
            );
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(err()),
        };
        let n = number.take().ok_or_else(err)?;
        total = n
            .checked_mul(unit)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(err)?;
    }
    if number.is_some() || text.is_empty() {
        return Err(err());
    }
    Ok(total)
}

/// Reads `GENERATION_INTERVAL` (seconds, may be fractional) as a tick in milliseconds.
fn interval_from_env() -> Result<Option<u64>> {
    let Ok(text) = std::env::var("GENERATION_INTERVAL") else {
        return Ok(None);
    };
    let seconds: f64 = text
        .trim()
        .parse()
        .ok()
        .filter(|s: &f64| s.is_finite() && *s > 0.0)
        .with_context(|| {
            format!(
                "GENERATION_INTERVAL=`{text}` is not a positive number of seconds; set it to e.g. 5"
            )
        })?;
    Ok(Some((seconds * 1000.0).round().max(1.0) as u64))
}

fn load_config(args: &GenerateArgs) -> Result<GeneratorConfig> {
    let mut config = GeneratorConfig::default();
    let env_tick = interval_from_env()?;
    if let Some(tick) = env_tick {
        config.tick_interval_ms = tick;
    }
    if let Some(path) = &args.config {
        config = read_config_file(path, env_tick)?;
    }
    if let Some(start) = &args.start {
        config.start = start.clone();
    }
    if let Some(duration_s) = args.duration {
        config.duration_s = duration_s;
    }
    Ok(config)
}

fn read_config_file(path: &Path, env_tick: Option<u64>) -> Result<GeneratorConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the config file {}", path.display()))?;
    let mut config = GeneratorConfig::from_toml_str(&text)
        .with_context(|| format!("config file {}", path.display()))?;
    // The environment's interval is a default: a tick written in the file wins over it.
    let table: toml::Table = toml::from_str(&text)?;
    let inner = match table.get("generator") {
        Some(toml::Value::Table(t)) => t,
        _ => &table,
    };
    if let (Some(tick), false) = (env_tick, inner.contains_key("tick_interval_ms")) {
        config.tick_interval_ms = tick;
    }
    Ok(config)
}

fn run(args: GenerateArgs) -> Result<()> {
    let Some(seed) = args.seed else {
        bail!("--seed is required: the seed makes the output reproducible (e.g. --seed 7)");
    };
    let config = load_config(&args)?;
    let generator = Generator::new(&config, seed)?;
    match args.format {
        Format::Jsonl => {}
    }

    let sink: Box<dyn Write> = match &args.out {
        Some(path) => Box::new(
            File::create(path)
                .with_context(|| format!("cannot create the output file {}", path.display()))?,
        ),
        None => Box::new(io::stdout().lock()),
    };
    let mut out = BufWriter::with_capacity(1 << 20, sink);

    let progress = io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::new(config.duration_s);
        bar.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} simulated s, {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    });

    let mut line = Vec::with_capacity(1024);
    let mut written = 0u64;
    for record in generator.records() {
        line.clear();
        record.write_jsonl(&mut line);
        if let Err(e) = out.write_all(&line) {
            return write_error(e, &args.out);
        }
        written += 1;
        if let Some(bar) = &progress
            && written.is_multiple_of(4096)
        {
            let done = (record.produce_time_ms - generator.start_ms()).max(0) as u64 / 1000;
            bar.set_position(done.min(config.duration_s));
            bar.set_message(format!("{written} records"));
        }
    }
    if let Err(e) = out.flush() {
        return write_error(e, &args.out);
    }
    if let Some(bar) = progress {
        bar.finish_with_message(format!("{written} records"));
    }
    Ok(())
}

/// A reader that stops early (`generator ... | head`) is not an error; anything else is.
fn write_error(e: io::Error, out: &Option<PathBuf>) -> Result<()> {
    if e.kind() == io::ErrorKind::BrokenPipe {
        return Ok(());
    }
    let target = out
        .as_ref()
        .map_or_else(|| "stdout".to_owned(), |p| p.display().to_string());
    Err(e).with_context(|| format!("cannot write to {target}"))
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Generate(args)) => run(args),
        Some(Command::Produce(args)) => produce_command(args),
        Some(Command::Backfill(args)) => backfill_command(args),
        None => run(cli.generate),
    }
}

#[cfg(feature = "postgres")]
fn backfill_command(args: BackfillArgs) -> Result<()> {
    use generator::backfill::{self, Target};

    let Some(seed) = args.seed else {
        bail!("--seed is required: the seed makes the history reproducible (e.g. --seed 42)");
    };
    if args.days == 0 || args.resolution == 0 {
        bail!("--days and --resolution must be positive");
    }
    let base = match &args.config {
        Some(path) => read_config_file(path, None)?,
        None => GeneratorConfig::default(),
    };
    let end = args.end.as_deref().unwrap_or(&base.start);
    let end_ms = pipeline::time::parse(end)
        .ok()
        .and_then(|t| t.utc_millis())
        .with_context(|| format!("--end `{end}` is not an RFC 3339 instant"))?;
    let config = backfill::config(&base, end_ms, args.days, args.resolution * 1000);
    let generator = Generator::new(&config, seed)?;
    let target = Target {
        url: args.postgres_url.clone(),
        schema: args.postgres_schema.clone(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    eprintln!(
        "backfill: {} days from {} at one reading per device every {} s, seed {seed}",
        args.days, config.start, args.resolution
    );
    let report = runtime.block_on(async {
        let client =
            pipeline::batch::wait_for_postgres(&args.postgres_url, args.ready_attempts).await?;
        backfill::run(&generator, client, &target, |p| {
            eprintln!(
                "backfill: {:>3.0} %  {:>9} rows  {:>6.1} s  {:>9.0} rows/s",
                p.done * 100.0,
                p.rows,
                p.elapsed_s,
                p.rows as f64 / p.elapsed_s.max(1e-9)
            );
        })
        .await
        .map_err(anyhow::Error::from)
    })?;
    let tables: Vec<String> = report
        .rows
        .iter()
        .map(|(t, n)| format!("{t} {n}"))
        .collect();
    println!(
        "Backfilled {} rows ({}) in {:.2} s: {:.0} rows/s; {} rows of the span replaced",
        report.total(),
        tables.join(", "),
        report.elapsed_s,
        report.total() as f64 / report.elapsed_s.max(1e-9),
        report.replaced
    );
    Ok(())
}

#[cfg(not(feature = "postgres"))]
fn backfill_command(_: BackfillArgs) -> Result<()> {
    bail!(
        "this `generator` was built without the `postgres` feature; rebuild with \
         `cargo build --release -p generator --features postgres` to backfill the archive"
    )
}

#[cfg(feature = "kafka")]
fn produce_command(args: ProduceArgs) -> Result<()> {
    produce::run(args)
}

#[cfg(not(feature = "kafka"))]
fn produce_command(_: ProduceArgs) -> Result<()> {
    bail!(
        "this `generator` was built without the `kafka` feature; rebuild with \
         `cargo build --release -p generator --features kafka` to publish to Kafka"
    )
}

#[cfg(feature = "kafka")]
mod produce;

#[cfg(test)]
mod tests {
    use super::*;

    // Proves the duration spellings of the help text, and that nonsense is refused.
    #[test]
    fn durations() {
        assert_eq!(parse_duration_s("90s"), Ok(90));
        assert_eq!(parse_duration_s("30m"), Ok(1800));
        assert_eq!(parse_duration_s("1h"), Ok(3600));
        assert_eq!(parse_duration_s("1h30m"), Ok(5400));
        assert_eq!(parse_duration_s("2d"), Ok(172_800));
        assert_eq!(parse_duration_s("45"), Ok(45));
        for bad in ["", "h", "1x", "1h30", "-1h", "99999999999999999999d"] {
            assert!(parse_duration_s(bad).is_err(), "{bad:?}");
        }
    }

    // Proves the flags work with and without the subcommand, and --help names each flag.
    #[test]
    fn cli_shapes() {
        let cli = Cli::try_parse_from(["generator", "--seed", "7", "--duration", "1h"]).unwrap();
        assert!(cli.command.is_none());
        assert_eq!(
            (cli.generate.seed, cli.generate.duration),
            (Some(7), Some(3600))
        );
        let cli =
            Cli::try_parse_from(["generator", "generate", "--seed", "8", "--format", "jsonl"])
                .unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Generate(GenerateArgs { seed: Some(8), .. }))
        ));
        let help = Cli::try_parse_from(["generator", "--help"])
            .unwrap_err()
            .to_string();
        for flag in [
            "--seed",
            "--duration",
            "--start",
            "--config",
            "--format",
            "--out",
        ] {
            assert!(help.contains(flag), "{flag} missing from --help");
        }
    }
}
