//! What the local server says about itself: role, positions, its standbys,
//! its slots. One function per question, each a single round trip.

pub use aurora_api::repl::{Receiver, ServerState, Slot, StandbyConn, TimelineSwitch};
use tokio_postgres::Client;

use crate::lsn::Lsn;

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("{0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("unexpected value from PostgreSQL: {0}")]
    Parse(String),
}

fn lsn(v: Option<String>) -> Result<Option<Lsn>, ProbeError> {
    v.map(|s| s.parse().map_err(ProbeError::Parse)).transpose()
}

pub async fn server_state(client: &Client) -> Result<ServerState, ProbeError> {
    let row = client
        .query_one(
            "SELECT pg_is_in_recovery(),
                    (SELECT system_identifier::text FROM pg_control_system()),
                    CASE WHEN pg_is_in_recovery() THEN NULL
                         ELSE substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8) END,
                    coalesce((SELECT received_tli FROM pg_stat_wal_receiver),
                             (SELECT timeline_id FROM pg_control_checkpoint())),
                    CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END,
                    pg_last_wal_receive_lsn()::text,
                    pg_last_wal_replay_lsn()::text,
                    extract(epoch FROM pg_last_xact_replay_timestamp())::float8,
                    current_setting('synchronous_standby_names'),
                    ARRAY(SELECT name FROM pg_settings WHERE pending_restart ORDER BY name),
                    extract(epoch FROM pg_postmaster_start_time())::float8,
                    current_setting('server_version_num')::int4,
                    CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused() ELSE false END",
            &[],
        )
        .await?;
    let in_recovery: bool = row.get(0);
    let walfile_tli: Option<String> = row.get(2);
    let recovery_tli: Option<i32> = row.get(3);
    let timeline = match walfile_tli {
        Some(hex) => u32::from_str_radix(&hex, 16)
            .map_err(|_| ProbeError::Parse(format!("timeline {hex:?}")))?,
        None => recovery_tli.unwrap_or(0).max(0) as u32,
    };
    Ok(ServerState {
        in_recovery,
        system_identifier: row.get(1),
        timeline,
        current_lsn: lsn(row.get(4))?,
        receive_lsn: lsn(row.get(5))?,
        replay_lsn: lsn(row.get(6))?,
        last_replay_at: row.get(7),
        synchronous_standby_names: row.get(8),
        pending_restart: row.get(9),
        postmaster_start_time: row.get(10),
        server_version_num: row.get(11),
        replay_paused: row.get(12),
    })
}

/// The server's timeline history: the newest `.history` file in `pg_wal`
/// (each holds every switch before it). Empty on timeline 1.
pub async fn timeline_history(client: &Client) -> Result<Vec<TimelineSwitch>, ProbeError> {
    let row = client
        .query_opt(
            "SELECT pg_read_file('pg_wal/' || name)
               FROM pg_ls_waldir()
              WHERE name ~ '^[0-9A-F]{8}\\.history$'
              ORDER BY name DESC
              LIMIT 1",
            &[],
        )
        .await?;
    match row {
        None => Ok(Vec::new()),
        Some(r) => parse_timeline_history(&r.get::<_, String>(0)).map_err(ProbeError::Parse),
    }
}

/// A timeline history file: `parent-timeline <TAB> switch-LSN <TAB>
/// reason` per line; comments (`#`) and blank lines skipped.
pub fn parse_timeline_history(text: &str) -> Result<Vec<TimelineSwitch>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.splitn(3, char::is_whitespace);
        let bad = || format!("timeline history line {}: {line:?}", n + 1);
        let timeline = fields.next().and_then(|t| t.parse().ok()).ok_or_else(bad)?;
        let switch_lsn = fields
            .next()
            .and_then(|l| l.trim().parse().ok())
            .ok_or_else(bad)?;
        let reason = fields.next().unwrap_or("").trim().to_string();
        out.push(TimelineSwitch {
            timeline,
            switch_lsn,
            reason,
        });
    }
    Ok(out)
}

pub async fn receiver(client: &Client) -> Result<Option<Receiver>, ProbeError> {
    let row = client
        .query_opt(
            "SELECT status, sender_host, sender_port, slot_name, received_tli
               FROM pg_stat_wal_receiver",
            &[],
        )
        .await?;
    Ok(row.map(|r| Receiver {
        status: r.get(0),
        sender_host: r.get(1),
        sender_port: r.get(2),
        slot_name: r.get(3),
        timeline: r.get(4),
    }))
}

pub async fn standbys(client: &Client) -> Result<Vec<StandbyConn>, ProbeError> {
    let rows = client
        .query(
            "SELECT application_name, client_addr::text, state, sync_state,
                    sent_lsn::text, flush_lsn::text, replay_lsn::text,
                    pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::int8,
                    extract(epoch FROM replay_lag)::float8,
                    extract(epoch FROM clock_timestamp() - reply_time)::float8
               FROM pg_stat_replication
              ORDER BY application_name",
            &[],
        )
        .await?;
    rows.into_iter()
        .map(|r| {
            Ok(StandbyConn {
                name: r.get(0),
                client_addr: r.get(1),
                state: r.get(2),
                sync_state: r.get(3),
                sent_lsn: lsn(r.get(4))?,
                flush_lsn: lsn(r.get(5))?,
                replay_lsn: lsn(r.get(6))?,
                lag_bytes: r.get(7),
                replay_lag_secs: r.get(8),
                reply_age_secs: r.get(9),
            })
        })
        .collect()
}

pub async fn slots(client: &Client) -> Result<Vec<Slot>, ProbeError> {
    let rows = client
        .query(
            "SELECT slot_name::text, slot_type, active, restart_lsn::text, wal_status,
                    pg_wal_lsn_diff(
                        CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()
                             ELSE pg_current_wal_lsn() END,
                        restart_lsn)::int8
               FROM pg_replication_slots
              ORDER BY slot_name",
            &[],
        )
        .await?;
    rows.into_iter()
        .map(|r| {
            Ok(Slot {
                name: r.get(0),
                slot_type: r.get(1),
                active: r.get(2),
                restart_lsn: lsn(r.get(3))?,
                wal_status: r.get(4),
                retained_bytes: r.get(5),
            })
        })
        .collect()
}

/// The primary's insert position, for lag computed against the primary
/// itself rather than a cached value.
pub async fn current_lsn(client: &Client) -> Result<Lsn, ProbeError> {
    let row = client
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await?;
    let s: String = row.get(0);
    s.parse().map_err(ProbeError::Parse)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_timeline_history_file_reads_as_its_switches() {
        let text = "1\t0/3000060\tno recovery target specified\n\n\
                    # a comment\n2\t0/5A0001F8\tno recovery target specified\n";
        let got = parse_timeline_history(text).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].timeline, 1);
        assert_eq!(got[0].switch_lsn, "0/3000060".parse().unwrap());
        assert_eq!(got[1].timeline, 2);
        assert_eq!(got[1].reason, "no recovery target specified");
        assert!(parse_timeline_history("1\tnot-an-lsn\tx\n")
            .unwrap_err()
            .contains("line 1"));
        assert!(parse_timeline_history("").unwrap().is_empty());
    }
}
