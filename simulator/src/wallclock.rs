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

/// Wall-clock milliseconds since the Unix epoch: the services backend paces its producer by the
/// streaming job's replay clock, which is anchored on the epoch.
#[allow(clippy::disallowed_methods)] // Pacing a real producer needs the real clock.
pub fn epoch_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
