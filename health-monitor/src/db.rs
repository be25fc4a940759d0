//! health-monitor's database connections, kept between intervals: one to
//! the local server, and two to the primary through the read-write
//! connection string, one for the report (writes) and one for reads (the
//! fleet view's replication state, the clock offset). Writes get their own
//! because a commit waits for the synchronous standby: while that standby
//! is away, a read queued behind a waiting commit on the same connection
//! would wait with it and the fleet view would call the primary dead.
//! Connection strings are parsed once at start. Before, each interval
//! opened four or five new connections, each a PostgreSQL backend forked
//! and torn down, times every node of the fleet.
//!
//! Every use is bounded: connecting by `database.connect_timeout_secs` per
//! host, the work on the connection by `checks.timeout_secs`. A connection
//! whose work failed, timed out, or was abandoned half-way (the caller's own
//! deadline dropped it) is discarded, and the next use connects afresh, so a
//! connection to a host that vanished (no RST) or to a primary that was
//! demoted never lingers.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cluster_db::{DbError, DbTarget, Dsn};
use prometheus::IntCounterVec;
use tokio_postgres::Client;

use crate::config::Config;

/// The kept connections.
pub struct Databases {
    /// This node's own server (the replicated registry, its role).
    pub local: Kept,
    /// The primary, for the report and down marks (writes).
    pub report: Kept,
    /// The primary, for reads that must not wait behind a commit.
    pub primary: Kept,
}

impl Databases {
    /// Connects lazily, to the targets the config parsed when it loaded.
    pub fn new(config: &Config, connects: IntCounterVec) -> Self {
        let work = Duration::from_secs(config.checks.timeout_secs.max(1));
        let per_host = Duration::from_secs(config.database.connect_timeout_secs.max(1));
        let kept = |name: &'static str, dsn: &Dsn| -> Kept {
            let target = dsn.target().clone();
            let hosts = target.config.get_hosts().len().max(1) as u32;
            Kept {
                connects: connects.clone(),
                name,
                target,
                connect_timeout: per_host * hosts,
                work_timeout: work,
                slot: tokio::sync::Mutex::new(None),
                abandoned: AtomicBool::new(false),
            }
        };
        Self {
            local: kept("local", &config.database.local_dsn),
            report: kept("report", &config.database.write_dsn),
            primary: kept("primary", &config.database.write_dsn),
        }
    }

    /// The longest one use of each connection can take, together: the
    /// bound for a step that uses several.
    pub fn bound(&self) -> Duration {
        self.local.bound() + self.report.bound() + self.primary.bound()
    }
}

/// One kept connection to one target.
pub struct Kept {
    name: &'static str,
    target: DbTarget,
    connect_timeout: Duration,
    work_timeout: Duration,
    slot: tokio::sync::Mutex<Option<Arc<Client>>>,
    /// A use was dropped half-way: its connection may be stuck in a query.
    abandoned: AtomicBool,
    connects: IntCounterVec,
}

impl Kept {
    /// Connect plus work, the longest one `with` takes.
    pub fn bound(&self) -> Duration {
        self.connect_timeout + self.work_timeout
    }

    /// Runs `work` on the kept connection (connecting first when there is
    /// none, or it closed), bounded; any failure discards the connection.
    pub async fn with<T, F, Fut>(&self, work: F) -> Result<T, DbError>
    where
        F: FnOnce(Arc<Client>) -> Fut,
        Fut: Future<Output = Result<T, DbError>>,
    {
        let client = self.client().await?;
        let mut guard = Abandon {
            kept: self,
            armed: true,
        };
        let result = match tokio::time::timeout(self.work_timeout, work(client)).await {
            Ok(r) => r,
            Err(_) => Err(DbError::ConnectTimeout {
                target: self.target.label.clone(),
                secs: self.work_timeout.as_secs().max(1),
            }),
        };
        guard.armed = false;
        if result.is_err() {
            self.discard().await;
        }
        result
    }

    async fn client(&self) -> Result<Arc<Client>, DbError> {
        let mut slot = self.slot.lock().await;
        if self.abandoned.swap(false, Ordering::SeqCst) {
            *slot = None;
        }
        if let Some(c) = slot.as_ref() {
            if !c.is_closed() {
                return Ok(c.clone());
            }
        }
        *slot = None;
        self.connects.with_label_values(&[self.name]).inc();
        let client = Arc::new(cluster_db::connect(&self.target, self.connect_timeout).await?);
        *slot = Some(client.clone());
        Ok(client)
    }

    async fn discard(&self) {
        *self.slot.lock().await = None;
    }
}

/// Marks the connection for replacement when a `with` is dropped before it
/// finished (a caller's deadline): the query may still be in flight on it.
struct Abandon<'a> {
    kept: &'a Kept,
    armed: bool,
}

impl Drop for Abandon<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.kept.abandoned.store(true, Ordering::SeqCst);
        }
    }
}
