//! asset-sync's state directory: the manifest, the lock and the staging
//! files, kept outside the served target. Checked once at start, under the
//! lock: staged files must reach the target by `rename`, which only works
//! within one filesystem *and one mount* (two bind mounts of the same disk
//! fail with `EXDEV`, as two Docker volumes do), so the check renames a
//! probe file rather than comparing device numbers.

use std::path::{Path, PathBuf};

use crate::config::SyncConfig;
use crate::lock::{LockError, StateLock};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A configuration the operator must change (exit 2).
    #[error("sync.state_dir {state} and sync.target_dir {target} are not on one filesystem and mount: finished files are renamed from the state directory into the target, so put both on one volume (e.g. <volume>/state and <volume>/mirror)")]
    CrossDevice { state: PathBuf, target: PathBuf },
    /// An older asset-sync still runs on this target (exit 2).
    #[error(transparent)]
    Locked(#[from] LockError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

impl StateError {
    /// Whether the operator's configuration (or another process) is the
    /// cause: `main` exits 2 for these, before doing anything.
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            StateError::CrossDevice { .. } | StateError::Locked(LockError::Held { .. })
        )
    }
}

/// What `prepare` did, for the log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Prepared {
    /// The manifest of an older version was moved out of the target.
    pub migrated_manifest: bool,
    /// The old in-target state directory was removed.
    pub removed_legacy: bool,
}

/// Creates the state and target directories, proves a rename between them
/// works, and moves an older version's in-target state out (its manifest
/// kept, so nothing is downloaded again; its staging files deleted). Call
/// it holding the state lock.
pub fn prepare(sync: &SyncConfig) -> Result<Prepared, StateError> {
    let state = sync.state_dir();
    let target = &sync.target_dir;
    create_dir(&state)?;
    create_dir(target)?;
    probe_rename(&state, target)?;
    migrate_legacy(&state, &sync.legacy_state_dir())
}

fn create_dir(dir: &Path) -> Result<(), StateError> {
    std::fs::create_dir_all(dir).map_err(|source| StateError::Io {
        context: format!("creating {}", dir.display()),
        source,
    })
}

/// Renames a probe file from `state` into `target` and back. It exists in
/// the target for the two system calls, empty, under the reserved name
/// `.asset-sync` that no key can have (or inside an older version's
/// directory of that name), so it can never replace a mirrored file.
fn probe_rename(state: &Path, target: &Path) -> Result<(), StateError> {
    let io = |context: String| {
        move |source| StateError::Io {
            context: context.clone(),
            source,
        }
    };
    let here = state.join("rename-probe");
    let reserved = target.join(crate::keys::STATE_DIR_NAME);
    let there = if reserved.is_dir() {
        reserved.join("rename-probe")
    } else {
        reserved
    };
    std::fs::File::create(&here).map_err(io(format!("creating {}", here.display())))?;
    match std::fs::rename(&here, &there) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(nix::libc::EXDEV) => {
            let _ = std::fs::remove_file(&here);
            return Err(StateError::CrossDevice {
                state: state.to_path_buf(),
                target: target.to_path_buf(),
            });
        }
        Err(e) => {
            let _ = std::fs::remove_file(&here);
            return Err(io(format!(
                "renaming {} into {}",
                here.display(),
                target.display()
            ))(e));
        }
    }
    // Back out of the served directory, then gone.
    if std::fs::rename(&there, &here).is_err() {
        let _ = std::fs::remove_file(&there);
    }
    let _ = std::fs::remove_file(&here);
    Ok(())
}

/// An older asset-sync kept `manifest.json`, `lock` and `staging/` in
/// `<target>/.asset-sync`, where the mirror's readers could see them.
fn migrate_legacy(state: &Path, legacy: &Path) -> Result<Prepared, StateError> {
    let mut done = Prepared::default();
    // A real directory only: a symlink of that name is not followed.
    let is_dir = std::fs::symlink_metadata(legacy).is_ok_and(|m| m.is_dir());
    if !is_dir {
        return Ok(done);
    }
    // An older process still running there would keep writing into it.
    let old_lock = StateLock::acquire(legacy)?;
    let old_manifest = legacy.join(crate::manifest::FILE_NAME);
    let new_manifest = state.join(crate::manifest::FILE_NAME);
    if old_manifest.is_file() && !new_manifest.exists() {
        std::fs::rename(&old_manifest, &new_manifest).map_err(|source| StateError::Io {
            context: format!("moving {} to {}", old_manifest.display(), state.display()),
            source,
        })?;
        crate::fsio::sync_dir(state).map_err(|source| StateError::Io {
            context: format!("syncing {}", state.display()),
            source,
        })?;
        done.migrated_manifest = true;
    }
    drop(old_lock);
    std::fs::remove_dir_all(legacy).map_err(|source| StateError::Io {
        context: format!("removing the old state directory {}", legacy.display()),
        source,
    })?;
    done.removed_legacy = true;
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sync(root: &Path) -> SyncConfig {
        let mut c = crate::Config::default().sync;
        c.target_dir = root.join("mirror");
        c.state_dir = Some(root.join("state"));
        c
    }

    #[test]
    fn prepare_creates_both_and_leaves_nothing_in_the_target() {
        let dir = tempfile::tempdir().unwrap();
        let s = sync(dir.path());
        assert_eq!(prepare(&s).unwrap(), Prepared::default());
        assert!(s.state_dir().is_dir());
        assert_eq!(std::fs::read_dir(&s.target_dir).unwrap().count(), 0);
        assert_eq!(std::fs::read_dir(s.state_dir()).unwrap().count(), 0);
    }

    #[test]
    fn an_older_versions_state_moves_out_of_the_target() {
        let dir = tempfile::tempdir().unwrap();
        let s = sync(dir.path());
        let legacy = s.legacy_state_dir();
        std::fs::create_dir_all(legacy.join("staging")).unwrap();
        std::fs::write(legacy.join("manifest.json"), b"{\"entries\":{}}").unwrap();
        std::fs::write(legacy.join("staging/x.part"), b"half").unwrap();
        std::fs::write(s.target_dir.join("logo.png"), b"logo").unwrap();
        let done = prepare(&s).unwrap();
        assert!(done.migrated_manifest && done.removed_legacy, "{done:?}");
        assert!(!legacy.exists());
        assert_eq!(
            std::fs::read(s.state_dir().join("manifest.json")).unwrap(),
            b"{\"entries\":{}}"
        );
        assert_eq!(
            std::fs::read(s.target_dir.join("logo.png")).unwrap(),
            b"logo"
        );
    }

    #[test]
    fn an_older_process_still_running_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let s = sync(dir.path());
        let held = StateLock::acquire(&s.legacy_state_dir()).unwrap();
        let err = prepare(&s).unwrap_err();
        assert!(err.is_config(), "{err}");
        assert!(
            err.to_string()
                .contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(held);
        prepare(&s).unwrap();
    }

    #[test]
    fn a_state_dir_on_another_mount_is_refused() {
        // A tmpfs is another filesystem (needs root, as CI has).
        let dir = tempfile::tempdir().unwrap();
        let other = testbed::Tmpfs::mount(&dir.path().join("other"), "1m").unwrap();
        let mut s = sync(dir.path());
        s.state_dir = Some(other.path().join("state"));
        let err = prepare(&s).unwrap_err();
        assert!(err.is_config(), "{err}");
        assert!(err.to_string().contains("one filesystem"), "{err}");
    }
}
