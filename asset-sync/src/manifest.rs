//! The manifest: what asset-sync last published, so a pass needs one listing
//! and a `stat` per file instead of re-hashing the tree.
//!
//! Per key it records the object's ETag, size and LastModified and the local
//! file's SHA-256, size and mtime. A file whose size or mtime no longer match
//! was changed or deleted behind our back and is restored. The manifest is
//! written atomically after every pass; losing it costs a re-verification
//! (files are hashed and adopted when they match), never a wrong file.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::fsio;

pub const FILE_NAME: &str = "manifest.json";
const FORMAT_VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub etag: String,
    pub size: u64,
    pub last_modified: Option<String>,
    /// The content's SHA-256 (hex) when the download computed it (the
    /// object carried a full-object SHA-256); empty otherwise: a digest
    /// nothing checks is not computed.
    #[serde(default)]
    pub sha256: String,
    pub mtime_ns: i128,
    /// How the download was checked (`md5`, `sha256`, `crc`, `size_only`);
    /// absent in manifests written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified: Option<crate::download::Verified>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    /// When the pass that wrote it listed the bucket completely: the mirror
    /// is what the bucket held then. A restart with S3 down serves it.
    #[serde(default)]
    pub listed_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Keyed by the key relative to the configured prefix.
    pub entries: BTreeMap<String, Entry>,
}

impl Manifest {
    /// Loads the manifest; a missing or unreadable one is an empty manifest
    /// (logged), since every file can be re-verified against the bucket.
    pub fn load(state_dir: &Path) -> Self {
        let path = state_dir.join(FILE_NAME);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Self::default(),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "manifest unreadable; re-verifying files");
                return Self::default();
            }
        };
        match serde_json::from_slice::<Manifest>(&bytes) {
            Ok(m) if m.version == FORMAT_VERSION => m,
            Ok(m) => {
                tracing::warn!(
                    version = m.version,
                    "manifest format unknown; re-verifying files"
                );
                Self::default()
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "manifest corrupt; re-verifying files");
                Self::default()
            }
        }
    }

    pub fn save(&self, state_dir: &Path) -> std::io::Result<()> {
        // A borrowing view: no clone of a map with thousands of entries.
        let bytes = serde_json::to_vec(&SerializeView {
            version: FORMAT_VERSION,
            listed_at: self.listed_at,
            entries: &self.entries,
        })
        .map_err(std::io::Error::other)?;
        fsio::write_atomic(&state_dir.join(FILE_NAME), &bytes)
    }
}

#[derive(Serialize)]
struct SerializeView<'a> {
    version: u32,
    listed_at: Option<chrono::DateTime<chrono::Utc>>,
    entries: &'a BTreeMap<String, Entry>,
}

/// Whether the local file still is what the manifest says was published.
pub fn local_matches(entry: &Entry, path: &Path) -> bool {
    match std::fs::symlink_metadata(path) {
        Ok(meta) => {
            meta.is_file() && meta.len() == entry.size && fsio::mtime_ns(&meta) == entry.mtime_ns
        }
        Err(_) => false,
    }
}
