//! Free ports for servers started by tests.
//!
//! Ports come from 15000–32767, below Linux's default ephemeral range, so an
//! outgoing connection of another test cannot grab a port between our check
//! and the server's bind. A port handed out once is never handed out again by
//! this process, nor by another one for three hours: nextest runs every test
//! in its own process, and two of them once picked the same free port between
//! one's check and its server's bind (CI: PostgreSQL and a container's
//! published port both failed with "Address already in use"). The claims
//! are empty files under `$TMPDIR/aurora-ports/`.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::sync::Mutex;
use std::time::Duration;

use crate::error::Error;

static TAKEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A port free for both TCP and UDP on 127.0.0.1.
pub fn free_port() -> Result<u16, Error> {
    free_port_on(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

/// A port free for both TCP and UDP on `ip` (UDP too, because DNS servers
/// bind both).
pub fn free_port_on(ip: IpAddr) -> Result<u16, Error> {
    let mut taken = TAKEN.lock().unwrap_or_else(|p| p.into_inner());
    let taken = taken.get_or_insert_with(HashSet::new);
    for _ in 0..200 {
        let port = 15000 + (random() % 17768) as u16;
        if taken.contains(&port) {
            continue;
        }
        let addr = SocketAddr::new(ip, port);
        if TcpListener::bind(addr).is_ok() && UdpSocket::bind(addr).is_ok() {
            taken.insert(port);
            if claim(port) {
                return Ok(port);
            }
        }
    }
    Err(Error::Other(format!("no free port found on {ip}")))
}

use sidecar_kit::telemetry::random_u64 as random;

/// How long another process's claim on a port holds.
const CLAIM_HOLDS: Duration = Duration::from_secs(3 * 3600);

/// Claims `port` for this process against every other one on the machine;
/// `false` when another process claimed it less than [`CLAIM_HOLDS`] ago.
/// Where no claim can be written (a read-only temp dir), the bind check
/// alone decides, as before.
fn claim(port: u16) -> bool {
    let dir = std::env::temp_dir().join("aurora-ports");
    if std::fs::create_dir_all(&dir).is_err() {
        return true;
    }
    let path = dir.join(port.to_string());
    let create = || {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
    };
    match create() {
        Ok(_) => true,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let stale = std::fs::metadata(&path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > CLAIM_HOLDS);
            // (Two processes reclaiming the same stale claim at the same
            // moment could both win; the bind check still stands behind it.)
            stale && std::fs::remove_file(&path).is_ok() && create().is_ok()
        }
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_port_claimed_by_another_process_is_not_handed_out() {
        let port = super::free_port().unwrap();
        // Another process's view: this process's claim file exists.
        assert!(!super::claim(port));
        let dir = std::env::temp_dir().join("aurora-ports");
        assert!(dir.join(port.to_string()).exists());
    }

    #[test]
    fn ports_are_distinct() {
        let a = super::free_port().unwrap();
        let b = super::free_port().unwrap();
        assert_ne!(a, b);
    }
}
