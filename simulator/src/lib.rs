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

#[cfg(feature = "containers")]
pub mod containers;
pub mod expect;
pub mod report;
pub mod run;
pub mod scenario;
#[cfg(feature = "services")]
pub mod services;
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
    let result = match backend {
        Backend::Memory => run::run_memory(scenario, seed, progress)?,
        Backend::Services => real(scenario, seed, options, progress, false)?,
        Backend::Containers => real(scenario, seed, options, progress, true)?,
    };
    let digest = result.documents.digest().hex();
    let verdicts = expect::evaluate(scenario, &result, &digest);
    Ok(Report::new(
        scenario,
        &file.display().to_string(),
        backend,
        &result,
        digest,
        verdicts,
    ))
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

/// Loads and runs a scenario file.
pub fn run_file(path: &Path, options: &RunOptions) -> Result<Report, SimError> {
    let scenario = Scenario::load(path)?;
    run_scenario(&scenario, path, options, &mut |_, _| {})
}
