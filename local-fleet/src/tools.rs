//! Finding the software the testbed runs, with the install command to print
//! when it is missing.

use std::path::{Path, PathBuf};

use crate::error::Error;

/// Pinned Garage version (the tests and benchmarks are measured against it).
pub const GARAGE_VERSION: &str = "2.5.0";

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

pub use sidecar_kit::cli::which;

/// The directory holding PostgreSQL's server binaries (`initdb`, `pg_ctl`,
/// `postgres`, `pg_basebackup`, `pg_rewind`): `$PG_BINDIR`, else the newest
/// `/usr/lib/postgresql/<v>/bin`, else wherever `initdb` is on `PATH`.
pub fn pg_bindir() -> Result<PathBuf, Error> {
    if let Some(dir) = std::env::var_os("PG_BINDIR").map(PathBuf::from) {
        if is_executable(&dir.join("initdb")) {
            return Ok(dir);
        }
    }
    if let Some(bin) = sidecar_kit::cli::newest_pg_bin(Path::new("/usr/lib/postgresql"), "initdb") {
        return Ok(bin);
    }
    if let Some(initdb) = which("initdb") {
        let resolved = std::fs::canonicalize(&initdb).unwrap_or(initdb);
        if let Some(dir) = resolved.parent() {
            return Ok(dir.to_path_buf());
        }
    }
    Err(Error::Missing {
        what: "PostgreSQL server binaries (initdb, pg_ctl)".into(),
        install: "apt-get install -y postgresql".into(),
    })
}

/// The `garage` binary: `$GARAGE_BIN`, `PATH`, or `~/.cargo/bin/garage`.
pub fn garage_bin() -> Result<PathBuf, Error> {
    let candidates = [
        std::env::var_os("GARAGE_BIN").map(PathBuf::from),
        which("garage"),
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo/bin/garage")),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|p| is_executable(p))
        .ok_or_else(|| Error::Missing {
            what: format!("Garage {GARAGE_VERSION} (S3 server)"),
            install: format!("cargo install garage --version {GARAGE_VERSION} --locked"),
        })
}

/// A binary of this workspace (`repl-manager`, `dns-sync`, …): `$AURORA_BIN_DIR`,
/// else the cargo target directory the running executable was built in.
pub fn workspace_bin(name: &str) -> Result<PathBuf, Error> {
    if let Some(dir) = std::env::var_os("AURORA_BIN_DIR").map(PathBuf::from) {
        let p = dir.join(name);
        if is_executable(&p) {
            return Ok(p);
        }
    }
    // Tests run from target/<profile>/deps/; binaries sit in target/<profile>/.
    // The CLI itself runs from target/<profile>/ (or an install dir).
    let exe = std::env::current_exe().map_err(|e| Error::io("current_exe", e))?;
    for dir in exe.ancestors().skip(1).take(3) {
        let p = dir.join(name);
        if is_executable(&p) {
            return Ok(p);
        }
    }
    if let Some(p) = which(name) {
        return Ok(p);
    }
    Err(Error::Missing {
        what: format!("the `{name}` binary"),
        install: "cargo build --workspace --bins".into(),
    })
}
