//! A sidecar's lifecycle: starting → ready → draining → stopped.
//!
//! One [`Lifecycle`] value is shared (cheaply cloned) by the sidecar's work
//! loops, its admin server and the signal handler. Tests create one, hand it
//! to the sidecar's `run`, learn the admin address from it and call
//! [`Lifecycle::shutdown`] instead of sending a signal.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures::StreamExt;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

#[derive(Clone, Debug)]
pub struct Lifecycle {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    shutdown: CancellationToken,
    ready: AtomicBool,
    admin_addr: watch::Sender<Option<SocketAddr>>,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self::new()
    }
}

impl Lifecycle {
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                shutdown: CancellationToken::new(),
                ready: AtomicBool::new(false),
                admin_addr: watch::channel(None).0,
            }),
        }
    }

    /// Asks the sidecar to stop: readiness turns 503 at once, work loops see
    /// [`Lifecycle::cancelled`] complete and wind down.
    pub fn shutdown(&self) {
        self.inner.shutdown.cancel();
    }

    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutdown.is_cancelled()
    }

    /// Completes once shutdown has been requested.
    pub async fn cancelled(&self) {
        self.inner.shutdown.cancelled().await
    }

    /// A token that is cancelled with the lifecycle, for APIs that want one.
    pub fn token(&self) -> CancellationToken {
        self.inner.shutdown.clone()
    }

    /// Marks the sidecar ready (its first real unit of work is done) or not
    /// (it lost what it needs to serve).
    pub fn set_ready(&self, ready: bool) {
        self.inner.ready.store(ready, Ordering::SeqCst);
    }

    /// Ready means: the sidecar said so and it is not draining.
    pub fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::SeqCst) && !self.is_shutting_down()
    }

    /// Why the sidecar is not ready, if it is not.
    pub fn not_ready_reason(&self) -> Option<&'static str> {
        if self.is_shutting_down() {
            Some("draining: shutting down")
        } else if !self.inner.ready.load(Ordering::SeqCst) {
            Some("starting: first unit of work not done yet")
        } else {
            None
        }
    }

    pub(crate) fn set_admin_addr(&self, addr: SocketAddr) {
        self.inner.admin_addr.send_replace(Some(addr));
    }

    /// The admin server's bound address (useful with port 0); waits until the
    /// server has bound. Returns `None` if the sidecar shut down before that.
    pub async fn admin_addr(&self) -> Option<SocketAddr> {
        let mut rx = self.inner.admin_addr.subscribe();
        loop {
            if let Some(addr) = *rx.borrow_and_update() {
                return Some(addr);
            }
            tokio::select! {
                changed = rx.changed() => if changed.is_err() { return None },
                _ = self.cancelled() => return *rx.borrow(),
            }
        }
    }
}

/// Turns SIGTERM/SIGINT into a graceful shutdown of `lifecycle`. A second
/// signal while draining exits the process at once (status 130), for the
/// operator who really means it.
pub fn install_signal_handlers(lifecycle: Lifecycle) -> std::io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook_tokio::Signals::new([SIGTERM, SIGINT])?;
    tokio::spawn(async move {
        let mut seen = 0;
        while let Some(signal) = signals.next().await {
            seen += 1;
            if seen == 1 {
                tracing::info!(signal, "shutdown requested; draining");
                lifecycle.shutdown();
            } else {
                tracing::warn!(signal, "second signal; exiting immediately");
                std::process::exit(130);
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn readiness_follows_shutdown() {
        let lc = Lifecycle::new();
        assert!(!lc.is_ready());
        lc.set_ready(true);
        assert!(lc.is_ready());
        lc.shutdown();
        assert!(!lc.is_ready());
        assert_eq!(lc.not_ready_reason(), Some("draining: shutting down"));
        lc.cancelled().await;
    }

    #[tokio::test]
    async fn admin_addr_waits_for_bind() {
        let lc = Lifecycle::new();
        let waiter = tokio::spawn({
            let lc = lc.clone();
            async move { lc.admin_addr().await }
        });
        let addr: SocketAddr = "127.0.0.1:4242".parse().unwrap();
        lc.set_admin_addr(addr);
        assert_eq!(waiter.await.unwrap(), Some(addr));
    }
}
