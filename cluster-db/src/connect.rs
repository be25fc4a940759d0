//! Connections: to the local server (reads) and to whichever server is the
//! writable primary (writes).

use std::time::Duration;

use tokio_postgres::config::TargetSessionAttrs;
use tokio_postgres::{Client, Config, NoTls};

use crate::error::DbError;

/// A connection target with a printable label (hosts and ports, never the
/// password).
#[derive(Clone, Debug)]
pub struct DbTarget {
    pub config: Config,
    pub label: String,
}

impl DbTarget {
    /// Parses a libpq-style DSN (`host=... port=... user=...` or a URL).
    pub fn parse(dsn: &str) -> Result<Self, DbError> {
        let config: Config = dsn
            .parse()
            .map_err(|e| DbError::invalid("connection string", format!("{e}")))?;
        Ok(Self::from_config(config))
    }

    pub fn from_config(config: Config) -> Self {
        let hosts: Vec<String> = config
            .get_hosts()
            .iter()
            .zip(ports_for(&config))
            .map(|(h, p)| match h {
                tokio_postgres::config::Host::Tcp(h) => format!("{h}:{p}"),
                tokio_postgres::config::Host::Unix(path) => format!("{}:{p}", path.display()),
            })
            .collect();
        let label = format!(
            "{} (db {}, user {})",
            hosts.join(","),
            config.get_dbname().unwrap_or("-"),
            config.get_user().unwrap_or("-")
        );
        Self { config, label }
    }
}

fn ports_for(config: &Config) -> Vec<u16> {
    let ports = config.get_ports();
    let n = config.get_hosts().len();
    match ports.len() {
        0 => vec![5432; n],
        1 => vec![ports[0]; n],
        _ => ports.to_vec(),
    }
}

/// Builds the write target: every candidate primary, first one that accepts
/// writes wins. Candidates are usually the lead and the backup; after a
/// failover the backup is the one that answers read-write, with no config
/// change anywhere.
pub fn write_target(
    hosts: &[(String, u16)],
    user: &str,
    password: Option<&str>,
    dbname: &str,
    connect_timeout: Duration,
) -> DbTarget {
    let mut config = Config::new();
    for (host, port) in hosts {
        config.host(host).port(*port);
    }
    config
        .user(user)
        .dbname(dbname)
        .connect_timeout(connect_timeout)
        .target_session_attrs(TargetSessionAttrs::ReadWrite)
        .application_name("aurora");
    if let Some(p) = password {
        config.password(p);
    }
    DbTarget::from_config(config)
}

/// Connects, spawning the connection's I/O task on the current runtime.
/// The whole attempt, including every host of a multi-host target, is
/// bounded by `timeout`.
pub async fn connect(target: &DbTarget, timeout: Duration) -> Result<Client, DbError> {
    let config = with_dead_peer_detection(&target.config);
    let attempt = config.connect(NoTls);
    let (client, connection) = tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| DbError::ConnectTimeout {
            target: target.label.clone(),
            secs: timeout.as_secs().max(1),
        })?
        .map_err(|e| DbError::Connect {
            target: target.label.clone(),
            reason: error_chain(&e),
        })?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "database connection closed");
        }
    });
    Ok(client)
}

/// A peer that vanishes (a dead VPN host) sends no RST; without these, a
/// query to it waits for the kernel's retransmission timeout, about 15
/// minutes. Unacknowledged data fails the connection after
/// [`TCP_USER_TIMEOUT`], an idle one after about 11 s of unanswered
/// keepalives. A DSN that sets its own values keeps them.
pub fn with_dead_peer_detection(config: &Config) -> Config {
    let mut c = config.clone();
    if c.get_tcp_user_timeout().is_none() {
        c.tcp_user_timeout(TCP_USER_TIMEOUT);
    }
    if c.get_keepalives_retries().is_none() {
        c.keepalives(true)
            .keepalives_idle(Duration::from_secs(5))
            .keepalives_interval(Duration::from_secs(2))
            .keepalives_retries(3);
    }
    c
}

/// How long sent data may stay unacknowledged before the connection fails.
pub const TCP_USER_TIMEOUT: Duration = Duration::from_secs(10);

fn error_chain(e: &tokio_postgres::Error) -> String {
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let s_text = s.to_string();
        if !msg.contains(&s_text) {
            msg = format!("{msg}: {s_text}");
        }
        source = s.source();
    }
    msg
}

/// `true` when the server is a writable primary.
pub async fn is_primary(client: &Client) -> Result<bool, DbError> {
    let row = client
        .query_one("SELECT NOT pg_is_in_recovery()", &[])
        .await?;
    Ok(row.get(0))
}
