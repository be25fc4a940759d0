//! The node's checks. Each runs with its own timeout, all run concurrently,
//! and each yields `passing | warning | critical` with a message a person
//! can act on.

use std::path::Path;
use std::time::{Duration, Instant};

use cluster_db::HealthStatus;
use serde::Serialize;
use sidecar_kit::http_client::HttpClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::{ChecksConfig, Config};
use aurora_api::monitor::{HealthBody, SidecarHealth};
use aurora_api::repl::{NodeState, NodeStatus, SyncMode, SyncView};

use crate::db::Databases;

#[derive(Clone, Debug, Serialize)]
pub struct CheckResult {
    pub name: String,
    pub status: HealthStatus,
    pub message: String,
    pub duration_ms: u64,
}

impl CheckResult {
    /// As `GET /status` serves it.
    pub fn wire(&self) -> aurora_api::monitor::CheckResult {
        aurora_api::monitor::CheckResult {
            name: self.name.clone(),
            status: self.status.into(),
            message: self.message.clone(),
            duration_ms: self.duration_ms,
        }
    }
}

type Outcome = (HealthStatus, String);

fn passing(msg: impl Into<String>) -> Outcome {
    (HealthStatus::Passing, msg.into())
}
fn warning(msg: impl Into<String>) -> Outcome {
    (HealthStatus::Warning, msg.into())
}
fn critical(msg: impl Into<String>) -> Outcome {
    (HealthStatus::Critical, msg.into())
}

/// Runs `check` under the timeout and times it.
async fn timed<F>(name: String, timeout: Duration, check: F) -> CheckResult
where
    F: std::future::Future<Output = Outcome>,
{
    let started = Instant::now();
    let (status, message) = match tokio::time::timeout(timeout, check).await {
        Ok(o) => o,
        Err(_) => critical(format!("no result within {} s", timeout.as_secs())),
    };
    CheckResult {
        name,
        status,
        message,
        duration_ms: started.elapsed().as_millis() as u64,
    }
}

/// One round of every configured check.
pub async fn run_all(config: &Config, http: &HttpClient, dbs: &Databases) -> Vec<CheckResult> {
    let c = &config.checks;
    let t = Duration::from_secs(c.timeout_secs);
    let mut futures: Vec<
        std::pin::Pin<Box<dyn std::future::Future<Output = CheckResult> + Send + '_>>,
    > = vec![
        Box::pin(timed("postgres".into(), t, postgres(config, dbs))),
        Box::pin(timed("memory".into(), t, async { memory(c) })),
        Box::pin(timed("load".into(), t, async { load(c) })),
    ];
    for disk in &c.disks {
        futures.push(Box::pin(timed(
            format!("disk:{}", disk.display()),
            t,
            async move { disk_free(c, disk) },
        )));
    }
    if let Some(addr) = &c.redis {
        futures.push(Box::pin(timed("redis".into(), t, redis(addr, c))));
    }
    for h in &c.http {
        futures.push(Box::pin(timed(
            format!("http:{}", h.name),
            t,
            http_check(http, &h.url),
        )));
    }
    if let Some(url) = &c.repl_manager {
        futures.push(Box::pin(timed(
            "replication".into(),
            t,
            replication(http, url, c),
        )));
    }
    for (name, url) in &c.sidecars {
        futures.push(Box::pin(timed(
            format!("sidecar:{name}"),
            t,
            sidecar_health(http, url),
        )));
    }
    for tc in &c.tcp {
        futures.push(Box::pin(timed(
            format!("tcp:{}", tc.name),
            t,
            tcp_check(&tc.address),
        )));
    }
    futures::future::join_all(futures).await
}

/// The worst status wins.
pub fn overall(results: &[CheckResult]) -> HealthStatus {
    results
        .iter()
        .map(|r| r.status)
        .max()
        .unwrap_or(HealthStatus::Passing)
}

/// The local PostgreSQL answers; its role; the clock offset against the
/// primary (read through the write target, which is the primary). Both on
/// the kept connections; the offset within half the check's time, so a
/// primary that does not answer costs the offset, not the check.
async fn postgres(config: &Config, dbs: &Databases) -> Outcome {
    let role = match dbs
        .local
        .with(|c| async move { cluster_db::connect::is_primary(&c).await })
        .await
    {
        Ok(true) => "primary",
        Ok(false) => "standby",
        Err(e) => return critical(e.to_string()),
    };
    let mut out = passing(format!("accepting connections ({role})"));
    let half = Duration::from_millis(config.checks.timeout_secs.max(1) * 500);
    let offset = tokio::time::timeout(
        half,
        dbs.primary.with(|c| async move {
            let sent = std::time::SystemTime::now();
            let row = c
                .query_one("SELECT extract(epoch FROM clock_timestamp())::float8", &[])
                .await?;
            let rtt = sent.elapsed().unwrap_or_default();
            let theirs: f64 = row.get(0);
            let ours = sent
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0)
                + rtt.as_secs_f64() / 2.0;
            Ok(((theirs - ours) * 1000.0).abs())
        }),
    )
    .await;
    match offset {
        Ok(Ok(offset_ms)) if offset_ms > config.checks.clock_warning_ms as f64 => {
            out = warning(format!(
                "{role}; clock differs from the primary by {offset_ms:.0} ms (limit {} ms): check NTP",
                config.checks.clock_warning_ms
            ));
        }
        Ok(Ok(offset_ms)) => out.1 = format!("{}; clock offset {offset_ms:.0} ms", out.1),
        _ => {
            out.1 = format!(
                "{}; clock offset unknown (the primary did not answer)",
                out.1
            )
        }
    }
    out
}

fn memory(c: &ChecksConfig) -> Outcome {
    let text = match std::fs::read_to_string("/proc/meminfo") {
        Ok(t) => t,
        Err(e) => return warning(format!("cannot read /proc/meminfo: {e}")),
    };
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    let (Some(total), Some(avail)) = (field("MemTotal:"), field("MemAvailable:")) else {
        return warning("MemTotal/MemAvailable missing from /proc/meminfo");
    };
    let used = 100.0 * (total.saturating_sub(avail)) as f64 / total.max(1) as f64;
    let msg = format!("{used:.0}% used, {} MiB available", avail / 1024);
    if used >= f64::from(c.memory_critical_percent) {
        critical(msg)
    } else if used >= f64::from(c.memory_warning_percent) {
        warning(msg)
    } else {
        passing(msg)
    }
}

fn load(c: &ChecksConfig) -> Outcome {
    let text = match std::fs::read_to_string("/proc/loadavg") {
        Ok(t) => t,
        Err(e) => return warning(format!("cannot read /proc/loadavg: {e}")),
    };
    let one: f64 = text
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1) as f64;
    let msg = format!("load {one:.2} on {cores} cores");
    if one / cores > c.load_warning_per_core {
        warning(msg)
    } else {
        passing(msg)
    }
}

fn disk_free(c: &ChecksConfig, path: &Path) -> Outcome {
    match nix::sys::statvfs::statvfs(path) {
        Ok(s) => {
            let frag = s.fragment_size();
            disk_outcome(
                c,
                s.blocks().saturating_sub(s.blocks_free()) * frag,
                s.blocks_available() * frag,
            )
        }
        Err(e) => critical(format!("{}: {e}", path.display())),
    }
}

/// As df computes it: used / (used + available to us), so blocks reserved
/// for root or held back by the host do not count as used.
fn disk_outcome(c: &ChecksConfig, used_bytes: u64, avail_bytes: u64) -> Outcome {
    let (used_b, avail) = (used_bytes as f64, avail_bytes as f64);
    let used = if used_b + avail > 0.0 {
        100.0 * used_b / (used_b + avail)
    } else {
        0.0
    };
    let msg = format!(
        "{used:.0}% used, {:.1} GiB free",
        avail / (1u64 << 30) as f64
    );
    if used >= f64::from(c.disk_critical_percent) {
        critical(msg)
    } else if used >= f64::from(c.disk_warning_percent) {
        warning(msg)
    } else {
        passing(msg)
    }
}

/// `PING` over RESP, after `AUTH` when a password is configured.
async fn redis(addr: &str, c: &ChecksConfig) -> Outcome {
    let mut stream = match tokio::net::TcpStream::connect(addr).await {
        Ok(s) => s,
        Err(e) => return critical(format!("{addr}: {e}")),
    };
    let mut cmd = Vec::new();
    if let Some(pw) = &c.redis_password {
        let p = pw.expose();
        cmd.extend_from_slice(format!("*2\r\n$4\r\nAUTH\r\n${}\r\n{p}\r\n", p.len()).as_bytes());
    }
    cmd.extend_from_slice(b"*1\r\n$4\r\nPING\r\n");
    if let Err(e) = stream.write_all(&cmd).await {
        return critical(format!("{addr}: {e}"));
    }
    let mut buf = vec![0u8; 512];
    let mut got = String::new();
    // Read until the PONG (or an error) arrives.
    while !got.contains("PONG") && !got.contains("-") {
        match stream.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => got.push_str(&String::from_utf8_lossy(&buf[..n])),
            Err(e) => return critical(format!("{addr}: {e}")),
        }
    }
    if got.contains("PONG") && !got.starts_with('-') {
        passing("PONG")
    } else {
        let line = got
            .lines()
            .find(|l| l.starts_with('-'))
            .unwrap_or("no PONG");
        critical(format!("{addr}: {}", line.trim_start_matches('-')))
    }
}

async fn http_check(http: &HttpClient, url: &str) -> Outcome {
    match http.get(url).await {
        Ok(r) if r.status.is_success() => passing(format!("{}", r.status)),
        Ok(r) => critical(format!("{url} answered {}", r.status)),
        Err(e) => critical(e.to_string()),
    }
}

async fn tcp_check(address: &str) -> Outcome {
    match tokio::net::TcpStream::connect(address).await {
        Ok(_) => passing("accepting connections"),
        Err(e) => critical(format!("{address}: {e}")),
    }
}

/// Replication as this node's repl-manager reports it: a primary whose
/// synchronous standby is gone (commits unprotected) is `warning`; a
/// standby is judged by its lag against the primary's current position.
async fn replication(http: &HttpClient, base: &str, c: &ChecksConfig) -> Outcome {
    let url = format!("{}/status", base.trim_end_matches('/'));
    match http.get_json::<NodeStatus>(&url).await {
        Ok(st) => replication_outcome(&st, c),
        Err(e) => critical(format!("repl-manager: {e}")),
    }
}

fn replication_outcome(st: &NodeStatus, c: &ChecksConfig) -> Outcome {
    match st.state {
        NodeState::Primary => {
            let streaming = st.replicas.iter().filter(|r| r.is_streaming()).count();
            if st.fenced() {
                return critical(
                    "primary is fenced (no lease from a majority): it accepts no writes",
                );
            }
            match &st.sync {
                None => passing(format!("primary; {streaming} standby(s) streaming")),
                Some(SyncView {
                    mode: SyncMode::Sync,
                    standby: Some(s),
                    ..
                }) => passing(format!(
                    "primary; synchronous standby {s}; {streaming} standby(s) streaming"
                )),
                Some(sync) => warning(format!(
                    "primary without a synchronous standby (mode {}): commits are not copied to the backup; {streaming} standby(s) streaming",
                    sync.mode
                )),
            }
        }
        NodeState::Replica => {
            let primary = if st.primary.is_empty() {
                "?"
            } else {
                st.primary.as_str()
            };
            match st.lag_bytes {
                Some(b) if b >= c.lag_critical_bytes => critical(format!(
                    "replica of {primary}, {b} bytes behind (critical above {})",
                    c.lag_critical_bytes
                )),
                Some(b) if b >= c.lag_warning_bytes => warning(format!(
                    "replica of {primary}, {b} bytes behind (warning above {})",
                    c.lag_warning_bytes
                )),
                Some(b) => passing(format!(
                    "replica of {primary}, {b} bytes behind{}",
                    st.lag_seconds
                        .map(|s| format!(", {s:.1} s"))
                        .unwrap_or_default()
                )),
                None => warning(format!(
                    "replica of {primary}, lag unknown: {}",
                    st.lag_error
                        .as_deref()
                        .unwrap_or("no answer from the primary")
                )),
            }
        }
        ref other => critical(format!(
            "PostgreSQL is {other}{}",
            st.last_error
                .as_deref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        )),
    }
}

/// A sidecar's `/health`: 200 `ok` passing, 200 `degraded` warning (with
/// its reasons), anything else critical.
async fn sidecar_health(http: &HttpClient, base: &str) -> Outcome {
    let url = format!("{}/health", base.trim_end_matches('/'));
    let r = match http.get(&url).await {
        Ok(r) => r,
        Err(e) => return critical(e.to_string()),
    };
    // A body this build cannot read still says something by its status.
    let body: HealthBody = match r.json(&url) {
        Ok(b) => b,
        Err(e) if r.status.is_success() => return warning(e.to_string()),
        Err(_) => HealthBody::default(),
    };
    let reasons = body.reasons.join("; ");
    match (r.status.is_success(), &body.status) {
        (true, SidecarHealth::Ok) => passing("healthy"),
        (true, s) => warning(format!("{s}: {reasons}")),
        (false, _) => critical(format!("{url} answered {}: {reasons}", r.status)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replication_is_judged_from_repl_managers_status() {
        let c = Config::default().checks;
        let st = |v: serde_json::Value| -> NodeStatus { serde_json::from_value(v).unwrap() };
        let judge = |v| replication_outcome(&st(v), &c);
        let sync = serde_json::json!({"mode": "sync", "standby": "star"});
        let (s, m) = judge(serde_json::json!({"state": "primary", "sync": sync}));
        assert_eq!(
            (s, m.contains("synchronous standby star")),
            (HealthStatus::Passing, true)
        );
        let fenced =
            serde_json::json!({"state": "primary", "sync": sync, "failover": {"fenced": true}});
        assert_eq!(judge(fenced).0, HealthStatus::Critical);
        let (s, m) = judge(serde_json::json!({"state": "primary", "sync": {"mode": "async"}}));
        assert_eq!((s, m.contains("mode async")), (HealthStatus::Warning, true));
        let behind = c.lag_critical_bytes;
        let (s, m) = judge(
            serde_json::json!({"state": "replica", "primary": "aurora", "lag_bytes": behind}),
        );
        assert_eq!(
            (s, m.contains("replica of aurora")),
            (HealthStatus::Critical, true)
        );
        // A state a newer repl-manager reports is named, not misread.
        let (s, m) = judge(serde_json::json!({"state": "rewinding", "last_error": "x"}));
        assert_eq!(
            (s, m.as_str()),
            (HealthStatus::Critical, "PostgreSQL is rewinding: x")
        );
    }

    #[test]
    fn disk_thresholds_count_only_what_we_can_use() {
        let c = Config::default().checks;
        let gib = 1u64 << 30;
        assert_eq!(
            disk_outcome(&c, 50 * gib, 50 * gib).0,
            HealthStatus::Passing
        );
        assert_eq!(
            disk_outcome(&c, 80 * gib, 20 * gib).0,
            HealthStatus::Warning
        );
        let (status, msg) = disk_outcome(&c, 95 * gib, 5 * gib);
        assert_eq!(status, HealthStatus::Critical);
        assert_eq!(msg, "95% used, 5.0 GiB free");
        // A full disk, and an empty (unsized) one.
        assert_eq!(disk_outcome(&c, gib, 0).0, HealthStatus::Critical);
        assert_eq!(disk_outcome(&c, 0, 0).0, HealthStatus::Passing);
    }
}
