//! The generator: a validated configuration plus the city, and the iterator of records.
//!
//! Records come out in produce-time order. Device readings are produced tick by tick in a fixed
//! schedule (each device at its own phase offset inside the tick); incidents, delayed records and
//! duplicate copies wait in a bounded min-heap keyed by (produce time, sequence number) and are
//! merged in. A heap entry and a reading due at the same millisecond: the heap entry goes first.
//! The heap holds only what is due within the largest configured delay, so memory is bounded
//! whatever the duration.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::iter::FusedIterator;

use pipeline::model::{
    DataQuality, Direction, Message, ParkingReading, Topic, TrafficReading, TransportReading,
    TransportStatus,
};
use pipeline::time::{DAY_MS, Millis, Timestamp};
use rand::RngCore;
use rand_chacha::ChaCha8Rng;

use crate::city::{City, DeviceRef};
use crate::config::{FaultKind, GeneratorConfig};
use crate::incident::{self, Constraint};
use crate::physics::{
    self, BusState, BusValues, DELAYED_THRESHOLD_MIN, LotState, LotValues, SensorState,
    TrafficValues,
};
use crate::record::{Payload, Record};
use crate::rng::{Streams, fnv1a64, unit53};
use crate::timespec::{TimeRange, TimeSpec, parse_instant, parse_time};

/// A configuration that does not make sense; `field` names it (`congestion[1].zone`).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value out of range, an unknown id, an unreadable time.
    #[error("generator config field `{field}`: {reason}")]
    Invalid {
        /// Path of the field, e.g. `fault[0].skew_ms`.
        field: String,
        /// What is wrong and what would be right.
        reason: String,
    },
    /// The TOML text does not describe a generator configuration.
    #[error("generator config: {0}")]
    Toml(#[source] toml::de::Error),
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Largest load factor accepted (1.32 M devices, ~264,000 records/s): room for benchmarks that
/// search the job's sustainable throughput (`simulator bench`); beyond it a typo is likelier
/// than intent.
pub const MAX_LOAD_FACTOR: u32 = 20_000;
/// Largest number of incidents in one burst occurrence.
pub const MAX_BURST_COUNT: u32 = 1_000_000;

/// A forced congestion, compiled.
#[derive(Clone, Debug)]
struct Forced {
    zone: usize,
    range: TimeRange,
    speed_kmh: f64,
}

/// A burst, compiled.
#[derive(Clone, Debug)]
struct Burst {
    at: TimeSpec,
    duration_ms: Millis,
    count: u32,
    constraint: Constraint,
}

/// A fault, compiled.
#[derive(Clone, Debug)]
struct Fault {
    kind: FaultKind,
    /// Applies to each topic, in `Topic::ALL` order.
    topics: [bool; 4],
    /// Applies to each device (global index); `None` = all.
    devices: Option<Vec<bool>>,
    /// Incident ids it applies to when `devices` is set.
    incident_keys: Vec<String>,
    probability: f64,
    range: TimeRange,
    delay_ms: Millis,
    skew_ms: Millis,
}

/// One slot of the tick schedule.
#[derive(Clone, Copy, Debug)]
struct Slot {
    offset_ms: Millis,
    device: DeviceRef,
    /// Index over sensors, then buses, then lots.
    global: usize,
}

/// A seeded generator for one configuration. Cheap to iterate many times: every call to
/// [`Generator::records`] starts over and yields the same records.
#[derive(Debug)]
pub struct Generator {
    config: GeneratorConfig,
    seed: u64,
    city: City,
    streams: Streams,
    start_ms: Millis,
    end_ms: Millis,
    tick_ms: Millis,
    tick_h: f64,
    check_ms: Millis,
    incident_probability: f64,
    degraded_fraction: f64,
    severity_cdf: [f64; 4],
    profile: Vec<(TimeRange, f64)>,
    demand: Vec<(Option<usize>, TimeRange, f64)>,
    congestion: Vec<Forced>,
    overcrowding: Vec<(usize, TimeRange, f64)>,
    bursts: Vec<Burst>,
    faults: Vec<Fault>,
    hostile: Vec<crate::hostile::Hostile>,
    max_delay_ms: Millis,
    schedule: Vec<Slot>,
}

fn topic_index(topic: Topic) -> usize {
    match topic {
        Topic::Traffic => 0,
        Topic::Transport => 1,
        Topic::Parking => 2,
        Topic::Incidents => 3,
    }
}

fn range_of(prefix: &str, from: Option<&str>, to: Option<&str>) -> Result<TimeRange, ConfigError> {
    TimeRange::parse(from, to).map_err(|(side, reason)| invalid(format!("{prefix}.{side}"), reason))
}

fn check_finite(field: String, value: f64, lo: f64, hi: f64) -> Result<f64, ConfigError> {
    if value.is_finite() && value >= lo && value <= hi {
        Ok(value)
    } else {
        Err(invalid(field, format!("{value} is outside {lo}..={hi}")))
    }
}

impl Generator {
    /// Validates `config` and builds the city. Errors name the offending field.
    pub fn new(config: &GeneratorConfig, seed: u64) -> Result<Generator, ConfigError> {
        let c = config;
        let start_ms = parse_instant(&c.start).map_err(|e| invalid("start", e))?;
        let end_ms = c
            .duration_s
            .checked_mul(1000)
            .and_then(|d| i64::try_from(d).ok())
            .and_then(|d| start_ms.checked_add(d))
            .ok_or_else(|| invalid("duration_s", "too long"))?;
        if c.tick_interval_ms == 0 || c.tick_interval_ms > DAY_MS as u64 {
            return Err(invalid(
                "tick_interval_ms",
                "must be between 1 and 86400000",
            ));
        }
        if !(1..=MAX_LOAD_FACTOR).contains(&c.load_factor) {
            return Err(invalid(
                "load_factor",
                format!("must be between 1 and {MAX_LOAD_FACTOR}"),
            ));
        }
        if c.incident_check_interval_ms == 0 || c.incident_check_interval_ms > DAY_MS as u64 {
            return Err(invalid(
                "incident_check_interval_ms",
                "must be between 1 and 86400000",
            ));
        }
        let incident_probability = check_finite(
            "incident_probability".into(),
            c.incident_probability,
            0.0,
            1.0,
        )?;
        let degraded_fraction =
            check_finite("degraded_fraction".into(), c.degraded_fraction, 0.0, 1.0)?;
        let w = &c.incident_severity_weights;
        let weights = [w.low, w.medium, w.high, w.critical];
        for (name, &v) in ["low", "medium", "high", "critical"].iter().zip(&weights) {
            check_finite(
                format!("incident_severity_weights.{name}"),
                v,
                0.0,
                f64::MAX,
            )?;
        }
        let total: f64 = weights.iter().sum();
        if total <= 0.0 {
            return Err(invalid(
                "incident_severity_weights",
                "at least one weight must be positive",
            ));
        }
        let mut severity_cdf = [0.0; 4];
        let mut acc = 0.0;
        for (slot, w) in severity_cdf.iter_mut().zip(weights) {
            acc += w / total;
            *slot = acc;
        }
        severity_cdf[3] = 1.0;

        let city = City::thesis(c.load_factor);
        let zone = |field: String, id: &str| {
            city.zone_index(id).ok_or_else(|| {
                invalid(
                    field,
                    format!(
                        "unknown zone `{id}`; the city has zone-1 .. zone-{}",
                        city.zones.len()
                    ),
                )
            })
        };

        let mut profile = Vec::with_capacity(c.daily_profile.len());
        for (i, e) in c.daily_profile.iter().enumerate() {
            let p = format!("daily_profile[{i}]");
            let range = range_of(&p, Some(&e.from), Some(&e.to))?;
            if !matches!(range, TimeRange::Daily { .. }) {
                return Err(invalid(
                    format!("{p}.from"),
                    "the daily profile takes times of day (HH:MM)",
                ));
            }
            profile.push((
                range,
                check_finite(format!("{p}.multiplier"), e.multiplier, 0.0, 100.0)?,
            ));
        }

        let mut demand = Vec::with_capacity(c.demand.len());
        for (i, e) in c.demand.iter().enumerate() {
            let p = format!("demand[{i}]");
            let z = e
                .zone
                .as_deref()
                .map(|id| zone(format!("{p}.zone"), id))
                .transpose()?;
            let range = range_of(&p, e.from.as_deref(), e.to.as_deref())?;
            demand.push((
                z,
                range,
                check_finite(format!("{p}.multiplier"), e.multiplier, 0.0, 100.0)?,
            ));
        }

        let mut congestion = Vec::with_capacity(c.congestion.len());
        for (i, e) in c.congestion.iter().enumerate() {
            let p = format!("congestion[{i}]");
            congestion.push(Forced {
                zone: zone(format!("{p}.zone"), &e.zone)?,
                range: range_of(&p, e.from.as_deref(), e.to.as_deref())?,
                speed_kmh: check_finite(format!("{p}.speed_kmh"), e.speed_kmh, 0.0, 200.0)?,
            });
        }

        let mut overcrowding = Vec::with_capacity(c.overcrowding.len());
        for (i, e) in c.overcrowding.iter().enumerate() {
            let p = format!("overcrowding[{i}]");
            let line = city.line_index(&e.line).ok_or_else(|| {
                invalid(
                    format!("{p}.line"),
                    format!(
                        "unknown line `{}`; the city has line-1 .. line-{}",
                        e.line,
                        city.lines.len()
                    ),
                )
            })?;
            let pct = e.occupancy_rate_pct;
            if !(pct.is_finite() && pct > 0.0 && pct <= 100.0) {
                return Err(invalid(
                    format!("{p}.occupancy_rate_pct"),
                    format!("{pct} is outside (0, 100]"),
                ));
            }
            overcrowding.push((line, range_of(&p, e.from.as_deref(), e.to.as_deref())?, pct));
        }

        let mut bursts = Vec::with_capacity(c.incident_burst.len());
        for (i, e) in c.incident_burst.iter().enumerate() {
            let p = format!("incident_burst[{i}]");
            let at = parse_time(&e.at).map_err(|r| invalid(format!("{p}.at"), r))?;
            if at == TimeSpec::DayTime(DAY_MS) {
                return Err(invalid(
                    format!("{p}.at"),
                    "24:00 is not a time of day; use 00:00",
                ));
            }
            if !(1..=MAX_BURST_COUNT).contains(&e.count) {
                return Err(invalid(
                    format!("{p}.count"),
                    format!("must be between 1 and {MAX_BURST_COUNT}"),
                ));
            }
            let duration_ms = i64::try_from(e.duration_s.saturating_mul(1000))
                .ok()
                .filter(|&d| d <= 366 * DAY_MS)
                .ok_or_else(|| invalid(format!("{p}.duration_s"), "must be at most a year"))?;
            bursts.push(Burst {
                at,
                duration_ms,
                count: e.count,
                constraint: Constraint {
                    severity: e.severity,
                    zone: e
                        .zone
                        .as_deref()
                        .map(|id| zone(format!("{p}.zone"), id))
                        .transpose()?,
                    kind: e.kind,
                },
            });
        }

        let device_count = city.device_count();
        let global_of = |d: DeviceRef| match d {
            DeviceRef::Sensor(i) => i,
            DeviceRef::Bus(i) => city.sensors.len() + i,
            DeviceRef::Lot(i) => city.sensors.len() + city.buses.len() + i,
        };
        let mut faults = Vec::with_capacity(c.fault.len());
        for (i, f) in c.fault.iter().enumerate() {
            let p = format!("fault[{i}]");
            let allowed: [bool; 4] = match f.kind {
                FaultKind::Degraded => [true, false, false, false],
                FaultKind::Stuck => [true, true, true, false],
                _ => [true; 4],
            };
            let topics = match f.topic {
                None => allowed,
                Some(t) if allowed[topic_index(t)] => {
                    let mut only = [false; 4];
                    only[topic_index(t)] = true;
                    only
                }
                Some(t) => {
                    return Err(invalid(
                        format!("{p}.topic"),
                        format!(
                            "a `{}` fault cannot apply to `{t}` ({})",
                            f.kind,
                            match f.kind {
                                FaultKind::Degraded => "only traffic readings carry data_quality",
                                _ => "incidents have no previous values to repeat",
                            }
                        ),
                    ));
                }
            };
            let (devices, incident_keys) = if f.devices.is_empty() {
                (None, Vec::new())
            } else {
                let mut mask = vec![false; device_count];
                let mut incident_keys = Vec::new();
                for (k, id) in f.devices.iter().enumerate() {
                    if let Some(d) = city.device(id) {
                        mask[global_of(d)] = true;
                    } else if id.starts_with("INC-") {
                        incident_keys.push(id.clone());
                    } else {
                        return Err(invalid(
                            format!("{p}.devices[{k}]"),
                            format!(
                                "no device `{id}` in the city (ids are TS-NNN, BUS-NNN, PK-NNN, or INC-NNNNNN for incidents)"
                            ),
                        ));
                    }
                }
                (Some(mask), incident_keys)
            };
            let delay_ms = match (f.kind.default_delay_ms(), f.delay_ms) {
                (Some(default), given) => given.unwrap_or(default),
                (None, None) => 0,
                (None, Some(_)) => {
                    return Err(invalid(
                        format!("{p}.delay_ms"),
                        format!(
                            "a `{}` fault takes no delay (only duplicate, late, out_of_order)",
                            f.kind
                        ),
                    ));
                }
            };
            let delay_ms = i64::try_from(delay_ms)
                .ok()
                .filter(|&d| d <= 7 * DAY_MS)
                .ok_or_else(|| invalid(format!("{p}.delay_ms"), "must be at most 7 days"))?;
            let skew_ms = match (f.kind, f.skew_ms) {
                (FaultKind::ClockSkew, Some(s)) if s.abs() <= 366 * DAY_MS => s,
                (FaultKind::ClockSkew, Some(_)) => {
                    return Err(invalid(format!("{p}.skew_ms"), "must be within a year"));
                }
                (FaultKind::ClockSkew, None) => {
                    return Err(invalid(
                        format!("{p}.skew_ms"),
                        "a clock_skew fault needs skew_ms (negative: the clock is behind)",
                    ));
                }
                (_, Some(_)) => {
                    return Err(invalid(
                        format!("{p}.skew_ms"),
                        format!("a `{}` fault takes no skew (only clock_skew)", f.kind),
                    ));
                }
                (_, None) => 0,
            };
            faults.push(Fault {
                kind: f.kind,
                topics,
                devices,
                incident_keys,
                probability: check_finite(format!("{p}.probability"), f.probability, 0.0, 1.0)?,
                range: range_of(&p, f.from.as_deref(), f.to.as_deref())?,
                delay_ms,
                skew_ms,
            });
        }
        let max_delay_ms = faults.iter().map(|f| f.delay_ms).max().unwrap_or(0);
        let hostile = crate::hostile::compile(&c.hostile).map_err(|(f, r)| invalid(f, r))?;

        // Each device reports at a fixed phase inside the tick, from a hash of its id, so the
        // load is spread and adding devices moves no one else.
        let tick_ms = c.tick_interval_ms as i64;
        let phase_range = (tick_ms / 5).max(1) as u64;
        let devices = (0..city.sensors.len())
            .map(DeviceRef::Sensor)
            .chain((0..city.buses.len()).map(DeviceRef::Bus))
            .chain((0..city.lots.len()).map(DeviceRef::Lot));
        let mut schedule: Vec<Slot> = devices
            .enumerate()
            .map(|(global, device)| Slot {
                offset_ms: (fnv1a64(city.device_id(device).as_bytes()) % phase_range) as i64,
                device,
                global,
            })
            .collect();
        schedule.sort_by_key(|s| (s.offset_ms, s.global));

        Ok(Generator {
            config: c.clone(),
            seed,
            streams: Streams::new(seed),
            city,
            start_ms,
            end_ms,
            tick_ms,
            tick_h: tick_ms as f64 / 3_600_000.0,
            check_ms: c.incident_check_interval_ms as i64,
            incident_probability,
            degraded_fraction,
            severity_cdf,
            profile,
            demand,
            congestion,
            overcrowding,
            bursts,
            faults,
            hostile,
            max_delay_ms,
            schedule,
        })
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &GeneratorConfig {
        &self.config
    }

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The city (zones, roads, lines, devices).
    pub fn city(&self) -> &City {
        &self.city
    }

    /// First instant covered, ms since the epoch.
    pub fn start_ms(&self) -> Millis {
        self.start_ms
    }

    /// First instant not covered, ms since the epoch. Delayed and duplicate copies of records
    /// from the end of the span are produced after it.
    pub fn end_ms(&self) -> Millis {
        self.end_ms
    }

    /// The tick, ms.
    pub fn tick_interval_ms(&self) -> Millis {
        self.tick_ms
    }

    /// The largest delivery delay configured: how far produce time may trail event time.
    pub fn max_delay_ms(&self) -> Millis {
        self.max_delay_ms
    }

    /// Messages per minute offered on the three counted topics (792 for the thesis city).
    pub fn offered_messages_per_minute(&self) -> f64 {
        self.city.device_count() as f64 * 60_000.0 / self.tick_ms as f64
    }

    /// The phase of a device inside the tick, ms (its readings' event times are
    /// `start + k × tick + offset`).
    pub fn phase_offset_ms(&self, device: DeviceRef) -> Millis {
        self.schedule
            .iter()
            .find(|s| s.device == device)
            .map_or(0, |s| s.offset_ms)
    }

    /// All records of `[start, end)` in produce-time order.
    pub fn records(&self) -> Records<'_> {
        Records::new(self)
    }

    fn forced_speed(&self, zone: usize, t: Millis) -> Option<f64> {
        self.congestion
            .iter()
            .find(|f| f.zone == zone && f.range.contains(t))
            .map(|f| f.speed_kmh)
    }

    /// The times inside `[start, end)` of `count` events spread over `duration_ms` from `at`
    /// (each day, for a time of day), with their index in the occurrence.
    fn occurrences(&self, at: TimeSpec, duration_ms: Millis, count: u32) -> Vec<(Millis, u32)> {
        let bases: Vec<Millis> = match at {
            TimeSpec::Instant(t) => vec![t],
            TimeSpec::DayTime(tod) => {
                // From the day before the start (an occurrence may run over midnight) to the end.
                let first = self.start_ms.div_euclid(DAY_MS) - 1 - duration_ms / DAY_MS;
                let last = self.end_ms.div_euclid(DAY_MS);
                (first..=last).map(|d| d * DAY_MS + tod).collect()
            }
        };
        let mut times = Vec::new();
        for base in bases {
            if base >= self.end_ms || base + duration_ms < self.start_ms {
                continue;
            }
            for i in 0..count {
                let t = base + i64::from(i) * duration_ms / i64::from(count);
                if (self.start_ms..self.end_ms).contains(&t) {
                    times.push((t, i));
                }
            }
        }
        times
    }

    /// All burst occurrences inside `[start, end)`: (time, burst, index in the occurrence).
    fn burst_events(&self) -> Vec<(Millis, usize, u32)> {
        let mut events = Vec::new();
        for (b, burst) in self.bursts.iter().enumerate() {
            let times = self.occurrences(burst.at, burst.duration_ms, burst.count);
            events.extend(times.into_iter().map(|(t, i)| (t, b, i)));
        }
        events.sort_unstable();
        events
    }

    /// All hostile records inside `[start, end)`: (time, entry, index in the occurrence).
    fn hostile_events(&self) -> Vec<(Millis, usize, u32)> {
        let mut events = Vec::new();
        for (e, h) in self.hostile.iter().enumerate() {
            let times = self.occurrences(h.at, h.duration_ms, h.count);
            events.extend(times.into_iter().map(|(t, i)| (t, e, i)));
        }
        events.sort_unstable();
        events
    }
}

/// A record waiting in the reorder heap.
#[derive(Debug)]
struct Pending<'c> {
    time: Millis,
    seq: u64,
    record: Record<'c>,
}

impl PartialEq for Pending<'_> {
    fn eq(&self, other: &Self) -> bool {
        (self.time, self.seq) == (other.time, other.seq)
    }
}

impl Eq for Pending<'_> {}

impl PartialOrd for Pending<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Pending<'_> {
    /// Reversed, so that `BinaryHeap` (a max-heap) pops the earliest first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.time, other.seq).cmp(&(self.time, self.seq))
    }
}

/// Per-tick values shared by all devices.
#[derive(Debug, Default)]
struct TickContext {
    zone_demand: Vec<f64>,
    zone_density: Vec<f64>,
    parking_target: f64,
}

/// The last values a device sent, for the `stuck` fault.
#[derive(Debug, Default)]
struct LastValues {
    traffic: Vec<Option<TrafficValues>>,
    bus: Vec<Option<BusValues>>,
    lot: Vec<Option<LotValues>>,
}

/// A `stuck` fault repeats the device's previous values (a device with none yet is not stuck);
/// either way the values sent become the device's previous ones. `previous` is `None` when no
/// configured fault is `stuck`, so nothing is remembered.
fn hold_if_stuck<V: Copy>(
    faults: &[Fault],
    fault: &mut Option<usize>,
    previous: Option<&mut Option<V>>,
    values: &mut V,
) {
    let Some(previous) = previous else { return };
    if fault.is_some_and(|f| faults[f].kind == FaultKind::Stuck) {
        match *previous {
            Some(prev) => *values = prev,
            None => *fault = None,
        }
    }
    *previous = Some(*values);
}

/// The iterator of [`Generator::records`].
#[derive(Debug)]
pub struct Records<'c> {
    g: &'c Generator,
    sensors: Vec<SensorState>,
    buses: Vec<BusState>,
    lots: Vec<LotState>,
    /// Fault streams, one per device (empty when no fault is configured).
    fault_rngs: Vec<ChaCha8Rng>,
    /// Data-quality streams, one per traffic sensor (empty when `degraded_fraction` is 0): one
    /// draw per reading, so the rest of the city is the same whatever the fraction.
    quality_rngs: Vec<ChaCha8Rng>,
    incident_fault_rng: ChaCha8Rng,
    periodic_rng: ChaCha8Rng,
    burst_rngs: Vec<ChaCha8Rng>,
    burst_events: Vec<(Millis, usize, u32)>,
    burst_pos: usize,
    hostile_rngs: Vec<ChaCha8Rng>,
    hostile_events: Vec<(Millis, usize, u32)>,
    hostile_pos: usize,
    next_check_ms: Millis,
    incidents_made: u64,
    last: Option<LastValues>,
    tick_time: Millis,
    slot: usize,
    readings_done: bool,
    ctx: TickContext,
    heap: BinaryHeap<Pending<'c>>,
    seq: u64,
}

impl<'c> Records<'c> {
    fn new(g: &'c Generator) -> Self {
        let city = &g.city;
        let s = &g.streams;
        let sensors = city
            .sensors
            .iter()
            .map(|d| SensorState::new(s.stream("reading", &d.id)))
            .collect();
        let buses = city
            .buses
            .iter()
            .map(|b| {
                BusState::new(
                    s.stream("reading", &b.id),
                    &city.lines[b.line],
                    b.start_fraction,
                    b.start_outbound,
                )
            })
            .collect();
        let lots = city
            .lots
            .iter()
            .map(|d| LotState::new(s.stream("reading", &d.id)))
            .collect();
        let fault_rngs = if g.faults.is_empty() {
            Vec::new()
        } else {
            g.schedule_order_ids()
                .map(|id| s.stream("fault", id))
                .collect()
        };
        let quality_rngs = if g.degraded_fraction > 0.0 {
            city.sensors
                .iter()
                .map(|d| s.stream("quality", &d.id))
                .collect()
        } else {
            Vec::new()
        };
        let has_stuck = g.faults.iter().any(|f| f.kind == FaultKind::Stuck);
        let mut records = Records {
            g,
            sensors,
            buses,
            lots,
            fault_rngs,
            quality_rngs,
            incident_fault_rng: s.stream("fault", "incidents"),
            periodic_rng: s.stream("incidents", "periodic"),
            burst_rngs: (0..g.bursts.len())
                .map(|i| s.stream("burst", &i.to_string()))
                .collect(),
            burst_events: g.burst_events(),
            burst_pos: 0,
            hostile_rngs: (0..g.hostile.len())
                .map(|i| s.stream("hostile", &i.to_string()))
                .collect(),
            hostile_events: g.hostile_events(),
            hostile_pos: 0,
            next_check_ms: g.start_ms,
            incidents_made: 0,
            last: has_stuck.then(|| LastValues {
                traffic: vec![None; city.sensors.len()],
                bus: vec![None; city.buses.len()],
                lot: vec![None; city.lots.len()],
            }),
            tick_time: g.start_ms,
            slot: 0,
            readings_done: g.schedule.is_empty(),
            ctx: TickContext {
                zone_demand: vec![1.0; city.zones.len()],
                zone_density: vec![0.0; city.zones.len()],
                parking_target: 0.0,
            },
            heap: BinaryHeap::new(),
            seq: 0,
        };
        records.prepare_tick();
        records
    }

    /// Computes what every device of the tick shares: demand and congestion per zone, the
    /// parking curve.
    fn prepare_tick(&mut self) {
        let g = self.g;
        let t = self.tick_time;
        let base = g
            .profile
            .iter()
            .find(|(r, _)| r.contains(t))
            .map_or(1.0, |&(_, m)| m);
        for z in 0..self.ctx.zone_demand.len() {
            let mut d = base;
            for &(zone, ref range, m) in &g.demand {
                if zone.is_none_or(|zz| zz == z) && range.contains(t) {
                    d *= m;
                }
            }
            self.ctx.zone_demand[z] = d;
            self.ctx.zone_density[z] = physics::zone_density(d);
        }
        self.ctx.parking_target = physics::parking_curve(t);
    }

    /// Event time of the next scheduled reading, or `Millis::MAX` when all are out.
    #[inline]
    fn next_reading_time(&mut self) -> Millis {
        if self.readings_done {
            return Millis::MAX;
        }
        if self.slot == self.g.schedule.len() {
            self.slot = 0;
            self.tick_time += self.g.tick_ms;
            self.prepare_tick();
        }
        let t = self.tick_time + self.g.schedule[self.slot].offset_ms;
        if t >= self.g.end_ms {
            // Offsets rise through the tick and ticks rise, so nothing later is inside either.
            self.readings_done = true;
            return Millis::MAX;
        }
        t
    }

    fn push(&mut self, time: Millis, record: Record<'c>) {
        self.seq += 1;
        self.heap.push(Pending {
            time,
            seq: self.seq,
            record,
        });
    }

    /// Makes every incident due at or before `until` and queues it.
    fn pump_incidents(&mut self, until: Millis) {
        let g = self.g;
        loop {
            let periodic = if self.next_check_ms < g.end_ms {
                self.next_check_ms
            } else {
                Millis::MAX
            };
            let burst = self
                .burst_events
                .get(self.burst_pos)
                .map_or(Millis::MAX, |e| e.0);
            let t = periodic.min(burst);
            if t > until || t == Millis::MAX {
                return;
            }
            let incident = if periodic <= burst {
                self.next_check_ms += g.check_ms;
                if unit53(&mut self.periodic_rng) >= g.incident_probability {
                    continue;
                }
                self.incidents_made += 1;
                incident::make(
                    &g.city,
                    &mut self.periodic_rng,
                    self.incidents_made,
                    t,
                    &g.severity_cdf,
                    Constraint::default(),
                )
            } else {
                let (_, b, _) = self.burst_events[self.burst_pos];
                self.burst_pos += 1;
                self.incidents_made += 1;
                incident::make(
                    &g.city,
                    &mut self.burst_rngs[b],
                    self.incidents_made,
                    t,
                    &g.severity_cdf,
                    g.bursts[b].constraint,
                )
            };
            let key = incident.incident_id.clone();
            let record = Record {
                topic: Topic::Incidents,
                key,
                event_time_ms: t,
                produce_time_ms: t,
                payload: Payload::Message(Message::Incident(incident)),
                fault: None,
            };
            let fault = self.decide_incident_fault(&record.key, t);
            if let Some(record) = self.finish(record, fault, None) {
                self.push(record.produce_time_ms, record);
            }
        }
    }

    /// Queues every hostile record due at or before `until`.
    fn pump_hostile(&mut self, until: Millis) {
        while let Some(&(t, e, i)) = self.hostile_events.get(self.hostile_pos) {
            if t > until {
                return;
            }
            self.hostile_pos += 1;
            let record =
                crate::hostile::record(&self.g.hostile[e], e, i, t, &mut self.hostile_rngs[e]);
            self.push(t, record);
        }
    }

    fn decide_incident_fault(&mut self, key: &str, t: Millis) -> Option<usize> {
        let g = self.g;
        for (i, f) in g.faults.iter().enumerate() {
            if f.topics[3]
                && (f.devices.is_none() || f.incident_keys.iter().any(|k| k == key))
                && f.range.contains(t)
                && fires(&mut self.incident_fault_rng, f.probability)
            {
                return Some(i);
            }
        }
        None
    }

    /// The first configured fault that matches a device reading and fires.
    fn decide_fault(&mut self, topic: usize, global: usize, t: Millis) -> Option<usize> {
        let g = self.g;
        for (i, f) in g.faults.iter().enumerate() {
            if f.topics[topic]
                && f.devices.as_ref().is_none_or(|m| m[global])
                && f.range.contains(t)
                && fires(&mut self.fault_rngs[global], f.probability)
            {
                return Some(i);
            }
        }
        None
    }

    /// Applies fault `fault` to a clean record. Returns the record to emit now, if any; delayed
    /// records and duplicate copies go to the heap.
    fn finish(
        &mut self,
        mut record: Record<'c>,
        fault: Option<usize>,
        global: Option<usize>,
    ) -> Option<Record<'c>> {
        let Some(index) = fault else {
            return Some(record);
        };
        let f = &self.g.faults[index];
        let rng = match global {
            Some(d) => &mut self.fault_rngs[d],
            None => &mut self.incident_fault_rng,
        };
        record.fault = Some(f.kind);
        match f.kind {
            FaultKind::Degraded => {
                if let Payload::Message(Message::Traffic(m)) = &mut record.payload {
                    m.data_quality = DataQuality::Degraded;
                }
            }
            // The values were replaced before the message was built.
            FaultKind::Stuck => {}
            FaultKind::OutOfRange => {
                if let Payload::Message(m) = &mut record.payload {
                    crate::fault::out_of_range(m, rng);
                }
            }
            FaultKind::MalformedJson | FaultKind::MissingField => {
                let mut json = Vec::with_capacity(512);
                record.write_value(&mut json);
                let raw = if f.kind == FaultKind::MalformedJson {
                    crate::fault::truncate(&json, rng)
                } else {
                    crate::fault::drop_field(&json, rng)
                };
                record.payload = Payload::Raw(raw);
            }
            FaultKind::ClockSkew => {
                let t = record.event_time_ms + f.skew_ms;
                record.event_time_ms = t;
                if let Payload::Message(m) = &mut record.payload {
                    set_timestamp(m, t);
                }
            }
            FaultKind::Duplicate => {
                let mut copy = record.clone();
                copy.produce_time_ms += f.delay_ms;
                record.fault = None;
                self.push(copy.produce_time_ms, copy);
            }
            FaultKind::Late | FaultKind::OutOfOrder => {
                record.produce_time_ms = record.event_time_ms + f.delay_ms;
                self.push(record.produce_time_ms, record);
                return None;
            }
        }
        Some(record)
    }

    /// Generates the reading of `slot` at event time `t` (one tick of that device).
    #[inline]
    fn reading(&mut self, slot: Slot, t: Millis) -> Option<Record<'c>> {
        let g = self.g;
        let city = &g.city;
        match slot.device {
            DeviceRef::Sensor(i) => {
                let sensor = &city.sensors[i];
                let road = &city.roads[sensor.road];
                let forced = if g.congestion.is_empty() {
                    None
                } else {
                    g.forced_speed(sensor.zone, t)
                };
                let mut values =
                    self.sensors[i].read(road, self.ctx.zone_demand[sensor.zone], forced, g.tick_h);
                let degraded = self
                    .quality_rngs
                    .get_mut(i)
                    .is_some_and(|rng| fires(rng, g.degraded_fraction));
                let data_quality = match degraded {
                    true => DataQuality::Degraded,
                    false => DataQuality::Good,
                };
                let mut fault = self.decide_fault(0, slot.global, t);
                let previous = self.last.as_mut().map(|last| &mut last.traffic[i]);
                hold_if_stuck(&g.faults, &mut fault, previous, &mut values);
                let record = Record {
                    topic: Topic::Traffic,
                    key: Cow::Borrowed(&sensor.id),
                    event_time_ms: t,
                    produce_time_ms: t,
                    payload: Payload::Message(Message::Traffic(TrafficReading {
                        sensor_id: Cow::Borrowed(&sensor.id),
                        timestamp: Timestamp::Utc(t),
                        road_id: Cow::Borrowed(&road.id),
                        road_name: Cow::Borrowed(&road.name),
                        zone_id: Cow::Borrowed(&city.zones[sensor.zone].id),
                        location: sensor.location,
                        speed_kmh: values.speed_kmh,
                        vehicle_flow: values.vehicle_flow,
                        occupancy_percent: values.occupancy_pct,
                        congestion_level: values.level,
                        data_quality,
                    })),
                    fault: None,
                };
                self.finish(record, fault, Some(slot.global))
            }
            DeviceRef::Bus(i) => {
                let bus = &city.buses[i];
                let line = &city.lines[bus.line];
                let zone = self.buses[i].zone(line);
                let density = match g.congestion.is_empty() {
                    true => None,
                    false => g.forced_speed(zone, t),
                }
                .map_or(self.ctx.zone_density[zone], physics::forced_density);
                let mut values =
                    self.buses[i].read(line, density, self.ctx.zone_demand[zone], g.tick_h);
                if let Some(&(_, _, pct)) = g
                    .overcrowding
                    .iter()
                    .find(|(l, r, _)| *l == bus.line && r.contains(t))
                {
                    let capacity = f64::from(line.capacity);
                    // Round up so that the reported rate is never below the target.
                    let exact = capacity * pct / 100.0;
                    let mut passengers = exact as i64;
                    if (passengers as f64) < exact {
                        passengers += 1;
                    }
                    values.passengers = passengers;
                    values.occupancy_pct = physics::round1(100.0 * passengers as f64 / capacity);
                }
                let mut fault = self.decide_fault(1, slot.global, t);
                let previous = self.last.as_mut().map(|last| &mut last.bus[i]);
                hold_if_stuck(&g.faults, &mut fault, previous, &mut values);
                let record = Record {
                    topic: Topic::Transport,
                    key: Cow::Borrowed(&bus.id),
                    event_time_ms: t,
                    produce_time_ms: t,
                    payload: Payload::Message(Message::Transport(TransportReading {
                        vehicle_id: Cow::Borrowed(&bus.id),
                        timestamp: Timestamp::Utc(t),
                        line_id: Cow::Borrowed(&line.id),
                        line_number: Cow::Borrowed(&line.number),
                        current_stop: Cow::Borrowed(&line.stops[values.current_stop].name),
                        next_stop: Cow::Borrowed(&line.stops[values.next_stop].name),
                        direction: if values.outbound {
                            Direction::Outbound
                        } else {
                            Direction::Inbound
                        },
                        location: values.location,
                        speed_kmh: values.speed_kmh,
                        passenger_count: values.passengers,
                        capacity: i64::from(line.capacity),
                        occupancy_rate: values.occupancy_pct,
                        delay_minutes: values.delay_min,
                        status: if values.delay_min >= DELAYED_THRESHOLD_MIN {
                            TransportStatus::Delayed
                        } else {
                            TransportStatus::OnTime
                        },
                    })),
                    fault: None,
                };
                self.finish(record, fault, Some(slot.global))
            }
            DeviceRef::Lot(i) => {
                let lot = &city.lots[i];
                let mut values = self.lots[i].read(lot, self.ctx.parking_target);
                let mut fault = self.decide_fault(2, slot.global, t);
                let previous = self.last.as_mut().map(|last| &mut last.lot[i]);
                hold_if_stuck(&g.faults, &mut fault, previous, &mut values);
                let total = i64::from(lot.total_spaces);
                let available = total - values.occupied;
                let record = Record {
                    topic: Topic::Parking,
                    key: Cow::Borrowed(&lot.id),
                    event_time_ms: t,
                    produce_time_ms: t,
                    payload: Payload::Message(Message::Parking(ParkingReading {
                        parking_id: Cow::Borrowed(&lot.id),
                        timestamp: Timestamp::Utc(t),
                        name: Cow::Borrowed(&lot.name),
                        zone_id: Cow::Borrowed(&city.zones[lot.zone].id),
                        kind: Cow::Borrowed(lot.kind.name()),
                        location: lot.location,
                        total_spaces: total,
                        occupied_spaces: values.occupied,
                        available_spaces: available,
                        occupancy_rate: values.occupancy_pct,
                        hourly_rate: lot.hourly_rate,
                        status: Cow::Borrowed(if available <= 0 { "full" } else { "open" }),
                    })),
                    fault: None,
                };
                self.finish(record, fault, Some(slot.global))
            }
        }
    }
}

impl Generator {
    /// Device ids in global-index order (sensors, buses, lots).
    fn schedule_order_ids(&self) -> impl Iterator<Item = &str> {
        let c = &self.city;
        c.sensors
            .iter()
            .map(|d| d.id.as_str())
            .chain(c.buses.iter().map(|d| d.id.as_str()))
            .chain(c.lots.iter().map(|d| d.id.as_str()))
    }
}

/// One Bernoulli draw from a fault stream.
#[inline]
fn fires(rng: &mut ChaCha8Rng, probability: f64) -> bool {
    // Draw even at probability 1 so the stream's position does not depend on the probability.
    let u = (rng.next_u64() >> 11) as f64 * (1.0 / 9_007_199_254_740_992.0);
    u < probability
}

fn set_timestamp(m: &mut Message<'_>, t: Millis) {
    let ts = Timestamp::Utc(t);
    match m {
        Message::Traffic(r) => r.timestamp = ts,
        Message::Transport(r) => r.timestamp = ts,
        Message::Parking(r) => r.timestamp = ts,
        Message::Incident(r) => r.timestamp = ts,
    }
}

impl<'c> Iterator for Records<'c> {
    type Item = Record<'c>;

    fn next(&mut self) -> Option<Record<'c>> {
        loop {
            let t = self.next_reading_time();
            self.pump_incidents(t);
            self.pump_hostile(t);
            if self.heap.peek().is_some_and(|p| p.time <= t) {
                return self.heap.pop().map(|p| p.record);
            }
            if t == Millis::MAX {
                return None;
            }
            let slot = self.g.schedule[self.slot];
            self.slot += 1;
            if let Some(record) = self.reading(slot, t) {
                return Some(record);
            }
        }
    }
}

impl FusedIterator for Records<'_> {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{
        CongestionEntry, DemandEntry, FaultSpec, IncidentBurst, OvercrowdingEntry, ProfileEntry,
    };
    use pipeline::model::{IncidentType, Severity};
    use pipeline::time::HOUR_MS;

    fn config() -> GeneratorConfig {
        GeneratorConfig {
            duration_s: 600,
            ..GeneratorConfig::default()
        }
    }

    fn fault(kind: FaultKind) -> FaultSpec {
        FaultSpec {
            kind,
            topic: None,
            devices: Vec::new(),
            probability: 0.1,
            from: None,
            to: None,
            delay_ms: None,
            skew_ms: None,
        }
    }

    fn field_of(c: &GeneratorConfig) -> String {
        match Generator::new(c, 1) {
            Err(ConfigError::Invalid { field, .. }) => field,
            other => panic!("expected an invalid field, got {other:?}"),
        }
    }

    // Proves each kind of bad configuration is refused with the path of the faulty field.
    #[test]
    fn errors_name_the_field() {
        let mut c = config();
        c.start = "2026-11-24 00:00".into();
        assert_eq!(field_of(&c), "start");
        let mut c = config();
        c.tick_interval_ms = 0;
        assert_eq!(field_of(&c), "tick_interval_ms");
        let mut c = config();
        c.load_factor = 0;
        assert_eq!(field_of(&c), "load_factor");
        let mut c = config();
        c.incident_probability = 1.5;
        assert_eq!(field_of(&c), "incident_probability");
        let mut c = config();
        c.incident_severity_weights.critical = -1.0;
        assert_eq!(field_of(&c), "incident_severity_weights.critical");
        let mut c = config();
        c.daily_profile.push(ProfileEntry {
            from: "08:00".into(),
            to: "7pm".into(),
            multiplier: 1.0,
        });
        assert_eq!(field_of(&c), "daily_profile[4].to");
        let mut c = config();
        c.demand.push(DemandEntry {
            zone: Some("zone-9".into()),
            from: None,
            to: None,
            multiplier: 2.0,
        });
        assert_eq!(field_of(&c), "demand[0].zone");
        let mut c = config();
        c.congestion.push(CongestionEntry {
            zone: "zone-1".into(),
            from: Some("08:00".into()),
            to: None,
            speed_kmh: 3.0,
        });
        assert_eq!(field_of(&c), "congestion[0].to");
        let mut c = config();
        c.congestion.push(CongestionEntry {
            zone: "zone-1".into(),
            from: None,
            to: None,
            speed_kmh: f64::NAN,
        });
        assert_eq!(field_of(&c), "congestion[0].speed_kmh");
        let mut c = config();
        c.overcrowding.push(OvercrowdingEntry {
            line: "line-9".into(),
            from: None,
            to: None,
            occupancy_rate_pct: 95.0,
        });
        assert_eq!(field_of(&c), "overcrowding[0].line");
        let mut c = config();
        c.overcrowding.push(OvercrowdingEntry {
            line: "line-1".into(),
            from: None,
            to: None,
            occupancy_rate_pct: 120.0,
        });
        assert_eq!(field_of(&c), "overcrowding[0].occupancy_rate_pct");
        let mut c = config();
        c.incident_burst.push(IncidentBurst {
            at: "soon".into(),
            duration_s: 0,
            count: 1,
            severity: None,
            zone: None,
            kind: None,
        });
        assert_eq!(field_of(&c), "incident_burst[0].at");
        let mut c = config();
        c.fault.push(FaultSpec {
            skew_ms: None,
            ..fault(FaultKind::ClockSkew)
        });
        assert_eq!(field_of(&c), "fault[0].skew_ms");
        let mut c = config();
        c.fault.push(FaultSpec {
            delay_ms: Some(5),
            ..fault(FaultKind::Stuck)
        });
        assert_eq!(field_of(&c), "fault[0].delay_ms");
        let mut c = config();
        c.fault.push(FaultSpec {
            topic: Some(Topic::Parking),
            ..fault(FaultKind::Degraded)
        });
        assert_eq!(field_of(&c), "fault[0].topic");
        let mut c = config();
        c.fault.push(FaultSpec {
            devices: vec!["TS-001".into(), "TS-999".into()],
            ..fault(FaultKind::Late)
        });
        assert_eq!(field_of(&c), "fault[0].devices[1]");
        let mut c = config();
        c.fault.push(FaultSpec {
            probability: 2.0,
            ..fault(FaultKind::Late)
        });
        assert_eq!(field_of(&c), "fault[0].probability");
        // The message says what is wrong, with the value.
        let mut c = config();
        c.demand.push(DemandEntry {
            zone: Some("zone-9".into()),
            from: None,
            to: None,
            multiplier: 2.0,
        });
        let text = Generator::new(&c, 1).unwrap_err().to_string();
        assert!(
            text.contains("demand[0].zone") && text.contains("zone-9"),
            "{text}"
        );
    }

    // Proves records come out in produce-time order even with delays, duplicates and incidents,
    // and that incident ids count up from INC-000001.
    #[test]
    fn produce_time_order_and_incident_ids() {
        let mut c = config();
        c.incident_probability = 1.0;
        c.fault = vec![
            FaultSpec {
                delay_ms: Some(90_000),
                ..fault(FaultKind::Late)
            },
            fault(FaultKind::Duplicate),
            fault(FaultKind::OutOfOrder),
        ];
        let g = Generator::new(&c, 3).unwrap();
        let records: Vec<_> = g.records().collect();
        assert!(
            records
                .windows(2)
                .all(|w| w[0].produce_time_ms <= w[1].produce_time_ms)
        );
        let ids: Vec<&str> = records
            .iter()
            .filter(|r| r.topic == Topic::Incidents && r.fault != Some(FaultKind::Duplicate))
            .map(|r| r.key.as_ref())
            .collect();
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        assert_eq!(
            sorted.len(),
            20,
            "a check every 30 s for 10 min, always firing"
        );
        assert_eq!(sorted[0], "INC-000001");
        assert_eq!(sorted[19], "INC-000020");
        assert_eq!(g.max_delay_ms(), 90_000);
    }

    // Proves a burst makes `count` incidents spread over its duration, with what it pins.
    #[test]
    fn bursts() {
        let mut c = config();
        c.start = "2026-11-24T07:55:00Z".into();
        c.incident_probability = 0.0;
        c.incident_burst.push(IncidentBurst {
            at: "08:00".into(),
            duration_s: 60,
            count: 4,
            severity: Some(Severity::Critical),
            zone: Some("zone-3".into()),
            kind: Some(IncidentType::Flooding),
        });
        let g = Generator::new(&c, 5).unwrap();
        let incidents: Vec<_> = g
            .records()
            .filter_map(|r| match r.payload {
                Payload::Message(Message::Incident(i)) => Some(i),
                _ => None,
            })
            .collect();
        assert_eq!(incidents.len(), 4);
        let day0 = g.start_ms() - (7 * HOUR_MS + 55 * 60_000);
        for (k, i) in incidents.iter().enumerate() {
            assert_eq!(
                i.timestamp,
                Timestamp::Utc(day0 + 8 * HOUR_MS + k as i64 * 15_000)
            );
            assert_eq!(
                (i.severity, i.kind),
                (Severity::Critical, IncidentType::Flooding)
            );
            assert_eq!(i.location.zone_id, "zone-3");
            assert_eq!(i.affected_lanes, 3, "critical incidents close every lane");
        }
    }

    // Proves overcrowding pins the rate of a line's buses in its range, and only there.
    #[test]
    fn overcrowding() {
        let mut c = config();
        c.overcrowding.push(OvercrowdingEntry {
            line: "line-4".into(),
            from: Some("2026-11-24T00:05:00Z".into()),
            to: None,
            occupancy_rate_pct: 92.5,
        });
        let g = Generator::new(&c, 5).unwrap();
        let from = g.start_ms() + 5 * 60_000;
        let mut forced = 0;
        for r in g.records() {
            if let Some(Message::Transport(m)) = r.message() {
                let pinned = m.line_id == "line-4" && r.event_time_ms >= from;
                assert_eq!(m.occupancy_rate >= 92.5, pinned, "{m:?}");
                forced += usize::from(pinned);
            }
        }
        assert_eq!(forced, 4 * 60, "4 buses, 60 ticks");
    }

    // Proves forced congestion slows the buses of the zone too (they share the road).
    #[test]
    fn congestion_delays_buses() {
        let mut c = config();
        c.congestion.push(CongestionEntry {
            zone: "zone-3".into(),
            from: None,
            to: None,
            speed_kmh: 3.0,
        });
        let g = Generator::new(&c, 5).unwrap();
        let delays: Vec<f64> = g
            .records()
            .filter_map(|r| match r.message() {
                Some(Message::Transport(m))
                    if m.line_id == "line-4" && m.current_stop == "Usera" =>
                {
                    Some(m.delay_minutes)
                }
                _ => None,
            })
            .collect();
        assert!(!delays.is_empty());
        assert!(delays.iter().all(|&d| d > 3.0), "{delays:?}");
    }
}
