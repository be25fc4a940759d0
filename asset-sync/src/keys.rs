//! Turning object keys into local paths, safely.
//!
//! An object key is data from the network: whoever can write the bucket
//! chooses it. A key becomes a path under the target directory only if every
//! rule below holds; otherwise it is skipped with a warning and counted in
//! `aurora_asset_sync_keys_rejected_total{rule}`. The rules:
//!
//! | rule | why |
//! |---|---|
//! | `empty` — nothing left after the prefix | would name the target itself |
//! | `directory_marker` — ends in `/` | a folder placeholder, not a file (skipped, not mirrored) |
//! | `absolute` — starts with `/` | would escape the target |
//! | `dot_segment` — a `.` or `..` component | `..` escapes the target; `.` aliases another key |
//! | `empty_segment` — `a//b` | aliases `a/b` on disk |
//! | `backslash` — contains `\` | a path separator on other systems and in some tools |
//! | `control` — NUL or another control character | NUL truncates paths in C; others break logs and shells |
//! | `too_long` — a component over 255 bytes or the key over 1024 bytes | beyond filesystem limits; fail early, clearly |
//! | `reserved` — first component is `.asset-sync` | older versions kept their state there; the start-up rename probe uses the name |
//! | `file_and_prefix` — a key that is also a prefix of other keys (`a` and `a/b`) | cannot be both a file and a directory; the file is skipped, the keys under it are kept |
//! | `invalid_utf8` — never reaches us: S3 keys are UTF-8 by definition |

use std::collections::HashSet;
use std::path::PathBuf;

/// A name in the target no key may take: older versions' state directory,
/// and the start-up rename probe (`state`).
pub const STATE_DIR_NAME: &str = ".asset-sync";

/// The longest key (after the prefix) we accept, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;
/// The longest path component, in bytes (`NAME_MAX` on Linux).
pub const MAX_COMPONENT_BYTES: usize = 255;

/// Why a key was not mirrored; the label of the rejection metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rejection {
    Empty,
    DirectoryMarker,
    Absolute,
    DotSegment,
    EmptySegment,
    Backslash,
    Control,
    TooLong,
    Reserved,
    FileAndPrefix,
}

impl Rejection {
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::Empty => "empty",
            Rejection::DirectoryMarker => "directory_marker",
            Rejection::Absolute => "absolute",
            Rejection::DotSegment => "dot_segment",
            Rejection::EmptySegment => "empty_segment",
            Rejection::Backslash => "backslash",
            Rejection::Control => "control",
            Rejection::TooLong => "too_long",
            Rejection::Reserved => "reserved",
            Rejection::FileAndPrefix => "file_and_prefix",
        }
    }

    pub const ALL: [Rejection; 10] = [
        Rejection::Empty,
        Rejection::DirectoryMarker,
        Rejection::Absolute,
        Rejection::DotSegment,
        Rejection::EmptySegment,
        Rejection::Backslash,
        Rejection::Control,
        Rejection::TooLong,
        Rejection::Reserved,
        Rejection::FileAndPrefix,
    ];
}

/// Checks one key (already stripped of the configured prefix) and returns the
/// relative path it maps to.
pub fn relative_path(rel_key: &str) -> Result<PathBuf, Rejection> {
    if rel_key.is_empty() {
        return Err(Rejection::Empty);
    }
    if rel_key.ends_with('/') {
        return Err(Rejection::DirectoryMarker);
    }
    if rel_key.starts_with('/') {
        return Err(Rejection::Absolute);
    }
    if rel_key.contains('\\') {
        return Err(Rejection::Backslash);
    }
    if rel_key.chars().any(char::is_control) {
        return Err(Rejection::Control);
    }
    if rel_key.len() > MAX_KEY_BYTES {
        return Err(Rejection::TooLong);
    }
    let mut path = PathBuf::new();
    for (i, part) in rel_key.split('/').enumerate() {
        match part {
            "" => return Err(Rejection::EmptySegment),
            "." | ".." => return Err(Rejection::DotSegment),
            p if p.len() > MAX_COMPONENT_BYTES => return Err(Rejection::TooLong),
            p if i == 0 && p == STATE_DIR_NAME => return Err(Rejection::Reserved),
            p => path.push(p),
        }
    }
    Ok(path)
}

/// Keys that are also directories of other keys (`a` when `a/b` exists).
/// Works on the relative keys of one complete listing.
pub fn file_prefix_conflicts<'a>(keys: impl IntoIterator<Item = &'a str>) -> HashSet<String> {
    let keys: Vec<&str> = keys.into_iter().collect();
    let mut dirs: HashSet<&str> = HashSet::new();
    for k in &keys {
        let mut end = 0;
        while let Some(i) = k[end..].find('/') {
            end += i;
            dirs.insert(&k[..end]);
            end += 1;
        }
    }
    keys.into_iter()
        .filter(|k| dirs.contains(k))
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted() {
        assert_eq!(relative_path("a.png").unwrap(), PathBuf::from("a.png"));
        assert_eq!(
            relative_path("img/icons/x y.png").unwrap(),
            PathBuf::from("img/icons/x y.png")
        );
        assert!(relative_path("..hidden/ok..png").is_ok());
        assert!(relative_path("ünïcode/名前.png").is_ok());
    }

    #[test]
    fn rejected() {
        let long_component = format!("{}.png", "a".repeat(300));
        let long_key = "ab/".repeat(400);
        let cases = [
            ("", Rejection::Empty),
            ("dir/", Rejection::DirectoryMarker),
            ("/etc/passwd", Rejection::Absolute),
            ("../escape", Rejection::DotSegment),
            ("a/../../escape", Rejection::DotSegment),
            ("a/./b", Rejection::DotSegment),
            ("..", Rejection::DotSegment),
            ("a//b", Rejection::EmptySegment),
            ("a\\..\\b", Rejection::Backslash),
            ("nul\0byte", Rejection::Control),
            ("new\nline", Rejection::Control),
            (long_component.as_str(), Rejection::TooLong),
            (long_key.trim_end_matches('/'), Rejection::TooLong),
            (".asset-sync/manifest.json", Rejection::Reserved),
        ];
        for (key, rule) in cases {
            assert_eq!(relative_path(key), Err(rule), "{key:?}");
        }
    }

    #[test]
    fn file_and_prefix() {
        let c = file_prefix_conflicts(["a", "a/b", "a/c/d", "b", "bc/d", "a/c"]);
        let mut got: Vec<_> = c.into_iter().collect();
        got.sort();
        assert_eq!(got, vec!["a".to_string(), "a/c".to_string()]);
    }
}
