//! Cross-binary integration tests live in `tests/tests/it/` (one binary); the harness is the `testbed` crate.
//! What the test binaries here share:

use std::path::PathBuf;

/// The repository's root (the workspace this crate belongs to).
pub fn repo() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}
