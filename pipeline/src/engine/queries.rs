//! The aggregates of the windowed queries and the formulas of SPEC §2.
//!
//! Sums of measured values are kept exactly, in integer micro-units, so that a window's result
//! does not depend on the order its records arrived in (floating-point addition is not
//! associative); the result is the exact sum rounded once.

use serde::{Deserialize, Serialize};

use super::window::Aggregate;

/// A value in micro-units (rounded to 1e-6, halves away from zero), for exact,
/// order-independent sums.
///
/// This is `(v * 1e6).round() as i64`, without `f64::round`: on the baseline x86-64 target that
/// is a libm call, several of them a record. Truncating and comparing the fraction with one half
/// rounds identically (a property test holds it to `round`): the fraction `scaled - whole` is
/// computed exactly, and a value too large for `i64` saturates as the cast does.
#[inline]
pub(crate) fn micro(v: f64) -> i64 {
    let scaled = v * 1e6;
    let whole = scaled as i64;
    let fraction = scaled - whole as f64;
    if fraction >= 0.5 {
        whole.saturating_add(1)
    } else if fraction <= -0.5 {
        whole.saturating_sub(1)
    } else {
        whole
    }
}

/// The mean of `count` values whose micro-unit sum is `sum`.
pub(crate) fn mean(sum: i64, count: u64) -> f64 {
    if count == 0 {
        0.0
    } else {
        sum as f64 / 1e6 / count as f64
    }
}

/// Query 1: 1.0 if avg_speed < 20, 0.7 if < 35, 0.4 if < 50, else 0.1.
pub fn congestion_score(avg_speed: f64) -> f64 {
    if avg_speed < 20.0 {
        1.0
    } else if avg_speed < 35.0 {
        0.7
    } else if avg_speed < 50.0 {
        0.4
    } else {
        0.1
    }
}

/// Query 3: 1.0 if avg_delay < 2, 0.7 if < 5, else 0.3.
pub fn punctuality_score(avg_delay: f64) -> f64 {
    if avg_delay < 2.0 {
        1.0
    } else if avg_delay < 5.0 {
        0.7
    } else {
        0.3
    }
}

/// Query 5: red if critical and count > 0, orange if high and count > 2, else yellow.
pub fn alert_level(severity: crate::model::Severity, count: u64) -> &'static str {
    use crate::model::Severity;
    match severity {
        Severity::Critical if count > 0 => "red",
        Severity::High if count > 2 => "orange",
        _ => "yellow",
    }
}

/// Query 7: `(speed / 50 * 0.6 + (100 - occupancy) / 100 * 0.4) * 100`.
pub fn mobility_index(city_avg_speed: f64, city_avg_occupancy: f64) -> f64 {
    (city_avg_speed / 50.0 * 0.6 + (100.0 - city_avg_occupancy) / 100.0 * 0.4) * 100.0
}

/// Query 7: excellent > 80, good > 60, moderate > 40, poor > 20, else critical.
pub fn mobility_category(index: f64) -> &'static str {
    if index > 80.0 {
        "excellent"
    } else if index > 60.0 {
        "good"
    } else if index > 40.0 {
        "moderate"
    } else if index > 20.0 {
        "poor"
    } else {
        "critical"
    }
}

/// What a traffic reading contributes (queries 1 and 7).
#[derive(Clone, Copy, Debug)]
pub struct TrafficInput {
    /// speed_kmh.
    pub speed: f64,
    /// occupancy_percent.
    pub occupancy: f64,
    /// vehicle_flow.
    pub vehicles: i64,
}

/// Query 1 state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrafficAgg {
    /// Readings.
    pub count: u64,
    /// Sum of speeds, micro-km/h.
    pub speed_sum: i64,
    /// Lowest speed.
    pub min_speed: f64,
    /// Highest speed.
    pub max_speed: f64,
    /// Sum of vehicle_flow.
    pub vehicles: i64,
    /// Sum of occupancy, micro-percent.
    pub occupancy_sum: i64,
}

impl Default for TrafficAgg {
    fn default() -> Self {
        TrafficAgg {
            count: 0,
            speed_sum: 0,
            min_speed: f64::INFINITY,
            max_speed: f64::NEG_INFINITY,
            vehicles: 0,
            occupancy_sum: 0,
        }
    }
}

impl Aggregate for TrafficAgg {
    type Input = TrafficInput;
    fn add(&mut self, r: &TrafficInput) {
        self.count += 1;
        self.speed_sum += micro(r.speed);
        self.min_speed = self.min_speed.min(r.speed);
        self.max_speed = self.max_speed.max(r.speed);
        self.vehicles += r.vehicles;
        self.occupancy_sum += micro(r.occupancy);
    }

    fn merge(&mut self, other: &Self) {
        self.count += other.count;
        self.speed_sum += other.speed_sum;
        self.min_speed = self.min_speed.min(other.min_speed);
        self.max_speed = self.max_speed.max(other.max_speed);
        self.vehicles += other.vehicles;
        self.occupancy_sum += other.occupancy_sum;
    }
}

/// Query 7 state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MobilityAgg {
    /// Readings.
    pub count: u64,
    /// Sum of speeds, micro-km/h.
    pub speed_sum: i64,
    /// Sum of occupancy, micro-percent.
    pub occupancy_sum: i64,
}

impl Aggregate for MobilityAgg {
    type Input = TrafficInput;
    fn add(&mut self, r: &TrafficInput) {
        self.count += 1;
        self.speed_sum += micro(r.speed);
        self.occupancy_sum += micro(r.occupancy);
    }

    fn merge(&mut self, other: &Self) {
        self.count += other.count;
        self.speed_sum += other.speed_sum;
        self.occupancy_sum += other.occupancy_sum;
    }
}

/// What a transport report contributes (query 3).
#[derive(Clone, Copy, Debug)]
pub struct TransportInput {
    /// Interned vehicle id.
    pub vehicle: u32,
    /// delay_minutes.
    pub delay: f64,
    /// occupancy_rate.
    pub occupancy: f64,
    /// passenger_count.
    pub passengers: i64,
}

/// Query 3 state.
///
/// The distinct vehicles are kept whole, so the set, and what a row counts, depends neither on
/// the order reports arrived in nor on how they were split into parts that were merged;
/// `max_vehicles_per_window` caps how many a row counts, when it is emitted, and the rest are
/// counted as over the limit. What the sets hold is bounded all the same: the engine's vehicle
/// census admits at most `max_devices_per_topic` vehicles into the transport windows.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TransportAgg {
    /// Reports.
    pub count: u64,
    /// Sum of delays, micro-minutes.
    pub delay_sum: i64,
    /// Sum of occupancy rates, micro-percent.
    pub occupancy_sum: i64,
    /// Sum of passenger counts.
    pub passengers: i64,
    /// Distinct vehicles seen, sorted.
    pub vehicles: Vec<u32>,
}

impl Aggregate for TransportAgg {
    type Input = TransportInput;
    fn add(&mut self, r: &TransportInput) {
        self.count += 1;
        self.delay_sum += micro(r.delay);
        self.occupancy_sum += micro(r.occupancy);
        self.passengers += r.passengers;
        if let Err(at) = self.vehicles.binary_search(&r.vehicle) {
            self.vehicles.insert(at, r.vehicle);
        }
    }

    fn merge(&mut self, other: &Self) {
        self.count += other.count;
        self.delay_sum += other.delay_sum;
        self.occupancy_sum += other.occupancy_sum;
        self.passengers += other.passengers;
        self.vehicles = sorted_union(&self.vehicles, &other.vehicles);
    }
}

/// The sorted, distinct union of two sorted, distinct lists.
fn sorted_union(a: &[u32], b: &[u32]) -> Vec<u32> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => {
                out.push(a[i]);
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                out.push(b[j]);
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}

/// Query 5 state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct IncidentAgg {
    /// Incidents.
    pub count: u64,
}

impl Aggregate for IncidentAgg {
    type Input = ();
    fn add(&mut self, _: &()) {
        self.count += 1;
    }

    fn merge(&mut self, other: &Self) {
        self.count += other.count;
    }
}

/// What a parking reading contributes.
#[derive(Clone, Copy, Debug)]
pub struct ParkingInput {
    /// occupancy_rate.
    pub occupancy: f64,
    /// available_spaces.
    pub available: i64,
}

/// Parking-per-zone state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ParkingAgg {
    /// Readings.
    pub count: u64,
    /// Sum of occupancy rates, micro-percent.
    pub occupancy_sum: i64,
    /// Fewest available spaces.
    pub min_available: i64,
}

impl Default for ParkingAgg {
    fn default() -> Self {
        ParkingAgg {
            count: 0,
            occupancy_sum: 0,
            min_available: i64::MAX,
        }
    }
}

impl Aggregate for ParkingAgg {
    type Input = ParkingInput;
    fn add(&mut self, r: &ParkingInput) {
        self.count += 1;
        self.occupancy_sum += micro(r.occupancy);
        self.min_available = self.min_available.min(r.available);
    }

    fn merge(&mut self, other: &Self) {
        self.count += other.count;
        self.occupancy_sum += other.occupancy_sum;
        self.min_available = self.min_available.min(other.min_available);
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::model::Severity;

    /// Adds each input to the part `parts` names for it (of four), merges the parts into an
    /// empty aggregate in the order `order` names, and returns that with the aggregate of
    /// adding every input to one.
    fn split_and_merge<A: Aggregate>(
        inputs: &[A::Input],
        parts: &[usize],
        order: [usize; 4],
    ) -> (A, A)
    where
        A::Input: Sized,
    {
        let mut all = A::default();
        let mut split: [A; 4] = Default::default();
        for (input, &part) in inputs.iter().zip(parts) {
            all.add(input);
            split[part % 4].add(input);
        }
        let mut merged = A::default();
        for i in order {
            merged.merge(&split[i]);
        }
        (merged, all)
    }

    fn traffic_input() -> impl Strategy<Value = TrafficInput> {
        (0.0..250.0f64, 0.0..100.0f64, 0..5000i64).prop_map(|(speed, occupancy, vehicles)| {
            TrafficInput {
                speed,
                occupancy,
                vehicles,
            }
        })
    }

    fn transport_input() -> impl Strategy<Value = TransportInput> {
        (0..40u32, -10.0..60.0f64, 0.0..100.0f64, 0..200i64).prop_map(
            |(vehicle, delay, occupancy, passengers)| TransportInput {
                vehicle,
                delay,
                occupancy,
                passengers,
            },
        )
    }

    fn parking_input() -> impl Strategy<Value = ParkingInput> {
        (0.0..100.0f64, 0..2000i64).prop_map(|(occupancy, available)| ParkingInput {
            occupancy,
            available,
        })
    }

    fn split() -> impl Strategy<Value = (Vec<usize>, [usize; 4])> {
        (
            prop::collection::vec(0..4usize, 64),
            Just([0, 1, 2, 3]).prop_shuffle(),
        )
            .prop_map(|(parts, order)| (parts, [order[0], order[1], order[2], order[3]]))
    }

    /// The rounding [`micro`] stands in for.
    fn micro_by_round(v: f64) -> i64 {
        (v * 1e6).round() as i64
    }

    // Proves `micro` rounds exactly as `f64::round` does at the halves, near them, at the
    // edges of `i64` and for values that are not numbers.
    #[test]
    fn micro_rounds_as_round_at_the_edges() {
        let halves = [
            0.5e-6,
            1.5e-6,
            2.5e-6,
            // The float just below 0.5e-6.
            f64::from_bits(0.5e-6_f64.to_bits() - 1),
            12.000_000_5,
        ];
        let edges = [
            0.0,
            -0.0,
            f64::MIN_POSITIVE,
            9.223_372_036_854_775e12,
            9.3e12,
            1e300,
            f64::MAX,
            f64::INFINITY,
            f64::NAN,
        ];
        for v in halves.into_iter().chain(edges) {
            for v in [
                v,
                -v,
                f64::from_bits(v.to_bits() + 1),
                f64::from_bits(v.to_bits().saturating_sub(1)),
            ] {
                assert_eq!(micro(v), micro_by_round(v), "{v:e}");
            }
        }
    }

    proptest! {
        // Proves `micro` equals `(v * 1e6).round() as i64` on any value, and on any value of
        // the few decimals the sensors send.
        #[test]
        fn micro_rounds_as_round(bits in any::<u64>(), cents in any::<i64>(), digits in 0u32..9) {
            let v = f64::from_bits(bits);
            prop_assert_eq!(micro(v), micro_by_round(v));
            let v = (cents % 1_000_000_000) as f64 / 10f64.powi(digits as i32);
            prop_assert_eq!(micro(v), micro_by_round(v));
        }

        // Proves merging is exact for every aggregate: however the records are split into
        // parts (some parts empty) and in whatever order the parts are merged, the result is
        // what adding every record to one aggregate gives (sums, counts, min/max and the
        // distinct vehicles alike).
        #[test]
        fn merging_any_split_equals_adding_all(
            traffic in prop::collection::vec(traffic_input(), 0..64),
            transport in prop::collection::vec(transport_input(), 0..64),
            parking in prop::collection::vec(parking_input(), 0..64),
            incidents in 0..64usize,
            (parts, order) in split(),
        ) {
            let (merged, all) = split_and_merge::<TrafficAgg>(&traffic, &parts, order);
            prop_assert_eq!(merged, all);
            let (merged, all) = split_and_merge::<MobilityAgg>(&traffic, &parts, order);
            prop_assert_eq!(merged, all);
            let (merged, all) = split_and_merge::<TransportAgg>(&transport, &parts, order);
            prop_assert_eq!(merged, all);
            let (merged, all) = split_and_merge::<ParkingAgg>(&parking, &parts, order);
            prop_assert_eq!(merged, all);
            let (merged, all) = split_and_merge::<IncidentAgg>(&vec![(); incidents], &parts, order);
            prop_assert_eq!(merged, all);
        }
    }

    // Proves each score changes exactly at its threshold (strict `<` as in SPEC §2).
    #[test]
    fn congestion_score_edges() {
        assert_eq!(congestion_score(19.999), 1.0);
        assert_eq!(congestion_score(20.0), 0.7);
        assert_eq!(congestion_score(34.999), 0.7);
        assert_eq!(congestion_score(35.0), 0.4);
        assert_eq!(congestion_score(49.999), 0.4);
        assert_eq!(congestion_score(50.0), 0.1);
    }

    // Proves punctuality changes exactly at 2 and 5 minutes.
    #[test]
    fn punctuality_edges() {
        assert_eq!(punctuality_score(1.99), 1.0);
        assert_eq!(punctuality_score(2.0), 0.7);
        assert_eq!(punctuality_score(4.99), 0.7);
        assert_eq!(punctuality_score(5.0), 0.3);
    }

    // Proves alert levels: red needs critical (any count), orange needs high and more than 2.
    #[test]
    fn alert_level_edges() {
        assert_eq!(alert_level(Severity::Critical, 1), "red");
        assert_eq!(alert_level(Severity::High, 2), "yellow");
        assert_eq!(alert_level(Severity::High, 3), "orange");
        assert_eq!(alert_level(Severity::Medium, 50), "yellow");
        assert_eq!(alert_level(Severity::Low, 1), "yellow");
    }

    // Proves the index formula and that each category boundary is exclusive (> 80 is excellent,
    // exactly 80 is good). 50 km/h and 0 % occupancy give (0.6 + 0.4) * 100 = 100.
    #[test]
    fn mobility_formula_and_edges() {
        assert_eq!(mobility_index(50.0, 0.0), 100.0);
        // 25 km/h, 50 %: (0.5 * 0.6 + 0.5 * 0.4) * 100 = 50.
        assert!((mobility_index(25.0, 50.0) - 50.0).abs() < 1e-9);
        assert_eq!(mobility_category(80.0001), "excellent");
        assert_eq!(mobility_category(80.0), "good");
        assert_eq!(mobility_category(60.0), "moderate");
        assert_eq!(mobility_category(40.0), "poor");
        assert_eq!(mobility_category(20.0), "critical");
        assert_eq!(mobility_category(-5.0), "critical");
    }

    // Proves exact sums: adding in any order gives bit-identical means.
    #[test]
    fn sums_are_order_independent() {
        let values = [0.1, 0.2, 0.3, 17.45, 99.99, 1e-3];
        let mut a = MobilityAgg::default();
        let mut b = MobilityAgg::default();
        for v in values {
            a.add(&TrafficInput {
                speed: v,
                occupancy: v,
                vehicles: 1,
            });
        }
        for v in values.iter().rev() {
            b.add(&TrafficInput {
                speed: *v,
                occupancy: *v,
                vehicles: 1,
            });
        }
        assert_eq!(a, b);
        assert_eq!(
            mean(a.speed_sum, a.count).to_bits(),
            mean(b.speed_sum, b.count).to_bits()
        );
    }
}
