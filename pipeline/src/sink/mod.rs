//! Sinks: where the engine's output goes. One trait, with an in-memory implementation here (used
//! by the simulator and tests) and the MongoDB, PostgreSQL and console shells beside it.
//!
//! Every sink write is an idempotent upsert keyed by the row id, so replaying records after a
//! crash never double-counts.

pub mod memory;

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use crate::engine::Output;

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

    /// Writes one batch durably: rows upserted by id, dead letters, late records and archive
    /// copies appended. Resolves once the backend acknowledged everything in the batch.
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
