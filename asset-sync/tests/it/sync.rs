//! asset-sync against a real S3 server (Garage) through aws-sdk-s3.

#![allow(clippy::unwrap_used)] // test helpers may panic: a panic is a test failure

use std::path::{Path, PathBuf};
use std::time::Duration;

use asset_sync::{Config, PassOptions, PassReport, Progress, Syncer};
use aws_sdk_s3::primitives::ByteStream;
use sidecar_kit::Secret;
use testbed::Garage;
use tokio_util::sync::CancellationToken;

const BUCKET: &str = "assets";

struct Fixture {
    garage: Garage,
    s3: aws_sdk_s3::Client,
    _dir: tempfile::TempDir,
    root: PathBuf,
    target: PathBuf,
}

async fn fixture() -> Fixture {
    let garage = Garage::start().await.unwrap();
    garage.create_bucket(BUCKET).await.unwrap();
    let s3 = garage.s3_client();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let target = root.join("assets");
    Fixture {
        garage,
        s3,
        _dir: dir,
        root,
        target,
    }
}

impl Fixture {
    fn config(&self) -> Config {
        let mut c = Config::default();
        c.s3.endpoint = Some(self.garage.endpoint());
        c.s3.region = "garage".into();
        c.s3.bucket = BUCKET.into();
        c.s3.access_key_id = Some(Secret::new(self.garage.key_id.clone()));
        c.s3.secret_access_key = Some(Secret::new(self.garage.secret_key.clone()));
        c.s3.connect_timeout_secs = 1;
        c.s3.read_timeout_secs = 5;
        c.sync.target_dir = self.target.clone();
        c.sync.attempts = 2;
        c
    }

    async fn put(&self, key: &str, body: &[u8]) {
        self.s3
            .put_object()
            .bucket(BUCKET)
            .key(key)
            .body(ByteStream::from(body.to_vec()))
            .send()
            .await
            .unwrap();
    }

    async fn delete(&self, key: &str) {
        self.s3
            .delete_object()
            .bucket(BUCKET)
            .key(key)
            .send()
            .await
            .unwrap();
    }

    async fn pass(&self, config: Config) -> PassReport {
        self.try_pass(config, PassOptions::default()).await.unwrap()
    }

    async fn try_pass(
        &self,
        config: Config,
        opts: PassOptions,
    ) -> Result<PassReport, asset_sync::pass::PassError> {
        Syncer::new(config)
            .await
            .pass(opts, &CancellationToken::new(), &Progress::default())
            .await
    }

    /// asset-sync's state directory: beside the target, never inside it.
    fn state(&self) -> PathBuf {
        self.root.join(".assets.asset-sync")
    }

    fn read(&self, rel: &str) -> Option<Vec<u8>> {
        std::fs::read(self.target.join(rel)).ok()
    }
}

/// Every file under `dir`, relative. Nothing is skipped: the target holds
/// the mirrored files and nothing else (no manifest, no staging).
fn files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn mirror_lifecycle() {
    let f = fixture().await;
    f.put("logo.png", b"logo-v1").await;
    f.put("img/a.png", b"aaaa").await;
    f.put("img/deep/b.png", b"bbbb").await;

    // First sync.
    let r = f.pass(f.config()).await;
    assert!(r.ok, "{r:?}");
    assert_eq!((r.listed, r.downloaded), (3, 3));
    assert_eq!(f.read("img/deep/b.png").unwrap(), b"bbbb");

    // Nothing changed: nothing downloaded.
    let r = f.pass(f.config()).await;
    assert_eq!((r.downloaded, r.unchanged), (0, 3), "{r:?}");

    // Same-size replacement is caught by the ETag.
    f.put("img/a.png", b"AAAA").await;
    let r = f.pass(f.config()).await;
    assert_eq!(r.downloaded, 1, "{r:?}");
    assert_eq!(f.read("img/a.png").unwrap(), b"AAAA");

    // Local tampering and local deletion are restored.
    std::fs::write(f.target.join("logo.png"), b"defaced").unwrap();
    std::fs::remove_file(f.target.join("img/deep/b.png")).unwrap();
    let r = f.pass(f.config()).await;
    assert_eq!(r.downloaded, 2, "{r:?}");
    assert_eq!(f.read("logo.png").unwrap(), b"logo-v1");
    assert_eq!(f.read("img/deep/b.png").unwrap(), b"bbbb");

    // Deletion upstream deletes locally, and the emptied directory too.
    f.delete("img/deep/b.png").await;
    let r = f.pass(f.config()).await;
    assert_eq!(r.deleted, 1, "{r:?}");
    assert!(!f.target.join("img/deep").exists());
    assert_eq!(files(&f.target), vec!["img/a.png", "logo.png"]);

    // A lost manifest costs a verification, not a download.
    std::fs::remove_file(f.state().join("manifest.json")).unwrap();
    let r = f.pass(f.config()).await;
    assert_eq!((r.downloaded, r.adopted), (0, 2), "{r:?}");

    // delete = false keeps files whose objects are gone.
    f.delete("logo.png").await;
    let mut keep = f.config();
    keep.sync.delete = false;
    let r = f.pass(keep).await;
    assert_eq!(r.deleted, 0);
    assert!(f.read("logo.png").is_some());
}

impl Fixture {
    /// `key` uploaded in parts (each but the last at least 5 MiB), so its
    /// ETag is `<md5 of md5s>-N`: not an MD5 of the bytes.
    async fn put_multipart(&self, key: &str, bodies: &[Vec<u8>]) {
        let up = self
            .s3
            .create_multipart_upload()
            .bucket(BUCKET)
            .key(key)
            .send()
            .await
            .unwrap();
        let id = up.upload_id().unwrap();
        let mut parts = Vec::new();
        for (n, body) in bodies.iter().enumerate() {
            let n = n as i32 + 1;
            let p = self
                .s3
                .upload_part()
                .bucket(BUCKET)
                .key(key)
                .upload_id(id)
                .part_number(n)
                .body(ByteStream::from(body.clone()))
                .send()
                .await
                .unwrap();
            parts.push(
                aws_sdk_s3::types::CompletedPart::builder()
                    .part_number(n)
                    .e_tag(p.e_tag().unwrap())
                    .build(),
            );
        }
        self.s3
            .complete_multipart_upload()
            .bucket(BUCKET)
            .key(key)
            .upload_id(id)
            .multipart_upload(
                aws_sdk_s3::types::CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn multipart_objects_are_verified() {
    let f = fixture().await;
    let part = vec![7u8; 5 << 20];
    let last = b"tail".to_vec();
    f.put_multipart("big/video.bin", &[part.clone(), last.clone()])
        .await;
    let head =
        f.s3.head_object()
            .bucket(BUCKET)
            .key("big/video.bin")
            .send()
            .await
            .unwrap();
    assert!(head.e_tag().unwrap().contains('-'), "a multipart ETag");

    // Both paths: a plain stream and parallel ranges.
    for ranged in [false, true] {
        let mut c = f.config();
        if ranged {
            c.sync.ranged_threshold_bytes = 1 << 20;
            c.sync.range_size_bytes = 1 << 20;
            std::fs::remove_dir_all(&f.target).unwrap();
        }
        let r = f.pass(c).await;
        assert!(r.ok, "{r:?}");
        assert_eq!(r.downloaded, 1);
        let got = f.read("big/video.bin").unwrap();
        assert_eq!(got.len(), part.len() + last.len());
        assert!(got.ends_with(b"tail"));
        // Said, not hidden: no checksum on this upload, so size only.
        assert_eq!(r.verified_by.get("size_only"), Some(&1), "{r:?}");
    }

    // A single-part object above the ranged threshold is checked against its MD5.
    f.put("big/single.bin", &vec![3u8; 3 << 20]).await;
    let mut c = f.config();
    c.sync.ranged_threshold_bytes = 1 << 20;
    c.sync.range_size_bytes = 1 << 20;
    let r = f.pass(c).await;
    assert!(r.ok, "{r:?}");
    assert_eq!(f.read("big/single.bin").unwrap(), vec![3u8; 3 << 20]);
    assert_eq!(r.verified_by.get("md5"), Some(&1), "{r:?}");
    // The manifest says how each file was checked.
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(f.state().join("manifest.json")).unwrap())
            .unwrap();
    assert_eq!(
        m["entries"]["big/video.bin"]["verified"], "size_only",
        "{m}"
    );
    assert_eq!(m["entries"]["big/single.bin"]["verified"], "md5", "{m}");
}

/// An S3 front that cuts the last bytes off every successful GET of one
/// key and says so consistently (a matching `Content-Length`), as a broken
/// proxy or a server bug would: nothing below HTTP notices. Everything else
/// passes through unchanged (the `Host` header too, so SigV4 still holds).
async fn truncating_front(origin: std::net::SocketAddr, key: &'static str) -> String {
    use http_body_util::{BodyExt, Full};
    use hyper::body::Incoming;
    use hyper_util::rt::TokioIo;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: hyper::Request<Incoming>| async move {
                        let (parts, body) = req.into_parts();
                        let body = body.collect().await?.to_bytes();
                        let upstream = tokio::net::TcpStream::connect(origin).await.unwrap();
                        let (mut send, conn) =
                            hyper::client::conn::http1::handshake(TokioIo::new(upstream)).await?;
                        tokio::spawn(conn);
                        let get = parts.method == hyper::Method::GET;
                        let cut = get && parts.uri.path().ends_with(key);
                        let resp = send
                            .send_request(hyper::Request::from_parts(parts, Full::new(body)))
                            .await?;
                        let (mut parts, body) = resp.into_parts();
                        let mut body = body.collect().await?.to_bytes();
                        if cut && parts.status.is_success() && body.len() > 4 {
                            body = body.slice(..body.len() - 4);
                            parts
                                .headers
                                .insert(hyper::header::CONTENT_LENGTH, body.len().into());
                        }
                        Ok::<_, hyper::Error>(hyper::Response::from_parts(parts, Full::new(body)))
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    format!("http://{addr}")
}

/// A multipart object has no MD5 to check: its size (and, per range, each
/// range's length) is what stands between a short answer and a truncated
/// file served as complete. Both download paths must refuse it.
#[tokio::test]
async fn a_short_answer_for_a_multipart_object_is_never_published() {
    let f = fixture().await;
    let part = vec![5u8; 5 << 20];
    f.put_multipart("big/cut.bin", &[part.clone(), b"tail".to_vec()])
        .await;
    let origin: std::net::SocketAddr = f
        .garage
        .endpoint()
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let front = truncating_front(origin, "big/cut.bin").await;
    for ranged in [false, true] {
        let mut c = f.config();
        c.s3.endpoint = Some(front.clone());
        c.sync.attempts = 1;
        if ranged {
            c.sync.ranged_threshold_bytes = 1 << 20;
            c.sync.range_size_bytes = 1 << 20;
        }
        let r = f.pass(c).await;
        assert!(!r.ok && r.failed == 1, "ranged {ranged}: {r:?}");
        assert!(
            r.errors.iter().any(|e| e.contains("big/cut.bin")),
            "ranged {ranged}: {r:?}"
        );
        assert_eq!(f.read("big/cut.bin"), None, "ranged {ranged}: published");
    }
    // Straight from the origin, the same object arrives whole.
    let r = f.pass(f.config()).await;
    assert!(r.ok, "{r:?}");
    assert_eq!(f.read("big/cut.bin").unwrap().len(), part.len() + 4);
}

/// Objects uploaded with SSE-C (Garage implements it): their ETag is 32
/// random hex digits, not an MD5, and every GET and HEAD must carry the key.
/// With `s3.sse_customer_key` both download paths mirror them, checked by
/// something other than the ETag; without it, nothing is published.
#[tokio::test]
async fn sse_c_objects_are_mirrored_with_their_key() {
    use base64::Engine as _;
    use md5::Digest as _;
    let f = fixture().await;
    let raw = [42u8; 32];
    let b64 = base64::engine::general_purpose::STANDARD;
    let (key, key_md5) = (b64.encode(raw), b64.encode(md5::Md5::digest(raw)));
    let small = b"sealed".to_vec();
    let large = vec![9u8; 3 << 20];
    for (k, body) in [("small.bin", small.clone()), ("large.bin", large.clone())] {
        f.s3.put_object()
            .bucket(BUCKET)
            .key(k)
            .sse_customer_algorithm("AES256")
            .sse_customer_key(&key)
            .sse_customer_key_md5(&key_md5)
            .body(ByteStream::from(body))
            .send()
            .await
            .unwrap();
    }
    let ranged = |mut c: Config| {
        c.sync.ranged_threshold_bytes = 1 << 20;
        c.sync.range_size_bytes = 1 << 20;
        c
    };
    // Without the key: refused by the server, counted, nothing published.
    let r = f.pass(ranged(f.config())).await;
    assert!(!r.ok && r.failed == 2, "{r:?}");
    assert_eq!(files(&f.target), Vec::<String>::new());

    let mut c = ranged(f.config());
    c.s3.sse_customer_key = Some(Secret::new(key.clone()));
    let r = f.pass(c).await;
    assert!(r.ok, "{r:?}");
    assert_eq!(r.downloaded, 2, "{r:?}");
    assert_eq!(f.read("small.bin").unwrap(), small);
    assert_eq!(f.read("large.bin").unwrap(), large);
    assert_eq!(
        r.verified_by.get("md5"),
        None,
        "an SSE-C ETag is no MD5: {r:?}"
    );
}

#[tokio::test]
async fn unsafe_keys_never_leave_the_target() {
    let f = fixture().await;
    // ("/abs.png" is covered by the unit tests: the S3 path normalises it
    // to "abs.png" before it is stored.)
    let hostile = [
        "../escape.png",
        "a/../../escape2.png",
        "back\\slash.png",
        "ctl\u{1}char.png",
        "dir//double.png",
        "marker/",
        ".asset-sync/manifest.json",
        "conflict",
        "./dot.png",
    ];
    for k in hostile {
        f.put(k, b"evil").await;
    }
    f.put("conflict/inner.png", b"ok").await;
    f.put("fine.png", b"ok").await;
    let r = f.pass(f.config()).await;
    assert_eq!(r.downloaded, 2, "{r:?}");
    assert_eq!(r.rejected as usize, r.listed as usize - 2, "{r:?}");
    for rule in [
        "dot_segment",
        "backslash",
        "control",
        "empty_segment",
        "directory_marker",
        "reserved",
        "file_and_prefix",
    ] {
        assert!(r.rejections.contains_key(rule), "{rule}: {r:?}");
    }
    assert_eq!(files(&f.target), vec!["conflict/inner.png", "fine.png"]);
    // Nothing outside the target but asset-sync's own state beside it.
    assert_eq!(
        files(&f.root),
        vec![
            ".assets.asset-sync/manifest.json",
            "assets/conflict/inner.png",
            "assets/fine.png"
        ]
    );
    // The manifest is still asset-sync's own, not the object's bytes.
    let m = std::fs::read_to_string(f.state().join("manifest.json")).unwrap();
    assert!(m.contains("\"entries\""));
}

#[tokio::test]
async fn failures_delete_nothing() {
    let mut f = fixture().await;
    for i in 0..10 {
        f.put(&format!("f{i}.png"), b"x").await;
    }
    assert!(f.pass(f.config()).await.ok);

    // S3 down with deletions pending (two objects gone from the bucket):
    // the pass fails at the listing and deletes nothing, the cache stays
    // whole.
    f.delete("f0.png").await;
    f.delete("f1.png").await;
    f.garage.stop();
    let err = f
        .try_pass(f.config(), PassOptions::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains(&f.garage.endpoint()), "{err}");
    assert_eq!(files(&f.target).len(), 10);

    // Back up: passes work again.
    f.garage.restart().await.unwrap();
    let ok = testbed::postgres::wait_until(Duration::from_secs(20), || async {
        f.try_pass(f.config(), PassOptions::default())
            .await
            .map(|r| r.ok)
            .unwrap_or(false)
    })
    .await;
    assert!(ok);

    // Most of the bucket gone at once: the guard holds, nothing deleted.
    // (The pass that just succeeded deleted the two pending ones.)
    assert_eq!(files(&f.target).len(), 8);
    for i in 2..8 {
        f.delete(&format!("f{i}.png")).await;
    }
    let r = f.pass(f.config()).await;
    assert!(!r.ok);
    assert!(r.deletion_guard.is_some(), "{r:?}");
    assert_eq!(files(&f.target).len(), 8);
    // Forced, it goes through.
    let r = f
        .try_pass(f.config(), PassOptions { force_delete: true })
        .await
        .unwrap();
    assert_eq!(r.deleted, 6, "{r:?}");

    // An empty listing never empties the cache.
    for i in 8..10 {
        f.delete(&format!("f{i}.png")).await;
    }
    let r = f.pass(f.config()).await;
    assert!(
        r.deletion_guard.as_deref().unwrap().contains("empty"),
        "{r:?}"
    );
    assert_eq!(files(&f.target).len(), 2);
}

#[tokio::test]
async fn prefix_and_filters() {
    let f = fixture().await;
    f.put("img/a.png", b"a").await;
    f.put("img/b.jpg", b"b").await;
    f.put("img/skip/c.png", b"c").await;
    f.put("other/d.png", b"d").await;
    let mut c = f.config();
    c.s3.prefix = "img/".into();
    c.sync.include = vec!["**.png".into()];
    c.sync.exclude = vec!["skip/**".into()];
    let r = f.pass(c).await;
    assert!(r.ok);
    assert_eq!(files(&f.target), vec!["a.png"]);
    assert_eq!(r.filtered, 2, "{r:?}");
}

#[tokio::test]
async fn a_full_disk_fails_cleanly() {
    // A 3 MiB tmpfs as the target's filesystem (needs root, as CI has).
    let f = fixture().await;
    let disk = testbed::Tmpfs::mount(&f.root.join("small-disk"), "3m").unwrap();
    let mnt = disk.path().to_path_buf();

    let blob = vec![9u8; 1 << 20];
    for i in 0..5 {
        f.put(&format!("blob{i}.bin"), &blob).await;
    }
    let mut c = f.config();
    c.sync.target_dir = mnt.join("assets");
    c.sync.attempts = 1;
    // Either the downloads hit the wall (counted) or, with the data in, the
    // manifest did (the pass fails); both are clean failures.
    match f.try_pass(c, PassOptions::default()).await {
        Ok(r) => {
            assert!(!r.ok && r.failed > 0, "{r:?}");
            assert!(r.errors.iter().any(|e| e.contains("full")), "{r:?}");
        }
        Err(e) => assert!(e.to_string().contains("No space left"), "{e}"),
    }
    let state: Vec<_> = std::fs::read_dir(mnt.join(".assets.asset-sync"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!state.iter().any(|n| n.ends_with(".tmp")), "{state:?}");
    // Only complete files were published; no staging leftovers.
    for e in std::fs::read_dir(mnt.join("assets")).unwrap().flatten() {
        if e.path().is_file() {
            assert_eq!(std::fs::read(e.path()).unwrap(), blob);
        }
    }
    assert_eq!(
        std::fs::read_dir(mnt.join(".assets.asset-sync/staging"))
            .unwrap()
            .count(),
        0
    );
}

#[tokio::test]
async fn an_unreachable_origin_falls_back_to_the_next() {
    let f = fixture().await;
    f.put("logo.png", b"from the mirror").await;
    // The first origin: a port nobody listens on (the lead's Garage, down).
    let dead = format!("http://127.0.0.1:{}", testbed::free_port().unwrap());
    let mut config = f.config();
    config.s3.fallback_endpoints = vec![f.garage.endpoint()];
    config.s3.endpoint = Some(dead.clone());
    let r = f.pass(config.clone()).await;
    assert!(r.ok, "{r:?}");
    assert_eq!(r.origin, f.garage.endpoint());
    assert_eq!(f.read("logo.png").unwrap(), b"from the mirror");

    // Every origin down: the pass fails naming both, the mirror stays.
    config.s3.fallback_endpoints = vec![format!(
        "http://127.0.0.1:{}",
        testbed::free_port().unwrap()
    )];
    let err = f
        .try_pass(config, PassOptions::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains(&dead), "{err}");
    assert!(err.contains("every origin failed"), "{err}");
    assert_eq!(files(&f.target), vec!["logo.png"]);
}

/// Replacing every object with new ones is not "delete 50 %": the guard
/// compares deletions with what was mirrored before the pass, not with a
/// total that already counts this pass's downloads.
#[tokio::test]
async fn replacing_the_bucket_does_not_delete_the_mirror() {
    let f = fixture().await;
    for i in 0..40 {
        f.put(&format!("old/{i}.png"), b"old").await;
    }
    assert!(f.pass(f.config()).await.ok);
    for i in 0..40 {
        f.delete(&format!("old/{i}.png")).await;
        f.put(&format!("new/{i}.png"), b"new").await;
    }
    let r = f.pass(f.config()).await;
    assert_eq!((r.downloaded, r.deleted), (40, 0), "{r:?}");
    let reason = r.deletion_guard.as_deref().unwrap_or_default();
    assert!(reason.contains("40 of 40"), "{r:?}");
    assert_eq!(files(&f.target).len(), 80);
    // The operator confirms: the old half goes.
    let r = f
        .try_pass(f.config(), PassOptions { force_delete: true })
        .await
        .unwrap();
    assert_eq!(r.deleted, 40, "{r:?}");
    assert_eq!(files(&f.target).len(), 40);
}

/// `a` is mirrored, then someone uploads `a/b`: the directory wins, the
/// stale file `a` stops being served, and every later pass succeeds.
#[tokio::test]
async fn a_file_that_becomes_a_directory_converges() {
    let f = fixture().await;
    f.put("a", b"file").await;
    for i in 0..4 {
        f.put(&format!("keep{i}.png"), b"k").await;
    }
    assert!(f.pass(f.config()).await.ok);
    assert_eq!(f.read("a").unwrap(), b"file");

    f.put("a/b", b"inside").await;
    let r = f.pass(f.config()).await;
    assert_eq!(r.failed, 0, "{r:?}");
    assert_eq!(r.rejections.get("file_and_prefix"), Some(&1), "{r:?}");
    assert_eq!(f.read("a/b").unwrap(), b"inside");
    assert_eq!(r.deleted, 1, "{r:?}");
    let r = f.pass(f.config()).await;
    assert_eq!((r.failed, r.downloaded), (0, 0), "{r:?}");
    assert_eq!(files(&f.target).len(), 5);

    // And back: the directory's keys go, the file is mirrored again.
    f.delete("a/b").await;
    let r = f.pass(f.config()).await;
    assert_eq!(r.failed, 0, "{r:?}");
    assert_eq!(f.read("a").unwrap(), b"file");
}

/// A rejected key is not a directory of anything: `logo.png//x` must not
/// freeze `logo.png`, nor may a key the filters leave out.
#[tokio::test]
async fn a_hostile_or_filtered_key_does_not_freeze_a_good_one() {
    let f = fixture().await;
    f.put("logo.png", b"logo").await;
    f.put("logo.png//x", b"evil").await;
    f.put("icon.png", b"icon").await;
    f.put("icon.png/skip.txt", b"filtered").await;
    let mut c = f.config();
    c.sync.exclude = vec!["**.txt".into()];
    let r = f.pass(c).await;
    assert_eq!(f.read("logo.png").unwrap(), b"logo", "{r:?}");
    assert_eq!(f.read("icon.png").unwrap(), b"icon", "{r:?}");
    assert_eq!(r.rejections.get("file_and_prefix"), None, "{r:?}");
    assert_eq!(r.rejections.get("empty_segment"), Some(&1), "{r:?}");
}

/// A prefix is a directory boundary: `prefix = "img"` is `img/`.
#[tokio::test]
async fn a_prefix_ends_at_a_directory_boundary() {
    let f = fixture().await;
    f.put("img/a.png", b"a").await;
    f.put("img2/x.png", b"x").await;
    f.put("imgx", b"x").await;
    let mut c = f.config();
    c.s3.prefix = "img".into();
    let r = f.pass(c).await;
    assert!(r.ok, "{r:?}");
    assert_eq!(files(&f.target), vec!["a.png"]);
}

/// Someone replaced a mirrored directory with a symlink to elsewhere; when
/// the bucket then drops a key below it, the delete must not follow the
/// link out of the target.
#[tokio::test]
async fn deletes_never_follow_a_symlinked_parent() {
    let f = fixture().await;
    for i in 0..4 {
        f.put(&format!("keep{i}.png"), b"k").await;
    }
    f.put("img/a.png", b"a").await;
    assert!(f.pass(f.config()).await.ok);
    let outside = f.root.join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("a.png"), b"not ours").unwrap();
    std::fs::remove_dir_all(f.target.join("img")).unwrap();
    std::os::unix::fs::symlink(&outside, f.target.join("img")).unwrap();
    f.delete("img/a.png").await;
    let r = f.pass(f.config()).await;
    assert_eq!(
        std::fs::read(outside.join("a.png")).unwrap(),
        b"not ours",
        "deleted through the symlink: {r:?}"
    );
    assert!(!r.ok, "{r:?}");
    assert!(
        r.errors.iter().any(|e| e.contains("not a real directory")),
        "{r:?}"
    );
}
