//! Seeded smart-city IoT data generator.
//!
//! One `u64` seed and a [`GeneratorConfig`] determine every byte: the thesis city (5 zones,
//! 5 roads, 21 traffic sensors, 8 bus lines with 33 buses, 12 car parks) reporting once per 5 s
//! tick = exactly 792 messages a minute on the three counted topics, random incidents on top, and
//! scenario knobs that bend it (demand, forced congestion, incident bursts, overcrowding, faults
//! with ground-truth labels, hostile records on top).
//!
//! - [`city`]: the city and its devices.
//! - [`config`]: the knobs, TOML-friendly, embedded by scenario files as `[generator]`.
//! - [`physics`]: how demand becomes speeds, flows, bus loads and parking occupancy.
//! - [`rng`]: how the seed becomes one named ChaCha stream per device and purpose.
//! - [`Generator`] / [`Records`]: the records, in produce-time order.
//! - [`Record`]: one Kafka record, its value bytes and its JSONL line.
//!
//! - [`backfill`] (feature `postgres`): a seeded history written into the PostgreSQL archive.
//!
//! **Invariant:** the crate reads no clock and no entropy, and does no I/O; the `generator`
//! binary is a thin shell that writes the records out. The one exception is [`backfill`], a
//! shell around [`Generator::records`] behind its own feature.
//!
//! ```
//! use generator::{Generator, GeneratorConfig};
//! let config = GeneratorConfig { duration_s: 60, ..GeneratorConfig::default() };
//! let g = Generator::new(&config, 7).unwrap();
//! assert_eq!(g.offered_messages_per_minute(), 792.0);
//! let mut jsonl = Vec::new();
//! for record in g.records() {
//!     record.write_jsonl(&mut jsonl);
//! }
//! assert!(jsonl.starts_with(b"{\"topic\":"));
//! ```

#[cfg(feature = "postgres")]
pub mod backfill;
pub mod city;
pub mod config;
mod fault;
mod generator;
mod hostile;
mod incident;
pub mod physics;
mod record;
pub mod rng;
mod timespec;

pub use city::{City, DeviceRef};
pub use config::{
    CongestionEntry, DemandEntry, FaultKind, FaultSpec, GeneratorConfig, HostileKind, HostileSpec,
    IncidentBurst, OvercrowdingEntry, ProfileEntry, SeverityWeights,
};
pub use generator::{ConfigError, Generator, MAX_BURST_COUNT, MAX_LOAD_FACTOR, Records};
pub use record::{Payload, Record};
