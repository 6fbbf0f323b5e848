//! The smart-city streaming job.
//!
//! - [`model`]: the wire format of the four Kafka topics (SPEC §1), serde JSON in and out.
//! - [`engine`]: the sans-IO engine — decode, validate, event-time windows, the 7 queries.
//! - [`time`]: event timestamps — RFC 3339 written in UTC, RFC 3339 with any offset or naive ISO
//!   strings (read in a configured zone) accepted.
//!
//! - [`driver`]: the sans-IO driver between source and sinks — per-partition read state and the
//!   canonical merge, batching in lanes, write -> checkpoint -> commit, retries, backpressure.
//! - [`batch`]: the batch job (SPEC §4): historical features from the PostgreSQL archive; the
//!   forecast model is plain Rust, the job itself needs the `services` feature.
//! - [`stats`]: the bounded latency histogram shared by the streaming job and the simulator.
//! - [`sink`], [`source`]: the traits, in-memory backends, and (feature `services`) the
//!   MongoDB, PostgreSQL, console and Kafka shells; [`streaming`](crate) runs them and serves
//!   its metrics and health endpoints.
//! - [`logging`]: the binary's log format, human or JSON lines.
//!
//! The model is free of the Kafka/MongoDB/PostgreSQL clients: those live behind the `services`
//! feature so the generator and the simulator's memory path never compile them.

pub mod batch;
pub mod digest;
pub mod driver;
pub mod engine;
pub mod json;
pub mod logging;
pub mod model;
pub mod replay;
pub mod sink;
pub mod source;
pub mod stats;
#[cfg(feature = "services")]
pub mod streaming;
pub mod time;
