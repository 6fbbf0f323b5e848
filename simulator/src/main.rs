//! `simulator run <scenario.toml | folder> [--seed N] [--backend memory|services|containers]
//! [--speed X] [--keep] [--report <dir>] [--swarm]`; `simulator swarm <scenario.toml> [--seeds N]
//! [--first-seed S]`; `simulator bench --backend services [--out <file>] ...` (feature `services`).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use simulator::report::html;
use simulator::wallclock::Stopwatch;
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
        /// Writes `report.json` and the self-contained `report.html` here (one folder per
        /// scenario and an `index.html` when running a folder).
        #[arg(long)]
        report: Option<PathBuf>,
        /// Memory backend: inject the seed's swarm mix of faults instead of the scenario's
        /// `[faults]`, and check the digest against the fault-free run's (what `swarm` runs).
        #[arg(long)]
        swarm: bool,
    },
    /// Runs many seeds of one scenario on the memory backend, each with a seeded mix of faults
    /// (crashes, sinks down or slow, Kafka away, partitions' ends unknown, interleaved and
    /// lagging partitions, duplicate delivery, a tight pending-output bound); prints every failing seed with the command
    /// that reproduces it; exits 0 only if every seed passed.
    Swarm {
        /// The scenario file.
        path: PathBuf,
        /// How many seeds.
        #[arg(long, default_value_t = 20)]
        seeds: u64,
        /// The first seed.
        #[arg(long, default_value_t = 1)]
        first_seed: u64,
    },
    /// The end-to-end benchmark on real Kafka, MongoDB and PostgreSQL (at KAFKA_BOOTSTRAP_SERVERS,
    /// MONGODB_URI and POSTGRES_URL; build with `--features services`): the highest load factor
    /// the `pipeline streaming` binary sustains in real time (consumer lag not growing over the
    /// window), real-time latency at thesis load and at 10x, and the catch-up of a backlog. Takes
    /// 15-30 minutes; BENCHMARKS.md has the latest figures.
    Bench(BenchArgs),
}

/// `simulator bench`'s options.
#[derive(Debug, clap::Args)]
struct BenchArgs {
    /// Only `services` (the services of `scripts/services.sh`).
    #[arg(long, value_enum, default_value = "services")]
    backend: Backend,
    /// The `pipeline` binary; default: PIPELINE_BIN, else `pipeline` next to this binary.
    #[arg(long)]
    pipeline_bin: Option<PathBuf>,
    /// Seconds of each load step before its measurement window.
    #[arg(long, default_value_t = 20)]
    warmup_s: u64,
    /// Seconds over which the lag must not grow.
    #[arg(long, default_value_t = 60)]
    window_s: u64,
    /// Measure these load factors (comma-separated) instead of searching.
    #[arg(long, value_delimiter = ',')]
    loads: Vec<u32>,
    /// The search stops at this load factor (at most the generator's 20,000).
    #[arg(long, default_value_t = generator::MAX_LOAD_FACTOR)]
    max_load: u32,
    /// Seconds of each real-time latency run (thesis load and 10x; windows close from the
    /// second minute on); 0 skips them.
    #[arg(long, default_value_t = 300)]
    latency_s: u64,
    /// Hours of the city in the catch-up backlog; 0 skips it.
    #[arg(long, default_value_t = 24)]
    catch_up_hours: u64,
    /// Writes the figures (and the lag of every step, once a second) here as JSON.
    #[arg(long)]
    out: Option<PathBuf>,
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

/// Runs one scenario, with a progress bar on a terminal (none when stderr is not one, so logs
/// and CI output stay clean).
fn run_one(file: &Path, options: &RunOptions, nth: Option<(usize, usize)>) -> Result<Report> {
    let scenario = Scenario::load(file)?;
    let bar = if std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(1000);
        bar.set_style(
            ProgressStyle::with_template(
                "{msg} [{bar:40}] {percent}% of simulated time, {elapsed} (eta {eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_message(match nth {
            Some((i, n)) => format!("{} ({i}/{n})", scenario.name),
            None => scenario.name.clone(),
        });
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

fn run_swarm(path: &Path, first_seed: u64, seeds: u64) -> Result<ExitCode> {
    let scenario = Scenario::load(path)?;
    let results = simulator::swarm(&scenario, path, first_seed, seeds, |s| {
        if s.passed {
            println!("seed {:>6}  ok    {}", s.seed, s.injected.join("; "));
        } else {
            println!("seed {:>6}  FAIL  {}", s.seed, s.injected.join("; "));
            for v in &s.failures {
                println!(
                    "    FAILED {}\n      expected: {}\n      actual:   {}",
                    v.check, v.expected, v.actual
                );
            }
            println!("    reproduce: {}", s.reproduce);
        }
    })?;
    let failed: Vec<u64> = results
        .iter()
        .filter(|s| !s.passed)
        .map(|s| s.seed)
        .collect();
    println!(
        "swarm of {}: {} seeds, {} failed{}",
        scenario.name,
        results.len(),
        failed.len(),
        if failed.is_empty() {
            String::new()
        } else {
            format!(" ({failed:?})")
        }
    );
    Ok(if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Runs the benchmark and prints (and keeps) its figures.
#[cfg(feature = "services")]
fn bench(args: BenchArgs) -> Result<ExitCode> {
    if args.backend != Backend::Services {
        bail!("simulator bench runs on --backend services only");
    }
    let pipeline_bin = args
        .pipeline_bin
        .or_else(|| std::env::var_os("PIPELINE_BIN").map(PathBuf::from))
        .or_else(|| Some(std::env::current_exe().ok()?.with_file_name("pipeline")))
        .context("cannot tell where the pipeline binary is: pass --pipeline-bin")?;
    let options = simulator::bench::BenchOptions {
        pipeline_bin,
        warmup_s: args.warmup_s,
        window_s: args.window_s,
        loads: args.loads,
        max_load: args.max_load,
        latency_s: args.latency_s,
        catch_up_hours: args.catch_up_hours,
        ..Default::default()
    };
    let addresses = simulator::services::Addresses::from_env();
    let report = simulator::bench::run(&addresses, &options, &mut |line| println!("{line}"))?;
    println!("\n{}", report.summary());
    if let Some(out) = args.out {
        std::fs::write(&out, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("cannot write {}", out.display()))?;
        println!("figures written to {}", out.display());
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(not(feature = "services"))]
fn bench(_: BenchArgs) -> Result<ExitCode> {
    bail!(
        "this simulator was built without the `services` feature: rebuild with `cargo build \
         --release -p simulator --features services`"
    )
}

/// Writes `report.json` and `report.html` into `dir`, and says where, how big and how long the
/// page took.
fn write_report(r: &Report, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let out = dir.join("report.json");
    std::fs::write(&out, serde_json::to_vec_pretty(r)?)
        .with_context(|| format!("cannot write {}", out.display()))?;
    let watch = Stopwatch::start();
    let page = html::render(r)?;
    let out = dir.join("report.html");
    std::fs::write(&out, &page).with_context(|| format!("cannot write {}", out.display()))?;
    println!(
        "report: {} ({} KB, rendered in {:.1} ms)",
        out.display(),
        page.len().div_ceil(1024),
        watch.elapsed().as_secs_f64() * 1000.0
    );
    Ok(())
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
    let (path, seed, backend, speed, keep, report, swarm) = match cli.command {
        Command::Run {
            path,
            seed,
            backend,
            speed,
            keep,
            report,
            swarm,
        } => (path, seed, backend, speed, keep, report, swarm),
        Command::Swarm {
            path,
            seeds,
            first_seed,
        } => return run_swarm(&path, first_seed, seeds),
        Command::Bench(args) => return bench(args),
    };
    let options = RunOptions {
        seed,
        backend,
        speed,
        keep,
        swarm,
    };
    let files = scenario_files(&path)?;
    let many = files.len() > 1;
    let mut all_passed = true;
    let mut reports = Vec::new();
    for (i, file) in files.iter().enumerate() {
        let r = run_one(file, &options, many.then_some((i + 1, files.len())))?;
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
            write_report(&r, &dir)?;
            reports.push(r);
        }
    }
    if let Some(dir) = report.as_ref().filter(|_| many) {
        let entries: Vec<html::IndexEntry<'_>> = reports
            .iter()
            .map(|r| html::IndexEntry {
                report: r,
                href: format!("{}/report.html", r.scenario),
            })
            .collect();
        let out = dir.join("index.html");
        std::fs::write(&out, html::render_index(&entries))
            .with_context(|| format!("cannot write {}", out.display()))?;
        println!("index of the reports: {}", out.display());
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
