//! Logs (tracing) and metrics (a Prometheus registry) for a sidecar.
//!
//! Metric names follow the Prometheus conventions and the cluster contract:
//! `aurora_<sidecar>_<what>` with `_total` for counters and base units
//! (`_seconds`, `_bytes`). Labels are low-cardinality by rule: an object key,
//! a client address or a node-supplied string is never a label value.

use prometheus::core::Collector;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Version of the workspace, identical for every binary.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git commit the binaries were built from (`unknown` outside git).
pub const COMMIT: &str = env!("AURORA_COMMIT");

/// Seconds since the Unix epoch, for `*_timestamp_seconds` gauges.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// A cheap random number for jitter and test ports (never for secrets).
pub fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.write_u32(std::process::id());
    h.finish()
}

/// `VERSION (COMMIT)`, for `--version` outputs.
pub fn long_version() -> &'static str {
    concat!(env!("CARGO_PKG_VERSION"), " (", env!("AURORA_COMMIT"), ")")
}

/// openraft logs a warning and an error for every heartbeat to a member
/// that does not answer (several a second while a node is down), which
/// buries everything else; what matters reaches our logs through the
/// fleet-state calls that fail. Unless the filter names it, it is off.
fn quiet_dependencies(filter: EnvFilter) -> EnvFilter {
    if filter.to_string().contains("openraft") {
        return filter;
    }
    match "openraft=off".parse() {
        Ok(d) => filter.add_directive(d),
        Err(_) => filter,
    }
}

/// Installs the global tracing subscriber. `RUST_LOG`, when set, overrides
/// `log.filter`. Logs go to stderr so stdout stays clean for command output
/// (`--json`, `--check-config`). Calling it twice is harmless (tests do).
pub fn init_tracing(log: &LogConfig) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .filter(|f| !f.trim().is_empty())
        .and_then(|f| EnvFilter::try_new(f).ok())
        .or_else(|| EnvFilter::try_new(&log.filter).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let filter = quiet_dependencies(filter);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match log.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Pretty => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
    };
    // Err only means a subscriber is already installed (several sidecars in
    // one test process); the first one wins.
    let _ = result;
}

/// A sidecar's metrics registry. Every metric made through it is named
/// `aurora_<sidecar>_<name>`; the registry also carries `aurora_build_info`
/// and the standard `process_*` metrics.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    subsystem: String,
}

impl Metrics {
    /// `sidecar` is the binary name (`dns-sync`); dashes become underscores
    /// in metric names.
    pub fn new(sidecar: &str) -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let build_info = IntGaugeVec::new(
            Opts::new("build_info", "Build of this sidecar; always 1.").namespace("aurora"),
            &["version", "commit", "sidecar"],
        )?;
        build_info
            .with_label_values(&[VERSION, COMMIT, sidecar])
            .set(1);
        registry.register(Box::new(build_info))?;
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(Self {
            registry,
            subsystem: sidecar.replace('-', "_"),
        })
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    fn opts(&self, name: &str, help: &str) -> Opts {
        Opts::new(name, help)
            .namespace("aurora")
            .subsystem(self.subsystem.clone())
    }

    fn add<C: Collector + Clone + 'static>(&self, c: C) -> Result<C, prometheus::Error> {
        self.registry.register(Box::new(c.clone()))?;
        Ok(c)
    }

    pub fn counter(&self, name: &str, help: &str) -> Result<IntCounter, prometheus::Error> {
        self.add(IntCounter::with_opts(self.opts(name, help))?)
    }

    pub fn counter_vec(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> Result<IntCounterVec, prometheus::Error> {
        self.add(IntCounterVec::new(self.opts(name, help), labels)?)
    }

    pub fn gauge(&self, name: &str, help: &str) -> Result<IntGauge, prometheus::Error> {
        self.add(IntGauge::with_opts(self.opts(name, help))?)
    }

    pub fn float_gauge(
        &self,
        name: &str,
        help: &str,
    ) -> Result<prometheus::Gauge, prometheus::Error> {
        self.add(prometheus::Gauge::with_opts(self.opts(name, help))?)
    }

    pub fn gauge_vec(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> Result<IntGaugeVec, prometheus::Error> {
        self.add(IntGaugeVec::new(self.opts(name, help), labels)?)
    }

    pub fn float_gauge_vec(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> Result<prometheus::GaugeVec, prometheus::Error> {
        self.add(prometheus::GaugeVec::new(self.opts(name, help), labels)?)
    }

    pub fn histogram(
        &self,
        name: &str,
        help: &str,
        buckets: Vec<f64>,
    ) -> Result<Histogram, prometheus::Error> {
        let o = self.opts(name, help);
        let opts = HistogramOpts::from(o).buckets(buckets);
        self.add(Histogram::with_opts(opts)?)
    }

    pub fn histogram_vec(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
        buckets: Vec<f64>,
    ) -> Result<HistogramVec, prometheus::Error> {
        let opts = HistogramOpts::from(self.opts(name, help)).buckets(buckets);
        self.add(HistogramVec::new(opts, labels)?)
    }

    /// The registry in the Prometheus text exposition format.
    pub fn encode(&self) -> Result<Vec<u8>, prometheus::Error> {
        let mut out = Vec::with_capacity(4096);
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_contract() {
        let m = Metrics::new("dns-sync").unwrap();
        m.counter("queries_total", "Queries answered.")
            .unwrap()
            .inc();
        let text = String::from_utf8(m.encode().unwrap()).unwrap();
        assert!(text.contains("aurora_dns_sync_queries_total 1"), "{text}");
        assert!(text.contains("aurora_build_info{"), "{text}");
        assert!(text.contains("sidecar=\"dns-sync\""), "{text}");
        assert!(text.contains("process_resident_memory_bytes"), "{text}");
    }
}
