//! `pipeline`: the production job's command line.
//!
//! - `pipeline replay --input events.jsonl --output outputs.jsonl` runs the engine offline over
//!   the generator's JSONL.
//! - `pipeline streaming` / `pipeline batch` are the Kafka/MongoDB/PostgreSQL jobs (built with the
//!   `services` feature). Without a subcommand the job type comes from `PIPELINE_JOB_TYPE`.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

use pipeline::engine::{Engine, EngineConfig, Query};
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
}

#[derive(Debug, Subcommand)]
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
    Streaming,
    /// The batch job: historical features from the PostgreSQL archive.
    Batch,
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

fn main() -> Result<()> {
    let cli = Cli::parse();
    let command = match cli.command {
        Some(c) => c,
        None => match cli.job_type.as_str() {
            "streaming" => Command::Streaming,
            "batch" => Command::Batch,
            other => bail!("PIPELINE_JOB_TYPE must be `streaming` or `batch`, not `{other}`"),
        },
    };
    match command {
        Command::Replay {
            input,
            output,
            config,
        } => replay(input, output, config),
        Command::Streaming | Command::Batch => bail!(
            "this `pipeline` was built without the `services` feature; rebuild with \
             `cargo build --release -p pipeline --features services` to run the Kafka job"
        ),
    }
}
