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

/// Generated hostile requests over a raw socket: odd methods, paths with
/// control bytes and traversal, random headers, lying Content-Lengths,
/// wrong tokens. Whatever arrives, the answer is never a 5xx, nothing is
/// mutated without the token, and the server keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_hostile_requests_get_4xx_not_5xx() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config as PropConfig, TestRunner};
    use std::io::{Read, Write};

    let (server, api, lc, url) = start(Some(TOKEN), false).await;
    let addr = server.local_addr();
    let cases = if std::env::var("TEST_TIER").as_deref() == Ok("long") {
        2048
    } else {
        256
    };
    let method = prop_oneof![
        Just("GET".to_string()),
        Just("POST".to_string()),
        Just("DELETE".to_string()),
        Just("OPTIONS".to_string()),
        "[A-Z]{1,12}",
    ];
    let path = prop_oneof![
        Just("/touch".to_string()),
        Just("/health".to_string()),
        Just("/metrics".to_string()),
        Just("/status".to_string()),
        "/[a-z/.%?=&]{0,40}",
        "/\\PC{0,30}",
    ];
    let header = prop_oneof![
        "[A-Za-z-]{1,20}: [ -~]{0,60}",
        "Authorization: Bearer [ -~]{0,40}",
        "Content-Length: [0-9]{1,12}",
        "Transfer-Encoding: [a-z, ]{0,20}",
    ];
    let request = (
        method,
        path,
        proptest::collection::vec(header, 0..5),
        proptest::collection::vec(any::<u8>(), 0..300),
    );
    let result = tokio::task::spawn_blocking(move || {
        let mut runner = TestRunner::new(PropConfig {
            cases,
            failure_persistence: None,
            ..PropConfig::default()
        });
        runner.run(&request, |(m, p, headers, body)| {
            let mut raw = format!("{m} {p} HTTP/1.1\r\nHost: x\r\n").into_bytes();
            for h in &headers {
                raw.extend_from_slice(h.as_bytes());
                raw.extend_from_slice(b"\r\n");
            }
            raw.extend_from_slice(b"Connection: close\r\n\r\n");
            raw.extend_from_slice(&body);
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            let _ = s.write_all(&raw);
            let _ = s.shutdown(std::net::Shutdown::Write);
            let mut answer = Vec::new();
            let _ = s.read_to_end(&mut answer);
            let text = String::from_utf8_lossy(&answer);
            if let Some(status) = text.strip_prefix("HTTP/1.1 ") {
                let code: u16 = status.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
                prop_assert!(
                    (100..500).contains(&code),
                    "{code} for {m} {p:?} {headers:?}"
                );
            }
            Ok(())
        })
    })
    .await
    .unwrap();
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(
        api.touched.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "a mutation without the token"
    );
    let r = client().get(&format!("{url}/health")).await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    lc.shutdown();
    server.stop(Duration::from_secs(2)).await;
}
