//! Decoding and validation: JSON bytes of a topic -> a typed message with a resolved event time,
//! or the reason it must be dead-lettered. Never panics on any input.

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
    };
    (reason, err.to_string())
}

/// Resolves the event time and checks it is not too far ahead of the Kafka timestamp.
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
                t - kafka_ts,
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

fn check_non_negative(field: &str, v: i64) -> Result<(), Rejection> {
    if v < 0 {
        return impossible(format!("{field} = {v} is negative"));
    }
    Ok(())
}

/// Physical plausibility of a traffic reading.
pub(crate) fn validate_traffic(m: &TrafficReading<'_>, c: &EngineConfig) -> Result<(), Rejection> {
    check_speed(m.speed_kmh, c.speed_limit_kmh)?;
    check_pct("occupancy_percent", m.occupancy_percent)?;
    check_non_negative("vehicle_flow", m.vehicle_flow)
}

/// Physical plausibility of a transport report.
pub(crate) fn validate_transport(
    m: &TransportReading<'_>,
    c: &EngineConfig,
) -> Result<(), Rejection> {
    if m.capacity <= 0 {
        return impossible(format!("capacity = {} must be positive", m.capacity));
    }
    check_speed(m.speed_kmh, c.speed_limit_kmh)?;
    check_non_negative("passenger_count", m.passenger_count)?;
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
pub(crate) fn validate_parking(m: &ParkingReading<'_>) -> Result<(), Rejection> {
    if m.total_spaces <= 0 {
        return impossible(format!(
            "total_spaces = {} must be positive",
            m.total_spaces
        ));
    }
    check_non_negative("occupied_spaces", m.occupied_spaces)?;
    check_non_negative("available_spaces", m.available_spaces)?;
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
pub(crate) fn validate_incident(m: &crate::model::Incident<'_>) -> Result<(), Rejection> {
    check_non_negative("estimated_duration_min", m.estimated_duration_min)?;
    check_non_negative("affected_lanes", m.affected_lanes)
}

/// Whether a traffic reading's own quality flag is good.
pub(crate) fn quality_name(q: DataQuality) -> &'static str {
    match q {
        DataQuality::Good => "good",
        DataQuality::Degraded => "degraded",
    }
}
