//! The JSON writer behind [`Message::write_json`]: the four message types written field by field,
//! byte for byte what `serde_json::to_writer` writes for them.
//!
//! **Why it exists.** The generator writes every record it produces through `write_json`, and
//! serde_json cost about 5,600 instructions a record there: its string escaper
//! (`format_escaped_str`) alone was 48 % of the generator thread, float formatting 11 %, and the
//! rest serde's struct machinery. This writer knows the four shapes: field names and punctuation
//! are constant byte strings, a string is checked and copied whole unless it holds one of the
//! rare bytes that need an escape, and numbers go through the same formatting crates serde_json calls. The `write_json`
//! group of `benches/generator.rs` measures both over the 47,552 messages of one simulated hour of
//! the default city: 18.9 ms with serde_json against 8.7 ms with this writer (2.5 against 5.5
//! million messages a second, 2.2 times faster, on a shared two-core machine); callgrind counts
//! 5,570 against 1,870 instructions a message (3.0 times fewer). What is left is mostly zmij's
//! float digits (about 500 instructions for the five floats of a message), the timestamp's
//! calendar arithmetic (about 220) and the small copies.
//!
//! **Contract.** For every value of the four message types, the bytes equal
//! `serde_json::to_writer`'s of the message's own struct (serde_json's compact formatter, which
//! `to_writer` uses). The serde derives stay the reference: the tests below compare the two over
//! seeded random messages (every control byte, quotes, backslashes, multi-byte UTF-8, floats at
//! every edge, integers at their bounds), and `generator/tests/write_json.rs` over everything the
//! generator makes. What the writer has to match, as serde_json 1.0.154 writes it:
//!
//! - Fields in declaration order, every one present (none is an `Option` or skipped), with the
//!   `#[serde(rename = "type")]` names of `ParkingReading::kind` and `Incident::kind`;
//!   `GeoPoint` and `IncidentLocation` as nested objects.
//! - Unit enum variants as their `snake_case` names in quotes (the `wire_name`s).
//! - Timestamps as [`Timestamp`]'s own `Serialize` writes them: UTC with a `Z`, naive without one.
//! - Strings: `"` and `\` escaped with a backslash; `\b \f \n \r \t` as short escapes; the other
//!   bytes below 0x20 as `\u00XX` with lower-case hex; everything else, 0x7f and non-ASCII
//!   (U+2028 included), copied as is. `/` is not escaped.
//! - `f64`: finite values as `zmij::Buffer::format_finite` writes them, which is what serde_json's
//!   `write_f64` calls: shortest round-trip digits, `.0` on integral values (`5.0`, `-0.0`),
//!   plain decimals for 1e-5 <= |v| < 1e16 (`0.00001`, `1000000000000000.0`) and exponents outside
//!   it, with a `+` on positive ones (`1e+16`, `1.5e-6`, `5e-324`); NaN and ±inf as `null`.
//! - `i64`: plain decimal (itoa, as serde_json).
//!
//! The crates are one copy each in the build (Cargo unifies semver-compatible versions), so the
//! digits cannot differ; should serde_json ever change formatter, the tests fail.

use super::{
    Incident, IncidentLocation, Message, ParkingReading, TrafficReading, TransportReading,
};
use crate::time::{self, Timestamp};

/// Appends the JSON encoding of `message` (its variant's struct) to `out`.
pub(super) fn write_message(message: &Message<'_>, out: &mut Vec<u8>) {
    match message {
        Message::Traffic(m) => traffic(m, out),
        Message::Transport(m) => transport(m, out),
        Message::Parking(m) => parking(m, out),
        Message::Incident(m) => incident(m, out),
    }
}

// Each constant closes the value before it and opens the next: the closing quote of a string,
// the comma, the quoted field name, the colon, and the opening quote when the next value is a
// string (string, timestamp and enum values are written without their quotes). Nested objects
// open and close inside the constants too.

fn traffic(m: &TrafficReading<'_>, out: &mut Vec<u8>) {
    // One reservation for the whole object: the fixed part is under 320 bytes.
    out.reserve(320 + m.sensor_id.len() + m.road_id.len() + m.road_name.len() + m.zone_id.len());
    out.extend_from_slice(br#"{"sensor_id":""#);
    string(out, &m.sensor_id);
    out.extend_from_slice(br#"","timestamp":""#);
    timestamp(out, m.timestamp);
    out.extend_from_slice(br#"","road_id":""#);
    string(out, &m.road_id);
    out.extend_from_slice(br#"","road_name":""#);
    string(out, &m.road_name);
    out.extend_from_slice(br#"","zone_id":""#);
    string(out, &m.zone_id);
    out.extend_from_slice(br#"","location":{"lat":"#);
    float(out, m.location.lat);
    out.extend_from_slice(br#","lon":"#);
    float(out, m.location.lon);
    out.extend_from_slice(br#"},"speed_kmh":"#);
    float(out, m.speed_kmh);
    out.extend_from_slice(br#","vehicle_flow":"#);
    integer(out, m.vehicle_flow);
    out.extend_from_slice(br#","occupancy_percent":"#);
    float(out, m.occupancy_percent);
    out.extend_from_slice(br#","congestion_level":""#);
    out.extend_from_slice(m.congestion_level.wire_name().as_bytes());
    out.extend_from_slice(br#"","data_quality":""#);
    out.extend_from_slice(m.data_quality.wire_name().as_bytes());
    out.extend_from_slice(br#""}"#);
}

fn transport(m: &TransportReading<'_>, out: &mut Vec<u8>) {
    out.reserve(
        384 + m.vehicle_id.len()
            + m.line_id.len()
            + m.line_number.len()
            + m.current_stop.len()
            + m.next_stop.len(),
    );
    out.extend_from_slice(br#"{"vehicle_id":""#);
    string(out, &m.vehicle_id);
    out.extend_from_slice(br#"","timestamp":""#);
    timestamp(out, m.timestamp);
    out.extend_from_slice(br#"","line_id":""#);
    string(out, &m.line_id);
    out.extend_from_slice(br#"","line_number":""#);
    string(out, &m.line_number);
    out.extend_from_slice(br#"","current_stop":""#);
    string(out, &m.current_stop);
    out.extend_from_slice(br#"","next_stop":""#);
    string(out, &m.next_stop);
    out.extend_from_slice(br#"","direction":""#);
    out.extend_from_slice(m.direction.wire_name().as_bytes());
    out.extend_from_slice(br#"","location":{"lat":"#);
    float(out, m.location.lat);
    out.extend_from_slice(br#","lon":"#);
    float(out, m.location.lon);
    out.extend_from_slice(br#"},"speed_kmh":"#);
    float(out, m.speed_kmh);
    out.extend_from_slice(br#","passenger_count":"#);
    integer(out, m.passenger_count);
    out.extend_from_slice(br#","capacity":"#);
    integer(out, m.capacity);
    out.extend_from_slice(br#","occupancy_rate":"#);
    float(out, m.occupancy_rate);
    out.extend_from_slice(br#","delay_minutes":"#);
    float(out, m.delay_minutes);
    out.extend_from_slice(br#","status":""#);
    out.extend_from_slice(m.status.wire_name().as_bytes());
    out.extend_from_slice(br#""}"#);
}

fn parking(m: &ParkingReading<'_>, out: &mut Vec<u8>) {
    out.reserve(
        384 + m.parking_id.len() + m.name.len() + m.zone_id.len() + m.kind.len() + m.status.len(),
    );
    out.extend_from_slice(br#"{"parking_id":""#);
    string(out, &m.parking_id);
    out.extend_from_slice(br#"","timestamp":""#);
    timestamp(out, m.timestamp);
    out.extend_from_slice(br#"","name":""#);
    string(out, &m.name);
    out.extend_from_slice(br#"","zone_id":""#);
    string(out, &m.zone_id);
    out.extend_from_slice(br#"","type":""#);
    string(out, &m.kind);
    out.extend_from_slice(br#"","location":{"lat":"#);
    float(out, m.location.lat);
    out.extend_from_slice(br#","lon":"#);
    float(out, m.location.lon);
    out.extend_from_slice(br#"},"total_spaces":"#);
    integer(out, m.total_spaces);
    out.extend_from_slice(br#","occupied_spaces":"#);
    integer(out, m.occupied_spaces);
    out.extend_from_slice(br#","available_spaces":"#);
    integer(out, m.available_spaces);
    out.extend_from_slice(br#","occupancy_rate":"#);
    float(out, m.occupancy_rate);
    out.extend_from_slice(br#","hourly_rate":"#);
    float(out, m.hourly_rate);
    out.extend_from_slice(br#","status":""#);
    string(out, &m.status);
    out.extend_from_slice(br#""}"#);
}

fn incident(m: &Incident<'_>, out: &mut Vec<u8>) {
    let IncidentLocation {
        road_id,
        road_name,
        zone_id,
        lat,
        lon,
    } = &m.location;
    out.reserve(
        384 + m.incident_id.len()
            + road_id.len()
            + road_name.len()
            + zone_id.len()
            + m.description.len()
            + m.status.len(),
    );
    out.extend_from_slice(br#"{"incident_id":""#);
    string(out, &m.incident_id);
    out.extend_from_slice(br#"","timestamp":""#);
    timestamp(out, m.timestamp);
    out.extend_from_slice(br#"","type":""#);
    out.extend_from_slice(m.kind.wire_name().as_bytes());
    out.extend_from_slice(br#"","severity":""#);
    out.extend_from_slice(m.severity.name().as_bytes());
    out.extend_from_slice(br#"","location":{"road_id":""#);
    string(out, road_id);
    out.extend_from_slice(br#"","road_name":""#);
    string(out, road_name);
    out.extend_from_slice(br#"","zone_id":""#);
    string(out, zone_id);
    out.extend_from_slice(br#"","lat":"#);
    float(out, *lat);
    out.extend_from_slice(br#","lon":"#);
    float(out, *lon);
    out.extend_from_slice(br#"},"description":""#);
    string(out, &m.description);
    out.extend_from_slice(br#"","estimated_duration_min":"#);
    integer(out, m.estimated_duration_min);
    out.extend_from_slice(br#","affected_lanes":"#);
    integer(out, m.affected_lanes);
    out.extend_from_slice(br#","status":""#);
    string(out, &m.status);
    out.extend_from_slice(br#""}"#);
}

/// A timestamp's text as its `Serialize` impl writes it, without the quotes: ASCII digits and
/// separators, which serde_json's string escaper leaves alone.
fn timestamp(out: &mut Vec<u8>, t: Timestamp) {
    let (ms, utc) = match t {
        Timestamp::Utc(ms) => (ms, true),
        Timestamp::Naive(ms) => (ms, false),
    };
    let mut buf = [0u8; 24];
    let mut n = time::write_date_time(ms, &mut buf);
    if utc {
        buf[n] = b'Z';
        n += 1;
    }
    out.extend_from_slice(&buf[..n]);
}

/// A finite float as serde_json's `CompactFormatter::write_f64` writes it (zmij's shortest
/// round-trip digits, `.0` on integral values); NaN and infinities as `null`, as serde_json's
/// `serialize_f64` does before it ever reaches the formatter.
fn float(out: &mut Vec<u8>, v: f64) {
    if v.is_finite() {
        out.extend_from_slice(zmij::Buffer::new().format_finite(v).as_bytes());
    } else {
        out.extend_from_slice(b"null");
    }
}

fn integer(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

/// What follows the backslash for each byte that needs an escape, 0 for the bytes copied as
/// they are: serde_json's own table. `u` means `\u00XX`.
static ESCAPE: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = b'u';
        b += 1;
    }
    table[0x08] = b'b';
    table[0x09] = b't';
    table[0x0a] = b'n';
    table[0x0c] = b'f';
    table[0x0d] = b'r';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};

/// The contents of `s` as a JSON string, without the quotes. The ids and names here almost never
/// need an escape: a plain string is checked and copied whole, and only one that needs escapes
/// takes the slower path.
#[inline]
fn string(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    if bytes.iter().all(|&b| ESCAPE[usize::from(b)] == 0) {
        out.extend_from_slice(bytes);
    } else {
        escaped(out, bytes);
    }
}

/// The contents of a string that needs escapes: the bytes are copied in runs between the bytes
/// to escape. Escapes are ASCII, so a run never splits a multi-byte character.
#[cold]
#[inline(never)]
fn escaped(out: &mut Vec<u8>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut run = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape = ESCAPE[usize::from(b)];
        if escape == 0 {
            continue;
        }
        out.extend_from_slice(&bytes[run..i]);
        if escape == b'u' {
            out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]);
        } else {
            out.extend_from_slice(&[b'\\', escape]);
        }
        run = i + 1;
    }
    out.extend_from_slice(&bytes[run..]);
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use rand_chacha::ChaCha8Rng;
    use rand_chacha::rand_core::{RngCore, SeedableRng};

    use super::*;
    use crate::model::{
        CongestionLevel, DataQuality, Direction, GeoPoint, IncidentType, Severity, TransportStatus,
    };

    /// serde_json's bytes for the message's own struct: the reference.
    fn serde_bytes(m: &Message<'_>) -> Vec<u8> {
        let mut bytes = Vec::new();
        m.write_json_serde(&mut bytes)
            .expect("serde_json writes every message");
        bytes
    }

    /// Asserts `write_json` equals serde_json for `m`, naming `case` and the first difference.
    fn assert_same(m: &Message<'_>, case: &str) {
        let ours = m.to_json();
        let reference = serde_bytes(m);
        if ours != reference {
            let at = ours
                .iter()
                .zip(&reference)
                .position(|(a, b)| a != b)
                .unwrap_or(ours.len().min(reference.len()));
            panic!(
                "{case}: write_json differs from serde_json at byte {at}\n  ours:       {}\n  serde_json: {}\n  message: {m:?}",
                String::from_utf8_lossy(&ours),
                String::from_utf8_lossy(&reference),
            );
        }
    }

    fn traffic(s: &str, v: f64, n: i64, t: Timestamp) -> Message<'_> {
        Message::Traffic(TrafficReading {
            sensor_id: s.into(),
            timestamp: t,
            road_id: s.into(),
            road_name: s.into(),
            zone_id: s.into(),
            location: GeoPoint { lat: v, lon: -v },
            speed_kmh: v,
            vehicle_flow: n,
            occupancy_percent: v,
            congestion_level: CongestionLevel::High,
            data_quality: DataQuality::Degraded,
        })
    }

    /// A source of random field values, each drawn from a mix of edge cases and plain noise.
    struct Draw(ChaCha8Rng);

    impl Draw {
        fn below(&mut self, n: u64) -> u64 {
            self.0.next_u64() % n
        }

        fn pick<T: Copy>(&mut self, from: &[T]) -> T {
            from[self.below(from.len() as u64) as usize]
        }

        /// Quotes, backslashes, every byte below 0x80, DEL, multi-byte characters (U+2028 and
        /// U+2029 too, which some encoders escape and serde_json does not), or nothing.
        fn string(&mut self) -> String {
            const PIECES: &[&str] = &[
                "\"",
                "\\",
                "/",
                "\u{7f}",
                "\u{80}",
                "é",
                "€",
                "𝄞",
                "\u{2028}",
                "\u{2029}",
                "\u{feff}",
                "\u{ffff}",
                "\u{10ffff}",
                "TS-001",
                "zone-3",
                "Gran Vía",
            ];
            let len = match self.below(16) {
                0 => 0,
                1 => 64 + self.below(200),
                _ => self.below(12),
            };
            let mut s = String::new();
            for _ in 0..len {
                if self.below(2) == 0 {
                    s.push(char::from(self.below(0x80) as u8));
                } else {
                    s.push_str(self.pick(PIECES));
                }
            }
            s
        }

        /// Zeros of both signs, subnormals, the extremes, powers of ten and integral values
        /// where the format switches between digits and exponent, neighbours of integers, the
        /// generator's one-decimal values, NaNs of any payload, infinities, any bit pattern.
        fn float(&mut self) -> f64 {
            const EDGES: &[f64] = &[
                0.0,
                -0.0,
                5.0,
                -5.0,
                0.1,
                0.3,
                1e300,
                -1e300,
                1e-300,
                f64::MIN_POSITIVE,
                5e-324,
                -5e-324,
                f64::MAX,
                f64::MIN,
                f64::EPSILON,
                9_007_199_254_740_992.0,
                9_007_199_254_740_993.0,
                1e15,
                1e16,
                1e17,
                1e21,
                1e22,
                1e-5,
                1e-7,
                f64::NAN,
                f64::INFINITY,
                f64::NEG_INFINITY,
            ];
            match self.below(8) {
                0 => self.pick(EDGES),
                1 => f64::from_bits(self.0.next_u64()),
                // Subnormals, either sign.
                2 => f64::from_bits(self.0.next_u64() & 0x800f_ffff_ffff_ffff),
                3 => {
                    let k = self.below(64);
                    let v = (self.0.next_u64() >> k) as f64;
                    match self.below(3) {
                        0 => v,
                        1 => v.next_up(),
                        _ => -v.next_down(),
                    }
                }
                4 => {
                    let v: f64 = format!("1e{}", self.below(650) as i64 - 330)
                        .parse()
                        .unwrap_or(1.0);
                    if self.below(2) == 0 { v } else { v.next_up() }
                }
                // NaNs with any payload and sign.
                5 => f64::from_bits(self.0.next_u64() | 0x7ff0_0000_0000_0001),
                _ => (self.0.next_u64() % 20_000_001) as f64 / 10.0 - 1_000_000.0,
            }
        }

        fn integer(&mut self) -> i64 {
            const EDGES: &[i64] = &[
                i64::MIN,
                i64::MIN + 1,
                -1_000_000_000_000_000_000,
                -1,
                0,
                1,
                9,
                10,
                99,
                100,
                999_999_999_999_999_999,
                i64::MAX - 1,
                i64::MAX,
            ];
            match self.below(4) {
                0 => self.pick(EDGES),
                1 => self.0.next_u64() as i64,
                2 => (self.0.next_u64() >> self.below(64)) as i64,
                _ => self.below(2_000) as i64 - 1_000,
            }
        }

        fn timestamp(&mut self) -> Timestamp {
            let ms = match self.below(4) {
                0 => self.0.next_u64() as i64,
                1 => 1_795_507_200_000 + self.below(86_400) as i64 * 1_000,
                2 => 1_795_507_200_000 + self.below(86_400_000) as i64,
                _ => self.pick(&[i64::MIN, -1, 0, 1, 253_402_300_799_999, i64::MAX]),
            };
            if self.below(2) == 0 {
                Timestamp::Utc(ms)
            } else {
                Timestamp::Naive(ms)
            }
        }

        fn point(&mut self) -> GeoPoint {
            GeoPoint {
                lat: self.float(),
                lon: self.float(),
            }
        }

        fn message(&mut self) -> Message<'static> {
            match self.below(4) {
                0 => Message::Traffic(TrafficReading {
                    sensor_id: Cow::Owned(self.string()),
                    timestamp: self.timestamp(),
                    road_id: Cow::Owned(self.string()),
                    road_name: Cow::Owned(self.string()),
                    zone_id: Cow::Owned(self.string()),
                    location: self.point(),
                    speed_kmh: self.float(),
                    vehicle_flow: self.integer(),
                    occupancy_percent: self.float(),
                    congestion_level: self.pick(&[
                        CongestionLevel::Low,
                        CongestionLevel::Medium,
                        CongestionLevel::High,
                    ]),
                    data_quality: self.pick(&[DataQuality::Good, DataQuality::Degraded]),
                }),
                1 => Message::Transport(TransportReading {
                    vehicle_id: Cow::Owned(self.string()),
                    timestamp: self.timestamp(),
                    line_id: Cow::Owned(self.string()),
                    line_number: Cow::Owned(self.string()),
                    current_stop: Cow::Owned(self.string()),
                    next_stop: Cow::Owned(self.string()),
                    direction: self.pick(&[Direction::Outbound, Direction::Inbound]),
                    location: self.point(),
                    speed_kmh: self.float(),
                    passenger_count: self.integer(),
                    capacity: self.integer(),
                    occupancy_rate: self.float(),
                    delay_minutes: self.float(),
                    status: self.pick(&[TransportStatus::OnTime, TransportStatus::Delayed]),
                }),
                2 => Message::Parking(ParkingReading {
                    parking_id: Cow::Owned(self.string()),
                    timestamp: self.timestamp(),
                    name: Cow::Owned(self.string()),
                    zone_id: Cow::Owned(self.string()),
                    kind: Cow::Owned(self.string()),
                    location: self.point(),
                    total_spaces: self.integer(),
                    occupied_spaces: self.integer(),
                    available_spaces: self.integer(),
                    occupancy_rate: self.float(),
                    hourly_rate: self.float(),
                    status: Cow::Owned(self.string()),
                }),
                _ => Message::Incident(Incident {
                    incident_id: Cow::Owned(self.string()),
                    timestamp: self.timestamp(),
                    kind: self.pick(&IncidentType::ALL),
                    severity: self.pick(&Severity::ALL),
                    location: IncidentLocation {
                        road_id: Cow::Owned(self.string()),
                        road_name: Cow::Owned(self.string()),
                        zone_id: Cow::Owned(self.string()),
                        lat: self.float(),
                        lon: self.float(),
                    },
                    description: Cow::Owned(self.string()),
                    estimated_duration_min: self.integer(),
                    affected_lanes: self.integer(),
                    status: Cow::Owned(self.string()),
                }),
            }
        }
    }

    // Proves, over 20,000 seeded random messages of the four types (random strings with every
    // byte below 0x80, quotes, backslashes and multi-byte characters; floats at every edge, NaN
    // and infinities included; integers at their bounds; timestamps of both kinds at any
    // instant; every enum value), that write_json writes exactly serde_json's bytes.
    #[test]
    fn random_messages_match_serde_json() {
        const SEED: u64 = 20_261_124;
        const CASES: u64 = 20_000;
        for case in 0..CASES {
            let seed = SEED.wrapping_add(case);
            let m = Draw(ChaCha8Rng::seed_from_u64(seed)).message();
            assert_same(&m, &format!("Draw seeded with {seed} (case {case})"));
        }
    }

    // Proves every single character below 0x80, and characters of every UTF-8 length, are
    // escaped or copied exactly as serde_json does, alone and between plain text.
    #[test]
    fn every_ascii_byte_and_utf8_length_matches_serde_json() {
        let t = Timestamp::Utc(0);
        let chars = (0u8..0x80).map(char::from).chain([
            '\u{80}',
            'é',
            '\u{7ff}',
            '\u{800}',
            '€',
            '\u{ffff}',
            '𝄞',
            '\u{10ffff}',
        ]);
        for c in chars {
            for s in [c.to_string(), format!("a{c}b{c}{c}c")] {
                assert_same(&traffic(&s, 1.5, 1, t), &format!("string {s:?}"));
            }
        }
        assert_same(&traffic("", 1.5, 1, t), "the empty string");
    }

    // Proves what serde_json writes for the cases people get wrong, written out: short escapes
    // where JSON has them, lower-case `\u00XX` for the other controls, DEL, `/` and U+2028 as
    // they are; `.0` on integral floats, `-0.0`, exponents, `null` for NaN and infinities; naive
    // timestamps without `Z`, milliseconds only when present.
    #[test]
    fn the_tricky_cases_are_written_as_serde_json_writes_them() {
        let text = "q\"b\\s/\u{8}\u{c}\n\r\t\u{0}\u{1f}\u{7f}é\u{2028}";
        let cases: &[(f64, &str)] = &[
            (5.0, "5.0"),
            (-0.0, "-0.0"),
            (0.1, "0.1"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e+16"),
            (1e-5, "0.00001"),
            (1.5e-6, "1.5e-6"),
            (5e-324, "5e-324"),
            (f64::MAX, "1.7976931348623157e+308"),
            (f64::NAN, "null"),
            (f64::NEG_INFINITY, "null"),
        ];
        for &(v, expected) in cases {
            let m = traffic(text, v, i64::MIN, Timestamp::Naive(1_795_507_205_250));
            assert_same(&m, &format!("the tricky string with float {v:?}"));
            let json = String::from_utf8(m.to_json()).expect("JSON is UTF-8");
            assert!(
                json.starts_with(
                    "{\"sensor_id\":\"q\\\"b\\\\s/\\b\\f\\n\\r\\t\\u0000\\u001f\u{7f}é\u{2028}\",\"timestamp\":\"2026-11-24T08:00:05.250\","
                ),
                "{json}"
            );
            assert!(
                json.contains(&format!(
                    ",\"speed_kmh\":{expected},\"vehicle_flow\":-9223372036854775808,"
                )),
                "float {v:?} should be written {expected}: {json}"
            );
        }
    }

    // Proves appending works as serde_json's to_writer does: after what is already in the
    // buffer, leaving it untouched.
    #[test]
    fn appends_after_existing_bytes() {
        let m = traffic("TS-001", 42.5, 17, Timestamp::Utc(1_795_507_205_000));
        let mut ours = b"prefix ".to_vec();
        m.write_json(&mut ours);
        let mut reference = b"prefix ".to_vec();
        if let Message::Traffic(t) = &m {
            serde_json::to_writer(&mut reference, t).expect("serde_json writes a reading");
        }
        assert_eq!(
            String::from_utf8_lossy(&ours),
            String::from_utf8_lossy(&reference)
        );
    }
}
