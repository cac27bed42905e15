//! The peer port demands the cluster secret: a cluster started with one works, and a caller without
//! it, or with a wrong one, is refused with UNAUTHENTICATED before anything reaches Raft; a caller
//! from another cluster is refused with FAILED_PRECONDITION.

mod common;

use common::TestCluster;
use raftlot::pb::peer::raft_peer_client::RaftPeerClient;
use raftlot::pb::peer::{Blob, NodeInfoRequest};
use raftlot::pb::v1::{AddRequest, ReadConsistency};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_rpcs_without_the_cluster_secret_are_refused() {
    let cluster = TestCluster::start_with(3, &["--cluster-secret", "s3cret-cookie"]).await;
    let leader = cluster.wait_for_leader().await;
    let follower = cluster.followers(leader)[0];
    cluster
        .counters(follower)
        .add(AddRequest { name: "c".into(), delta: 3, mode: 0, request_id: String::new() })
        .await
        .expect("a follower forwards to the leader with the secret");

    let mut raw = RaftPeerClient::connect(format!("http://{}", cluster.peer_addr(leader))).await.expect("connect");
    let err = raw.node_info(NodeInfoRequest {}).await.expect_err("no secret");
    assert_eq!(err.code(), Code::Unauthenticated);
    let err = raw.vote(Blob { data: vec![1, 2, 3] }).await.expect_err("no secret");
    assert_eq!(err.code(), Code::Unauthenticated);

    let mut wrong = tonic::Request::new(Blob { data: b"garbage".to_vec() });
    wrong.metadata_mut().insert("x-raftlot-secret", "guess".parse().expect("ascii"));
    let err = raw.append_entries(wrong).await.expect_err("wrong secret");
    assert_eq!(err.code(), Code::Unauthenticated);

    let mut right = tonic::Request::new(Blob { data: b"garbage".to_vec() });
    right.metadata_mut().insert("x-raftlot-secret", "s3cret-cookie".parse().expect("ascii"));
    let err = raw.append_entries(right).await.expect_err("garbage with the right secret");
    assert_eq!(err.code(), Code::InvalidArgument, "undecodable peer messages are refused, not unwrapped");

    // Another cluster's node, with the right secret: refused before anything reaches Raft.
    let mut foreign = tonic::Request::new(Blob { data: b"garbage".to_vec() });
    foreign.metadata_mut().insert("x-raftlot-secret", "s3cret-cookie".parse().expect("ascii"));
    foreign.metadata_mut().insert("x-raftlot-cluster", "0123456789abcdef0123456789abcdef".parse().expect("ascii"));
    let err = raw.append_entries(foreign).await.expect_err("another cluster's append");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().starts_with("cluster mismatch"), "{err:?}");

    assert_eq!(cluster.wait_for_leader().await, leader, "refused calls disturbed nothing");
    assert_eq!(cluster.get(follower, "c", ReadConsistency::Linearizable).await.expect("read"), 3);
}
