//! Free ports for servers started by tests.
//!
//! Ports come from 15000–32767, below Linux's default ephemeral range, so an
//! outgoing connection of another test cannot grab a port between our check
//! and the server's bind. A port handed out once is never handed out again by
//! this process.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::sync::Mutex;

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
            return Ok(port);
        }
    }
    Err(Error::Other(format!("no free port found on {ip}")))
}

use sidecar_kit::telemetry::random_u64 as random;

#[cfg(test)]
mod tests {
    #[test]
    fn ports_are_distinct() {
        let a = super::free_port().unwrap();
        let b = super::free_port().unwrap();
        assert_ne!(a, b);
    }
}
