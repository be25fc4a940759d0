//! The admin server's contract, exercised over real HTTP on a real socket.

#![allow(clippy::unwrap_used)] // test helpers may panic: a panic is a test failure

use std::sync::Arc;
use std::time::Duration;

use hyper::{Method, StatusCode};
use serde_json::Value;
use sidecar_kit::admin::{AdminApi, AdminRequest, AdminResponse, AdminServer, Routed};
use sidecar_kit::http_client::HttpClient;
use sidecar_kit::{AdminConfig, HealthReport, HealthStatus, Lifecycle, Metrics, Secret};

const TOKEN: &str = "test-token-0123456789";

struct Api {
    touched: std::sync::atomic::AtomicUsize,
    unhealthy: bool,
}

impl AdminApi for Api {
    fn health(&self) -> HealthReport {
        let mut r = HealthReport::ok().detail("age_secs", 3);
        if self.unhealthy {
            r.problem(HealthStatus::Unhealthy, "database unreachable");
        }
        r
    }

    fn status(&self) -> Value {
        serde_json::json!({"role": "test"})
    }

    async fn handle(&self, req: AdminRequest) -> Routed {
        match (req.path.as_str(), req.method.clone()) {
            ("/touch", Method::POST) => {
                self.touched
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                AdminResponse::ok(&serde_json::json!({"touched": true})).into()
            }
            ("/touch", _) => Routed::MethodNotAllowed("POST"),
            ("/echo", Method::GET) => {
                AdminResponse::ok(&serde_json::json!({"lag": req.query("lag")})).into()
            }
            _ => Routed::NotFound,
        }
    }
}

async fn start(token: Option<&str>, unhealthy: bool) -> (AdminServer, Arc<Api>, Lifecycle, String) {
    let mut cfg = AdminConfig::on_port(0);
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    cfg.token = token.map(Secret::new);
    let api = Arc::new(Api {
        touched: Default::default(),
        unhealthy,
    });
    let lc = Lifecycle::new();
    let metrics = Metrics::new("test-sidecar").unwrap();
    let server = AdminServer::start(&cfg, api.clone(), metrics, lc.clone())
        .await
        .unwrap();
    let url = format!("http://{}", server.local_addr());
    assert_eq!(lc.admin_addr().await, Some(server.local_addr()));
    (server, api, lc, url)
}

fn client() -> HttpClient {
    HttpClient::new(Duration::from_secs(5))
}

#[tokio::test]
async fn builtin_endpoints() {
    let (server, _api, lc, url) = start(Some(TOKEN), false).await;
    let c = client();

    let r = c.get(&format!("{url}/health")).await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    let body: Value = r.json("").unwrap();
    assert_eq!(body["status"], "ok");
    assert_eq!(body["age_secs"], 3);

    let r = c.get(&format!("{url}/ready")).await.unwrap();
    assert_eq!(
        r.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "not ready before first work"
    );
    lc.set_ready(true);
    assert_eq!(
        c.get(&format!("{url}/ready")).await.unwrap().status,
        StatusCode::OK
    );

    let r = c.get(&format!("{url}/metrics")).await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.text().contains("aurora_build_info{"), "{}", r.text());

    let r = c.get(&format!("{url}/status")).await.unwrap();
    assert_eq!(r.json::<Value>("").unwrap()["role"], "test");

    // Draining: readiness turns 503 while the server still answers.
    lc.shutdown();
    let r = c.get(&format!("{url}/ready")).await.unwrap();
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.text().contains("draining"));
    server.stop(Duration::from_secs(2)).await;
    assert!(
        c.get(&format!("{url}/health")).await.is_err(),
        "closed after stop"
    );
}

#[tokio::test]
async fn unhealthy_is_503_with_reasons() {
    let (_server, _api, _lc, url) = start(None, true).await;
    let r = client().get(&format!("{url}/health")).await.unwrap();
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = r.json("").unwrap();
    assert_eq!(body["status"], "unhealthy");
    assert_eq!(body["reasons"][0], "database unreachable");
}

#[tokio::test]
async fn mutations_need_the_token() {
    let (_server, api, _lc, url) = start(Some(TOKEN), false).await;
    let c = client();
    let touch = format!("{url}/touch");
    let count = || api.touched.load(std::sync::atomic::Ordering::SeqCst);

    let r = c.send(Method::POST, &touch, None, None).await.unwrap();
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let wrong = Secret::new("wrong-token-0123456789");
    let r = c
        .send(Method::POST, &touch, Some(&wrong), None)
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // Unknown paths do not reveal themselves to unauthenticated callers.
    let r = c
        .send(Method::POST, &format!("{url}/nope"), None, None)
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(count(), 0, "nothing changed without the token");

    let ok = Secret::new(TOKEN);
    let r = c.send(Method::POST, &touch, Some(&ok), None).await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(count(), 1);
}

#[tokio::test]
async fn no_configured_token_disables_mutations() {
    let (_server, api, _lc, url) = start(None, false).await;
    let any = Secret::new("whatever-token-0123456789");
    let r = client()
        .send(Method::POST, &format!("{url}/touch"), Some(&any), None)
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.text().contains("not configured"));
    assert_eq!(api.touched.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[tokio::test]
async fn routing_rules() {
    let (_server, _api, _lc, url) = start(Some(TOKEN), false).await;
    let c = client();
    let r = c.get(&format!("{url}/nope")).await.unwrap();
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.json::<Value>("").unwrap()["error"].is_string());

    // Wrong method on a sidecar route and on a built-in one.
    let r = c.get(&format!("{url}/touch")).await.unwrap();
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    let ok = Secret::new(TOKEN);
    let r = c
        .send(Method::POST, &format!("{url}/health"), Some(&ok), None)
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);

    // HEAD and OPTIONS: same status, no body.
    for m in [Method::HEAD, Method::OPTIONS] {
        let r = c
            .send(m.clone(), &format!("{url}/health"), None, None)
            .await
            .unwrap();
        assert_eq!(r.status, StatusCode::OK, "{m}");
        assert!(r.body.is_empty(), "{m} has no body");
        let r = c
            .send(m.clone(), &format!("{url}/ready"), None, None)
            .await
            .unwrap();
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{m}");
    }

    let r = c.get(&format!("{url}/echo?lag=10MB")).await.unwrap();
    assert_eq!(r.json::<Value>("").unwrap()["lag"], "10MB");
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let (_server, api, _lc, url) = start(Some(TOKEN), false).await;
    let big = Value::String("x".repeat(sidecar_kit::admin::MAX_BODY_BYTES + 10));
    let ok = Secret::new(TOKEN);
    let r = client()
        .send(Method::POST, &format!("{url}/touch"), Some(&ok), Some(&big))
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(api.touched.load(std::sync::atomic::Ordering::SeqCst), 0);
}
