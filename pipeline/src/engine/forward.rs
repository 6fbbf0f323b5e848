//! The checked record stage 1 forwards to stage 2 (docs/scale-out.md): a record's original
//! value and what [`Engine::check`](super::Engine::check) found of it, so that stage 2 applies it
//! to the engine's state without decoding JSON again. The record's source topic, partition,
//! offset, key and Kafka timestamp travel beside it (as the internal record's own key, timestamp
//! and headers), not in it.
//!
//! The codec is written by hand for stage 2's sake: reading a checked record is most of what
//! stage 2 does besides applying it. postcard read it in about 1,960 instructions a record of
//! the thesis city (timestamps as text, parsed again; every string checked as UTF-8 again); this
//! reads it in a few hundred (`cargo bench --bench engine`, `apply_checked`; figures in
//! BENCHMARKS.md). What makes it cheap:
//! - a fixed field order per message type, numbers in fixed width, enums as one byte, instants
//!   as integers;
//! - a string the JSON decoder borrowed from the value (one without escapes: nearly all) is
//!   written as where it lies in the value, not copied: the value is checked as UTF-8 once, and
//!   each such string is a slice of it, taken with the `str` bounds checks;
//! - other strings (unescaped ones, a dead letter's detail) are written out in place.
//!
//! Layout, little-endian (version [`FORMAT`]):
//!
//! ```text
//! u8 FORMAT | u64 configuration fingerprint | u32 value length | value | u8 kind
//!   kind 0 valid:      i64 event time | u8 topic | message fields
//!   kind 1 impossible: i64 event time | u8 topic | message fields | u8 reason | string detail
//!   kind 2 invalid:    u8 reason | string detail
//! string:    u32 n; n < 2^31: n bytes of text follow; else u32 start: the text is the value's
//!            bytes start..start + (n - 2^31)
//! timestamp: u8 0 (an instant) or 1 (naive) | i64 milliseconds
//! ```
//!
//! Bytes that are not a checked record of this format (truncated, another version, out of
//! range) are an error, never a panic: stage 2 dead-letters them. The fingerprint is of the
//! configuration stage 1 checked with; stage 2 checks a record again when it is not its own
//! ([`Engine::ingest_checked`](super::Engine::ingest_checked)).

use std::borrow::Cow;

use super::{Checked, DeadLetterReason, reason_index};
use crate::model::{
    CongestionLevel, DataQuality, Direction, GeoPoint, Incident, IncidentLocation, IncidentType,
    Message, ParkingReading, Severity, TrafficReading, TransportReading, TransportStatus,
};
use crate::time::Timestamp;

/// The format's version, its first byte. Stage 1 and stage 2 must run the same one: a checked
/// record of another version is refused as one stage 1 did not write.
pub const FORMAT: u8 = 1;

/// A string's length word with this bit set says the text lies in the value.
const IN_VALUE: u32 = 1 << 31;

/// Why bytes are not a checked record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ForwardError(&'static str);

/// Appends the checked record of a record whose value is `value` to `buf`: what `check` found
/// with the configuration whose fingerprint is `config_id`.
pub fn encode(value: &[u8], checked: &Checked<'_>, config_id: u64, buf: &mut Vec<u8>) {
    let mut w = Writer { buf, value };
    w.buf.push(FORMAT);
    w.buf.extend_from_slice(&config_id.to_le_bytes());
    w.u32(value.len() as u32);
    w.buf.extend_from_slice(value);
    match checked {
        Checked::Valid(msg, t) => {
            w.buf.push(0);
            w.message(msg, *t);
        }
        Checked::Impossible(msg, t, reason, detail) => {
            w.buf.push(1);
            w.message(msg, *t);
            w.buf.push(reason_index(*reason) as u8);
            w.text(detail);
        }
        Checked::Invalid(reason, detail) => {
            w.buf.push(2);
            w.buf.push(reason_index(*reason) as u8);
            w.text(detail);
        }
    }
}

/// The fingerprint of the configuration stage 1 checked with, the original value and what
/// `check` found of it, from an encoded checked record.
pub fn decode(bytes: &[u8]) -> Result<(u64, &[u8], Checked<'_>), ForwardError> {
    let mut r = Reader {
        b: bytes,
        i: 0,
        value: &[],
        value_text: None,
    };
    if r.u8()? != FORMAT {
        return Err(ForwardError("not this format's version"));
    }
    let config_id = r.array().map(u64::from_le_bytes)?;
    let n = r.u32()? as usize;
    r.value = r.take(n)?;
    let checked = match r.u8()? {
        0 => {
            let (msg, t) = r.message()?;
            Checked::Valid(msg, t)
        }
        1 => {
            let (msg, t) = r.message()?;
            let reason = r.reason()?;
            Checked::Impossible(msg, t, reason, r.str()?.into_owned())
        }
        2 => {
            let reason = r.reason()?;
            Checked::Invalid(reason, r.str()?.into_owned())
        }
        _ => return Err(ForwardError("unknown kind of checked record")),
    };
    if r.i != bytes.len() {
        return Err(ForwardError("bytes after the checked record"));
    }
    Ok((config_id, r.value, checked))
}

struct Writer<'b, 'v> {
    buf: &'b mut Vec<u8>,
    value: &'v [u8],
}

impl Writer<'_, '_> {
    fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    fn i64(&mut self, v: i64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    fn f64(&mut self, v: f64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// Text written out in place.
    fn text(&mut self, s: &str) {
        debug_assert!(s.len() < IN_VALUE as usize, "a string shorter than 2 GiB");
        self.u32(s.len() as u32);
        self.buf.extend_from_slice(s.as_bytes());
    }

    /// A string: where it lies in the value when it was borrowed from it, else its text.
    fn str(&mut self, s: &str) {
        let start = (s.as_ptr() as usize).wrapping_sub(self.value.as_ptr() as usize);
        if start <= self.value.len() && s.len() <= self.value.len() - start {
            self.u32(IN_VALUE | s.len() as u32);
            self.u32(start as u32);
        } else {
            self.text(s);
        }
    }

    fn timestamp(&mut self, t: Timestamp) {
        let (kind, ms) = match t {
            Timestamp::Utc(ms) => (0, ms),
            Timestamp::Naive(ms) => (1, ms),
        };
        self.buf.push(kind);
        self.i64(ms);
    }

    fn geo(&mut self, g: &GeoPoint) {
        self.f64(g.lat);
        self.f64(g.lon);
    }

    fn message(&mut self, msg: &Message<'_>, t: i64) {
        self.i64(t);
        match msg {
            Message::Traffic(m) => {
                self.buf.push(0);
                self.str(&m.sensor_id);
                self.timestamp(m.timestamp);
                self.str(&m.road_id);
                self.str(&m.road_name);
                self.str(&m.zone_id);
                self.geo(&m.location);
                self.f64(m.speed_kmh);
                self.i64(m.vehicle_flow);
                self.f64(m.occupancy_percent);
                self.buf.push(m.congestion_level as u8);
                self.buf.push(m.data_quality as u8);
            }
            Message::Transport(m) => {
                self.buf.push(1);
                self.str(&m.vehicle_id);
                self.timestamp(m.timestamp);
                self.str(&m.line_id);
                self.str(&m.line_number);
                self.str(&m.current_stop);
                self.str(&m.next_stop);
                self.buf.push(m.direction as u8);
                self.geo(&m.location);
                self.f64(m.speed_kmh);
                self.i64(m.passenger_count);
                self.i64(m.capacity);
                self.f64(m.occupancy_rate);
                self.f64(m.delay_minutes);
                self.buf.push(m.status as u8);
            }
            Message::Parking(m) => {
                self.buf.push(2);
                self.str(&m.parking_id);
                self.timestamp(m.timestamp);
                self.str(&m.name);
                self.str(&m.zone_id);
                self.str(&m.kind);
                self.geo(&m.location);
                self.i64(m.total_spaces);
                self.i64(m.occupied_spaces);
                self.i64(m.available_spaces);
                self.f64(m.occupancy_rate);
                self.f64(m.hourly_rate);
                self.str(&m.status);
            }
            Message::Incident(m) => {
                self.buf.push(3);
                self.str(&m.incident_id);
                self.timestamp(m.timestamp);
                self.buf.push(m.kind as u8);
                self.buf.push(m.severity as u8);
                self.str(&m.location.road_id);
                self.str(&m.location.road_name);
                self.str(&m.location.zone_id);
                self.f64(m.location.lat);
                self.f64(m.location.lon);
                self.str(&m.description);
                self.i64(m.estimated_duration_min);
                self.i64(m.affected_lanes);
                self.str(&m.status);
            }
        }
    }
}

struct Reader<'a> {
    b: &'a [u8],
    i: usize,
    value: &'a [u8],
    /// The value as text, checked once when a string first refers to it.
    value_text: Option<&'a str>,
}

const TRUNCATED: ForwardError = ForwardError("truncated");

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ForwardError> {
        let s = self.b.get(self.i..self.i.checked_add(n).ok_or(TRUNCATED)?);
        let s = s.ok_or(TRUNCATED)?;
        self.i += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], ForwardError> {
        let s = self.b.get(self.i..self.i + N).ok_or(TRUNCATED)?;
        self.i += N;
        Ok(s.try_into().expect("N bytes"))
    }

    fn u8(&mut self) -> Result<u8, ForwardError> {
        let v = *self.b.get(self.i).ok_or(TRUNCATED)?;
        self.i += 1;
        Ok(v)
    }

    fn u32(&mut self) -> Result<u32, ForwardError> {
        self.array().map(u32::from_le_bytes)
    }

    fn i64(&mut self) -> Result<i64, ForwardError> {
        self.array().map(i64::from_le_bytes)
    }

    fn f64(&mut self) -> Result<f64, ForwardError> {
        self.array().map(f64::from_le_bytes)
    }

    fn str(&mut self) -> Result<Cow<'a, str>, ForwardError> {
        let n = self.u32()?;
        if n & IN_VALUE == 0 {
            let text = std::str::from_utf8(self.take(n as usize)?)
                .map_err(|_| ForwardError("a string that is not UTF-8"))?;
            return Ok(Cow::Borrowed(text));
        }
        let len = (n & !IN_VALUE) as usize;
        let start = self.u32()? as usize;
        let value = match self.value_text {
            Some(v) => v,
            None => {
                let v = simdutf8::basic::from_utf8(self.value)
                    .map_err(|_| ForwardError("a value that is not UTF-8"))?;
                self.value_text = Some(v);
                v
            }
        };
        start
            .checked_add(len)
            .and_then(|end| value.get(start..end))
            .map(Cow::Borrowed)
            .ok_or(ForwardError("a string outside the value"))
    }

    fn timestamp(&mut self) -> Result<Timestamp, ForwardError> {
        match self.u8()? {
            0 => Ok(Timestamp::Utc(self.i64()?)),
            1 => Ok(Timestamp::Naive(self.i64()?)),
            _ => Err(ForwardError("unknown kind of timestamp")),
        }
    }

    fn geo(&mut self) -> Result<GeoPoint, ForwardError> {
        Ok(GeoPoint {
            lat: self.f64()?,
            lon: self.f64()?,
        })
    }

    fn variant<T: Copy>(&mut self, all: &[T]) -> Result<T, ForwardError> {
        let i = self.u8()? as usize;
        all.get(i)
            .copied()
            .ok_or(ForwardError("unknown enum variant"))
    }

    fn reason(&mut self) -> Result<DeadLetterReason, ForwardError> {
        self.variant(&DeadLetterReason::ALL)
    }

    fn message(&mut self) -> Result<(Message<'a>, i64), ForwardError> {
        use CongestionLevel as C;
        let t = self.i64()?;
        let msg = match self.u8()? {
            0 => Message::Traffic(TrafficReading {
                sensor_id: self.str()?,
                timestamp: self.timestamp()?,
                road_id: self.str()?,
                road_name: self.str()?,
                zone_id: self.str()?,
                location: self.geo()?,
                speed_kmh: self.f64()?,
                vehicle_flow: self.i64()?,
                occupancy_percent: self.f64()?,
                congestion_level: self.variant(&[C::Low, C::Medium, C::High])?,
                data_quality: self.variant(&[DataQuality::Good, DataQuality::Degraded])?,
            }),
            1 => Message::Transport(TransportReading {
                vehicle_id: self.str()?,
                timestamp: self.timestamp()?,
                line_id: self.str()?,
                line_number: self.str()?,
                current_stop: self.str()?,
                next_stop: self.str()?,
                direction: self.variant(&[Direction::Outbound, Direction::Inbound])?,
                location: self.geo()?,
                speed_kmh: self.f64()?,
                passenger_count: self.i64()?,
                capacity: self.i64()?,
                occupancy_rate: self.f64()?,
                delay_minutes: self.f64()?,
                status: self.variant(&[TransportStatus::OnTime, TransportStatus::Delayed])?,
            }),
            2 => Message::Parking(ParkingReading {
                parking_id: self.str()?,
                timestamp: self.timestamp()?,
                name: self.str()?,
                zone_id: self.str()?,
                kind: self.str()?,
                location: self.geo()?,
                total_spaces: self.i64()?,
                occupied_spaces: self.i64()?,
                available_spaces: self.i64()?,
                occupancy_rate: self.f64()?,
                hourly_rate: self.f64()?,
                status: self.str()?,
            }),
            3 => Message::Incident(Incident {
                incident_id: self.str()?,
                timestamp: self.timestamp()?,
                kind: self.variant(&IncidentType::ALL)?,
                severity: self.variant(&Severity::ALL)?,
                location: IncidentLocation {
                    road_id: self.str()?,
                    road_name: self.str()?,
                    zone_id: self.str()?,
                    lat: self.f64()?,
                    lon: self.f64()?,
                },
                description: self.str()?,
                estimated_duration_min: self.i64()?,
                affected_lanes: self.i64()?,
                status: self.str()?,
            }),
            _ => return Err(ForwardError("unknown message type")),
        };
        Ok((msg, t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Engine, EngineConfig, RawRecord, SourcePosition};
    use crate::model::Topic;

    fn record(topic: Topic, value: &[u8]) -> RawRecord<'_> {
        RawRecord {
            topic,
            key: b"k",
            value,
            kafka_timestamp_ms: 1_764_000_000_000,
            position: SourcePosition {
                partition: 0,
                offset: 7,
            },
        }
    }

    fn samples() -> Vec<(Topic, &'static [u8])> {
        vec![
            // Valid, with an escaped string (written out) and a naive timestamp.
            (
                Topic::Traffic,
                br#"{"sensor_id":"S-\u0031","timestamp":"2025-11-24T16:00:00","road_id":"R1","road_name":"Main \"St\"","zone_id":"zone-1","location":{"lat":-0.0,"lon":1.5},"speed_kmh":42.5,"vehicle_flow":12,"occupancy_percent":30.0,"congestion_level":"high","data_quality":"degraded"}"#,
            ),
            // Impossible: a negative speed.
            (
                Topic::Traffic,
                br#"{"sensor_id":"S-1","timestamp":"2025-11-24T16:00:00Z","road_id":"R1","road_name":"Main","zone_id":"zone-1","location":{"lat":0.0,"lon":1.5},"speed_kmh":-5.0,"vehicle_flow":12,"occupancy_percent":30.0,"congestion_level":"low","data_quality":"good"}"#,
            ),
            // Not JSON.
            (Topic::Traffic, b"{not json"),
            (
                Topic::Transport,
                br#"{"vehicle_id":"BUS-1","timestamp":"2025-11-24T16:00:00+01:00","line_id":"L1","line_number":"27","current_stop":"Sol","next_stop":"Callao \u00e9","direction":"inbound","location":{"lat":40.4,"lon":-3.7},"speed_kmh":31.0,"passenger_count":40,"capacity":80,"occupancy_rate":50.0,"delay_minutes":2.5,"status":"delayed"}"#,
            ),
            (
                Topic::Parking,
                br#"{"parking_id":"P-1","timestamp":"2025-11-24T16:00:00Z","name":"Plaza","zone_id":"zone-2","type":"underground","location":{"lat":40.4,"lon":-3.7},"total_spaces":100,"occupied_spaces":40,"available_spaces":60,"occupancy_rate":40.0,"hourly_rate":2.5,"status":"open"}"#,
            ),
            (
                Topic::Incidents,
                br#"{"incident_id":"INC-1","timestamp":"2025-11-24T16:00:00Z","type":"power_outage","severity":"critical","location":{"road_id":"R1","road_name":"Main","zone_id":"zone-1","lat":40.4,"lon":-3.7},"description":"Lights out","estimated_duration_min":30,"affected_lanes":2,"status":"active"}"#,
            ),
        ]
    }

    // Proves a checked record reads back as it was written, whatever `check` found and for
    // every message type: valid (strings from the value and written out, both kinds of
    // timestamp), impossible, not JSON; and that bytes stage 1 never wrote (cut short, another
    // version, a string pointing out of the value, trailing bytes) are an error, not a record.
    #[test]
    fn a_checked_record_reads_back_as_written() {
        let engine = Engine::new(EngineConfig::default()).unwrap();
        let mut kinds = Vec::new();
        for (topic, value) in samples() {
            let checked = engine.check(&record(topic, value));
            kinds.push(match &checked {
                Checked::Valid(..) => "valid",
                Checked::Impossible(..) => "impossible",
                Checked::Invalid(..) => "invalid",
            });
            let mut buf = b"header".to_vec();
            encode(value, &checked, 0x0123_4567_89AB_CDEF, &mut buf);
            let body = &buf[6..];
            let (id, back, read) = decode(body).unwrap();
            assert_eq!(id, 0x0123_4567_89AB_CDEF);
            assert_eq!(back, value);
            assert_eq!(read, checked);
            for cut in 0..body.len() {
                assert!(decode(&body[..cut]).is_err(), "cut at {cut} of {topic}");
            }
            let mut longer = body.to_vec();
            longer.push(0);
            assert!(decode(&longer).is_err());
            let mut other = body.to_vec();
            other[0] = FORMAT + 1;
            assert!(decode(&other).is_err());
        }
        assert_eq!(
            kinds,
            ["valid", "impossible", "invalid", "valid", "valid", "valid"]
        );
        // A string said to lie past the value's end.
        let (topic, value) = samples()[4];
        let checked = engine.check(&record(topic, value));
        let mut buf = Vec::new();
        encode(value, &checked, 7, &mut buf);
        // Format, fingerprint, length, value, kind, time, message type.
        let at = 1 + 8 + 4 + value.len() + 1 + 8 + 1;
        let n = u32::from_le_bytes(buf[at..at + 4].try_into().unwrap());
        assert_ne!(n & IN_VALUE, 0, "the parking id lies in the value");
        buf[at + 4..at + 8].copy_from_slice(&(value.len() as u32).to_le_bytes());
        assert_eq!(
            decode(&buf).unwrap_err(),
            ForwardError("a string outside the value")
        );
    }

    // Proves the writer's one-byte enums (their declaration order) are the reader's.
    #[test]
    fn every_enum_variant_reads_back() {
        use CongestionLevel as C;
        for (i, v) in [C::Low, C::Medium, C::High].into_iter().enumerate() {
            assert_eq!(v as usize, i);
        }
        for (i, v) in [DataQuality::Good, DataQuality::Degraded]
            .into_iter()
            .enumerate()
        {
            assert_eq!(v as usize, i);
        }
        for (i, v) in [Direction::Outbound, Direction::Inbound]
            .into_iter()
            .enumerate()
        {
            assert_eq!(v as usize, i);
        }
        for (i, v) in [TransportStatus::OnTime, TransportStatus::Delayed]
            .into_iter()
            .enumerate()
        {
            assert_eq!(v as usize, i);
        }
        for (i, v) in IncidentType::ALL.into_iter().enumerate() {
            assert_eq!(v as usize, i);
        }
        for (i, v) in Severity::ALL.into_iter().enumerate() {
            assert_eq!(v as usize, i);
        }
        for r in DeadLetterReason::ALL {
            let mut buf = Vec::new();
            encode(b"x", &Checked::Invalid(r, "why".into()), 7, &mut buf);
            assert_eq!(decode(&buf).unwrap().2, Checked::Invalid(r, "why".into()));
        }
    }

    // Proves stage 2 follows its own configuration whichever instance checked: a record stage 1
    // found valid under a configuration that differs is checked again, from the value it
    // carries, and comes out as this engine's `ingest` makes it (here a dead letter over an
    // input limit), counted; with equal configurations the forwarded check is applied as it is.
    #[test]
    fn a_record_checked_with_another_configuration_is_checked_again() {
        use crate::engine::Output;
        let (topic, value) = samples()[4];
        let rec = record(topic, value);
        let loose = Engine::new(EngineConfig::default()).unwrap();
        let strict = EngineConfig {
            max_string_bytes: 3,
            ..EngineConfig::default()
        };
        let mut forwarded = Vec::new();
        loose.forward(&rec, &mut forwarded);
        let checked = RawRecord {
            value: &forwarded,
            ..rec
        };
        for (config, rechecked) in [(EngineConfig::default(), 0), (strict, 1)] {
            let mut stage2 = Engine::new(config.clone()).unwrap();
            let mut whole = Engine::new(config).unwrap();
            let (mut a, mut b) = (Output::default(), Output::default());
            stage2.ingest_checked(&checked, &mut a);
            whole.ingest(&rec, &mut b);
            assert_eq!(format!("{a:?}"), format!("{b:?}"));
            // Valid by the default limits; over the strict one: a parking name of 5 bytes.
            assert_eq!(a.dead_letters.len() as u64, rechecked);
            let mut counters = stage2.counters();
            assert_eq!(counters.rechecked, rechecked);
            counters.rechecked = 0;
            assert_eq!(counters, whole.counters());
        }
    }

    // Proves arbitrary bytes never panic the reader: each is a record or an error.
    #[test]
    fn any_bytes_are_a_record_or_an_error() {
        let engine = Engine::new(EngineConfig::default()).unwrap();
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        for (topic, value) in samples() {
            let mut buf = Vec::new();
            engine.forward(&record(topic, value), &mut buf);
            for _ in 0..2_000 {
                let mut b = buf.clone();
                for _ in 0..3 {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    let i = (seed % b.len() as u64) as usize;
                    b[i] = (seed >> 32) as u8;
                }
                let _ = decode(&b);
            }
        }
    }
}
