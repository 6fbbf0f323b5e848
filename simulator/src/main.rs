//! `simulator run <scenario.toml | folder> [--seed N] [--backend memory|services|containers]
//! [--speed X] [--keep] [--report <dir>]`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use simulator::{Backend, Report, RunOptions, Scenario};

#[derive(Debug, Parser)]
#[command(
    name = "simulator",
    version,
    about = "Replays smart-city scenarios through the pipeline on a simulated clock and checks them."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs one scenario file, or every `*.toml` in a folder; exits 0 only if all expectations hold.
    Run {
        /// A scenario file or a folder of them.
        path: PathBuf,
        /// Overrides the scenario's seed.
        #[arg(long)]
        seed: Option<u64>,
        /// Overrides the scenario's backend: `memory` (in-process, simulated clock), `services`
        /// (real Kafka, MongoDB and PostgreSQL at KAFKA_BOOTSTRAP_SERVERS, MONGODB_URI and
        /// POSTGRES_URL; build with `--features services`) or `containers` (the same on official
        /// images through a Docker engine; build with `--features containers`).
        #[arg(long, value_enum)]
        backend: Option<Backend>,
        /// Real backends: simulated seconds replayed per wall second (default 50: an hour of
        /// the city in 72 s).
        #[arg(long)]
        speed: Option<f64>,
        /// Real backends: keep the run's topics, MongoDB database, PostgreSQL schema and
        /// checkpoint for inspection instead of removing them.
        #[arg(long)]
        keep: bool,
        /// Writes `report.json` (one folder per scenario when running a folder) here.
        #[arg(long)]
        report: Option<PathBuf>,
    },
}

fn scenario_files(path: &Path) -> Result<Vec<PathBuf>> {
    if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("cannot list {}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        files.sort();
        if files.is_empty() {
            bail!("no *.toml scenario in {}", path.display());
        }
        Ok(files)
    } else {
        Ok(vec![path.to_owned()])
    }
}

fn run_one(file: &Path, options: &RunOptions) -> Result<Report> {
    let scenario = Scenario::load(file)?;
    let bar = if std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(1000);
        bar.set_style(
            ProgressStyle::with_template("{msg} [{bar:40}] {percent}% simulated")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_message(scenario.name.clone());
        Some(bar)
    } else {
        None
    };
    let mut progress = |done: i64, total: i64| {
        if let Some(bar) = &bar {
            bar.set_position((done * 1000 / total.max(1)) as u64);
        }
    };
    let report = simulator::run_scenario(&scenario, file, options, &mut progress)?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(report)
}

fn main() -> Result<ExitCode> {
    let cli = Cli::parse();
    // The real backends run the streaming job in-process; its logs go to stderr at RUST_LOG's
    // level (warnings by default).
    #[cfg(feature = "services")]
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let Command::Run {
        path,
        seed,
        backend,
        speed,
        keep,
        report,
    } = cli.command;
    let options = RunOptions {
        seed,
        backend,
        speed,
        keep,
    };
    let files = scenario_files(&path)?;
    let many = files.len() > 1;
    let mut all_passed = true;
    for file in &files {
        let r = run_one(file, &options)?;
        println!("{}", r.summary());
        if !r.passed {
            all_passed = false;
            eprint!("{}", r.failures());
        }
        if let Some(dir) = &report {
            let dir = if many {
                dir.join(&r.scenario)
            } else {
                dir.clone()
            };
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            let out = dir.join("report.json");
            std::fs::write(&out, serde_json::to_vec_pretty(&r)?)
                .with_context(|| format!("cannot write {}", out.display()))?;
        }
    }
    if many {
        println!(
            "{} scenarios: {}",
            files.len(),
            if all_passed {
                "all passed"
            } else {
                "SOME FAILED"
            }
        );
    }
    Ok(if all_passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
