//! The operator's one tool for an Aurora fleet.
//!
//! Every command reads this node's config (`--config`, `$AURORA_CONFIG`,
//! else `/etc/aurora/node.toml`) and talks to the node's sidecars through
//! their admin APIs; `sandbox` runs a whole fleet on one machine.
//!
//! Exit status: 0 on success, 1 on a failed operation, 2 on a usage or
//! config error.

/// `print!` and `println!` for the tool's output. A closed pipe
/// (`aurora-cli sync-db | head -3`) ends the process quietly with status 0,
/// as `ls` or `git log` do, instead of the standard macros' panic.
macro_rules! out {
    ($($arg:tt)*) => { $crate::output::write_stdout(format_args!($($arg)*)) };
}
macro_rules! outln {
    () => { $crate::output::write_stdout(format_args!("\n")) };
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

pub mod api;
pub mod commands;
pub mod completion;
pub mod config;
pub mod error;
pub mod garage;
pub mod output;
pub mod sandbox;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use clap_complete::engine::ArgValueCandidates;

use crate::config::NodeConfig;
use crate::error::{CliError, CliResult};

const EXAMPLES: &str = "Examples:
  aurora-cli status
  aurora-cli switchover --to star
  aurora-cli sync-db --json
  aurora-cli sandbox up --dir /tmp/fleet
  aurora-cli --config /tmp/fleet/nodes/aurora/node.toml status

Exit status: 0 success, 1 the operation failed, 2 usage or config error.";

#[derive(Parser, Debug)]
#[command(
    name = "aurora-cli",
    version = sidecar_kit::telemetry::long_version(),
    about = "The operator's one tool for an Aurora fleet.",
    after_help = EXAMPLES
)]
pub struct Cli {
    /// The node config (default: $AURORA_CONFIG, else /etc/aurora/node.toml).
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Check the node config and print it, secrets redacted, as the
    /// sidecars' --check-config does: exit 0 when it loads, 2 naming the
    /// key when it does not.
    #[arg(long)]
    pub check_config: bool,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// This node and the fleet at a glance: roles, health, replication lag,
    /// asset sync age, DNS serial.
    ///
    /// Example: aurora-cli status --watch
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Refresh until Ctrl-C (redrawn in place on a terminal; with
        /// --json, one document per line).
        #[arg(long, short)]
        watch: bool,
        /// Seconds between refreshes with --watch.
        #[arg(long, default_value_t = 2.0, value_name = "SECS", requires = "watch",
              value_parser = parse_interval)]
        interval: f64,
    },
    /// Every check of this node; exit 1 if any is critical.
    ///
    /// Example: aurora-cli health
    Health {
        #[arg(long)]
        json: bool,
    },
    /// Replication: role, timeline, epoch, every replica's state and lag,
    /// and the primary's slots.
    ///
    /// Example: aurora-cli sync-db
    SyncDb {
        #[arg(long)]
        json: bool,
    },
    /// Every change of primary the fleet committed (failovers, switchovers)
    /// and where each PostgreSQL timeline ended, as Patroni's history.
    ///
    /// Example: aurora-cli history
    History {
        #[arg(long)]
        json: bool,
    },
    /// Promote this node to primary (on the backup: a switchover to it).
    ///
    /// Example: aurora-cli promote --yes
    Promote {
        /// Do not ask for confirmation.
        #[arg(long, short)]
        yes: bool,
        /// Promote even though the node lags (may lose acknowledged writes).
        #[arg(long)]
        force: bool,
        #[arg(long)]
        json: bool,
    },
    /// Re-clone this standby from the primary (Patroni's reinit): the data
    /// directory is moved aside, never deleted. A primary is refused, and a
    /// standby that streams without --force.
    ///
    /// Example: aurora-cli reinit --yes
    Reinit {
        /// Do not ask for confirmation.
        #[arg(long, short)]
        yes: bool,
        /// Re-clone even though the standby streams.
        #[arg(long)]
        force: bool,
        #[arg(long)]
        json: bool,
    },
    /// Make this primary follow another primary (after a split).
    ///
    /// Example: aurora-cli demote --to star --yes
    Demote {
        /// The primary to follow (default: the one other primary).
        #[arg(long, add = ArgValueCandidates::new(completion::fleet_nodes))]
        to: Option<String>,
        #[arg(long, short)]
        yes: bool,
        #[arg(long)]
        json: bool,
    },
    /// Hand the primary role to NODE with zero data loss.
    ///
    /// Example: aurora-cli switchover --to star --yes
    Switchover {
        #[arg(long, value_name = "NODE", add = ArgValueCandidates::new(completion::fleet_nodes))]
        to: String,
        #[arg(long, short)]
        yes: bool,
        /// Switch over even to a lagging node.
        #[arg(long)]
        force: bool,
        /// Return once the switchover is done, without waiting for the new
        /// primary's synchronous standby (until it streams, a failover
        /// would refuse to promote).
        #[arg(long)]
        no_wait: bool,
        /// How long to wait for the synchronous standby.
        #[arg(long, default_value_t = 60, value_name = "SECS")]
        wait_secs: u64,
        #[arg(long)]
        json: bool,
    },
    /// Run an asset sync now and wait for its result.
    ///
    /// Example: aurora-cli sync-assets
    SyncAssets {
        /// Return as soon as the sync is triggered.
        #[arg(long)]
        no_wait: bool,
        #[arg(long)]
        json: bool,
    },
    /// The asset origin (Garage on the lead and the backup): `setup` lays it
    /// out — nodes connected, each in its own zone, the layout applied, the
    /// fleet's asset key imported, the bucket created (the installer runs
    /// it; a rerun changes nothing).
    ///
    /// Example: aurora-cli asset-origin setup --peer aurora=<id>@10.0.0.1:3901
    #[command(subcommand)]
    AssetOrigin(AssetOriginCommand),
    /// Show a service's logs (docker compose logs).
    ///
    /// Example: aurora-cli logs repl-manager -f
    Logs {
        #[arg(add = ArgValueCandidates::new(completion::services))]
        service: Option<String>,
        /// Keep following.
        #[arg(long, short)]
        follow: bool,
        /// Lines from the end.
        #[arg(long)]
        tail: Option<u32>,
    },
    /// Restart a service, or every service, and wait for health.
    ///
    /// Example: aurora-cli restart dns-sync
    Restart {
        #[arg(add = ArgValueCandidates::new(completion::services))]
        service: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Maintenance mode: no automatic failover, fencing, repair or restart
    /// on any member until `resume` (kept across restarts).
    ///
    /// Example: aurora-cli pause
    Pause {
        /// Only this node.
        #[arg(long)]
        local: bool,
        #[arg(long)]
        json: bool,
    },
    /// End maintenance mode on every member (or this node with --local).
    ///
    /// Example: aurora-cli resume
    Resume {
        /// Only this node.
        #[arg(long)]
        local: bool,
        #[arg(long)]
        json: bool,
    },
    /// The fleet's timing and sync policy, the same on every member
    /// (Patroni's dynamic config): `show` it, or `set` keys through the
    /// fleet's Raft group; a change that would break the failover timing is
    /// refused with the reason.
    ///
    /// Example: aurora-cli config set replication.synchronous_strict=true
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Pull images and recreate changed services one at a time, each
    /// waiting for its health check; roll back if one fails. With SERVICE
    /// and --image, move that one service to a new image (no pull: the image
    /// may be local) and record it in the node's env file.
    ///
    /// Example: aurora-cli update
    /// Example: aurora-cli update asset-sync --image aurora-node/asset-sync:0.2.0
    Update {
        /// Only this service.
        #[arg(add = ArgValueCandidates::new(completion::services))]
        service: Option<String>,
        /// The image to move SERVICE to (its AURORA_IMAGE_* variable).
        #[arg(long, requires = "service", value_name = "REF")]
        image: Option<String>,
        /// Do not pull (images built or loaded locally).
        #[arg(long)]
        no_pull: bool,
        #[arg(long)]
        json: bool,
    },
    /// A shell in a service's container.
    ///
    /// Example: aurora-cli ssh postgres
    Ssh {
        #[arg(add = ArgValueCandidates::new(completion::services))]
        service: String,
    },
    /// A verified backup of PostgreSQL, the assets and the node's config,
    /// into one timestamped directory.
    ///
    /// Example: aurora-cli backup --dest /var/backups/aurora
    Backup {
        /// Where to put it (default: backup.dest in the node config).
        #[arg(long)]
        dest: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Restore a backup into an empty data directory (checksums and
    /// pg_verifybackup checked).
    ///
    /// Example: aurora-cli restore --from /var/backups/aurora/aurora-20261127T031500Z --data-dir /srv/pgdata
    Restore {
        /// The backup directory.
        #[arg(long)]
        from: PathBuf,
        /// An empty (or missing) directory for PostgreSQL's data.
        #[arg(long)]
        data_dir: PathBuf,
        /// Also restore the assets here.
        #[arg(long)]
        assets_dir: Option<PathBuf>,
        /// Also restore the config and credentials here.
        #[arg(long)]
        config_dir: Option<PathBuf>,
        /// PostgreSQL's binaries (pg_verifybackup).
        #[arg(long)]
        bin_dir: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Join tokens: `create` prints a one-use token for a new node (on the
    /// lead or the backup).
    ///
    /// Example: aurora-cli join-token create --ttl 1h --role compute
    #[command(subcommand)]
    JoinToken(JoinTokenCommand),
    /// Join this new node to a fleet with a token: register it, get its
    /// VPN address, the mesh and the fleet secrets (bootstrap.sh --join
    /// runs this; it needs no node config yet).
    ///
    /// Example: aurora-cli join --token "$TOKEN" --name star --role compute --wg-public-key-file public.key --out /opt/aurora/state/join
    Join {
        /// The token `aurora-cli join-token create` printed (or set AURORA_JOIN_TOKEN).
        #[arg(long, env = "AURORA_JOIN_TOKEN", hide_env_values = true)]
        token: String,
        /// Call this endpoint (host:port) instead of the token's: the
        /// backup's, when the lead is away. It must serve the same
        /// certificate.
        #[arg(long, value_name = "HOST:PORT")]
        url: Option<String>,
        #[arg(long)]
        name: String,
        /// backup or compute.
        #[arg(long, value_parser = ["backup", "compute"])]
        role: String,
        /// This node's WireGuard public key (its private key stays here).
        #[arg(
            long,
            value_name = "KEY",
            conflicts_with = "wg_public_key_file",
            required_unless_present = "wg_public_key_file"
        )]
        wg_public_key: Option<String>,
        #[arg(long, value_name = "FILE")]
        wg_public_key_file: Option<PathBuf>,
        /// host:port where the other nodes reach this node's WireGuard.
        #[arg(long, value_name = "HOST:PORT")]
        wg_endpoint: Option<String>,
        /// The VPN address to ask for (default: the next free one).
        #[arg(long, value_name = "IP")]
        vpn_ip: Option<std::net::IpAddr>,
        /// Where to write what the fleet answered.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Keep asking this long while the fleet answers "not yet" (its
        /// node still starting, its primary away for a moment).
        #[arg(long, value_name = "SECS", default_value_t = 60)]
        wait: u64,
        #[arg(long)]
        json: bool,
    },
    /// Take a node out of the fleet's registry: every node drops its
    /// WireGuard peer, DNS names and Prometheus target. Stop its stack first
    /// (or --force); the primary is refused (switch over first).
    ///
    /// Example: aurora-cli remove-node vengeance --yes
    RemoveNode {
        #[arg(value_name = "NODE", add = ArgValueCandidates::new(completion::fleet_nodes))]
        node: String,
        /// Remove it even though it still reports (it registers again when
        /// its health-monitor starts).
        #[arg(long)]
        force: bool,
        #[arg(long, short)]
        yes: bool,
        #[arg(long)]
        json: bool,
    },
    /// A whole fleet on this machine, without Docker.
    ///
    /// Example: aurora-cli sandbox up --nodes 3
    Sandbox(sandbox::SandboxArgs),
    /// Apply the `aurora` schema migrations on the primary (idempotent;
    /// repl-manager does it on every start and promotion).
    ///
    /// Example: aurora-cli migrate --dsn 'host=10.0.0.1 user=aurora dbname=aurora'
    Migrate {
        /// libpq connection string of the primary (or set AURORA_DSN).
        #[arg(long, env = "AURORA_DSN", hide_env_values = true)]
        dsn: String,
        #[arg(long)]
        json: bool,
    },
    /// Shell completions, which complete node and service names too: the
    /// script calls aurora-cli back, so source it anew on shell start.
    ///
    /// Example: echo 'source <(aurora-cli completions bash)' >> ~/.bashrc
    Completions { shell: clap_complete::Shell },
    /// Print the version and the commit it was built from.
    ///
    /// Example: aurora-cli version --json
    Version {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// The values in force, where they come from (`fleet`: committed;
    /// `file`: this node's config file) and which differ from the file.
    ///
    /// Example: aurora-cli config show
    Show {
        #[arg(long)]
        json: bool,
    },
    /// Change keys for the whole fleet, as KEY=VALUE: pause,
    /// failover.timeout_secs, failover.probe_interval_secs,
    /// replication.loop_interval_secs, replication.sync_degrade_after_secs,
    /// replication.synchronous_strict, replication.max_lag_on_failover_bytes.
    ///
    /// Example: aurora-cli config set failover.timeout_secs=8 replication.sync_degrade_after_secs=15
    Set {
        #[arg(required = true, value_name = "KEY=VALUE")]
        assignments: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Edit the fleet's config in $VISUAL or $EDITOR (Patroni's
    /// edit-config): the changed keys are shown and, once confirmed,
    /// applied as with `set`.
    ///
    /// Example: EDITOR=nano aurora-cli config edit
    Edit {
        /// Do not ask for confirmation.
        #[arg(long, short)]
        yes: bool,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum JoinTokenCommand {
    /// A new one-use token; printed once, never stored (only its hash).
    ///
    /// Example: aurora-cli join-token create --ttl 1h
    Create {
        /// How long it is valid: seconds, or with s/m/h/d [1h; at most 7d].
        #[arg(long, default_value = "1h", value_parser = parse_ttl)]
        ttl: std::time::Duration,
        /// The only role a node may join with on it [backup or compute].
        #[arg(long, value_parser = ["backup", "compute"])]
        role: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum AssetOriginCommand {
    /// Lay out this node's Garage with the others' (lead: alone, or staged
    /// until the backup's run; backup: with --peer the lead's). Prints this
    /// node's Garage as NAME=ID@HOST:PORT, what the other node's --peer takes.
    ///
    /// Example: aurora-cli asset-origin setup --peer aurora=<id>@10.0.0.1:3901
    Setup {
        /// Another node's Garage, NAME=ID@HOST:PORT (what setup printed there).
        #[arg(long = "peer", value_name = "NAME=ID@HOST:PORT", value_parser = parse_garage_peer)]
        peers: Vec<garage::GaragePeer>,
        /// What each node offers, in bytes or with K/M/G/T [its data partition's size].
        #[arg(long, value_parser = commands::asset_origin::parse_capacity)]
        capacity: Option<u64>,
        /// The asset bucket.
        #[arg(long, default_value = "assets", value_parser = commands::asset_origin::parse_bucket)]
        bucket: String,
        /// The fleet's secrets, for its asset key [<state>/secrets/fleet.env
        /// beside compose.env_file].
        #[arg(long, value_name = "FILE")]
        fleet_env: Option<PathBuf>,
        /// Garage outside the compose stack: this binary, with --garage-config.
        #[arg(long, value_name = "PATH", requires = "garage_config")]
        garage_bin: Option<PathBuf>,
        /// Garage outside the compose stack: its config file.
        #[arg(long, value_name = "FILE", requires = "garage_bin")]
        garage_config: Option<PathBuf>,
        /// How long to keep trying while Garage starts or a peer is not
        /// reachable yet.
        #[arg(long, default_value_t = 120, value_name = "SECS")]
        wait_secs: u64,
        #[arg(long)]
        json: bool,
    },
}

fn parse_garage_peer(raw: &str) -> Result<garage::GaragePeer, String> {
    garage::GaragePeer::parse(raw)
}

/// `--ttl`: `90`, `90s`, `15m`, `1h`, `2d`; 1 s to 7 days.
fn parse_ttl(raw: &str) -> Result<std::time::Duration, String> {
    let (digits, unit) = match raw.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => raw.split_at(i),
        None => (raw, "s"),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{raw:?} is not a duration (90, 90s, 15m, 1h, 2d)"))?;
    let unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{raw:?}: the unit must be s, m, h or d")),
    };
    let secs = n.saturating_mul(unit);
    if secs == 0 || secs > cluster_db::join::MAX_TOKEN_TTL_SECS {
        return Err(format!("{raw} is outside 1 s to 7 days"));
    }
    Ok(std::time::Duration::from_secs(secs))
}

pub fn main() -> ExitCode {
    // The shell asking for completions (COMPLETE=<shell>): answer, exit.
    clap_complete::CompleteEnv::with_factory(Cli::command).complete();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("aurora-cli: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("aurora-cli: {e}");
            e.exit_code()
        }
    }
}

async fn dispatch(cli: Cli) -> CliResult {
    use commands::*;
    let load = || NodeConfig::load(cli.config.as_deref());
    if cli.check_config {
        let config = load()?;
        let text =
            sidecar_kit::config::render(&config).map_err(|e| CliError::failed(e.to_string()))?;
        outln!(
            "# aurora-cli {}: effective node config (secrets redacted)",
            sidecar_kit::telemetry::long_version()
        );
        out!("{text}");
        return Ok(());
    }
    let Some(command) = cli.command else {
        return Err(CliError::usage(
            "a command is required (aurora-cli --help lists them)",
        ));
    };
    match command {
        Command::Version { json } => {
            use sidecar_kit::telemetry::{long_version, COMMIT, VERSION};
            if json {
                output::print_json(&serde_json::json!({
                    "name": "aurora-cli",
                    "version": VERSION,
                    "commit": COMMIT,
                    "api": aurora_api::API_VERSION,
                }));
            } else {
                outln!(
                    "aurora-cli {} (HTTP contract v{})",
                    long_version(),
                    aurora_api::API_VERSION
                );
            }
            Ok(())
        }
        Command::Completions { shell } => {
            let script = completion::registration(shell).map_err(CliError::usage)?;
            out!("{script}");
            Ok(())
        }
        Command::Migrate { dsn, json } => migrate(&dsn, json).await,
        Command::Sandbox(args) => sandbox::run(args).await,
        Command::RemoveNode {
            node,
            force,
            yes,
            json,
        } => join::remove_node(&load()?, &node, force, yes, json).await,
        Command::AssetOrigin(AssetOriginCommand::Setup {
            peers,
            capacity,
            bucket,
            fleet_env,
            garage_bin,
            garage_config,
            wait_secs,
            json,
        }) => {
            let args = commands::asset_origin::SetupArgs {
                peers,
                capacity,
                bucket,
                fleet_env,
                garage: garage_bin.zip(garage_config),
                wait: std::time::Duration::from_secs(wait_secs),
                json,
            };
            commands::asset_origin::setup(&load()?, args).await
        }
        Command::JoinToken(JoinTokenCommand::Create { ttl, role, json }) => {
            join::create_token(&load()?, ttl, role.as_deref(), json).await
        }
        Command::Join {
            token,
            url,
            name,
            role,
            wg_public_key,
            wg_public_key_file,
            wg_endpoint,
            vpn_ip,
            out,
            wait,
            json,
        } => {
            let key = match (wg_public_key, wg_public_key_file) {
                (Some(k), _) => k,
                (None, Some(f)) => std::fs::read_to_string(&f).map_err(|e| {
                    CliError::usage(format!("--wg-public-key-file {}: {e}", f.display()))
                })?,
                (None, None) => {
                    return Err(CliError::usage(
                        "--wg-public-key or --wg-public-key-file is required",
                    ))
                }
            };
            join::join(
                join::JoinArgs {
                    token: &token,
                    url: url.as_deref(),
                    name: &name,
                    role: &role,
                    wg_public_key: &key,
                    wg_endpoint: wg_endpoint.as_deref(),
                    vpn_ip,
                    out: &out,
                    timeout: std::time::Duration::from_secs(30),
                    wait: std::time::Duration::from_secs(wait),
                },
                json,
            )
            .await
        }
        Command::Restore {
            from,
            data_dir,
            assets_dir,
            config_dir,
            bin_dir,
            json,
        } => backup::restore(
            backup::RestoreArgs {
                from: &from,
                data_dir: &data_dir,
                assets_dir: assets_dir.as_deref(),
                config_dir: config_dir.as_deref(),
                bin_dir: bin_dir.as_deref(),
            },
            json,
        ),
        Command::Status {
            json,
            watch,
            interval,
        } => {
            let every = watch.then(|| std::time::Duration::from_secs_f64(interval));
            status::status(&load()?, json, every).await
        }
        Command::Health { json } => status::health(&load()?, json).await,
        Command::SyncDb { json } => replication::sync_db(&load()?, json).await,
        Command::History { json } => replication::history(&load()?, json).await,
        Command::Promote { yes, force, json } => {
            replication::promote(&load()?, yes, force, json).await
        }
        Command::Reinit { yes, force, json } => {
            replication::reinit(&load()?, yes, force, json).await
        }
        Command::Demote { to, yes, json } => {
            replication::demote(&load()?, to.as_deref(), yes, json).await
        }
        Command::Switchover {
            to,
            yes,
            force,
            no_wait,
            wait_secs,
            json,
        } => {
            let wait = (!no_wait).then(|| std::time::Duration::from_secs(wait_secs));
            replication::switchover(&load()?, &to, yes, force, wait, json).await
        }
        Command::Pause { local, json } => replication::pause(&load()?, true, local, json).await,
        Command::Config(ConfigCommand::Show { json }) => {
            replication::show_config(&load()?, json).await
        }
        Command::Config(ConfigCommand::Set { assignments, json }) => {
            replication::set_config(&load()?, &assignments, json).await
        }
        Command::Config(ConfigCommand::Edit { yes, json }) => {
            replication::edit_config(&load()?, yes, json).await
        }
        Command::Resume { local, json } => replication::pause(&load()?, false, local, json).await,
        Command::SyncAssets { no_wait, json } => assets::sync_assets(&load()?, no_wait, json).await,
        Command::Logs {
            service,
            follow,
            tail,
        } => compose::logs(&load()?, service.as_deref(), follow, tail),
        Command::Restart { service, json } => compose::restart(&load()?, service.as_deref(), json),
        Command::Update {
            service,
            image,
            no_pull,
            json,
        } => compose::update(
            &load()?,
            &compose::UpdateRequest {
                service,
                image,
                pull: !no_pull,
            },
            json,
        ),
        Command::Ssh { service } => compose::ssh(&load()?, &service),
        Command::Backup { dest, json } => backup::backup(&load()?, dest.as_deref(), json),
    }
}

/// `--interval`: at least 0.2 s (a sidecar is asked several things per
/// refresh), at most a day.
fn parse_interval(raw: &str) -> Result<f64, String> {
    let v: f64 = raw
        .parse()
        .map_err(|_| format!("{raw:?} is not a number of seconds"))?;
    if (0.2..=86_400.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{raw} s is outside 0.2 to 86400"))
    }
}

async fn migrate(dsn: &str, json: bool) -> CliResult {
    let target =
        cluster_db::DbTarget::parse(dsn).map_err(|e| CliError::usage(format!("--dsn: {e}")))?;
    let mut client = cluster_db::connect(&target, std::time::Duration::from_secs(10))
        .await
        .map_err(|e| CliError::failed(format!("connecting to {}: {e}", target.label)))?;
    match cluster_db::migrate(&mut client).await {
        Ok(r) if json => {
            output::print_json(&serde_json::json!({
                "target": target.label,
                "version": r.version,
                "applied": r.applied,
            }));
            Ok(())
        }
        Ok(r) if r.applied.is_empty() => {
            outln!(
                "schema aurora is current (version {}) on {}",
                r.version,
                target.label
            );
            Ok(())
        }
        Ok(r) => {
            outln!(
                "applied migrations {:?}; schema aurora is at version {} on {}",
                r.applied,
                r.version,
                target.label
            );
            Ok(())
        }
        Err(cluster_db::DbError::NotPrimary) => Err(CliError::failed(format!(
            "{} is a standby; run migrate against the primary (the lead)",
            target.label
        ))),
        Err(e) => Err(CliError::failed(format!("migrate failed: {e}"))),
    }
}
