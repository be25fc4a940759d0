//! The join endpoint against a real PostgreSQL primary, over real TLS.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use aurora_api::join::{IssuedToken, JoinAnswer, JoinRequest, JoinToken, JOIN_PATH};
use hyper::{Method, StatusCode};
use serde_json::{json, Value};
use sidecar_kit::http_client::{HttpClient, HttpResponse};
use sidecar_kit::Secret;

use super::{config, primary, start, Running};

const ADMIN: &str = "admin-token-for-the-join-tests";

/// A WireGuard-shaped public key, distinct per `n`.
fn wg_key(n: u8) -> String {
    let mut raw = [0u8; 32];
    raw[0] = n;
    raw[31] = 0x5a;
    // 32 bytes of base64: 43 characters and '='; the last character
    // carries 4 bits, so keep the final byte's low nibble zero.
    const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in raw.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let v = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..4 {
            if i < chars {
                out.push(B64[((v >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    cluster_db::model::validate_wg_key(&out).unwrap();
    out
}

struct Fleet {
    _pg: testbed::PgCluster,
    lead: Running,
    dir: tempfile::TempDir,
}

fn fleet_env() -> &'static str {
    "ADMIN_TOKEN=fleet-admin\nREPLICATION_PASSWORD=repl\nPOSTGRES_PASSWORD=pg\nGARAGE_RPC_SECRET=rpc\nGARAGE_ADMIN_TOKEN=garage\nS3_ACCESS_KEY_ID=GKabc\nS3_SECRET_ACCESS_KEY=s3secret\n"
}

fn join_config(
    base: health_monitor::Config,
    dir: &std::path::Path,
    attempts: u32,
) -> health_monitor::Config {
    let mut c = base;
    c.admin.token = Some(Secret::new(ADMIN));
    c.join.listen = Some("127.0.0.1:0".parse().unwrap());
    c.join.cert_file = dir.join("join/join.crt");
    c.join.key_file = dir.join("join/join.key");
    c.join.secrets_file = Some(dir.join("fleet.env"));
    c.join.zone = "fleet.test".into();
    c.join.attempts_per_minute = attempts;
    sidecar_kit::Validate::validate(&c).unwrap();
    c
}

async fn fleet(attempts: u32) -> Fleet {
    let pg = primary().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("fleet.env"), fleet_env()).unwrap();
    let c = join_config(
        config("aurora", "lead", "10.0.0.1", &pg, &pg),
        dir.path(),
        attempts,
    );
    let lead = start(c).await;
    // Joins wait for the serving node's own registration (503 until then),
    // as `aurora-cli join` does by asking again.
    assert!(
        testbed::postgres::wait_until(Duration::from_secs(10), || async {
            registry(&pg).await.iter().any(|r| r.0 == "aurora")
        })
        .await,
        "the lead never registered itself"
    );
    Fleet { _pg: pg, lead, dir }
}

async fn issue(r: &Running, body: Value) -> (StatusCode, Value) {
    let resp = HttpClient::new(Duration::from_secs(10))
        .send(
            Method::POST,
            &format!("{}/join/tokens", r.url),
            Some(&Secret::new(ADMIN)),
            Some(&body),
        )
        .await
        .unwrap();
    (resp.status, serde_json::from_slice(&resp.body).unwrap())
}

async fn token(r: &Running, body: Value) -> JoinToken {
    let (status, v) = issue(r, body).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let issued: IssuedToken = serde_json::from_value(v).unwrap();
    JoinToken::parse(&issued.token).unwrap()
}

fn request(name: &str, role: &str, key: u8) -> JoinRequest {
    JoinRequest {
        name: name.into(),
        role: role.into(),
        wg_public_key: wg_key(key),
        wg_endpoint: Some(format!("{name}.example.net:51820")),
        vpn_ip: None,
    }
}

async fn send_raw(t: &JoinToken, bearer: &str, body: &Value) -> HttpResponse {
    HttpClient::pinned(Duration::from_secs(30), t.fingerprint)
        .unwrap()
        .send(
            Method::POST,
            &format!("https://{}{JOIN_PATH}", t.endpoint),
            Some(&Secret::new(bearer)),
            Some(body),
        )
        .await
        .unwrap()
}

/// A join with the token's own bearer, answered as it came.
async fn send_join(t: &JoinToken, req: &JoinRequest) -> HttpResponse {
    send_raw(t, &t.bearer(), &serde_json::to_value(req).unwrap()).await
}

async fn join(t: &JoinToken, req: &JoinRequest) -> (StatusCode, Value) {
    let resp = send_join(t, req).await;
    (resp.status, serde_json::from_slice(&resp.body).unwrap())
}

/// A join refused with `status`, its reason containing `reason`.
async fn refused(t: &JoinToken, req: &JoinRequest, status: StatusCode, reason: &str) {
    let (s, v) = join(t, req).await;
    assert_eq!(s, status, "{v}");
    let e = v["error"].as_str().unwrap_or_default();
    assert!(e.contains(reason), "{reason:?} not in {e:?}");
}

async fn metric(r: &Running, outcome: &str) -> f64 {
    let body = HttpClient::new(Duration::from_secs(5))
        .get(&format!("{}/metrics", r.url))
        .await
        .unwrap()
        .text();
    let key = format!("aurora_health_monitor_join_requests_total{{outcome=\"{outcome}\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&key))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or_else(|| panic!("no {key} in /metrics"))
}

async fn registry(pg: &testbed::PgCluster) -> Vec<(String, String, IpAddr, Option<String>)> {
    let c = pg.connect("postgres").await.unwrap();
    cluster_db::queries::list_nodes(&c)
        .await
        .unwrap()
        .nodes
        .into_iter()
        .map(|n| {
            (
                n.name.to_string(),
                n.role.to_string(),
                n.vpn_ip,
                n.wg_public_key,
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_joins_get_distinct_addresses_and_their_roles_secrets() {
    let f = fleet(100).await;
    let mut tokens = Vec::new();
    for _ in 0..6 {
        tokens.push(token(&f.lead, json!({})).await);
    }
    let backup_token = token(&f.lead, json!({"role": "backup", "ttl_secs": 600})).await;
    let mut joins = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        let t = t.clone();
        joins.push(tokio::spawn(async move {
            join(&t, &request(&format!("c{i}"), "compute", i as u8 + 10)).await
        }));
    }
    let backup = join(&backup_token, &request("star", "backup", 99)).await;
    let mut addresses = BTreeSet::new();
    for j in joins {
        let (status, v) = j.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{v}");
        let a: JoinAnswer = serde_json::from_value(v).unwrap();
        assert!(addresses.insert(a.vpn_ip), "{} given twice", a.vpn_ip);
        assert_eq!(a.zone, "fleet.test");
        assert_eq!(a.vpn_network, "10.0.0.0/24");
        // A compute node gets what it runs with, not Garage's secrets nor
        // the join certificate's key.
        assert_eq!(
            a.secrets.keys().map(String::as_str).collect::<Vec<_>>(),
            [
                "ADMIN_TOKEN",
                "POSTGRES_PASSWORD",
                "REPLICATION_PASSWORD",
                "S3_ACCESS_KEY_ID",
                "S3_SECRET_ACCESS_KEY"
            ]
        );
        assert!(a.join_key.is_none());
        assert!(a
            .members
            .iter()
            .any(|m| m.name == "aurora" && m.role == "lead"));
        assert!(a.members.iter().any(|m| m.name == a.name));
    }
    let want: BTreeSet<IpAddr> = (3..9)
        .map(|n| format!("10.0.0.{n}").parse().unwrap())
        .collect();
    assert_eq!(addresses, want, "compute nodes fill from .3");

    let (status, v) = backup;
    assert_eq!(status, StatusCode::OK, "{v}");
    let b: JoinAnswer = serde_json::from_value(v).unwrap();
    assert_eq!(b.vpn_ip, "10.0.0.2".parse::<IpAddr>().unwrap());
    assert_eq!(b.secrets.len(), 7, "the backup runs Garage too");
    // The backup receives the join certificate whose hash every token
    // carries, so it can serve joins too.
    let cert = b.join_certificate.unwrap();
    let der = rustls::pki_types::CertificateDer::from_pem_slice(cert.as_bytes()).unwrap();
    assert_eq!(
        sidecar_kit::http_client::certificate_fingerprint(&der),
        backup_token.fingerprint
    );
    assert!(b.join_key.unwrap().contains("PRIVATE KEY"));

    let rows = registry(&f._pg).await;
    assert_eq!(rows.len(), 8, "{rows:?}");
    let star = rows.iter().find(|r| r.0 == "star").unwrap();
    assert_eq!(star.3.as_deref(), Some(wg_key(99).as_str()));
    assert_eq!(metric(&f.lead, "joined").await, 7.0);

    // The tokens' secrets are not in the database, only their hashes.
    let c = f._pg.connect("postgres").await.unwrap();
    let stored: Vec<String> = c
        .query("SELECT secret_sha256 FROM aurora.join_tokens", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(tokens.iter().all(|t| !stored.contains(&t.secret)));
    let events: i64 = c
        .query_one(
            "SELECT count(*) FROM aurora.events WHERE kind = 'node_joined'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(events, 7);
    f.lead.stop().await;
}

use rustls::pki_types::pem::PemObject as _;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_and_bad_claims_are_refused_with_the_reason_and_counted() {
    let f = fleet(100).await;
    let t = token(&f.lead, json!({"ttl_secs": 600})).await;

    // A wrong secret for a real id, and an id that does not exist.
    let wrong = JoinToken {
        secret: "0".repeat(64),
        ..t.clone()
    };
    refused(
        &wrong,
        &request("c1", "compute", 1),
        StatusCode::UNAUTHORIZED,
        "not valid",
    )
    .await;
    let unknown = JoinToken {
        id: "0123456789abcdef".into(),
        ..t.clone()
    };
    assert_eq!(
        join(&unknown, &request("c1", "compute", 1)).await.0,
        StatusCode::UNAUTHORIZED
    );
    // No token, or a malformed one.
    let body = serde_json::to_value(request("c1", "compute", 1)).unwrap();
    assert_eq!(
        send_raw(&t, "", &body).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send_raw(&t, "not-a-token", &body).await.status,
        StatusCode::UNAUTHORIZED
    );

    // Hostile bodies: each a 4xx naming the field.
    for (bad, field) in [
        (
            json!({"name": "Bad_Name", "role": "compute", "wg_public_key": wg_key(1)}),
            "name",
        ),
        (
            json!({"name": "c1", "role": "leader", "wg_public_key": wg_key(1)}),
            "role",
        ),
        (
            json!({"name": "c1", "role": "compute", "wg_public_key": "short"}),
            "wg_public_key",
        ),
        (
            json!({"name": "c1", "role": "compute", "wg_public_key": wg_key(1), "wg_endpoint": "x y:1"}),
            "wg_endpoint",
        ),
        (
            json!({"name": "c1", "role": "compute", "wg_public_key": wg_key(1), "admin": true}),
            "admin",
        ),
        (
            json!({"name": "c1", "role": "compute", "wg_public_key": wg_key(1), "vpn_ip": "10.0.9.9"}),
            "10.0.9.9",
        ),
        (
            json!({"name": "c1", "role": "compute", "wg_public_key": wg_key(1), "vpn_ip": "10.0.0.1"}),
            "aurora",
        ),
    ] {
        let resp = send_raw(&t, &t.bearer(), &bad).await;
        assert!(resp.status.is_client_error(), "{bad}: {}", resp.status);
        assert!(resp.text().contains(field), "{bad}: {}", resp.text());
    }
    let huge = json!({"name": "c1", "role": "compute", "wg_public_key": "A".repeat(64 * 1024)});
    assert_eq!(
        send_raw(&t, &t.bearer(), &huge).await.status,
        StatusCode::PAYLOAD_TOO_LARGE
    );

    // Nobody joins as lead; the fleet has one backup.
    let (s, v) = join(&t, &request("c1", "lead", 1)).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    let (s, _) = join(&t, &request("star", "backup", 2)).await;
    assert_eq!(s, StatusCode::OK, "refusals did not use the token up");

    // The token is spent...
    refused(
        &t,
        &request("c2", "compute", 3),
        StatusCode::UNAUTHORIZED,
        "already used (by star)",
    )
    .await;
    // ...but the node it admitted may ask again (its answer lost on the
    // way) and gets the same answer, changing nothing; not with another
    // key, nor as another role.
    let (s, first) = join(&t, &request("star", "backup", 2)).await;
    assert_eq!(s, StatusCode::OK, "{first}");
    assert_eq!(first["vpn_ip"], "10.0.0.2");
    for (role, key) in [("backup", 9), ("compute", 2)] {
        refused(
            &t,
            &request("star", role, key),
            StatusCode::UNAUTHORIZED,
            "already used (by star)",
        )
        .await;
    }

    let t2 = token(&f.lead, json!({})).await;
    refused(
        &t2,
        &request("nova", "backup", 4),
        StatusCode::CONFLICT,
        "has its backup already (star)",
    )
    .await;
    // A name held by another key.
    refused(
        &t2,
        &request("star", "compute", 5),
        StatusCode::CONFLICT,
        "another WireGuard key",
    )
    .await;

    // A token for one role admits only that role.
    let only_backup = token(&f.lead, json!({"role": "backup"})).await;
    let (s, v) = join(&only_backup, &request("c3", "compute", 6)).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");

    // An expired token.
    let short = token(&f.lead, json!({"ttl_secs": 1})).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    refused(
        &short,
        &request("c4", "compute", 7),
        StatusCode::UNAUTHORIZED,
        "expired",
    )
    .await;

    // Bad token requests on the admin API.
    for bad in [
        json!({"ttl_secs": 0}),
        json!({"ttl_secs": 999_999_999}),
        json!({"role": "lead"}),
        json!({"role": "king"}),
    ] {
        let (s, v) = issue(&f.lead, bad.clone()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {v}");
    }

    for (outcome, n) in [
        ("token_invalid", 2.0),
        ("token_missing", 2.0),
        ("token_used", 3.0),
        ("answered_again", 1.0),
        ("token_expired", 1.0),
        ("lead_role", 1.0),
        ("backup_exists", 1.0),
        ("name_taken", 1.0),
        ("role_not_allowed", 1.0),
        ("address_taken", 1.0),
        ("address_outside_network", 1.0),
        ("bad_request", 6.0),
        ("joined", 1.0),
    ] {
        assert_eq!(metric(&f.lead, outcome).await, n, "{outcome}");
    }
    // Only the lead and star joined.
    assert_eq!(registry(&f._pg).await.len(), 2);
    f.lead.stop().await;
}

/// A join served before the serving node's own registration would answer
/// a mesh without the node the new one must reach the fleet through: it
/// is "not yet" (503, Retry-After), counted, and the token stays usable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_waits_until_the_serving_node_is_registered() {
    let f = fleet(100).await;
    let t = token(&f.lead, json!({})).await;
    let c = f._pg.connect("postgres").await.unwrap();
    let own = cluster_db::queries::list_nodes(&c)
        .await
        .unwrap()
        .nodes
        .into_iter()
        .find(|n| n.name.as_str() == "aurora")
        .unwrap();
    c.execute("DELETE FROM aurora.nodes WHERE name = 'aurora'", &[])
        .await
        .unwrap();

    let resp = send_join(&t, &request("c1", "compute", 1)).await;
    assert_eq!(
        resp.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        resp.text()
    );
    assert!(
        resp.text().contains("aurora has not registered itself"),
        "{}",
        resp.text()
    );
    assert!(resp.headers.contains_key(hyper::header::RETRY_AFTER));
    assert_eq!(metric(&f.lead, "unavailable").await, 1.0);
    assert_eq!(registry(&f._pg).await.len(), 0, "nothing was admitted");

    // Registered again: the same token admits the node, and the mesh it
    // gets holds the lead.
    let reg = cluster_db::NodeRegistration::from(own);
    cluster_db::queries::upsert_node(&c, &reg).await.unwrap();
    let (s, v) = join(&t, &request("c1", "compute", 1)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let a: JoinAnswer = serde_json::from_value(v).unwrap();
    assert!(a.members.iter().any(|m| m.name == "aurora"));
    f.lead.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_the_pinned_certificate_gets_nothing() {
    let f = fleet(100).await;
    let t = token(&f.lead, json!({})).await;
    let mut pin = t.fingerprint;
    pin[0] ^= 1;
    let err = HttpClient::pinned(Duration::from_secs(10), pin)
        .unwrap()
        .send(
            Method::POST,
            &format!("https://{}{JOIN_PATH}", t.endpoint),
            Some(&Secret::new(t.bearer())),
            Some(&serde_json::to_value(request("c1", "compute", 1)).unwrap()),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("not the pinned one"), "{err}");
    // The handshake failed: no request reached the endpoint, the token is
    // unused and still admits the node.
    assert!(
        testbed::postgres::wait_until(Duration::from_secs(5), || async {
            metric(&f.lead, "tls_failed").await == 1.0
        })
        .await
    );
    for outcome in ["joined", "token_invalid", "token_missing", "bad_request"] {
        assert_eq!(metric(&f.lead, outcome).await, 0.0, "{outcome}");
    }
    assert_eq!(
        join(&t, &request("c1", "compute", 1)).await.0,
        StatusCode::OK
    );
    f.lead.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempts_are_limited_per_source_address() {
    let f = fleet(3).await;
    let t = token(&f.lead, json!({})).await;
    let wrong = JoinToken {
        secret: "1".repeat(64),
        ..t.clone()
    };
    for _ in 0..3 {
        assert_eq!(
            join(&wrong, &request("c1", "compute", 1)).await.0,
            StatusCode::UNAUTHORIZED
        );
    }
    // Even the right token waits now: a guesser cannot go on.
    let resp = send_join(&t, &request("c1", "compute", 1)).await;
    assert_eq!(
        resp.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        resp.text()
    );
    let retry: u64 = resp.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(metric(&f.lead, "rate_limited").await, 1.0);
    f.lead.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backup_serves_joins_with_the_certificate_it_received() {
    let f = fleet(100).await;
    let t = token(&f.lead, json!({"role": "backup"})).await;
    let (s, v) = join(&t, &request("star", "backup", 2)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let b: JoinAnswer = serde_json::from_value(v).unwrap();
    // The backup's health-monitor, with the certificate it was given.
    let bdir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(bdir.path().join("join")).unwrap();
    std::fs::write(
        bdir.path().join("join/join.crt"),
        b.join_certificate.unwrap(),
    )
    .unwrap();
    std::fs::write(bdir.path().join("join/join.key"), b.join_key.unwrap()).unwrap();
    std::fs::write(bdir.path().join("fleet.env"), fleet_env()).unwrap();
    let pg = &f._pg;
    let backup = start(join_config(
        config("star", "backup", "10.0.0.2", pg, pg),
        bdir.path(),
        100,
    ))
    .await;
    // A token from the lead, used against the backup (the lead is away):
    // the same pin holds.
    let t = token(&f.lead, json!({})).await;
    let (_, v) = issue(&backup, json!({})).await;
    let from_backup: IssuedToken = serde_json::from_value(v).unwrap();
    let via_backup = JoinToken {
        endpoint: from_backup.endpoint.clone(),
        ..t
    };
    assert_eq!(
        from_backup.fingerprint,
        aurora_api::join::to_hex(&via_backup.fingerprint)
    );
    f.lead.stop().await;
    let (s, v) = join(&via_backup, &request("c1", "compute", 3)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(metric(&backup, "joined").await, 1.0);
    backup.stop().await;
    drop(f.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_certificate_files_are_made_once_and_a_half_pair_stops_the_start() {
    let pg = primary().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("fleet.env"), fleet_env()).unwrap();
    let c = join_config(
        config("aurora", "lead", "10.0.0.1", &pg, &pg),
        dir.path(),
        10,
    );
    let lead = start(c.clone()).await;
    let first = token(&lead, json!({})).await.fingerprint;
    lead.stop().await;
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&c.join.key_file)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // A restart keeps the certificate: tokens already handed out stay good.
    let lead = start(c.clone()).await;
    assert_eq!(token(&lead, json!({})).await.fingerprint, first);
    lead.stop().await;
    std::fs::remove_file(&c.join.key_file).unwrap();
    let err = health_monitor::run(c, sidecar_kit::Lifecycle::new())
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("must both exist"), "{err:#}");
}

async fn delete(r: &Running, path: &str, token: Option<&str>) -> (StatusCode, String) {
    let resp = HttpClient::new(Duration::from_secs(10))
        .send(
            Method::DELETE,
            &format!("{}{path}", r.url),
            token.map(Secret::new).as_ref(),
            None,
        )
        .await
        .unwrap();
    (resp.status, resp.text())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_leaves_the_registry_only_when_it_is_safe() {
    let f = fleet(100).await;
    let t = token(&f.lead, json!({})).await;
    assert_eq!(
        join(&t, &request("c1", "compute", 1)).await.0,
        StatusCode::OK
    );
    let pg = &f._pg;
    let running = start(config("vengeance", "compute", "10.0.0.9", pg, pg)).await;
    assert!(
        testbed::postgres::wait_until(Duration::from_secs(10), || async {
            running.status_of("vengeance").await == "passing"
        })
        .await
    );

    for (path, token, status, reason) in [
        ("/nodes/c1", None, StatusCode::UNAUTHORIZED, ""),
        (
            "/nodes/aurora",
            Some(ADMIN),
            StatusCode::CONFLICT,
            "is the primary",
        ),
        (
            "/nodes/vengeance",
            Some(ADMIN),
            StatusCode::CONFLICT,
            "still running",
        ),
        (
            "/nodes/ghost",
            Some(ADMIN),
            StatusCode::NOT_FOUND,
            "not in the registry",
        ),
        (
            "/nodes/Bad_Name",
            Some(ADMIN),
            StatusCode::BAD_REQUEST,
            "node name",
        ),
    ] {
        let (s, body) = delete(&f.lead, path, token).await;
        assert_eq!(s, status, "{path}: {body}");
        assert!(body.contains(reason), "{path}: {body}");
    }
    // A node that joined and never reported goes; a running one with force.
    assert_eq!(
        delete(&f.lead, "/nodes/c1", Some(ADMIN)).await.0,
        StatusCode::OK
    );
    running.stop().await;
    let (s, body) = delete(&f.lead, "/nodes/vengeance?force=true", Some(ADMIN)).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let names: Vec<String> = registry(pg).await.into_iter().map(|r| r.0).collect();
    assert_eq!(names, ["aurora"]);
    let c = pg.connect("postgres").await.unwrap();
    let logged: Vec<String> = c
        .query(
            "SELECT details->>'removed' FROM aurora.events WHERE kind = 'node_removed' ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(logged, ["c1", "vengeance"]);
    f.lead.stop().await;
}
