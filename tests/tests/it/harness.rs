//! The harness itself: real PostgreSQL clusters and a real Garage, side by
//! side, torn down without leftovers.

#![allow(clippy::unwrap_used)] // test helpers may panic: a panic is a test failure

use std::path::PathBuf;
use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use testbed::{Garage, PgCluster, PgOptions, StopMode};

fn alive(pid: u32) -> bool {
    testbed::process::pid_alive(pid)
}

#[tokio::test]
async fn two_postgres_clusters_and_garage_side_by_side() {
    let (a, b, garage) = tokio::join!(
        PgCluster::start_new(PgOptions::named("alpha")),
        PgCluster::start_new(PgOptions::named("beta")),
        Garage::start(),
    );
    let (a, b, garage) = (a.unwrap(), b.unwrap(), garage.unwrap());
    assert_ne!(a.port(), b.port());

    // Each cluster is its own server: a table in one is absent from the other.
    let ca = a.connect("postgres").await.unwrap();
    let cb = b.connect("postgres").await.unwrap();
    ca.batch_execute("CREATE TABLE only_alpha (x int); INSERT INTO only_alpha VALUES (1)")
        .await
        .unwrap();
    assert!(cb.query("SELECT * FROM only_alpha", &[]).await.is_err());
    let checksums: String = ca
        .query_one("SHOW data_checksums", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        checksums, "on",
        "pg_rewind needs checksums or wal_log_hints"
    );

    // Garage through the real aws-sdk-s3 client.
    garage.create_bucket("assets").await.unwrap();
    let s3 = garage.s3_client();
    s3.put_object()
        .bucket("assets")
        .key("logo.png")
        .body(ByteStream::from_static(b"not really a png"))
        .send()
        .await
        .unwrap();
    let got = s3
        .get_object()
        .bucket("assets")
        .key("logo.png")
        .send()
        .await
        .unwrap();
    let body = got.body.collect().await.unwrap().into_bytes();
    assert_eq!(&body[..], b"not really a png");

    // Teardown: every process gone, every directory removed.
    let pids: Vec<u32> = [a.postmaster_pid(), b.postmaster_pid()]
        .into_iter()
        .flatten()
        .map(|p| p as u32)
        .chain(garage.pid())
        .collect();
    assert_eq!(pids.len(), 3);
    let dirs: Vec<PathBuf> = vec![a.dir().into(), b.dir().into(), garage.dir().into()];
    drop(ca);
    drop(cb);
    drop(a);
    drop(b);
    drop(garage);
    tokio::time::sleep(Duration::from_millis(500)).await;
    for pid in pids {
        assert!(!alive(pid), "process {pid} survived teardown");
    }
    for d in dirs {
        assert!(!d.exists(), "{} survived teardown", d.display());
    }
}

#[tokio::test]
async fn teardown_also_happens_on_panic() {
    let dir = std::sync::Arc::new(std::sync::Mutex::new(None::<(PathBuf, i32)>));
    let seen = dir.clone();
    let outcome = tokio::spawn(async move {
        let pg = PgCluster::start_new(PgOptions::named("doomed"))
            .await
            .unwrap();
        *seen.lock().unwrap() = Some((pg.dir().to_path_buf(), pg.postmaster_pid().unwrap()));
        panic!("a failing test");
    })
    .await;
    assert!(outcome.is_err());
    let (path, pid) = dir.lock().unwrap().clone().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!path.exists(), "temp dir left behind");
    assert!(!alive(pid as u32), "postgres left running");
}

#[tokio::test]
async fn a_replica_cloned_from_a_primary_streams() {
    // Several clusters at once, one a streaming replica of the other: the
    // shape every replication test builds on.
    let primary = PgCluster::start_new(PgOptions::named("primary"))
        .await
        .unwrap();
    let c = primary.connect("postgres").await.unwrap();
    c.batch_execute("CREATE TABLE t (x int); INSERT INTO t VALUES (42)")
        .await
        .unwrap();

    let mut replica = PgCluster::standby_of(&primary, PgOptions::named("replica"))
        .await
        .unwrap();

    let rc = replica.connect("postgres").await.unwrap();
    let in_recovery: bool = rc
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .unwrap()
        .get(0);
    assert!(in_recovery);
    c.execute("INSERT INTO t VALUES (43)", &[]).await.unwrap();
    let found = testbed::postgres::wait_until(Duration::from_secs(10), || async {
        rc.query_one("SELECT count(*) FROM t", &[])
            .await
            .map(|r| r.get::<_, i64>(0) == 2)
            .unwrap_or(false)
    })
    .await;
    assert!(found, "row did not replicate");

    replica.stop(StopMode::Fast).await.unwrap();
    assert!(!replica.is_running());
}

/// Whether a TCP connection from namespace `from` to `to_ip:port` succeeds
/// within two seconds (a dropped SYN times out; no RST is needed).
async fn ns_connects(
    net: &testbed::netns::Network,
    from: usize,
    to_ip: std::net::Ipv4Addr,
    port: u16,
) -> bool {
    let script = format!(
        "import socket; s = socket.create_connection(('{to_ip}', {port}), timeout=2); s.close()"
    );
    net.command(from, "python3")
        .args(["-c", &script])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .await
        .map(|s| s.success())
        .unwrap_or(false)
}

#[tokio::test]
async fn network_namespaces_reach_each_other_beside_docker_and_a_cut_node_does_not() {
    // Docker sets the FORWARD policy to DROP and loads br_netfilter, which
    // sends bridged frames through FORWARD: node-to-node traffic on the
    // test bridge must still flow (the harness accepts it explicitly).
    let net = testbed::netns::Network::create(3).unwrap();
    let port = 7777;
    let listen = format!(
        "import socket, time; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); \
         s.bind(('0.0.0.0', {port})); s.listen(16); time.sleep(30)"
    );
    let mut listener = net
        .command(0, "python3")
        .args(["-c", &listen])
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let target = net.node(0).ip;
    let up = testbed::postgres::wait_until(Duration::from_secs(5), || async {
        ns_connects(&net, 1, target, port).await
    })
    .await;
    assert!(up, "node 1 cannot reach node 0 across the test bridge");
    assert!(
        ns_connects(&net, 2, target, port).await,
        "node 2 cannot reach node 0"
    );

    net.cut(2).unwrap();
    assert!(
        !ns_connects(&net, 2, target, port).await,
        "a cut node still reaches node 0"
    );
    assert!(
        ns_connects(&net, 1, target, port).await,
        "cutting node 2 cut node 1 too"
    );
    net.heal(2).unwrap();
    // The port needs a moment to forward again after its link comes up.
    let healed = testbed::postgres::wait_until(Duration::from_secs(10), || async {
        ns_connects(&net, 2, target, port).await
    })
    .await;
    assert!(healed, "a healed node is still cut off");
    let _ = listener.kill().await;
}
