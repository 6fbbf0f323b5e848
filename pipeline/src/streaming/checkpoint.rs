//! Checkpoint files. The driver's checkpoint bytes ([`CheckpointData::encode`], checksummed) are
//! written to a temporary file, fsynced, and renamed over the newest checkpoint after that one
//! was renamed to be the previous; the directory is fsynced so the renames are durable. A crash
//! at any point leaves the newest checkpoint, the previous one, or both.
//!
//! On start the newest is read; if it is truncated or corrupt (its checksum does not match) the
//! job says so and restores the previous one instead — records after it are read again, which
//! only re-writes rows with the same ids. With no valid checkpoint at all where one was written
//! the job refuses to start rather than silently starting over.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::driver::CheckpointData;

/// The newest checkpoint's file name inside the checkpoint directory.
pub const FILE_NAME: &str = "pipeline-checkpoint";
/// The previous checkpoint's file name.
pub const PREVIOUS: &str = "pipeline-checkpoint.prev";
/// What versions before the checksummed format wrote.
const OLD_FILE_NAME: &str = "pipeline-checkpoint.json";

/// A checkpoint that could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("checkpoint {path}: {detail}")]
pub struct CheckpointError {
    /// The file or directory.
    pub path: PathBuf,
    /// What failed and what to do.
    pub detail: String,
}

fn err(path: &Path, detail: String) -> CheckpointError {
    CheckpointError {
        path: path.to_owned(),
        detail,
    }
}

/// The newest checkpoint file in `dir`.
pub fn path_in(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

/// A checkpoint read from disk.
#[derive(Debug)]
pub struct Loaded {
    /// What it holds.
    pub data: CheckpointData,
    /// The file it came from.
    pub path: PathBuf,
    /// Why the newest checkpoint was not used, when the previous one was.
    pub newest_refused: Option<String>,
    /// Its size in bytes.
    pub bytes: usize,
}

/// Reads one checkpoint file: `Ok(None)` if it does not exist, `Err(reason)` if it is not a
/// valid checkpoint.
fn read(path: &Path) -> Result<Option<(CheckpointData, usize)>, String> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read: {e}")),
    };
    CheckpointData::decode(&bytes)
        .map(|d| Some((d, bytes.len())))
        .map_err(|e| e.to_string())
}

/// Reads the newest valid checkpoint in `dir`: the newest, or the previous when the newest is
/// missing, truncated or corrupt. `Ok(None)` when there is none at all.
pub fn load(dir: &Path) -> Result<Option<Loaded>, CheckpointError> {
    let newest = path_in(dir);
    let previous = dir.join(PREVIOUS);
    let old = dir.join(OLD_FILE_NAME);
    if old.exists() && !newest.exists() && !previous.exists() {
        return Err(err(
            &old,
            "was written by a version before checksummed checkpoints and cannot be restored; \
             move it away to start from scratch (the group's committed offsets are then used)"
                .into(),
        ));
    }
    let refused = match read(&newest) {
        Ok(Some((data, bytes))) => {
            return Ok(Some(Loaded {
                data,
                path: newest,
                newest_refused: None,
                bytes,
            }));
        }
        Ok(None) => None,
        Err(reason) => Some(reason),
    };
    match read(&previous) {
        Ok(Some((data, bytes))) => Ok(Some(Loaded {
            data,
            path: previous,
            newest_refused: Some(refused.unwrap_or_else(|| "it is missing".to_owned())),
            bytes,
        })),
        Ok(None) => match refused {
            // A crash between the two renames leaves only the previous one; a first start
            // leaves neither.
            None => Ok(None),
            Some(reason) => Err(err(
                &newest,
                format!(
                    "{reason}, and there is no previous checkpoint to fall back to; move the \
                     directory away to start from scratch"
                ),
            )),
        },
        Err(prev_reason) => Err(err(
            &newest,
            format!(
                "the newest checkpoint is not usable ({}) and neither is the previous one \
                 ({prev_reason}); move the directory away to start from scratch",
                refused.unwrap_or_else(|| "missing".to_owned())
            ),
        )),
    }
}

/// Writes checkpoint bytes into `dir` (created if needed): temporary file, fsync, the newest
/// becomes the previous, the temporary becomes the newest, fsync of the directory.
pub fn store(dir: &Path, bytes: &[u8]) -> Result<(), CheckpointError> {
    fs::create_dir_all(dir).map_err(|e| err(dir, format!("cannot create the directory: {e}")))?;
    let newest = path_in(dir);
    let previous = dir.join(PREVIOUS);
    let tmp = dir.join(format!("{FILE_NAME}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        if newest.exists() {
            fs::rename(&newest, &previous)?;
        }
        fs::rename(&tmp, &newest)?;
        // The renames are durable only once the directory entry is.
        File::open(dir)?.sync_all()
    };
    write().map_err(|e| {
        err(
            &newest,
            format!("cannot write: {e}; is the directory writable and the disk not full?"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Engine, EngineConfig};
    use crate::model::Topic;

    fn data(id: u64, offset: i64) -> CheckpointData {
        CheckpointData {
            id,
            taken_ms: 0,
            engine: Engine::new(EngineConfig::default()).expect("default config"),
            positions: [((Topic::Traffic, 0), offset)].into_iter().collect(),
        }
    }

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("pipeline-ckpt-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    // Proves a checkpoint reads back as written, the previous one is kept, and none is None.
    #[test]
    fn stores_newest_and_keeps_previous() {
        let d = dir("keep");
        assert!(load(&d).unwrap().is_none());
        store(&d, &data(1, 10).encode()).unwrap();
        store(&d, &data(2, 20).encode()).unwrap();
        let l = load(&d).unwrap().unwrap();
        assert_eq!((l.data.id, l.newest_refused), (2, None));
        assert!(d.join(PREVIOUS).exists());
        fs::remove_dir_all(&d).unwrap();
    }

    // Proves a truncated or corrupt newest checkpoint is reported and the previous one used,
    // and that with no valid predecessor loading fails instead of starting over.
    #[test]
    fn falls_back_to_the_previous_checkpoint() {
        let d = dir("fallback");
        store(&d, &data(1, 10).encode()).unwrap();
        store(&d, &data(2, 20).encode()).unwrap();
        let bytes = fs::read(path_in(&d)).unwrap();
        fs::write(path_in(&d), &bytes[..bytes.len() / 2]).unwrap();
        let l = load(&d).unwrap().unwrap();
        assert_eq!(l.data.id, 1);
        assert!(l.newest_refused.unwrap().contains("checksum"));
        fs::write(d.join(PREVIOUS), b"garbage").unwrap();
        let e = load(&d).unwrap_err().to_string();
        assert!(
            e.contains("neither is the previous") && e.contains("move"),
            "{e}"
        );
        fs::remove_file(d.join(PREVIOUS)).unwrap();
        let e = load(&d).unwrap_err().to_string();
        assert!(e.contains("no previous checkpoint"), "{e}");
        fs::remove_dir_all(&d).unwrap();
    }

    // Proves a checkpoint of the older format is refused with what to do, not misread.
    #[test]
    fn an_old_format_checkpoint_is_refused() {
        let d = dir("old");
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join(OLD_FILE_NAME), b"{}").unwrap();
        let e = load(&d).unwrap_err().to_string();
        assert!(e.contains("move it away"), "{e}");
        fs::remove_dir_all(&d).unwrap();
    }
}
