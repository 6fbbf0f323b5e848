//! The checked record stage 1 forwards to stage 2 (docs/scale-out.md): a record's original
//! value and what [`Engine::check`](super::Engine::check) found of it, in postcard's compact
//! binary form, so that stage 2 applies it to the engine's state without decoding JSON again.
//! The record's source topic, partition, offset, key and Kafka timestamp travel beside it (as the
//! internal record's own key, timestamp and headers), not in it.
//!
//! Strings and bytes are borrowed from the encoded buffer when read, so reading one allocates
//! only for what a dead letter keeps (its detail).

use serde::{Deserialize, Serialize};

use super::Checked;

/// The encoded form: the original value, then what `check` found.
#[derive(Serialize)]
struct BodyRef<'a, 'b> {
    #[serde(with = "serde_bytes")]
    value: &'a [u8],
    checked: &'a Checked<'b>,
}

/// The decoded form, borrowing from the buffer: the same fields in the same order.
#[derive(Deserialize)]
struct Body<'a> {
    #[serde(borrow, with = "serde_bytes")]
    value: &'a [u8],
    #[serde(borrow)]
    checked: Checked<'a>,
}

/// Appends the checked record of a record whose value is `value` to `buf`.
pub fn encode(value: &[u8], checked: &Checked<'_>, buf: &mut Vec<u8>) {
    let body = BodyRef { value, checked };
    // Writing to a growable buffer cannot fail, and every field of a `Checked` is serialisable.
    let taken = std::mem::take(buf);
    *buf = postcard::to_extend(&body, taken).expect("a checked record encodes into a Vec");
}

/// The original value and what `check` found of it, from an encoded checked record.
pub fn decode(bytes: &[u8]) -> Result<(&[u8], Checked<'_>), postcard::Error> {
    let body: Body<'_> = postcard::from_bytes(bytes)?;
    Ok((body.value, body.checked))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{DeadLetterReason, Engine, EngineConfig, RawRecord, SourcePosition};
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

    // Proves a checked record reads back as it was written, whatever `check` found: a valid
    // reading (an escaped string and a naive timestamp among its values), an impossible one and
    // one that is not JSON; and that bytes stage 1 never wrote are an error, not a record.
    #[test]
    fn a_checked_record_reads_back_as_written() {
        let engine = Engine::new(EngineConfig::default()).unwrap();
        let valid = br#"{"sensor_id":"S-\u0031","timestamp":"2025-11-24T16:00:00","road_id":"R1","road_name":"Main \"St\"","zone_id":"zone-1","location":{"lat":-0.0,"lon":1.5},"speed_kmh":42.5,"vehicle_flow":12,"occupancy_percent":30.0,"congestion_level":"low","data_quality":"good"}"#;
        let impossible = br#"{"sensor_id":"S-1","timestamp":"2025-11-24T16:00:00Z","road_id":"R1","road_name":"Main","zone_id":"zone-1","location":{"lat":0.0,"lon":1.5},"speed_kmh":-5.0,"vehicle_flow":12,"occupancy_percent":30.0,"congestion_level":"low","data_quality":"good"}"#;
        let cases: [&[u8]; 3] = [valid, impossible, b"{not json"];
        let mut kinds = Vec::new();
        for value in cases {
            let checked = engine.check(&record(Topic::Traffic, value));
            kinds.push(match &checked {
                Checked::Valid(..) => "valid",
                Checked::Impossible(..) => "impossible",
                Checked::Invalid(..) => "invalid",
            });
            let mut buf = Vec::new();
            encode(value, &checked, &mut buf);
            let (back, read) = decode(&buf).unwrap();
            assert_eq!(back, value);
            assert_eq!(read, checked);
            assert!(decode(&buf[..buf.len() / 2]).is_err());
        }
        assert_eq!(kinds, ["valid", "impossible", "invalid"]);
        let Checked::Invalid(reason, _) = engine.check(&record(Topic::Traffic, b"{not json"))
        else {
            unreachable!("not JSON is invalid");
        };
        assert_eq!(reason, DeadLetterReason::MalformedJson);
    }
}
