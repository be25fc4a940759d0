//! Joining the fleet: the join token and the join endpoint's request and
//! answer (health-monitor serves it on the lead and the backup, over TLS
//! with the fleet's join certificate; `aurora-cli join` calls it).
//!
//! A token carries everything a new node needs for an authenticated first
//! contact, as k3s's secure tokens do: where to call, the SHA-256 of the
//! certificate that must answer (so the client refuses any other server
//! before it sends a byte), and a one-use secret.
//!
//! ```text
//! AJ1.<certificate SHA-256, 64 hex>.<id, 16 hex>.<secret, 64 hex>.<host:port>
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::Role;

/// Where the join endpoint answers, on its TLS listener.
pub const JOIN_PATH: &str = "/v1/join";

/// The admin endpoint (admin token) that issues a token.
pub const TOKENS_PATH: &str = "/join/tokens";

const PREFIX: &str = "AJ1";

/// A parsed join token. `Debug` and `Display` of [`JoinToken::redacted`]
/// never show the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// SHA-256 of the join certificate (DER), the only one the client accepts.
    pub fingerprint: [u8; 32],
    /// Names the token in the database (not a secret).
    pub id: String,
    /// The one-use secret; the database keeps only its SHA-256.
    pub secret: String,
    /// `host:port` of the join endpoint.
    pub endpoint: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("join token: {0}")]
pub struct TokenError(String);

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Lower-case hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn from_hex32(s: &str) -> Option<[u8; 32]> {
    if !is_lower_hex(s, 64) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

impl JoinToken {
    pub fn parse(text: &str) -> Result<Self, TokenError> {
        let bad = |what: &str| TokenError(what.to_string());
        let text = text.trim();
        let mut parts = text.splitn(5, '.');
        if parts.next() != Some(PREFIX) {
            return Err(bad(
                "not an Aurora join token (it starts with AJ1.): copy the whole line `aurora-cli join-token create` printed",
            ));
        }
        let fingerprint = parts
            .next()
            .and_then(from_hex32)
            .ok_or_else(|| bad("the certificate fingerprint is not 64 hex digits"))?;
        let id = parts
            .next()
            .filter(|s| is_lower_hex(s, 16))
            .ok_or_else(|| bad("the token id is not 16 hex digits"))?;
        let secret = parts
            .next()
            .filter(|s| is_lower_hex(s, 64))
            .ok_or_else(|| bad("the secret is not 64 hex digits"))?;
        let endpoint = parts
            .next()
            .filter(|s| !s.is_empty() && s.len() <= 255)
            .ok_or_else(|| bad("the endpoint (host:port) is missing"))?;
        if !endpoint.contains(':')
            || endpoint
                .bytes()
                .any(|b| b.is_ascii_whitespace() || b == b'/' || b == b'@')
        {
            return Err(bad("the endpoint is not host:port"));
        }
        Ok(Self {
            fingerprint,
            id: id.to_string(),
            secret: secret.to_string(),
            endpoint: endpoint.to_string(),
        })
    }

    /// The token as printed for the operator (it includes the secret).
    pub fn expose(&self) -> String {
        format!(
            "{PREFIX}.{}.{}.{}.{}",
            to_hex(&self.fingerprint),
            self.id,
            self.secret,
            self.endpoint
        )
    }

    /// The `Authorization: Bearer` value the endpoint checks: `id.secret`.
    pub fn bearer(&self) -> String {
        format!("{}.{}", self.id, self.secret)
    }

    /// The token with its secret replaced, for logs and errors.
    pub fn redacted(&self) -> String {
        format!(
            "{PREFIX}.{}.{}.<secret>.{}",
            to_hex(&self.fingerprint),
            self.id,
            self.endpoint
        )
    }
}

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// `id.secret` from a bearer value, both checked for shape.
pub fn parse_bearer(value: &str) -> Option<(&str, &str)> {
    let (id, secret) = value.split_once('.')?;
    (is_lower_hex(id, 16) && is_lower_hex(secret, 64)).then_some((id, secret))
}

/// `POST /join/tokens` (admin): a new token.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TokenRequest {
    /// How long the token is valid [3600; at most a week].
    #[serde(default)]
    pub ttl_secs: Option<u64>,
    /// The only role a node may join with on this token; unset: backup or compute.
    #[serde(default)]
    pub role: Option<Role>,
}

/// The answer to [`TokenRequest`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IssuedToken {
    /// The whole token, secret included: shown once, never stored.
    pub token: String,
    pub id: String,
    pub expires_at: chrono::DateTime<chrono::Utc>,
    pub endpoint: String,
    pub fingerprint: String,
    #[serde(default)]
    pub role: Option<Role>,
}

/// `POST /v1/join`, with `Authorization: Bearer <id>.<secret>`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    pub name: String,
    pub role: Role,
    /// The node's WireGuard public key (its private key never leaves it).
    pub wg_public_key: String,
    /// `host:port` where the other nodes reach this node's WireGuard.
    #[serde(default)]
    pub wg_endpoint: Option<String>,
    /// The address the node asks for; unset: the next free one.
    #[serde(default)]
    pub vpn_ip: Option<IpAddr>,
}

/// One member of the mesh, as a joining node needs it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JoinPeer {
    pub name: String,
    pub role: Role,
    pub vpn_ip: IpAddr,
    #[serde(default)]
    pub wg_public_key: Option<String>,
    #[serde(default)]
    pub wg_endpoint: Option<String>,
}

/// What a node that joined receives.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JoinAnswer {
    pub name: String,
    pub role: Role,
    pub vpn_ip: IpAddr,
    /// The VPN network, `10.0.0.0/24`.
    pub vpn_network: String,
    pub zone: String,
    /// Every node of the fleet, the new one included.
    pub members: Vec<JoinPeer>,
    /// The fleet-wide secrets this role needs, as `fleet.env` lines.
    pub secrets: BTreeMap<String, String>,
    /// The join certificate and its key (PEM), for a backup, which serves
    /// joins too once it runs.
    #[serde(default)]
    pub join_certificate: Option<String>,
    #[serde(default)]
    pub join_key: Option<String>,
}

impl fmt::Display for JoinAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} joined as {} at {} ({} members)",
            self.name,
            self.role,
            self.vpn_ip,
            self.members.len()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> JoinToken {
        JoinToken {
            fingerprint: [0xab; 32],
            id: "0123456789abcdef".into(),
            secret: "f".repeat(64),
            endpoint: "lead.example.net:8443".into(),
        }
    }

    #[test]
    fn a_token_round_trips_and_never_shows_its_secret_in_debug() {
        let t = sample();
        assert_eq!(JoinToken::parse(&t.expose()).unwrap(), t);
        assert!(!format!("{t:?}").contains(&t.secret));
        assert_eq!(
            parse_bearer(&t.bearer()),
            Some((t.id.as_str(), t.secret.as_str()))
        );
        let v6 = JoinToken {
            endpoint: "[2001:db8::1]:8443".into(),
            ..sample()
        };
        assert_eq!(JoinToken::parse(&v6.expose()).unwrap(), v6);
    }

    #[test]
    fn malformed_tokens_say_what_is_wrong() {
        let good = sample().expose();
        let cases = [
            ("", "not an Aurora join token"),
            ("K10abc::server:secret", "not an Aurora join token"),
            (&good.replacen("ab", "zz", 1), "fingerprint"),
            (&good.replace("0123456789abcdef", "0123"), "token id"),
            (&good.replace(&"f".repeat(64), "short"), "secret"),
            (&good.replace(".lead.example.net:8443", ""), "endpoint"),
            (&good.replace("lead.example.net:8443", "lead"), "host:port"),
            (&good.replace("lead.", "user@lead."), "host:port"),
        ];
        for (text, want) in cases {
            let e = JoinToken::parse(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
        assert_eq!(parse_bearer("0123456789abcdef"), None);
        assert_eq!(parse_bearer(&format!("0123.{}", "f".repeat(64))), None);
    }
}
