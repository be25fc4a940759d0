//! `aurora-cli asset-origin setup`: lays out the fleet's asset origin, the
//! Garage cluster on the lead and the backup, the way the runbook did by
//! hand: connect the nodes, give each a role in its own zone, apply the
//! layout, import the fleet's asset key, create the bucket and let the key
//! read and write it.
//!
//! Every step looks before it acts, so a rerun changes nothing; it never
//! changes a role already in the layout, and it applies only what it
//! staged itself. Garage decides whether a layout can be applied (enough
//! nodes for its replication factor): until then the run ends "pending"
//! and says what Garage is waiting for.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::config::NodeConfig;
use crate::error::{CliError, CliResult};
use crate::garage::{Assignment, GarageCli, GarageError, GaragePeer, Layout, Permissions, Preview};
use crate::output;

/// What `asset-origin setup` was asked.
pub struct SetupArgs {
    pub peers: Vec<GaragePeer>,
    /// Bytes each node offers; unset: the size of its data partition.
    pub capacity: Option<u64>,
    pub bucket: String,
    pub fleet_env: Option<PathBuf>,
    /// Garage outside the compose stack: `<bin> -c <config>`.
    pub garage: Option<(PathBuf, PathBuf)>,
    pub wait: Duration,
    pub json: bool,
}

/// One node the layout should hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    pub id: String,
    pub capacity: u64,
}

/// The zone of a node: its own, so two copies never share a node.
pub fn zone_of(name: &str) -> String {
    format!("dc-{name}")
}

/// The roles to stage so that the layout holds every member: none for a
/// member already in the layout (its role is the operator's from then on),
/// or already staged in its zone, or whose removal an operator staged.
pub fn assignments(members: &[Member], layout: &Layout) -> Vec<Assignment> {
    members
        .iter()
        .filter(|m| !layout.roles.iter().any(|r| r.id == m.id))
        .filter(|m| {
            !layout.staged_role_changes.iter().any(|c| {
                c.id == m.id && (c.remove || c.zone.as_deref() == Some(zone_of(&m.name).as_str()))
            })
        })
        .map(|m| Assignment {
            id: m.id.clone(),
            zone: zone_of(&m.name),
            tags: vec![m.name.clone()],
            capacity: m.capacity,
        })
        .collect()
}

/// Whether staged changes of ours wait for an apply.
pub fn ours_staged(members: &[Member], layout: &Layout) -> bool {
    layout
        .staged_role_changes
        .iter()
        .any(|c| !c.remove && members.iter().any(|m| m.id == c.id))
}

/// What the run did and where the origin stands (`--json`).
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// This node's Garage, `NAME=ID@HOST:PORT`: what the backup's setup
    /// takes as `--peer`.
    pub node: String,
    pub layout_version: u64,
    /// `name zone` of each node in the applied layout.
    pub layout: Vec<String>,
    pub changes: Vec<String>,
    /// Why the layout is not applied yet (Garage's words), if it is not.
    pub pending: Option<String>,
    pub bucket: String,
    /// Copies Garage keeps of each object (its config's replication factor).
    pub copies: Option<u8>,
    pub ready: bool,
}

pub async fn setup(config: &NodeConfig, args: SetupArgs) -> CliResult {
    // Everything the run needs is read and checked before Garage is asked
    // anything: a bad flag or file changes nothing.
    if config.node.role == "compute" {
        return Err(CliError::usage(format!(
            "{} is a compute node: it runs no Garage; run this on the lead or the backup",
            config.node.name
        )));
    }
    let fleet_env = match &args.fleet_env {
        Some(f) => f.clone(),
        None => default_fleet_env(config)?,
    };
    let key = FleetKey::read(&fleet_env)?;
    let garage = match &args.garage {
        Some((bin, conf)) => GarageCli::new(
            bin.clone(),
            vec!["-c".into(), conf.display().to_string()],
            None,
        ),
        None => crate::commands::compose::Docker::new(config)?.exec_in("garage", "/garage"),
    };
    // Garage shuts a node down when a peer keeps more copies than it does:
    // a node whose config disagrees with the fleet is stopped here, before
    // it meets the other.
    let garage_config = match &args.garage {
        Some((_, conf)) => Some(conf.clone()),
        None => config
            .compose
            .env_file
            .as_ref()
            .and_then(|f| f.parent())
            .map(|state| state.join("config/garage.toml")),
    };
    let copies = garage_config.as_deref().and_then(configured_copies);
    if let (Some(here), Some(fleet), Some(conf)) = (copies, key.copies, &garage_config) {
        if here != fleet {
            return Err(CliError::usage(format!(
                "{} keeps {here} copies of each object but the fleet's Garage keeps {fleet} \
                 (GARAGE_REPLICATION_FACTOR in {}): rerun bootstrap.sh on this node to render it again; \
                 meeting a peer of another factor would shut one of them down",
                conf.display(),
                fleet_env.display()
            )));
        }
    }
    let me_name = config.node.name.clone();
    if let Some(p) = args.peers.iter().find(|p| p.name == me_name) {
        return Err(CliError::usage(format!(
            "--peer {p}: that is this node's own name; give the other nodes' Garage"
        )));
    }
    let deadline = tokio::time::Instant::now() + args.wait;
    let mut report = Report {
        bucket: args.bucket.clone(),
        copies,
        ..Report::default()
    };

    let (my_id, my_addr) = retry(deadline, "this node's Garage ID", || garage.node_id()).await?;
    let me = GaragePeer {
        name: me_name.clone(),
        id: my_id,
        addr: my_addr,
    };
    report.node = me.to_string();
    if !args.json {
        eprintln!("this node's Garage: {me}");
    }
    for p in &args.peers {
        retry(
            deadline,
            &format!("connecting to {}'s Garage", p.name),
            || garage.connect(p),
        )
        .await?;
    }

    // The layout, until it holds every member or Garage says it cannot.
    let layout = loop {
        let status = retry(deadline, "Garage's cluster status", || garage.status()).await?;
        let layout = retry(deadline, "Garage's layout", || garage.layout()).await?;
        let mut members = vec![];
        let mut unsized_node = None;
        for (name, id) in
            std::iter::once((&me.name, &me.id)).chain(args.peers.iter().map(|p| (&p.name, &p.id)))
        {
            // A peer's partition size reaches this node a moment after
            // they connect.
            let reported = status
                .nodes
                .iter()
                .find(|n| &n.id == id)
                .and_then(|n| n.data_partition)
                .map(|s| s.total);
            match args.capacity.or(reported) {
                Some(capacity) => members.push(Member {
                    name: name.clone(),
                    id: id.clone(),
                    capacity,
                }),
                None => unsized_node = Some(name.clone()),
            }
        }
        if let Some(name) = unsized_node {
            if tokio::time::Instant::now() >= deadline {
                return Err(CliError::failed(format!(
                    "Garage does not report {name}'s data partition: give --capacity (bytes or 100G)"
                )));
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        let todo = assignments(&members, &layout);
        let layout = if todo.is_empty() {
            layout
        } else {
            for a in &todo {
                report
                    .changes
                    .push(format!("staged {} in zone {}", a.tags.join(","), a.zone));
            }
            retry(deadline, "staging the layout", || garage.stage(&todo)).await?
        };
        if !ours_staged(&members, &layout) {
            break layout;
        }
        match retry(deadline, "previewing the layout", || garage.preview()).await? {
            Preview::Refused { error } => {
                report.pending = Some(error);
                break layout;
            }
            Preview::Computed { .. } => {}
        }
        let version = layout.version + 1;
        let applied = retry(deadline, "applying the layout", || garage.apply(version)).await?;
        report
            .changes
            .push(format!("applied layout version {}", applied.version));
        if members
            .iter()
            .all(|m| applied.roles.iter().any(|r| r.id == m.id))
        {
            break applied;
        }
        // Another node's staging won a race: stage what is missing again.
        if tokio::time::Instant::now() >= deadline {
            return Err(CliError::failed(format!(
                "layout version {} lacks some of {}: run it again",
                applied.version,
                members
                    .iter()
                    .map(|m| m.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    };
    let names: BTreeMap<&str, &str> = std::iter::once(&me)
        .chain(&args.peers)
        .map(|p| (p.id.as_str(), p.name.as_str()))
        .collect();
    report.layout_version = layout.version;
    report.layout = layout
        .roles
        .iter()
        .map(|r| {
            let name = names
                .get(r.id.as_str())
                .copied()
                .unwrap_or_else(|| r.id.get(..16).unwrap_or(&r.id));
            format!("{name} {}", r.zone)
        })
        .collect();

    let in_layout = layout.version > 0 && layout.roles.iter().any(|r| r.id == me.id);
    if in_layout {
        bucket_and_key(&garage, &key, &args.bucket, deadline, &mut report).await?;
        report.ready = true;
        report.pending = None;
    } else if report.pending.is_none() {
        report.pending = Some("this node is not in the layout yet".into());
    }

    if args.json {
        output::print_json(&report);
    } else {
        for c in &report.changes {
            outln!("{c}");
        }
        if report.ready {
            let copies = match report.copies {
                Some(1) => "; one copy of each object".to_string(),
                Some(n) => format!("; {n} copies of each object"),
                None => String::new(),
            };
            outln!(
                "asset origin ready: layout version {} ({}{copies}); bucket {} readable and writable with the fleet's key",
                report.layout_version,
                report.layout.join(", "),
                report.bucket
            );
        }
    }
    match (&report.pending, args.peers.is_empty()) {
        (None, _) => Ok(()),
        // The lead of a fleet with a backup: Garage waits for the second
        // copy's node. Expected, so not a failure.
        (Some(why), true) => {
            if !args.json {
                outln!(
                    "asset origin pending: {why}; on the other Garage node (the backup), once its stack runs: \
                     aurora-cli asset-origin setup --peer {me}"
                );
            }
            Ok(())
        }
        (Some(why), false) => Err(CliError::failed(format!(
            "the asset origin's layout cannot be applied yet: {why}"
        ))),
    }
}

/// The fleet's key, imported; the bucket, created; the key allowed on it.
async fn bucket_and_key(
    garage: &GarageCli,
    key: &FleetKey,
    bucket: &str,
    deadline: tokio::time::Instant,
    report: &mut Report,
) -> CliResult {
    let have = retry(deadline, "looking up the fleet's key", || {
        garage.key(&key.id)
    })
    .await?;
    if have.is_none() {
        retry(deadline, "importing the fleet's key", || {
            garage.import_key(&key.id, &key.secret, "assets")
        })
        .await?;
        report.changes.push(format!("imported key {}", key.id));
    }
    let info = match retry(deadline, "looking up the bucket", || garage.bucket(bucket)).await? {
        Some(b) => b,
        None => {
            let b = retry(deadline, "creating the bucket", || {
                garage.create_bucket(bucket)
            })
            .await?;
            report.changes.push(format!("created bucket {bucket}"));
            b
        }
    };
    let allowed = info
        .keys
        .iter()
        .any(|k| k.access_key_id == key.id && k.permissions.read && k.permissions.write);
    if !allowed {
        let perms = Permissions {
            read: true,
            write: true,
            owner: false,
        };
        retry(deadline, "allowing the key on the bucket", || {
            garage.allow(&info.id, &key.id, perms)
        })
        .await?;
        report
            .changes
            .push(format!("allowed key {} to read and write {bucket}", key.id));
    }
    Ok(())
}

/// Runs `f` until it answers or the deadline passes (Garage starting, the
/// VPN coming up, a quorum forming after an apply); a refusal Garage will
/// not change its mind about (a bad request) ends it at once.
/// The least time one Garage call gets, even at the end of the wait.
const MIN_CALL: Duration = Duration::from_secs(5);

async fn retry<T, F, Fut>(deadline: tokio::time::Instant, what: &str, mut f: F) -> CliResult<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, GarageError>>,
{
    loop {
        // One call may not outlast the wait by much: a peer behind a dead
        // link sends no RST, and Garage's CLI would wait on it. Each call
        // still gets a few seconds, so one begun near the end can finish.
        let until = deadline.max(tokio::time::Instant::now() + MIN_CALL);
        let answer = match tokio::time::timeout_at(until, f()).await {
            Ok(answer) => answer,
            Err(_) => {
                return Err(CliError::failed(format!(
                    "{what}: no answer within the wait (a peer or link that drops packets?)"
                )))
            }
        };
        match answer {
            Ok(v) => return Ok(v),
            Err(e) => {
                let lasting = matches!(
                    &e,
                    GarageError::Refused { status: Some(s), .. } if (400..500).contains(s) && *s != 404 && *s != 409
                ) || matches!(
                    e,
                    GarageError::Spawn { .. } | GarageError::Decode { .. }
                );
                if lasting || tokio::time::Instant::now() >= deadline {
                    return Err(CliError::failed(format!("{what}: {e}")));
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// The asset key every node's asset-sync reads the bucket with, and the
/// number of copies the fleet's Garage keeps (where the fleet records it).
struct FleetKey {
    id: String,
    secret: String,
    copies: Option<u8>,
}

impl FleetKey {
    fn read(path: &Path) -> CliResult<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            CliError::usage(format!(
                "--fleet-env {}: {e} (the fleet's secrets: <state>/secrets/fleet.env)",
                path.display()
            ))
        })?;
        let vars: BTreeMap<&str, &str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim(), v.trim().trim_matches(|c| c == '"' || c == '\'')))
            .collect();
        let get = |k: &str| {
            vars.get(k)
                .filter(|v| !v.is_empty())
                .map(|v| v.to_string())
                .ok_or_else(|| {
                    CliError::usage(format!(
                        "--fleet-env {}: no {k} (the fleet's asset key)",
                        path.display()
                    ))
                })
        };
        let copies = match vars.get("GARAGE_REPLICATION_FACTOR") {
            None => None,
            Some(v) => Some(
                v.parse::<u8>()
                    .ok()
                    .filter(|n| (1..=3).contains(n))
                    .ok_or_else(|| {
                        CliError::usage(format!(
                            "--fleet-env {}: GARAGE_REPLICATION_FACTOR {v:?} is not 1, 2 or 3",
                            path.display()
                        ))
                    })?,
            ),
        };
        Ok(Self {
            id: get("S3_ACCESS_KEY_ID")?,
            secret: get("S3_SECRET_ACCESS_KEY")?,
            copies,
        })
    }
}

/// `replication_factor` in a Garage config file, if the file is readable.
fn configured_copies(path: &Path) -> Option<u8> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        (k.trim() == "replication_factor")
            .then(|| v.trim().parse().ok())
            .flatten()
    })
}

/// `<state>/secrets/fleet.env` beside the compose env file `<state>/node.env`.
fn default_fleet_env(config: &NodeConfig) -> CliResult<PathBuf> {
    config
        .compose
        .env_file
        .as_ref()
        .and_then(|f| f.parent())
        .map(|state| state.join("secrets/fleet.env"))
        .ok_or_else(|| {
            CliError::usage(
                "--fleet-env FILE is needed: the node config names no compose.env_file to find the state directory by",
            )
        })
}

/// `--bucket`: an S3 bucket name (3 to 63 of a-z, 0-9, `-` and `.`,
/// beginning and ending with a letter or digit).
pub fn parse_bucket(raw: &str) -> Result<String, String> {
    let ok = (3..=63).contains(&raw.len())
        && raw
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && raw.starts_with(|c: char| c.is_ascii_alphanumeric())
        && raw.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(raw.to_string())
    } else {
        Err(format!(
            "{raw:?} is not a bucket name (3 to 63 of a-z, 0-9, - and ., a letter or digit at each end)"
        ))
    }
}

/// `--capacity`: bytes, or with K/M/G/T (powers of 1000, as Garage's CLI).
pub fn parse_capacity(raw: &str) -> Result<u64, String> {
    let raw = raw.trim();
    let (digits, unit) = match raw.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => raw.split_at(i),
        None => (raw, ""),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{raw:?} is not a size (bytes, or 500G, 2T)"))?;
    let scale: u64 = match unit.trim_end_matches(['B', 'b']) {
        "" => 1,
        "K" | "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        _ => return Err(format!("{raw:?}: unknown unit (K, M, G or T)")),
    };
    let bytes = n
        .checked_mul(scale)
        .ok_or_else(|| format!("{raw:?} is too large"))?;
    if bytes < 1_000_000 {
        return Err(format!("{raw:?}: a node offers at least 1M"));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::garage::{LayoutRole, StagedChange};

    fn member(name: &str, id: &str) -> Member {
        Member {
            name: name.into(),
            id: id.into(),
            capacity: 1_000_000_000,
        }
    }

    fn layout(version: u64, roles: &[&str], staged: &[(&str, Option<&str>, bool)]) -> Layout {
        Layout {
            version,
            roles: roles
                .iter()
                .map(|id| LayoutRole {
                    id: id.to_string(),
                    zone: "dc-x".into(),
                    capacity: Some(1),
                })
                .collect(),
            staged_role_changes: staged
                .iter()
                .map(|(id, zone, remove)| StagedChange {
                    id: id.to_string(),
                    zone: zone.map(str::to_string),
                    remove: *remove,
                })
                .collect(),
        }
    }

    #[test]
    fn a_fresh_cluster_gets_every_member_in_its_own_zone() {
        let ms = [member("aurora", "a1"), member("star", "b2")];
        let todo = assignments(&ms, &layout(0, &[], &[]));
        assert_eq!(todo.len(), 2);
        assert_eq!(todo[0].zone, "dc-aurora");
        assert_eq!(todo[1].zone, "dc-star");
        assert_eq!(todo[1].tags, vec!["star".to_string()]);
    }

    #[test]
    fn roles_in_the_layout_are_never_touched_again() {
        let ms = [member("aurora", "a1"), member("star", "b2")];
        let todo = assignments(&ms, &layout(1, &["a1"], &[]));
        assert_eq!(
            todo.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(),
            ["b2"]
        );
        assert!(assignments(&ms, &layout(2, &["a1", "b2"], &[])).is_empty());
    }

    #[test]
    fn a_staged_role_is_not_staged_twice_and_a_staged_removal_is_left_alone() {
        let ms = [member("aurora", "a1"), member("star", "b2")];
        let l = layout(
            0,
            &[],
            &[("a1", Some("dc-aurora"), false), ("b2", None, true)],
        );
        assert!(assignments(&ms, &l).is_empty());
        // Staged elsewhere in another zone: ours replaces it.
        let l = layout(0, &[], &[("a1", Some("dc-other"), false)]);
        assert_eq!(assignments(&ms, &l).len(), 2);
    }

    #[test]
    fn only_our_own_staged_roles_lead_to_an_apply() {
        let ms = [member("aurora", "a1")];
        assert!(ours_staged(
            &ms,
            &layout(0, &[], &[("a1", Some("dc-aurora"), false)])
        ));
        assert!(!ours_staged(
            &ms,
            &layout(1, &["a1"], &[("zz", Some("dc-zz"), false)])
        ));
        assert!(!ours_staged(
            &ms,
            &layout(1, &["a1"], &[("a1", None, true)])
        ));
    }

    #[test]
    fn bucket_names_follow_s3s_rules() {
        for good in ["assets", "a1b", "my.assets-2"] {
            assert_eq!(parse_bucket(good).unwrap(), good);
        }
        for bad in [
            "",
            "ab",
            "Assets",
            "-assets",
            "assets.",
            "as_sets",
            &"a".repeat(64),
        ] {
            assert!(parse_bucket(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn capacities_parse_with_units_and_refuse_nonsense() {
        assert_eq!(parse_capacity("100G").unwrap(), 100_000_000_000);
        assert_eq!(parse_capacity("2T").unwrap(), 2_000_000_000_000);
        assert_eq!(parse_capacity("5000000").unwrap(), 5_000_000);
        assert_eq!(parse_capacity("500MB").unwrap(), 500_000_000);
        for bad in ["", "G", "12X", "1K", "99999999999999T"] {
            assert!(parse_capacity(bad).is_err(), "{bad}");
        }
    }
}
