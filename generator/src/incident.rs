//! Incidents: what a random check or a burst produces.
//!
//! An incident lies on one of the city's roads, inside one of the zones the road crosses. Roads
//! and zones do not change with the load factor, so neither do incidents.

use std::borrow::Cow;

use pipeline::model::{GeoPoint, Incident, IncidentLocation, IncidentType, Severity};
use pipeline::time::{Millis, Timestamp};
use rand_chacha::ChaCha8Rng;

use crate::city::City;
use crate::physics::round_to;
use crate::rng::{below, unit53};

/// Cumulative weights of the incident types, in [`IncidentType::ALL`] order: accidents and
/// breakdowns dominate, floods are rare.
const TYPE_CDF: [f64; 7] = [0.30, 0.55, 0.70, 0.80, 0.87, 0.92, 1.0];

/// Shortest and longest expected duration by type, minutes (before the severity factor).
const DURATION_MIN: [(i64, i64); 7] = [
    (20, 90),
    (15, 60),
    (60, 480),
    (120, 360),
    (60, 240),
    (60, 360),
    (30, 240),
];

const DESCRIPTIONS: [[&str; 2]; 7] = [
    [
        "Collision between two cars",
        "Rear-end collision at a junction",
    ],
    [
        "Broken-down vehicle blocking a lane",
        "Stalled truck on the carriageway",
    ],
    [
        "Scheduled road works",
        "Emergency repair of the road surface",
    ],
    [
        "Public event with street closures",
        "Concert traffic around the venue",
    ],
    [
        "Demonstration on the carriageway",
        "March blocking the avenue",
    ],
    [
        "Flooded underpass",
        "Water on the carriageway after heavy rain",
    ],
    [
        "Traffic signals out after a power cut",
        "Power outage at a junction",
    ],
];

/// What a burst may pin down; the rest is drawn.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Constraint {
    pub severity: Option<Severity>,
    pub zone: Option<usize>,
    pub kind: Option<IncidentType>,
}

/// Draws one incident at `time` with id `INC-{number:06}`.
pub(crate) fn make<'c>(
    city: &'c City,
    rng: &mut ChaCha8Rng,
    number: u64,
    time: Millis,
    severity_cdf: &[f64; 4],
    constraint: Constraint,
) -> Incident<'c> {
    // Always draw every variate, even those the constraint pins, so a constraint changes only
    // what it names.
    let kind_u = unit53(rng);
    let severity_u = unit53(rng);
    let place_u = unit53(rng);
    let duration_u = unit53(rng);
    let lanes_u = unit53(rng);
    let text = below(rng, 2) as usize;

    let kind = constraint.kind.unwrap_or_else(|| {
        IncidentType::ALL[TYPE_CDF.iter().position(|&c| kind_u < c).unwrap_or(6)]
    });
    let severity = constraint.severity.unwrap_or_else(|| {
        Severity::ALL[severity_cdf
            .iter()
            .position(|&c| severity_u < c)
            .unwrap_or(3)]
    });

    // A place: a road (crossing the zone, when one is asked for) and a point on its stretch in
    // that zone. Every zone is crossed by some road.
    let candidates = city
        .roads
        .iter()
        .enumerate()
        .flat_map(|(r, road)| road.zones.iter().enumerate().map(move |(k, &z)| (r, k, z)));
    let count = candidates
        .clone()
        .filter(|&(_, _, z)| constraint.zone.is_none_or(|c| c == z))
        .count();
    let pick = ((place_u * count as f64) as usize).min(count.saturating_sub(1));
    let (r, k, zone) = candidates
        .filter(|&(_, _, z)| constraint.zone.is_none_or(|c| c == z))
        .nth(pick)
        .unwrap_or((0, 0, city.roads[0].zones[0]));
    let road = &city.roads[r];
    let stretch = 1.0 / road.zones.len() as f64;
    let along = (k as f64 + 0.1 + 0.8 * (place_u * count as f64).fract()) * stretch;
    let GeoPoint { lat, lon } = road.point_at(along);

    let kind_index = IncidentType::ALL
        .iter()
        .position(|&t| t == kind)
        .unwrap_or(0);
    let (lo, hi) = DURATION_MIN[kind_index];
    let severity_factor = match severity {
        Severity::Low => 0.6,
        Severity::Medium => 1.0,
        Severity::High => 1.5,
        Severity::Critical => 2.0,
    };
    let duration = ((lo as f64 + (hi - lo) as f64 * duration_u) * severity_factor) as i64;
    let max_lanes = i64::from(road.lanes);
    let lanes = match severity {
        Severity::Critical => max_lanes,
        _ => 1 + (lanes_u * max_lanes as f64) as i64,
    }
    .min(max_lanes);

    let id = format!("INC-{number:06}");
    Incident {
        incident_id: Cow::Owned(id),
        timestamp: Timestamp::Utc(time),
        kind,
        severity,
        location: IncidentLocation {
            road_id: Cow::Borrowed(&road.id),
            road_name: Cow::Borrowed(&road.name),
            zone_id: Cow::Borrowed(&city.zones[zone].id),
            lat: round_to(lat, 1e5),
            lon: round_to(lon, 1e5),
        },
        description: Cow::Borrowed(DESCRIPTIONS[kind_index][text]),
        estimated_duration_min: duration.max(5),
        affected_lanes: lanes,
        status: Cow::Borrowed("active"),
    }
}
