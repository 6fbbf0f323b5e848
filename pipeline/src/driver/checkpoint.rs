//! The checkpoint's bytes: the engine's whole state and, per partition, the offset of the last
//! record it holds, behind a header that carries a SHA-256 of the body, so a truncated or
//! corrupt file is recognised instead of restored. Sans-IO: the streaming shell stores the bytes
//! in a file (`streaming::checkpoint`), the simulator in memory.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use crate::engine::Engine;
use crate::model::Topic;
use crate::time::Millis;

use super::PartitionId;

/// The first bytes of every checkpoint, then the body's SHA-256 in hex and a newline. The
/// version changes with the engine state's shape: v3 keeps windows as panes.
const MAGIC: &str = "smart-city-checkpoint v3 sha256=";

/// What a checkpoint covers: the engine's state after the last record of each partition it
/// lists.
#[derive(Clone, Debug)]
pub struct CheckpointData {
    /// The driver's sequence number of the checkpoint.
    pub id: u64,
    /// Processing time when the state was taken.
    pub taken_ms: Millis,
    /// The engine's state.
    pub engine: Engine,
    /// Per partition, the offset of the last record the state holds.
    pub positions: BTreeMap<PartitionId, i64>,
}

/// One partition's entry in the file.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Position {
    topic: Topic,
    partition: i32,
    offset: i64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Body<'a> {
    id: u64,
    taken_ms: Millis,
    positions: Vec<Position>,
    #[serde(borrow)]
    engine: &'a RawValue,
}

/// Bytes that are not a valid checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointFormatError {
    /// No header, or one of another format.
    #[error("not a pipeline checkpoint of this version (no `{MAGIC}` header)")]
    Header,
    /// The body does not match its checksum: truncated or corrupt.
    #[error("the checksum does not match: the file is truncated or corrupt")]
    Checksum,
    /// The body is not what this version writes.
    #[error("the body is not readable: {0}")]
    Body(#[from] serde_json::Error),
    /// The engine state inside cannot be restored.
    #[error("the engine state cannot be restored: {0}")]
    Engine(#[from] crate::engine::RestoreError),
}

impl CheckpointData {
    /// The checkpoint's bytes.
    pub fn encode(&self) -> Vec<u8> {
        // The engine's state is JSON by construction; `null` would only be written if it were
        // not, and then refused on restore.
        let raw = String::from_utf8(self.engine.checkpoint())
            .ok()
            .and_then(|s| RawValue::from_string(s).ok())
            .or_else(|| RawValue::from_string("null".to_owned()).ok());
        let Some(raw) = raw else {
            return Vec::new();
        };
        let body = Body {
            id: self.id,
            taken_ms: self.taken_ms,
            positions: self
                .positions
                .iter()
                .map(|(&(topic, partition), &offset)| Position {
                    topic,
                    partition,
                    offset,
                })
                .collect(),
            engine: &raw,
        };
        // Plain data: serialising cannot fail.
        let body = serde_json::to_vec(&body).unwrap_or_default();
        let mut out = Vec::with_capacity(body.len() + 100);
        out.extend_from_slice(MAGIC.as_bytes());
        out.extend_from_slice(hex::encode(Sha256::digest(&body)).as_bytes());
        out.push(b'\n');
        out.extend_from_slice(&body);
        out
    }

    /// Reads checkpoint bytes, verifying the checksum.
    pub fn decode(bytes: &[u8]) -> Result<Self, CheckpointFormatError> {
        let rest = bytes
            .strip_prefix(MAGIC.as_bytes())
            .ok_or(CheckpointFormatError::Header)?;
        let newline = rest
            .iter()
            .position(|b| *b == b'\n')
            .ok_or(CheckpointFormatError::Header)?;
        let (sum, body) = (&rest[..newline], &rest[newline + 1..]);
        if sum != hex::encode(Sha256::digest(body)).as_bytes() {
            return Err(CheckpointFormatError::Checksum);
        }
        let parsed: Body<'_> = serde_json::from_slice(body)?;
        let engine = Engine::restore(parsed.engine.get().as_bytes())?;
        Ok(CheckpointData {
            id: parsed.id,
            taken_ms: parsed.taken_ms,
            engine,
            positions: parsed
                .positions
                .into_iter()
                .map(|p| ((p.topic, p.partition), p.offset))
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::EngineConfig;

    fn sample() -> CheckpointData {
        CheckpointData {
            id: 7,
            taken_ms: 1_000,
            engine: Engine::new(EngineConfig::default()).expect("default config"),
            positions: [((Topic::Traffic, 0), 41), ((Topic::Parking, 3), 9)]
                .into_iter()
                .collect(),
        }
    }

    // Proves a checkpoint reads back as written.
    #[test]
    fn round_trips() {
        let c = sample();
        let back = CheckpointData::decode(&c.encode()).expect("decodes");
        assert_eq!(back.id, 7);
        assert_eq!(back.positions, c.positions);
        assert_eq!(back.engine.checkpoint(), c.engine.checkpoint());
    }

    // Proves a checkpoint of the previous version (hopping windows, before panes) is refused
    // by its header, with an error that says it is not of this version.
    #[test]
    fn refuses_the_previous_version() {
        let bytes = sample().encode();
        let old = [
            b"smart-city-checkpoint v2".as_slice(),
            &bytes[MAGIC.find(" sha256=").expect("a checksum")..],
        ]
        .concat();
        let e = CheckpointData::decode(&old).expect_err("a v2 checkpoint");
        assert!(matches!(e, CheckpointFormatError::Header));
        assert!(
            e.to_string()
                .contains("not a pipeline checkpoint of this version")
        );
    }

    // Proves a truncated or altered checkpoint is refused, never restored.
    #[test]
    fn refuses_truncated_and_corrupt_bytes() {
        let bytes = sample().encode();
        for cut in [0, 10, MAGIC.len() + 64, bytes.len() - 1] {
            assert!(
                CheckpointData::decode(&bytes[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        let mut flipped = bytes.clone();
        let last = flipped.len() - 2;
        flipped[last] ^= 0x01;
        assert!(matches!(
            CheckpointData::decode(&flipped),
            Err(CheckpointFormatError::Checksum)
        ));
    }
}
