//! Corruptions applied by the value-changing faults: impossible values, truncated bytes, a
//! missing field. The delivery faults (duplicate, late, out of order) and clock skew only move
//! times; they live in the generator's scheduling.
//!
//! Each function draws from the record's fault stream, never from the clean streams.

use pipeline::model::Message;
use rand_chacha::ChaCha8Rng;

use crate::physics::round1;
use crate::rng::{below, unit53};

/// Puts one impossible value into `message`, keeping the JSON valid.
pub(crate) fn out_of_range(message: &mut Message<'_>, rng: &mut ChaCha8Rng) {
    let u = unit53(rng);
    let variant = below(rng, 3);
    match message {
        Message::Traffic(m) => match variant {
            0 => m.speed_kmh = -round1(1.0 + 49.0 * u),
            1 => m.speed_kmh = round1(300.5 + 200.0 * u),
            _ => m.occupancy_percent = round1(100.5 + 50.0 * u),
        },
        Message::Transport(m) => match variant {
            0 => m.speed_kmh = -round1(1.0 + 49.0 * u),
            1 => {
                m.passenger_count = m.capacity + 1 + (u * m.capacity as f64) as i64;
                m.occupancy_rate = round1(100.0 * m.passenger_count as f64 / m.capacity as f64);
            }
            _ => m.passenger_count = -1 - (u * 20.0) as i64,
        },
        Message::Parking(m) => match variant {
            0 => {
                m.occupied_spaces = m.total_spaces + 1 + (u * 50.0) as i64;
                m.available_spaces = m.total_spaces - m.occupied_spaces;
                m.occupancy_rate = round1(100.0 * m.occupied_spaces as f64 / m.total_spaces as f64);
            }
            1 => m.occupancy_rate = round1(100.5 + 50.0 * u),
            _ => {
                m.occupied_spaces = -1 - (u * 20.0) as i64;
                m.available_spaces = m.total_spaces - m.occupied_spaces;
            }
        },
        Message::Incident(m) => match variant {
            0 => m.affected_lanes = -1 - (u * 3.0) as i64,
            _ => m.estimated_duration_min = -1 - (u * 60.0) as i64,
        },
    }
}

/// A proper prefix of `json` (at least one byte, at least one byte short): never valid JSON,
/// because the closing brace of the object is gone.
pub(crate) fn truncate(json: &[u8], rng: &mut ChaCha8Rng) -> Vec<u8> {
    let keep = 1 + below(rng, (json.len() as u64).saturating_sub(1).max(1)) as usize;
    json[..keep.min(json.len().saturating_sub(1)).max(1)].to_vec()
}

/// `json` (one object) without one of its top-level members, chosen at random.
pub(crate) fn drop_field(json: &[u8], rng: &mut ChaCha8Rng) -> Vec<u8> {
    let members = top_level_members(json);
    if members.is_empty() {
        return json.to_vec();
    }
    let (start, end) = members[below(rng, members.len() as u64) as usize];
    let mut out = Vec::with_capacity(json.len());
    // Take the member out with the comma that joins it to its neighbour.
    if end < json.len() && json[end] == b',' {
        out.extend_from_slice(&json[..start]);
        out.extend_from_slice(&json[end + 1..]);
    } else if start > 1 && json[start - 1] == b',' {
        out.extend_from_slice(&json[..start - 1]);
        out.extend_from_slice(&json[end..]);
    } else {
        out.extend_from_slice(&json[..start]);
        out.extend_from_slice(&json[end..]);
    }
    out
}

/// Byte spans `[start, end)` of the members of the outermost object of compact JSON (`end` at the
/// `,` or `}` that follows the member).
fn top_level_members(json: &[u8]) -> Vec<(usize, usize)> {
    let mut spans = Vec::with_capacity(16);
    let mut depth = 0u32;
    let mut in_string = false;
    let mut escaped = false;
    let mut start = 0;
    for (i, &c) in json.iter().enumerate() {
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth == 1 {
                    start = i + 1;
                }
            }
            b'}' | b']' => {
                if depth == 1 && i > start {
                    spans.push((start, i));
                }
                depth = depth.saturating_sub(1);
            }
            b',' if depth == 1 => {
                spans.push((start, i));
                start = i + 1;
            }
            _ => {}
        }
    }
    spans
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    const JSON: &[u8] = br#"{"a":1,"b":{"c":[1,2],"d":"x,}"},"e":"q\"}"}"#;

    // Proves every member can be dropped and the rest stays valid JSON with one key fewer.
    #[test]
    fn drops_each_member() {
        assert_eq!(top_level_members(JSON).len(), 3);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..64 {
            let out = drop_field(JSON, &mut rng);
            let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
            let keys: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            assert_eq!(keys.len(), 2, "{}", String::from_utf8_lossy(&out));
            seen.insert(keys.join(","));
        }
        assert_eq!(seen.len(), 3);
    }

    // Proves truncation always yields bytes that do not parse.
    #[test]
    fn truncation_is_invalid() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        for _ in 0..200 {
            let out = truncate(JSON, &mut rng);
            assert!(!out.is_empty() && out.len() < JSON.len());
            assert!(serde_json::from_slice::<serde_json::Value>(&out).is_err());
        }
    }
}
