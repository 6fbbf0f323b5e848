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

pub mod expect;
pub mod report;
pub mod run;
pub mod scenario;
pub mod stats;
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

/// Runs a loaded scenario and checks it. `seed` overrides the scenario's.
pub fn run_scenario(
    scenario: &Scenario,
    file: &Path,
    seed: Option<u64>,
    backend: Option<Backend>,
    progress: run::Progress<'_>,
) -> Result<Report, SimError> {
    let seed = seed.unwrap_or(scenario.seed);
    let backend = backend.unwrap_or(scenario.backend);
    let result = match backend {
        Backend::Memory => run::run_memory(scenario, seed, progress)?,
        Backend::Services => {
            return Err(SimError::Backend(
                "the simulator's services backend is not built yet: run scenarios with \
                 --backend memory; the real Kafka/MongoDB/PostgreSQL path is exercised by \
                 `pipeline streaming` and `cargo test -p smart-city --features services`"
                    .into(),
            ));
        }
        Backend::Containers => {
            let engine = std::path::Path::new("/var/run/docker.sock").exists();
            return Err(SimError::Backend(if engine {
                "the simulator's containers backend is not built yet: use --backend memory".into()
            } else {
                "no Docker engine here (/var/run/docker.sock not found), so no containers: \
                 start the real services with `bash scripts/services.sh up` instead, or use \
                 --backend memory"
                    .into()
            }));
        }
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

/// Loads and runs a scenario file.
pub fn run_file(
    path: &Path,
    seed: Option<u64>,
    backend: Option<Backend>,
) -> Result<Report, SimError> {
    let scenario = Scenario::load(path)?;
    run_scenario(&scenario, path, seed, backend, &mut |_, _| {})
}
