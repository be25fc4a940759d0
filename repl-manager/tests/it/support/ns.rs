//! A fleet of separate hosts: every node in its own network namespace, its
//! PostgreSQL and its repl-manager (the real binary, as a process) inside
//! it, so partitions are real. Clients write and probe from outside (the
//! root namespace, over the bridge) or from inside a node.

#![allow(clippy::unwrap_used, dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use cluster_db::Role;
use sidecar_kit::http_client::HttpClient;

use super::Members;
use testbed::netns::Network;
use testbed::{PgCluster, PgOptions};

pub const TOKEN: &str = "ns-fleet-token-0123456789abcdef";

pub struct NsNode {
    pub name: String,
    pub role: Role,
    pub pg: PgCluster,
    pub ip: std::net::Ipv4Addr,
    /// Its repl-manager config file (a test may rewrite it before a restart).
    pub config: PathBuf,
    log: PathBuf,
    child: Option<tokio::process::Child>,
}

pub struct NsFleet {
    pub net: Network,
    pub nodes: Vec<NsNode>,
    pub http: HttpClient,
    dir: tempfile::TempDir,
    probes: Vec<tokio::process::Child>,
}

pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

impl NsFleet {
    /// Starts `nodes` (lead first), each in its own namespace; `extra` is
    /// appended to every repl-manager config.
    pub async fn start(nodes: &[(&str, Role)], extra: &str) -> NsFleet {
        Self::start_each(nodes, |_| extra.to_string()).await
    }

    /// As `start`, with `extra(name)` appended to each node's config; lines
    /// before its first `[table]` belong to `[postgres]`.
    pub async fn start_each(nodes: &[(&str, Role)], extra: impl Fn(&str) -> String) -> NsFleet {
        Self::start_prepared(nodes, extra, |_, _| {}).await
    }

    /// As `start_each`, with `prepare(name, cluster)` run on each node's
    /// cluster directory before its repl-manager starts (the lead's is
    /// initialised then, the others' empty).
    pub async fn start_prepared(
        nodes: &[(&str, Role)],
        extra: impl Fn(&str) -> String,
        prepare: impl Fn(&str, &PgCluster),
    ) -> NsFleet {
        let _ = tracing_subscriber::fmt().with_test_writer().try_init();
        let net = Network::create(nodes.len()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut members = String::new();
        for (i, (name, role)) in nodes.iter().enumerate() {
            let ip = net.node(i).ip;
            members.push_str(&format!(
                "[[members]]\nname = \"{name}\"\nrole = \"{role}\"\nhost = \"{ip}\"\nport = 5432\napi_url = \"http://{ip}:8008\"\n"
            ));
        }
        let mut out = Vec::new();
        for (i, (name, role)) in nodes.iter().enumerate() {
            let ip = net.node(i).ip;
            let mut opts = PgOptions::named(name);
            opts.listen = std::net::IpAddr::V4(ip);
            opts.port = Some(5432);
            let pg = if *role == Role::Lead {
                let pg = PgCluster::init(opts).await.unwrap();
                // Trust inside the private test network (the replication
                // user still authenticates: repl-manager's block comes first).
                let hba = pg.data_dir().join("pg_hba.conf");
                let mut text = std::fs::read_to_string(&hba).unwrap();
                text.push_str("\nhost all all 10.0.0.0/8 trust\n");
                std::fs::write(&hba, text).unwrap();
                pg
            } else {
                PgCluster::empty(opts).unwrap()
            };
            prepare(name, &pg);
            let config = dir.path().join(format!("{name}.toml"));
            let extra = extra(name);
            std::fs::write(
                &config,
                format!(
                    "[admin]\nlisten = \"{ip}:8008\"\ntoken = \"{TOKEN}\"\n\
                     [log]\nformat = \"json\"\nfilter = \"info,repl_manager=debug\"\n\
                     [node]\nname = \"{name}\"\nstate_file = \"{}\"\n\
                     [postgres]\ndata_dir = \"{}\"\nbin_dir = \"{}\"\nhost = \"{ip}\"\nport = 5432\n\
                     listen_addresses = \"{ip}\"\nreplication_password = \"ns-repl-pw\"\nlog_file = \"{}\"\n\
                     {extra}\n{members}",
                    pg.dir().join("repl-state.json").display(),
                    pg.data_dir().display(),
                    pg.bindir().display(),
                    pg.log_path().display(),
                ),
            )
            .unwrap();
            out.push(NsNode {
                name: name.to_string(),
                role: *role,
                ip,
                log: dir.path().join(format!("{name}.log")),
                pg,
                config,
                child: None,
            });
        }
        let mut fleet = NsFleet {
            net,
            nodes: out,
            http: HttpClient::new(Duration::from_secs(5)),
            dir,
            probes: Vec::new(),
        };
        for i in 0..fleet.nodes.len() {
            fleet.spawn(i);
        }
        fleet
    }

    pub fn index(&self, name: &str) -> usize {
        self.nodes.iter().position(|n| n.name == name).unwrap()
    }

    pub fn node(&self, name: &str) -> &NsNode {
        &self.nodes[self.index(name)]
    }

    fn spawn(&mut self, i: usize) {
        let node = &self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .unwrap();
        // Integration tests get the binary from Cargo; the benchmark (an
        // example) finds it next to itself.
        let bin = option_env!("CARGO_BIN_EXE_repl-manager")
            .map(PathBuf::from)
            .unwrap_or_else(|| testbed::tools::workspace_bin("repl-manager").unwrap());
        let mut cmd = self.net.command(i, bin);
        cmd.arg("--config")
            .arg(&node.config)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true);
        let child = cmd.spawn().unwrap();
        self.nodes[i].child = Some(child);
    }

    /// Runs the postgres container's supervisor (`postgres-supervisor.sh`)
    /// for `name` inside its namespace, as the postgres user, watching
    /// `hold_file` (the node's config must say `supervision = "external"`
    /// with the same file). It ends with the fleet.
    pub fn supervise(&mut self, name: &str, hold_file: &Path) {
        let i = self.index(name);
        let pg = &self.nodes[i].pg;
        let mut cmd = self.net.command(i, "setpriv");
        if let Some(owner) = pg.owner() {
            cmd.arg(format!("--reuid={}", owner.uid.as_raw()))
                .arg(format!("--regid={}", owner.gid.as_raw()))
                .arg("--clear-groups");
        }
        cmd.arg("sh");
        super::supervisor(&mut cmd, pg, hold_file);
        // Its log and the server's (PostgreSQL logs to the supervisor's
        // stderr here), kept with the others when a test fails.
        let log =
            std::fs::File::create(self.dir.path().join(format!("{name}-supervisor.log"))).unwrap();
        cmd.stderr(log);
        self.probes.push(cmd.spawn().unwrap());
    }

    /// Starts a node's repl-manager again (after a kill).
    pub fn restart(&mut self, name: &str) {
        let i = self.index(name);
        self.spawn(i);
    }

    /// Whether the node's repl-manager process has exited (by itself).
    pub fn exited(&mut self, name: &str) -> bool {
        let i = self.index(name);
        match self.nodes[i].child.as_mut() {
            Some(c) => c.try_wait().ok().flatten().is_some(),
            None => true,
        }
    }

    /// SIGKILL to the node's repl-manager and its PostgreSQL: the host died.
    pub async fn kill(&mut self, name: &str) {
        let i = self.index(name);
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill().await;
        }
        let _ = self.nodes[i].pg.kill();
    }

    /// SIGKILL to the node's repl-manager alone: the sidecar crashed, its
    /// PostgreSQL runs on.
    pub async fn kill_manager(&mut self, name: &str) {
        let i = self.index(name);
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill().await;
        }
    }

    /// SIGSTOP (`stop`) or SIGCONT the node's repl-manager alone: the
    /// sidecar paused (a GC-less stall, a debugger, a cgroup freeze of its
    /// container), its PostgreSQL running on.
    pub fn pause_manager(&self, name: &str, stop: bool) {
        let pid = self.nodes[self.index(name)]
            .child
            .as_ref()
            .and_then(|c| c.id())
            .expect("the node's repl-manager runs");
        signal(&[pid as i32], stop);
    }

    /// SIGSTOP (`stop`) or SIGCONT every process of the node's PostgreSQL:
    /// the postmaster and each of its children (backends, walsenders, the
    /// checkpointer…), not the postmaster alone, whose backends would
    /// keep committing. Stopped postmaster first (no new backend is forked
    /// meanwhile), continued postmaster first (a signal it was sent while
    /// stopped, such as a fence's immediate shutdown, is acted on before
    /// a backend runs again).
    pub fn pause_postgres(&self, name: &str, stop: bool) {
        let pg = &self.nodes[self.index(name)].pg;
        let postmaster = pg.postmaster_pid().expect("the node's PostgreSQL runs");
        let mut pids = vec![postmaster];
        pids.extend(children_of(postmaster));
        signal(&pids, stop);
    }

    pub fn cut(&self, name: &str) {
        self.net.cut(self.index(name)).unwrap();
    }

    pub fn heal(&self, name: &str) {
        self.net.heal(self.index(name)).unwrap();
    }

    /// Cuts only the link between `a` and `b` (a partial partition).
    pub fn cut_between(&self, a: &str, b: &str) {
        self.net.cut_between(self.index(a), self.index(b)).unwrap();
    }

    pub fn heal_between(&self, a: &str, b: &str) {
        self.net.heal_between(self.index(a), self.index(b)).unwrap();
    }

    /// Drops what `from` sends to `to`, nothing else (one-way loss).
    pub fn cut_one_way(&self, from: &str, to: &str) {
        self.net
            .cut_one_way(self.index(from), self.index(to))
            .unwrap();
    }

    pub fn heal_one_way(&self, from: &str, to: &str) {
        self.net
            .heal_one_way(self.index(from), self.index(to))
            .unwrap();
    }

    /// Freezes every process of the node (SIGSTOP): a VM paused, a stall.
    /// Drops what `from` sends to `to` that carries `needle`, nothing else.
    pub fn drop_messages(&self, from: &str, to: &str, needle: &str) {
        self.net
            .drop_messages(self.index(from), self.index(to), needle)
            .unwrap();
    }

    pub fn pass_messages(&self, from: &str, to: &str, needle: &str) {
        self.net
            .pass_messages(self.index(from), self.index(to), needle)
            .unwrap();
    }

    pub fn pause(&self, name: &str) {
        self.net.pause(self.index(name)).unwrap();
    }

    pub fn resume(&self, name: &str) {
        self.net.resume(self.index(name)).unwrap();
    }

    pub fn log_tail(&self, name: &str, n: usize) -> String {
        let text = std::fs::read_to_string(&self.node(name).log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Waits until `primary` is writable (leased) with every one of
    /// `standbys` streaming from it.
    pub async fn wait_healthy(&self, primary: &str, standbys: &[&str], timeout: Duration) {
        self.wait_status(primary, timeout, "primary with streaming standbys", |s| {
            s.is_primary()
                && s.failover.as_ref().is_some_and(|f| !f.fenced)
                && standbys.iter().all(|n| {
                    s.replicas
                        .iter()
                        .any(|r| r.name == *n && r.state == "streaming")
                })
        })
        .await;
    }

    /// A DSN for a client outside the fleet, to the named nodes, the
    /// writable one wins.
    pub fn dsn(&self, names: &[&str]) -> String {
        let hosts: Vec<String> = names.iter().map(|n| self.node(n).ip.to_string()).collect();
        format!(
            "host={} port=5432 user=postgres dbname=postgres target_session_attrs=read-write connect_timeout=1",
            hosts.join(",")
        )
    }

    pub async fn connect(&self, name: &str) -> tokio_postgres::Client {
        let dsn = format!(
            "host={} port=5432 user=postgres dbname=postgres connect_timeout=3",
            self.node(name).ip
        );
        let (c, conn) = tokio_postgres::connect(&dsn, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        c
    }

    /// Starts, inside every node, a loop asking its own server several
    /// times a second "can I write?"; results go to `<dir>/probe-<node>`.
    /// Probing from inside means a cut-off node is still observed. The loop
    /// ends with its parent: killing the `ip netns exec` child on drop did
    /// not always reach the shell, and one was found still probing a
    /// vanished namespace after the suite.
    pub fn start_writable_probes(&mut self) {
        for i in 0..self.nodes.len() {
            let node = &self.nodes[i];
            let out = self.dir.path().join(format!("probe-{}", node.name));
            let script = format!(
                "while kill -0 $PPID 2>/dev/null; do t=$(date +%s.%N); r=$(psql -X -At -h {ip} -p 5432 -U postgres -d postgres \
                 -v ON_ERROR_STOP=1 -c \"SET statement_timeout = '500ms'; SELECT NOT pg_is_in_recovery() AND current_setting('default_transaction_read_only') = 'off'\" \
                 'connect_timeout=1' 2>/dev/null | tail -1); echo \"$t ${{r:-down}}\"; sleep 0.1; done >> {out}",
                ip = node.ip,
                out = out.display()
            );
            let mut cmd = self.net.command(i, "sh");
            cmd.arg("-c")
                .arg(script)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true);
            self.probes.push(cmd.spawn().unwrap());
        }
    }

    /// A client inside `name`'s host inserting 1, 2, 3… into a table
    /// `inside` (created here) through its own server, twenty times a
    /// second: it still reaches that server when the host is cut off, and
    /// freezes with it. Every id it saw committed is recorded.
    pub async fn start_inside_writer(&self, name: &str) -> InsideWriter {
        let c = self.connect(name).await;
        c.batch_execute("CREATE TABLE inside (id bigint PRIMARY KEY)")
            .await
            .unwrap();
        let acks = self.dir.path().join(format!("inside-acked-{name}"));
        let child = self
            .net
            .command(self.index(name), "sh")
            .arg("-c")
            .arg(format!(
                "i=0; while :; do i=$((i+1)); if psql -X -q -h {ip} -U postgres -d postgres \
                 -c \"INSERT INTO inside VALUES ($i)\" 'connect_timeout=1' >/dev/null 2>&1; \
                 then echo $i >> {}; fi; sleep 0.05; done",
                acks.display(),
                ip = self.node(name).ip
            ))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        InsideWriter { child, acks }
    }

    /// What `name`'s writable probe saw last: `Some(true)` writable,
    /// `Some(false)` read-only, `None` down or no sample yet.
    pub fn writable_now(&self, name: &str) -> Option<bool> {
        let path = self.dir.path().join(format!("probe-{name}"));
        let text = std::fs::read_to_string(path).unwrap_or_default();
        match text.lines().last()?.split_once(' ')?.1.trim() {
            "t" => Some(true),
            "f" => Some(false),
            _ => None,
        }
    }

    /// Moments (probe samples) at which two nodes were writable at once.
    pub fn double_primary_moments(&self) -> usize {
        let mut intervals: Vec<(String, f64, f64)> = Vec::new();
        for node in &self.nodes {
            let path = self.dir.path().join(format!("probe-{}", node.name));
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let samples: Vec<(f64, bool)> = text
                .lines()
                .filter_map(|l| {
                    let (t, r) = l.split_once(' ')?;
                    Some((t.parse().ok()?, r.trim() == "t"))
                })
                .collect();
            // A sample vouches for its node until the next one, but for
            // 1.5 s at most (a probe takes up to ~1.1 s when the server is
            // down): a probe frozen with its host says nothing about the
            // time it was frozen. Nor does the first sample after such a
            // gap: the probe and the host's repl-manager wake together,
            // and the probe may ask before repl-manager has had a moment
            // to see its lease gone (tens of milliseconds). No write can
            // be acknowledged in that moment (commits wait for a
            // synchronous standby that follows the new primary; the
            // ledgers check that), and no system without a watchdog can
            // make a frozen server read-only before it runs again
            // (Patroni's answer is the watchdog). Every later sample counts.
            for (i, w) in samples.windows(2).enumerate() {
                let after_gap = i > 0 && w[0].0 - samples[i - 1].0 > 1.5;
                if w[0].1 && !after_gap {
                    intervals.push((node.name.clone(), w[0].0, w[1].0.min(w[0].0 + 1.5)));
                }
            }
        }
        let mut overlaps = 0;
        for (i, a) in intervals.iter().enumerate() {
            for b in &intervals[i + 1..] {
                if a.0 != b.0 && a.1 < b.2 && b.1 < a.2 {
                    overlaps += 1;
                }
            }
        }
        overlaps
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for NsFleet {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Keep the evidence: every node's repl-manager and server log.
            let keep =
                std::env::temp_dir().join(format!("aurora-failover-logs-{}", std::process::id()));
            let _ = std::fs::create_dir_all(&keep);
            for n in &self.nodes {
                let _ = std::fs::copy(&n.log, keep.join(format!("{}.log", n.name)));
                let supervisor = format!("{}-supervisor.log", n.name);
                let _ = std::fs::copy(self.dir.path().join(&supervisor), keep.join(&supervisor));
                let _ = std::fs::copy(
                    n.pg.log_path(),
                    keep.join(format!("{}-postgres.log", n.name)),
                );
            }
            eprintln!("logs kept in {}", keep.display());
        }
        for p in &mut self.probes {
            let _ = p.start_kill();
        }
        for n in &mut self.nodes {
            if let Some(c) = n.child.as_mut() {
                let _ = c.start_kill();
            }
        }
    }
}

/// See [`NsFleet::start_inside_writer`].
pub struct InsideWriter {
    child: tokio::process::Child,
    acks: PathBuf,
}

impl InsideWriter {
    /// Stops writing; returns how many commits it saw acknowledged and how
    /// many of those `client`'s server lacks.
    pub async fn stop(mut self, client: &tokio_postgres::Client) -> (usize, i64) {
        let _ = self.child.kill().await;
        let acked: Vec<i64> = std::fs::read_to_string(&self.acks)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        let missing: i64 = client
            .query_one(
                "SELECT count(*) FROM unnest($1::int8[]) a(id) WHERE NOT EXISTS (SELECT 1 FROM inside i WHERE i.id = a.id)",
                &[&acked],
            )
            .await
            .unwrap()
            .get(0);
        (acked.len(), missing)
    }
}

/// A client that writes continuously through a multi-host connection
/// string and keeps a ledger of every write the server acknowledged:
/// (id, time of the ack, the server that acknowledged it).
pub struct Ledger {
    pub acked: Arc<Mutex<Vec<(i64, f64, String)>>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<u64>,
}

impl Ledger {
    pub async fn start(dsn: String) -> Ledger {
        Self::start_with(dsn, Duration::from_secs(5)).await
    }

    /// As [`Ledger::start`], giving up on a write after `write_timeout`
    /// (then reconnecting): how long a client waits on a primary that went
    /// silent (no RST) bounds what a benchmark of that fault can measure.
    pub async fn start_with(dsn: String, write_timeout: Duration) -> Ledger {
        let acked = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let task = {
            let acked = acked.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut id = 0i64;
                let mut attempts = 0u64;
                let mut client: Option<tokio_postgres::Client> = None;
                while !stop.load(Ordering::SeqCst) {
                    if client.as_ref().is_none_or(|c| c.is_closed()) {
                        match tokio::time::timeout(
                            Duration::from_secs(3),
                            tokio_postgres::connect(&dsn, tokio_postgres::NoTls),
                        )
                        .await
                        {
                            Ok(Ok((c, conn))) => {
                                tokio::spawn(conn);
                                let _ = c
                                    .batch_execute(
                                        "CREATE TABLE IF NOT EXISTS ledger (id bigint PRIMARY KEY, at timestamptz DEFAULT now())",
                                    )
                                    .await;
                                client = Some(c);
                            }
                            _ => {
                                tokio::time::sleep(Duration::from_millis(50)).await;
                                continue;
                            }
                        }
                    }
                    let Some(c) = client.as_ref() else { continue };
                    id += 1;
                    attempts += 1;
                    let result = tokio::time::timeout(
                        write_timeout,
                        c.query_one(
                            "INSERT INTO ledger (id) VALUES ($1) RETURNING host(inet_server_addr())",
                            &[&id],
                        ),
                    )
                    .await;
                    match result {
                        Ok(Ok(row)) => acked.lock().unwrap().push((id, now(), row.get(0))),
                        _ => client = None,
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                attempts
            })
        };
        Ledger { acked, stop, task }
    }

    pub async fn stop(self) -> (Vec<(i64, f64, String)>, u64) {
        self.stop.store(true, Ordering::SeqCst);
        let attempts = self.task.await.unwrap();
        let acked = self.acked.lock().unwrap().clone();
        (acked, attempts)
    }

    /// The first write acknowledged by `server` after `after` (unix secs).
    pub fn first_ack_by(&self, server: &str, after: f64) -> Option<f64> {
        self.acked
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, t, s)| s == server && *t >= after)
            .map(|(_, t, _)| *t)
            .next()
    }
}

fn signal(pids: &[i32], stop: bool) {
    let sig = if stop {
        nix::sys::signal::Signal::SIGSTOP
    } else {
        nix::sys::signal::Signal::SIGCONT
    };
    for pid in pids {
        // A process that exited since it was listed is no error.
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid), sig);
    }
}

/// The processes whose parent is `parent` (from `/proc/<pid>/stat`, whose
/// fourth field is the parent, after the command name in parentheses).
fn children_of(parent: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    let rest = &s[s.rfind(')')? + 1..];
                    rest.split_whitespace().nth(1)?.parse::<i32>().ok()
                })
                == Some(parent)
        })
        .collect()
}

/// Acknowledged ids missing from `client`'s ledger table.
pub async fn lost_writes(
    client: &tokio_postgres::Client,
    acked: &[(i64, f64, String)],
) -> Vec<i64> {
    let ids: Vec<i64> = acked.iter().map(|a| a.0).collect();
    let rows = client
        .query(
            "SELECT a.id FROM unnest($1::int8[]) a(id) WHERE NOT EXISTS (SELECT 1 FROM ledger l WHERE l.id = a.id)",
            &[&ids],
        )
        .await
        .unwrap();
    rows.iter().map(|r| r.get(0)).collect()
}

/// Prints the figures every failover test reports.
pub fn report(test: &str, figures: &BTreeMap<&str, String>) {
    let line: Vec<String> = figures.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("[{test}] {}", line.join(" "));
    eprintln!("[{test}] {}", line.join(" "));
}

pub fn elapsed_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64()
}

impl super::Members for NsFleet {
    fn api(&self, name: &str) -> String {
        format!("http://{}:8008", self.node(name).ip)
    }

    fn names(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.name.clone()).collect()
    }

    fn http(&self) -> &HttpClient {
        &self.http
    }

    fn context(&self, name: &str) -> String {
        format!("log tail:\n{}", self.log_tail(name, 30))
    }
}
