//! The node's durable view of the cluster: the highest epoch it has seen and
//! who was primary at that epoch. Written (fsynced, atomically) before any
//! action that depends on it, so a node that restarts never forgets a
//! promotion it took part in.
//!
//! Beside it, the *witness* file: what the primary last told this member in
//! a lease request (its synchronous mode, its standby, its position) and
//! when. It is written before the lease is granted, so a member that loses
//! power and comes back still testifies, in its vote, that the primary had
//! degraded to asynchronous replication: a vote from a member that forgot
//! would let a backup that missed acknowledged writes promote.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: i64,
    pub primary: String,
    /// Unix seconds of the change.
    pub changed_at: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state file {path} is not valid JSON ({reason}); move it aside if this node's epoch is known to be stale")]
    Corrupt { path: PathBuf, reason: String },
    #[error("epoch may not go backwards (stored {stored}, offered {offered})")]
    Backwards { stored: i64, offered: i64 },
}

pub struct StateFile {
    path: PathBuf,
    /// One store at a time: the epoch check and the temp-file write and
    /// rename must not interleave (two writers in one temp file leave a
    /// file that no longer parses, and a node that cannot read its epoch).
    writing: std::sync::Mutex<()>,
}

impl StateFile {
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            writing: std::sync::Mutex::new(()),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The stored record; `None` on a node that never knew an epoch.
    pub fn load(&self) -> Result<Option<EpochRecord>, StateError> {
        load_json(&self.path)
    }

    /// Stores `record` durably: temp file, fsync, rename, fsync the
    /// directory. Refuses to lower the epoch.
    pub fn store(&self, record: &EpochRecord) -> Result<(), StateError> {
        // A writer that panicked held no file open past its own scope: the
        // lock protects nothing a poisoned guard could have left broken.
        let _writing = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(current) = self.load()? {
            if record.epoch < current.epoch {
                return Err(StateError::Backwards {
                    stored: current.epoch,
                    offered: record.epoch,
                });
            }
        }
        store_json(&self.path, record)
    }

    /// Stores `record` even over a newer epoch: only for a record the
    /// committed leader key shows was never the fleet's.
    pub fn replace(&self, record: &EpochRecord) -> Result<(), StateError> {
        let _writing = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        store_json(&self.path, record)
    }
}

/// Loads a JSON file written by [`store_json`]; `None` when there is none.
pub fn load_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, StateError> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StateError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    serde_json::from_slice(&text)
        .map(Some)
        .map_err(|e| StateError::Corrupt {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
}

/// Stores `value` durably: a temp file beside it (`<name>.tmp`), fsync,
/// rename, fsync the directory. Callers serialise their own writers.
pub fn store_json<T: Serialize>(path: &Path, value: &T) -> Result<(), StateError> {
    let io = |source| StateError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    std::fs::create_dir_all(&dir).map_err(io)?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        let body = serde_json::to_vec_pretty(value).unwrap_or_default();
        f.write_all(&body).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(io)?;
    std::fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reconcile loop, the failover round and the API can adopt an
    /// epoch at the same moment: concurrent stores must leave a file that
    /// loads, holding the highest epoch (seen in a test run: two writers
    /// interleaved in one temp file left "trailing characters" and a node
    /// that could no longer read its own epoch).
    #[test]
    fn concurrent_stores_never_corrupt_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = std::sync::Arc::new(StateFile::new(&dir.path().join("state.json")));
        for round in 0..20i64 {
            let threads: Vec<_> = (0..8i64)
                .map(|i| {
                    let f = f.clone();
                    std::thread::spawn(move || {
                        let epoch = round * 8 + i;
                        // Names of different lengths, so an interleaving
                        // shows as trailing bytes.
                        let primary = "n".repeat(1 + (i as usize * 7) % 40);
                        let _ = f.store(&EpochRecord {
                            epoch,
                            primary,
                            changed_at: 0.0,
                        });
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            let loaded = f.load().unwrap().unwrap();
            assert_eq!(loaded.epoch, round * 8 + 7, "round {round}");
        }
    }

    #[test]
    fn stores_and_refuses_to_go_back() {
        let dir = tempfile::tempdir().unwrap();
        let f = StateFile::new(&dir.path().join("sub/state.json"));
        assert_eq!(f.load().unwrap(), None);
        let r = EpochRecord {
            epoch: 3,
            primary: "backup".into(),
            changed_at: 1.0,
        };
        f.store(&r).unwrap();
        assert_eq!(f.load().unwrap(), Some(r.clone()));
        let older = EpochRecord { epoch: 2, ..r };
        assert!(matches!(
            f.store(&older),
            Err(StateError::Backwards {
                stored: 3,
                offered: 2
            })
        ));
        std::fs::write(f.path(), b"{nope").unwrap();
        assert!(matches!(f.load(), Err(StateError::Corrupt { .. })));
    }
}
