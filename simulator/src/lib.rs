//! The simulated-clock harness.
//!
//! A scenario ([`scenario`]) names a seed, a span of simulated time, generator and pipeline
//! knobs, a backend and expectations. [`run`] replays it through the pipeline engine on the
//! in-memory backends in a discrete-event loop ([`run::run_memory`]); [`expect`] checks the
//! outputs, counts and performance figures; [`report`] writes the summary table and
//! `report.json`. The output digest ([`pipeline::digest`]) pins determinism.
//!
//! **Invariant:** nothing here reads the wall clock except [`wallclock`], whose measurements
//! never reach the engine; same seed, same scenario, same output digest.

#[cfg(feature = "services")]
pub mod bench;
#[cfg(feature = "containers")]
pub mod containers;
pub mod expect;
pub mod faults;
pub mod report;
pub mod run;
pub mod scenario;
#[cfg(feature = "services")]
pub mod services;
mod stages;
pub mod throughput;
pub mod wallclock;

use std::path::Path;

pub use report::Report;
pub use scenario::{Backend, Scenario};

/// A scenario that could not be run (as opposed to one whose expectations failed).
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The scenario file is invalid.
    #[error(transparent)]
    Scenario(#[from] scenario::ScenarioError),
    /// The run could not start or a sink failed.
    #[error("{0}")]
    Run(#[from] run::RunError),
    /// The backend is not available here.
    #[error("{0}")]
    Backend(String),
}

/// How to run a scenario: what overrides the scenario file, and the real backends' knobs.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Overrides the scenario's seed.
    pub seed: Option<u64>,
    /// Overrides the scenario's backend.
    pub backend: Option<Backend>,
    /// Real backends: simulated seconds per wall second (default 50).
    pub speed: Option<f64>,
    /// Real backends: keep the run's topics, database, schema and checkpoint.
    pub keep: bool,
    /// Memory backend: replace the scenario's `[faults]` by the seed's swarm mix, and check the
    /// digest against the fault-free run's.
    pub swarm: bool,
}

/// Runs a loaded scenario and checks it.
pub fn run_scenario(
    scenario: &Scenario,
    file: &Path,
    options: &RunOptions,
    progress: run::Progress<'_>,
) -> Result<Report, SimError> {
    let seed = options.seed.unwrap_or(scenario.seed);
    let backend = options.backend.unwrap_or(scenario.backend);
    let mut fault_free = None;
    // Kept only when the rows may legitimately differ from it (see `expect::order_dependent`):
    // what is compared then is what does not depend on the order records arrive in.
    let mut fault_free_run = None;
    let result = match backend {
        Backend::Memory => {
            let plan = fault_plan(scenario, seed, options.swarm)?;
            if (scenario.expect.digest_equals_fault_free || options.swarm) && !plan.is_empty() {
                let clean = run::run_memory_with(
                    scenario,
                    seed,
                    &faults::FaultPlan::default(),
                    &mut |_, _| {},
                )?;
                fault_free = Some(clean.documents.digest_hex());
                if expect::order_dependent(scenario, &plan) {
                    fault_free_run = Some(clean);
                }
            }
            run::run_memory_with(scenario, seed, &plan, progress)?
        }
        Backend::Services => real(scenario, seed, options, progress, false)?,
        Backend::Containers => real(scenario, seed, options, progress, true)?,
    };
    let digests = expect::Digests::of(&result);
    let digest = digests.documents.clone();
    let fault_free = match (
        &fault_free,
        scenario.expect.digest_equals_fault_free || options.swarm,
    ) {
        (Some(d), _) => Some(d.as_str()),
        // No fault was planned: the run is its own fault-free run.
        (None, true) if backend == Backend::Memory => Some(digest.as_str()),
        (None, _) => None,
    };
    let clean = clean_run(scenario, seed)?;
    // Under partition lag a scenario whose rows depend on the interleaving of partitions is
    // held to what it promises on a live stream instead of an equal digest.
    let (fault_free, order_check) = match &fault_free_run {
        Some(reference) => (
            None,
            Some(expect::order_independent_outcome(&result, reference)),
        ),
        None => (fault_free, None),
    };
    let verdicts = if options.swarm {
        // A swarm seed is another seed with faults: the scenario's own expectations were
        // written for its seed and a calm run; what must hold under any faults is checked.
        let mut v = expect::builtin(&result, &scenario.pipeline, &digests);
        match order_check {
            Some(check) => {
                v.push(check);
                v.extend(expect::clean_run_check(scenario, &result, clean.as_ref()));
            }
            None => v.push(expect::digest_equals(
                &digest,
                fault_free.unwrap_or_default(),
            )),
        }
        v.extend(expect::driver_checks(scenario, &result));
        v
    } else {
        let mut v = expect::evaluate(
            scenario,
            &result,
            &digests,
            fault_free,
            clean.as_ref(),
            backend,
        );
        v.extend(order_check);
        if backend == Backend::Memory {
            v.extend(expect::driver_checks(scenario, &result));
        }
        v
    };
    let report = Report::new(
        scenario,
        &file.display().to_string(),
        backend,
        &result,
        digest,
        verdicts,
    );
    // Freeing a simulated day's stores (millions of rows) took a twentieth of a 10x run: done
    // on a thread of its own, off the caller's path (a process that exits first skips it).
    std::thread::spawn(move || drop((result, clean, fault_free_run)));
    Ok(report)
}

/// The faults of a memory run: the scenario's `[faults]`, or the seed's swarm mix.
fn fault_plan(scenario: &Scenario, seed: u64, swarm: bool) -> Result<faults::FaultPlan, SimError> {
    let start = scenario.start_ms();
    let end = start + scenario.duration_ms();
    if swarm {
        return Ok(swarm_plan(scenario, seed));
    }
    scenario
        .faults
        .plan(seed, start, end)
        .map_err(|e| SimError::Run(run::RunError::Faults(e)))
}

/// The swarm's mix of faults for a seed of a scenario.
pub fn swarm_plan(scenario: &Scenario, seed: u64) -> faults::FaultPlan {
    let start = scenario.start_ms();
    let lag = faults::swarm_lag_bound_ms(&scenario.generator, scenario.pipeline.watermark_delay_ms);
    faults::FaultsConfig::swarm(seed, start, start + scenario.duration_ms(), lag)
}

/// The scenario without its hostile entries, on the memory backend with the same seed, when an
/// expectation compares with it. The memory backend's final rows are the real backends' (their
/// digests are tested equal), so one reference serves every backend.
fn clean_run(scenario: &Scenario, seed: u64) -> Result<Option<run::RunResult>, SimError> {
    if scenario.expect.clean_run.is_none() {
        return Ok(None);
    }
    let mut clean = scenario.clone();
    clean.name = format!("{} (without hostile input)", scenario.name);
    clean.generator.hostile.clear();
    Ok(Some(run::run_memory(&clean, seed, &mut |_, _| {})?))
}

/// The real backends: services at the addresses in the environment, or in containers.
#[cfg(feature = "services")]
fn real(
    scenario: &Scenario,
    seed: u64,
    options: &RunOptions,
    progress: run::Progress<'_>,
    containers: bool,
) -> Result<run::RunResult, SimError> {
    let services_options = services::ServicesOptions {
        speed: options.speed.unwrap_or(services::DEFAULT_SPEED),
        keep: options.keep,
        ..services::ServicesOptions::default()
    };
    if !containers {
        let addresses = services::Addresses::from_env();
        return services::run_services(scenario, seed, &addresses, &services_options, progress);
    }
    #[cfg(feature = "containers")]
    return containers::run(
        scenario,
        seed,
        &services_options,
        containers::DEFAULT_START_TIMEOUT,
        progress,
    );
    #[cfg(not(feature = "containers"))]
    Err(SimError::Backend(format!(
        "{}; containers also need a Docker engine: without one, start the same services with \
         `bash scripts/services.sh up` and use --backend services",
        without("containers")
    )))
}

#[cfg(not(feature = "services"))]
fn real(
    _: &Scenario,
    _: u64,
    _: &RunOptions,
    _: run::Progress<'_>,
    containers: bool,
) -> Result<run::RunResult, SimError> {
    Err(SimError::Backend(without(if containers {
        "containers"
    } else {
        "services"
    })))
}

#[cfg(not(feature = "containers"))]
fn without(feature: &str) -> String {
    format!(
        "this simulator was built without the `{feature}` feature: rebuild with \
         `cargo build --release -p simulator --features {feature}`, or use --backend memory"
    )
}

/// One seed of a swarm.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SwarmSeed {
    /// The seed.
    pub seed: u64,
    /// Whether every check held.
    pub passed: bool,
    /// The faults the seed injected.
    pub injected: Vec<String>,
    /// The checks that failed.
    pub failures: Vec<expect::Verdict>,
    /// The command that reproduces this seed.
    pub reproduce: String,
}

/// Runs `seeds` seeds from `first_seed` of a scenario on the memory backend, each with the swarm
/// mix of faults its seed draws, checking the built-in invariants, the digest against the
/// fault-free run's and the pending-output bound (the scenario's own expectations too).
pub fn swarm(
    scenario: &Scenario,
    file: &Path,
    first_seed: u64,
    seeds: u64,
    mut each: impl FnMut(&SwarmSeed),
) -> Result<Vec<SwarmSeed>, SimError> {
    let mut out = Vec::new();
    for seed in first_seed..first_seed.saturating_add(seeds) {
        let options = RunOptions {
            seed: Some(seed),
            backend: Some(Backend::Memory),
            swarm: true,
            ..RunOptions::default()
        };
        let report = run_scenario(scenario, file, &options, &mut |_, _| {})?;
        let plan = swarm_plan(scenario, seed);
        let s = SwarmSeed {
            seed,
            passed: report.passed,
            injected: plan.describe(),
            failures: report
                .expectations
                .iter()
                .filter(|v| !v.pass)
                .cloned()
                .collect(),
            reproduce: format!(
                "cargo run --release -p simulator -- run {} --seed {seed} --swarm",
                file.display()
            ),
        };
        each(&s);
        out.push(s);
    }
    Ok(out)
}

/// Loads and runs a scenario file.
pub fn run_file(path: &Path, options: &RunOptions) -> Result<Report, SimError> {
    let scenario = Scenario::load(path)?;
    run_scenario(&scenario, path, options, &mut |_, _| {})
}
