//! Joining: issuing one-use tokens and admitting a node with one, in one
//! transaction that checks the token, picks the node's VPN address and
//! registers it. health-monitor's join endpoint is the only caller; the
//! decisions (which address, which refusal) are pure functions here.
//!
//! Concurrent joins are serialized by a lock on `aurora.nodes` taken inside
//! the transaction, so two nodes never get the same address, and the
//! table's unique constraint is the second line of defence.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use tokio_postgres::Client;

use crate::error::DbError;
use crate::model::{Node, NodeName, NodeRegistration, Role};
use crate::queries;

/// The longest a token may live.
pub const MAX_TOKEN_TTL_SECS: u64 = 7 * 24 * 3600;

/// Why a join was refused: each is the requester's problem (a 4xx), and
/// each names what was wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No such token, or the secret does not match (the two are not told
    /// apart, so a guesser learns nothing).
    TokenInvalid,
    TokenExpired,
    TokenUsed {
        by: String,
    },
    /// The token was issued for another role.
    RoleNotAllowed {
        token_role: Role,
    },
    /// A fleet has exactly one lead, the node that created it.
    LeadRole,
    /// A fleet has one backup (the synchronous standby).
    BackupExists {
        holder: String,
    },
    /// The name belongs to a node with another WireGuard key.
    NameTaken {
        name: String,
    },
    AddressTaken {
        ip: IpAddr,
        holder: String,
    },
    AddressOutsideNetwork {
        ip: IpAddr,
        network: IpNet,
    },
    NetworkFull {
        network: IpNet,
    },
}

impl Refusal {
    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Refusal::TokenInvalid => "token_invalid",
            Refusal::TokenExpired => "token_expired",
            Refusal::TokenUsed { .. } => "token_used",
            Refusal::RoleNotAllowed { .. } => "role_not_allowed",
            Refusal::LeadRole => "lead_role",
            Refusal::BackupExists { .. } => "backup_exists",
            Refusal::NameTaken { .. } => "name_taken",
            Refusal::AddressTaken { .. } => "address_taken",
            Refusal::AddressOutsideNetwork { .. } => "address_outside_network",
            Refusal::NetworkFull { .. } => "network_full",
        }
    }

    /// True for refusals about the token itself (HTTP 401), false for the
    /// request's content (HTTP 403/409).
    pub fn is_token(&self) -> bool {
        matches!(
            self,
            Refusal::TokenInvalid | Refusal::TokenExpired | Refusal::TokenUsed { .. }
        )
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::TokenInvalid => f.write_str("the join token is not valid for this fleet"),
            Refusal::TokenExpired => f.write_str(
                "the join token has expired: create a new one on the lead (aurora-cli join-token create)",
            ),
            Refusal::TokenUsed { by } => write!(
                f,
                "the join token was already used (by {by}): each token admits one node; create a new one"
            ),
            Refusal::RoleNotAllowed { token_role } => {
                write!(f, "the join token admits a {token_role} node only")
            }
            Refusal::LeadRole => f.write_str(
                "a node cannot join as lead: the lead is the node that created the fleet",
            ),
            Refusal::BackupExists { holder } => write!(
                f,
                "the fleet has its backup already ({holder}); join as compute, or remove {holder} first"
            ),
            Refusal::NameTaken { name } => write!(
                f,
                "the name {name} belongs to a node with another WireGuard key; pick another name, or remove that node first"
            ),
            Refusal::AddressTaken { ip, holder } => {
                write!(f, "VPN IP {ip} is already {holder}'s; ask for another or let the fleet pick")
            }
            Refusal::AddressOutsideNetwork { ip, network } => write!(
                f,
                "VPN IP {ip} is not a host address of the VPN network {network}"
            ),
            Refusal::NetworkFull { network } => {
                write!(f, "the VPN network {network} has no free address left")
            }
        }
    }
}

/// A host address of `network`: inside it, not its network or (IPv4)
/// broadcast address.
pub fn is_host_of(network: &IpNet, ip: IpAddr) -> bool {
    if !network.contains(&ip) {
        return false;
    }
    if ip == network.network() && network.prefix_len() < network.max_prefix_len() {
        return false;
    }
    !(ip.is_ipv4() && ip == network.broadcast() && network.prefix_len() < 31)
}

/// The address a joining node gets: the one it asked for when that is a
/// free host address of the network (or already its own), else the
/// convention's (backup .2) when free, else the lowest free one from .3.
/// `taken` maps addresses to the nodes holding them.
pub fn allocate(
    network: &IpNet,
    name: &str,
    role: Role,
    requested: Option<IpAddr>,
    taken: &BTreeMap<IpAddr, String>,
) -> Result<IpAddr, Refusal> {
    let free = |ip: &IpAddr| taken.get(ip).is_none_or(|holder| holder == name);
    if let Some(ip) = requested {
        if !is_host_of(network, ip) {
            return Err(Refusal::AddressOutsideNetwork {
                ip,
                network: *network,
            });
        }
        return match taken.get(&ip) {
            Some(holder) if holder != name => Err(Refusal::AddressTaken {
                ip,
                holder: holder.clone(),
            }),
            _ => Ok(ip),
        };
    }
    // A node joining again keeps its address.
    if let Some((ip, _)) = taken
        .iter()
        .find(|(ip, h)| *h == name && is_host_of(network, **ip))
    {
        return Ok(*ip);
    }
    let nth = |n: u64| -> Option<IpAddr> {
        match network.network() {
            IpAddr::V4(base) => {
                let v = u64::from(u32::from(base)).checked_add(n)?;
                u32::try_from(v).ok().map(|v| IpAddr::V4(v.into()))
            }
            IpAddr::V6(base) => {
                let v = u128::from(base).checked_add(u128::from(n))?;
                Some(IpAddr::V6(v.into()))
            }
        }
    };
    if role == Role::Backup {
        if let Some(ip) = nth(2).filter(|ip| is_host_of(network, *ip) && free(ip)) {
            return Ok(ip);
        }
    }
    // .1 and .2 are the lead's and the backup's by convention.
    let mut n = 3u64;
    while let Some(ip) = nth(n) {
        if !network.contains(&ip) {
            break;
        }
        if is_host_of(network, ip) && free(&ip) {
            return Ok(ip);
        }
        n += 1;
    }
    Err(Refusal::NetworkFull { network: *network })
}

/// Stores a new token; returns when it expires. `secret_sha256` is the hex
/// SHA-256 of the secret: the secret itself is never stored.
pub async fn create_token(
    client: &Client,
    id: &str,
    secret_sha256: &str,
    role: Option<Role>,
    ttl_secs: u64,
) -> Result<chrono::DateTime<chrono::Utc>, DbError> {
    if ttl_secs == 0 || ttl_secs > MAX_TOKEN_TTL_SECS {
        return Err(DbError::invalid(
            "token lifetime",
            format!("{ttl_secs} s (1 s to {MAX_TOKEN_TTL_SECS} s)"),
        ));
    }
    if role == Some(Role::Lead) {
        return Err(DbError::invalid(
            "token role",
            "lead (a node cannot join as lead)",
        ));
    }
    let ttl = ttl_secs as f64;
    let row = client
        .query_one(
            "INSERT INTO aurora.join_tokens (id, secret_sha256, role, expires_at)
             VALUES ($1, $2, $3, now() + make_interval(secs => $4))
             RETURNING expires_at",
            &[&id, &secret_sha256, &role.map(Role::as_str), &ttl],
        )
        .await?;
    Ok(row.get(0))
}

/// A join request, already checked for shape by the endpoint.
#[derive(Clone, Debug)]
pub struct Claim {
    pub token_id: String,
    pub secret_sha256: String,
    pub name: NodeName,
    pub role: Role,
    pub wg_public_key: String,
    pub wg_endpoint: Option<String>,
    pub vpn_ip: Option<IpAddr>,
    /// Recorded in the event log.
    pub from: String,
}

/// A node let in: its registry row, and whether this was the same node
/// asking again (its first answer lost) rather than a new admission.
#[derive(Debug, Clone)]
pub struct Admission {
    pub node: Node,
    pub again: bool,
}

/// Admits a node: checks the token, picks its address, registers it and
/// uses the token up, all in one transaction on the primary. A refusal
/// changes nothing (the token stays usable). The node a token admitted
/// may ask again with the same name, role and key until the token
/// expires, and gets the same row: a join is safe to retry.
pub async fn admit(
    client: &mut Client,
    network: &IpNet,
    claim: &Claim,
) -> Result<Result<Admission, Refusal>, DbError> {
    let tx = client.transaction().await?;
    let token = tx
        .query_opt(
            "SELECT secret_sha256, role, expires_at <= now(), used_by
             FROM aurora.join_tokens WHERE id = $1 FOR UPDATE",
            &[&claim.token_id],
        )
        .await?;
    let Some(token) = token else {
        return Ok(Err(Refusal::TokenInvalid));
    };
    let stored: String = token.get(0);
    if stored != claim.secret_sha256 {
        return Ok(Err(Refusal::TokenInvalid));
    }
    let expired: bool = token.get(2);
    if let Some(by) = token.get::<_, Option<String>>(3) {
        // The node this token admitted, asking again with the same key
        // before the token expires: its answer was lost on the way (the
        // connection dropped after the commit). Answer again, change
        // nothing; anyone else is refused.
        if by == claim.name.as_str() && !expired {
            let again = queries::list_nodes(&tx).await?.nodes.into_iter().find(|n| {
                n.name == claim.name
                    && n.role == claim.role
                    && n.wg_public_key.as_deref() == Some(claim.wg_public_key.as_str())
            });
            if let Some(node) = again {
                tx.commit().await?;
                return Ok(Ok(Admission { node, again: true }));
            }
        }
        return Ok(Err(Refusal::TokenUsed { by }));
    }
    if expired {
        return Ok(Err(Refusal::TokenExpired));
    }
    if claim.role == Role::Lead {
        return Ok(Err(Refusal::LeadRole));
    }
    if let Some(role) = token.get::<_, Option<String>>(1) {
        let token_role: Role = role.parse()?;
        if token_role != claim.role {
            return Ok(Err(Refusal::RoleNotAllowed { token_role }));
        }
    }

    // Joins and registrations wait for each other from here to the commit.
    tx.batch_execute("LOCK TABLE aurora.nodes IN SHARE ROW EXCLUSIVE MODE")
        .await?;
    let rows = tx
        .query(
            "SELECT name, role, vpn_ip, wg_public_key FROM aurora.nodes",
            &[],
        )
        .await?;
    let mut taken = BTreeMap::new();
    for row in &rows {
        let name: String = row.get(0);
        let role: String = row.get(1);
        let key: Option<String> = row.get(3);
        if name == claim.name.as_str() && key.as_deref() != Some(claim.wg_public_key.as_str()) {
            return Ok(Err(Refusal::NameTaken { name }));
        }
        if claim.role == Role::Backup && role == "backup" && name != claim.name.as_str() {
            return Ok(Err(Refusal::BackupExists { holder: name }));
        }
        taken.insert(row.get::<_, IpAddr>(2), name);
    }
    let vpn_ip = match allocate(
        network,
        claim.name.as_str(),
        claim.role,
        claim.vpn_ip,
        &taken,
    ) {
        Ok(ip) => ip,
        Err(r) => return Ok(Err(r)),
    };
    let reg = NodeRegistration {
        name: claim.name.clone(),
        role: claim.role,
        vpn_ip,
        wg_public_key: Some(claim.wg_public_key.clone()),
        wg_endpoint: claim.wg_endpoint.clone(),
        labels: Default::default(),
        gpus: Vec::new(),
        versions: Default::default(),
    };
    let node = queries::upsert_node(&tx, &reg).await?;
    tx.execute(
        "UPDATE aurora.join_tokens SET used_at = now(), used_by = $2 WHERE id = $1",
        &[&claim.token_id, &claim.name.as_str()],
    )
    .await?;
    queries::append_event(
        &tx,
        claim.name.as_str(),
        "node_joined",
        &serde_json::json!({
            "role": claim.role.as_str(),
            "vpn_ip": vpn_ip.to_string(),
            "token": claim.token_id,
            "from": claim.from,
        }),
    )
    .await?;
    tx.commit().await?;
    Ok(Ok(Admission { node, again: false }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net() -> IpNet {
        "10.0.0.0/24".parse().unwrap()
    }

    fn taken(pairs: &[(&str, &str)]) -> BTreeMap<IpAddr, String> {
        pairs
            .iter()
            .map(|(ip, n)| (ip.parse().unwrap(), n.to_string()))
            .collect()
    }

    #[test]
    fn compute_nodes_fill_from_three_and_the_backup_takes_two() {
        let t = taken(&[("10.0.0.1", "lead"), ("10.0.0.3", "c1")]);
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        assert_eq!(
            allocate(&net(), "b", Role::Backup, None, &t),
            Ok(ip("10.0.0.2"))
        );
        assert_eq!(
            allocate(&net(), "c2", Role::Compute, None, &t),
            Ok(ip("10.0.0.4"))
        );
        // A node joining again keeps its address.
        assert_eq!(
            allocate(&net(), "c1", Role::Compute, None, &t),
            Ok(ip("10.0.0.3"))
        );
        // .2 is free but is the backup's by convention.
        let t = taken(&[("10.0.0.1", "lead")]);
        assert_eq!(
            allocate(&net(), "c", Role::Compute, None, &t),
            Ok(ip("10.0.0.3"))
        );
    }

    #[test]
    fn a_requested_address_is_confirmed_or_refused_with_the_reason() {
        let t = taken(&[("10.0.0.1", "lead")]);
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        assert_eq!(
            allocate(&net(), "c", Role::Compute, Some(ip("10.0.0.77")), &t),
            Ok(ip("10.0.0.77"))
        );
        assert_eq!(
            allocate(&net(), "c", Role::Compute, Some(ip("10.0.0.1")), &t),
            Err(Refusal::AddressTaken {
                ip: ip("10.0.0.1"),
                holder: "lead".into()
            })
        );
        for bad in ["10.0.1.5", "10.0.0.0", "10.0.0.255", "fd00::3"] {
            assert!(
                matches!(
                    allocate(&net(), "c", Role::Compute, Some(ip(bad)), &t),
                    Err(Refusal::AddressOutsideNetwork { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_full_network_is_refused_and_ipv6_networks_work() {
        let small: IpNet = "10.0.0.0/30".parse().unwrap();
        let t = taken(&[("10.0.0.1", "lead"), ("10.0.0.2", "b")]);
        assert_eq!(
            allocate(&small, "c", Role::Compute, None, &t),
            Err(Refusal::NetworkFull { network: small })
        );
        let v6: IpNet = "fd00:a::/64".parse().unwrap();
        assert_eq!(
            allocate(&v6, "c", Role::Compute, None, &BTreeMap::new()),
            Ok("fd00:a::3".parse().unwrap())
        );
    }
}
