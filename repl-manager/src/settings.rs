//! The files repl-manager owns inside the data directory:
//!
//! - `aurora.conf`, included at the end of `postgresql.conf` (so it wins
//!   over anything earlier; `ALTER SYSTEM` still wins over it, as
//!   documented): replication settings, and on a standby where to stream
//!   from;
//! - a marked block at the top of `pg_hba.conf` (first match wins) letting
//!   the replication user in from the members' networks;
//! - `standby.signal` on a standby.
//!
//! Every writer is idempotent and reports whether it changed anything, so
//! the caller reloads only when needed. `pg_basebackup` and `pg_rewind` copy
//! the source's files, so these are rewritten after every clone or rewind.

use std::path::Path;

use ipnet::IpNet;

use crate::config::Config;
use crate::member::Member;
use crate::server::{LocalServer, ServerError};

pub const MANAGED_CONF: &str = "aurora.conf";
/// A standby name no node has: commits wait for it forever.
const FENCE_STANDBY: &str = "\"aurora-fenced\"";
const INCLUDE_LINE: &str = "include_if_exists = 'aurora.conf'\t# repl-manager";
const HBA_BEGIN: &str = "# BEGIN aurora repl-manager (managed; edits are overwritten)";
const HBA_END: &str = "# END aurora repl-manager";

/// What this node's server should be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Desired {
    /// A primary waiting for `synchronous_standby_names` (may be empty).
    /// `fenced`: it holds no lease, so no write may be acknowledged: every
    /// session is read-only by default and every commit waits for a standby
    /// that does not exist. (A client can undo the first with
    /// `SET transaction_read_only = off`, but its commit still waits unless
    /// it also turns `synchronous_commit` off: two deliberate steps.)
    Primary {
        synchronous_standby_names: String,
        fenced: bool,
    },
    /// A standby streaming from `upstreams` (the first one that accepts
    /// writes) through `slot`.
    Standby {
        upstreams: Vec<Member>,
        slot: String,
    },
}

/// Quotes a value for `postgresql.conf`.
fn conf_quote(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "''"))
}

/// Quotes a value for a libpq connection string.
fn conninfo_quote(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// `synchronous_standby_names` for `names` (double-quoted identifiers so a
/// dash in a node name is fine).
pub fn sync_names(names: &[&str]) -> String {
    if names.is_empty() {
        return String::new();
    }
    let quoted: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
    format!("FIRST 1 ({})", quoted.join(", "))
}

/// The libpq connection string a standby streams with: every upstream,
/// the writable one wins, so a standby follows a promotion by itself.
pub fn primary_conninfo(config: &Config, upstreams: &[Member]) -> String {
    let hosts: Vec<&str> = upstreams.iter().map(|m| m.host.as_str()).collect();
    let ports: Vec<String> = upstreams.iter().map(|m| m.port.to_string()).collect();
    format!(
        "host={} port={} user={} password={} application_name={} \
         target_session_attrs=read-write connect_timeout=2 keepalives_idle=5 \
         keepalives_interval=2 keepalives_count=3",
        conninfo_quote(&hosts.join(",")),
        conninfo_quote(&ports.join(",")),
        conninfo_quote(&config.postgres.replication_user),
        conninfo_quote(config.postgres.replication_password.expose()),
        conninfo_quote(&config.node.name),
    )
}

/// The text of `aurora.conf`.
pub fn render_conf(config: &Config, desired: &Desired) -> String {
    let r = &config.replication;
    let pg = &config.postgres;
    let senders = (config.members.len() + 5).max(10);
    let mb = |bytes: u64| format!("'{}MB'", (bytes >> 20).max(1));
    let mut lines = vec![
        "# Managed by repl-manager: rewritten on every start and role change.".to_string(),
        "# Do not edit; change repl-manager's config instead.".to_string(),
        format!("listen_addresses = {}", conf_quote(&pg.listen_addresses)),
        format!("port = {}", pg.port),
        "wal_level = replica".into(),
        // pg_rewind needs hint bits in the WAL unless checksums are on;
        // turning it on costs little and makes rewind always possible.
        "wal_log_hints = on".into(),
        "hot_standby = on".into(),
        "hot_standby_feedback = on".into(),
        format!("max_wal_senders = {senders}"),
        format!("max_replication_slots = {senders}"),
        format!(
            "max_slot_wal_keep_size = {}",
            mb(r.max_slot_wal_keep_size_bytes)
        ),
        format!("wal_keep_size = {}", mb(r.wal_keep_size_bytes)),
        // Seconds, not minutes: a dead peer is noticed quickly and a
        // standby retries its upstream every second (default 5 s).
        "wal_sender_timeout = '10s'".into(),
        "wal_receiver_timeout = '10s'".into(),
        "wal_receiver_status_interval = '1s'".into(),
        "wal_retrieve_retry_interval = '1s'".into(),
        "synchronous_commit = on".into(),
        // Needed on a standby; harmless on a primary, and written on both
        // because changing it needs a restart (a promotion must not).
        "recovery_target_timeline = 'latest'".into(),
    ];
    match desired {
        Desired::Primary {
            synchronous_standby_names,
            fenced: false,
        } => {
            lines.push(format!(
                "synchronous_standby_names = {}",
                conf_quote(synchronous_standby_names)
            ));
        }
        Desired::Primary { fenced: true, .. } => {
            lines.push("# Fenced: no lease from a majority of members.".into());
            lines.push(format!(
                "synchronous_standby_names = {}",
                conf_quote(FENCE_STANDBY)
            ));
            lines.push("default_transaction_read_only = on".into());
        }
        Desired::Standby { upstreams, slot } => {
            lines.push("synchronous_standby_names = ''".into());
            lines.push(format!(
                "primary_conninfo = {}",
                conf_quote(&primary_conninfo(config, upstreams))
            ));
            lines.push(format!("primary_slot_name = {}", conf_quote(slot)));
        }
    }
    lines.push(String::new());
    lines.join("\n")
}

/// The networks replicas connect from.
pub fn hba_networks(config: &Config) -> Vec<IpNet> {
    if !config.replication.allowed_networks.is_empty() {
        return config.replication.allowed_networks.clone();
    }
    let mut nets: Vec<IpNet> = config
        .members
        .iter()
        .filter_map(|m| m.host.parse::<std::net::IpAddr>().ok())
        .map(IpNet::from)
        .collect();
    nets.sort();
    nets.dedup();
    nets
}

pub fn render_hba_block(config: &Config) -> String {
    let user = &config.postgres.replication_user;
    let mut out = vec![HBA_BEGIN.to_string()];
    for net in hba_networks(config) {
        out.push(format!("host replication {user} {net} scram-sha-256"));
        // pg_rewind and the lag probes connect to a database, not only for
        // replication.
        out.push(format!("host postgres {user} {net} scram-sha-256"));
        // The other sidecars write the fleet's registry and health to the
        // primary over the VPN as the superuser; only where it has a
        // password (a trust-auth test cluster keeps its own rules).
        if config.postgres.superuser_password.is_some() {
            let su = &config.postgres.superuser;
            out.push(format!("host postgres {su} {net} scram-sha-256"));
        }
    }
    for net in &config.replication.client_networks {
        out.push(format!("host all all {net} scram-sha-256"));
    }
    out.push(HBA_END.to_string());
    out.join("\n")
}

/// Replaces (or inserts) the managed block at the top of `pg_hba.conf`.
fn with_hba_block(current: &str, block: &str) -> String {
    let mut rest = Vec::new();
    let mut inside = false;
    for line in current.lines() {
        if line == HBA_BEGIN {
            inside = true;
            continue;
        }
        if line == HBA_END {
            inside = false;
            continue;
        }
        if !inside {
            rest.push(line);
        }
    }
    format!("{block}\n{}\n", rest.join("\n").trim_end())
}

/// Writes every managed file for `desired`. Returns `true` when something
/// changed (the server needs a reload, or a restart for some settings).
pub fn apply(
    server: &LocalServer,
    config: &Config,
    desired: &Desired,
) -> Result<bool, ServerError> {
    let data = server.data_dir();
    let mut changed = false;
    changed |= write_if_changed(
        server,
        &data.join(MANAGED_CONF),
        &render_conf(config, desired),
    )?;

    let conf_path = data.join("postgresql.conf");
    let conf = read(&conf_path)?;
    if !conf.lines().any(|l| l == INCLUDE_LINE) {
        let text = format!("{}\n\n{INCLUDE_LINE}\n", conf.trim_end());
        server.write_file(&conf_path, &text)?;
        changed = true;
    }

    let hba_path = data.join("pg_hba.conf");
    let hba = read(&hba_path)?;
    changed |= write_if_changed(
        server,
        &hba_path,
        &with_hba_block(&hba, &render_hba_block(config)),
    )?;

    let signal = data.join("standby.signal");
    match desired {
        Desired::Standby { .. } if !signal.exists() => {
            server.write_file(&signal, "")?;
            changed = true;
        }
        // A primary's standby.signal is removed by the promotion itself;
        // removing it by hand from a running standby would change nothing.
        _ => {}
    }
    Ok(changed)
}

/// Makes sure a data directory about to start as a primary does not come
/// up as a standby.
pub fn clear_standby_signal(server: &LocalServer) -> Result<(), ServerError> {
    for name in ["standby.signal", "recovery.signal"] {
        let path = server.data_dir().join(name);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(ServerError::Io {
                    what: format!("removing {}", path.display()),
                    source: e,
                })
            }
        }
    }
    Ok(())
}

fn read(path: &Path) -> Result<String, ServerError> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(ServerError::Io {
            what: format!("reading {}", path.display()),
            source: e,
        }),
    }
}

fn write_if_changed(server: &LocalServer, path: &Path, text: &str) -> Result<bool, ServerError> {
    if read(path)? == text {
        return Ok(false);
    }
    server.write_file(path, text)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(conf_quote("a'b\\c"), "'a''b\\\\c'");
        assert_eq!(conninfo_quote("p'w\\d"), "'p\\'w\\\\d'");
        assert_eq!(sync_names(&[]), "");
        assert_eq!(
            sync_names(&["backup", "my-lead"]),
            "FIRST 1 (\"backup\", \"my-lead\")"
        );
    }

    #[test]
    fn hba_block_is_replaced_not_duplicated() {
        let original = "# comment\nhost all all all scram-sha-256\n";
        let block = format!("{HBA_BEGIN}\nhost replication r 10.0.0.0/24 scram-sha-256\n{HBA_END}");
        let once = with_hba_block(original, &block);
        assert!(once.starts_with(HBA_BEGIN));
        let twice = with_hba_block(&once, &block);
        assert_eq!(once, twice);
        let other = format!("{HBA_BEGIN}\n{HBA_END}");
        let replaced = with_hba_block(&twice, &other);
        assert!(!replaced.contains("10.0.0.0/24"));
        assert!(replaced.contains("host all all all scram-sha-256"));
    }

    #[test]
    fn hba_block_admits_replicas_the_superuser_and_client_networks() {
        let mut c = Config::default();
        c.replication.allowed_networks = vec!["10.0.0.0/24".parse().unwrap()];
        let bare = render_hba_block(&c);
        assert!(bare.contains("host replication replicator 10.0.0.0/24 scram-sha-256"));
        assert!(!bare.contains("host postgres postgres"), "{bare}");
        assert!(!bare.contains("host all all"), "{bare}");

        c.postgres.superuser_password = Some(sidecar_kit::Secret::new("pw"));
        c.replication.client_networks = vec!["172.16.0.0/12".parse().unwrap()];
        let full = render_hba_block(&c);
        assert!(
            full.contains("host postgres postgres 10.0.0.0/24 scram-sha-256"),
            "{full}"
        );
        assert!(
            full.contains("host all all 172.16.0.0/12 scram-sha-256"),
            "{full}"
        );
        assert!(full.ends_with(HBA_END));
    }
}
