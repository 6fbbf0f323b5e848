//! Decoding and validation: JSON bytes of a topic -> a typed message with a resolved event time,
//! or the reason it must be dead-lettered. Never panics on any input.

use std::borrow::Cow;

use crate::json::DecodeError;
use crate::model::{DataQuality, Message, ParkingReading, TrafficReading, TransportReading};
use crate::time::Millis;

use super::config::EngineConfig;
use super::rows::DeadLetterReason;

/// A rejected record: the reason and a sentence of detail.
pub(crate) type Rejection = (DeadLetterReason, String);

/// Classifies a decoding error into a dead-letter reason.
pub(crate) fn classify(err: &DecodeError) -> Rejection {
    let reason = match err {
        DecodeError::Malformed(_) => DeadLetterReason::MalformedJson,
        DecodeError::MissingField(_) => DeadLetterReason::MissingField,
        DecodeError::WrongType(_) => DeadLetterReason::WrongType,
        DecodeError::InvalidTimestamp(_) => DeadLetterReason::InvalidTimestamp,
        DecodeError::TooDeep { .. } => DeadLetterReason::InputLimit,
    };
    (reason, err.to_string())
}

/// Refuses a message larger than `max_message_bytes`; one comparison, before any parsing.
#[inline(always)] // Called by `Engine::ingest` and `Engine::check`.
pub(crate) fn check_size(value: &[u8], config: &EngineConfig) -> Result<(), Rejection> {
    if value.len() <= config.max_message_bytes {
        return Ok(());
    }
    Err((
        DeadLetterReason::InputLimit,
        format!(
            "the message is {} bytes, above max_message_bytes = {}; the dead letter keeps its \
             first {} bytes, the whole record stays at its source position",
            value.len(),
            config.max_message_bytes,
            config.max_message_bytes
        ),
    ))
}

/// A string field longer than `max` bytes, or holding a NUL (which no id or name has, and
/// which PostgreSQL cannot store in text), is refused. A string borrowed from the input had no
/// escapes, so it cannot hold a control character: only `unescaped` copies are scanned.
#[inline]
fn check_string(field: &str, value: &str, unescaped: bool, max: usize) -> Result<(), Rejection> {
    if value.len() <= max && !(unescaped && value.contains('\0')) {
        return Ok(());
    }
    refuse_string(field, value, max)
}

/// Why [`check_string`] refused `value`: out of line, as no record of a healthy city gets here.
#[cold]
#[inline(never)]
fn refuse_string(field: &str, value: &str, max: usize) -> Result<(), Rejection> {
    if value.len() > max {
        return Err((
            DeadLetterReason::InputLimit,
            format!(
                "`{field}` is {} bytes long, above max_string_bytes = {max}",
                value.len()
            ),
        ));
    }
    Err((
        DeadLetterReason::InputLimit,
        format!("`{field}` holds a NUL character"),
    ))
}

/// Checks every string field of a message against [`check_string`].
#[inline(always)] // Called by `Engine::ingest` and `Engine::check`.
pub(crate) fn check_strings(msg: &Message<'_>, config: &EngineConfig) -> Result<(), Rejection> {
    let max = config.max_string_bytes;
    let check = |field: &str, value: &Cow<'_, str>| {
        check_string(field, value, matches!(value, Cow::Owned(_)), max)
    };
    match msg {
        Message::Traffic(m) => {
            check("sensor_id", &m.sensor_id)?;
            check("road_id", &m.road_id)?;
            check("road_name", &m.road_name)?;
            check("zone_id", &m.zone_id)?;
        }
        Message::Transport(m) => {
            check("vehicle_id", &m.vehicle_id)?;
            check("line_id", &m.line_id)?;
            check("line_number", &m.line_number)?;
            check("current_stop", &m.current_stop)?;
            check("next_stop", &m.next_stop)?;
        }
        Message::Parking(m) => {
            check("parking_id", &m.parking_id)?;
            check("name", &m.name)?;
            check("zone_id", &m.zone_id)?;
            check("type", &m.kind)?;
            check("status", &m.status)?;
        }
        Message::Incident(m) => {
            check("incident_id", &m.incident_id)?;
            check("location.road_id", &m.location.road_id)?;
            check("location.road_name", &m.location.road_name)?;
            check("location.zone_id", &m.location.zone_id)?;
            check("description", &m.description)?;
            check("status", &m.status)?;
        }
    }
    Ok(())
}

/// Resolves the event time and checks it is not too far ahead of the Kafka timestamp.
#[inline(always)] // Called by `Engine::ingest` and `Engine::check`.
pub(crate) fn event_time(
    msg: &Message<'_>,
    zone: chrono_tz::Tz,
    kafka_ts: Millis,
    config: &EngineConfig,
) -> Result<Millis, Rejection> {
    let t = msg
        .timestamp()
        .resolve(zone)
        .map_err(|e| (DeadLetterReason::InvalidTimestamp, e.to_string()))?;
    if t > kafka_ts.saturating_add(config.max_future_skew_ms) {
        return Err((
            DeadLetterReason::FutureTimestamp,
            format!(
                "event time {} is {} ms ahead of the record's Kafka timestamp {} (limit {} ms)",
                crate::time::format_rfc3339(t),
                // A Kafka timestamp is whatever the producer set, i64::MIN included.
                t.saturating_sub(kafka_ts),
                crate::time::format_rfc3339(kafka_ts),
                config.max_future_skew_ms
            ),
        ));
    }
    Ok(t)
}

fn impossible(detail: String) -> Result<(), Rejection> {
    Err((DeadLetterReason::ImpossibleValue, detail))
}

fn check_pct(field: &str, v: f64) -> Result<(), Rejection> {
    if !(0.0..=100.0).contains(&v) {
        return impossible(format!("{field} = {v} is outside 0-100"));
    }
    Ok(())
}

fn check_speed(v: f64, limit: f64) -> Result<(), Rejection> {
    if v < 0.0 {
        return impossible(format!("speed_kmh = {v} is negative"));
    }
    if v > limit {
        return impossible(format!(
            "speed_kmh = {v} is above the limit of {limit} km/h"
        ));
    }
    Ok(())
}

/// A count must be between 0 and the configured `count_limit`; the upper bound also keeps
/// every window sum of counts far from overflowing.
fn check_count(field: &str, v: i64, c: &EngineConfig) -> Result<(), Rejection> {
    if v < 0 {
        return impossible(format!("{field} = {v} is negative"));
    }
    if v > c.count_limit {
        return impossible(format!(
            "{field} = {v} is above count_limit = {}",
            c.count_limit
        ));
    }
    Ok(())
}

/// Physical plausibility of a traffic reading.
#[inline(always)] // Called by `Engine::ingest` and `Engine::check`.
pub(crate) fn validate_traffic(m: &TrafficReading<'_>, c: &EngineConfig) -> Result<(), Rejection> {
    check_speed(m.speed_kmh, c.speed_limit_kmh)?;
    check_pct("occupancy_percent", m.occupancy_percent)?;
    check_count("vehicle_flow", m.vehicle_flow, c)
}

/// Physical plausibility of a transport report.
#[inline(always)] // Called by `Engine::ingest` and `Engine::check`.
pub(crate) fn validate_transport(
    m: &TransportReading<'_>,
    c: &EngineConfig,
) -> Result<(), Rejection> {
    if m.capacity <= 0 {
        return impossible(format!("capacity = {} must be positive", m.capacity));
    }
    check_count("capacity", m.capacity, c)?;
    check_speed(m.speed_kmh, c.speed_limit_kmh)?;
    check_count("passenger_count", m.passenger_count, c)?;
    check_pct("occupancy_rate", m.occupancy_rate)?;
    if !(-1440.0..=1440.0).contains(&m.delay_minutes) {
        return impossible(format!(
            "delay_minutes = {} is beyond a day",
            m.delay_minutes
        ));
    }
    Ok(())
}

/// Physical plausibility of a parking reading.
#[inline(always)] // Called by `Engine::ingest` and `Engine::check`.
pub(crate) fn validate_parking(m: &ParkingReading<'_>, c: &EngineConfig) -> Result<(), Rejection> {
    if m.total_spaces <= 0 {
        return impossible(format!(
            "total_spaces = {} must be positive",
            m.total_spaces
        ));
    }
    check_count("total_spaces", m.total_spaces, c)?;
    check_count("occupied_spaces", m.occupied_spaces, c)?;
    check_count("available_spaces", m.available_spaces, c)?;
    if m.occupied_spaces > m.total_spaces {
        return impossible(format!(
            "occupied_spaces = {} exceeds total_spaces = {}",
            m.occupied_spaces, m.total_spaces
        ));
    }
    check_pct("occupancy_rate", m.occupancy_rate)?;
    if m.hourly_rate < 0.0 {
        return impossible(format!("hourly_rate = {} is negative", m.hourly_rate));
    }
    Ok(())
}

/// Plausibility of an incident.
#[inline(always)] // Called by `Engine::ingest` and `Engine::check`.
pub(crate) fn validate_incident(
    m: &crate::model::Incident<'_>,
    c: &EngineConfig,
) -> Result<(), Rejection> {
    check_count("estimated_duration_min", m.estimated_duration_min, c)?;
    check_count("affected_lanes", m.affected_lanes, c)
}

/// Whether a traffic reading's own quality flag is good.
pub(crate) fn quality_name(q: DataQuality) -> &'static str {
    match q {
        DataQuality::Good => "good",
        DataQuality::Degraded => "degraded",
    }
}
