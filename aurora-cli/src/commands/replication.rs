//! `sync-db` (replication status), `promote`, `demote` and `switchover`,
//! all through repl-manager's endpoints.

use std::io::{BufRead, IsTerminal};
use std::time::{Duration, Instant};

use aurora_api::repl::{
    ClusterMember, ClusterView, ConfigPatch, DemoteRequest, FailoverView, FleetConfig, History,
    MaintenanceReport, NodeState, NodeStatus, OpReport, PauseReport, PauseRequest, PromoteRequest,
    ReinitializeRequest, SwitchoverRequest, SyncMode,
};
use hyper::StatusCode;

use crate::api::{reason, Api, Sidecar};
use crate::config::NodeConfig;
use crate::error::{CliError, CliResult};
use crate::output::{self, Table};

/// Operations wait for every member to follow; repl-manager bounds its own
/// steps, this bounds the wait for its answer.
const OP_TIMEOUT: Duration = Duration::from_secs(180);

async fn cluster(api: &Api<'_>) -> CliResult<ClusterView> {
    api.read(Sidecar::ReplManager, "/cluster").await
}

/// Whether the fleet will fail over by itself, as the members that answer
/// say: the question an operator asks first when the primary is gone.
fn failover_mode(members: &[ClusterMember]) -> String {
    let views: Vec<(&str, &FailoverView, &NodeStatus)> = members
        .iter()
        .filter_map(|m| {
            Some((
                m.status.node.as_str(),
                m.status.failover.as_ref()?,
                &m.status,
            ))
        })
        .collect();
    if views.is_empty() {
        return "unknown (no member answered)".into();
    }
    if views.iter().all(|(_, f, _)| !f.automatic) {
        return if members.len() < 3 {
            "manual (a fleet of two has no majority without its primary: \
             promote by hand, or set failover.allow_two_node)"
        } else {
            "manual (failover.enabled is off in repl-manager's config: promote by hand)"
        }
        .into();
    }
    let paused: Vec<&str> = views
        .iter()
        .filter(|(_, f, _)| f.paused)
        .map(|(n, _, _)| *n)
        .collect();
    // Fencing is a primary's state (a writable server without a lease).
    let fenced: Vec<&str> = views
        .iter()
        .filter(|(_, f, m)| f.fenced && m.is_primary())
        .map(|(n, _, _)| *n)
        .collect();
    let mut out = String::from("automatic");
    if !paused.is_empty() {
        out.push_str(&format!(" (paused on {})", paused.join(", ")));
    }
    if !fenced.is_empty() {
        out.push_str(&format!(" (fenced: {})", fenced.join(", ")));
    }
    out
}

fn or_dash<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

/// `aurora-cli history`: repl-manager's `/history` on this node.
pub async fn history(config: &NodeConfig, as_json: bool) -> CliResult {
    let h: History = read_newer(&Api::new(config), "/history").await?;
    if as_json {
        output::print_json(&h);
        return Ok(());
    }
    if h.kept {
        let mut t = Table::new(&["EPOCH", "PRIMARY", "BEFORE", "HOW", "LOG INDEX"]);
        for e in &h.entries {
            t.row(vec![
                e.epoch.to_string(),
                e.primary.clone(),
                or_dash(e.from.as_deref()),
                e.how.clone(),
                e.index.to_string(),
            ]);
        }
        out!("{}", t.render());
    } else {
        outln!("the leader key is not kept on the fleet's Raft group here: no committed history");
    }
    if !h.timelines.is_empty() {
        outln!();
        let mut t = Table::new(&["TIMELINE", "ENDED AT", "REASON"]);
        for s in &h.timelines {
            t.row(vec![
                s.timeline.to_string(),
                s.switch_lsn.to_string(),
                s.reason.clone(),
            ]);
        }
        out!("{}", t.render());
    }
    Ok(())
}

pub async fn sync_db(config: &NodeConfig, as_json: bool) -> CliResult {
    let api = Api::new(config);
    let c = cluster(&api).await?;
    if as_json {
        output::print_json(&c);
        return Ok(());
    }
    let ms = &c.members;
    outln!("primary: {}   epoch: {}", c.primary, c.epoch);
    let primary = ms.iter().map(|m| &m.status).find(|m| m.is_primary());
    if let Some(sync) = primary.and_then(|p| p.sync.as_ref()) {
        outln!(
            "synchronous: {} (standby {}{})",
            output::paint(sync.mode.as_str()),
            sync.standby.as_deref().unwrap_or("none"),
            if sync.strict { ", strict" } else { "" }
        );
    }
    outln!("failover: {}", failover_mode(ms));
    outln!();
    let mut t = Table::new(&[
        "NODE",
        "ROLE",
        "STATE",
        "TIMELINE",
        "EPOCH",
        "STREAM",
        "LAG",
        "REPLAY LAG",
    ]);
    for m in ms.iter().map(|m| &m.status) {
        let conn = primary.and_then(|p| p.replicas.iter().find(|r| r.name == m.node));
        let stream = match (&m.state, conn) {
            (NodeState::Primary, _) => "-".to_string(),
            (_, Some(r)) => format!("{} ({})", r.state, r.sync_state),
            (NodeState::Unreachable, None) => "unreachable".to_string(),
            _ => "not streaming".to_string(),
        };
        let lag = conn
            .and_then(|r| r.lag_bytes)
            .map(|b| b as f64)
            .or(m.lag_bytes.map(|b| b as f64))
            .map(output::bytes)
            .unwrap_or_else(|| "-".into());
        let replay = conn
            .and_then(|r| r.replay_lag_secs)
            .or(m.lag_seconds)
            .map(output::duration_secs)
            .unwrap_or_else(|| "-".into());
        let answered = m.state != NodeState::Unreachable;
        t.row(vec![
            m.node.clone(),
            m.role.to_string(),
            m.state.to_string(),
            or_dash(m.postgres.as_ref().map(|p| p.timeline)),
            or_dash(answered.then_some(m.epoch)),
            stream,
            lag,
            replay,
        ]);
    }
    out!("{}", t.render());
    if let Some(slots) = primary.map(|p| &p.slots).filter(|s| !s.is_empty()) {
        outln!();
        let mut t = Table::new(&["SLOT", "ACTIVE", "WAL STATUS", "RETAINED"]);
        for slot in slots {
            t.row(vec![
                slot.name.clone(),
                if slot.active { "yes" } else { "no" }.into(),
                slot.wal_status.clone().unwrap_or_default(),
                slot.retained_bytes
                    .map(|b| output::bytes(b as f64))
                    .unwrap_or_else(|| "-".into()),
            ]);
        }
        out!("{}", t.render());
    }
    for m in ms
        .iter()
        .filter(|m| m.status.state == NodeState::Unreachable)
    {
        eprintln!(
            "aurora-cli: {} is unreachable: {}",
            m.status.node,
            m.error.as_deref().unwrap_or("no answer")
        );
    }
    Ok(())
}

/// Asks before an operation that moves the primary. `--yes` skips it; a
/// non-interactive stdin without `--yes` is a usage error, so a script never
/// hangs on a prompt it cannot see.
pub(crate) fn confirm(question: &str, yes: bool) -> CliResult {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(CliError::usage(format!(
            "{question}: stdin is not a terminal; pass --yes to confirm"
        )));
    }
    out!("{question} [y/N] ");
    crate::output::flush_stdout();
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    if matches!(line.trim(), "y" | "Y" | "yes" | "YES") {
        Ok(())
    } else {
        Err(CliError::failed("cancelled; nothing was done"))
    }
}

/// Prints an operation's report (or turns a refusal into its reason).
fn report(op: &str, answer: crate::api::Answer, elapsed: Duration, as_json: bool) -> CliResult {
    if !answer.status.is_success() {
        let why = reason(&answer.body);
        return Err(CliError::failed(match answer.status {
            StatusCode::CONFLICT => format!("{op} refused: {why}"),
            StatusCode::BAD_REQUEST => format!("{op} rejected: {why}"),
            st => format!("{op} failed ({st}): {why}"),
        }));
    }
    let b: OpReport = answer.read(op)?;
    if as_json {
        output::print_json(&OpOutput {
            report: &b,
            cli_seconds: elapsed.as_secs_f64(),
        });
        return Ok(());
    }
    outln!(
        "{}: {} -> {} at epoch {}",
        b.operation,
        b.from,
        b.to,
        b.epoch
    );
    for step in &b.steps {
        outln!("  - {step}");
    }
    for (name, ok) in &b.followers {
        outln!(
            "  {name}: {}",
            if *ok {
                output::paint("streaming")
            } else {
                "not streaming yet".into()
            }
        );
    }
    if let Some(w) = b.seconds_to_writable {
        outln!("writable after {}", output::duration_secs(w));
    }
    outln!("done in {}", output::duration_secs(elapsed.as_secs_f64()));
    Ok(())
}

/// `--json` of an operation: repl-manager's report and the time the CLI
/// waited for it.
#[derive(serde::Serialize)]
struct OpOutput<'r> {
    #[serde(flatten)]
    report: &'r OpReport,
    cli_seconds: f64,
}

/// The phase an operation is in, as the repl-manager at `base` reports it
/// (`activity` in its status), for the progress line.
async fn phase(api: &Api<'_>, base: &str, started: Instant) -> Option<String> {
    let st: NodeStatus = api
        .read_at(Sidecar::ReplManager, base, "/status")
        .await
        .ok()?;
    let what = st.activity?;
    Some(format!(
        "{what} ({})",
        output::duration_secs(started.elapsed().as_secs_f64())
    ))
}

/// The member list, checking that `node` is in it.
fn find_member<'c>(ms: &'c [ClusterMember], node: &str) -> CliResult<&'c ClusterMember> {
    ms.iter().find(|m| m.status.node == node).ok_or_else(|| {
        let names: Vec<&str> = ms.iter().map(|m| m.status.node.as_str()).collect();
        CliError::usage(format!(
            "node `{node}` is not in the fleet (members: {})",
            names.join(", ")
        ))
    })
}

/// The synchronous standby of the fleet's primary `primary`, when every
/// part of the fleet agrees on it: the primary's repl-manager commits in
/// `sync` mode with it as the standby, PostgreSQL lists it streaming with
/// `sync_state` sync (or quorum), and, with automatic failover, the standby
/// itself has heard the primary say so (the report it would promote on).
/// `None` right after a switchover, until the new standby has caught up.
fn synchronous_standby(members: &[ClusterMember], primary: &str) -> Option<String> {
    let p = members
        .iter()
        .map(|m| &m.status)
        .find(|m| m.node == primary && m.is_primary())?;
    let standby = p.synchronous_standby()?;
    let streams = p
        .replicas
        .iter()
        .any(|r| r.name == standby && r.is_streaming() && r.is_synchronous());
    let told = members
        .iter()
        .find(|m| m.status.node == standby)
        .and_then(|m| m.status.failover.as_ref())
        .filter(|f| f.automatic)
        .map(|f| {
            f.report.as_ref().is_some_and(|r| {
                r.sync_mode == SyncMode::Sync && r.sync_standby.as_deref() == Some(standby)
            })
        })
        .unwrap_or(true);
    (streams && told).then(|| standby.to_string())
}

/// After a switchover: waits until the new primary has a synchronous
/// standby again, because until then a crash of the new primary cannot be
/// failed over without losing writes, and repl-manager rightly refuses to.
/// A timeout is a warning, not a failure: the switchover itself is done.
async fn wait_synchronous(api: &Api<'_>, primary: &str, within: Duration) {
    let started = Instant::now();
    outln!("waiting for {primary} to have a synchronous standby (until then it commits asynchronously and a failover would refuse to promote) ...");
    loop {
        if let Ok(c) = cluster(api).await {
            if let Some(standby) = synchronous_standby(&c.members, primary) {
                outln!(
                    "synchronous: {standby} confirms {primary}'s commits (after {})",
                    output::duration_secs(started.elapsed().as_secs_f64())
                );
                return;
            }
        }
        if started.elapsed() >= within {
            eprintln!(
                "aurora-cli: warning: {primary} has no synchronous standby after {}; \
                 automatic failover is not safe until one streams (see `aurora-cli sync-db`)",
                output::duration_secs(within.as_secs_f64())
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

pub async fn switchover(
    config: &NodeConfig,
    to: &str,
    yes: bool,
    force: bool,
    wait: Option<Duration>,
    as_json: bool,
) -> CliResult {
    let api = Api::new(config);
    let c = cluster(&api).await?;
    let ms = &c.members;
    find_member(ms, to)?;
    let primary = ms.iter().find(|m| m.status.is_primary()).ok_or_else(|| {
        CliError::failed(
            "no member reports itself primary; nothing to switch over (see `aurora-cli sync-db`)",
        )
    })?;
    let from = primary.status.node.as_str();
    if from == to {
        return Err(CliError::usage(format!("{to} is already the primary")));
    }
    let base = primary.api_url.as_str();
    if base.is_empty() {
        return Err(CliError::failed(format!(
            "repl-manager does not list {from}'s admin URL (an older version?); run the switchover on {from}"
        )));
    }
    confirm(
        &format!("Switch the primary over from {from} to {to}?"),
        yes,
    )?;
    let started = Instant::now();
    let mut progress = output::Progress::steps(as_json);
    let request = SwitchoverRequest {
        to: Some(to.to_string()),
        force,
    };
    let answer = output::with_progress(
        &mut progress,
        Duration::from_millis(200),
        api.post_to(
            Sidecar::ReplManager,
            base,
            "/switchover",
            &request,
            OP_TIMEOUT,
        ),
        || phase(&api, base, started),
    )
    .await?;
    drop(progress);
    report("switchover", answer, started.elapsed(), as_json)?;
    // Only a fleet with someone to confirm commits can get there.
    if let Some(within) = wait.filter(|_| !as_json && ms.len() > 1) {
        wait_synchronous(&api, to, within).await;
    }
    Ok(())
}

pub async fn promote(config: &NodeConfig, yes: bool, force: bool, as_json: bool) -> CliResult {
    let api = Api::new(config);
    let me = &config.node.name;
    confirm(&format!("Promote {me} to primary?"), yes)?;
    let started = Instant::now();
    let base = api.url(Sidecar::ReplManager)?.to_string();
    let request = PromoteRequest {
        force,
        ..Default::default()
    };
    let mut progress = output::Progress::steps(as_json);
    let answer = output::with_progress(
        &mut progress,
        Duration::from_millis(200),
        api.post(Sidecar::ReplManager, "/promote", &request, OP_TIMEOUT),
        || phase(&api, &base, started),
    )
    .await?;
    drop(progress);
    report("promote", answer, started.elapsed(), as_json)
}

/// `reinit`: this standby moves its data directory aside and clones a
/// fresh one from the primary (`POST /reinitialize`).
pub async fn reinit(config: &NodeConfig, yes: bool, force: bool, as_json: bool) -> CliResult {
    let api = Api::new(config);
    let me = &config.node.name;
    confirm(
        &format!("Re-clone {me} from the primary (its data directory is moved aside)?"),
        yes,
    )?;
    let answer = api
        .post(
            Sidecar::ReplManager,
            "/reinitialize",
            &ReinitializeRequest { force },
            OP_TIMEOUT,
        )
        .await?;
    if !answer.status.is_success() {
        return Err(CliError::failed(format!(
            "reinit refused ({}): {}",
            answer.status,
            reason(&answer.body)
        )));
    }
    let r: MaintenanceReport = answer.read("/reinitialize")?;
    if as_json {
        output::print_json(&r);
    } else {
        for step in &r.steps {
            outln!("{step}");
        }
        outln!(
            "{} re-cloned in {}",
            r.node,
            output::duration_secs(r.seconds)
        );
    }
    Ok(())
}

/// `pause` / `resume`: maintenance mode on every member (or this one with
/// `local`): no failover, no fencing, no repair, no restarts. Exit 1 when a
/// member could not be told, naming it: a pause only some members know of
/// is not a pause.
pub async fn pause(config: &NodeConfig, paused: bool, local: bool, as_json: bool) -> CliResult {
    let api = Api::new(config);
    let word = if paused { "paused" } else { "resumed" };
    let answer = api
        .post(
            Sidecar::ReplManager,
            "/pause",
            &PauseRequest { paused, local },
            OP_TIMEOUT,
        )
        .await?;
    if !answer.status.is_success() {
        return Err(CliError::failed(format!(
            "{} refused ({}): {}",
            if paused { "pause" } else { "resume" },
            answer.status,
            reason(&answer.body)
        )));
    }
    let r: PauseReport = answer.read("/pause")?;
    // A committed pause reaches a member the request missed through the
    // fleet's log; a resume does not clear a member's own pause file.
    let reaches_all = r.committed && paused;
    let missed: Vec<String> = r
        .members
        .iter()
        .filter(|m| m.paused != Some(paused) && !reaches_all)
        .map(|m| match &m.error {
            Some(e) => format!("{} ({e})", m.node),
            None => m.node.clone(),
        })
        .collect();
    if as_json {
        output::print_json(&r);
    } else {
        for m in &r.members {
            match (m.paused, &m.error) {
                (Some(p), _) => outln!("{}: {}", m.node, if p { "paused" } else { "running" }),
                (None, Some(e)) if reaches_all => {
                    outln!("{}: not told ({e}); paused through the fleet's log", m.node)
                }
                (None, Some(e)) => outln!("{}: not told: {e}", m.node),
                (None, None) => outln!("{}: no answer", m.node),
            }
        }
    }
    if missed.is_empty() {
        if !as_json && !local && paused {
            outln!("automatic failover is off until `aurora-cli resume`");
        }
        Ok(())
    } else {
        Err(CliError::failed(format!(
            "not {word} on {}: run it again once they answer",
            missed.join(", ")
        )))
    }
}

pub async fn demote(config: &NodeConfig, to: Option<&str>, yes: bool, as_json: bool) -> CliResult {
    let api = Api::new(config);
    let me = config.node.name.as_str();
    let c = cluster(&api).await?;
    let ms = &c.members;
    let to = match to {
        Some(t) => {
            find_member(ms, t)?;
            t.to_string()
        }
        // The one other primary, when there is exactly one: the case demote
        // exists for (two writable servers after a partition).
        None => {
            let others: Vec<&str> = ms
                .iter()
                .map(|m| &m.status)
                .filter(|m| m.is_primary() && m.node != me)
                .map(|m| m.node.as_str())
                .collect();
            match others.as_slice() {
                [one] => one.to_string(),
                [] => {
                    return Err(CliError::usage(format!(
                    "no other primary to follow; demoting {me} would leave the fleet without one \
                         (use `aurora-cli switchover --to NODE` to hand over)"
                )))
                }
                many => {
                    return Err(CliError::usage(format!(
                        "several primaries ({}): say which to follow with --to",
                        many.join(", ")
                    )))
                }
            }
        }
    };
    confirm(&format!("Demote {me} to a standby of {to}?"), yes)?;
    let started = Instant::now();
    let answer = api
        .post(
            Sidecar::ReplManager,
            "/demote",
            &DemoteRequest { to: to.clone() },
            OP_TIMEOUT,
        )
        .await?;
    report("demote", answer, started.elapsed(), as_json)
}

fn print_config(c: &FleetConfig) {
    let source = match c.source.as_str() {
        "fleet" => format!("the fleet's Raft group, revision {}", c.revision),
        _ => "this node's config file (the fleet keeps none)".to_string(),
    };
    outln!("source: {source}");
    let mut t = Table::new(&["KEY", "VALUE", ""]);
    let differs = |k: &str| {
        if c.file_differs.iter().any(|d| d == k) {
            "(this node's file differs)".to_string()
        } else {
            String::new()
        }
    };
    for (k, v) in c.values() {
        t.row(vec![k.to_string(), v, differs(k)]);
    }
    out!("{}", t.render());
}

/// `GET path` from repl-manager, for a path newer repl-managers serve: a
/// 404 names the version gap.
async fn read_newer<T: serde::de::DeserializeOwned>(api: &Api<'_>, path: &str) -> CliResult<T> {
    let answer = api.get_any(Sidecar::ReplManager, path).await?;
    if answer.status == StatusCode::NOT_FOUND {
        return Err(CliError::failed(format!(
            "repl-manager at {} has no {path}: it is older than this aurora-cli (upgrade it)",
            answer.url
        )));
    }
    answer.success()?.read(path)
}

/// `aurora-cli config show`.
pub async fn show_config(config: &NodeConfig, as_json: bool) -> CliResult {
    let c: FleetConfig = read_newer(&Api::new(config), "/config").await?;
    if as_json {
        output::print_json(&c);
    } else {
        print_config(&c);
    }
    Ok(())
}

/// `aurora-cli config set KEY=VALUE...`: against the revision read first,
/// so a change made meanwhile by someone else is not overwritten.
pub async fn set_config(config: &NodeConfig, assignments: &[String], as_json: bool) -> CliResult {
    let mut patch = ConfigPatch::default();
    for a in assignments {
        patch.set(a).map_err(CliError::usage)?;
    }
    let api = Api::new(config);
    let now: FleetConfig = read_newer(&api, "/config").await?;
    apply_config(&api, &now, patch, as_json).await
}

/// `aurora-cli config edit` (Patroni's `edit-config`): the config in
/// `$VISUAL` or `$EDITOR` (else `vi`), the changed keys shown, confirmed
/// and patched against the revision read.
pub async fn edit_config(config: &NodeConfig, yes: bool, as_json: bool) -> CliResult {
    let api = Api::new(config);
    let now: FleetConfig = read_newer(&api, "/config").await?;
    let text = edit_in_editor(&now.editable())?;
    let patch = ConfigPatch::from_edit(&now, &text).map_err(CliError::usage)?;
    if patch.is_empty() {
        outln!("no change; nothing was done");
        return Ok(());
    }
    let before = now.values();
    let edited: Vec<(String, String)> = text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    for (k, v) in &before {
        if let Some((_, new)) = edited.iter().find(|(ek, ev)| ek == k && ev != v) {
            outln!("{k}: {v} -> {new}");
        }
    }
    confirm("Apply these changes to every member?", yes)?;
    apply_config(&api, &now, patch, as_json).await
}

/// Writes `text` to a private temporary file, opens it in the operator's
/// editor, and reads it back (the file is removed either way).
fn edit_in_editor(text: &str) -> CliResult<String> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let path =
        std::env::temp_dir().join(format!("aurora-config-{}-{stamp}.conf", std::process::id()));
    let fail = |e: std::io::Error| CliError::failed(format!("{}: {e}", path.display()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(fail)?;
    f.write_all(text.as_bytes()).map_err(fail)?;
    drop(f);
    let editor = std::env::var("VISUAL")
        .or_else(|_| std::env::var("EDITOR"))
        .unwrap_or_else(|_| "vi".into());
    // Through the shell, so an editor with arguments (`code --wait`) works.
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("sh")
        .arg(&path)
        .status();
    let read = std::fs::read_to_string(&path);
    let _ = std::fs::remove_file(&path);
    match status {
        Ok(s) if s.success() => read.map_err(fail),
        Ok(s) => Err(CliError::failed(format!(
            "the editor ({editor}) exited with {s}; nothing changed"
        ))),
        Err(e) => Err(CliError::failed(format!(
            "cannot run the editor ({editor}): {e}; set $EDITOR"
        ))),
    }
}

async fn apply_config(
    api: &Api<'_>,
    now: &FleetConfig,
    mut patch: ConfigPatch,
    as_json: bool,
) -> CliResult {
    patch.revision = Some(now.revision);
    let answer = api
        .patch(Sidecar::ReplManager, "/config", &patch, OP_TIMEOUT)
        .await?;
    if !answer.status.is_success() {
        return Err(CliError::failed(format!(
            "the config change was refused ({}): {}",
            answer.status,
            reason(&answer.body)
        )));
    }
    let c: FleetConfig = answer.read("/config")?;
    if as_json {
        output::print_json(&c);
    } else {
        print_config(&c);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{failover_mode, synchronous_standby};
    use aurora_api::repl::ClusterMember;
    use serde_json::{json, Value};

    fn members(v: Value) -> Vec<ClusterMember> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn synchronous_standby_needs_the_whole_fleet_to_agree() {
        // (repl-manager's mode and standby, PostgreSQL's view of aurora,
        // the report aurora last received)
        let fleet = |mode: &str, standby: Value, pg: (&str, &str), told: Value| {
            members(json!([
                {"node": "star", "state": "primary",
                 "sync": {"mode": mode, "standby": standby},
                 "replicas": [
                    {"name": "vengeance", "state": "streaming", "sync_state": "async"},
                    {"name": "aurora", "state": pg.0, "sync_state": pg.1},
                ]},
                {"node": "aurora", "state": "replica",
                 "failover": {"automatic": true, "report": told}},
            ]))
        };
        let told = || json!({"sync_mode": "sync", "sync_standby": "aurora"});
        let agreed = fleet("sync", json!("aurora"), ("streaming", "sync"), told());
        assert_eq!(
            synchronous_standby(&agreed, "star").as_deref(),
            Some("aurora")
        );
        let quorum = fleet("sync", json!("aurora"), ("streaming", "quorum"), told());
        assert_eq!(
            synchronous_standby(&quorum, "star").as_deref(),
            Some("aurora")
        );
        // Right after a switchover: async, still catching up, not yet the
        // standby, or not yet told (it would refuse to promote).
        for not_yet in [
            fleet("async", Value::Null, ("streaming", "async"), told()),
            fleet("sync", json!("aurora"), ("catchup", "sync"), told()),
            fleet("sync", json!("aurora"), ("streaming", "potential"), told()),
            fleet("sync", Value::Null, ("streaming", "sync"), told()),
            fleet("sync", json!("aurora"), ("streaming", "sync"), Value::Null),
            fleet(
                "sync",
                json!("aurora"),
                ("streaming", "sync"),
                json!({"sync_mode": "sync", "sync_standby": null}),
            ),
        ] {
            assert_eq!(synchronous_standby(&not_yet, "star"), None, "{not_yet:?}");
        }
        // Without automatic failover nobody needs to be told.
        let mut manual = fleet("sync", json!("aurora"), ("streaming", "sync"), Value::Null);
        manual[1].status.failover.as_mut().unwrap().automatic = false;
        assert_eq!(
            synchronous_standby(&manual, "star").as_deref(),
            Some("aurora")
        );
        // Another node asked for, or nobody answering.
        assert_eq!(synchronous_standby(&agreed, "aurora"), None);
        assert_eq!(synchronous_standby(&[], "star"), None);
    }

    fn member(
        node: &str,
        state: &str,
        automatic: bool,
        paused: bool,
        fenced: bool,
    ) -> ClusterMember {
        serde_json::from_value(json!({"node": node, "state": state,
               "failover": {"automatic": automatic, "paused": paused, "fenced": fenced}}))
        .unwrap()
    }

    #[test]
    fn failover_mode_reads_the_members() {
        let three = |a: bool| {
            vec![
                member("aurora", "primary", a, false, false),
                member("star", "replica", a, false, true),
                member("vengeance", "replica", a, false, true),
            ]
        };
        // A replica's `fenced` (no lease of its own) is not news.
        assert_eq!(failover_mode(&three(true)), "automatic");
        assert!(failover_mode(&three(false)).contains("failover.enabled is off"));
        let two = vec![
            member("aurora", "primary", false, false, false),
            member("star", "replica", false, false, false),
        ];
        assert!(failover_mode(&two).contains("a fleet of two"));
        let mut m = three(true);
        m[1] = member("star", "replica", true, true, false);
        m[0] = member("aurora", "primary", true, false, true);
        assert_eq!(
            failover_mode(&m),
            "automatic (paused on star) (fenced: aurora)"
        );
        // Unreachable members carry no failover view.
        let gone = members(json!([{"node": "aurora", "state": "unreachable"}]));
        assert_eq!(failover_mode(&gone), "unknown (no member answered)");
    }
}
