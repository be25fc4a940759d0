//! health-monitor's metrics.

use prometheus::{IntCounterVec, IntGaugeVec};
use sidecar_kit::Metrics;

pub(crate) struct HmMetrics {
    pub(crate) alerts: IntCounterVec,
    pub(crate) fleet: IntGaugeVec,
    pub(crate) check_status: IntGaugeVec,
    pub(crate) check_seconds: prometheus::GaugeVec,
    pub(crate) reports: IntCounterVec,
    pub(crate) report_age: prometheus::Gauge,
    pub(crate) db_connects: IntCounterVec,
    pub(crate) join_requests: IntCounterVec,
}

impl HmMetrics {
    pub(crate) fn new(m: &Metrics) -> Result<Self, prometheus::Error> {
        let reports = m.counter_vec(
            "reports_total",
            "Reports sent to the primary, by outcome.",
            &["outcome"],
        )?;
        for o in ["sent", "failed"] {
            reports.with_label_values(&[o]);
        }
        let alerts = m.counter_vec(
            "alerts_total",
            "Alert deliveries, by outcome.",
            &["outcome"],
        )?;
        for o in ["sent", "failed"] {
            alerts.with_label_values(&[o]);
        }
        Ok(Self {
            alerts,
            fleet: m.gauge_vec(
                "fleet_nodes",
                "Nodes of the fleet by status, as this node sees it.",
                &["status"],
            )?,
            check_status: m.gauge_vec(
                "check_status",
                "Each check's status: 0 passing, 1 warning, 2 critical.",
                &["check"],
            )?,
            check_seconds: m.float_gauge_vec(
                "check_duration_seconds",
                "How long each check took.",
                &["check"],
            )?,
            db_connects: {
                let c = m.counter_vec(
                    "db_connects_total",
                    "Database connections opened, by use (local, report, primary); each is kept between intervals.",
                    &["target"],
                )?;
                for t in ["local", "report", "primary"] {
                    c.with_label_values(&[t]);
                }
                c
            },
            join_requests: {
                let c = m.counter_vec(
                    "join_requests_total",
                    "Requests to the join endpoint, by outcome (joined, or why refused).",
                    &["outcome"],
                )?;
                for o in crate::join::OUTCOMES {
                    c.with_label_values(&[o]);
                }
                c
            },
            reports,
            report_age: m.float_gauge(
                "last_report_timestamp_seconds",
                "Unix time of the last report the primary accepted.",
            )?,
        })
    }
}
