//! The timing and sync policy in force on this member (docs/repl-manager.md,
//! "Dynamic config"): the fleet's committed dynamic config where the fleet
//! has a Raft group and one was committed, else this member's config file.
//! The file's values are the seed: the first primary that holds the leader
//! key commits them, and from then on `PATCH /config` changes them for
//! every member at once.
//!
//! Pure: turning the file into values, a patch into a new config, and
//! both into the `/config` answer.

use std::time::Duration;

use aurora_api::repl::{ConfigPatch, FailoverTiming, FleetConfig, ReplicationPolicy};
use fleet_state::{DynamicConfig, Refusal};

use crate::config::Config;

/// The values in force, and where they come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tuning {
    pub values: DynamicConfig,
    /// The log index of the committed config; `None`: this member's file.
    pub revision: Option<u64>,
}

/// Seconds (a config file's float) to whole milliseconds; `None` for a
/// value that is not a finite, non-negative number.
fn millis(secs: f64) -> Option<u64> {
    (secs.is_finite() && secs >= 0.0 && secs <= u64::MAX as f64 / 1000.0)
        .then(|| (secs * 1000.0).round() as u64)
}

fn secs(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

/// The values of `cfg`'s file. Non-finite seconds become 0, which every
/// rule refuses (the file's own validation names them first).
pub fn from_file(cfg: &Config) -> DynamicConfig {
    DynamicConfig {
        ttl_ms: millis(cfg.failover.timeout_secs).unwrap_or(0),
        probe_interval_ms: millis(cfg.failover.probe_interval_secs).unwrap_or(0),
        loop_interval_secs: cfg.replication.loop_interval_secs,
        sync_degrade_after_secs: cfg.replication.sync_degrade_after_secs,
        synchronous_strict: cfg.replication.synchronous_strict,
        max_lag_on_failover_bytes: cfg.replication.max_lag_on_failover_bytes,
    }
}

impl Tuning {
    pub fn file(cfg: &Config) -> Tuning {
        Tuning {
            values: from_file(cfg),
            revision: None,
        }
    }

    /// How often the primary renews and every member probes.
    pub fn probe_interval(&self) -> Duration {
        Duration::from_millis(self.values.probe_interval_ms)
    }
    pub fn probe_interval_secs(&self) -> f64 {
        secs(self.values.probe_interval_ms)
    }
    /// The TTL: how long a key's revision must stand before a candidate
    /// takes it, and a member's promise not to vote lasts.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.values.ttl_ms)
    }
    /// How long a primary keeps accepting writes after the request that
    /// renewed it: two probe intervals short of the TTL.
    pub fn lease(&self) -> Duration {
        self.timeout()
            .saturating_sub(self.probe_interval().saturating_mul(2))
    }
    pub fn loop_interval(&self) -> Duration {
        Duration::from_secs(self.values.loop_interval_secs)
    }
    pub fn sync_degrade_after(&self) -> Duration {
        Duration::from_secs(self.values.sync_degrade_after_secs)
    }
    pub fn strict(&self) -> bool {
        self.values.synchronous_strict
    }
    pub fn max_lag_bytes(&self) -> u64 {
        self.values.max_lag_on_failover_bytes
    }

    /// The `/config` answer; `file`: this member's own file's values.
    pub fn describe(&self, file: &DynamicConfig, pause: bool) -> FleetConfig {
        let v = &self.values;
        let mut differs = Vec::new();
        for (key, same) in [
            ("failover.timeout_secs", v.ttl_ms == file.ttl_ms),
            (
                "failover.probe_interval_secs",
                v.probe_interval_ms == file.probe_interval_ms,
            ),
            (
                "replication.loop_interval_secs",
                v.loop_interval_secs == file.loop_interval_secs,
            ),
            (
                "replication.sync_degrade_after_secs",
                v.sync_degrade_after_secs == file.sync_degrade_after_secs,
            ),
            (
                "replication.synchronous_strict",
                v.synchronous_strict == file.synchronous_strict,
            ),
            (
                "replication.max_lag_on_failover_bytes",
                v.max_lag_on_failover_bytes == file.max_lag_on_failover_bytes,
            ),
        ] {
            if !same {
                differs.push(key.to_string());
            }
        }
        FleetConfig {
            source: if self.revision.is_some() {
                "fleet"
            } else {
                "file"
            }
            .into(),
            revision: self.revision.unwrap_or(0),
            pause,
            failover: FailoverTiming {
                timeout_secs: secs(v.ttl_ms),
                probe_interval_secs: secs(v.probe_interval_ms),
            },
            replication: ReplicationPolicy {
                loop_interval_secs: v.loop_interval_secs,
                sync_degrade_after_secs: v.sync_degrade_after_secs,
                synchronous_strict: v.synchronous_strict,
                max_lag_on_failover_bytes: v.max_lag_on_failover_bytes,
            },
            file_differs: differs,
        }
    }
}

/// `current` with `patch`'s keys changed, if the result keeps every rule
/// ([`DynamicConfig::check`]); the refusal names the key and the rule.
pub fn patched(current: &DynamicConfig, patch: &ConfigPatch) -> Result<DynamicConfig, Refusal> {
    let mut next = current.clone();
    let ms = |key: &'static str, v: f64| {
        millis(v).ok_or(Refusal {
            key,
            reason: format!("{v} is not a number of seconds"),
        })
    };
    if let Some(f) = &patch.failover {
        if let Some(v) = f.timeout_secs {
            next.ttl_ms = ms("failover.timeout_secs", v)?;
        }
        if let Some(v) = f.probe_interval_secs {
            next.probe_interval_ms = ms("failover.probe_interval_secs", v)?;
        }
    }
    if let Some(r) = &patch.replication {
        if let Some(v) = r.loop_interval_secs {
            next.loop_interval_secs = v;
        }
        if let Some(v) = r.sync_degrade_after_secs {
            next.sync_degrade_after_secs = v;
        }
        if let Some(v) = r.synchronous_strict {
            next.synchronous_strict = v;
        }
        if let Some(v) = r.max_lag_on_failover_bytes {
            next.max_lag_on_failover_bytes = v;
        }
    }
    next.check()?;
    Ok(next)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn current() -> DynamicConfig {
        from_file(&Config::default())
    }

    fn patch(keys: &[&str]) -> ConfigPatch {
        let mut p = ConfigPatch::default();
        for k in keys {
            p.set(k).unwrap();
        }
        p
    }

    #[test]
    fn the_file_defaults_are_a_valid_seed() {
        let c = current();
        assert_eq!((c.ttl_ms, c.probe_interval_ms), (5000, 1000));
        assert_eq!(c.check(), Ok(()));
    }

    #[test]
    fn a_patch_changes_only_its_keys() {
        let next = patched(
            &current(),
            &patch(&[
                "failover.timeout_secs=3",
                "failover.probe_interval_secs=0.5",
                "replication.max_lag_on_failover_bytes=1024",
            ]),
        )
        .unwrap();
        assert_eq!(next.ttl_ms, 3000);
        assert_eq!(next.probe_interval_ms, 500);
        assert_eq!(next.max_lag_on_failover_bytes, 1024);
        assert_eq!(
            next.sync_degrade_after_secs,
            current().sync_degrade_after_secs
        );
    }

    #[test]
    fn a_patch_that_breaks_the_timing_argument_is_refused_by_key() {
        // #15 finding 4: a TTL of 30 s with the degrade after 10 s.
        let e = patched(&current(), &patch(&["failover.timeout_secs=30"])).unwrap_err();
        assert_eq!(e.key, "replication.sync_degrade_after_secs");
        // Both at once keep it.
        let ok = patched(
            &current(),
            &patch(&[
                "failover.timeout_secs=30",
                "replication.sync_degrade_after_secs=45",
            ]),
        );
        assert!(ok.is_ok());
        let e = patched(&current(), &patch(&["failover.probe_interval_secs=2"])).unwrap_err();
        assert_eq!(e.key, "failover.timeout_secs");
        for bad in [f64::NAN, -4.0, f64::INFINITY] {
            let p = ConfigPatch {
                failover: Some(aurora_api::repl::FailoverTimingPatch {
                    timeout_secs: Some(bad),
                    probe_interval_secs: None,
                }),
                ..Default::default()
            };
            assert_eq!(
                patched(&current(), &p).unwrap_err().key,
                "failover.timeout_secs"
            );
        }
    }

    #[test]
    fn assignments_name_what_was_wrong() {
        let mut p = ConfigPatch::default();
        assert!(p
            .set("failover.ttl=3")
            .unwrap_err()
            .contains("not a fleet config key"));
        assert!(p
            .set("failover.timeout_secs")
            .unwrap_err()
            .contains("KEY=VALUE"));
        assert!(p
            .set("replication.loop_interval_secs=1.5")
            .unwrap_err()
            .starts_with("replication.loop_interval_secs: \"1.5\" is not"));
        assert!(p.set("pause=yes").is_err());
        assert!(p.is_empty());
    }

    #[test]
    fn the_answer_says_where_the_values_come_from_and_what_the_file_says() {
        let file = current();
        let t = Tuning {
            values: patched(&file, &patch(&["failover.timeout_secs=4"])).unwrap(),
            revision: Some(12),
        };
        let a = t.describe(&file, true);
        assert_eq!(
            (a.source.as_str(), a.revision, a.pause),
            ("fleet", 12, true)
        );
        assert_eq!(a.failover.timeout_secs, 4.0);
        assert_eq!(a.file_differs, vec!["failover.timeout_secs".to_string()]);
        let a = Tuning {
            values: file.clone(),
            revision: None,
        }
        .describe(&file, false);
        assert_eq!((a.source.as_str(), a.revision), ("file", 0));
        assert!(a.file_differs.is_empty());
    }
}
