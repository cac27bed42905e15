//! Crashes with real SIGKILL: the whole cluster dies at once, a follower falls behind the compaction
//! point or loses its disk. Nothing acknowledged may be lost. The leader dying under a recorded
//! client load is `tests/faults.rs`'s ten-kill scenario, checked against the whole history.

mod common;

use common::{eventually, TestCluster, WAIT};
use raftlot::pb::v1::{AddRequest, ReadConsistency};

/// 1. write several counters; 2. SIGKILL every node at once; 3. start them all again; 4. every
/// acknowledged value is there, and the cluster takes writes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_every_node_at_once_keeps_every_acknowledged_value() {
    let mut cluster = TestCluster::start(3).await;
    let mut expected = Vec::new();
    for (i, node) in [1u64, 2, 3, 1, 2, 3, 1, 2].into_iter().enumerate() {
        let name = format!("c{}", i % 4);
        let reply = cluster
            .counters(node)
            .add(AddRequest { name: name.clone(), delta: (i as i64 + 1) * 10, mode: 0, request_id: String::new() })
            .await
            .expect("add")
            .into_inner();
        expected.retain(|(n, _)| n != &name);
        expected.push((name, reply.value));
    }
    for id in cluster.ids() {
        cluster.kill(id);
    }
    for id in cluster.ids() {
        cluster.restart(id);
    }
    let leader = cluster.wait_for_leader().await;
    for (name, value) in &expected {
        for id in cluster.ids() {
            let got = cluster.get(id, name, ReadConsistency::Linearizable).await.expect("read after restart");
            assert_eq!(got, *value, "{name} read through node {id} (leader {leader})");
        }
    }
    let after = cluster
        .counters(2)
        .add(AddRequest { name: "c0".into(), delta: 1, mode: 0, request_id: String::new() })
        .await
        .expect("writes work after a full restart")
        .into_inner();
    let c0 = expected.iter().find(|(n, _)| n == "c0").map(|(_, v)| *v).expect("c0 written");
    assert_eq!(after.value, c0 + 1);
}

/// An eventual write is acknowledged once the node that took it flushed it: killing every node right
/// after the acks loses none of them, the dedup table survives too, and gossip spreads them after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eventual_writes_survive_sigkill_of_every_node() {
    let mut cluster = TestCluster::start(3).await;
    let add = |delta: i64, mode: i32, request_id: &str| AddRequest {
        name: "e".into(),
        delta,
        mode,
        request_id: request_id.into(),
    };
    cluster.counters(1).add(add(100, 1, "")).await.expect("strong add");
    let mut first = None;
    for i in 0..5 {
        let reply = cluster.counters(2).add(add(1, 2, &format!("ev-{i}"))).await.expect("eventual add");
        first.get_or_insert(reply.into_inner().value);
    }
    for id in cluster.ids() {
        cluster.kill(id);
    }
    for id in cluster.ids() {
        cluster.restart(id);
    }
    cluster.wait_for_leader().await;
    let retry = cluster.counters(2).add(add(1, 2, "ev-0")).await.expect("retried eventual add").into_inner();
    assert!(retry.deduplicated && Some(retry.value) == first, "the retry returns the first reply: {retry:?}");
    for id in cluster.ids() {
        eventually(&format!("node {id}'s eventual value to include every acknowledged add"), WAIT, || async {
            (cluster.get(id, "e", ReadConsistency::Eventual).await.ok()? == 105).then_some(())
        })
        .await;
        assert_eq!(cluster.get(id, "e", ReadConsistency::Linearizable).await.unwrap(), 100);
    }
}

/// 1. three nodes that snapshot every 20 entries; 2. stop a follower cleanly; 3. write 150 adds
/// so the leader compacts its log past the follower's last entry; 4. restart the follower: it can
/// only catch up by installing a snapshot, and it does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_behind_the_compaction_point_catches_up_by_snapshot() {
    let mut cluster = TestCluster::start_with(3, &["--snapshot-logs", "20"]).await;
    let leader = cluster.wait_for_leader().await;
    let lagging = cluster.followers(leader)[0];
    let lagging_last = cluster
        .status(lagging)
        .await
        .expect("status")
        .nodes
        .iter()
        .find(|n| n.id == lagging)
        .expect("self in status")
        .last_log_index;
    cluster.stop(lagging).await;

    let mut last = None;
    for i in 0..150 {
        let node = cluster.followers(lagging)[i % 2];
        let reply = cluster
            .counters(node)
            .add(AddRequest { name: "snap".into(), delta: 1, mode: 0, request_id: String::new() })
            .await
            .expect("add while a follower is down")
            .into_inner();
        last = Some(reply);
    }
    let last = last.expect("150 adds");
    let purged = eventually("the leader to compact past the stopped follower", WAIT, || async {
        let s = cluster.status(leader).await?;
        let me = s.nodes.iter().find(|n| n.id == leader)?;
        (me.purged_index > lagging_last).then_some(me.purged_index)
    })
    .await;
    println!("follower {lagging} stopped at log index {lagging_last}; leader purged up to {purged}");

    cluster.restart(lagging);
    eventually(&format!("node {lagging} to catch up"), WAIT, || async {
        let v = cluster.get(lagging, "snap", ReadConsistency::Local).await.ok()?;
        (v == 150).then_some(())
    })
    .await;
    let view = cluster.status(lagging).await.expect("status");
    let me = view.nodes.iter().find(|n| n.id == lagging).expect("self");
    assert!(me.applied_index >= last.log_index);
    assert!(me.snapshot_index > lagging_last, "the follower holds a snapshot beyond where it stopped");
}

/// 1. three nodes; 20 adds, so the leader tracks every follower's progress; 2. SIGKILL a follower,
/// delete its data directory and start it again, empty, still a member; 3. the leader keeps
/// committing (openraft would otherwise stop its Raft core on seeing a tracked log go backwards) and
/// replicates everything to the returned node again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tracked_follower_that_lost_its_disk_does_not_stop_the_leader() {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let lost = *cluster.followers(leader).iter().max().expect("a follower");
    // The leader's stub, taken once: the closure must not borrow the cluster the fault verbs mutate.
    let stub = cluster.counters(leader);
    let add = || {
        let mut counters = stub.clone();
        async move {
            let request = AddRequest { name: "disk".into(), delta: 1, mode: 0, request_id: String::new() };
            counters.add(request).await.map(|r| r.into_inner().value)
        }
    };
    for _ in 0..20 {
        add().await.expect("add before the disk is lost");
    }
    let applied = cluster.applied_index(leader).await.expect("leader's applied index");
    cluster.wait_for_applied(applied).await;

    cluster.kill(lost);
    std::fs::remove_dir_all(cluster.data_dir(lost)).expect("lose the disk");
    cluster.restart(lost);
    for _ in 0..20 {
        add().await.expect("the leader keeps committing after a member came back empty");
    }
    eventually(&format!("node {lost} to hold every add again"), WAIT, || async {
        (cluster.get(lost, "disk", ReadConsistency::Local).await.ok()? == 40).then_some(())
    })
    .await;
    assert_eq!(cluster.get(leader, "disk", ReadConsistency::Linearizable).await.expect("read"), 40);
}
