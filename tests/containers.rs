//! The container tier: a three-node cluster in containers built from this build's binary, crashed
//! with `docker kill` and partitioned with `docker network disconnect`, under the recorded load of
//! the fault scenarios. Skips, saying why, when no Docker engine answers.

mod common;

use std::time::{Duration, Instant};

use common::docker::{self, DockerCluster};
use common::history::{write_outcome, Call, Outcome};
use common::load::{configure_lot, endpoints, timed, Load, COUNTER, CRASH_LOAD};
use common::{eventually, WAIT};
use raftlot::pb::v1::counters_client::CountersClient;
use raftlot::pb::v1::{AddRequest, GetRequest, ReadConsistency, WriteMode};
use tonic::transport::Channel;

/// An add whose client deadline outlasts the server's 2 s request deadline, so that a write that
/// finds no quorum reads as the server's UNAVAILABLE rather than the client's own timeout.
async fn add(mut client: CountersClient<Channel>, delta: i64, mode: WriteMode, id: &str) -> Result<i64, tonic::Status> {
    let mut request =
        tonic::Request::new(AddRequest { name: COUNTER.into(), delta, mode: mode as i32, request_id: id.into() });
    request.set_timeout(Duration::from_secs(4));
    Ok(client.add(request).await?.into_inner().value)
}

async fn get(mut client: CountersClient<Channel>, consistency: ReadConsistency) -> Option<i64> {
    let request = GetRequest { name: COUNTER.into(), consistency: consistency as i32 };
    Some(client.get(timed(request)).await.ok()?.into_inner().value)
}

/// 1. build the image with deploy/image.sh and start three containers, peers named by DNS alias;
///    recorded writers (adds, entries, exits, reads) through every node's published port;
/// 2. `docker kill` the leader; measure the write gap; `docker start` it again on its volume;
/// 3. disconnect a follower from the peer network: a strong write through it fails with UNAVAILABLE
///    within the deadline, one through the leader is acknowledged, an eventual write through it
///    succeeds, and its LOCAL read still answers;
/// 4. stop the writers, reconnect it, retry the refused write under its request id; time until every
///    node's LOCAL value is the leader's and every EVENTUAL value also holds the eventual write;
/// 5. the whole history passes the checker: nothing acknowledged lost, no invariant broken;
/// 6. the engine reports every container healthy through the image's health check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_kill_and_network_disconnect_lose_nothing_acknowledged() {
    if let Some(why) = docker::unavailable() {
        println!("container tier skipped: no Docker engine answers ({why})");
        return;
    }
    let began = Instant::now();
    let mut cluster = DockerCluster::start(3);
    let leader = cluster.wait_for_leader().await;
    println!("three containers up, node {leader} leads, after {:?}", began.elapsed());
    configure_lot(cluster.parking(leader)).await;
    let nodes = endpoints(cluster.ids(), |id| (cluster.counters(id), cluster.parking(id)));
    let mut load = Load::start(nodes.clone(), CRASH_LOAD);

    // 2. Kill the leader under load, then bring it back.
    load.wait_for_acks("writes before the kill", 50).await;
    cluster.kill(leader);
    load.fault();
    let gap = load.wait_for_gap().await;
    let new_leader = cluster.wait_for_leader().await;
    assert_ne!(new_leader, leader, "a killed container cannot lead");
    cluster.start_node(leader);
    load.wait_for_acks("writes after the killed node restarted", 50).await;
    println!("docker kill of leader {leader}: write gap {gap:?}; node {new_leader} leads");

    // 3. Partition a follower: a minority of one. Its writers fail over to the majority.
    let leader = cluster.wait_for_leader().await;
    let minority = cluster.ids().into_iter().find(|id| *id != leader).expect("a follower");
    cluster.isolate(minority);
    let refused_call = Call::Add { counter: COUNTER.into(), delta: 1000 };
    let op = load.history.invoke(format!("n{minority}/partitioned"), refused_call.clone());
    let sent = Instant::now();
    let refused = add(cluster.counters(minority), 1000, WriteMode::Strong, "minority-1").await;
    let waited = sent.elapsed();
    let status = refused.expect_err("a minority acknowledged a strong write");
    load.history.complete(op, write_outcome(&status));
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(waited < Duration::from_secs(3), "the refusal took {waited:?}, beyond the 2 s request deadline");
    let majority_call = Call::Add { counter: COUNTER.into(), delta: 1 };
    let op = load.history.invoke(format!("n{leader}/majority"), majority_call);
    let majority = add(cluster.counters(leader), 1, WriteMode::Strong, "majority-1").await.expect("majority write");
    load.history.complete(op, Outcome::Value(majority));
    add(cluster.counters(minority), 10, WriteMode::Eventual, "minority-eventual-1").await.expect("eventual write");
    get(cluster.counters(minority), ReadConsistency::Local).await.expect("LOCAL answers in a minority");
    load.wait_for_acks("writes through the majority during the partition", 20).await;

    // 4. Heal and converge. The refused write was never acknowledged, but "may or may not have been
    // applied": a forward stuck in the cut link can still reach the leader after the heal. The
    // client's duty is to retry it under the same request id, which applies it exactly once.
    load.stop().await;
    cluster.heal(minority);
    let healed = Instant::now();
    let op = load.history.invoke(format!("n{leader}/retry"), refused_call);
    let retried = eventually("the refused write, retried through the majority, to be acknowledged", WAIT, || async {
        add(cluster.counters(leader), 1000, WriteMode::Strong, "minority-1").await.ok()
    })
    .await;
    load.history.complete(op, Outcome::Value(retried));
    let strong = get(cluster.counters(leader), ReadConsistency::Linearizable).await.expect("the leader's value");
    // Nothing else writes now: a second application of the retried id would show here.
    assert_eq!(strong, retried, "the retried write applied twice");
    for id in cluster.ids() {
        eventually(&format!("node {id} to converge after the heal"), WAIT, || async {
            let local = get(cluster.counters(id), ReadConsistency::Local).await?;
            let eventual = get(cluster.counters(id), ReadConsistency::Eventual).await?;
            (local == strong && eventual == strong + 10).then_some(())
        })
        .await;
    }
    let converged = healed.elapsed();
    let late = get(cluster.counters(minority), ReadConsistency::Linearizable).await;
    assert_eq!(late, Some(strong), "a write landed after convergence: the stuck forward applied twice");
    println!(
        "docker network disconnect of node {minority}: strong write refused with UNAVAILABLE after {waited:?}, \
         majority acknowledged; converged {converged:?} after reconnect; whole run {:?}",
        began.elapsed()
    );

    // 5. Check the history.
    load.final_reads(&nodes).await;
    let verdict = load.history.verdict();
    let scenario = "containers: kill, partition";
    let mut row = verdict.row(scenario, "docker kill of the leader, then docker network disconnect of a follower");
    row.gaps.push(gap);
    row.converged = Some(converged);
    println!("{row}");
    verdict.assert_clean(scenario);

    // 6. The image's HEALTHCHECK (`raftlot health`) runs every 5 s.
    for id in cluster.ids() {
        eventually(&format!("docker to report node {id} healthy"), WAIT, || async {
            (cluster.health(id) == "healthy").then_some(())
        })
        .await;
    }
}
