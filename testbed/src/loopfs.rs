//! A real ext4 filesystem on a loop device that a test can freeze
//! (`fsfreeze`): writes and fsyncs to it block until it is thawed, while
//! reads of what is cached still answer. That is a storage stall (a
//! hung disk or volume) as a server sees it. Root only.

use std::path::{Path, PathBuf};

use local_fleet::netns::run;
use local_fleet::Error as TestbedError;

/// An ext4 image mounted at `path` until dropped; thawed before unmounting.
#[derive(Debug)]
pub struct LoopFs {
    path: PathBuf,
    image: PathBuf,
}

/// A path as a command argument (the test directories are UTF-8).
fn arg(p: &Path) -> &str {
    p.to_str().unwrap_or_default()
}

impl LoopFs {
    /// Makes a `size_mb` ext4 image beside `path` and mounts it on `path`.
    pub fn mount(path: &Path, size_mb: u64) -> Result<LoopFs, TestbedError> {
        std::fs::create_dir_all(path)
            .map_err(|e| TestbedError::io(format!("creating {}", path.display()), e))?;
        let image = path.with_extension("ext4");
        let file = std::fs::File::create(&image)
            .map_err(|e| TestbedError::io(format!("creating {}", image.display()), e))?;
        file.set_len(size_mb * 1024 * 1024)
            .map_err(|e| TestbedError::io(format!("sizing {}", image.display()), e))?;
        run("mkfs.ext4", &["-q", "-F", arg(&image)])?;
        run("mount", &["-o", "loop", arg(&image), arg(path)])?;
        Ok(LoopFs {
            path: path.to_path_buf(),
            image,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every write to the filesystem blocks from now until [`LoopFs::thaw`].
    pub fn freeze(&self) -> Result<(), TestbedError> {
        run("fsfreeze", &["--freeze", arg(&self.path)])
    }

    pub fn thaw(&self) -> Result<(), TestbedError> {
        run("fsfreeze", &["--unfreeze", arg(&self.path)])
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        // A frozen filesystem cannot be unmounted, and whatever waits on
        // it would wait for good: thaw first (an error only says it was
        // not frozen).
        let _ = self.thaw();
        let _ = std::process::Command::new("umount")
            .arg("--lazy")
            .arg(&self.path)
            .status();
        let _ = std::fs::remove_file(&self.image);
    }
}
