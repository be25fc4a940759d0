use thiserror::Error;

#[derive(Debug, Error)]
pub enum DbError {
    #[error("cannot connect to PostgreSQL at {target}: {reason}")]
    Connect { target: String, reason: String },
    #[error("PostgreSQL at {target} did not answer within {secs} s")]
    ConnectTimeout { target: String, secs: u64 },
    #[error("{}", query_text(.0))]
    Query(#[from] tokio_postgres::Error),
    #[error("this server is a standby (read-only); the operation needs the primary")]
    NotPrimary,
    #[error("migration {version} ({name}) was changed after it was applied (checksum {applied} in the database, {known} in this build)")]
    MigrationChanged {
        version: i32,
        name: String,
        applied: String,
        known: String,
    },
    #[error("the database schema is at version {found}, newer than this build knows ({known}); upgrade this binary")]
    SchemaTooNew { found: i32, known: i32 },
    #[error("invalid {what}: {reason}")]
    Invalid { what: &'static str, reason: String },
    #[error("{0}")]
    Conflict(String),
    #[error("stale epoch {offered}: the cluster is already at epoch {current}")]
    StaleEpoch { offered: i64, current: i64 },
}

/// tokio-postgres prints a server error as just "db error"; the server's
/// message (and detail) is what an operator needs.
fn query_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => match db.detail() {
            Some(detail) => format!("{} ({detail})", db.message()),
            None => db.message().to_string(),
        },
        None => e.to_string(),
    }
}

impl DbError {
    pub(crate) fn invalid(what: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            what,
            reason: reason.into(),
        }
    }

    /// True when the error means "the server went away", so callers can
    /// reconnect rather than give up.
    pub fn is_connection_lost(&self) -> bool {
        match self {
            DbError::Connect { .. } | DbError::ConnectTimeout { .. } => true,
            DbError::Query(e) => e.is_closed() || e.code().is_none(),
            _ => false,
        }
    }
}
