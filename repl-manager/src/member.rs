//! A member of the fleet as repl-manager sees it: where its PostgreSQL and
//! its repl-manager are.

use cluster_db::{NodeName, Role};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "MemberSpec")]
pub struct Member {
    pub name: NodeName,
    pub role: Role,
    /// PostgreSQL's address as the other members reach it.
    pub host: String,
    pub port: u16,
    /// This member's repl-manager, e.g. `http://10.0.0.2:8008`.
    pub api_url: String,
    /// Never promote this member automatically (Patroni's `nofailover`).
    #[serde(default)]
    pub nofailover: bool,
}

impl Member {
    /// The physical replication slot this member streams through.
    /// Slot names allow only `a-z0-9_`, node names also `-`.
    pub fn slot_name(&self) -> String {
        slot_name_for(self.name.as_str())
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.api_url.trim_end_matches('/'))
    }
}

pub fn slot_name_for(name: &str) -> String {
    format!("replica_{}", name.replace('-', "_"))
}

/// A member as written in config: a table, or (from the environment) one
/// string `name role host:port api-url`.
#[derive(Deserialize)]
#[serde(untagged)]
enum MemberSpec {
    Table {
        name: String,
        role: String,
        host: String,
        port: u16,
        api_url: String,
        #[serde(default)]
        nofailover: bool,
    },
    Text(String),
}

impl TryFrom<MemberSpec> for Member {
    type Error = String;

    fn try_from(spec: MemberSpec) -> Result<Self, String> {
        let (name, role, host, port, api_url, nofailover) = match spec {
            MemberSpec::Table {
                name,
                role,
                host,
                port,
                api_url,
                nofailover,
            } => (name, role, host, port, api_url, nofailover),
            MemberSpec::Text(text) => parse_text(&text)?,
        };
        let name = NodeName::parse(&name).map_err(|e| e.to_string())?;
        let role: Role = role
            .parse()
            .map_err(|e: cluster_db::DbError| e.to_string())?;
        if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == ',') {
            return Err(format!(
                "member {name}: host {host:?} is not a host name or address"
            ));
        }
        if port == 0 {
            return Err(format!("member {name}: port must not be 0"));
        }
        if !api_url.starts_with("http://") {
            return Err(format!(
                "member {name}: api_url {api_url:?} must be an http:// URL"
            ));
        }
        Ok(Member {
            name,
            role,
            host,
            port,
            api_url,
            nofailover,
        })
    }
}

type Fields = (String, String, String, u16, String, bool);

fn parse_text(text: &str) -> Result<Fields, String> {
    let parts: Vec<&str> = text.split_whitespace().collect();
    let [name, role, addr, url, rest @ ..] = parts.as_slice() else {
        return Err(format!(
            "member {text:?}: expected `name role host:port api-url [nofailover]`"
        ));
    };
    let nofailover = match rest {
        [] => false,
        ["nofailover"] => true,
        _ => return Err(format!("member {text:?}: unexpected {rest:?}")),
    };
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| format!("member {name}: {addr:?} is not host:port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port: u16 = port
        .parse()
        .map_err(|_| format!("member {name}: {port:?} is not a port"))?;
    Ok((
        name.to_string(),
        role.to_string(),
        host.to_string(),
        port,
        url.to_string(),
        nofailover,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Result<Member, String> {
        Member::try_from(MemberSpec::Text(s.into()))
    }

    #[test]
    fn parses_the_env_form() {
        let m = text("my-node compute 10.0.0.3:5432 http://10.0.0.3:8008").unwrap();
        assert_eq!(m.name.as_str(), "my-node");
        assert_eq!(m.role, Role::Compute);
        assert_eq!((m.host.as_str(), m.port), ("10.0.0.3", 5432));
        assert_eq!(m.slot_name(), "replica_my_node");
        assert!(!m.nofailover);
        let v6 = text("b backup [fd00::2]:5433 http://[fd00::2]:8008 nofailover").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("fd00::2", 5433));
        assert!(v6.nofailover);
    }

    #[test]
    fn rejects_bad_members() {
        for bad in [
            "lead lead 10.0.0.1 http://x",
            "Lead lead 10.0.0.1:5432 http://x",
            "lead boss 10.0.0.1:5432 http://x",
            "lead lead 10.0.0.1:0 http://x",
            "lead lead 10.0.0.1:5432 https://x",
            "lead lead 10.0.0.1:5432",
            "lead lead 10.0.0.1:5432 http://x extra",
        ] {
            assert!(text(bad).is_err(), "{bad} was accepted");
        }
    }
}
