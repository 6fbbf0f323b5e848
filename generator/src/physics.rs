//! The clean data model: how demand becomes speeds, flows, bus loads and parking occupancy.
//!
//! - **Traffic** follows Greenshields' fundamental diagram. A sensor's density ratio is
//!   `k/kj = clamp(DENSITY_GAIN × demand × road factor × sensor quirk + noise, 0, 0.95)`, its
//!   speed `v = v_free × (1 − k/kj)` (never below 6 km/h unless congestion is forced), its flow
//!   `v × k` over the tick and its lanes, its occupancy `100 × k/kj` ± 2 (at most 95).
//!   Calibrated so that demand 1.8-2.0 gives a city mean of ~12-18 km/h and ~70-80 % occupancy
//!   (mobility index `poor`), demand 1.0 ~35-40 km/h and ~40 % (`good`), night (0.3) ~50 km/h
//!   and ~12 % (`excellent`).
//! - **Buses** move along their line at a speed set by their zone's congestion, bounce at the
//!   terminals, run late by `10 × (k/kj − 0.3)` minutes plus a per-bus bias and noise (so ~0-1.5
//!   off-peak, ~3-6 at the peaks), and carry `(0.45 × demand − 0.05) × line factor` of their
//!   capacity (central lines beyond 90 % at the peaks, near empty at night).
//! - **Parking** follows a by-day curve (fills in the morning, plateaus, empties at night).
//!
//! Every reading draws exactly one 64-bit word from the device's own stream, whatever the
//! configuration, so knobs and faults never shift a device's later numbers. Noise is an AR(1)
//! process per device, so consecutive readings are correlated the way real detectors are.

use pipeline::model::{CongestionLevel, GeoPoint};
use pipeline::time::{DAY_MS, HOUR_MS, Millis};
use rand::RngCore;
use rand_chacha::ChaCha8Rng;

use crate::city::{Line, ParkingLot, Road};
use crate::rng::{tri12, unit12};

/// Density ratio per unit of demand (Greenshields `k/kj` at demand 1.0 on an average road).
pub const DENSITY_GAIN: f64 = 0.395;
/// Highest natural density ratio.
pub const MAX_DENSITY_RATIO: f64 = 0.95;
/// Jam density, vehicles per km per lane.
pub const JAM_DENSITY_PER_KM_LANE: f64 = 150.0;
/// Natural speeds never go below this (severe congestion, < 5 km/h, only when forced).
pub const MIN_NATURAL_SPEED_KMH: f64 = 6.0;
/// Natural occupancy never exceeds this (overcapacity, > 95 %, only when forced or faulty).
pub const MAX_NATURAL_OCCUPANCY_PCT: f64 = 95.0;
/// A bus at least this late reports `delayed` (3 min: a common transit-agency threshold, and
/// between the 2 and 5 minute bands of the punctuality score).
pub const DELAYED_THRESHOLD_MIN: f64 = 3.0;
/// Minutes of delay per unit of density ratio above [`DELAY_FREE_DENSITY`].
const DELAY_GAIN_MIN: f64 = 10.0;
/// Density ratio below which traffic costs buses no time.
const DELAY_FREE_DENSITY: f64 = 0.3;
/// Bus speed at free flow, km/h (stops included).
const BUS_FREE_SPEED_KMH: f64 = 40.0;

/// `x` rounded half away from zero to `1/scale`, without a libm call (`f64::round` is one on
/// baseline x86-64). Dividing (not multiplying by the inverse) lands on the double nearest the
/// decimal, so JSON prints it in the fewest digits.
#[inline]
pub(crate) fn round_to(x: f64, scale: f64) -> f64 {
    let y = x * scale;
    let r = if y >= 0.0 {
        (y + 0.5) as i64
    } else {
        (y - 0.5) as i64
    };
    r as f64 / scale
}

/// `x` rounded to one decimal.
#[inline]
pub(crate) fn round1(x: f64) -> f64 {
    round_to(x, 10.0)
}

/// `x ≥ 0` rounded down to one decimal (never above `x`).
#[inline]
fn floor1(x: f64) -> f64 {
    (x * 10.0) as i64 as f64 / 10.0
}

/// The congestion level a sensor derives from its speed.
#[inline]
pub fn congestion_level(speed_kmh: f64) -> CongestionLevel {
    if speed_kmh < 20.0 {
        CongestionLevel::High
    } else if speed_kmh < 40.0 {
        CongestionLevel::Medium
    } else {
        CongestionLevel::Low
    }
}

/// Density ratio of a zone's average road at `demand` (used for buses and for bus delays).
#[inline]
pub(crate) fn zone_density(demand: f64) -> f64 {
    (DENSITY_GAIN * demand).clamp(0.0, MAX_DENSITY_RATIO)
}

/// Density ratio implied by a forced speed (a jam on an average 50 km/h street).
#[inline]
pub(crate) fn forced_density(speed_kmh: f64) -> f64 {
    (1.0 - speed_kmh / 50.0).clamp(0.0, 1.0)
}

/// The city's parking occupancy curve: fraction of spaces taken at a time of day (hourly knots,
/// linear in between).
pub(crate) fn parking_curve(t: Millis) -> f64 {
    const KNOTS: [f64; 25] = [
        0.15, 0.13, 0.12, 0.12, 0.12, 0.13, 0.18, 0.35, 0.60, 0.80, 0.87, 0.89, 0.90, 0.85, 0.88,
        0.88, 0.85, 0.80, 0.72, 0.60, 0.50, 0.42, 0.32, 0.22, 0.15,
    ];
    let tod = t.rem_euclid(DAY_MS);
    let h = (tod / HOUR_MS) as usize;
    let f = (tod % HOUR_MS) as f64 / HOUR_MS as f64;
    KNOTS[h] + (KNOTS[h + 1] - KNOTS[h]) * f
}

/// A traffic reading's measured values.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct TrafficValues {
    pub speed_kmh: f64,
    pub vehicle_flow: i64,
    pub occupancy_pct: f64,
    pub level: CongestionLevel,
}

/// A traffic sensor's random state.
#[derive(Clone, Debug)]
pub(crate) struct SensorState {
    rng: ChaCha8Rng,
    /// AR(1) noise on the density ratio.
    noise: f64,
    /// Static local factor (a junction nearby, a school): 0.95-1.05.
    quirk: f64,
}

impl SensorState {
    pub(crate) fn new(mut rng: ChaCha8Rng) -> Self {
        let bits = rng.next_u64();
        Self {
            quirk: 0.95 + 0.1 * unit12(bits, 0),
            noise: 0.03 * tri12(bits, 1, 2),
            rng,
        }
    }

    /// Advances one tick. `forced_kmh` is the target of a forced congestion covering the reading.
    #[inline]
    pub(crate) fn read(
        &mut self,
        road: &Road,
        demand: f64,
        forced_kmh: Option<f64>,
        tick_h: f64,
    ) -> TrafficValues {
        let bits = self.rng.next_u64();
        self.noise = 0.9 * self.noise + 0.032 * tri12(bits, 0, 1);
        let (speed, occupancy, density) = match forced_kmh {
            None => {
                let density = (DENSITY_GAIN * demand * road.demand_factor * self.quirk
                    + self.noise)
                    .clamp(0.0, MAX_DENSITY_RATIO);
                let v = road.free_speed_kmh * (1.0 - density) * (0.97 + 0.06 * unit12(bits, 2));
                let occupancy = (100.0 * density + 4.0 * unit12(bits, 3) - 2.0)
                    .clamp(0.0, MAX_NATURAL_OCCUPANCY_PCT);
                (
                    round1(v.max(MIN_NATURAL_SPEED_KMH)),
                    round1(occupancy),
                    density,
                )
            }
            Some(target) => {
                // Jitter only downwards and round down, so a target below 5 km/h gives readings
                // strictly below 5 km/h.
                let v = floor1(target * (1.0 - 0.3 * unit12(bits, 2)));
                let density = (1.0 - v / road.free_speed_kmh).clamp(0.0, 1.0);
                let occupancy = (100.0 * density + 4.0 * unit12(bits, 3) - 2.0).clamp(0.0, 99.0);
                (v, round1(occupancy), density)
            }
        };
        let per_tick = speed * density * JAM_DENSITY_PER_KM_LANE * road.lanes as f64 * tick_h;
        TrafficValues {
            speed_kmh: speed,
            vehicle_flow: (per_tick + unit12(bits, 4)) as i64,
            occupancy_pct: occupancy,
            level: congestion_level(speed),
        }
    }
}

/// A bus report's values.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct BusValues {
    pub current_stop: usize,
    pub next_stop: usize,
    pub outbound: bool,
    pub location: GeoPoint,
    pub speed_kmh: f64,
    pub passengers: i64,
    pub occupancy_pct: f64,
    pub delay_min: f64,
}

/// A bus's position and random state.
#[derive(Clone, Debug)]
pub(crate) struct BusState {
    rng: ChaCha8Rng,
    /// Distance from the line's first stop, km.
    s_km: f64,
    outbound: bool,
    delay_noise: f64,
    load_noise: f64,
    /// Static lateness of this vehicle/driver, minutes.
    bias_min: f64,
    /// Static share of the line's demand this bus sees.
    load_quirk: f64,
}

impl BusState {
    pub(crate) fn new(
        mut rng: ChaCha8Rng,
        line: &Line,
        start_fraction: f64,
        outbound: bool,
    ) -> Self {
        let bits = rng.next_u64();
        Self {
            s_km: start_fraction * line.length_km(),
            outbound,
            delay_noise: 0.0,
            load_noise: 0.0,
            bias_min: 0.4 * unit12(bits, 0),
            load_quirk: 0.95 + 0.1 * unit12(bits, 1),
            rng,
        }
    }

    /// The zone the bus is in now (that of the last stop it passed).
    #[inline]
    pub(crate) fn zone(&self, line: &Line) -> usize {
        let (current, _, _) = self.segment(line);
        line.stops[current].zone
    }

    /// (stop passed, next stop, fraction of the segment between the lower and upper stop index).
    fn segment(&self, line: &Line) -> (usize, usize, f64) {
        let n = line.stops.len();
        let mut i = 0;
        while i + 2 < n && line.cum_km[i + 1] <= self.s_km {
            i += 1;
        }
        let len = line.cum_km[i + 1] - line.cum_km[i];
        let f = if len > 0.0 {
            ((self.s_km - line.cum_km[i]) / len).clamp(0.0, 1.0)
        } else {
            0.0
        };
        if self.outbound {
            (i, i + 1, f)
        } else {
            (i + 1, i, f)
        }
    }

    /// Advances one tick. `density` is the congestion of the bus's zone, `demand` its demand.
    #[inline]
    pub(crate) fn read(
        &mut self,
        line: &Line,
        density: f64,
        demand: f64,
        tick_h: f64,
    ) -> BusValues {
        let bits = self.rng.next_u64();
        let speed = (BUS_FREE_SPEED_KMH * (1.0 - density) * (0.85 + 0.3 * unit12(bits, 0)))
            .clamp(3.0, 45.0);
        let length = line.length_km();
        if self.outbound {
            self.s_km += speed * tick_h;
            if self.s_km >= length {
                self.s_km = (2.0 * length - self.s_km).max(0.0);
                self.outbound = false;
            }
        } else {
            self.s_km -= speed * tick_h;
            if self.s_km <= 0.0 {
                self.s_km = (-self.s_km).min(length);
                self.outbound = true;
            }
        }
        let (current, next, f) = self.segment(line);
        let (lo, hi) = (current.min(next), current.max(next));
        let (a, b) = (line.stops[lo].location, line.stops[hi].location);
        let location = GeoPoint {
            lat: round_to(a.lat + (b.lat - a.lat) * f, 1e5),
            lon: round_to(a.lon + (b.lon - a.lon) * f, 1e5),
        };

        self.delay_noise = 0.9 * self.delay_noise + 0.35 * tri12(bits, 1, 2);
        let delay =
            DELAY_GAIN_MIN * (density - DELAY_FREE_DENSITY) + self.bias_min + self.delay_noise;

        self.load_noise = 0.9 * self.load_noise + 0.05 * tri12(bits, 3, 4);
        let line_factor = if line.central { 1.08 } else { 0.9 };
        let load = ((0.45 * demand - 0.05) * line_factor * self.load_quirk + self.load_noise)
            .clamp(0.0, 1.0);
        let capacity = f64::from(line.capacity);
        let passengers = (load * capacity + 0.5) as i64;

        BusValues {
            current_stop: current,
            next_stop: next,
            outbound: self.outbound,
            location,
            speed_kmh: round1(speed),
            passengers,
            occupancy_pct: round1(100.0 * passengers as f64 / capacity),
            delay_min: round1(delay.max(0.0)),
        }
    }
}

/// A parking reading's values.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct LotValues {
    pub occupied: i64,
    pub occupancy_pct: f64,
}

/// A car park's random state.
#[derive(Clone, Debug)]
pub(crate) struct LotState {
    rng: ChaCha8Rng,
    noise: f64,
    quirk: f64,
}

impl LotState {
    pub(crate) fn new(mut rng: ChaCha8Rng) -> Self {
        let bits = rng.next_u64();
        Self {
            quirk: 0.97 + 0.06 * unit12(bits, 0),
            noise: 0.02 * tri12(bits, 1, 2),
            rng,
        }
    }

    /// Advances one tick; `target` is the city curve's value now.
    #[inline]
    pub(crate) fn read(&mut self, lot: &ParkingLot, target: f64) -> LotValues {
        let bits = self.rng.next_u64();
        self.noise = 0.95 * self.noise + 0.02 * tri12(bits, 0, 1);
        let share = (target * lot.demand_factor * self.quirk + self.noise).clamp(0.0, 1.0);
        let total = f64::from(lot.total_spaces);
        let occupied = (share * total + 0.5) as i64;
        LotValues {
            occupied,
            occupancy_pct: round1(100.0 * occupied as f64 / total),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves the rounding helpers agree with f64::round and print short.
    #[test]
    fn rounding() {
        for x in [0.0, 0.05, 1.25, 42.449_999, -3.75, 99.95, 12.345_678] {
            assert_eq!(round1(x), (x * 10.0_f64).round() / 10.0, "{x}");
        }
        assert_eq!(round1(0.1 + 0.2).to_string(), "0.3");
        assert_eq!(floor1(4.99), 4.9);
        assert_eq!(round_to(-3.704_449, 1e5), -3.70445);
    }

    // Proves the congestion bands of SPEC §1 (high < 20, medium < 40).
    #[test]
    fn congestion_bands() {
        assert_eq!(congestion_level(19.9), CongestionLevel::High);
        assert_eq!(congestion_level(20.0), CongestionLevel::Medium);
        assert_eq!(congestion_level(39.9), CongestionLevel::Medium);
        assert_eq!(congestion_level(40.0), CongestionLevel::Low);
    }

    // Proves the parking curve is low at night and high at midday, and continuous at midnight.
    #[test]
    fn parking_curve_shape() {
        assert!(parking_curve(3 * HOUR_MS) < 0.2);
        assert!(parking_curve(12 * HOUR_MS) > 0.85);
        assert!((parking_curve(DAY_MS - 1) - parking_curve(0)).abs() < 1e-3);
    }
}
