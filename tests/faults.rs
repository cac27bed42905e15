//! Fault scenarios under a recorded client load, each history checked by `common::history`:
//! the leader SIGKILLed ten times in a row, a rolling restart then a whole-cluster stop and start,
//! partitions (a minority, then the old leader) with leaders per term watched throughout, and a
//! follower wiped and replaced under the same id. Each test prints its row of the table in FAULTS.md.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::history::{write_outcome, Call, History, Outcome, Row};
use common::load::{
    configure_lot, endpoints, timed, Endpoint, Load, Shape, COUNTER, CRASH_LOAD, EVENTUAL_COUNTER, LOT,
};
use common::local::LocalCluster;
use common::{eventually, TestCluster, WAIT};
use raftlot::pb::v1::{
    AddNodeRequest, AddRequest, GetLotRequest, ListRequest, ReadConsistency as C, RemoveNodeRequest,
    TransferLeaderRequest,
};

/// Requests give up on a leader or quorum after a second, so an op on the wrong side of a fault
/// resolves (as unknown) quickly instead of holding a writer for the default two seconds.
const FLAGS: &[&str] = &["--request-timeout-ms", "1000"];
/// Waits until node `id` (just restarted) has applied what the leader had applied when it came back.
async fn wait_caught_up(cluster: &TestCluster, id: u64) {
    let leader = cluster.wait_for_leader().await;
    let target = eventually("the leader's applied index", WAIT, || cluster.applied_index(leader)).await;
    eventually(&format!("node {id} to apply index {target}"), WAIT, || async {
        (cluster.applied_index(id).await? >= target).then_some(())
    })
    .await;
}

/// 1. three processes, six writers spread over every node, each failing over to the next node;
/// 2. ten times: SIGKILL the leader, wait for the first write acknowledged after the kill (the
/// client-visible gap), restart the killed node and wait until it has caught up; 3. stop the
/// writers, read through every node, and check the whole history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_sigkilled_ten_times_loses_nothing_acknowledged() {
    let started = Instant::now();
    let mut cluster = TestCluster::start_with(3, FLAGS).await;
    configure_lot(cluster.parking(1)).await;
    let nodes = endpoints(cluster.ids(), |id| (cluster.counters(id), cluster.parking(id)));
    let mut load = Load::start(nodes.clone(), CRASH_LOAD);
    load.wait_for_acks("the first acknowledged writes", 50).await;

    let mut gaps = Vec::new();
    for round in 1..=10 {
        let leader = cluster.wait_for_leader().await;
        load.fault();
        cluster.kill(leader);
        let gap = load.wait_for_gap().await;
        println!("round {round}: leader {leader} SIGKILLed; first write acknowledged {gap:?} later");
        gaps.push(gap);
        cluster.restart(leader);
        wait_caught_up(&cluster, leader).await;
    }
    load.stop().await;
    load.final_reads(&nodes).await;
    let verdict = load.history.verdict();
    println!("{} ops, {} writes acknowledged, in {:?}", verdict.ops, verdict.acked_writes, started.elapsed());
    let row = Row { gaps, ..verdict.row("kill x10", "SIGKILL of the leader, 10 times in a row, each restarted") };
    println!("{row}");
    verdict.assert_clean("kill x10");
}

/// 1. three processes under the same load; 2. each node in turn is stopped (SIGTERM), started
/// again and waited for until it has caught up; 3. every node is stopped, then all are started
/// again; 4. writes are acknowledged again; the history holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_then_a_full_stop_and_start_lose_nothing_acknowledged() {
    let mut cluster = TestCluster::start_with(3, FLAGS).await;
    configure_lot(cluster.parking(1)).await;
    let nodes = endpoints(cluster.ids(), |id| (cluster.counters(id), cluster.parking(id)));
    let mut load = Load::start(nodes.clone(), CRASH_LOAD);
    load.wait_for_acks("the first acknowledged writes", 50).await;

    for id in cluster.ids() {
        cluster.stop(id).await;
        load.wait_for_acks(&format!("writes acknowledged while node {id} is down"), 20).await;
        cluster.restart(id);
        wait_caught_up(&cluster, id).await;
    }
    for id in cluster.ids() {
        cluster.stop(id).await;
    }
    load.fault();
    for id in cluster.ids() {
        cluster.restart(id);
    }
    let back = load.wait_for_gap().await;
    println!(
        "after the whole cluster was stopped and started, the first write was acknowledged {back:?} after the start"
    );
    load.wait_for_acks("writes acknowledged after the full restart", 50).await;
    load.stop().await;
    load.final_reads(&nodes).await;
    let verdict = load.history.verdict();
    let row = Row {
        gaps: vec![back],
        ..verdict.row(
            "rolling restart, then full stop and start",
            "SIGTERM and restart of each node in turn under load; then all three stopped and started",
        )
    };
    println!("{row}");
    verdict.assert_clean("rolling restart");
}

/// Every term's leaders as seen by polling each node's own Status: the node's own role, and the
/// leader it names. Raft allows at most one per term.
type LeadersPerTerm = BTreeMap<u64, BTreeSet<u64>>;

fn watch_leaders(cluster: Arc<LocalCluster>, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<(u64, LeadersPerTerm)> {
    tokio::spawn(async move {
        let (mut polls, mut seen) = (0u64, LeadersPerTerm::new());
        // Bounded: at most 10,000 rounds of polls, and the test stops it long before.
        for _ in 0..10_000 {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let replies = futures::future::join_all(cluster.ids().into_iter().map(|id| {
                let cluster = cluster.clone();
                async move { (id, cluster.status(id).await) }
            }))
            .await;
            for (id, reply) in replies {
                let Some(reply) = reply else { continue };
                polls += 1;
                if let Some(me) = reply.nodes.iter().find(|n| n.id == id) {
                    if me.role == "leader" {
                        seen.entry(me.term).or_default().insert(id);
                    }
                }
                if reply.leader_id != 0 {
                    seen.entry(reply.term).or_default().insert(reply.leader_id);
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        (polls, seen)
    })
}

const PARTITION_LOAD: Shape =
    Shape { writers: 6, max_ops: 20_000, failover: false, eventual: true, op_budget: Duration::from_millis(1500) };

/// One node's whole state at one consistency level: every counter, both lots' cars, and the applied
/// index it was read at (0 for EVENTUAL, which is not tied to the log).
async fn state_of(node: &Endpoint, consistency: C) -> Option<(u64, Vec<(String, i64)>, Vec<Vec<String>>)> {
    let (mut counters, mut parking) = (node.counters.clone(), node.parking.clone());
    let list = counters.list(timed(ListRequest { consistency: consistency as i32 })).await.ok()?.into_inner();
    let applied = list.meta.map_or(0, |m| m.applied_index);
    let mut lots = Vec::new();
    for lot in [LOT, "main"] {
        let reply = parking.get_lot(timed(GetLotRequest { lot: lot.into(), consistency: consistency as i32 }));
        let mut plates: Vec<String> = reply.await.ok()?.into_inner().vehicles.into_iter().map(|v| v.plate).collect();
        plates.sort();
        lots.push(plates);
    }
    let applied = if consistency == C::Local { applied } else { 0 };
    Some((applied, list.counters.into_iter().map(|c| (c.name, c.value)).collect(), lots))
}

/// 1. three in-process nodes under load (writers stay on their node; some writes are eventual),
/// with every node's Status polled throughout; 2. a follower is isolated while the majority keeps
/// taking writes, then healed; 3. the leader is isolated, the rest elect a new one and keep taking
/// writes, then healed; 4. no write invoked on an isolated node during its isolation was
/// acknowledged; no term ever had two leaders; after the heal, every node's LOCAL state is identical
/// at one applied index and every EVENTUAL view converges to it (plus the eventual adds).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partitions_of_a_minority_then_the_old_leader_keep_one_leader_per_term_and_converge() {
    let cluster = Arc::new(LocalCluster::start(3, FLAGS).await);
    configure_lot(cluster.parking(1)).await;
    let ids = cluster.ids();
    let nodes = endpoints(ids.clone(), |id| (cluster.counters(id), cluster.parking(id)));
    let watching = Arc::new(AtomicBool::new(false));
    let watcher = watch_leaders(cluster.clone(), watching.clone());
    let mut load = Load::start(nodes.clone(), PARTITION_LOAD);
    load.wait_for_acks("the first acknowledged writes", 50).await;

    let mut windows = Vec::new();
    let mut healed = Instant::now();
    let leader = cluster.wait_for_leader(&ids).await;
    let follower = *ids.iter().find(|id| **id != leader).expect("a follower");
    for (isolated, what) in [(follower, "a minority follower"), (leader, "the old leader")] {
        let rest: Vec<u64> = ids.iter().copied().filter(|id| *id != isolated).collect();
        let from = load.history.now_us();
        cluster.isolate(isolated);
        let new = cluster.wait_for_leader(&rest).await;
        let before = load.acked_via(&rest);
        eventually(&format!("the majority to keep serving while {what} is isolated"), WAIT, || async {
            (load.acked_via(&rest) >= before + 30).then_some(())
        })
        .await;
        // Let writes sent to the isolated side run out their budget, so the check below has some.
        let prefix = format!("n{isolated}/");
        eventually(&format!("writes through {what} to resolve"), WAIT, || async {
            let resolved = load.history.ops().into_iter().filter(|op| {
                op.client.starts_with(&prefix)
                    && op.invoked >= from
                    && matches!(op.call, Call::Add { .. } | Call::Enter { .. } | Call::Exit { .. })
                    && op.outcome != Outcome::Unknown("pending".into())
            });
            (resolved.count() >= 3).then_some(())
        })
        .await;
        if isolated == leader {
            // The last fault: the writers stop first, so the time to converge measures the heal alone.
            load.stop().await;
        }
        cluster.heal();
        healed = Instant::now();
        println!("{what} (node {isolated}) isolated and healed; node {new} led the majority meanwhile");
        windows.push((isolated, from, load.history.now_us()));
        cluster.wait_for_leader(&ids).await;
    }

    let local = eventually("every node's LOCAL state to agree at one applied index", WAIT, || async {
        let mut states = Vec::new();
        for node in &nodes {
            states.push(state_of(node, C::Local).await?);
        }
        states.windows(2).all(|w| w[0] == w[1]).then(|| states.swap_remove(0))
    })
    .await;
    let identical = healed.elapsed();
    let (acked_ev, unknown_ev) =
        (load.eventual_acked.load(Ordering::Relaxed) as i64, load.eventual_unknown.load(Ordering::Relaxed) as i64);
    eventually("every node's EVENTUAL view to converge on the raft state plus the eventual adds", WAIT, || async {
        let mut views = Vec::new();
        for node in &nodes {
            views.push(state_of(node, C::Eventual).await?);
        }
        let (_, counters, lots) = &views[0];
        let ev = counters.iter().find(|(n, _)| n == EVENTUAL_COUNTER).map_or(0, |(_, v)| *v);
        let strong: Vec<_> = counters.iter().filter(|(n, _)| n != EVENTUAL_COUNTER).cloned().collect();
        let agrees = views.windows(2).all(|w| w[0] == w[1])
            && strong == local.1
            && *lots == local.2
            && (acked_ev..=acked_ev + unknown_ev).contains(&ev);
        agrees.then_some(())
    })
    .await;
    let converged = healed.elapsed();
    println!(
        "raft state identical at applied index {} {identical:?} after the heal; EVENTUAL views converged \
         {converged:?} after it ({acked_ev} eventual adds acknowledged)",
        local.0
    );
    load.final_reads(&nodes).await;
    watching.store(true, Ordering::Relaxed);
    let (polls, leaders) = watcher.await.expect("status watcher");

    let ops = load.history.ops();
    let minority_acks: Vec<String> = windows
        .iter()
        .flat_map(|(node, from, to)| {
            let prefix = format!("n{node}/");
            ops.iter().filter(move |op| {
                op.client.starts_with(&prefix)
                    && op.invoked >= *from
                    && op.completed <= *to
                    && matches!(op.outcome, Outcome::Value(_) | Outcome::Done)
                    && matches!(op.call, Call::Add { .. } | Call::Enter { .. } | Call::Exit { .. })
            })
        })
        .map(|op| op.to_string())
        .collect();
    let split: Vec<_> = leaders.iter().filter(|(_, l)| l.len() > 1).collect();
    let verdict = load.history.verdict();
    let row = Row {
        violations: verdict.violations.len() + minority_acks.len() + split.len(),
        converged: Some(converged),
        ..verdict.row(
            "partitions",
            "a follower isolated, healed; then the leader isolated, healed (peer links cut in-process)",
        )
    };
    println!("{polls} status polls saw terms {:?}", leaders);
    println!("{row}");
    assert!(split.is_empty(), "two leaders in one term: {split:?}");
    assert!(minority_acks.is_empty(), "an isolated node acknowledged strong writes:\n{}", minority_acks.join("\n"));
    verdict.assert_clean("partitions");
    Arc::into_inner(cluster).expect("tasks finished").stop().await;
}

/// 1. three processes that snapshot every 20 entries; 2. node 3, a follower the leader tracks, is
/// stopped and removed from the membership; 3. adds through the others until the leader has
/// compacted past node 3's last entry; 4. node 3's data directory is deleted, it starts again empty
/// under the same id and is added back: it joins as a learner, can only catch up by snapshot, does,
/// and is promoted to voter; 5. the survivor that does not lead is SIGKILLed and writes still
/// commit, so node 3 is a voter holding the data again.
///
/// openraft cannot tell a wiped voter from a new one: it would come back at term 0 with no log and no
/// vote, and grant its vote to any candidate whose log is at least as long as its empty one, which
/// can elect a candidate missing an entry that was committed on a majority counting the wiped
/// node's lost copy. Removing the member first avoids that: its old copy stops counting toward any
/// quorum the moment the removal commits, and it comes back as a learner, which has no vote until it
/// has caught up and is promoted. This is etcd's member replace: remove, wipe, add, start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_follower_rejoins_by_snapshot_under_its_own_id() {
    let mut cluster = TestCluster::start_with(3, &["--snapshot-logs", "20", "--request-timeout-ms", "1000"]).await;
    let history = History::default();
    // Stubs taken once: their channels reconnect across restarts, and the closure must not borrow
    // the cluster the fault verbs mutate.
    let stubs: BTreeMap<u64, _> = cluster.ids().into_iter().map(|id| (id, cluster.counters(id))).collect();
    let add = |via: u64, i: usize| {
        let mut counters = stubs[&via].clone();
        let history = &history;
        async move {
            let call = Call::Add { counter: COUNTER.into(), delta: 1 };
            let op = history.invoke(format!("n{via}"), call);
            let request = AddRequest { name: COUNTER.into(), delta: 1, mode: 0, request_id: format!("r{i}") };
            let outcome = match counters.add(timed(request)).await {
                Ok(reply) => Outcome::Value(reply.into_inner().value),
                Err(status) => write_outcome(&status),
            };
            history.complete(op, outcome.clone());
            outcome
        }
    };
    let wiped = 3;
    for i in 0..10 {
        assert!(matches!(add(1, i).await, Outcome::Value(_)), "add before the wipe");
    }
    if cluster.wait_for_leader().await == wiped {
        let to = TransferLeaderRequest { to: 1 };
        cluster.cluster(1).transfer_leader(to).await.expect("move leadership off the node to wipe");
    }
    let leader = cluster.wait_for_leader().await;
    let status = cluster.status(wiped).await.expect("status");
    let wiped_last = status.nodes.iter().find(|n| n.id == wiped).expect("self in status").last_log_index;
    cluster.stop(wiped).await;
    cluster.cluster(leader).remove_node(RemoveNodeRequest { id: wiped }).await.expect("remove the node to wipe");
    let other = *cluster.ids().iter().find(|id| **id != wiped && **id != leader).expect("the other survivor");
    for i in 10..160 {
        let via = [leader, other][i % 2];
        assert!(matches!(add(via, i).await, Outcome::Value(_)), "add while node {wiped} is down");
    }
    let purged = eventually("the leader to compact past the stopped node", WAIT, || async {
        let s = cluster.status(leader).await?;
        let me = s.nodes.iter().find(|n| n.id == leader)?;
        (me.purged_index > wiped_last).then_some(me.purged_index)
    })
    .await;

    std::fs::remove_dir_all(cluster.data_dir(wiped)).expect("wipe the data directory");
    let restarted = Instant::now();
    cluster.restart(wiped);
    let (client_addr, peer_addr) = (cluster.client_addr(wiped).to_string(), cluster.peer_addr(wiped).to_string());
    let request = AddNodeRequest { id: wiped, client_addr, peer_addr };
    cluster.cluster(leader).add_node(request).await.expect("add the wiped node back");
    eventually(&format!("the wiped node {wiped} to catch up"), WAIT, || async {
        (cluster.get(wiped, COUNTER, C::Local).await.ok()? == 160).then_some(())
    })
    .await;
    let caught_up = restarted.elapsed();
    let me = cluster.status(wiped).await.expect("status").nodes.into_iter().find(|n| n.id == wiped).expect("self");
    assert!(me.snapshot_index > wiped_last, "the wiped node holds a snapshot: {me:?}");
    println!(
        "node {wiped} stopped at log index {wiped_last} and was removed; the leader purged up to {purged}; wiped, \
         restarted and added back, it installed a snapshot at {} and caught up in {caught_up:?}",
        me.snapshot_index
    );

    // Kill the survivor that does not lead now, so each commit needs the wiped node's vote and log.
    let current = cluster.wait_for_leader().await;
    let down = *cluster.ids().iter().find(|id| **id != wiped && **id != current).expect("a node to kill");
    cluster.kill(down);
    for i in 160..170 {
        eventually(
            &format!("add {i} with node {down} down: node {wiped} must hold the log and vote"),
            WAIT,
            || async { matches!(add(wiped, i).await, Outcome::Value(_)).then_some(()) },
        )
        .await;
    }
    let op = history.invoke("final", Call::Read { counter: COUNTER.into() });
    let value = cluster.get(wiped, COUNTER, C::Linearizable).await.expect("final read");
    history.complete(op, Outcome::Value(value));
    let verdict = history.verdict();
    let row = Row {
        converged: Some(caught_up),
        ..verdict.row(
            "member replace",
            "a follower removed, its data directory deleted, restarted under the same id and added back after compaction",
        )
    };
    println!("{row}");
    verdict.assert_clean("member replace");
    assert_eq!(value, 170);
}
