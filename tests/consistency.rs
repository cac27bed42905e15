//! Consistency levels and the CRDT path under in-process partitions (`isolate`, `cut`, `heal` on
//! the peer transport), with real TCP and sled underneath.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::local::LocalCluster;
use common::{eventually, http, WAIT};
use raftlot::pb::v1::{
    ConfigureLotRequest, EnterRequest, GetLotReply, GetLotRequest, ReadConsistency as C, WriteMode as W,
};

const FAST: &[&str] = &["--request-timeout-ms", "1000"];

async fn enter(cluster: &LocalCluster, id: u64, lot: &str, plate: &str, mode: W) -> Result<(), tonic::Status> {
    let request =
        EnterRequest { lot: lot.into(), plate: plate.into(), gate: 1, mode: mode as i32, ..Default::default() };
    cluster.parking(id).enter(request).await.map(|_| ())
}

async fn lot(cluster: &LocalCluster, id: u64, name: &str, consistency: C) -> Result<GetLotReply, tonic::Status> {
    let request = GetLotRequest { lot: name.into(), consistency: consistency as i32 };
    Ok(cluster.parking(id).get_lot(request).await?.into_inner())
}

/// Every node's EVENTUAL value of `name`, polled until all equal `want`; returns how long it took.
async fn converge(cluster: &LocalCluster, name: &str, want: i64) -> Duration {
    let start = Instant::now();
    eventually(&format!("every node's EVENTUAL {name} to reach {want}"), WAIT, || async {
        for id in cluster.ids() {
            if cluster.get(id, name, C::Eventual).await.ok()?.0 != want {
                return None;
            }
        }
        Some(())
    })
    .await;
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn linearizable_and_lease_reads_anywhere_see_every_add_acknowledged_before_they_started() {
    let cluster = Arc::new(LocalCluster::start(3, FAST).await);
    let acked = Arc::new(AtomicI64::new(0));
    let writer = {
        let (cluster, acked) = (cluster.clone(), acked.clone());
        tokio::spawn(async move {
            for i in 0..150u64 {
                let id = 1 + i % 3;
                if cluster.add(id, "lin", 1, W::Strong).await.is_ok() {
                    acked.fetch_add(1, Ordering::SeqCst);
                }
            }
        })
    };
    // LEASE holds the same guarantee here, where every node reads one clock.
    let mut readers = Vec::new();
    for (r, level) in [C::Linearizable, C::Lease].into_iter().flat_map(|level| (0..3u64).map(move |r| (r, level))) {
        let (cluster, acked) = (cluster.clone(), acked.clone());
        readers.push(tokio::spawn(async move {
            let mut checked = 0;
            for i in 0..100u64 {
                let floor = acked.load(Ordering::SeqCst);
                let id = 1 + (r + i) % 3;
                if let Ok((value, meta)) = cluster.get(id, "lin", level).await {
                    assert!(value >= floor, "node {id} read {value} after {floor} adds were acknowledged ({meta:?})");
                    checked += 1;
                }
            }
            checked
        }));
    }
    // Midway, the leader is cut off and a new one takes over: reads may fail meanwhile, never lie.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let old = cluster.wait_for_leader(&cluster.ids()).await;
    cluster.isolate(old);
    tokio::time::sleep(Duration::from_millis(800)).await;
    cluster.heal();
    writer.await.unwrap();
    let mut checked = 0;
    for r in readers {
        checked += r.await.unwrap();
    }
    let final_value = cluster.get(1, "lin", C::Linearizable).await.unwrap().0;
    println!(
        "{checked} linearizable and lease reads checked; {} adds acknowledged, final value {final_value}",
        acked.load(Ordering::SeqCst)
    );
    assert!(checked > 200, "too few reads succeeded to mean anything: {checked}");
    assert!(final_value >= acked.load(Ordering::SeqCst));
    Arc::into_inner(cluster).expect("tasks finished").stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_isolated_follower_serves_stale_reads_and_eventual_writes_then_converges() {
    let cluster = LocalCluster::start(3, FAST).await;
    let leader = cluster.wait_for_leader(&cluster.ids()).await;
    let follower = *cluster.ids().iter().find(|id| **id != leader).unwrap();
    let other = *cluster.ids().iter().find(|id| **id != leader && **id != follower).unwrap();
    cluster.add(leader, "c", 10, W::Strong).await.unwrap();
    eventually("the follower to apply the add", WAIT, || async {
        (cluster.get(follower, "c", C::Local).await.ok()?.0 == 10).then_some(())
    })
    .await;

    cluster.isolate(follower);
    let (local, first) = cluster.get(follower, "c", C::Local).await.unwrap();
    let (eventual, _) = cluster.get(follower, "c", C::Eventual).await.unwrap();
    assert_eq!((local, eventual), (10, 10));
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (_, later) = cluster.get(follower, "c", C::Local).await.unwrap();
    assert!(
        later.staleness_ms >= first.staleness_ms + 300,
        "staleness must grow while no leader reaches the node: {} then {}",
        first.staleness_ms,
        later.staleness_ms
    );

    let started = Instant::now();
    let refused = cluster.add(follower, "c", 1, W::Strong).await.unwrap_err();
    let took = started.elapsed();
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert!(took < Duration::from_millis(2_500), "a strong write on the minority side took {took:?} to fail");
    let linearizable = cluster.get(follower, "c", C::Linearizable).await.unwrap_err();
    assert_eq!(linearizable.code(), tonic::Code::Unavailable);

    for _ in 0..3 {
        cluster.add(follower, "c", 5, W::Eventual).await.unwrap();
    }
    assert_eq!(cluster.get(follower, "c", C::Eventual).await.unwrap().0, 25, "eventual adds show at once locally");
    assert_eq!(cluster.get(follower, "c", C::Local).await.unwrap().0, 10, "LOCAL never includes eventual adds");
    cluster.add(other, "c", 7, W::Eventual).await.unwrap();
    cluster.add(other, "c", 100, W::Strong).await.unwrap();
    eventually("the majority's eventual views to include its own side's adds", WAIT, || async {
        (cluster.get(leader, "c", C::Eventual).await.ok()?.0 == 10 + 100 + 7).then_some(())
    })
    .await;

    cluster.heal();
    let took = converge(&cluster, "c", 10 + 100 + 15 + 7).await;
    println!("after heal, every node's EVENTUAL value included every strong and eventual add within {took:?}");
    assert_eq!(cluster.get(follower, "c", C::Linearizable).await.unwrap().0, 110, "strong state has only strong adds");
    let status = cluster.status(leader).await.unwrap();
    let me = status.nodes.iter().find(|n| n.id == leader).unwrap();
    eventually("gossip lag to drain", WAIT, || async {
        let status = cluster.status(leader).await?;
        let me = status.nodes.into_iter().find(|n| n.id == leader)?;
        me.gossip.iter().all(|g| g.pending_deltas == 0 && !g.needs_full_sync).then_some(())
    })
    .await;
    assert_eq!(me.gossip.len(), 2, "the leader reports gossip lag for both peers: {:?}", me.gossip);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partitioned_old_leader_never_acknowledges_a_write_after_a_new_leader_is_elected() {
    let cluster = Arc::new(LocalCluster::start(3, FAST).await);
    let old = cluster.wait_for_leader(&cluster.ids()).await;
    let rest: Vec<u64> = cluster.ids().into_iter().filter(|id| *id != old).collect();
    cluster.add(old, "p", 1, W::Strong).await.unwrap();

    cluster.isolate(old);
    let new = cluster.wait_for_leader(&rest).await;
    let elected = Instant::now();
    let mut attempts = Vec::new();
    for _ in 0..5 {
        let cluster = cluster.clone();
        attempts.push(tokio::spawn(async move { cluster.add(old, "p", 1000, W::Strong).await }));
    }
    let mut acked_on_majority = 0;
    for _ in 0..20 {
        if cluster.add(new, "p", 1, W::Strong).await.is_ok() {
            acked_on_majority += 1;
        }
    }
    for a in attempts {
        let r = a.await.unwrap();
        assert!(
            r.is_err(),
            "the isolated old leader acknowledged a write {:?} after node {new} was elected",
            elected.elapsed()
        );
    }
    cluster.heal();
    eventually("the old leader to follow the new term", WAIT, || async {
        let s = cluster.status(old).await?;
        (s.leader_id != old && s.leader_id != 0).then_some(())
    })
    .await;
    // The old leader's unacknowledged proposals were never committed: the new leader's log won.
    for id in cluster.ids() {
        let value = eventually("every node to agree", WAIT, || async {
            let (v, _) = cluster.get(id, "p", C::Linearizable).await.ok()?;
            Some(v)
        })
        .await;
        assert_eq!(value, 1 + acked_on_majority, "node {id}");
    }
    Arc::into_inner(cluster).expect("tasks finished").stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eventual_entries_on_both_sides_of_a_partition_overfill_a_lot_the_strong_path_never_overfills() {
    let cluster = LocalCluster::start(3, FAST).await;
    let leader = cluster.wait_for_leader(&cluster.ids()).await;
    let minority = *cluster.ids().iter().find(|id| **id != leader).unwrap();
    let configure = ConfigureLotRequest { lot: "small".into(), capacity: 10, gates: 2, ..Default::default() };
    cluster.parking(leader).configure_lot(configure).await.unwrap();
    for i in 0..6 {
        enter(&cluster, leader, "small", &format!("S{i}"), W::Strong).await.unwrap();
    }
    eventually("the minority node to see the lot", WAIT, || async {
        (lot(&cluster, minority, "small", C::Eventual).await.ok()?.occupied == 6).then_some(())
    })
    .await;

    cluster.isolate(minority);
    for i in 0..3 {
        enter(&cluster, minority, "small", &format!("E{i}"), W::Eventual).await.unwrap();
    }
    // A car already inside `small` (strongly) also enters `main` through the minority node.
    enter(&cluster, minority, "main", "S0", W::Eventual).await.unwrap();
    for i in 0..2 {
        enter(&cluster, leader, "small", &format!("M{i}"), W::Eventual).await.unwrap();
    }
    let mut strong_refusals = 0;
    for i in 6..12 {
        match enter(&cluster, leader, "small", &format!("S{i}"), W::Strong).await {
            Ok(()) => {}
            Err(e) if e.code() == tonic::Code::FailedPrecondition => strong_refusals += 1,
            Err(e) => panic!("unexpected refusal {e:?}"),
        }
        let strong = lot(&cluster, leader, "small", C::Linearizable).await.unwrap();
        assert!(strong.occupied <= 10 && !strong.over_capacity, "strong view overfilled: {strong:?}");
    }
    assert_eq!(strong_refusals, 2, "the strong path admitted exactly the 4 free spaces");

    cluster.heal();
    let started = Instant::now();
    let views = eventually("every node's eventual view to hold all 15 cars", WAIT, || async {
        let mut views = Vec::new();
        for id in cluster.ids() {
            let view = lot(&cluster, id, "small", C::Eventual).await.ok()?;
            if view.occupied != 15 {
                return None;
            }
            views.push(view);
        }
        Some(views)
    })
    .await;
    println!("the eventual views converged {:?} after heal", started.elapsed());
    for view in &views {
        assert!(view.over_capacity, "{view:?}");
        assert_eq!(view.duplicates, vec!["S0".to_string()]);
        let plates: BTreeSet<_> = view.vehicles.iter().map(|v| v.plate.as_str()).collect();
        assert_eq!(plates, views[0].vehicles.iter().map(|v| v.plate.as_str()).collect::<BTreeSet<_>>());
    }
    let strong = lot(&cluster, minority, "small", C::Linearizable).await.unwrap();
    assert_eq!((strong.occupied, strong.over_capacity), (10, false));
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dist_counter_http_routes() {
    let cluster = LocalCluster::start(3, FAST).await;
    let a = cluster.http_addr(1);
    let b = cluster.http_addr(3);
    assert_eq!(http(a, "GET", "/ping", "").await, (200, "pong".to_string()));
    let (code, config) = http(a, "GET", "/config", "").await;
    assert_eq!(code, 200);
    let config: serde_json::Value = serde_json::from_str(&config).unwrap();
    assert_eq!(config["members"].as_array().unwrap().len(), 3, "{config}");
    let (code, added) = http(b, "POST", "/counter/visits", "41").await;
    assert_eq!(code, 200, "{added}");
    let (code, _) = http(a, "POST", "/counter/visits", " 1\n").await;
    assert_eq!(code, 200);
    let (code, consistent) = http(b, "GET", "/counter/visits/consistent_value", "").await;
    assert_eq!(code, 200);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&consistent).unwrap()["value"], 42);
    eventually("the eventual value to show both adds", WAIT, || async {
        let (_, body) = http(a, "GET", "/counter/visits/value", "").await;
        (serde_json::from_str::<serde_json::Value>(&body).ok()?["value"] == 42).then_some(())
    })
    .await;
    let (code, error) = http(a, "POST", "/counter/visits", "lots").await;
    assert_eq!(code, 400);
    assert!(error.contains("body") && error.contains("integer"), "{error}");
    let (code, error) = http(a, "GET", "/counter/bad%20name/value", "").await;
    assert_eq!(code, 400, "{error}");
    assert!(error.contains("name"), "{error}");
    let (code, _) = http(a, "POST", "/counter/visits", &"9".repeat(100)).await;
    assert_eq!(code, 413, "an oversized body is refused before it is read");
    cluster.stop().await;
}

/// Many eventual and strong writes at once on every node: none may stall (sled batches and flushes
/// once deadlocked a node this way) and the eventual view ends at exactly the sum of all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_eventual_and_strong_writes_all_complete_and_add_up() {
    let cluster = Arc::new(LocalCluster::start(3, &[]).await);
    let mut tasks = Vec::new();
    for t in 0..40u64 {
        let cluster = cluster.clone();
        tasks.push(tokio::spawn(async move {
            let mode = if t % 5 == 0 { W::Strong } else { W::Eventual };
            for _ in 0..25 {
                cluster.add(1 + t % 3, "busy", 1, mode).await.expect("write");
            }
        }));
    }
    let all = futures::future::join_all(tasks);
    let done = tokio::time::timeout(Duration::from_secs(60), all).await.expect("every write completes");
    assert!(done.iter().all(|r| r.is_ok()));
    let took = converge(&cluster, "busy", 40 * 25).await;
    println!("1000 concurrent writes (200 strong, 800 eventual) converged {took:?} after the last ack");
    assert_eq!(cluster.get(1, "busy", C::Linearizable).await.unwrap().0, 200);
    Arc::into_inner(cluster).expect("tasks finished").stop().await;
}
