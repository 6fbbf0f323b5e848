//! The one place the simulator reads the wall clock: to measure how long the pipeline's work
//! took. Measurements feed the latency and throughput figures of the report, never the engine,
//! so they cannot change an output row or the output digest.

use std::time::{Duration, Instant};

/// A running stopwatch.
#[derive(Clone, Copy, Debug)]
pub struct Stopwatch(Instant);

impl Stopwatch {
    /// Starts measuring.
    #[allow(clippy::disallowed_methods)] // Measuring cost is this module's job; see the docs.
    pub fn start() -> Self {
        Stopwatch(Instant::now())
    }

    /// Time since start.
    #[allow(clippy::disallowed_methods)] // Measuring cost is this module's job; see the docs.
    pub fn elapsed(&self) -> Duration {
        self.0.elapsed()
    }
}
