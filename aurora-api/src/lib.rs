//! The HTTP contract between Aurora's binaries.
//!
//! Every sidecar serves these types and every client (aurora-cli, the
//! sandbox, health-monitor's checks, repl-manager's peers) reads them, so a
//! field is named once, here. `cluster-db` is the same thing for the
//! database.
//!
//! # Versions
//!
//! Operators swap sidecars one at a time, so a client and a server of
//! different releases talk all the time. The rule that makes that safe:
//!
//! - Every answer of every sidecar carries [`API_HEADER`] with
//!   [`API_VERSION`] (sidecar-kit's admin server adds it).
//! - Within a version, the contract only grows: a field is added (readers
//!   ignore fields they do not know, and every field a reader might miss
//!   has a default), or a value is added to an enum (readers keep a value
//!   they do not know as `Other`, see [`wire_enum!`]). Nothing is renamed,
//!   removed or given a new meaning.
//! - A change an older reader would misread bumps [`API_VERSION`]. A reader
//!   refuses an answer of a newer version with [`VersionError::Newer`],
//!   which says which side to upgrade, instead of misreading it. An answer
//!   without the header comes from a sidecar older than the header: version 1.

pub mod assets;
pub mod dns;
pub mod join;
pub mod lsn;
pub mod monitor;
pub mod repl;

pub use lsn::Lsn;

/// The contract version this build serves and reads.
pub const API_VERSION: u32 = 1;

/// The response header that carries [`API_VERSION`].
pub const API_HEADER: &str = "x-aurora-api";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    #[error(
        "it speaks API version {theirs}; this build reads up to version {ours}: upgrade this tool to the sidecar's release"
    )]
    Newer { theirs: u32, ours: u32 },
    #[error("its {API_HEADER} header {0:?} is not a version number")]
    Malformed(String),
}

/// The version an answer was written in, from its [`API_HEADER`] value:
/// an error when this build cannot read it.
pub fn check_version(header: Option<&str>) -> Result<u32, VersionError> {
    let Some(raw) = header else { return Ok(1) };
    let theirs: u32 = raw
        .trim()
        .parse()
        .map_err(|_| VersionError::Malformed(raw.to_string()))?;
    if theirs > API_VERSION {
        return Err(VersionError::Newer {
            theirs,
            ours: API_VERSION,
        });
    }
    Ok(theirs)
}

/// For a server's tests: `body`, answered with `version_header`, is a `T`
/// of this build's contract, whole. The header must be this build's
/// version, and the body must read as `T` and write back as the same JSON:
/// a field the server sends that `T` does not know (or writes differently)
/// is named, since a client would silently drop it.
pub fn conforms<T>(version_header: Option<&str>, body: &[u8]) -> Result<T, String>
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    let want = API_VERSION.to_string();
    if version_header != Some(want.as_str()) {
        return Err(format!(
            "{API_HEADER} is {version_header:?}, expected {want:?}"
        ));
    }
    let raw: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let typed: T = serde_json::from_value(raw.clone())
        .map_err(|e| format!("not a {}: {e}", std::any::type_name::<T>()))?;
    let again = serde_json::to_value(&typed).map_err(|e| e.to_string())?;
    let mut diffs = Vec::new();
    diff("", &raw, &again, &mut diffs);
    if diffs.is_empty() {
        Ok(typed)
    } else {
        Err(format!(
            "{} does not carry all of the answer: {}",
            std::any::type_name::<T>(),
            diffs.join("; ")
        ))
    }
}

fn diff(at: &str, sent: &serde_json::Value, read: &serde_json::Value, out: &mut Vec<String>) {
    use serde_json::Value;
    match (sent, read) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                let path = format!("{at}.{k}");
                match b.get(k) {
                    Some(w) => diff(&path, v, w, out),
                    None => out.push(format!("{path} is not in the contract")),
                }
            }
            for k in b.keys().filter(|k| !a.contains_key(*k)) {
                out.push(format!("{at}.{k} was not sent"));
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (v, w)) in a.iter().zip(b).enumerate() {
                diff(&format!("{at}[{i}]"), v, w, out);
            }
        }
        (a, b) if a == b => {}
        // Integers the server wrote as floats (or back) are one number.
        (Value::Number(a), Value::Number(b)) if a.as_f64() == b.as_f64() => {}
        (a, b) => out.push(format!("{at}: sent {a}, read back {b}")),
    }
}

/// The body of every error answer: `{"error": "...", "detail": ...}`.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ErrorBody {
    pub error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Value>,
}

/// An enum on the wire: lowercase (or given) strings for the known values,
/// and `Other(text)` for a value a newer sidecar added, kept as sent so it
/// is shown, not lost or refused.
#[macro_export]
macro_rules! wire_enum {
    ($(#[$meta:meta])* $vis:vis enum $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash)]
        $vis enum $name {
            $($(#[$vmeta])* $variant,)+
            /// A value this build does not know (a newer sidecar's).
            Other(String),
        }

        impl $name {
            pub fn as_str(&self) -> &str {
                match self {
                    $($name::$variant => $text,)+
                    $name::Other(s) => s,
                }
            }

            /// Every value this build knows.
            pub const KNOWN: &'static [&'static str] = &[$($text),+];
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::std::convert::From<&str> for $name {
            fn from(s: &str) -> Self {
                match s {
                    $($text => $name::$variant,)+
                    other => $name::Other(other.to_string()),
                }
            }
        }

        impl ::std::cmp::PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }

        impl ::std::cmp::PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }

        impl ::serde::Serialize for $name {
            fn serialize<S: ::serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <::std::borrow::Cow<'de, str>>::deserialize(d)?;
                Ok($name::from(s.as_ref()))
            }
        }
    };
}

wire_enum! {
    /// A member's configured role.
    pub enum Role {
        Lead => "lead",
        Backup => "backup",
        Compute => "compute",
    }
}

impl Default for Role {
    fn default() -> Self {
        Role::Other(String::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_older_or_equal_are_read_newer_ones_refused_with_the_fix() {
        assert_eq!(check_version(None), Ok(1));
        assert_eq!(check_version(Some("1")), Ok(1));
        let e = check_version(Some(&(API_VERSION + 1).to_string())).unwrap_err();
        assert!(e.to_string().contains("upgrade this tool"), "{e}");
        assert!(matches!(
            check_version(Some("v2")),
            Err(VersionError::Malformed(_))
        ));
    }

    #[test]
    fn conformance_names_what_the_contract_misses() {
        // `monitor::FleetHealth` is small enough to write out whole.
        let body = br#"{"healthy":false,"reasons":["x"]}"#;
        let h: monitor::FleetHealth = conforms(Some("1"), body).unwrap();
        assert_eq!(h.reasons, ["x"]);
        let extra = br#"{"healthy":true,"reasons":[],"since":3}"#;
        let e = conforms::<monitor::FleetHealth>(Some("1"), extra).unwrap_err();
        assert!(e.contains(".since is not in the contract"), "{e}");
        let missing = br#"{"healthy":true}"#;
        let e = conforms::<monitor::FleetHealth>(Some("1"), missing).unwrap_err();
        assert!(e.contains(".reasons was not sent"), "{e}");
        let e = conforms::<monitor::FleetHealth>(None, body).unwrap_err();
        assert!(e.contains(API_HEADER), "{e}");
    }

    #[test]
    fn an_unknown_enum_value_is_kept_not_refused() {
        let r: Role = serde_json::from_str("\"witness\"").unwrap();
        assert_eq!(r, Role::Other("witness".into()));
        assert_eq!(serde_json::to_string(&r).unwrap(), "\"witness\"");
        let r: Role = serde_json::from_str("\"backup\"").unwrap();
        assert_eq!(r, Role::Backup);
        assert!(r == "backup");
    }
}
