//! dns-sync: authoritative DNS for the cluster zone, built from the
//! database, so that `db.<zone>` follows the primary with no human in the loop.
//!
//! - [`zone`]: the records, built whole from the registry and cluster state;
//! - [`server`]: answering queries (hickory-server does the wire protocol);
//! - [`refresh`]: polling the database and swapping zones;
//! - this module: wiring, admin API, metrics.

mod api;
pub mod config;
pub mod metrics;
pub mod names;
pub mod refresh;
pub mod server;
pub mod udp;
pub mod zone;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_server::server::Server;
use sidecar_kit::{Lifecycle, Metrics};

use api::Api;
pub use api::State;
pub use config::Config;
use server::Handler;

/// One UDP socket per core on the same address (SO_REUSEPORT): the kernel
/// spreads queries over them, so receiving is not one task's bottleneck.
fn udp_sockets(addr: SocketAddr) -> anyhow::Result<Vec<tokio::net::UdpSocket>> {
    use socket2::{Domain, Protocol, Socket, Type};
    let n = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 8);
    (0..n)
        .map(|_| {
            let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
            s.set_reuse_port(true)?;
            s.set_nonblocking(true)?;
            s.bind(&addr.into())?;
            tokio::net::UdpSocket::from_std(s.into())
        })
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(|e| anyhow::anyhow!("cannot bind DNS (UDP) to {addr}: {e}"))
}

/// Runs dns-sync until `lifecycle` shuts down.
pub async fn run(config: Config, lifecycle: Lifecycle) -> anyhow::Result<()> {
    if config.dns.zone.to_string().ends_with(".local") {
        tracing::warn!(
            zone = %config.dns.zone,
            "`.local` is reserved for multicast DNS (RFC 6762): hosts with nss-mdns will not ask this server; prefer aurora.internal"
        );
    }
    let metrics = Metrics::new("dns-sync")?;
    let refresh_metrics = metrics::RefreshMetrics::new(&metrics)?;
    let metrics::ServeMetrics {
        queries,
        cache_hits,
    } = metrics::ServeMetrics::new(&metrics)?;
    let state = Arc::new(State::default());

    // Bind before anything else so a port clash fails the start loudly.
    let tcp = tokio::net::TcpListener::bind(config.dns.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot bind DNS (TCP) to {}: {e}", config.dns.listen))?;
    let addr = tcp.local_addr()?;
    let udp = udp_sockets(addr)?;
    if let Ok(mut g) = state.dns_addr.lock() {
        *g = Some(addr);
    }
    let handler = Handler {
        zone: state.zone.clone(),
        axfr_allow: config.dns.axfr_allow.clone(),
        queries: server::QueryCounters::new(&queries),
        cache_hits,
    };
    // UDP: our own loops (see `udp`); TCP and AXFR: hickory's server.
    let udp_stop = tokio_util::sync::CancellationToken::new();
    let mut udp_tasks = tokio::task::JoinSet::new();
    for socket in udp {
        udp_tasks.spawn(udp::serve(
            Arc::new(socket),
            handler.clone(),
            udp_stop.clone(),
        ));
    }
    let mut dns = Server::new(handler);
    dns.register_listener(tcp, Duration::from_secs(config.dns.tcp_timeout_secs), 64);
    tracing::info!(%addr, zone = %config.dns.zone, "DNS listening (UDP and TCP)");

    let api = Arc::new(Api {
        state: state.clone(),
        zone_name: config.dns.zone.to_string(),
        // Three refreshes, each allowed its deadline (refresh.rs).
        stale_after: 3
            * (Duration::from_secs(config.dns.refresh_secs)
                + Duration::from_secs(config.database.connect_timeout_secs + 5)),
    });
    let work = {
        let lifecycle = lifecycle.clone();
        let config = config.clone();
        async move {
            refresh::refresh_loop(&config, &state, &refresh_metrics, &lifecycle).await;
            udp_stop.cancel();
            while udp_tasks.join_next().await.is_some() {}
            if let Err(e) = dns.shutdown_gracefully().await {
                tracing::warn!(error = %e, "DNS server did not stop cleanly");
            }
            Ok(())
        }
    };
    sidecar_kit::sidecar::serve(&config.admin, api, metrics, lifecycle, work).await
}
