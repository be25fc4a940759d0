//! The fleet's dynamic config: the timing and sync policy every member
//! must share (Patroni keeps the same keys in its DCS). Kept in the
//! replicated state, so a rolling change of the members' files cannot
//! leave two members reasoning with different TTLs, and checked here, in
//! log order, so no committed config breaks the timing argument.
//!
//! Times are whole milliseconds or seconds: the state must compare equal
//! on every member, which floats would not promise.

use serde::{Deserialize, Serialize};

/// The longest TTL, probe interval, loop interval and degrade delay
/// accepted: beyond an hour nothing sensible is meant, and the bound keeps
/// every sum of durations far from overflowing.
const MAX_MS: u64 = 3_600_000;

/// The values; their names follow the repl-manager config file's keys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DynamicConfig {
    /// `failover.timeout_secs`, in ms: how long the leader key's revision
    /// must stand before a candidate takes it (Patroni's `ttl`).
    pub ttl_ms: u64,
    /// `failover.probe_interval_secs`, in ms: the primary renews, and every
    /// member probes, this often. The primary's lease ends two of these
    /// before the TTL.
    pub probe_interval_ms: u64,
    /// `replication.loop_interval_secs` (Patroni's `loop_wait`).
    pub loop_interval_secs: u64,
    /// `replication.sync_degrade_after_secs`: how long the primary waits
    /// for a lost synchronous standby before it degrades to asynchronous
    /// commits (non-strict mode).
    pub sync_degrade_after_secs: u64,
    /// `replication.synchronous_strict` (Patroni's
    /// `synchronous_mode_strict`).
    pub synchronous_strict: bool,
    /// `replication.max_lag_on_failover_bytes` (Patroni's
    /// `maximum_lag_on_failover`).
    pub max_lag_on_failover_bytes: u64,
}

/// Why a config is refused: the key at fault and the rule it breaks.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct Refusal {
    pub key: &'static str,
    pub reason: String,
}

fn refuse(key: &'static str, reason: impl Into<String>) -> Result<(), Refusal> {
    Err(Refusal {
        key,
        reason: reason.into(),
    })
}

impl DynamicConfig {
    /// Every rule, as applied to a committed config.
    pub fn check(&self) -> Result<(), Refusal> {
        self.check_rules(true)
    }

    /// The rules; `degrade_rule`: whether a primary can be failed over
    /// automatically, so that degrading to asynchronous commits before its
    /// lease ran out could lose acknowledged writes (#15 finding 4). A
    /// member's config file is checked without it where nothing fails over
    /// automatically; a committed config always with it.
    pub fn check_rules(&self, degrade_rule: bool) -> Result<(), Refusal> {
        let secs = |ms: u64| ms as f64 / 1000.0;
        if !(100..=60_000).contains(&self.probe_interval_ms) {
            return refuse("failover.probe_interval_secs", "must be between 0.1 and 60");
        }
        if self.ttl_ms > MAX_MS {
            return refuse("failover.timeout_secs", "must be at most 3600");
        }
        if self.ttl_ms < 3 * self.probe_interval_ms {
            return refuse(
                "failover.timeout_secs",
                format!(
                    "must be at least 3 × failover.probe_interval_secs ({} s): the primary stops \
                     accepting writes 2 probe intervals before the TTL runs out",
                    3.0 * secs(self.probe_interval_ms)
                ),
            );
        }
        if !(1..=MAX_MS / 1000).contains(&self.loop_interval_secs) {
            return refuse(
                "replication.loop_interval_secs",
                "must be between 1 and 3600",
            );
        }
        if !(1..=MAX_MS / 1000).contains(&self.sync_degrade_after_secs) {
            return refuse(
                "replication.sync_degrade_after_secs",
                "must be between 1 and 3600",
            );
        }
        // A primary cut off from every member keeps acknowledging writes
        // for up to TTL - 2 probe intervals after its last renewal, and its
        // standby may vanish at that same moment. Degrading to
        // asynchronous commits before the lease ran out would acknowledge
        // writes the standby never got, and the standby takes over once
        // the TTL has passed. So the degrade must come after the TTL.
        // (Strict mode never degrades.)
        if degrade_rule
            && !self.synchronous_strict
            && self.sync_degrade_after_secs.saturating_mul(1000) <= self.ttl_ms
        {
            return refuse(
                "replication.sync_degrade_after_secs",
                format!(
                    "must be longer than failover.timeout_secs ({} s): a primary cut off from \
                     every member must lose its lease and stop before it degrades to \
                     asynchronous commits, or the standby takes over without writes the primary \
                     acknowledged",
                    secs(self.ttl_ms)
                ),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn defaults() -> DynamicConfig {
        DynamicConfig {
            ttl_ms: 5000,
            probe_interval_ms: 1000,
            loop_interval_secs: 5,
            sync_degrade_after_secs: 10,
            synchronous_strict: false,
            max_lag_on_failover_bytes: 16 << 20,
        }
    }

    #[test]
    fn the_defaults_keep_the_timing_argument() {
        assert_eq!(defaults().check(), Ok(()));
    }

    #[test]
    fn a_degrade_before_the_ttl_is_refused_unless_strict_or_nothing_fails_over() {
        let mut c = defaults();
        c.ttl_ms = 30_000;
        let e = c.check().unwrap_err();
        assert_eq!(e.key, "replication.sync_degrade_after_secs");
        assert!(e.reason.contains("30 s"), "{e}");
        assert_eq!(c.check_rules(false), Ok(()));
        c.synchronous_strict = true;
        assert_eq!(c.check(), Ok(()));
        // Equal is not enough: the degrade must come after the TTL.
        let mut c = defaults();
        c.sync_degrade_after_secs = 5;
        assert!(c.check().is_err());
    }

    #[test]
    fn a_ttl_shorter_than_three_probe_intervals_is_refused() {
        let mut c = defaults();
        c.probe_interval_ms = 2000;
        let e = c.check().unwrap_err();
        assert_eq!(e.key, "failover.timeout_secs");
        assert!(e
            .to_string()
            .starts_with("failover.timeout_secs: must be at least 3 ×"));
        c.ttl_ms = 6000;
        c.sync_degrade_after_secs = 7;
        assert_eq!(c.check(), Ok(()));
    }

    #[test]
    fn values_out_of_range_are_refused_by_name() {
        for (f, key) in [
            (
                (|c: &mut DynamicConfig| c.probe_interval_ms = 50) as fn(&mut DynamicConfig),
                "failover.probe_interval_secs",
            ),
            (
                |c| c.probe_interval_ms = 61_000,
                "failover.probe_interval_secs",
            ),
            (|c| c.ttl_ms = 3_600_001, "failover.timeout_secs"),
            (
                |c| c.loop_interval_secs = 0,
                "replication.loop_interval_secs",
            ),
            (
                |c| c.loop_interval_secs = 3601,
                "replication.loop_interval_secs",
            ),
            (
                |c| c.sync_degrade_after_secs = u64::MAX,
                "replication.sync_degrade_after_secs",
            ),
        ] {
            let mut c = defaults();
            f(&mut c);
            assert_eq!(c.check().unwrap_err().key, key, "{c:?}");
        }
    }
}
