//! asset-sync as operators run it: the binary, its exit codes, the daemon's
//! admin API, and a SIGKILL in the middle of a pass.

#![allow(clippy::unwrap_used)] // test helpers may panic: a panic is a test failure

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use aurora_api::assets::{AssetStatus, PassOutcome};
use aws_sdk_s3::primitives::ByteStream;
use hyper::Method;
use sidecar_kit::http_client::HttpClient;
use sidecar_kit::Secret;
use testbed::tools::workspace_bin;
use testbed::{free_port, Garage, SidecarProcess, SidecarSpec};

const TOKEN: &str = "asset-sync-test-token-0123";

fn env_for(g: &Garage, target: &Path) -> Vec<(String, String)> {
    [
        ("AURORA_S3__ENDPOINT", g.endpoint()),
        ("AURORA_S3__REGION", "garage".into()),
        ("AURORA_S3__BUCKET", "assets".into()),
        ("AURORA_S3__ACCESS_KEY_ID", g.key_id.clone()),
        ("AURORA_S3__SECRET_ACCESS_KEY", g.secret_key.clone()),
        ("AURORA_SYNC__TARGET_DIR", target.display().to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// A Garage with an empty `assets` bucket.
async fn garage() -> Garage {
    let g = Garage::start().await.unwrap();
    g.create_bucket("assets").await.unwrap();
    g
}

/// Uploads `body` as `key` into the `assets` bucket.
async fn put(g: &Garage, key: &str, body: Vec<u8>) {
    g.s3_client()
        .put_object()
        .bucket("assets")
        .key(key)
        .body(ByteStream::from(body))
        .send()
        .await
        .unwrap();
}

fn once(env: &[(String, String)], args: &[&str]) -> std::process::Output {
    Command::new(workspace_bin("asset-sync").unwrap())
        .arg("once")
        .args(args)
        .env_remove("AURORA_CONFIG")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap()
}

#[test]
fn config_errors_are_clear() {
    // No bucket: exit 2 naming the key, before touching anything.
    let out = Command::new(workspace_bin("asset-sync").unwrap())
        .args(["once"])
        .env_remove("AURORA_CONFIG")
        .env(
            "AURORA_SYNC__TARGET_DIR",
            "/tmp/never-created-by-asset-sync",
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("s3.bucket") && err.contains("required"),
        "{err}"
    );
    assert!(!Path::new("/tmp/never-created-by-asset-sync").exists());

    let out = Command::new(workspace_bin("asset-sync").unwrap())
        .args(["once"])
        .env("AURORA_S3__BUCKET", "assets")
        .env("AURORA_SYNC__TARGET_DIR", "relative/dir")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("sync.target_dir"));
    // A malformed SSE-C key: exit 2 naming the key, never printing it.
    let out = Command::new(workspace_bin("asset-sync").unwrap())
        .args(["once"])
        .env("AURORA_S3__BUCKET", "assets")
        .env("AURORA_S3__SSE_CUSTOMER_KEY", "c2VjcmV0LWJ1dC1zaG9ydA==")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("s3.sse_customer_key") && err.contains("32"),
        "{err}"
    );
    assert!(!err.contains("c2VjcmV0LWJ1dC1zaG9ydA"), "{err}");
}

#[test]
fn unreachable_endpoint_fails_the_pass_with_the_url() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port().unwrap();
    let env: Vec<(String, String)> = [
        ("AURORA_S3__ENDPOINT", format!("http://127.0.0.1:{port}")),
        ("AURORA_S3__BUCKET", "assets".into()),
        (
            "AURORA_S3__ACCESS_KEY_ID",
            "GK00000000000000000000000".into(),
        ),
        (
            "AURORA_S3__SECRET_ACCESS_KEY",
            "secret-never-printed".into(),
        ),
        ("AURORA_S3__CONNECT_TIMEOUT_SECS", "1".into()),
        (
            "AURORA_SYNC__TARGET_DIR",
            dir.path().join("a").display().to_string(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let out = once(&env, &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(!err.contains("secret-never-printed"));
}

#[test]
fn a_state_dir_on_another_mount_exits_2_before_any_pass() {
    // The state directory on a tmpfs, the target on the disk: a staged file
    // could never be renamed into place. Refused at start with exit 2,
    // before the (unreachable) bucket is contacted. Needs root, as CI has.
    let dir = tempfile::tempdir().unwrap();
    let other = testbed::Tmpfs::mount(&dir.path().join("other"), "1m").unwrap();
    let mnt = other.path();
    let port = free_port().unwrap();
    let env: Vec<(String, String)> = [
        ("AURORA_S3__ENDPOINT", format!("http://127.0.0.1:{port}")),
        ("AURORA_S3__BUCKET", "assets".into()),
        (
            "AURORA_SYNC__TARGET_DIR",
            dir.path().join("mirror").display().to_string(),
        ),
        (
            "AURORA_SYNC__STATE_DIR",
            mnt.join("state").display().to_string(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let out = once(&env, &[]);
    drop(other);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("sync.state_dir") && err.contains("one filesystem"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[tokio::test]
async fn an_upgrade_moves_the_old_state_out_of_the_served_directory() {
    // An older version kept manifest.json and staging/ in <target>/.asset-sync,
    // where whoever serves the mirror served them too.
    let g = garage().await;
    put(&g, "logo.png", b"logo".to_vec()).await;
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("assets");
    let env = env_for(&g, &target);
    let out = once(&env, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Stage the old layout: the manifest back inside the target, plus a
    // staging leftover.
    let state = dir.path().join(".assets.asset-sync");
    let legacy = target.join(".asset-sync");
    std::fs::create_dir_all(legacy.join("staging")).unwrap();
    std::fs::rename(state.join("manifest.json"), legacy.join("manifest.json")).unwrap();
    std::fs::write(legacy.join("staging/half.part"), b"half").unwrap();

    let out = once(&env, &["--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // The old manifest was kept: nothing downloaded or re-verified again.
    assert_eq!(report["downloaded"], 0, "{report}");
    assert_eq!(report["adopted"], 0, "{report}");
    assert_eq!(report["unchanged"], 1, "{report}");
    assert!(!legacy.exists());
    assert!(state.join("manifest.json").is_file());
    let served: Vec<_> = std::fs::read_dir(&target)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(served, vec!["logo.png"]);
}

#[tokio::test]
async fn once_reports_and_json() {
    let g = garage().await;
    for i in 0..5 {
        put(&g, &format!("p/{i}.png"), vec![i as u8; 1000]).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let env = env_for(&g, &dir.path().join("assets"));
    let out = once(&env, &["--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["downloaded"], 5);
    assert_eq!(report["bytes_downloaded"], 5000);
    let out = once(&env, &[]);
    let line = String::from_utf8_lossy(&out.stdout);
    assert!(
        line.contains("downloaded 0") && line.contains("unchanged 5"),
        "{line}"
    );
}

#[tokio::test]
async fn sigkill_mid_pass_leaves_no_partial_file() {
    let g = garage().await;
    let big = vec![0x5au8; 8 << 20];
    for i in 0..6 {
        put(&g, &format!("big/{i}.bin"), big.clone()).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("assets");
    let mut env = env_for(&g, &target);
    // Slow enough to be caught in the middle.
    env.push((
        "AURORA_SYNC__BANDWIDTH_LIMIT_BYTES".into(),
        (16u64 << 20).to_string(),
    ));
    env.push(("AURORA_SYNC__CONCURRENCY".into(), "2".into()));
    let mut child = Command::new(workspace_bin("asset-sync").unwrap())
        .arg("once")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let staging = dir.path().join(".assets.asset-sync/staging");
    // Killed in the middle of a large download: a staging file with more
    // than 1 MiB of its 8 MiB written.
    let partial = || {
        std::fs::read_dir(&staging)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.metadata().ok())
            .any(|m| m.len() > 1 << 20 && m.len() < big.len() as u64)
    };
    let caught =
        testbed::postgres::wait_until(Duration::from_secs(20), || async { partial() }).await;
    assert!(caught, "never saw a download half-way");
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(partial(), "the kill came after the download finished");

    // Whatever is published is complete; partials exist only in staging,
    // outside the served directory: the target holds `big/` and nothing else.
    let top: Vec<_> = std::fs::read_dir(&target)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(top.iter().all(|n| n == "big"), "{top:?}");
    for e in std::fs::read_dir(target.join("big"))
        .into_iter()
        .flatten()
        .flatten()
    {
        assert_eq!(
            std::fs::read(e.path()).unwrap(),
            big,
            "{}",
            e.path().display()
        );
    }
    // The next pass cleans up and completes.
    env.pop();
    let out = once(&env, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read_dir(&staging).unwrap().count(), 0);
    for i in 0..6 {
        assert_eq!(
            std::fs::read(target.join(format!("big/{i}.bin"))).unwrap(),
            big
        );
    }
}

#[tokio::test]
async fn daemon_syncs_on_request_and_reports_health() {
    let mut g = garage().await;
    put(&g, "a.png", b"a".to_vec()).await;
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("assets");
    let port = free_port().unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let spec = |g: &Garage| {
        let mut spec = SidecarSpec::new(
            "asset-sync",
            dir.path(),
            addr,
            format!(
                "[admin]\nlisten = \"{addr}\"\ntoken = \"{TOKEN}\"\n[sync]\ninterval_secs = 3600\n"
            ),
        )
        .arg("run");
        for (k, v) in env_for(g, &target) {
            spec = spec.env(&k, &v);
        }
        spec
    };
    let mut p = SidecarProcess::start(spec(&g), Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(std::fs::read(target.join("a.png")).unwrap(), b"a");

    // POST /sync: token required, then a fresh pass and its report.
    let http = HttpClient::new(Duration::from_secs(30));
    let url = format!("{}/sync", p.admin_url());
    let r = http.send(Method::POST, &url, None, None).await.unwrap();
    assert_eq!(r.status, 401);
    put(&g, "b.png", b"b".to_vec()).await;
    let token = Secret::new(TOKEN);
    let r = http
        .send(Method::POST, &url, Some(&token), None)
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let body: PassOutcome = testbed::contract::read(&r, "POST /sync");
    assert_eq!(
        body.report.as_ref().map(|r| r.downloaded),
        Some(1),
        "{body:?}"
    );
    let (_, st): (_, AssetStatus) =
        testbed::contract::get(&http, &format!("{}/status", p.admin_url())).await;
    assert_eq!(st.last_pass.map(|o| o.seq), Some(body.seq));
    assert!(!st.running_pass);
    assert_eq!(std::fs::read(target.join("b.png")).unwrap(), b"b");

    let metrics = http
        .get(&format!("{}/metrics", p.admin_url()))
        .await
        .unwrap()
        .text();
    assert!(
        metrics.contains("aurora_asset_sync_objects_downloaded_total 2"),
        "{metrics}"
    );
    assert!(metrics.contains("aurora_asset_sync_keys_rejected_total{rule=\"dot_segment\"} 0"));

    // A second process on the same mirror would delete the daemon's staging
    // files and race on its manifest: it exits 2, naming the holder.
    let second = once(&env_for(&g, &target), &[]);
    let err = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("pid {}", p.pid().unwrap())), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    // S3 down: health degraded with the reason, still ready, cache intact.
    g.stop();
    let r = http
        .send(Method::POST, &url, Some(&token), None)
        .await
        .unwrap();
    assert_eq!(r.status, 502);
    let failed: PassOutcome = testbed::contract::read(&r, "POST /sync with S3 down");
    assert!(failed.error.is_some(), "{failed:?}");
    let h: serde_json::Value = http
        .get_json(&format!("{}/health", p.admin_url()))
        .await
        .unwrap();
    assert_eq!(h["status"], "degraded", "{h}");
    assert!(h["reasons"][0]
        .as_str()
        .unwrap()
        .contains("last pass failed"));
    assert!(h["last_success_age_secs"].is_u64());
    let ready = http.get(&format!("{}/ready", p.admin_url())).await.unwrap();
    assert_eq!(ready.status, 200);
    assert!(target.join("a.png").exists());

    let status = p.terminate(Duration::from_secs(10)).await.unwrap();
    assert!(status.success());
    assert!(!p.log().contains(&g.secret_key));

    // Restarted while S3 is still down: the mirror an earlier run listed is
    // served at once, and /ready and /status say so ("works offline").
    let mut p = SidecarProcess::start(spec(&g), Duration::from_secs(15))
        .await
        .expect("ready with S3 down and an earlier mirror");
    let (_, st): (_, AssetStatus) =
        testbed::contract::get(&http, &format!("{}/status", p.admin_url())).await;
    assert!(st.mirror_listed_at.is_some(), "{st:?}");
    assert!(target.join("b.png").exists());
    assert!(p
        .terminate(Duration::from_secs(10))
        .await
        .unwrap()
        .success());
}
