//! `aurora-cli sandbox`: a whole fleet on one machine, without Docker.
//!
//! Each node gets a real PostgreSQL (from the machine's server binaries),
//! repl-manager, health-monitor, asset-sync (when Garage is installed) and,
//! on the lead and the backup, dns-sync: the same binaries and the same
//! starters (`local-fleet`) the test suite uses. Everything lives under
//! one directory; processes are detached and outlive the command.

pub mod layout;
pub mod procs;
pub mod state;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aurora_api::monitor::MonitorStatus;
use aurora_api::repl::NodeStatus;
use clap::{Args, Subcommand};
use clap_complete::engine::ArgValueCandidates;
use local_fleet::{Garage, PgCluster, PgOptions};
use serde_json::{json, Value};
use sidecar_kit::http_client::HttpClient;

use crate::error::{CliError, CliResult};
use crate::output::{self, Table};
use layout::{FleetPlan, NodePlan, S3Plan};
use state::{GarageEntry, NodeEntry, Postgres, Sandbox, S3};

pub const DEFAULT_DIR: &str = "/tmp/aurora-sandbox";

#[derive(Args, Debug)]
pub struct SandboxArgs {
    /// The sandbox directory: everything the sandbox writes is under it.
    #[arg(long, global = true, env = "AURORA_SANDBOX_DIR", default_value = DEFAULT_DIR)]
    pub dir: PathBuf,
    /// Machine-readable output (every sandbox command).
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: SandboxCommand,
}

#[derive(Subcommand, Debug)]
pub enum SandboxCommand {
    /// Start a fleet and return when every node is ready.
    ///
    /// Example: aurora-cli sandbox up --dir /tmp/fleet --nodes 3
    Up {
        /// Number of nodes: aurora (lead), star (backup), vengeance and
        /// computeN (compute).
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=16))]
        nodes: u8,
        /// The cluster's DNS zone.
        #[arg(long, default_value = "aurora.internal")]
        zone: String,
        /// Give each node its own network namespace and address, so
        /// `partition` can cut it off (root only).
        #[arg(long)]
        netns: bool,
        /// How long each node may take to become ready.
        #[arg(long, default_value_t = 180)]
        timeout_secs: u64,
    },
    /// Every node's processes and what they report.
    ///
    /// Example: aurora-cli sandbox status --json
    Status,
    /// SIGKILL every process of NODE, PostgreSQL included (a crash).
    ///
    /// Example: aurora-cli sandbox kill aurora
    Kill {
        #[arg(add = ArgValueCandidates::new(crate::completion::sandbox_nodes))]
        node: String,
    },
    /// Start NODE's processes again (after kill or stop).
    ///
    /// Example: aurora-cli sandbox start aurora
    Start {
        #[arg(add = ArgValueCandidates::new(crate::completion::sandbox_nodes))]
        node: String,
        #[arg(long, default_value_t = 180)]
        timeout_secs: u64,
    },
    /// Stop NODE gracefully (SIGTERM to its sidecars, fast shutdown of
    /// PostgreSQL).
    ///
    /// Example: aurora-cli sandbox stop vengeance
    Stop {
        #[arg(add = ArgValueCandidates::new(crate::completion::sandbox_nodes))]
        node: String,
    },
    /// Cut NODE off the sandbox network (`--netns` sandboxes only).
    ///
    /// Example: aurora-cli sandbox partition aurora
    Partition {
        #[arg(add = ArgValueCandidates::new(crate::completion::sandbox_nodes))]
        node: String,
    },
    /// Reconnect a partitioned NODE.
    ///
    /// Example: aurora-cli sandbox heal aurora
    Heal {
        #[arg(add = ArgValueCandidates::new(crate::completion::sandbox_nodes))]
        node: String,
    },
    /// Add the asset origin (Garage with the demo asset set) and asset-sync
    /// on every node to a sandbox that came up without them, as
    /// `./scripts/sandbox` does while Garage is still being built.
    ///
    /// Example: aurora-cli sandbox assets
    Assets {
        #[arg(long, default_value_t = 180)]
        timeout_secs: u64,
    },
    /// Stop everything and remove the directory (unless --keep).
    ///
    /// Example: aurora-cli sandbox down
    Down {
        /// Keep the directory (logs, data) after stopping.
        #[arg(long)]
        keep: bool,
    },
}

/// What a sandbox command did: one JSON document with `--json`, else
/// the line for a person.
fn report(json: bool, doc: serde_json::Value, line: impl FnOnce() -> String) {
    if json {
        output::print_json(&doc);
    } else {
        outln!("{}", line());
    }
}

pub async fn run(args: SandboxArgs) -> CliResult {
    let dir = absolute(&args.dir)?;
    let json = args.json;
    match args.command {
        SandboxCommand::Up {
            nodes,
            zone,
            netns,
            timeout_secs,
        } => {
            up(
                &dir,
                nodes as usize,
                &zone,
                netns,
                Duration::from_secs(timeout_secs),
                json,
            )
            .await
        }
        SandboxCommand::Status => status(&dir, json).await,
        SandboxCommand::Kill { node } => {
            let sb = Sandbox::load(&dir)?;
            let (_, n) = sb.node(&node)?;
            let killed = procs::kill_node(n);
            let doc = json!({ "node": node, "killed": killed });
            report(json, doc, || match killed.is_empty() {
                true => format!("{node}: nothing was running"),
                false => format!("{node}: killed {}", killed.join(", ")),
            });
            Ok(())
        }
        SandboxCommand::Start { node, timeout_secs } => {
            let sb = Sandbox::load(&dir)?;
            let (_, n) = sb.node(&node)?;
            let started = Instant::now();
            let timeout = Duration::from_secs(timeout_secs);
            // repl-manager first, and only once its PostgreSQL serves again
            // (a replica streaming) the sidecars that read it: a node that
            // answers `ready` while its database is still starting is not
            // back, and `status` right after would say so.
            let mut list = procs::start_sidecars(n, &["repl-manager"], timeout).await?;
            wait_rejoined(n, timeout).await?;
            list.extend(procs::start_node(n, timeout).await?);
            let secs = started.elapsed().as_secs_f64();
            let doc = json!({ "node": node, "started": list, "seconds": secs });
            report(json, doc, || match list.is_empty() {
                true => format!("{node}: already running"),
                false => format!(
                    "{node}: started {} (ready in {})",
                    list.join(", "),
                    output::duration_secs(secs)
                ),
            });
            Ok(())
        }
        SandboxCommand::Stop { node } => {
            let sb = Sandbox::load(&dir)?;
            let (_, n) = sb.node(&node)?;
            let list = procs::stop_node(n, Duration::from_secs(30)).await?;
            let doc = json!({ "node": node, "stopped": list });
            report(json, doc, || match list.is_empty() {
                true => format!("{node}: nothing was running"),
                false => format!("{node}: stopped {}", list.join(", ")),
            });
            Ok(())
        }
        SandboxCommand::Partition { node } => partition(&dir, &node, true, json),
        SandboxCommand::Heal { node } => partition(&dir, &node, false, json),
        SandboxCommand::Assets { timeout_secs } => {
            add_assets(&dir, Duration::from_secs(timeout_secs), json).await
        }
        SandboxCommand::Down { keep } => down(&dir, keep, json).await,
    }
}

fn absolute(dir: &Path) -> CliResult<PathBuf> {
    if dir.is_absolute() {
        return Ok(dir.to_path_buf());
    }
    std::env::current_dir()
        .map(|c| c.join(dir))
        .map_err(|e| CliError::failed(format!("current directory: {e}")))
}

fn mkdir(p: &Path) -> CliResult {
    std::fs::create_dir_all(p)
        .map_err(|e| CliError::failed(format!("creating {}: {e}", p.display())))
}

/// Configs and node.toml hold the admin token and passwords: mode 0600.
fn write(p: &Path, text: &str) -> CliResult {
    Ok(local_fleet::process::write_private(p, text)?)
}

/// PostgreSQL refuses to run as root, so as root its files belong to the
/// `postgres` user, who must be able to reach them: every ancestor of DIR
/// needs the world-execute bit (a sandbox under /root would not start).
fn check_reachable(dir: &Path) -> CliResult {
    use std::os::unix::fs::PermissionsExt;
    if !nix::unistd::Uid::effective().is_root() {
        return Ok(());
    }
    for a in dir.ancestors().skip(1) {
        if let Ok(m) = std::fs::metadata(a) {
            if m.permissions().mode() & 0o001 == 0 {
                return Err(CliError::usage(format!(
                    "--dir {}: the postgres user cannot enter {} (PostgreSQL will not run as root); \
                     use a directory under /tmp or /srv",
                    dir.display(),
                    a.display()
                )));
            }
        }
    }
    Ok(())
}

fn redis_reachable() -> Option<String> {
    let addr = "127.0.0.1:6379";
    std::net::TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_millis(300))
        .ok()
        .map(|_| addr.to_string())
}

/// Files for the demo asset set: small text, JSON, an SVG and a binary.
fn demo_assets() -> Vec<(&'static str, Vec<u8>)> {
    let mut blob = Vec::with_capacity(256 * 1024);
    let mut x: u32 = 0x2545_f491;
    while blob.len() < 256 * 1024 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        blob.extend_from_slice(&x.to_le_bytes());
    }
    vec![
        ("README.txt", b"Aurora sandbox demo assets: mirrored to every node's assets directory by asset-sync.\n".to_vec()),
        ("data/cities.json", br#"[{"name":"Oslo","lat":59.91,"lon":10.75},{"name":"Lisbon","lat":38.72,"lon":-9.14}]"#.to_vec()),
        ("img/logo.svg", br#"<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16"><circle cx="8" cy="8" r="7" fill="teal"/></svg>"#.to_vec()),
        ("models/demo-weights.bin", blob),
    ]
}

async fn upload_demo(garage: &Garage) -> CliResult {
    let s3 = garage.s3_client();
    for (key, body) in demo_assets() {
        s3.put_object()
            .bucket("assets")
            .key(key)
            .body(aws_sdk_s3::primitives::ByteStream::from(body))
            .send()
            .await
            .map_err(|e| CliError::failed(format!("uploading demo asset {key}: {e}")))?;
    }
    Ok(())
}

fn port() -> CliResult<u16> {
    Ok(local_fleet::free_port()?)
}

async fn up(
    dir: &Path,
    n: usize,
    zone: &str,
    netns: bool,
    timeout: Duration,
    json: bool,
) -> CliResult {
    let started = Instant::now();
    let pg_bindir = preflight(dir, zone, netns)?;
    mkdir(dir)?;
    // Removed again if `up` fails before sandbox.json records it.
    let net_handle = if netns {
        Some(local_fleet::netns::Network::create(n)?)
    } else {
        None
    };
    let network = net_handle.as_ref().map(|h| h.state());

    // Garage listens where every node can reach it: loopback, or the
    // bridge address in --netns mode.
    let s3_listen = match &network {
        Some(net) => IpAddr::V4(net.host_ip),
        None => IpAddr::V4(Ipv4Addr::LOCALHOST),
    };
    // On a terminal, each step as it finishes (stderr; quiet in scripts).
    let mut progress = output::Progress::new(json);
    let step = |p: &mut output::Progress, what: &str| {
        p.done(&format!(
            "  {what} ({})",
            output::duration_secs(started.elapsed().as_secs_f64())
        ))
    };
    let garage = match local_fleet::tools::garage_bin() {
        Ok(_) => {
            progress.show("starting Garage, the asset origin ...");
            let g = Garage::start_in(Some(dir.join("garage")), s3_listen).await?;
            g.create_bucket("assets").await?;
            upload_demo(&g).await?;
            step(&mut progress, "Garage up with the demo assets");
            Some(g)
        }
        Err(e) => {
            eprintln!("aurora-cli: asset-sync is left out: {e}");
            None
        }
    };

    let nodes = node_plans(dir, n, network.as_ref(), garage.is_some())?;
    let vpn_network = match &network {
        Some(net) => {
            let o = net.host_ip.octets();
            format!("{}.{}.{}.0/24", o[0], o[1], o[2])
        }
        None => "10.0.0.0/24".to_string(),
    };
    let plan = FleetPlan {
        dir: dir.to_path_buf(),
        zone: zone.to_string(),
        vpn_network,
        token: local_fleet::garage::random_hex(24),
        replication_password: local_fleet::garage::random_hex(16),
        pg_bindir,
        s3: garage.as_ref().map(|g| S3Plan {
            endpoint: g.endpoint(),
            key_id: g.key_id.clone(),
            secret_key: g.secret_key.clone(),
        }),
        // The machine's Redis listens on the host's loopback, which a
        // namespace does not share.
        redis: if network.is_none() {
            redis_reachable()
        } else {
            None
        },
        nodes,
    };

    init_postgres(&plan, network.is_some(), &mut progress, &step).await?;

    // Configs, then sandbox.json (so `down` can clean up even if a start
    // below fails).
    let entries = write_configs(&plan)?;
    let garage_entry = garage.map(|g| {
        let config = g.dir().join("garage.toml");
        let (gdir, pid) = g.detach();
        GarageEntry {
            dir: gdir,
            config,
            pid,
        }
    });
    let sb = Sandbox {
        zone: zone.to_string(),
        s3: plan.s3.as_ref().map(|s| S3 {
            endpoint: s.endpoint.clone(),
            region: local_fleet::garage::REGION.to_string(),
            bucket: "assets".into(),
        }),
        nodes: entries,
        dir: dir.to_path_buf(),
        created_at: chrono::Utc::now().to_rfc3339(),
        garage: garage_entry,
        network,
    };
    sb.save()?;
    // Recorded: from here on `sandbox down` removes the network.
    if let Some(h) = net_handle {
        h.detach();
    }

    start_fleet(&sb, timeout, &mut progress, &step).await?;
    drop(progress);
    if json {
        output::print_json(&summary(&sb, started.elapsed()));
    } else {
        print_summary(&sb, started.elapsed());
    }
    Ok(())
}

/// `sandbox up --json`: where everything is, without the secrets.
fn summary(sb: &Sandbox, took: Duration) -> Value {
    let nodes: Vec<Value> = sb
        .nodes
        .iter()
        .map(|n| {
            json!({
                "name": n.name,
                "role": n.role,
                "config": n.config,
                "postgres": format!("{}:{}", n.host, n.postgres.port),
                "repl_manager": n.admin_url("repl-manager"),
                "dns": n.dns,
            })
        })
        .collect();
    json!({
        "dir": sb.dir,
        "zone": sb.zone,
        "seconds": took.as_secs_f64(),
        "nodes": nodes,
        "s3": sb.s3.as_ref().map(|s| json!({ "endpoint": s.endpoint, "bucket": s.bucket })),
    })
}

/// Everything `up` refuses before it touches anything: a bad zone, an
/// existing sandbox or a non-empty directory, a directory the postgres
/// user cannot reach, `--netns` without root, missing programs. Returns
/// PostgreSQL's program directory.
fn preflight(dir: &Path, zone: &str, netns: bool) -> CliResult<PathBuf> {
    layout::validate_zone(zone)?;
    if zone.ends_with(".local") || zone == "local" {
        eprintln!(
            "aurora-cli: warning: `.local` is reserved for multicast DNS (RFC 6762); hosts with nss-mdns never ask a unicast server for it"
        );
    }
    if Sandbox::path(dir).exists() {
        return Err(CliError::usage(format!(
            "a sandbox already exists in {}: `aurora-cli sandbox status --dir {0}`, or `sandbox down --dir {0}` first",
            dir.display()
        )));
    }
    if dir.exists()
        && std::fs::read_dir(dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        return Err(CliError::usage(format!(
            "--dir {} exists and is not empty; pick a new directory",
            dir.display()
        )));
    }
    check_reachable(dir)?;
    if netns && !nix::unistd::Uid::effective().is_root() {
        return Err(CliError::usage(
            "--netns needs root (it creates network namespaces)",
        ));
    }
    let pg_bindir = local_fleet::tools::pg_bindir()?;
    for bin in ["repl-manager", "health-monitor", "dns-sync", "asset-sync"] {
        local_fleet::tools::workspace_bin(bin)?;
    }
    Ok(pg_bindir)
}

/// Each node's name, role, addresses and ports: fixed ports on its own
/// address in `--netns` mode, free loopback ports otherwise.
fn node_plans(
    dir: &Path,
    n: usize,
    network: Option<&local_fleet::netns::NetworkState>,
    with_assets: bool,
) -> CliResult<Vec<NodePlan>> {
    let mut nodes = Vec::new();
    for i in 0..n {
        let name = layout::node_name(i);
        let role = layout::node_role(i);
        let node_dir = dir.join("nodes").join(&name);
        let plan = match network {
            Some(net) => {
                let ip = net.nodes[i].ip.to_string();
                NodePlan {
                    name,
                    role,
                    host: ip.clone(),
                    vpn_ip: ip,
                    netns: Some(net.nodes[i].ns.clone()),
                    dir: node_dir,
                    pg_port: 5432,
                    repl_port: 8008,
                    health_port: 8011,
                    assets_port: with_assets.then_some(8010),
                    dns: (i < 2).then_some((8012, 53)),
                }
            }
            None => NodePlan {
                name,
                role,
                host: "127.0.0.1".into(),
                vpn_ip: format!("10.0.0.{}", i + 1),
                netns: None,
                dir: node_dir,
                pg_port: port()?,
                repl_port: port()?,
                health_port: port()?,
                assets_port: if with_assets { Some(port()?) } else { None },
                dns: if i < 2 {
                    Some((port()?, port()?))
                } else {
                    None
                },
            },
        };
        nodes.push(plan);
    }
    Ok(nodes)
}

/// PostgreSQL: the lead initialised, the others empty (repl-manager clones
/// them). Left in place for repl-manager to run.
async fn init_postgres(
    plan: &FleetPlan,
    private_network: bool,
    progress: &mut output::Progress,
    step: &impl Fn(&mut output::Progress, &str),
) -> CliResult {
    for p in &plan.nodes {
        for sub in ["logs", "config", "run", "assets"] {
            mkdir(&p.dir.join(sub))?;
        }
        let mut opts = PgOptions::named(&p.name);
        opts.listen = p.host.parse().map_err(|_| CliError::failed("bad host"))?;
        opts.port = Some(p.pg_port);
        opts.dir = Some(p.dir.join("postgres"));
        let pg = if p.role == "lead" {
            progress.show(&format!("{}: initialising PostgreSQL ...", p.name));
            let pg = PgCluster::init(opts).await?;
            step(progress, &format!("{}: PostgreSQL initialised", p.name));
            if private_network {
                // Trust inside the sandbox's private network, as loopback
                // is trusted otherwise (the replication user still uses its
                // password: repl-manager's block comes first).
                let hba = pg.data_dir().join("pg_hba.conf");
                let mut text = std::fs::read_to_string(&hba)
                    .map_err(|e| CliError::failed(format!("reading {}: {e}", hba.display())))?;
                text.push_str(&format!("\nhost all all {} trust\n", plan.vpn_network));
                std::fs::write(&hba, text)
                    .map_err(|e| CliError::failed(format!("writing {}: {e}", hba.display())))?;
            }
            pg
        } else {
            PgCluster::empty(opts)?
        };
        // The server writes its log as the postgres user.
        let log = p.dir.join("logs").join("postgres.log");
        write(&log, "")?;
        if let Some(owner) = pg.owner() {
            owner.chown(&log)?;
        }
        pg.detach();
    }

    Ok(())
}

/// Every sidecar's config and `node.toml` for each node (mode 0600), and
/// the entries `sandbox.json` records.
fn write_configs(plan: &FleetPlan) -> CliResult<Vec<NodeEntry>> {
    let mut entries = Vec::new();
    for p in &plan.nodes {
        let cfg = p.dir.join("config");
        write(&cfg.join("repl-manager.toml"), &plan.repl_manager(p)?)?;
        write(&cfg.join("health-monitor.toml"), &plan.health_monitor(p)?)?;
        if let Some(port) = p.assets_port {
            write(&cfg.join("asset-sync.toml"), &plan.asset_sync(p, port)?)?;
        }
        if let Some((admin, dns)) = p.dns {
            write(&cfg.join("dns-sync.toml"), &plan.dns_sync(p, admin, dns)?)?;
        }
        let node_toml = p.dir.join("node.toml");
        write(&node_toml, &plan.node_toml(p)?)?;
        let mut admin = BTreeMap::new();
        admin.insert("repl-manager".to_string(), Some(p.url(p.repl_port)));
        admin.insert("health-monitor".to_string(), Some(p.url(p.health_port)));
        admin.insert("asset-sync".to_string(), p.assets_port.map(|x| p.url(x)));
        admin.insert("dns-sync".to_string(), p.dns.map(|(a, _)| p.url(a)));
        entries.push(NodeEntry {
            name: p.name.clone(),
            role: p.role.to_string(),
            vpn_ip: p.vpn_ip.clone(),
            config: node_toml,
            postgres: Postgres {
                port: p.pg_port,
                dsn: p.local_dsn(),
                data_dir: p.data_dir(),
            },
            admin,
            dns: p.dns.map(|(_, d)| format!("{}:{d}", p.host)),
            host: p.host.clone(),
            dir: p.dir.clone(),
            netns: p.netns.clone(),
        });
    }
    Ok(entries)
}

/// Every repl-manager first (the lead's PostgreSQL stays read-only until a
/// majority grants it a lease, and the others clone from it), then, once
/// every standby streams, each node's other sidecars. A failure leaves the
/// sandbox as it is, for inspection.
async fn start_fleet(
    sb: &Sandbox,
    timeout: Duration,
    progress: &mut output::Progress,
    step: &impl Fn(&mut output::Progress, &str),
) -> CliResult {
    let dir = &sb.dir;
    let left_as_is = |e: CliError| {
        CliError::failed(format!(
            "{e}\nthe sandbox is left as it is for inspection (logs under {}/nodes/*/logs); \
             remove it with `aurora-cli sandbox down --dir {}`",
            dir.display(),
            dir.display()
        ))
    };
    progress.show("starting every repl-manager ...");
    let starts = sb
        .nodes
        .iter()
        .map(|n| procs::start_sidecars(n, &["repl-manager"], timeout));
    for r in futures::future::join_all(starts).await {
        r.map_err(left_as_is)?;
    }
    step(progress, "repl-manager running on every node");
    progress.show("cloning the standbys and waiting for them to stream ...");
    wait_streaming(sb, timeout).await.map_err(left_as_is)?;
    step(progress, "every standby streams; the backup is synchronous");
    for node in &sb.nodes {
        progress.show(&format!("{}: starting its other sidecars ...", node.name));
        procs::start_node(node, timeout).await.map_err(left_as_is)?;
        step(progress, &format!("{}: up", node.name));
    }
    Ok(())
}

/// Polls the repl-manager `/status` at `url` until `done` holds; on
/// timeout, the last answer (empty when none came).
async fn poll_status(
    url: &str,
    timeout: Duration,
    every: Duration,
    done: impl Fn(&NodeStatus) -> bool,
) -> Result<(), NodeStatus> {
    let http = HttpClient::new(Duration::from_secs(5));
    let deadline = Instant::now() + timeout;
    let mut last = NodeStatus::default();
    loop {
        if let Ok(st) = http.get_json::<NodeStatus>(url).await {
            if done(&st) {
                return Ok(());
            }
            last = st;
        }
        if Instant::now() >= deadline {
            return Err(last);
        }
        tokio::time::sleep(every).await;
    }
}

/// Waits until the lead reports every other node streaming from it, and
/// the backup as its synchronous standby.
async fn wait_streaming(sb: &Sandbox, timeout: Duration) -> CliResult {
    let Some(lead) = sb.nodes.first() else {
        return Ok(());
    };
    let url = format!(
        "{}/status",
        lead.admin_url("repl-manager").unwrap_or_default()
    );
    let want: Vec<&str> = sb.nodes.iter().skip(1).map(|n| n.name.as_str()).collect();
    let ready = |st: &NodeStatus| {
        let streaming: Vec<&str> = st
            .replicas
            .iter()
            .filter(|r| r.is_streaming())
            .map(|r| r.name.as_str())
            .collect();
        // With a backup, ready also means it is the synchronous standby:
        // until then the fleet cannot fail over safely.
        // Where the leader key is on Raft, that is when the committed sync
        // key names it.
        let sync_ok = match sb.nodes.get(1) {
            Some(backup) => st.synchronous_standby() == Some(backup.name.as_str()),
            None => true,
        };
        want.iter().all(|w| streaming.contains(w)) && sync_ok
    };
    poll_status(&url, timeout, Duration::from_millis(250), ready)
        .await
        .map_err(|last| {
            CliError::failed(format!(
                "not every node streams from {} after {} s (replicas: {}, synchronous standby: {}); see the logs under {}/nodes/*/logs",
                lead.name,
                timeout.as_secs(),
                last.replicas
                    .iter()
                    .map(|r| format!("{} {} ({})", r.name, r.state, r.sync_state))
                    .collect::<Vec<_>>()
                    .join(", "),
                last.sync
                    .as_ref()
                    .and_then(|s| s.standby.as_deref())
                    .unwrap_or("none"),
                sb.dir.display()
            ))
        })
}

/// Waits until `node`'s repl-manager reports its PostgreSQL serving: the
/// primary, or a replica streaming from the primary (after a crash it may
/// first be rewound or cloned again).
async fn wait_rejoined(node: &NodeEntry, timeout: Duration) -> CliResult {
    let Some(url) = node.admin_url("repl-manager") else {
        return Ok(());
    };
    let url = format!("{url}/status");
    poll_status(&url, timeout, Duration::from_millis(100), rejoined)
        .await
        .map_err(|last| {
            // The sandbox is removed after a failed test: what the logs said
            // goes into the error itself.
            CliError::failed(format!(
                "{}: not serving after {} s (state {}, activity {}, receiver {}, last error {}); see {}\n\
                 repl-manager.log, last lines:\n{}\npostgres.log, last lines:\n{}",
                node.name,
                timeout.as_secs(),
                last.state,
                last.activity.as_deref().unwrap_or("none"),
                last.receiver.as_ref().map_or("none", |r| r.status.as_str()),
                last.last_error.as_deref().unwrap_or("none"),
                node.logs().join("repl-manager.log").display(),
                local_fleet::error::log_tail(&node.logs().join("repl-manager.log"), 20),
                local_fleet::error::log_tail(&node.logs().join("postgres.log"), 20),
            ))
        })
}

/// A repl-manager `/status` of a node that is back in the fleet.
fn rejoined(status: &NodeStatus) -> bool {
    status.is_primary() || (status.is_replica() && status.streaming())
}

fn print_summary(sb: &Sandbox, took: Duration) {
    outln!(
        "sandbox up in {} ({} nodes, zone {}) after {}",
        sb.dir.display(),
        sb.nodes.len(),
        sb.zone,
        output::duration_secs(took.as_secs_f64())
    );
    let mut t = Table::new(&["NODE", "ROLE", "POSTGRES", "REPL-MANAGER", "DNS"]);
    for n in &sb.nodes {
        t.row(vec![
            n.name.clone(),
            n.role.clone(),
            format!("{}:{}", n.host, n.postgres.port),
            n.admin_url("repl-manager").unwrap_or("-").to_string(),
            n.dns.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    out!("{}", t.render());
    if let Some(s3) = &sb.s3 {
        outln!("s3: {} (bucket {})", s3.endpoint, s3.bucket);
    }
    let d = sb.dir.display();
    outln!("\nnext:");
    if let Some(lead) = sb.nodes.first() {
        outln!("  aurora-cli --config {} status", lead.config.display());
        // Automatic failover needs a majority without the primary: three
        // members or more (repl-manager's rule, unless allow_two_node).
        match sb.nodes.get(1) {
            Some(_) if sb.nodes.len() >= 3 => outln!(
                "  aurora-cli sandbox kill {} --dir {d}    # a crash: the backup takes over",
                lead.name
            ),
            Some(backup) => outln!(
                "  aurora-cli --config {} promote --yes    # two nodes fail over by hand only",
                backup.config.display()
            ),
            None => {}
        }
    }
    if let Some((dns, zone)) = sb
        .nodes
        .first()
        .and_then(|n| n.dns.as_ref())
        .map(|d| (d, &sb.zone))
    {
        if let Some((h, p)) = dns.rsplit_once(':') {
            outln!("  dig @{h} -p {p} db.{zone} +short");
        }
    }
    outln!("  aurora-cli sandbox down --dir {d}");
}

/// `sandbox assets`: Garage, the demo assets and asset-sync join a running
/// sandbox; each node's health-monitor restarts to check asset-sync too.
async fn add_assets(dir: &Path, timeout: Duration, json: bool) -> CliResult {
    let started = Instant::now();
    let mut sb = Sandbox::load(dir)?;
    if let Some(s3) = &sb.s3 {
        return Err(CliError::usage(format!(
            "this sandbox already has its asset origin ({})",
            s3.endpoint
        )));
    }
    local_fleet::tools::garage_bin()?;
    let lead = sb
        .nodes
        .first()
        .ok_or_else(|| CliError::failed("the sandbox has no nodes"))?;
    // From the file `up` wrote, not through the config loader: a token in
    // the operator's environment must not reach the sidecars' configs.
    let token = std::fs::read_to_string(&lead.config)
        .ok()
        .and_then(|t| t.parse::<toml::Table>().ok())
        .and_then(|t| t.get("admin")?.get("token")?.as_str().map(str::to_string))
        .ok_or_else(|| CliError::failed(format!("{} has no admin.token", lead.config.display())))?;
    let listen = match &sb.network {
        Some(net) => IpAddr::V4(net.host_ip),
        None => IpAddr::V4(Ipv4Addr::LOCALHOST),
    };
    let garage = Garage::start_in(Some(dir.join("garage")), listen).await?;
    garage.create_bucket("assets").await?;
    upload_demo(&garage).await?;
    let s3 = S3Plan {
        endpoint: garage.endpoint(),
        key_id: garage.key_id.clone(),
        secret_key: garage.secret_key.clone(),
    };
    for node in sb.nodes.iter_mut() {
        let port = if sb.network.is_some() { 8010 } else { port()? };
        let url = format!("http://{}:{port}", node.host);
        let cfg = node.config_dir();
        write(
            &cfg.join("asset-sync.toml"),
            &layout::asset_sync_toml(&node.host, port, &token, &s3, &node.dir.join("assets"))?,
        )?;
        layout::set_in_toml(&node.config, &["sidecars", "asset_sync"], &url)?;
        layout::set_in_toml(
            &cfg.join("health-monitor.toml"),
            &["checks", "sidecars", "asset-sync"],
            &url,
        )?;
        node.admin.insert("asset-sync".into(), Some(url));
    }
    let config = garage.dir().join("garage.toml");
    let (gdir, pid) = garage.detach();
    sb.garage = Some(GarageEntry {
        dir: gdir,
        config,
        pid,
    });
    sb.s3 = Some(S3 {
        endpoint: s3.endpoint.clone(),
        region: local_fleet::garage::REGION.to_string(),
        bucket: "assets".into(),
    });
    sb.save()?;
    for node in &sb.nodes {
        procs::start_sidecars(node, &["asset-sync"], timeout).await?;
        // health-monitor reads its list of sidecars at start.
        if let Some(pid) = procs::sidecar_pid(node, "health-monitor") {
            procs::stop_pid(pid, "health-monitor").await;
            procs::start_sidecars(node, &["health-monitor"], timeout).await?;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let objects = demo_assets().len();
    let doc =
        json!({ "endpoint": s3.endpoint, "bucket": "assets", "objects": objects, "seconds": secs });
    report(json, doc, || {
        format!(
            "assets: Garage at {} (bucket assets, {objects} demo objects); asset-sync mirrors it into every node's assets directory (after {})",
            s3.endpoint,
            output::duration_secs(secs)
        )
    });
    Ok(())
}

async fn status(dir: &Path, as_json: bool) -> CliResult {
    let sb = Sandbox::load(dir)?;
    let http = HttpClient::new(Duration::from_secs(3));
    let mut rows = Vec::new();
    for (i, n) in sb.nodes.iter().enumerate() {
        let mut processes = serde_json::Map::new();
        processes.insert("postgres".into(), json!(procs::postmaster_pid(n)));
        for s in n.sidecars() {
            processes.insert(s.into(), json!(procs::sidecar_pid(n, s)));
        }
        let repl: Option<NodeStatus> = match n.admin_url("repl-manager") {
            Some(u) if procs::sidecar_pid(n, "repl-manager").is_some() => {
                http.get_json(&format!("{u}/status")).await.ok()
            }
            _ => None,
        };
        let health: Option<MonitorStatus> = match n.admin_url("health-monitor") {
            Some(u) if procs::sidecar_pid(n, "health-monitor").is_some() => {
                http.get_json(&format!("{u}/status")).await.ok()
            }
            _ => None,
        };
        let partitioned = sb.network.as_ref().map(|net| net.is_cut(i));
        rows.push(json!({
            "name": n.name,
            "role": n.role,
            "processes": processes,
            "postgres": repl.as_ref().map(|r| r.state.to_string()),
            "epoch": repl.as_ref().map(|r| r.epoch),
            "health": health.as_ref().map(|h| h.status.to_string()),
            "partitioned": partitioned,
        }));
    }
    let doc = json!({"dir": sb.dir, "zone": sb.zone, "s3": sb.s3,
                     "garage_running": sb.garage.as_ref().and_then(|g| g.pid).map(local_fleet::process::pid_alive),
                     "nodes": rows});
    if as_json {
        output::print_json(&doc);
        return Ok(());
    }
    let mut t = Table::new(&[
        "NODE",
        "ROLE",
        "POSTGRES",
        "REPL-MANAGER",
        "HEALTH-MONITOR",
        "ASSET-SYNC",
        "DNS-SYNC",
        "STATE",
        "HEALTH",
    ]);
    for r in &rows {
        let p = &r["processes"];
        let cell = |k: &str| match p.get(k) {
            None => "-".to_string(),
            Some(Value::Null) => "dead".to_string(),
            Some(_) => "running".to_string(),
        };
        let mut state = r["postgres"].as_str().unwrap_or("-").to_string();
        if r["partitioned"] == json!(true) {
            state = "partitioned".into();
        }
        t.row(vec![
            r["name"].as_str().unwrap_or("").into(),
            r["role"].as_str().unwrap_or("").into(),
            cell("postgres"),
            cell("repl-manager"),
            cell("health-monitor"),
            cell("asset-sync"),
            cell("dns-sync"),
            state,
            r["health"].as_str().unwrap_or("-").into(),
        ]);
    }
    out!("{}", t.render());
    Ok(())
}

fn partition(dir: &Path, node: &str, cut: bool, json: bool) -> CliResult {
    let sb = Sandbox::load(dir)?;
    let (i, _) = sb.node(node)?;
    let net = sb.network.as_ref().ok_or_else(|| {
        CliError::usage(
            "this sandbox shares one network (loopback); partitions need `sandbox up --netns` (root)",
        )
    })?;
    if cut {
        net.cut(i)?;
    } else {
        net.heal(i)?;
    }
    report(
        json,
        json!({ "node": node, "partitioned": cut }),
        || match cut {
            true => format!("{node}: cut off from the sandbox network"),
            false => format!("{node}: reconnected"),
        },
    );
    Ok(())
}

async fn down(dir: &Path, keep: bool, json: bool) -> CliResult {
    let sb = Sandbox::load(dir)?;
    // Compute nodes first, the lead last: nobody fails over to a node that
    // is about to go.
    for n in sb.nodes.iter().rev() {
        if let Err(e) = procs::stop_node(n, Duration::from_secs(15)).await {
            eprintln!("aurora-cli: {}: {e}; killing it", n.name);
            procs::kill_node(n);
        }
    }
    if let Some(pid) = sb.garage.as_ref().and_then(|g| g.pid) {
        procs::stop_pid(pid, "garage").await;
    }
    if let Some(net) = &sb.network {
        net.remove();
    }
    if !keep {
        std::fs::remove_dir_all(dir)
            .map_err(|e| CliError::failed(format!("removing {}: {e}", dir.display())))?;
    }
    report(
        json,
        json!({ "dir": dir, "removed": !keep }),
        || match keep {
            true => format!("sandbox stopped; its files are kept in {}", dir.display()),
            false => format!("sandbox stopped and {} removed", dir.display()),
        },
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::rejoined;
    use aurora_api::repl::NodeStatus;
    use serde_json::{json, Value};

    fn back(v: Value) -> bool {
        rejoined(&serde_json::from_value::<NodeStatus>(v).unwrap())
    }

    #[test]
    fn a_node_is_back_when_its_postgres_serves() {
        assert!(back(json!({"state": "primary"})));
        assert!(back(
            json!({"state": "replica", "receiver": {"status": "streaming"}})
        ));
        // Ready, but the database is still starting, or not streaming yet.
        assert!(!back(json!({"state": "unreachable"})));
        assert!(!back(json!({"state": "stopped"})));
        assert!(!back(json!({"state": "replica", "receiver": null})));
        assert!(!back(
            json!({"state": "replica", "receiver": {"status": "startup"}})
        ));
        assert!(!back(json!({})));
    }
}
