//! Counters on a three-node cluster of real processes: any node takes any call, reads see every
//! acknowledged write, bad input is refused with the field named and changes nothing.

mod common;

use common::{eventually, TestCluster, WAIT};
use raftlot::pb::v1::{AddRequest, GetRequest, ListRequest, ReadConsistency};
use tonic::Code;

fn add(name: &str, delta: i64) -> AddRequest {
    AddRequest { name: name.into(), delta, mode: 0, request_id: String::new() }
}

/// Writes on one follower, reads on the other.
/// 1. start three nodes; 2. add through follower A; 3. LINEARIZABLE get through follower B sees
/// it at once; 4. LOCAL get through B converges to it; 5. List shows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_on_one_follower_is_read_on_another() {
    let cluster = TestCluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let followers = cluster.followers(leader);
    let (a, b) = (followers[0], followers[1]);

    let reply = cluster.counters(a).add(add("visits", 2)).await.expect("add on a follower").into_inner();
    assert_eq!(reply.value, 2);
    let reply = cluster.counters(a).add(add("visits", 40)).await.expect("second add").into_inner();
    assert_eq!(reply.value, 42);

    let got = cluster
        .counters(b)
        .get(GetRequest { name: "visits".into(), consistency: 0 })
        .await
        .expect("linearizable get on the other follower")
        .into_inner();
    assert_eq!((got.value, got.exists), (42, true));
    let meta = got.meta.expect("reads carry meta");
    assert_eq!(meta.leader_id, leader);
    assert_eq!(meta.served_by, leader, "linearizable reads are served by the leader");
    assert_eq!(meta.consistency, ReadConsistency::Linearizable as i32);
    assert!(meta.applied_index >= reply.log_index, "the read reflects the add's log index");

    eventually("a LOCAL read on the follower to show the add", WAIT, || async {
        let v = cluster.get(b, "visits", ReadConsistency::Local).await.ok()?;
        (v == 42).then_some(())
    })
    .await;

    let unknown = cluster
        .counters(b)
        .get(GetRequest { name: "never-written".into(), consistency: 0 })
        .await
        .expect("get of an unknown counter")
        .into_inner();
    assert_eq!((unknown.value, unknown.exists), (0, false));

    let list = cluster.counters(a).list(ListRequest { consistency: 0 }).await.expect("list").into_inner();
    let names: Vec<(String, i64)> = list.counters.into_iter().map(|c| (c.name, c.value)).collect();
    assert_eq!(names, vec![("visits".to_string(), 42)]);
}

/// A retried add with the same request id applies once and returns the first reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_id_makes_an_add_idempotent_across_nodes() {
    let cluster = TestCluster::start(3).await;
    let mut request = add("orders", 5);
    request.request_id = "order-7f3a".into();
    let first = cluster.counters(1).add(request.clone()).await.expect("first add").into_inner();
    let retry = cluster.counters(3).add(request.clone()).await.expect("retry on another node").into_inner();
    assert_eq!(retry.value, first.value);
    assert_eq!(retry.log_index, first.log_index);
    assert!(!first.deduplicated);
    assert!(retry.deduplicated);
    assert_eq!(cluster.get(2, "orders", ReadConsistency::Linearizable).await.expect("get"), 5);
}

/// Every bad field gets its exact status code and a message naming the field, and the state
/// (every counter's value) is the same afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_with_the_field_named_and_changes_nothing() {
    let cluster = TestCluster::start(3).await;
    cluster.counters(1).add(add("max", i64::MAX)).await.expect("seed max");
    cluster.counters(1).add(add("min", i64::MIN)).await.expect("seed min");
    let before = cluster.counters(2).list(ListRequest { consistency: 0 }).await.expect("list").into_inner().counters;

    let cases: Vec<(&str, AddRequest, Code, &str)> = vec![
        ("empty name", add("", 1), Code::InvalidArgument, "name"),
        ("name over 128 bytes", add(&"n".repeat(129), 1), Code::InvalidArgument, "name"),
        ("name with a space", add("two words", 1), Code::InvalidArgument, "name"),
        ("name with a slash", add("a/b", 1), Code::InvalidArgument, "name"),
        ("non-ascii name", add("zähler", 1), Code::InvalidArgument, "name"),
        ("unknown write mode", AddRequest { mode: 99, ..add("x", 1) }, Code::InvalidArgument, "mode"),
        ("negative write mode", AddRequest { mode: -1, ..add("x", 1) }, Code::InvalidArgument, "mode"),
        (
            "bad request id",
            AddRequest { request_id: "has space".into(), ..add("x", 1) },
            Code::InvalidArgument,
            "request_id",
        ),
        (
            "request id over 128 bytes",
            AddRequest { request_id: "r".repeat(129), ..add("x", 1) },
            Code::InvalidArgument,
            "request_id",
        ),
        ("overflow above i64::MAX", add("max", 1), Code::OutOfRange, "max"),
        ("overflow below i64::MIN", add("min", -1), Code::OutOfRange, "min"),
        ("i64::MIN delta on a negative counter", add("min", i64::MIN), Code::OutOfRange, "min"),
    ];
    for (what, request, code, field) in cases {
        for node in cluster.ids() {
            let err = cluster.counters(node).add(request.clone()).await.expect_err(what);
            assert_eq!(err.code(), code, "{what} on node {node}: {err:?}");
            assert!(err.message().contains(field), "{what}: message {:?} should name {field:?}", err.message());
        }
    }
    for (what, request) in [
        ("unknown consistency", GetRequest { name: "max".into(), consistency: 42 }),
        ("negative consistency", GetRequest { name: "max".into(), consistency: -3 }),
    ] {
        let err = cluster.counters(2).get(request).await.expect_err(what);
        assert_eq!(err.code(), Code::InvalidArgument, "{what}");
        assert!(err.message().contains("consistency"), "{what}: {}", err.message());
    }
    let err = cluster.counters(3).get(GetRequest { name: "".into(), consistency: 0 }).await.expect_err("empty get");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("name"));

    let after = cluster.counters(3).list(ListRequest { consistency: 0 }).await.expect("list").into_inner().counters;
    assert_eq!(before, after, "a refused request must not change any counter");
}

/// `Cluster/Status` names every node with its addresses, role and progress, from any node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_describes_every_node_from_any_node() {
    let cluster = TestCluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let added = cluster.counters(leader).add(add("c", 1)).await.expect("add").into_inner();
    cluster.wait_for_applied(added.log_index).await;
    for id in cluster.ids() {
        let s = cluster.status(id).await.expect("status");
        assert_eq!(s.served_by, id);
        assert_eq!(s.leader_id, leader);
        assert_eq!(s.nodes.len(), 3);
        for n in &s.nodes {
            assert_eq!(n.client_addr, cluster.client_addr(n.id).to_string());
            let expected_role = if n.id == leader { "leader" } else { "follower" };
            assert_eq!(n.role, expected_role, "node {} as seen by {id}", n.id);
            assert!(n.applied_index >= added.log_index);
            assert!(n.last_log_index >= added.log_index);
            assert_eq!(n.matched_index.is_some(), id == leader, "only the leader knows matched indexes");
        }
    }
}
