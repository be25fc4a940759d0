//! `aurora-cli join-token create` (on the lead or the backup) and
//! `aurora-cli join` (on a new node, before its stack exists: bootstrap.sh
//! `--join` runs it).
//!
//! `join` talks only to the server whose certificate the token pins: any
//! other fails the TLS handshake before the token is sent. What it receives
//! is written into `--out` for the installer: `fleet.env` (the secrets the
//! role needs, mode 600), `members` (`name role ip` per line, the fleet as
//! repl-manager's member list), `peers.conf` (a `[Peer]` per other node
//! with a key) and `answer.env` (this node's address, network and zone);
//! a backup also gets `join.crt` and `join.key`, to serve joins itself.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aurora_api::join::{IssuedToken, JoinAnswer, JoinRequest, JoinToken, TokenRequest, JOIN_PATH};
use hyper::{Method, StatusCode};
use sidecar_kit::http_client::HttpClient;

use crate::api::{reason, Api, Sidecar};
use crate::config::NodeConfig;
use crate::error::{CliError, CliResult};
use crate::output;

/// `aurora-cli join-token create`.
pub async fn create_token(
    config: &NodeConfig,
    ttl: Duration,
    role: Option<&str>,
    json: bool,
) -> CliResult {
    let api = Api::new(config);
    let request = TokenRequest {
        ttl_secs: Some(ttl.as_secs()),
        role: role.map(Into::into),
    };
    let answer = api
        .post(
            Sidecar::HealthMonitor,
            aurora_api::join::TOKENS_PATH,
            &request,
            Duration::from_secs(30),
        )
        .await?;
    if !answer.status.is_success() {
        let why = reason(&answer.body);
        return Err(refused(answer.status, format!("no token: {why}")));
    }
    let issued: IssuedToken = answer.read("the new token")?;
    if json {
        output::print_json(&issued);
        return Ok(());
    }
    outln!("{}", issued.token);
    eprintln!(
        "one node may join with it until {} ({}); on the new node:\n  bootstrap.sh --join --token '<the token above>' --name NAME --role {}",
        issued.expires_at.format("%Y-%m-%d %H:%M:%S UTC"),
        issued
            .role
            .as_ref()
            .map(|r| format!("{r} only"))
            .unwrap_or_else(|| "backup or compute".into()),
        issued.role.as_ref().map(|r| r.as_str()).unwrap_or("compute"),
    );
    Ok(())
}

/// `aurora-cli remove-node`: takes a node out of the registry (its peers,
/// DNS names and Prometheus targets go with it on every node).
pub async fn remove_node(
    config: &NodeConfig,
    name: &str,
    force: bool,
    yes: bool,
    json: bool,
) -> CliResult {
    cluster_db::NodeName::parse(name).map_err(|e| CliError::usage(format!("NODE: {e}")))?;
    crate::commands::replication::confirm(
        &format!("Remove {name} from the fleet's registry?"),
        yes,
    )?;
    let path = format!("/nodes/{name}{}", if force { "?force=true" } else { "" });
    let answer = Api::new(config)
        .delete(Sidecar::HealthMonitor, &path, Duration::from_secs(30))
        .await?;
    if !answer.status.is_success() {
        let why = reason(&answer.body);
        return Err(refused(
            answer.status,
            format!("{name} was not removed: {why}"),
        ));
    }
    if json {
        output::print_json(&answer.body);
    } else {
        outln!("{name} removed from the registry; every node drops its WireGuard peer, DNS names and Prometheus target within one interval");
        eprintln!("still by hand: the other nodes' repl-manager member lists (docs/runbooks/remove-a-node.md)");
    }
    Ok(())
}

/// What `aurora-cli join` was asked.
pub struct JoinArgs<'a> {
    pub token: &'a str,
    /// `host:port` or `https://host:port` to call instead of the token's
    /// endpoint (the backup's, after a failover).
    pub url: Option<&'a str>,
    pub name: &'a str,
    pub role: &'a str,
    pub wg_public_key: &'a str,
    pub wg_endpoint: Option<&'a str>,
    pub vpn_ip: Option<IpAddr>,
    pub out: &'a Path,
    pub timeout: Duration,
    /// How long to keep asking while the fleet answers "not yet" (503 or
    /// 429 with Retry-After): its node still starting, its primary away
    /// for a moment. A join is safe to repeat: the same node asking again
    /// with the same key gets the same answer.
    pub wait: Duration,
}

/// `aurora-cli join`.
pub async fn join(args: JoinArgs<'_>, json: bool) -> CliResult {
    let token = JoinToken::parse(args.token).map_err(|e| CliError::usage(e.to_string()))?;
    let base = match args.url {
        Some(u) => endpoint_url(u)?,
        None => endpoint_url(&token.endpoint)?,
    };
    let request = JoinRequest {
        name: args.name.to_string(),
        role: args.role.into(),
        wg_public_key: args.wg_public_key.trim().to_string(),
        wg_endpoint: args.wg_endpoint.map(str::to_string),
        vpn_ip: args.vpn_ip,
    };
    let body = serde_json::to_value(&request)
        .map_err(|e| CliError::failed(format!("cannot write the join request: {e}")))?;
    let client = HttpClient::pinned(args.timeout, token.fingerprint)
        .map_err(|e| CliError::failed(format!("TLS setup: {e}")))?;
    let url = format!("{base}{JOIN_PATH}");
    let bearer = sidecar_kit::Secret::new(token.bearer());
    let deadline = tokio::time::Instant::now() + args.wait;
    let mut progress = output::Progress::new(json);
    let resp = loop {
        let resp = client
            .send(Method::POST, &url, Some(&bearer), Some(&body))
            .await
            .map_err(|e| {
                CliError::failed(format!(
                    "join failed before the fleet answered: {e} (a certificate error means the server is not the fleet's join endpoint; nothing was sent)"
                ))
            })?;
        if resp.status == StatusCode::OK {
            break resp;
        }
        let parsed = serde_json::from_slice::<serde_json::Value>(&resp.body)
            .unwrap_or_else(|_| serde_json::Value::String(resp.text()));
        let why = reason(&parsed);
        let pause = retry_after(&resp).filter(|p| tokio::time::Instant::now() + *p <= deadline);
        match pause {
            Some(pause) => {
                progress.show(&format!(
                    "the fleet says not yet: {why}; asking again in {} s",
                    pause.as_secs()
                ));
                tokio::time::sleep(pause).await;
            }
            None => {
                let msg = format!(
                    "the fleet refused the join ({}): {why}",
                    resp.status.as_u16()
                );
                return Err(refused(resp.status, msg));
            }
        }
    };
    drop(progress);
    let answer: JoinAnswer = resp
        .json(&url)
        .map_err(|e| CliError::failed(format!("the join answer: {e}")))?;
    write_answer(args.out, &answer).map_err(|e| {
        CliError::failed(format!(
            "joined, but cannot write {}: {e}",
            args.out.display()
        ))
    })?;
    if json {
        // Never the secrets: they are in fleet.env.
        output::print_json(&serde_json::json!({
            "name": answer.name,
            "role": answer.role,
            "vpn_ip": answer.vpn_ip,
            "vpn_network": answer.vpn_network,
            "zone": answer.zone,
            "members": answer.members,
            "out": args.out,
        }));
    } else {
        outln!("{answer}; files in {}", args.out.display());
    }
    Ok(())
}

/// The pause a "not yet" answer (503, 429) asks for; `None` for an answer
/// that asking again cannot change.
fn retry_after(resp: &sidecar_kit::http_client::HttpResponse) -> Option<Duration> {
    if resp.status != StatusCode::SERVICE_UNAVAILABLE
        && resp.status != StatusCode::TOO_MANY_REQUESTS
    {
        return None;
    }
    let secs = resp
        .headers
        .get(hyper::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(5);
    Some(Duration::from_secs(secs.clamp(1, 60)))
}

/// A refusal from a sidecar: the operator's to fix (exit 2) for a 4xx,
/// a failure (exit 1) otherwise.
fn refused(status: StatusCode, msg: String) -> CliError {
    if status.is_client_error() {
        CliError::usage(msg)
    } else {
        CliError::failed(msg)
    }
}

/// `https://host:port` from `host:port` or a URL, with no path.
fn endpoint_url(raw: &str) -> CliResult<String> {
    let rest = raw.strip_prefix("https://").unwrap_or(raw);
    if raw.starts_with("http://") {
        return Err(CliError::usage(format!(
            "--url {raw}: the join endpoint speaks https:// only"
        )));
    }
    let host = rest.trim_end_matches('/');
    if host.is_empty() || host.contains('/') || !host.contains(':') {
        return Err(CliError::usage(format!(
            "--url {raw}: expected host:port or https://host:port"
        )));
    }
    Ok(format!("https://{host}"))
}

/// The answer as the installer reads it. Files holding secrets are 600.
fn write_answer(dir: &Path, a: &JoinAnswer) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut fleet = String::from("# The fleet's secrets, received when this node joined.\n");
    for (k, v) in &a.secrets {
        let _ = writeln!(fleet, "{k}={v}");
    }
    write_secret(&dir.join("fleet.env"), &fleet)?;
    let mut members = String::new();
    let mut peers = String::from("# The fleet's WireGuard peers when this node joined; health-monitor keeps the mesh current from the registry.\n");
    for m in &a.members {
        let _ = writeln!(members, "{} {} {}", m.name, m.role, m.vpn_ip);
        if m.name == a.name {
            continue;
        }
        let Some(key) = &m.wg_public_key else {
            continue;
        };
        let prefix = if m.vpn_ip.is_ipv4() { 32 } else { 128 };
        let _ = write!(
            peers,
            "\n# {} ({})\n[Peer]\nPublicKey = {key}\nAllowedIPs = {}/{prefix}\n",
            m.name, m.role, m.vpn_ip
        );
        if let Some(ep) = &m.wg_endpoint {
            let _ = writeln!(peers, "Endpoint = {ep}");
        }
    }
    write_plain(&dir.join("members"), &members)?;
    write_plain(&dir.join("peers.conf"), &peers)?;
    write_plain(
        &dir.join("answer.env"),
        &format!(
            "NAME={}\nROLE={}\nVPN_IP={}\nVPN_NETWORK={}\nZONE={}\n",
            a.name, a.role, a.vpn_ip, a.vpn_network, a.zone
        ),
    )?;
    if let (Some(cert), Some(key)) = (&a.join_certificate, &a.join_key) {
        write_plain(&dir.join("join.crt"), cert)?;
        write_secret(&dir.join("join.key"), key)?;
    }
    Ok(())
}

/// Mode 600 from the first byte, whatever was there before.
fn write_secret(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp: PathBuf = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    local_fleet::process::write_private(&tmp, text)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    std::fs::rename(&tmp, path)
}

fn write_plain(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp: PathBuf = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_become_https_urls_and_plain_http_is_refused() {
        assert_eq!(
            endpoint_url("lead.example:8443").unwrap(),
            "https://lead.example:8443"
        );
        assert_eq!(
            endpoint_url("https://[::1]:8443/").unwrap(),
            "https://[::1]:8443"
        );
        for bad in ["http://lead:8443", "lead", "https://lead:8443/v1/join", ""] {
            assert!(endpoint_url(bad).is_err(), "{bad}");
        }
    }
}
