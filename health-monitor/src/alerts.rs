//! Alerts on status transitions: a node goes down or comes back, a node
//! turns critical or recovers.
//!
//! Only the monitor on the node that holds the primary sends, so a fleet of
//! N nodes does not send N copies. A transition is sent once per webhook;
//! the same (node, status) is not sent again within `alerts.cooldown_secs`
//! (a flapping node does not page every interval). Delivery runs in its own
//! task with retries, so a slow or dead webhook never delays the checks.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use hyper::Method;
use prometheus::IntCounterVec;
use serde::Serialize;
use serde_json::json;
use sidecar_kit::http_client::{ok_or_status, HttpClient};

use crate::config::{AlertsConfig, WebhookKind};
use crate::fleet::FleetView;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Transition {
    pub node: String,
    pub from: String,
    pub to: String,
}

/// Statuses worth a page when entered or left.
fn alarming(status: &str) -> bool {
    matches!(status, "down" | "critical")
}

/// What changed between two views. A node seen for the first time is not a
/// transition (a monitor restart must not page about the whole fleet).
pub fn transitions(prev: &HashMap<String, String>, now: &FleetView) -> Vec<Transition> {
    now.nodes
        .iter()
        .filter_map(|n| {
            let before = prev.get(&n.name)?;
            (before != &n.status && (alarming(before) || alarming(&n.status))).then(|| Transition {
                node: n.name.clone(),
                from: before.clone(),
                to: n.status.clone(),
            })
        })
        .collect()
}

pub struct Alerter {
    config: AlertsConfig,
    http: HttpClient,
    previous: HashMap<String, String>,
    last_sent: HashMap<(String, String), Instant>,
    sent: IntCounterVec,
}

impl Alerter {
    /// Webhooks may be `https://` (Slack's are): the client verifies them
    /// against the system's roots and `alerts.ca_file`.
    pub fn new(
        config: AlertsConfig,
        sent: IntCounterVec,
    ) -> Result<Self, sidecar_kit::http_client::TlsSetupError> {
        Ok(Self {
            http: HttpClient::with_tls(
                Duration::from_secs(config.timeout_secs),
                config.ca_file.as_deref(),
            )?,
            config,
            previous: HashMap::new(),
            last_sent: HashMap::new(),
            sent,
        })
    }

    /// Feeds one fleet view; sends what changed when `is_sender`.
    pub fn observe(&mut self, view: &FleetView, is_sender: bool) -> Vec<Transition> {
        let changes = transitions(&self.previous, view);
        self.previous = view
            .nodes
            .iter()
            .map(|n| (n.name.clone(), n.status.clone()))
            .collect();
        if !is_sender || self.config.webhooks.is_empty() {
            return Vec::new();
        }
        let cooldown = Duration::from_secs(self.config.cooldown_secs);
        let mut out = Vec::new();
        for t in changes {
            let key = (t.node.clone(), t.to.clone());
            if self
                .last_sent
                .get(&key)
                .is_some_and(|at| at.elapsed() < cooldown)
            {
                continue;
            }
            self.last_sent.insert(key, Instant::now());
            for hook in &self.config.webhooks {
                let body = match hook.kind {
                    WebhookKind::Slack => json!({ "text": format!(
                        "{} {}: {} → {}", icon(&t.to), t.node, t.from, t.to) }),
                    WebhookKind::Generic => json!({
                        "node": t.node, "from": t.from, "to": t.to,
                        "at": chrono::Utc::now().to_rfc3339(),
                        "source": "aurora health-monitor",
                    }),
                };
                let http = self.http.clone();
                let url = hook.url.clone();
                let token = hook.token.clone();
                let attempts = self.config.attempts;
                let sent = self.sent.clone();
                tokio::spawn(async move {
                    deliver(&http, &url, token.as_ref(), &body, attempts, &sent).await;
                });
            }
            out.push(t);
        }
        out
    }
}

fn icon(to: &str) -> &'static str {
    if alarming(to) {
        ":red_circle:"
    } else {
        ":large_green_circle:"
    }
}

async fn deliver(
    http: &HttpClient,
    url: &str,
    token: Option<&sidecar_kit::Secret>,
    body: &serde_json::Value,
    attempts: u32,
    sent: &IntCounterVec,
) {
    for attempt in 1..=attempts.max(1) {
        let result = http
            .send(Method::POST, url, token, Some(body))
            .await
            .and_then(|r| ok_or_status(url, &r));
        match result {
            Ok(()) => {
                sent.with_label_values(&["sent"]).inc();
                return;
            }
            Err(e) if attempt < attempts => {
                tracing::debug!(error = %e, attempt, "alert delivery failed; retrying");
                tokio::time::sleep(Duration::from_millis(500 << attempt.min(5))).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "alert not delivered");
                sent.with_label_values(&["failed"]).inc();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::NodeView;
    use cluster_db::Role;

    fn view(statuses: &[(&str, &str)]) -> FleetView {
        FleetView {
            primary: Some("aurora".into()),
            epoch: 1,
            nodes: statuses
                .iter()
                .map(|(n, s)| NodeView {
                    name: n.to_string(),
                    role: Role::Compute,
                    vpn_ip: "10.0.0.9".into(),
                    status: s.to_string(),
                    report_age_secs: None,
                })
                .collect(),
            rejected: vec![],
            replication: crate::fleet::PrimaryView {
                reachable: true,
                error: None,
                standbys: vec![],
            },
        }
    }

    #[test]
    fn only_alarming_changes_count() {
        let mut prev = HashMap::new();
        assert!(
            transitions(&prev, &view(&[("a", "down")])).is_empty(),
            "first sight"
        );
        prev.insert("a".to_string(), "passing".to_string());
        prev.insert("b".to_string(), "passing".to_string());
        let t = transitions(&prev, &view(&[("a", "down"), ("b", "warning")]));
        assert_eq!(t.len(), 1);
        assert_eq!((t[0].node.as_str(), t[0].to.as_str()), ("a", "down"));
        prev.insert("a".to_string(), "critical".to_string());
        let t = transitions(&prev, &view(&[("a", "passing")]));
        assert_eq!(t[0].from, "critical");
    }
}
