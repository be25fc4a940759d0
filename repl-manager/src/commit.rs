//! Whether the local primary can still commit.
//!
//! A server whose storage stalls (a hung volume, a frozen filesystem) still
//! answers reads from its cache, so the read the primary's round makes
//! succeeds and the lease would be renewed for good, while no client's
//! commit ever returns and no standby takes over (#15, finding 6). So the
//! primary's round also commits a write: a transactional logical message
//! (`pg_logical_emit_message(true, 'aurora-commit-probe', '')`), whose
//! commit is flushed to the WAL like any client's. (`SELECT txid_current()`
//! is not enough: a transaction whose only WAL is its commit record commits
//! without waiting for the flush, which was measured here.) The session
//! commits with `synchronous_commit = local`, so a missing synchronous
//! standby (the degrade path's business) never holds it. No table is
//! written; the cost is two small WAL records per round, which a logical
//! decoding client that asks for messages also sees.
//!
//! One probe is in flight at a time: a hung commit is waited on, round
//! after round, never stacked up behind another one. A commit that has not
//! returned (or kept failing) for longer than the failover timeout stops
//! the renewals: the lease lapses, the fence follows, and a standby whose
//! storage works takes over. A shorter stall (a slow fsync under load) is
//! ridden out.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio_postgres::Client;

use crate::manager::db_error_text;
use crate::primary::Primary;

/// The probe's state, kept between rounds.
#[derive(Default)]
pub struct CommitProbe {
    client: Option<Arc<Client>>,
    inflight: Option<(Instant, JoinHandle<Result<(), String>>)>,
    /// Since when no probe commit has succeeded (the start of the first
    /// one that has not).
    failing_since: Option<Instant>,
    last_error: Option<String>,
}

/// What a round learns.
#[derive(Debug, Clone, PartialEq)]
pub enum Commits {
    /// The last probe committed.
    Work,
    /// Commits have not worked for `for_secs`, within what is tolerated.
    Stalled { for_secs: f64, why: String },
    /// Commits have not worked for longer than is tolerated: stop renewing.
    Hung { for_secs: f64, why: String },
}

/// The decision, pure: commits failing since `since` are hung once that is
/// at least `limit` ago.
pub fn judge(since: Option<Instant>, now: Instant, limit: Duration, why: &str) -> Commits {
    match since {
        None => Commits::Work,
        Some(t) => {
            let stalled = now.saturating_duration_since(t);
            let for_secs = stalled.as_secs_f64();
            let why = why.to_string();
            if stalled >= limit {
                Commits::Hung { for_secs, why }
            } else {
                Commits::Stalled { for_secs, why }
            }
        }
    }
}

impl Primary<'_> {
    /// Waits up to `wait` for a probe commit (starting one unless one is
    /// still in flight) and judges against `limit`.
    pub(crate) async fn check_commits(&self, wait: Duration, limit: Duration) -> Commits {
        let mut p = self.m.primary_state.commit_probe.lock().await;
        let (started, mut handle) = match p.inflight.take() {
            Some(inflight) => inflight,
            None => {
                let started = Instant::now();
                let client = match p.client.clone().filter(|c| !c.is_closed()) {
                    Some(c) => Ok(c),
                    None => {
                        match tokio::time::timeout(
                            wait,
                            self.m.superuser_session("repl-manager commit probe"),
                        )
                        .await
                        {
                            Ok(Ok(c)) => {
                                let c = Arc::new(c);
                                p.client = Some(c.clone());
                                Ok(c)
                            }
                            Ok(Err(e)) => Err(e.to_string()),
                            Err(_) => {
                                Err(format!("connecting took over {:.1} s", wait.as_secs_f64()))
                            }
                        }
                    }
                };
                match client {
                    Ok(c) => (
                        started,
                        tokio::spawn(async move {
                            c.simple_query(
                                "SELECT pg_logical_emit_message(true, 'aurora-commit-probe', '')",
                            )
                            .await
                            .map(|_| ())
                            .map_err(|e| db_error_text(&e))
                        }),
                    ),
                    Err(e) => {
                        let since = *p.failing_since.get_or_insert(started);
                        p.last_error = Some(e);
                        let why = p.last_error.clone().unwrap_or_default();
                        return judge(Some(since), Instant::now(), limit, &why);
                    }
                }
            }
        };
        let left = wait.saturating_sub(started.elapsed());
        let outcome = tokio::time::timeout(left, &mut handle).await;
        let why = match outcome {
            Ok(Ok(Ok(()))) => {
                if let Some(since) = p.failing_since.take() {
                    tracing::info!(
                        after_secs = since.elapsed().as_secs_f64(),
                        "the local server commits again"
                    );
                }
                p.last_error = None;
                return Commits::Work;
            }
            Ok(Ok(Err(e))) => {
                p.client = None;
                format!("a commit failed: {e}")
            }
            Ok(Err(e)) => {
                p.client = None;
                format!("the commit probe ended: {e}")
            }
            Err(_) => {
                p.inflight = Some((started, handle));
                "a commit has not returned".to_string()
            }
        };
        let since = *p.failing_since.get_or_insert(started);
        p.last_error = Some(why.clone());
        judge(Some(since), Instant::now(), limit, &why)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_are_hung_only_after_the_limit() {
        let t0 = Instant::now();
        let limit = Duration::from_secs(5);
        assert_eq!(judge(None, t0, limit, ""), Commits::Work);
        assert!(matches!(
            judge(Some(t0), t0 + Duration::from_millis(4_900), limit, "x"),
            Commits::Stalled { .. }
        ));
        match judge(Some(t0), t0 + limit, limit, "a commit has not returned") {
            Commits::Hung { for_secs, why } => {
                assert_eq!(for_secs, 5.0);
                assert_eq!(why, "a commit has not returned");
            }
            other => panic!("{other:?}"),
        }
        // A clock that went backwards is not a stall.
        assert!(matches!(
            judge(Some(t0 + limit), t0, limit, "x"),
            Commits::Stalled { for_secs, .. } if for_secs == 0.0
        ));
    }
}
