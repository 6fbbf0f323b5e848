//! Hostile records: what a broken or malicious producer sends on `traffic-sensors` on top of the
//! city (`[[generator.hostile]]`): key floods, oversize and deeply nested messages, invalid
//! UTF-8, huge numbers, random bytes.
//!
//! Each entry draws from a stream of its own and never from the city's, and hostile records
//! carry no fault label: the city's records, and so everything the pipeline computes from them
//! alone, are the same with or without hostile entries.

use std::borrow::Cow;

use pipeline::model::{CongestionLevel, DataQuality, GeoPoint, Message, Topic, TrafficReading};
use pipeline::time::{DAY_MS, Millis, Timestamp};
use rand::RngCore;
use rand_chacha::ChaCha8Rng;

use crate::config::{HostileKind, HostileSpec};
use crate::physics::round1;
use crate::record::{Payload, Record};
use crate::rng::{below, unit53};
use crate::timespec::{TimeSpec, parse_time};

/// Largest `size` accepted: 16 MiB (Kafka refuses messages above 1 MiB by default anyway).
pub const MAX_HOSTILE_SIZE: u64 = 16 << 20;
/// Largest `count` of one entry.
pub const MAX_HOSTILE_COUNT: u32 = 10_000_000;

/// A hostile entry, compiled.
#[derive(Clone, Debug)]
pub(crate) struct Hostile {
    pub(crate) kind: HostileKind,
    pub(crate) at: TimeSpec,
    pub(crate) duration_ms: Millis,
    pub(crate) count: u32,
    size: u64,
}

/// Validates the entries; an error names the field and says what is wrong.
pub(crate) fn compile(specs: &[HostileSpec]) -> Result<Vec<Hostile>, (String, String)> {
    let mut out = Vec::with_capacity(specs.len());
    for (i, e) in specs.iter().enumerate() {
        let p = format!("hostile[{i}]");
        let at = parse_time(&e.at).map_err(|r| (format!("{p}.at"), r))?;
        if at == TimeSpec::DayTime(DAY_MS) {
            return Err((
                format!("{p}.at"),
                "24:00 is not a time of day; use 00:00".into(),
            ));
        }
        if !(1..=MAX_HOSTILE_COUNT).contains(&e.count) {
            return Err((
                format!("{p}.count"),
                format!("must be between 1 and {MAX_HOSTILE_COUNT}"),
            ));
        }
        let duration_ms = i64::try_from(e.duration_s.saturating_mul(1000))
            .ok()
            .filter(|&d| d < DAY_MS)
            .ok_or_else(|| (format!("{p}.duration_s"), "must be under a day".to_owned()))?;
        let default = match e.kind {
            HostileKind::Oversize => Some(900_000),
            HostileKind::DeepNesting => Some(1_000),
            HostileKind::RandomBytes => Some(256),
            _ => None,
        };
        let size = match (default, e.size) {
            (Some(_), Some(s)) if (1..=MAX_HOSTILE_SIZE).contains(&s) => s,
            (Some(_), Some(_)) => {
                return Err((
                    format!("{p}.size"),
                    format!("must be between 1 and {MAX_HOSTILE_SIZE}"),
                ));
            }
            (Some(d), None) => d,
            (None, Some(_)) => {
                return Err((
                    format!("{p}.size"),
                    format!(
                        "a `{}` entry takes no size (only oversize, deep_nesting, random_bytes)",
                        e.kind.name()
                    ),
                ));
            }
            (None, None) => 0,
        };
        out.push(Hostile {
            kind: e.kind,
            at,
            duration_ms,
            count: e.count,
            size,
        });
    }
    Ok(out)
}

/// A plausible reading of hostile sensor `id` in its own zone and road.
fn reading(id: &str, t: Millis, rng: &mut ChaCha8Rng) -> TrafficReading<'static> {
    let n = id.trim_start_matches("HX-");
    TrafficReading {
        sensor_id: Cow::Owned(id.to_owned()),
        timestamp: Timestamp::Utc(t),
        road_id: Cow::Owned(format!("hostile-road-{n}")),
        road_name: Cow::Borrowed("Hostile Road"),
        zone_id: Cow::Owned(format!("hostile-zone-{n}")),
        location: GeoPoint {
            lat: round1(400.0 + 10.0 * unit53(rng)) / 10.0,
            lon: -round1(30.0 + 10.0 * unit53(rng)) / 10.0,
        },
        speed_kmh: round1(10.0 + 50.0 * unit53(rng)),
        vehicle_flow: below(rng, 30) as i64,
        occupancy_percent: round1(5.0 + 45.0 * unit53(rng)),
        congestion_level: CongestionLevel::Low,
        data_quality: DataQuality::Good,
    }
}

fn json(m: TrafficReading<'_>) -> Vec<u8> {
    let mut v = Vec::with_capacity(320);
    Message::Traffic(m).write_json(&mut v);
    v
}

/// `json` with the first `from` replaced by `to`.
fn replaced(json: &[u8], from: &str, to: &str) -> Vec<u8> {
    let text = String::from_utf8_lossy(json);
    text.replacen(from, to, 1).into_bytes()
}

/// The `n`-th record of hostile entry `entry`, sent at `t`.
pub(crate) fn record(
    h: &Hostile,
    entry: usize,
    n: u32,
    t: Millis,
    rng: &mut ChaCha8Rng,
) -> Record<'static> {
    let id = format!("HX-{entry}-{n}");
    let mut m = reading(&id, t, rng);
    let payload = match h.kind {
        HostileKind::KeyFlood => Payload::Message(Message::Traffic(m)),
        HostileKind::Oversize => {
            let base = json(m.clone()).len() as u64;
            let pad = h
                .size
                .saturating_sub(base - "Hostile Road".len() as u64)
                .max(1);
            m.road_name = Cow::Owned("x".repeat(pad as usize));
            Payload::Message(Message::Traffic(m))
        }
        HostileKind::DeepNesting => {
            let mut v = json(m);
            let depth = h.size as usize;
            v.pop();
            v.extend_from_slice(b",\"extra\":");
            v.extend(std::iter::repeat_n(b'[', depth));
            v.extend(std::iter::repeat_n(b']', depth));
            v.push(b'}');
            Payload::Raw(v)
        }
        HostileKind::InvalidUtf8 => {
            let v = json(m);
            let at = v
                .windows(12)
                .position(|w| w == b"Hostile Road")
                .map_or(0, |p| p + 8);
            let mut v = v;
            v[at..at + 4].copy_from_slice(&[0xff, 0xfe, 0xc3, 0x28]);
            Payload::Raw(v)
        }
        HostileKind::HugeNumber => match n % 4 {
            0 => {
                m.vehicle_flow = i64::MAX;
                Payload::Message(Message::Traffic(m))
            }
            1 => {
                m.speed_kmh = 12.25;
                Payload::Raw(replaced(
                    &json(m),
                    "\"speed_kmh\":12.25",
                    "\"speed_kmh\":1e400",
                ))
            }
            2 => {
                m.occupancy_percent = 12.5;
                Payload::Raw(replaced(
                    &json(m),
                    "\"occupancy_percent\":12.5",
                    "\"occupancy_percent\":1e308",
                ))
            }
            _ => {
                m.vehicle_flow = 12_345;
                Payload::Raw(replaced(
                    &json(m),
                    "\"vehicle_flow\":12345",
                    "\"vehicle_flow\":100000000000000000000",
                ))
            }
        },
        HostileKind::RandomBytes => {
            let mut v = vec![0u8; h.size as usize];
            rng.fill_bytes(&mut v);
            Payload::Raw(v)
        }
    };
    Record {
        topic: Topic::Traffic,
        key: Cow::Owned(id),
        event_time_ms: t,
        produce_time_ms: t,
        payload,
        fault: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn entry(kind: HostileKind, size: Option<u64>) -> Hostile {
        let spec = HostileSpec {
            kind,
            at: "08:00".into(),
            duration_s: 0,
            count: 1,
            size,
        };
        compile(&[spec]).unwrap().remove(0)
    }

    fn value(kind: HostileKind, size: Option<u64>, n: u32) -> Vec<u8> {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut v = Vec::new();
        record(&entry(kind, size), 0, n, 1_795_507_200_000, &mut rng).write_value(&mut v);
        v
    }

    // Proves each kind makes what its name says: a valid reading with a new key, a message of
    // the given size, the given depth, bytes that are not UTF-8, numbers out of range, noise.
    #[test]
    fn each_kind_is_what_it_says() {
        let flood: serde_json::Value =
            serde_json::from_slice(&value(HostileKind::KeyFlood, None, 7)).unwrap();
        assert_eq!(flood["zone_id"], "hostile-zone-0-7");
        assert_eq!(flood["road_id"], "hostile-road-0-7");
        assert_eq!(value(HostileKind::Oversize, Some(5_000), 0).len(), 5_000);
        assert_eq!(value(HostileKind::Oversize, None, 0).len(), 900_000);
        let deep = value(HostileKind::DeepNesting, Some(300), 0);
        assert_eq!(deep.iter().filter(|&&b| b == b'[').count(), 300);
        assert!(
            serde_json::from_slice::<serde_json::Value>(&deep).is_err(),
            "beyond serde's 128"
        );
        assert!(std::str::from_utf8(&value(HostileKind::InvalidUtf8, None, 0)).is_err());
        let huge: Vec<String> = (0..4)
            .map(|n| String::from_utf8(value(HostileKind::HugeNumber, None, n)).unwrap())
            .collect();
        assert!(huge[0].contains("\"vehicle_flow\":9223372036854775807"));
        assert!(huge[1].contains("\"speed_kmh\":1e400"));
        assert!(huge[2].contains("\"occupancy_percent\":1e308"));
        assert!(huge[3].contains("\"vehicle_flow\":100000000000000000000"));
        assert_eq!(value(HostileKind::RandomBytes, Some(64), 0).len(), 64);
    }

    // Proves bad entries are refused with the field named.
    #[test]
    fn bad_entries_name_the_field() {
        let spec = |kind, size, count| HostileSpec {
            kind,
            at: "08:00".into(),
            duration_s: 0,
            count,
            size,
        };
        let field = |s: HostileSpec| compile(&[s]).unwrap_err().0;
        assert_eq!(
            field(spec(HostileKind::KeyFlood, Some(5), 1)),
            "hostile[0].size"
        );
        assert_eq!(
            field(spec(HostileKind::Oversize, Some(0), 1)),
            "hostile[0].size"
        );
        assert_eq!(
            field(spec(HostileKind::Oversize, None, 0)),
            "hostile[0].count"
        );
        let mut late = spec(HostileKind::KeyFlood, None, 1);
        late.at = "25:00".into();
        assert_eq!(field(late), "hostile[0].at");
    }
}
