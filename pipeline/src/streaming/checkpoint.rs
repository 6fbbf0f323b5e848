//! The checkpoint: the engine's whole state plus the source positions it has consumed, written
//! atomically (temporary file, fsync, rename, fsync of the directory) so a crash leaves either
//! the previous checkpoint or the new one, never a torn file.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::model::Topic;

/// Format version of the file.
const VERSION: u32 = 1;
/// The file name inside the checkpoint directory.
pub const FILE_NAME: &str = "pipeline-checkpoint.json";

/// A checkpoint that could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("checkpoint {path}: {detail}")]
pub struct CheckpointError {
    /// The file or directory.
    pub path: PathBuf,
    /// What failed and what to do.
    pub detail: String,
}

/// One consumed position: the offset of the last record processed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Position {
    topic: Topic,
    partition: i32,
    offset: i64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File1<'a> {
    version: u32,
    positions: Vec<Position>,
    #[serde(borrow)]
    engine: &'a RawValue,
}

/// What a checkpoint holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// The engine state ([`crate::engine::Engine::checkpoint`] bytes, JSON).
    pub engine: Vec<u8>,
    /// Last offset processed per (topic, partition).
    pub positions: BTreeMap<(Topic, i32), i64>,
}

fn err(path: &Path, detail: String) -> CheckpointError {
    CheckpointError {
        path: path.to_owned(),
        detail,
    }
}

/// The checkpoint file in `dir`.
pub fn path_in(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

/// Reads the checkpoint in `dir`, if there is one.
pub fn load(dir: &Path) -> Result<Option<Checkpoint>, CheckpointError> {
    let path = path_in(dir);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(err(&path, format!("cannot read: {e}"))),
    };
    let file: File1<'_> = serde_json::from_slice(&bytes).map_err(|e| {
        err(
            &path,
            format!("not a pipeline checkpoint ({e}); move it away to start from scratch"),
        )
    })?;
    if file.version != VERSION {
        return Err(err(
            &path,
            format!(
                "version {} is not {VERSION}; move it away to start from scratch",
                file.version
            ),
        ));
    }
    Ok(Some(Checkpoint {
        engine: file.engine.get().as_bytes().to_vec(),
        positions: file
            .positions
            .into_iter()
            .map(|p| ((p.topic, p.partition), p.offset))
            .collect(),
    }))
}

/// Writes the checkpoint into `dir` atomically, creating `dir` if needed.
pub fn store(dir: &Path, checkpoint: &Checkpoint) -> Result<(), CheckpointError> {
    fs::create_dir_all(dir).map_err(|e| err(dir, format!("cannot create the directory: {e}")))?;
    let engine: &RawValue = serde_json::from_slice(&checkpoint.engine)
        .map_err(|e| err(dir, format!("engine state is not JSON: {e}")))?;
    let file = File1 {
        version: VERSION,
        positions: checkpoint
            .positions
            .iter()
            .map(|(&(topic, partition), &offset)| Position {
                topic,
                partition,
                offset,
            })
            .collect(),
        engine,
    };
    let bytes =
        serde_json::to_vec(&file).map_err(|e| err(dir, format!("cannot serialise: {e}")))?;
    let path = path_in(dir);
    let tmp = dir.join(format!("{FILE_NAME}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, &path)?;
        // The rename is durable only once the directory entry is.
        File::open(dir)?.sync_all()
    };
    write().map_err(|e| {
        err(
            &path,
            format!("cannot write: {e}; is the directory writable?"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves a checkpoint reads back as written, a missing one is None, and a corrupt one is a
    // clear error naming the file.
    #[test]
    fn round_trip() {
        let dir = std::env::temp_dir().join(format!("pipeline-ckpt-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        assert_eq!(load(&dir).unwrap(), None);
        let mut positions = BTreeMap::new();
        positions.insert((Topic::Traffic, 0), 41);
        positions.insert((Topic::Incidents, 2), 7);
        let c = Checkpoint {
            engine: br#"{"a":[1,2,{"b":null}]}"#.to_vec(),
            positions,
        };
        store(&dir, &c).unwrap();
        store(&dir, &c).unwrap();
        assert_eq!(load(&dir).unwrap(), Some(c));
        fs::write(path_in(&dir), b"{").unwrap();
        let e = load(&dir).unwrap_err().to_string();
        assert!(e.contains(FILE_NAME) && e.contains("move it away"), "{e}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
