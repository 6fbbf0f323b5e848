//! Latency figures of the streaming job, measured with the wall clock: alert latency (produce
//! time of the triggering record -> its row acknowledged by MongoDB), window latency (final row
//! emitted -> acknowledged by every sink) and sink write time (per batch, and per batch that
//! carried a trigger's rows), and the time to encode and store a checkpoint.
//!
//! Each is a [`Histogram`] of constant size, so memory stays bounded however long the job runs.

use std::fmt;

use crate::stats::{Histogram, Percentiles};

/// The job's latency measures.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    /// Produce time of a record that raised an alert -> the alert row acknowledged by MongoDB.
    pub alert_latency: Histogram,
    /// A final window row emitted by the engine -> acknowledged by every sink.
    pub window_latency: Histogram,
    /// Time to write one batch to every sink.
    pub sink_write: Histogram,
    /// Time to write the batches that carried a trigger's partial rows.
    pub trigger_write: Histogram,
    /// Time to encode a checkpoint and store it durably.
    pub checkpoint_store: Histogram,
}

impl Metrics {
    /// Adds another set of measures.
    pub fn merge(&mut self, other: &Metrics) {
        self.alert_latency.merge(&other.alert_latency);
        self.window_latency.merge(&other.window_latency);
        self.sink_write.merge(&other.sink_write);
        self.trigger_write.merge(&other.trigger_write);
        self.checkpoint_store.merge(&other.checkpoint_store);
    }

    /// The summaries.
    pub fn report(&self) -> MetricsReport {
        MetricsReport {
            alert_latency: self.alert_latency.percentiles(),
            window_latency: self.window_latency.percentiles(),
            sink_write: self.sink_write.percentiles(),
            trigger_write: self.trigger_write.percentiles(),
        }
    }
}

/// Percentiles of [`Metrics`], for logs and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct MetricsReport {
    /// See [`Metrics::alert_latency`].
    pub alert_latency: Percentiles,
    /// See [`Metrics::window_latency`].
    pub window_latency: Percentiles,
    /// See [`Metrics::sink_write`].
    pub sink_write: Percentiles,
    /// See [`Metrics::trigger_write`].
    pub trigger_write: Percentiles,
}

impl fmt::Display for MetricsReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "alert latency {}; window latency {}; sink write {}; trigger write {}",
            self.alert_latency, self.window_latency, self.sink_write, self.trigger_write
        )
    }
}
