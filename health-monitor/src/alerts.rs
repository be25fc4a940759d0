//! Alerts on status transitions: a node goes down or comes back, a node
//! turns critical or recovers.
//!
//! One monitor sends, so a fleet of N nodes does not send N copies: the one
//! on the primary's node while that node is up, else the first node by name
//! that is neither down nor critical ([`sender`]; every monitor computes it
//! from the same registry, so they agree, and a primary that dies without a
//! failover is still reported). A change of state is always sent — a
//! suppressed relapse would leave the pager saying "up" about a node that is
//! down — and a node that changed more than once within `alerts.cooldown_secs`
//! is said to be flapping, with the count. Delivery runs in its own task with
//! retries, so a slow or dead webhook never delays the checks.

use std::collections::{HashMap, VecDeque};
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
    /// Changes of this node seen within the cooldown window, this one
    /// included: above 1 the node is flapping.
    pub changes_in_window: u32,
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
            let now = n.status.as_str();
            (before != now && (alarming(before) || alarming(now))).then(|| Transition {
                node: n.name.clone(),
                from: before.clone(),
                to: now.to_string(),
                changes_in_window: 1,
            })
        })
        .collect()
}

/// The monitor that sends the fleet's alerts: the recorded primary's node
/// unless it is down, else the first node by name that is neither down nor
/// critical. `None` when no node qualifies.
pub fn sender(view: &FleetView) -> Option<&str> {
    if let Some(p) = &view.primary {
        if view
            .nodes
            .iter()
            .any(|n| &n.name == p && n.status != "down")
        {
            return Some(p);
        }
    }
    view.nodes
        .iter()
        .filter(|n| !alarming(n.status.as_str()))
        .map(|n| n.name.as_str())
        .min()
}

pub struct Alerter {
    config: AlertsConfig,
    http: HttpClient,
    previous: HashMap<String, String>,
    /// When each node's recent alarming changes were seen, for the flap count.
    changes: HashMap<String, VecDeque<Instant>>,
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
            changes: HashMap::new(),
            sent,
        })
    }

    /// Feeds one fleet view; sends what changed when `is_sender`. Every
    /// monitor counts changes, sender or not, so a monitor that becomes the
    /// sender knows which nodes are flapping.
    pub fn observe(&mut self, view: &FleetView, is_sender: bool) -> Vec<Transition> {
        let mut changes = transitions(&self.previous, view);
        self.previous = view
            .nodes
            .iter()
            .map(|n| (n.name.clone(), n.status.to_string()))
            .collect();
        let window = Duration::from_secs(self.config.cooldown_secs);
        let now = Instant::now();
        for t in &mut changes {
            let seen = self.changes.entry(t.node.clone()).or_default();
            seen.push_back(now);
            while seen
                .front()
                .is_some_and(|at| now.duration_since(*at) > window)
            {
                seen.pop_front();
            }
            t.changes_in_window = u32::try_from(seen.len()).unwrap_or(u32::MAX);
        }
        self.changes
            .retain(|node, _| view.nodes.iter().any(|n| &n.name == node));
        if !is_sender || self.config.webhooks.is_empty() {
            return Vec::new();
        }
        for t in &changes {
            let flapping = if t.changes_in_window > 1 {
                format!(
                    " (flapping: {} changes in {} s)",
                    t.changes_in_window, self.config.cooldown_secs
                )
            } else {
                String::new()
            };
            for hook in &self.config.webhooks {
                let body = match hook.kind {
                    WebhookKind::Slack => json!({ "text": format!(
                        "{} {}: {} → {}{flapping}", icon(&t.to), t.node, t.from, t.to) }),
                    WebhookKind::Generic => json!({
                        "node": t.node, "from": t.from, "to": t.to,
                        "changes_in_window": t.changes_in_window,
                        "at": chrono::Utc::now().to_rfc3339(),
                        "source": "aurora health-monitor",
                    }),
                };
                let http = self.http.clone();
                let url = hook.url.expose().to_string();
                let token = hook.token.clone();
                let attempts = self.config.attempts;
                let sent = self.sent.clone();
                tokio::spawn(async move {
                    deliver(&http, &url, token.as_ref(), &body, attempts, &sent).await;
                });
            }
        }
        changes
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
    // Errors quote the URL; it is a credential, so logs get it redacted.
    let shown = crate::config::redacted_url(url);
    for attempt in 1..=attempts.max(1) {
        let result = http
            .send(Method::POST, url, token, Some(body))
            .await
            .and_then(|r| ok_or_status(url, &r))
            .map_err(|e| e.to_string().replace(url, &shown));
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
                    role: Role::Compute.into(),
                    vpn_ip: "10.0.0.9".into(),
                    status: (*s).into(),
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

    fn alerter(cooldown_secs: u64) -> Alerter {
        let c = AlertsConfig {
            cooldown_secs,
            // Nothing listens there; delivery is not under test here.
            webhooks: vec![crate::config::Webhook {
                url: sidecar_kit::Secret::new("http://127.0.0.1:9/hook"),
                kind: WebhookKind::Generic,
                token: None,
                allow_token_over_http: false,
            }],
            attempts: 1,
            ..AlertsConfig::default()
        };
        let sent = IntCounterVec::new(prometheus::Opts::new("t", "t"), &["outcome"]).unwrap();
        Alerter::new(c, sent).unwrap()
    }

    /// down → passing → down inside the cooldown: the relapse is paged, or
    /// the pager shows a node as up that is down.
    #[tokio::test]
    async fn a_relapse_is_always_paged() {
        let mut a = alerter(300);
        let sent = |a: &mut Alerter, s: &str| a.observe(&view(&[("a", s)]), true);
        assert!(sent(&mut a, "passing").is_empty());
        let t = sent(&mut a, "down");
        assert_eq!((t.len(), t[0].to.as_str()), (1, "down"));
        assert_eq!(sent(&mut a, "passing")[0].to, "passing");
        let t = sent(&mut a, "down");
        assert_eq!(t.len(), 1, "the relapse was suppressed");
        assert_eq!(t[0].to, "down");
        // The flapping is said in the alert.
        assert_eq!(t[0].changes_in_window, 3, "{t:?}");
        assert!(sent(&mut a, "down").is_empty(), "no change, no alert");
    }

    #[test]
    fn webhook_urls_are_logged_without_their_secret() {
        use crate::config::redacted_url;
        assert_eq!(
            redacted_url("https://hooks.slack.com/services/T0/B0/XyZsecret"),
            "https://hooks.slack.com/…"
        );
        assert_eq!(
            redacted_url("http://user:pw@relay:9095/hook?key=s3cret"),
            "http://relay:9095/…"
        );
        assert_eq!(redacted_url("garbage"), "?:///…");
    }

    /// One sender, the same on every monitor that sees the same view: the
    /// primary's node while it is up, else the first node by name that is
    /// neither down nor critical.
    #[test]
    fn the_sender_is_the_primary_or_the_first_healthy_node() {
        let mut v = view(&[
            ("aurora", "passing"),
            ("star", "passing"),
            ("vengeance", "warning"),
        ]);
        assert_eq!(sender(&v), Some("aurora"));
        v.nodes[0].status = "down".into();
        assert_eq!(sender(&v), Some("star"));
        v.nodes[1].status = "critical".into();
        assert_eq!(sender(&v), Some("vengeance"));
        v.primary = None;
        v.nodes[0].status = "passing".into();
        assert_eq!(sender(&v), Some("aurora"));
        for n in &mut v.nodes {
            n.status = "down".into();
        }
        assert_eq!(sender(&v), None);
    }
}
