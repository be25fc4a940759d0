//! A small filesystem of its own: a tmpfs of a given size, mounted while
//! the handle lives (root). Tests use it for a full disk, and for a
//! directory on another mount than its neighbour.

use std::path::{Path, PathBuf};

use local_fleet::Error as TestbedError;

/// A tmpfs mounted at `path` until dropped.
#[derive(Debug)]
pub struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    /// Creates `path` and mounts a tmpfs of `size` (`mount -o size=…`:
    /// `1m`, `3m`) on it.
    pub fn mount(path: &Path, size: &str) -> Result<Tmpfs, TestbedError> {
        std::fs::create_dir_all(path)
            .map_err(|e| TestbedError::io(format!("creating {}", path.display()), e))?;
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .output()
            .map_err(|e| TestbedError::io("running mount", e))?;
        if !out.status.success() {
            return Err(TestbedError::Command {
                command: format!("mount -t tmpfs {} (needs root)", path.display()),
                status: out.status.to_string(),
                output: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(Tmpfs {
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(&self.path)
            .status();
    }
}
