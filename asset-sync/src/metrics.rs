//! asset-sync's metrics, recorded from each pass's report.

use prometheus::{Histogram, IntCounter, IntCounterVec, IntGauge};
use sidecar_kit::Metrics;

use crate::keys::Rejection;
use crate::pass::PassReport;

pub struct SyncMetrics {
    pub(crate) passes: IntCounterVec,
    pub(crate) downloaded: IntCounter,
    pub(crate) bytes: IntCounter,
    pub(crate) deleted: IntCounter,
    pub(crate) unchanged: IntCounter,
    pub(crate) rejected: IntCounterVec,
    pub(crate) failures: IntCounter,
    pub(crate) retries: IntCounter,
    pub(crate) size_only: IntCounter,
    pub(crate) verified_by: IntCounterVec,
    pub(crate) last_success: prometheus::Gauge,
    pub(crate) duration: Histogram,
    pub(crate) local_files: IntGauge,
    pub(crate) local_bytes: IntGauge,
}

impl SyncMetrics {
    pub fn new(m: &Metrics) -> Result<Self, prometheus::Error> {
        let rejected = m.counter_vec(
            "keys_rejected_total",
            "Object keys not mirrored because they are unsafe, by rule.",
            &["rule"],
        )?;
        for r in Rejection::ALL {
            rejected.with_label_values(&[r.as_str()]);
        }
        let passes = m.counter_vec("passes_total", "Sync passes by outcome.", &["outcome"])?;
        for o in ["success", "partial", "failed"] {
            passes.with_label_values(&[o]);
        }
        Ok(Self {
            passes,
            downloaded: m.counter(
                "objects_downloaded_total",
                "Objects downloaded and published.",
            )?,
            bytes: m.counter("downloaded_bytes_total", "Bytes downloaded and published.")?,
            deleted: m.counter(
                "objects_deleted_total",
                "Local files deleted because their objects are gone.",
            )?,
            unchanged: m.counter(
                "objects_skipped_total",
                "Objects skipped because the local copy is current.",
            )?,
            rejected,
            failures: m.counter(
                "download_failures_total",
                "Objects that failed every attempt in a pass.",
            )?,
            retries: m.counter("download_retries_total", "Download attempts retried.")?,
            size_only: m.counter(
                "objects_verified_size_only_total",
                "Downloads verified by size only (no usable checksum: multipart without one, a composite CRC, an encrypted object's opaque ETag).",
            )?,
            verified_by: m.counter_vec(
                "objects_verified_total",
                "Downloads by how they were verified: md5 (ETag), sha256, crc, size_only.",
                &["by"],
            )?,
            last_success: m.float_gauge(
                "last_success_timestamp_seconds",
                "Unix time of the last successful pass.",
            )?,
            duration: m.histogram(
                "pass_duration_seconds",
                "Duration of sync passes.",
                vec![0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 1800.0],
            )?,
            local_files: m.gauge("local_files", "Files in the local mirror.")?,
            local_bytes: m.gauge("local_bytes", "Bytes in the local mirror.")?,
        })
    }

    pub(crate) fn record(&self, r: &PassReport) {
        self.passes
            .with_label_values(&[if r.ok { "success" } else { "partial" }])
            .inc();
        self.downloaded.inc_by(r.downloaded);
        self.bytes.inc_by(r.bytes_downloaded);
        self.deleted.inc_by(r.deleted);
        self.unchanged.inc_by(r.unchanged + r.adopted);
        self.failures.inc_by(r.failed);
        self.retries.inc_by(r.retries);
        self.size_only.inc_by(r.verified_size_only);
        for (by, n) in &r.verified_by {
            self.verified_by.with_label_values(&[by]).inc_by(*n);
        }
        for (rule, n) in &r.rejections {
            self.rejected.with_label_values(&[rule]).inc_by(*n);
        }
        self.duration.observe(r.duration_secs);
        self.local_files.set(r.local_files as i64);
        self.local_bytes.set(r.local_bytes as i64);
        if r.ok {
            self.last_success.set(sidecar_kit::telemetry::unix_now());
        }
    }
}
