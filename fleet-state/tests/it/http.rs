//! Members over real HTTP: each behind a sidecar-kit admin server (the one
//! repl-manager runs) that checks the admin token before routing
//! `POST /fleet/raft` to `FleetState::handle_http`, talking through
//! `HttpTransport` on loopback.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use fleet_state::{
    Command, FleetState, HttpTransport, Message, Peer, Settings, Transport, TransportError,
};
use hyper::{Method, StatusCode};
use sidecar_kit::admin::{AdminApi, AdminRequest, AdminServer, Routed};
use sidecar_kit::http_client::HttpClient;
use sidecar_kit::{AdminConfig, Lifecycle, Metrics, Secret};

const TOKEN: &str = "fleet-admin-token";

#[derive(Default)]
struct RaftApi {
    state: OnceLock<FleetState>,
}

impl AdminApi for RaftApi {
    async fn handle(&self, req: AdminRequest) -> Routed {
        match (req.path.as_str(), &req.method, self.state.get()) {
            (HttpTransport::PATH, &Method::POST, Some(s)) => s.handle_http(&req).await.into(),
            (HttpTransport::PATH, &Method::POST, None) => Routed::NotFound,
            (HttpTransport::PATH, _, _) => Routed::MethodNotAllowed("POST"),
            _ => Routed::NotFound,
        }
    }
}

struct Member {
    server: AdminServer,
    api: Arc<RaftApi>,
    url: String,
    _dir: tempfile::TempDir,
}

async fn serve() -> (AdminServer, Arc<RaftApi>, String) {
    let mut cfg = AdminConfig::on_port(0);
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    cfg.token = Some(Secret::new(TOKEN));
    let api = Arc::new(RaftApi::default());
    let server = AdminServer::start(
        &cfg,
        api.clone(),
        Metrics::new("fleet-state-test").unwrap(),
        Lifecycle::new(),
    )
    .await
    .unwrap();
    let url = format!("http://{}", server.local_addr());
    (server, api, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn members_agree_over_the_admin_servers_and_refuse_what_is_not_theirs() {
    let mut members = vec![];
    for _ in 0..3 {
        let (server, api, url) = serve().await;
        members.push(Member {
            server,
            api,
            url,
            _dir: tempfile::tempdir().unwrap(),
        });
    }
    let peers: BTreeMap<u64, Peer> = members
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let name = ["lead", "backup", "c1"][i].to_string();
            (
                i as u64 + 1,
                Peer {
                    name,
                    addr: m.url.clone(),
                },
            )
        })
        .collect();
    for (i, m) in members.iter().enumerate() {
        let mut s = Settings::new(i as u64 + 1, m._dir.path());
        s.heartbeat = Duration::from_millis(100);
        s.election_min = Duration::from_millis(500);
        s.election_max = Duration::from_millis(1000);
        let t: Arc<dyn Transport> = Arc::new(HttpTransport::new(
            Some(Secret::new(TOKEN)),
            Duration::from_secs(2),
        ));
        let state = FleetState::open(s, t).await.unwrap();
        assert!(m.api.state.set(state).is_ok());
    }
    let states: Vec<FleetState> = members
        .iter()
        .map(|m| m.api.state.get().unwrap().clone())
        .collect();
    let st = |i: usize| states[i].clone();
    st(0).initialize(peers.clone()).await.unwrap();
    // Any member's proposal commits (forwarded over HTTP to the leader).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let out = loop {
        match st(2)
            .propose(Command::Acquire {
                member: "lead".into(),
                seen: None,
                at_least: 0,
                require_sync: false,
                automatic: false,
                ttl_ms: 0,
            })
            .await
        {
            Ok(o) => break o,
            Err(e) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "never committed: {e}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert!(out.applied(), "{out:?}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while (0..3).any(|i| st(i).view().leader_member() != Some("lead")) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "members did not all apply it"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A caller without the admin token changes nothing: 401 before routing.
    let wrong = HttpTransport::new(Some(Secret::new("not-the-token")), Duration::from_secs(2));
    let msg = Message::Propose(Command::Release {
        member: "lead".into(),
        revision: out.view().unwrap().leader.clone().unwrap().revision,
    });
    match wrong.call(1, &peers[&1], msg).await {
        Err(TransportError::Failed(e)) => assert!(e.contains("401"), "{e}"),
        other => panic!("a wrong token was let through: {other:?}"),
    }
    assert_eq!(st(0).view().leader_member(), Some("lead"));
    // A body that is not a message: 400 naming why, nothing applied.
    let resp = HttpClient::new(Duration::from_secs(2))
        .send(
            Method::POST,
            &format!("{}{}", members[0].url, HttpTransport::PATH),
            Some(&Secret::new(TOKEN)),
            Some(&serde_json::json!({"format_disk": {}})),
        )
        .await
        .unwrap();
    assert_eq!(resp.status, StatusCode::BAD_REQUEST, "{}", resp.text());
    assert!(
        resp.text().contains("not a fleet-state message"),
        "{}",
        resp.text()
    );

    // One member's server gone (connection refused): the other two still
    // commit, and a call to it is "unreachable".
    let gone = members.remove(2);
    let gone_peer = peers[&3].clone();
    st(2).shutdown().await;
    gone.server.stop(Duration::from_secs(1)).await;
    let t = HttpTransport::new(Some(Secret::new(TOKEN)), Duration::from_secs(2));
    let r = t
        .call(
            3,
            &gone_peer,
            Message::Propose(Command::Release {
                member: "x".into(),
                revision: 0,
            }),
        )
        .await;
    assert!(matches!(r, Err(TransportError::Unreachable(_))), "{r:?}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let key = st(0).view().leader.unwrap();
        let renew = Command::Renew {
            member: "lead".into(),
            revision: key.revision,
            ttl_ms: 0,
        };
        match st(1).propose(renew).await {
            Ok(o) if o.applied() => break,
            other => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "two of three did not commit: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    for (i, m) in members.into_iter().enumerate() {
        st(i).shutdown().await;
        m.server.stop(Duration::from_secs(1)).await;
    }
}
