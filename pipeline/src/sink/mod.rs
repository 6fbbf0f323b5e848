//! Sinks: where the engine's output goes. One trait, with an in-memory implementation here (used
//! by the simulator and tests) and the MongoDB, PostgreSQL and console shells beside it.
//!
//! Every sink write is idempotent, keyed by the row id (or a dead letter's or late record's
//! source position), so replaying records after a crash never double-counts; and a final row,
//! once stored, is never replaced — not by a partial row a replay emits again.

pub mod console;
#[cfg(feature = "services")]
pub mod dead_letter_topic;
pub mod memory;
#[cfg(feature = "services")]
pub mod mongo;
#[cfg(feature = "services")]
pub mod postgres;

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use crate::engine::{DeadLetter, LateRecord, Output, Query, Row};

/// A sink write that failed.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The backend refused or could not be reached.
    #[error("{sink}: {detail}")]
    Backend {
        /// Which sink.
        sink: &'static str,
        /// What went wrong, and what to do.
        detail: String,
    },
}

/// A destination for the engine's output.
pub trait Sink {
    /// A short name for logs and reports (`mongodb`, `postgresql`, `memory-documents`, ...).
    fn name(&self) -> &'static str;

    /// Writes one batch durably: rows stored by id (a partial row replaced by a later one, a final
    /// row never), dead letters, late records and archive copies appended once. Resolves once the
    /// backend acknowledged everything in the batch; writing a batch again changes nothing.
    fn write(&mut self, batch: &Output) -> impl Future<Output = Result<(), SinkError>>;
}

/// Runs a future that completes without waiting (the in-memory backends), without a runtime.
/// Returns `None` if it would have had to wait.
pub fn now_or_never<F: Future>(fut: F) -> Option<F::Output> {
    let mut fut = pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        Poll::Ready(v) => Some(v),
        Poll::Pending => None,
    }
}

/// The fields a query's rows are looked up by, besides their time: what the databases index.
pub const fn key_fields(query: Query) -> &'static [&'static str] {
    match query {
        Query::TrafficAggregations => &["zone_id", "road_id"],
        Query::TrafficAnomalies => &["sensor_id"],
        Query::TransportMetrics | Query::TransportAlerts => &["line_id"],
        Query::IncidentAggregations => &["zone_id", "severity"],
        Query::CriticalIncidents | Query::ParkingAggregations => &["zone_id"],
        Query::MobilityIndex => &[],
    }
}

/// The time field of a query's rows: `window_start` for windows, `event_time` for alerts.
pub const fn time_field(query: Query) -> &'static str {
    if query.is_alert() {
        "event_time"
    } else {
        "window_start"
    }
}

/// The idempotency key of a dead letter: its source position, unique per record.
pub fn dead_letter_id(d: &DeadLetter) -> String {
    format!("{}|{}|{}", d.topic, d.position.partition, d.position.offset)
}

/// The idempotency key of a late record: the query plus the record's source position.
pub fn late_id(l: &LateRecord) -> String {
    format!(
        "{}|{}|{}|{}",
        l.query, l.topic, l.position.partition, l.position.offset
    )
}

/// The last version of each row in a batch, by query then id. A batch can hold a partial and
/// then the final row of one window; databases must see only the last, and PostgreSQL refuses
/// to update one row twice in a statement.
pub fn last_rows(rows: &[Row]) -> std::collections::BTreeMap<Query, Vec<&Row>> {
    let mut by_id: std::collections::BTreeMap<(Query, &str), &Row> =
        std::collections::BTreeMap::new();
    for row in rows {
        by_id.insert((row.query(), row.id.as_str()), row);
    }
    let mut out: std::collections::BTreeMap<Query, Vec<&Row>> = std::collections::BTreeMap::new();
    for ((q, _), row) in by_id {
        out.entry(q).or_default().push(row);
    }
    out
}
