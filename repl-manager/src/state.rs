//! The node's durable view of the cluster: the highest epoch it has seen and
//! who was primary at that epoch. Written (fsynced, atomically) before any
//! action that depends on it, so a node that restarts never forgets a
//! promotion it took part in.

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
}

impl StateFile {
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The stored record; `None` on a node that never knew an epoch.
    pub fn load(&self) -> Result<Option<EpochRecord>, StateError> {
        let text = match std::fs::read(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StateError::Io {
                    path: self.path.clone(),
                    source,
                })
            }
        };
        serde_json::from_slice(&text)
            .map(Some)
            .map_err(|e| StateError::Corrupt {
                path: self.path.clone(),
                reason: e.to_string(),
            })
    }

    /// Stores `record` durably: temp file, fsync, rename, fsync the
    /// directory. Refuses to lower the epoch.
    pub fn store(&self, record: &EpochRecord) -> Result<(), StateError> {
        if let Some(current) = self.load()? {
            if record.epoch < current.epoch {
                return Err(StateError::Backwards {
                    stored: current.epoch,
                    offered: record.epoch,
                });
            }
        }
        let io = |source| StateError::Io {
            path: self.path.clone(),
            source,
        };
        let dir = self
            .path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        std::fs::create_dir_all(&dir).map_err(io)?;
        let tmp = self.path.with_extension("tmp");
        {
            let mut f = std::fs::File::create(&tmp).map_err(io)?;
            let body = serde_json::to_vec_pretty(record).unwrap_or_default();
            f.write_all(&body).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, &self.path).map_err(io)?;
        std::fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
