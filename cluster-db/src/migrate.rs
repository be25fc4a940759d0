//! Versioned, idempotent migrations of schema `aurora`.
//!
//! Rules:
//! - migrations run only on a writable primary (standbys get them through
//!   replication); on a standby [`migrate`] returns [`DbError::NotPrimary`];
//! - all pending migrations apply in one transaction under an advisory lock,
//!   so two sidecars starting at once cannot interleave;
//! - a migration is never edited once released: the checksum of every
//!   applied migration is compared with this build's, and a mismatch stops
//!   the migrator rather than guess;
//! - a schema newer than this build is left alone (an old binary during a
//!   rolling update must not fight a new one).

use serde::Serialize;
use tokio_postgres::Client;

use crate::error::DbError;

pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Every migration this build knows, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "cluster_contract",
        sql: include_str!("../migrations/0001_cluster_contract.sql"),
    },
    Migration {
        version: 2,
        name: "replication_state",
        sql: include_str!("../migrations/0002_replication_state.sql"),
    },
    Migration {
        version: 3,
        name: "health_down_marks",
        sql: include_str!("../migrations/0003_health_down_marks.sql"),
    },
    Migration {
        version: 4,
        name: "join_tokens",
        sql: include_str!("../migrations/0004_join_tokens.sql"),
    },
];

/// Advisory lock key for the migrator ("aurora" in ASCII).
const MIGRATION_LOCK: i64 = 0x6175_726f_7261;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MigrationReport {
    /// Versions applied by this call.
    pub applied: Vec<i32>,
    /// The schema version after this call.
    pub version: i32,
}

/// FNV-1a 64 of the SQL text: detects an edited migration; not a security
/// measure (whoever can write the database can write the checksum too).
pub fn checksum(sql: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in sql.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Applies every pending migration. Safe to call on every start.
pub async fn migrate(client: &mut Client) -> Result<MigrationReport, DbError> {
    if !crate::connect::is_primary(client).await? {
        return Err(DbError::NotPrimary);
    }
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE SCHEMA IF NOT EXISTS aurora;
         CREATE TABLE IF NOT EXISTS aurora.schema_migrations (
             version    integer PRIMARY KEY,
             name       text NOT NULL,
             checksum   text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         );",
    )
    .await?;
    let rows = tx
        .query(
            "SELECT version, name, checksum FROM aurora.schema_migrations ORDER BY version",
            &[],
        )
        .await?;
    let known_max = MIGRATIONS.last().map(|m| m.version).unwrap_or(0);
    let mut current = 0;
    for row in &rows {
        let version: i32 = row.get(0);
        let name: String = row.get(1);
        let applied: String = row.get(2);
        current = current.max(version);
        if version > known_max {
            return Err(DbError::SchemaTooNew {
                found: version,
                known: known_max,
            });
        }
        if let Some(m) = MIGRATIONS.iter().find(|m| m.version == version) {
            let known = checksum(m.sql);
            if known != applied {
                return Err(DbError::MigrationChanged {
                    version,
                    name,
                    applied,
                    known,
                });
            }
        }
    }
    let mut applied = Vec::new();
    for m in MIGRATIONS.iter().filter(|m| m.version > current) {
        tracing::info!(version = m.version, name = m.name, "applying migration");
        tx.batch_execute(m.sql).await?;
        tx.execute(
            "INSERT INTO aurora.schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
            &[&m.version, &m.name, &checksum(m.sql)],
        )
        .await?;
        applied.push(m.version);
    }
    tx.commit().await?;
    Ok(MigrationReport {
        applied,
        version: current.max(known_max),
    })
}

/// The schema version of the server `client` talks to (0 when the schema
/// does not exist yet); works on standbys.
pub async fn schema_version(client: &Client) -> Result<i32, DbError> {
    let exists: bool = client
        .query_one(
            "SELECT to_regclass('aurora.schema_migrations') IS NOT NULL",
            &[],
        )
        .await?
        .get(0);
    if !exists {
        return Ok(0);
    }
    let row = client
        .query_one(
            "SELECT coalesce(max(version), 0) FROM aurora.schema_migrations",
            &[],
        )
        .await?;
    Ok(row.get(0))
}
