//! The wire format: one typed message per Kafka topic, with exactly the field names of SPEC §1.
//!
//! Strings are `Cow<'a, str>` so that the generator can build messages that borrow its city's
//! names (no allocation per record) and the engine can decode messages that borrow the record's
//! bytes. Numeric fields are wide enough to carry the impossible values that faulty sensors send
//! (a negative speed, an occupancy of 140 %): rejecting those is the engine's validation, not the
//! parser's.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

mod json_write;

/// The four input topics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Topic {
    /// `traffic-sensors`: one reading per road sensor per tick.
    #[serde(rename = "traffic-sensors")]
    Traffic,
    /// `public-transport`: one report per bus per tick.
    #[serde(rename = "public-transport")]
    Transport,
    /// `parking`: one reading per car park per tick.
    #[serde(rename = "parking")]
    Parking,
    /// `incidents`: one message per incident.
    #[serde(rename = "incidents")]
    Incidents,
}

impl Topic {
    /// All topics, in a fixed order.
    pub const ALL: [Topic; 4] = [
        Topic::Traffic,
        Topic::Transport,
        Topic::Parking,
        Topic::Incidents,
    ];

    /// The Kafka topic name.
    pub const fn name(self) -> &'static str {
        match self {
            Topic::Traffic => "traffic-sensors",
            Topic::Transport => "public-transport",
            Topic::Parking => "parking",
            Topic::Incidents => "incidents",
        }
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A topic name that is not one of the four.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown topic `{0}`; expected traffic-sensors, public-transport, parking or incidents")]
pub struct UnknownTopic(pub String);

impl FromStr for Topic {
    type Err = UnknownTopic;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Topic::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| UnknownTopic(s.to_owned()))
    }
}

/// A WGS 84 position.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct GeoPoint {
    /// Latitude in degrees.
    pub lat: f64,
    /// Longitude in degrees.
    pub lon: f64,
}

/// The sensor's own congestion classification.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CongestionLevel {
    /// Free flow.
    Low,
    /// Dense traffic.
    Medium,
    /// Congested.
    High,
}

/// Whether the sensor trusts its own reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataQuality {
    /// A normal reading.
    Good,
    /// The sensor reports a problem; the values may still be plausible.
    Degraded,
}

/// A reading of the `traffic-sensors` topic.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrafficReading<'a> {
    /// Sensor id; also the Kafka key.
    #[serde(borrow)]
    pub sensor_id: Cow<'a, str>,
    /// Event time.
    pub timestamp: Timestamp,
    /// Road the sensor is on.
    #[serde(borrow)]
    pub road_id: Cow<'a, str>,
    /// Road name.
    #[serde(borrow)]
    pub road_name: Cow<'a, str>,
    /// Zone the sensor is in.
    #[serde(borrow)]
    pub zone_id: Cow<'a, str>,
    /// Sensor position.
    pub location: GeoPoint,
    /// Mean speed over the tick, km/h.
    pub speed_kmh: f64,
    /// Vehicles counted over the tick.
    pub vehicle_flow: i64,
    /// Share of time the detector was occupied, percent.
    pub occupancy_percent: f64,
    /// The sensor's own classification.
    pub congestion_level: CongestionLevel,
    /// `good` or `degraded`.
    pub data_quality: DataQuality,
}

/// Direction of travel along a line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Away from the first stop.
    Outbound,
    /// Towards the first stop.
    Inbound,
}

/// Punctuality status reported by the vehicle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransportStatus {
    /// Less than the lateness threshold behind schedule.
    OnTime,
    /// Behind schedule.
    Delayed,
}

/// A report of the `public-transport` topic.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TransportReading<'a> {
    /// Vehicle id; also the Kafka key.
    #[serde(borrow)]
    pub vehicle_id: Cow<'a, str>,
    /// Event time.
    pub timestamp: Timestamp,
    /// Line id.
    #[serde(borrow)]
    pub line_id: Cow<'a, str>,
    /// Public line number.
    #[serde(borrow)]
    pub line_number: Cow<'a, str>,
    /// Stop the vehicle is at or last left.
    #[serde(borrow)]
    pub current_stop: Cow<'a, str>,
    /// Next stop.
    #[serde(borrow)]
    pub next_stop: Cow<'a, str>,
    /// `outbound` or `inbound`.
    pub direction: Direction,
    /// Vehicle position.
    pub location: GeoPoint,
    /// Speed, km/h.
    pub speed_kmh: f64,
    /// Passengers on board.
    pub passenger_count: i64,
    /// Vehicle capacity (passengers).
    pub capacity: i64,
    /// passenger_count / capacity, percent.
    pub occupancy_rate: f64,
    /// Minutes behind schedule.
    pub delay_minutes: f64,
    /// `on_time` or `delayed`.
    pub status: TransportStatus,
}

/// A reading of the `parking` topic.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ParkingReading<'a> {
    /// Car park id; also the Kafka key.
    #[serde(borrow)]
    pub parking_id: Cow<'a, str>,
    /// Event time.
    pub timestamp: Timestamp,
    /// Car park name.
    #[serde(borrow)]
    pub name: Cow<'a, str>,
    /// Zone the car park is in.
    #[serde(borrow)]
    pub zone_id: Cow<'a, str>,
    /// Kind of car park (`street`, `garage`, `surface`, ...).
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    /// Position.
    pub location: GeoPoint,
    /// Spaces in total.
    pub total_spaces: i64,
    /// Spaces taken.
    pub occupied_spaces: i64,
    /// Spaces free.
    pub available_spaces: i64,
    /// occupied / total, percent.
    pub occupancy_rate: f64,
    /// Price per hour.
    pub hourly_rate: f64,
    /// `open`, `full`, ...
    #[serde(borrow)]
    pub status: Cow<'a, str>,
}

/// Kind of incident.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentType {
    /// A collision.
    Accident,
    /// A broken-down vehicle.
    Breakdown,
    /// Road works.
    Roadwork,
    /// A public event.
    Event,
    /// A demonstration.
    Demonstration,
    /// Flooding.
    Flooding,
    /// A power cut (signals out).
    PowerOutage,
}

impl IncidentType {
    /// All kinds, in a fixed order.
    pub const ALL: [IncidentType; 7] = [
        IncidentType::Accident,
        IncidentType::Breakdown,
        IncidentType::Roadwork,
        IncidentType::Event,
        IncidentType::Demonstration,
        IncidentType::Flooding,
        IncidentType::PowerOutage,
    ];
}

/// Incident severity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Minor.
    Low,
    /// Noticeable.
    Medium,
    /// Serious: alerted at once.
    High,
    /// Critical: alerted at once, red alert level.
    Critical,
}

impl Severity {
    /// All severities, in a fixed order.
    pub const ALL: [Severity; 4] = [
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ];

    /// The wire name.
    pub const fn name(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// Where an incident happened.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IncidentLocation<'a> {
    /// Road id.
    #[serde(borrow)]
    pub road_id: Cow<'a, str>,
    /// Road name.
    #[serde(borrow)]
    pub road_name: Cow<'a, str>,
    /// Zone id.
    #[serde(borrow)]
    pub zone_id: Cow<'a, str>,
    /// Latitude in degrees.
    pub lat: f64,
    /// Longitude in degrees.
    pub lon: f64,
}

/// A message of the `incidents` topic.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Incident<'a> {
    /// Incident id; also the Kafka key.
    #[serde(borrow)]
    pub incident_id: Cow<'a, str>,
    /// Event time.
    pub timestamp: Timestamp,
    /// Kind of incident.
    #[serde(rename = "type")]
    pub kind: IncidentType,
    /// Severity.
    pub severity: Severity,
    /// Where it happened.
    #[serde(borrow)]
    pub location: IncidentLocation<'a>,
    /// Free text.
    #[serde(borrow)]
    pub description: Cow<'a, str>,
    /// Expected duration, minutes.
    pub estimated_duration_min: i64,
    /// Lanes affected.
    pub affected_lanes: i64,
    /// `active`, `resolved`, ...
    #[serde(borrow)]
    pub status: Cow<'a, str>,
}

/// A message of any topic. Its serde form (with the topic as the variant) is the compact
/// binary one of the checked records stage 1 forwards (docs/scale-out.md), not the JSON of the
/// topics: that is each variant's own.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Message<'a> {
    /// `traffic-sensors`.
    Traffic(#[serde(borrow)] TrafficReading<'a>),
    /// `public-transport`.
    Transport(#[serde(borrow)] TransportReading<'a>),
    /// `parking`.
    Parking(#[serde(borrow)] ParkingReading<'a>),
    /// `incidents`.
    Incident(#[serde(borrow)] Incident<'a>),
}

impl<'a> Message<'a> {
    /// Decodes a message of `topic` from JSON bytes, borrowing strings from them where possible,
    /// with the fast decoder of [`crate::json`].
    pub fn decode(topic: Topic, bytes: &'a [u8]) -> Result<Self, crate::json::DecodeError> {
        crate::json::decode(topic, bytes)
    }

    /// Decodes with serde_json: the reference the fast decoder is tested against.
    pub fn decode_serde(topic: Topic, bytes: &'a [u8]) -> Result<Self, serde_json::Error> {
        Ok(match topic {
            Topic::Traffic => Message::Traffic(serde_json::from_slice(bytes)?),
            Topic::Transport => Message::Transport(serde_json::from_slice(bytes)?),
            Topic::Parking => Message::Parking(serde_json::from_slice(bytes)?),
            Topic::Incidents => Message::Incident(serde_json::from_slice(bytes)?),
        })
    }

    /// The topic the message belongs to.
    pub fn topic(&self) -> Topic {
        match self {
            Message::Traffic(_) => Topic::Traffic,
            Message::Transport(_) => Topic::Transport,
            Message::Parking(_) => Topic::Parking,
            Message::Incident(_) => Topic::Incidents,
        }
    }

    /// The entity id, used as the Kafka key.
    pub fn key(&self) -> &str {
        match self {
            Message::Traffic(m) => &m.sensor_id,
            Message::Transport(m) => &m.vehicle_id,
            Message::Parking(m) => &m.parking_id,
            Message::Incident(m) => &m.incident_id,
        }
    }

    /// The event timestamp.
    pub fn timestamp(&self) -> Timestamp {
        match self {
            Message::Traffic(m) => m.timestamp,
            Message::Transport(m) => m.timestamp,
            Message::Parking(m) => m.timestamp,
            Message::Incident(m) => m.timestamp,
        }
    }

    /// Appends the JSON encoding of the variant's struct to `out`: exactly the bytes
    /// `serde_json::to_writer` writes for it, from a hand-written writer that costs a fraction of
    /// serde_json's (`model/json_write.rs` says why, and how the two are held equal).
    pub fn write_json(&self, out: &mut Vec<u8>) {
        json_write::write_message(self, out);
    }

    /// The reference [`Self::write_json`] is held to: `serde_json::to_writer` of the variant's
    /// struct (the tests and `benches/generator.rs` compare the two).
    pub fn write_json_serde(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        match self {
            Message::Traffic(m) => serde_json::to_writer(out, m),
            Message::Transport(m) => serde_json::to_writer(out, m),
            Message::Parking(m) => serde_json::to_writer(out, m),
            Message::Incident(m) => serde_json::to_writer(out, m),
        }
    }

    /// The message as a JSON value tree.
    pub fn to_json_value(&self) -> serde_json::Value {
        serde_json::from_slice(&self.to_json()).unwrap_or(serde_json::Value::Null)
    }

    /// The JSON encoding.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(384);
        self.write_json(&mut out);
        out
    }

    /// A copy that owns its strings.
    pub fn into_owned(self) -> Message<'static> {
        fn o(c: Cow<'_, str>) -> Cow<'static, str> {
            Cow::Owned(c.into_owned())
        }
        match self {
            Message::Traffic(m) => Message::Traffic(TrafficReading {
                sensor_id: o(m.sensor_id),
                road_id: o(m.road_id),
                road_name: o(m.road_name),
                zone_id: o(m.zone_id),
                timestamp: m.timestamp,
                location: m.location,
                speed_kmh: m.speed_kmh,
                vehicle_flow: m.vehicle_flow,
                occupancy_percent: m.occupancy_percent,
                congestion_level: m.congestion_level,
                data_quality: m.data_quality,
            }),
            Message::Transport(m) => Message::Transport(TransportReading {
                vehicle_id: o(m.vehicle_id),
                line_id: o(m.line_id),
                line_number: o(m.line_number),
                current_stop: o(m.current_stop),
                next_stop: o(m.next_stop),
                timestamp: m.timestamp,
                direction: m.direction,
                location: m.location,
                speed_kmh: m.speed_kmh,
                passenger_count: m.passenger_count,
                capacity: m.capacity,
                occupancy_rate: m.occupancy_rate,
                delay_minutes: m.delay_minutes,
                status: m.status,
            }),
            Message::Parking(m) => Message::Parking(ParkingReading {
                parking_id: o(m.parking_id),
                name: o(m.name),
                zone_id: o(m.zone_id),
                kind: o(m.kind),
                status: o(m.status),
                timestamp: m.timestamp,
                location: m.location,
                total_spaces: m.total_spaces,
                occupied_spaces: m.occupied_spaces,
                available_spaces: m.available_spaces,
                occupancy_rate: m.occupancy_rate,
                hourly_rate: m.hourly_rate,
            }),
            Message::Incident(m) => Message::Incident(Incident {
                incident_id: o(m.incident_id),
                description: o(m.description),
                status: o(m.status),
                location: IncidentLocation {
                    road_id: o(m.location.road_id),
                    road_name: o(m.location.road_name),
                    zone_id: o(m.location.zone_id),
                    lat: m.location.lat,
                    lon: m.location.lon,
                },
                timestamp: m.timestamp,
                kind: m.kind,
                severity: m.severity,
                estimated_duration_min: m.estimated_duration_min,
                affected_lanes: m.affected_lanes,
            }),
        }
    }
}

impl CongestionLevel {
    /// The name serde writes for this value on the wire (and the databases store).
    pub const fn wire_name(self) -> &'static str {
        match self {
            CongestionLevel::Low => "low",
            CongestionLevel::Medium => "medium",
            CongestionLevel::High => "high",
        }
    }
}

impl DataQuality {
    /// The name serde writes for this value on the wire (and the databases store).
    pub const fn wire_name(self) -> &'static str {
        match self {
            DataQuality::Good => "good",
            DataQuality::Degraded => "degraded",
        }
    }
}

impl Direction {
    /// The name serde writes for this value on the wire (and the databases store).
    pub const fn wire_name(self) -> &'static str {
        match self {
            Direction::Outbound => "outbound",
            Direction::Inbound => "inbound",
        }
    }
}

impl TransportStatus {
    /// The name serde writes for this value on the wire (and the databases store).
    pub const fn wire_name(self) -> &'static str {
        match self {
            TransportStatus::OnTime => "on_time",
            TransportStatus::Delayed => "delayed",
        }
    }
}

impl IncidentType {
    /// The name serde writes for this value on the wire (and the databases store).
    pub const fn wire_name(self) -> &'static str {
        match self {
            IncidentType::Accident => "accident",
            IncidentType::Breakdown => "breakdown",
            IncidentType::Roadwork => "roadwork",
            IncidentType::Event => "event",
            IncidentType::Demonstration => "demonstration",
            IncidentType::Flooding => "flooding",
            IncidentType::PowerOutage => "power_outage",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn traffic() -> Message<'static> {
        Message::Traffic(TrafficReading {
            sensor_id: "TS-001".into(),
            timestamp: Timestamp::Utc(1_795_507_205_000),
            road_id: "R1".into(),
            road_name: "Gran Via".into(),
            zone_id: "Z1".into(),
            location: GeoPoint {
                lat: 40.42,
                lon: -3.70,
            },
            speed_kmh: 42.5,
            vehicle_flow: 17,
            occupancy_percent: 31.0,
            congestion_level: CongestionLevel::Medium,
            data_quality: DataQuality::Good,
        })
    }

    // Proves the wire names are exactly SPEC §1's and that a message round-trips.
    #[test]
    fn traffic_wire_format() {
        let m = traffic();
        let json = String::from_utf8(m.to_json()).unwrap();
        assert_eq!(
            json,
            r#"{"sensor_id":"TS-001","timestamp":"2026-11-24T08:00:05Z","road_id":"R1","road_name":"Gran Via","zone_id":"Z1","location":{"lat":40.42,"lon":-3.7},"speed_kmh":42.5,"vehicle_flow":17,"occupancy_percent":31.0,"congestion_level":"medium","data_quality":"good"}"#
        );
        assert_eq!(Message::decode(Topic::Traffic, json.as_bytes()).unwrap(), m);
    }

    // Proves the original's naive timestamps and other offsets are read.
    #[test]
    fn reads_naive_and_offset_timestamps() {
        let json = r#"{"incident_id":"INC-1","timestamp":"2026-11-24T09:00:05+01:00","type":"power_outage","severity":"critical","location":{"road_id":"R1","road_name":"A","zone_id":"Z1","lat":1.0,"lon":2.0},"description":"x","estimated_duration_min":30,"affected_lanes":2,"status":"active"}"#;
        let m = Message::decode(Topic::Incidents, json.as_bytes()).unwrap();
        assert_eq!(m.timestamp(), Timestamp::Utc(1_795_507_205_000));
        assert_eq!(m.key(), "INC-1");
        let naive = json.replace("2026-11-24T09:00:05+01:00", "2026-11-24T08:00:05.000001");
        let m = Message::decode(Topic::Incidents, naive.as_bytes()).unwrap();
        assert_eq!(m.timestamp(), Timestamp::Naive(1_795_507_205_000));
    }

    // Proves topic names parse back and an unknown one is named in the error.
    #[test]
    fn topic_names() {
        for t in Topic::ALL {
            assert_eq!(t.name().parse::<Topic>().unwrap(), t);
        }
        assert!(
            "cars"
                .parse::<Topic>()
                .unwrap_err()
                .to_string()
                .contains("`cars`")
        );
    }
}
