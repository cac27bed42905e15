//! Leader-pinned singleton jobs: the sweepers run only on the leader, resume on the new leader after
//! a SIGKILL (real processes), keep an isolated old leader from acting (in-process partition), and
//! never tow a car twice or in a stale term.

mod common;

use std::collections::BTreeMap;
use std::time::Instant;

use common::local::LocalCluster;
use common::{eventually, TestCluster, WAIT};
use raftlot::pb::v1::parking_client::ParkingClient;
use raftlot::pb::v1::{ConfigureLotRequest, EnterRequest, GetLotReply, GetLotRequest, ReadConsistency, StatusReply};
use tonic::transport::Channel;

const MAX_STAY_MS: u64 = 400;

/// The jobs `status` lists, if they all run on one node: (node, term).
fn jobs_on(status: &StatusReply) -> Option<(u64, u64)> {
    let names: Vec<_> = status.jobs.iter().map(|j| j.name.as_str()).collect();
    let first = status.jobs.first()?;
    let together = status.jobs.iter().all(|j| j.node_id == first.node_id && j.term == first.term);
    (together && names.contains(&"overstay-sweeper") && names.contains(&"cache-expiry"))
        .then_some((first.node_id, first.term))
}

fn configure(max_stay_ms: u64) -> ConfigureLotRequest {
    ConfigureLotRequest { lot: "short".into(), capacity: 20, gates: 2, max_stay_ms }
}

async fn lot(mut parking: ParkingClient<Channel>, consistency: ReadConsistency) -> Result<GetLotReply, tonic::Status> {
    let request = GetLotRequest { lot: "short".into(), consistency: consistency as i32 };
    Ok(parking.get_lot(request).await?.into_inner())
}

async fn enter(mut parking: ParkingClient<Channel>, plate: &str) {
    let request = EnterRequest { lot: "short".into(), plate: plate.into(), gate: 1, ..Default::default() };
    parking.enter(request).await.expect("enter");
}

/// Waits until every plate in `plates` has been towed, as a LINEARIZABLE read through `parking`
/// shows, and returns the tows by plate as (term, log index).
async fn towed(parking: &ParkingClient<Channel>, plates: &[String]) -> BTreeMap<String, Vec<(u64, u64)>> {
    eventually(&format!("{plates:?} to be towed"), WAIT, || async {
        let lot = lot(parking.clone(), ReadConsistency::Linearizable).await.ok()?;
        let mut tows: BTreeMap<String, Vec<(u64, u64)>> = BTreeMap::new();
        for t in &lot.tows {
            assert!(t.towed_at_ms - t.entered_at_ms > MAX_STAY_MS, "towed before overstaying: {t:?}");
            tows.entry(t.plate.clone()).or_default().push((t.term, t.log_index));
        }
        plates.iter().all(|p| tows.contains_key(p)).then_some(tows)
    })
    .await
}

/// 1. three nodes, jobs every 100 ms; Status lists both jobs on the leader, in its term; 2. five cars
/// enter a lot with a 400 ms limit and are towed, each once, in that term (or a later one, should
/// a busy machine bring another election); 3. SIGKILL the leader: the jobs resume on the new leader
/// in its term (time printed); 4. five more cars are towed, each once, from that term on; 5. the old
/// leader restarts as a follower and sees the same tows, and only the leader runs jobs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweepers_follow_the_leader_and_tow_each_car_once() {
    let mut cluster = TestCluster::start_with(3, &["--job-interval", "100ms"]).await;
    let first = cluster.wait_for_leader().await;
    let (runner, term1) =
        eventually("the jobs to start on the leader", WAIT, || async { jobs_on(&cluster.status(first).await?) }).await;
    assert_eq!(runner, first);
    assert_eq!(cluster.status(first).await.expect("status").term, term1);

    let configure = ConfigureLotRequest { lot: "short".into(), capacity: 20, gates: 2, max_stay_ms: MAX_STAY_MS };
    cluster.parking(first).configure_lot(configure).await.expect("configure");
    let batch1: Vec<String> = (1..=5).map(|i| format!("A{i}")).collect();
    for (i, plate) in batch1.iter().enumerate() {
        enter(cluster.parking(cluster.ids()[i % 3]), plate).await;
    }
    let tows = towed(&cluster.parking(first), &batch1).await;
    // A busy machine may cost a leader its heartbeats and bring another election before the cars
    // overstay: a tow in a later term is as good. What must never happen is a car towed twice.
    for plate in &batch1 {
        assert_eq!(tows[plate].len(), 1, "{plate} towed more than once: {tows:?}");
        assert!(tows[plate][0].0 >= term1, "{plate} towed before the leader's term: {tows:?}");
    }

    cluster.kill(first);
    let killed = Instant::now();
    let survivor = cluster.followers(first)[0];
    let (second, term2) = eventually("the jobs to resume on a new leader", WAIT, || async {
        let (node, term) = jobs_on(&cluster.status(survivor).await?)?;
        (node != first && term > term1).then_some((node, term))
    })
    .await;
    let resumed = killed.elapsed();

    let batch2: Vec<String> = (1..=5).map(|i| format!("B{i}")).collect();
    for (i, plate) in batch2.iter().enumerate() {
        enter(cluster.parking(cluster.followers(first)[i % 2]), plate).await;
    }
    let tows = towed(&cluster.parking(second), &batch2).await;
    for plate in &batch2 {
        assert_eq!(tows[plate].len(), 1, "{plate} towed more than once: {tows:?}");
        assert!(tows[plate][0].0 >= term2, "{plate} towed in the killed leader's term: {tows:?}");
    }
    for plate in &batch1 {
        assert_eq!(tows[plate].len(), 1, "{plate} towed again after failover: {tows:?}");
    }
    assert_eq!(lot(cluster.parking(second), ReadConsistency::Linearizable).await.expect("lot").occupied, 0);

    cluster.restart(first);
    let all: Vec<String> = batch1.iter().chain(&batch2).cloned().collect();
    let expected = lot(cluster.parking(second), ReadConsistency::Linearizable).await.expect("lot").tows;
    eventually("the restarted node to see every tow", WAIT, || async {
        let seen = lot(cluster.parking(first), ReadConsistency::Local).await.ok()?;
        (seen.tows == expected).then_some(())
    })
    .await;
    let status = cluster.status(first).await.expect("status of the restarted node");
    let leader = status.leader_id;
    assert!(status.jobs.iter().all(|j| j.node_id == leader), "jobs outside leader {leader}: {:?}", status.jobs);
    println!(
        "jobs resumed on node {second} (term {term2}) {resumed:?} after SIGKILL of node {first} (term {term1}); \
         {} cars towed once each",
        all.len()
    );
}

/// 1. in-process cluster, jobs every 100 ms; cars enter a lot with a 1.5 s limit; 2. the leader is
/// isolated before they overstay: it still believes it leads and keeps its jobs, while the majority
/// elects a new leader whose jobs start too; 3. the cars overstay: only the majority's leader tows
/// them, in its own term (or a later one, if the majority elects again); 4. after the heal the old
/// leader drops its jobs, and every node holds the same tows, each car once, none in the old term.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_old_leader_keeps_its_jobs_but_cannot_tow() {
    let cluster = LocalCluster::start(3, &["--job-interval", "100ms"]).await;
    let old = cluster.wait_for_leader(&cluster.ids()).await;
    let (_, term1) =
        eventually("the jobs on the leader", WAIT, || async { jobs_on(&cluster.status(old).await?) }).await;
    cluster.parking(old).configure_lot(configure(1_500)).await.expect("configure");
    let plates: Vec<String> = (1..=4).map(|i| format!("P{i}")).collect();
    for plate in &plates {
        enter(cluster.parking(old), plate).await;
    }
    cluster.isolate(old);
    let majority: Vec<u64> = cluster.ids().into_iter().filter(|id| *id != old).collect();
    let new = cluster.wait_for_leader(&majority).await;
    let (_, term2) = eventually("the jobs on the new leader", WAIT, || async {
        let (node, term) = jobs_on(&cluster.status(new).await?)?;
        (node == new).then_some((node, term))
    })
    .await;
    let stale = cluster.status(old).await.expect("the isolated node answers its clients");
    let stale_jobs: Vec<_> = stale.jobs.iter().filter(|j| j.node_id == old).map(|j| (j.name.clone(), j.term)).collect();

    // The majority may hold another election before the cars overstay (a missed heartbeat on a busy
    // machine): a later term of the majority's is as good. What must never happen is a tow in the
    // isolated leader's term, or a car towed twice.
    let tows = towed(&cluster.parking(new), &plates).await;
    for plate in &plates {
        let terms: Vec<u64> = tows[plate].iter().map(|t| t.0).collect();
        assert!(terms.len() == 1 && terms[0] >= term2, "{plate} towed once, from term {term2} on: {tows:?}");
    }
    cluster.heal();
    let expected = lot(cluster.parking(new), ReadConsistency::Linearizable).await.expect("lot").tows;
    for id in cluster.ids() {
        eventually(&format!("node {id} to hold the same tows"), WAIT, || async {
            let seen = lot(cluster.parking(id), ReadConsistency::Local).await.ok()?;
            (seen.tows == expected).then_some(())
        })
        .await;
    }
    eventually("the old leader to drop its jobs", WAIT, || async {
        let s = cluster.status(old).await?;
        s.jobs.iter().all(|j| j.node_id != old).then_some(())
    })
    .await;
    assert!(expected.iter().all(|t| t.term >= term2), "a tow in the isolated leader's term: {expected:?}");
    let tow_terms: std::collections::BTreeSet<u64> = expected.iter().map(|t| t.term).collect();
    println!(
        "while isolated, node {old} still listed {stale_jobs:?} (term {term1}); the majority (node {new} \
         leading from term {term2}) towed all {} cars, each once, in terms {tow_terms:?}",
        plates.len()
    );
    cluster.stop().await;
}
