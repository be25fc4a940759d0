//! A connection string as a config value: parsed once, when the config
//! loads, so a bad one is a config error naming its key (exit 2) and the
//! running sidecar only ever holds a ready target. The text stays a
//! [`Secret`]: it may carry a password.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sidecar_kit::Secret;

use crate::connect::DbTarget;
use crate::error::DbError;

#[derive(Clone)]
pub struct Dsn {
    text: Secret,
    target: DbTarget,
}

impl Dsn {
    pub fn parse(text: &str) -> Result<Self, DbError> {
        Ok(Self {
            target: DbTarget::parse(text)?,
            text: Secret::new(text),
        })
    }

    /// `host=127.0.0.1 port=5432 user=postgres dbname=postgres`, with
    /// `target_session_attrs=read-write` when `read_write`: the defaults a
    /// config starts from, built without parsing.
    pub fn local_default(read_write: bool) -> Self {
        let mut config = tokio_postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(5432)
            .user("postgres")
            .dbname("postgres");
        let mut text = String::from("host=127.0.0.1 port=5432 user=postgres dbname=postgres");
        if read_write {
            config.target_session_attrs(tokio_postgres::config::TargetSessionAttrs::ReadWrite);
            text.push_str(" target_session_attrs=read-write");
        }
        Self {
            text: Secret::new(text),
            target: DbTarget::from_config(config),
        }
    }

    /// Where to connect.
    pub fn target(&self) -> &DbTarget {
        &self.target
    }

    /// Hosts, ports, database and user; never the password.
    pub fn label(&self) -> &str {
        &self.target.label
    }

    /// The connection string itself, for a program that takes one
    /// (`pg_basebackup -d`).
    pub fn expose(&self) -> &str {
        self.text.expose()
    }
}

impl PartialEq for Dsn {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl fmt::Debug for Dsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Dsn({})", self.label())
    }
}

/// Written as the secret it is (`[redacted]` in `--check-config`).
impl Serialize for Dsn {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.text.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Dsn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = Secret::deserialize(d)?;
        let target = DbTarget::parse(text.expose()).map_err(serde::de::Error::custom)?;
        Ok(Self { text, target })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parsed_on_load_and_never_printed() {
        let d: Dsn = serde_json::from_str(
            r#""host=10.0.0.1 port=5433 user=aurora password=hunter2 dbname=aurora""#,
        )
        .unwrap();
        assert_eq!(d.label(), "10.0.0.1:5433 (db aurora, user aurora)");
        let shown = format!("{d:?} {}", serde_json::to_string(&d).unwrap());
        assert!(!shown.contains("hunter2"), "{shown}");
        let e = serde_json::from_str::<Dsn>(r#""host=a port=notaport""#).unwrap_err();
        assert!(e.to_string().contains("connection string"), "{e}");
        // The defaults are what their text says.
        for rw in [false, true] {
            let d = Dsn::local_default(rw);
            assert_eq!(Dsn::parse(d.expose()).unwrap().label(), d.label());
            let attrs = d.target().config.get_target_session_attrs();
            assert_eq!(
                attrs == tokio_postgres::config::TargetSessionAttrs::ReadWrite,
                rw
            );
        }
        // `--check-config` output pasted back is refused.
        assert!(serde_json::from_str::<Dsn>(r#""[redacted]""#).is_err());
    }
}
