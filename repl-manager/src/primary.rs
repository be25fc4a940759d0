//! Duties of the node that is primary: idempotent, re-applied on every pass
//! and right after every promotion.

use std::collections::BTreeSet;
use std::sync::Mutex;

use cluster_db::{NodeName, ReplicationState};
use serde_json::json;

use crate::manager::{db_error_text, lock, Failure, Manager};
use crate::member::Member;
use crate::now::Now;
use crate::probe;
use crate::settings::{self, Desired};
use crate::state::EpochRecord;

/// Start-time settings replication cannot work without.
const RESTART_WORTHY: &[&str] = &[
    "wal_level",
    "wal_log_hints",
    "max_wal_senders",
    "max_replication_slots",
    "hot_standby",
    "listen_addresses",
    "port",
];

/// What only the primary's duties keep between passes.
#[derive(Default)]
pub struct PrimaryState {
    /// The commit probe (its own session, one commit in flight).
    pub(crate) commit_probe: tokio::sync::Mutex<crate::commit::CommitProbe>,
    /// The server identity (postmaster start) and epoch for which the
    /// one-time setup ran.
    setup: Mutex<Option<(String, i64)>>,
}

impl PrimaryState {
    /// The next promotion (or a demotion) runs the one-time setup again.
    pub(crate) fn forget_setup(&self) {
        *lock(&self.setup) = None;
    }
}

/// The duties of the node that is primary: its settings, the synchronous
/// standby and the sync key's order, the first setup after a promotion,
/// slots, and the commit probe. Borrowed from the manager for one call
/// (`Manager::primary`); what it keeps between calls is `PrimaryState`.
pub struct Primary<'a> {
    pub(crate) m: &'a Manager,
}

impl Manager {
    pub(crate) fn primary(&self) -> Primary<'_> {
        Primary { m: self }
    }
}

impl<'a> Primary<'a> {
    /// Candidates for synchronous standby: the lead and the backup, other
    /// than this node, that may be promoted.
    pub fn sync_candidates(&self) -> Vec<&'a Member> {
        let mut c: Vec<&'a Member> = self
            .m
            .cfg
            .others()
            .filter(|m| matches!(m.role, cluster_db::Role::Backup | cluster_db::Role::Lead))
            .collect();
        // The backup first: it is the designated synchronous standby.
        c.sort_by_key(|m| m.role != cluster_db::Role::Backup);
        c
    }

    /// The settings a primary runs with right now.
    pub fn desired(&self) -> Desired {
        let c: Vec<&str> = self
            .sync_candidates()
            .iter()
            .map(|m| m.name.as_str())
            .collect();
        let names = lock(&self.m.sync).names(&c);
        Desired::Primary {
            synchronous_standby_names: names,
            fenced: !self.m.writes_allowed(),
        }
    }

    /// Whether this node may create the fleet's first cluster: asked for
    /// (`postgres.initdb`), the lead, never part of a promotion (epoch 0),
    /// and no other member that answers has a cluster. A member that does
    /// not answer cannot be asked; at a fleet's first start the lead is
    /// alone, which is why the state file's epoch is the guard that counts.
    async fn may_initdb(&self, known: &crate::state::EpochRecord) -> Result<bool, Failure> {
        if !self.m.cfg.postgres.initdb
            || known.epoch != 0
            || self.m.me().role != cluster_db::Role::Lead
        {
            return Ok(false);
        }
        for (m, view) in self.m.peers().await {
            if let Ok(status) = view {
                if status.state != "uninitialized" {
                    return Err(Failure::Failed(format!(
                        "this lead's data directory is empty but member {} has a cluster ({}): \
                         not initialising a second one; clone this node from it or restore a backup",
                        m.name, status.state
                    )));
                }
            }
        }
        Ok(true)
    }

    /// One pass as the primary.
    /// Refuses to act as primary while the leader key names another
    /// member.
    fn not_replaced(&self, k: &fleet_state::LeaderKey, epoch: i64) -> Result<(), Failure> {
        if k.member != self.m.name() && self.m.cfg.member(&k.member).is_some() {
            return Err(Failure::Failed(format!(
                "the committed leader key names {} at epoch {}, not this node (its record: \
                 epoch {epoch}): not acting as primary; the failover round follows the key",
                k.member, k.epoch
            )));
        }
        Ok(())
    }

    /// Before a stopped server starts as primary, or a standby is promoted
    /// to finish a stored promotion: this member's copy of the key may lag
    /// (it was down while the fleet moved on), so the key is confirmed
    /// through the log. A server that would open as a superseded primary
    /// serves nothing, not even reads. Skipped before the fleet's first key.
    async fn confirm_key_before_serving(&self, known: &EpochRecord) -> Result<(), Failure> {
        let Some(c) = self.m.consensus() else {
            return Ok(());
        };
        if c.view().leader.is_none() {
            return Ok(());
        }
        match c.committed_key(self.m.tuning().timeout()).await {
            Ok(Some(k)) => self.not_replaced(&k, known.epoch),
            Ok(None) => Ok(()),
            Err(e) => Err(Failure::Failed(format!(
                "cannot confirm the committed leader key ({e}): not starting as primary"
            ))),
        }
    }

    pub async fn act(&self) -> Result<(), Failure> {
        let known = self.m.known();
        // Where the key is on Raft, this node acts as primary only while no
        // other member holds the committed key: a record naming it primary
        // that the fleet never committed (a restored or edited state file)
        // must not start, promote or open a server for writes. The failover
        // round confirms and replaces such a record.
        if let Some(k) = self.m.consensus().and_then(|c| c.view().leader) {
            self.not_replaced(&k, known.epoch)?;
        }
        if !self.m.server.has_data() && self.may_initdb(&known).await? {
            let pg = &self.m.cfg.postgres;
            if let Some(password) = &pg.superuser_password {
                self.m
                    .set_activity(Some("initialising a new cluster (initdb)"));
                tracing::warn!(data_dir = %self.m.server.data_dir().display(), "no cluster anywhere in the fleet yet: initialising one (postgres.initdb)");
                self.m.server.initdb(&pg.superuser, password).await?;
            }
        }
        if !self.m.server.has_data() {
            return Err(Failure::Failed(format!(
                "this node is the primary at epoch {} but {} holds no cluster: \
                 initialize it (initdb) or restore a backup",
                known.epoch,
                self.m.server.data_dir().display()
            )));
        }
        // A fence whose stop has not held yet (the failover round tries it
        // again) goes on below: the running server is made read-only.
        if self.m.hard_fenced() && !self.m.writes_allowed() && !self.m.server.is_running().await {
            return Err(Failure::Failed(
                "fenced: this primary lost its majority and stopped its server; it starts again \
                 when a majority answers, or rejoins as a standby if another node was promoted"
                    .into(),
            ));
        }
        if !self.m.server.is_running().await {
            if self.m.hard_fenced() && !self.m.writes_allowed() {
                // The retried fence stop just held: it stays down.
                return Err(Failure::Failed("fenced: the server was stopped".into()));
            }
            self.confirm_key_before_serving(&known).await?;
            self.m.set_activity(Some("starting PostgreSQL as primary"));
            settings::apply(&self.m.server, &self.m.cfg, &self.desired())?;
            self.m.server.start().await?;
            self.m.drop_local().await;
        }
        let client = self.m.local().await?;
        let st = probe::server_state(&client).await?;
        if st.in_recovery {
            self.confirm_key_before_serving(&known).await?;
            // The durable record says this node is primary at this epoch
            // (a promotion was decided and stored before it ran): finish it.
            self.m.set_activity(Some("promoting"));
            tracing::warn!(
                epoch = known.epoch,
                "server is in recovery but this node is the primary: promoting"
            );
            self.promote_server().await?;
        }
        self.setup_once().await?;

        // Settings: the synchronous standby names follow the policy.
        let standbys = probe::standbys(&client).await?;
        let candidates: Vec<&str> = self
            .sync_candidates()
            .iter()
            .map(|m| m.name.as_str())
            .collect();
        let tuning = self.m.tuning();
        lock(&self.m.sync).set_strict(tuning.strict());
        let before = lock(&self.m.sync).clone();
        let mut decision = lock(&self.m.sync).decide(
            &candidates,
            &standbys,
            tuning.sync_degrade_after(),
            Now::read(),
        );
        if let Err(why) = self.sync_key_leaves_first(&decision).await {
            // The names keep the standby the key names, and commits keep
            // waiting for it, until the key has let it go.
            tracing::warn!(reason = %why, "the synchronous standby names stay as they are");
            *lock(&self.m.sync) = before;
            decision = lock(&self.m.sync).hold(&candidates);
        }
        self.m.metrics.sync_mode.set(match decision.mode {
            cluster_db::SyncMode::Async => 0,
            cluster_db::SyncMode::Sync => 1,
            cluster_db::SyncMode::Blocked => 2,
        });
        let fenced = !self.m.writes_allowed();
        let desired = Desired::Primary {
            synchronous_standby_names: decision.names.clone(),
            fenced,
        };
        if settings::apply(&self.m.server, &self.m.cfg, &desired)? {
            client.execute("SELECT pg_reload_conf()", &[]).await?;
            if fenced {
                // Sessions opened before the fence may hold read-write
                // transactions: end them.
                client
                    .execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                          WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
                            AND application_name NOT LIKE 'repl-manager%'",
                        &[],
                    )
                    .await?;
                tracing::warn!("no lease from a majority: this primary acknowledges no writes");
            }
        }
        if let Some(kind) = decision.transition {
            self.m
                .event(
                    kind,
                    json!({ "standby": decision.standby, "candidates": candidates }),
                )
                .await;
        }
        self.publish_replication(&decision).await;
        self.sync_key_enters(&client, &standbys).await;
        self.reconcile_slots().await?;
        self.restart_if_pending().await
    }

    /// Who keeps the sync key: the Raft group, where failover is
    /// automatic (nothing takes over automatically otherwise).
    fn sync_key_keeper(&self) -> Option<&crate::consensus::Consensus> {
        self.m
            .consensus()
            .filter(|_| self.m.cfg.automatic_failover())
    }

    /// Patroni's order, first half: a standby leaves the committed sync
    /// key *before* the names stop naming it (a degrade, a change of
    /// standby), so no member the key names can lack a write the primary
    /// acknowledged without it. If the key cannot be written, the caller
    /// keeps the names. Paused, nobody takes over automatically: the names
    /// follow the policy even if the key cannot be written, so writes keep
    /// flowing (as the lease rule in pause).
    async fn sync_key_leaves_first(&self, d: &crate::sync::SyncDecision) -> Result<(), String> {
        let Some(c) = self.sync_key_keeper() else {
            return Ok(());
        };
        let Some(held) = c.sync_key() else {
            return Ok(());
        };
        if d.named.as_deref() == Some(held.as_str()) {
            return Ok(());
        }
        match c.set_sync(None).await {
            Ok(()) => {
                self.m
                    .event(
                        "sync_key_left",
                        json!({ "standby": held, "named": d.named }),
                    )
                    .await;
                Ok(())
            }
            Err(e) if self.m.paused() => {
                tracing::warn!(error = %e, standby = %held, "paused: the names change without the sync key");
                Ok(())
            }
            Err(e) => Err(format!(
                "the sync key still names {held} and could not be cleared: {e}"
            )),
        }
    }

    /// Patroni's order, second half: the named standby enters the sync
    /// key only once it reports `sync` and has flushed what the primary
    /// had written when it first reported `sync` (a round after the names
    /// named it, so every backend commits synchronously by then). From
    /// then on it is the one member that may take over automatically.
    async fn sync_key_enters(
        &self,
        client: &tokio_postgres::Client,
        standbys: &[probe::StandbyConn],
    ) {
        let Some(c) = self.sync_key_keeper() else {
            return;
        };
        let (named, entering) = {
            let t = lock(&self.m.sync);
            (t.named.clone(), t.entering.clone())
        };
        let Some(named) = named else {
            return;
        };
        if c.sync_key().as_deref() == Some(named.as_str()) {
            return;
        }
        let Some(conn) = standbys
            .iter()
            .find(|s| s.name == named && s.sync_state == "sync")
        else {
            return;
        };
        match entering {
            Some((who, at)) if who == named => {
                if conn.flush_lsn.is_some_and(|f| f >= at) {
                    match c.set_sync(Some(&named)).await {
                        Ok(()) => {
                            self.m
                                .event(
                                    "sync_key_entered",
                                    json!({ "standby": named, "position": at }),
                                )
                                .await
                        }
                        Err(e) => {
                            tracing::info!(error = %e, standby = %named, "the sync key was not written; next round")
                        }
                    }
                }
            }
            _ => match probe::current_lsn(client).await {
                Ok(at) => lock(&self.m.sync).entering = Some((named, at)),
                Err(e) => tracing::debug!(error = %e, "position for the sync key"),
            },
        }
    }

    /// `pg_promote()` and wait for it.
    pub async fn promote_server(&self) -> Result<(), Failure> {
        let client = self.m.local().await?;
        let row = client.query_one("SELECT pg_promote(true, 60)", &[]).await?;
        let promoted: bool = row.get(0);
        if !promoted {
            return Err(Failure::Failed(
                "pg_promote() did not finish within 60 s".into(),
            ));
        }
        // A checkpoint puts the new timeline in the control file, which is
        // where pg_rewind on the former primary looks for it.
        if let Err(e) = client.batch_execute("CHECKPOINT").await {
            tracing::warn!(error = %e, "CHECKPOINT after promotion failed");
        }
        // The new primary has no synchronous standby yet.
        lock(&self.m.sync).reset("", Now::read());
        self.m.primary_state.forget_setup();
        Ok(())
    }

    /// Role, grants, migrations and the cluster record: once per server
    /// start and epoch (they write catalog rows, so not every second).
    async fn setup_once(&self) -> Result<(), Failure> {
        let client = self.m.local().await?;
        let row = client
            .query_one(
                "SELECT pg_postmaster_start_time()::text, current_setting('synchronous_standby_names')",
                &[],
            )
            .await?;
        let started: String = row.get(0);
        let names: String = row.get(1);
        let key = (started, self.m.epoch());
        if lock(&self.m.primary_state.setup).as_ref() == Some(&key) {
            return Ok(());
        }
        lock(&self.m.sync).reset(&names, Now::read());
        // The schema contract, then this node's claim in it. A bootstrap
        // (epoch 0) becomes epoch 1, stored locally first.
        let mut owned = self.m.superuser_session("repl-manager-migrate").await?;
        let report = cluster_db::migrate(&mut owned).await?;
        if !report.applied.is_empty() {
            tracing::info!(applied = ?report.applied, version = report.version, "schema migrated");
        }
        // After the migrations: the role is also granted what standbys need
        // to append to the event log.
        self.ensure_replication_role().await?;
        if self.m.epoch() == 0 {
            self.m.bump_epoch(self.m.name())?;
        }
        let me = NodeName::parse(self.m.name())?;
        match cluster_db::queries::record_primary(&owned, self.m.epoch(), &me).await {
            Ok(_) => {}
            Err(cluster_db::DbError::StaleEpoch { offered, current }) => {
                // The database knows a newer epoch than this node: another
                // node was promoted. Adopt nothing here (the record's
                // primary is not verified); report it loudly.
                return Err(Failure::Failed(format!(
                    "the database records epoch {current}, newer than this node's {offered}: \
                     another node was promoted; this node must not act as primary"
                )));
            }
            Err(e) => return Err(e.into()),
        }
        self.m
            .event(
                "primary_ready",
                serde_json::json!({ "epoch": self.m.epoch(), "schema": report.version }),
            )
            .await;
        *lock(&self.m.primary_state.setup) = Some((key.0, self.m.epoch()));
        Ok(())
    }

    /// The replication role: login, replication, the password from config,
    /// and what `pg_rewind` and the lag probes need.
    async fn ensure_replication_role(&self) -> Result<(), Failure> {
        let client = self.m.local().await?;
        let user = &self.m.cfg.postgres.replication_user; // validated identifier
        let password = self
            .m
            .cfg
            .postgres
            .replication_password
            .expose()
            .replace('\'', "''");
        let sql = format!(
            "BEGIN;
             SET LOCAL log_statement = 'none';
             DO $$ BEGIN
               IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{user}') THEN
                 CREATE ROLE {user} WITH LOGIN REPLICATION;
               END IF;
             END $$;
             ALTER ROLE {user} WITH LOGIN REPLICATION PASSWORD '{password}';
             GRANT pg_monitor TO {user};
             DO $$ BEGIN
               -- PostgreSQL 15+: lets standbys checkpoint a fresh primary before pg_rewind.
               IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pg_checkpoint') THEN
                 GRANT pg_checkpoint TO {user};
               END IF;
             END $$;
             GRANT EXECUTE ON FUNCTION pg_catalog.pg_ls_dir(text, boolean, boolean) TO {user};
             GRANT EXECUTE ON FUNCTION pg_catalog.pg_stat_file(text, boolean) TO {user};
             GRANT EXECUTE ON FUNCTION pg_catalog.pg_read_binary_file(text) TO {user};
             GRANT EXECUTE ON FUNCTION pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean) TO {user};
             COMMIT;"
        );
        if let Err(e) = client.batch_execute(&sql).await {
            let _ = client.batch_execute("ROLLBACK").await;
            return Err(Failure::Failed(format!(
                "setting up replication role {user}: {}",
                db_error_text(&e)
            )));
        }
        // Standbys record their events through the primary as this role
        // (INSERT ... RETURNING id needs SELECT too).
        client
            .batch_execute(&format!(
                "DO $$ BEGIN
                   IF to_regclass('aurora.events') IS NOT NULL THEN
                     GRANT USAGE ON SCHEMA aurora TO {user};
                     GRANT SELECT, INSERT ON aurora.events TO {user};
                     GRANT USAGE ON SEQUENCE aurora.events_id_seq TO {user};
                   END IF;
                 END $$;"
            ))
            .await?;
        Ok(())
    }

    /// One physical slot per other member, created before it is needed;
    /// slots of departed members dropped; an invalidated (`lost`) slot
    /// recreated (its replica notices the missing WAL and re-clones).
    pub async fn reconcile_slots(&self) -> Result<(), Failure> {
        let client = self.m.local().await?;
        let want: BTreeSet<String> = self.m.cfg.others().map(Member::slot_name).collect();
        let slots = probe::slots(&client).await?;
        for s in &slots {
            if s.slot_type != "physical" || !s.name.starts_with("replica_") {
                continue; // not ours
            }
            let lost = s.wal_status.as_deref() == Some("lost");
            if !want.contains(&s.name) && !s.active {
                client
                    .execute("SELECT pg_drop_replication_slot($1)", &[&s.name])
                    .await?;
                self.m
                    .event(
                        "slot_dropped",
                        json!({ "slot": s.name, "reason": "member left" }),
                    )
                    .await;
            } else if lost && !s.active {
                client
                    .execute("SELECT pg_drop_replication_slot($1)", &[&s.name])
                    .await?;
                client
                    .execute(
                        "SELECT pg_create_physical_replication_slot($1, true)",
                        &[&s.name],
                    )
                    .await?;
                self.m.event(
                    "slot_recreated",
                    json!({ "slot": s.name, "reason": "invalidated: its replica fell further behind than max_slot_wal_keep_size" }),
                )
                .await;
            }
        }
        for name in &want {
            if !slots.iter().any(|s| &s.name == name) {
                client
                    .execute(
                        "SELECT pg_create_physical_replication_slot($1, true)
                          WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)",
                        &[name],
                    )
                    .await?;
                tracing::info!(slot = %name, "replication slot created");
            }
        }
        Ok(())
    }

    /// Settings such as `wal_level` apply only at start; restart the
    /// primary when one is pending (rare: first start with our settings).
    async fn restart_if_pending(&self) -> Result<(), Failure> {
        let client = self.m.local().await?;
        let st = probe::server_state(&client).await?;
        // Only what replication needs is worth interrupting the primary;
        // anything else waits for the operator's next restart.
        let needed: Vec<&String> = st
            .pending_restart
            .iter()
            .filter(|s| RESTART_WORTHY.contains(&s.as_str()))
            .collect();
        if needed.is_empty() {
            return Ok(());
        }
        tracing::warn!(settings = ?needed, "restarting the primary to apply settings");
        self.m.set_activity(Some("restarting to apply settings"));
        self.m.server.stop(crate::server::StopMode::Fast).await?;
        self.m.drop_local().await;
        self.m.server.start().await?;
        self.m
            .event(
                "restarted",
                json!({ "reason": "settings need a restart", "settings": needed }),
            )
            .await;
        Ok(())
    }

    async fn publish_replication(&self, d: &crate::sync::SyncDecision) {
        let Ok(me) = NodeName::parse(self.m.name()) else {
            return;
        };
        let state = ReplicationState {
            primary: me,
            epoch: self.m.epoch(),
            sync_standby: d.standby.as_deref().and_then(|s| NodeName::parse(s).ok()),
            sync_mode: d.mode,
        };
        let Ok(client) = self.m.local().await else {
            return;
        };
        if let Err(e) = cluster_db::queries::record_replication(&*client, &state).await {
            tracing::debug!(error = %e, "replication state not published");
        }
    }
}
