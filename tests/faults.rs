//! Fault scenarios under a recorded client load, each history checked by `common::history`:
//! the leader SIGKILLed ten times in a row, a rolling restart then a whole-cluster stop and start,
//! partitions (a minority, then the old leader) with leaders per term watched throughout, and a
//! follower wiped and replaced under the same id. Each test prints its row of the table in FAULTS.md.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::history::{write_outcome, Call, History, Outcome, Row};
use common::local::LocalCluster;
use common::{eventually, TestCluster, WAIT};
use raftlot::pb::v1::counters_client::CountersClient;
use raftlot::pb::v1::parking_client::ParkingClient;
use raftlot::pb::v1::{
    AddRequest, ConfigureLotRequest, EnterRequest, ExitRequest, GetLotRequest, GetRequest, ListRequest,
    ReadConsistency as C, WriteMode as W,
};
use tonic::transport::Channel;

/// Requests give up on a leader or quorum after a second, so an op on the wrong side of a fault
/// resolves (as unknown) quickly instead of holding a writer for the default two seconds.
const FLAGS: &[&str] = &["--request-timeout-ms", "1000"];
const COUNTER: &str = "hits";
const EVENTUAL_COUNTER: &str = "ev";
const LOT: &str = "fz";
/// Fewer spaces than the writers' plates, so entries contend for the last ones.
const LOT_CAPACITY: u32 = 6;

/// One node's client stubs.
#[derive(Clone)]
struct Endpoint {
    id: u64,
    counters: CountersClient<Channel>,
    parking: ParkingClient<Channel>,
}

fn endpoints(ids: Vec<u64>, stubs: impl Fn(u64) -> (CountersClient<Channel>, ParkingClient<Channel>)) -> Vec<Endpoint> {
    ids.into_iter()
        .map(|id| {
            let (counters, parking) = stubs(id);
            Endpoint { id, counters, parking }
        })
        .collect()
}

fn timed<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(Duration::from_secs(2));
    request
}

/// One attempt of `call` through `node`; writes carry `request_id` so a retry applies at most once.
async fn attempt(node: &Endpoint, call: &Call, request_id: &str) -> Result<Outcome, tonic::Status> {
    let (mut counters, mut parking) = (node.counters.clone(), node.parking.clone());
    let linearizable = C::Linearizable as i32;
    Ok(match call {
        Call::Add { counter, delta } => {
            let request = AddRequest { name: counter.clone(), delta: *delta, mode: 0, request_id: request_id.into() };
            Outcome::Value(counters.add(timed(request)).await?.into_inner().value)
        }
        Call::Read { counter } => {
            let request = GetRequest { name: counter.clone(), consistency: linearizable };
            Outcome::Value(counters.get(timed(request)).await?.into_inner().value)
        }
        Call::Enter { lot, plate } => {
            let request = EnterRequest {
                lot: lot.clone(),
                plate: plate.clone(),
                gate: 1,
                mode: 0,
                request_id: request_id.into(),
            };
            parking.enter(timed(request)).await?;
            Outcome::Done
        }
        Call::Exit { lot, plate } => {
            let request =
                ExitRequest { lot: lot.clone(), plate: plate.clone(), gate: 2, mode: 0, request_id: request_id.into() };
            parking.exit(timed(request)).await?;
            Outcome::Done
        }
        Call::ReadLot { lot } => {
            let reply = parking.get_lot(timed(GetLotRequest { lot: lot.clone(), consistency: linearizable })).await?;
            let reply = reply.into_inner();
            Outcome::Lot { capacity: reply.capacity, plates: reply.vehicles.into_iter().map(|v| v.plate).collect() }
        }
    })
}

/// The last fault's instant, and how long after it the first write sent after it was acknowledged.
#[derive(Default)]
struct Gap {
    fault: Option<Instant>,
    gap: Option<Duration>,
}

/// How the writers behave.
#[derive(Clone, Copy)]
struct Shape {
    writers: u64,
    /// Bounded per writer, whatever else happens.
    max_ops: u64,
    /// A failed attempt is retried through the next node (crash scenarios), or always through the
    /// writer's own node (partitions, where which side took a write is the point).
    failover: bool,
    /// Also add 1 to `ev` with eventual writes, which never enter the Raft log.
    eventual: bool,
    /// How long one logical write may keep retrying before it is recorded as unknown.
    op_budget: Duration,
}

/// What the writers share with the test: the history, the stop flag, and running tallies.
struct Shared {
    history: History,
    stop: AtomicBool,
    gap: Mutex<Gap>,
    /// Strong writes acknowledged, per node that acknowledged them.
    acked: BTreeMap<u64, AtomicU64>,
    eventual_acked: AtomicU64,
    eventual_unknown: AtomicU64,
}

/// Writers spread over every node, recording every operation in one history.
struct Load {
    shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl std::ops::Deref for Load {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.shared
    }
}

impl Load {
    fn start(nodes: Vec<Endpoint>, shape: Shape) -> Load {
        let shared = Arc::new(Shared {
            history: History::default(),
            stop: AtomicBool::new(false),
            gap: Mutex::new(Gap::default()),
            acked: nodes.iter().map(|n| (n.id, AtomicU64::new(0))).collect(),
            eventual_acked: AtomicU64::new(0),
            eventual_unknown: AtomicU64::new(0),
        });
        let nodes = Arc::new(nodes);
        let tasks = (0..shape.writers)
            .map(|w| tokio::spawn(Writer { w, nodes: nodes.clone(), shared: shared.clone(), shape }.run()))
            .collect();
        Load { shared, tasks }
    }

    fn acked(&self) -> u64 {
        self.acked.values().map(|a| a.load(Ordering::Relaxed)).sum()
    }

    fn acked_via(&self, ids: &[u64]) -> u64 {
        ids.iter().map(|id| self.acked[id].load(Ordering::Relaxed)).sum()
    }

    async fn wait_for_acks(&self, what: &str, more: u64) {
        let target = self.acked() + more;
        eventually(what, WAIT, || async { (self.acked() >= target).then_some(()) }).await;
    }

    /// Marks a fault now: the next write sent after this and acknowledged closes the gap.
    fn fault(&self) {
        *self.gap.lock().expect("gap lock") = Gap { fault: Some(Instant::now()), gap: None };
    }

    async fn wait_for_gap(&self) -> Duration {
        eventually("a write acknowledged after the fault", WAIT, || async { self.gap.lock().expect("gap lock").gap })
            .await
    }

    /// Stops the writers and waits for each to finish its current op.
    async fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks.drain(..) {
            tokio::time::timeout(Duration::from_secs(15), task).await.expect("writer stops").expect("writer task");
        }
    }

    /// Records one LINEARIZABLE read of the counter and of the lot through each node, retried until
    /// it answers: the observations that the final state must satisfy.
    async fn final_reads(&self, nodes: &[Endpoint]) {
        for node in nodes {
            for call in [Call::Read { counter: COUNTER.into() }, Call::ReadLot { lot: LOT.into() }] {
                eventually(&format!("a final {call:?} through node {}", node.id), WAIT, || async {
                    let op = self.history.invoke(format!("n{}/final", node.id), call.clone());
                    let result = attempt(node, &call, "").await;
                    let ok = result.is_ok();
                    self.history.complete(op, result.unwrap_or_else(|e| Outcome::Unknown(e.to_string())));
                    ok.then_some(())
                })
                .await;
            }
        }
    }
}

struct Writer {
    w: u64,
    nodes: Arc<Vec<Endpoint>>,
    shared: Arc<Shared>,
    shape: Shape,
}

impl std::ops::Deref for Writer {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.shared
    }
}

impl Writer {
    /// A mix of strong adds, entries and exits of this writer's own two plates, and LINEARIZABLE
    /// reads of the counter and the lot, paced so the history stays a few thousand ops long.
    async fn run(self) {
        let home = (self.w as usize) % self.nodes.len();
        let plates = [format!("W{}-A", self.w), format!("W{}-B", self.w)];
        let mut inside = [false, false];
        for i in 0..self.shape.max_ops {
            if self.stop.load(Ordering::Relaxed) {
                return;
            }
            let plate = (i / 5 % 2) as usize;
            let call = match i % 5 {
                0 | 1 => Call::Add { counter: COUNTER.into(), delta: 1 },
                2 if inside[plate] => Call::Exit { lot: LOT.into(), plate: plates[plate].clone() },
                2 => Call::Enter { lot: LOT.into(), plate: plates[plate].clone() },
                3 => Call::Read { counter: COUNTER.into() },
                _ => Call::ReadLot { lot: LOT.into() },
            };
            let node = &self.nodes[home];
            if matches!(call, Call::Read { .. } | Call::ReadLot { .. }) {
                let op = self.history.invoke(format!("n{}/w{}", node.id, self.w), call.clone());
                let outcome = attempt(node, &call, "").await.unwrap_or_else(|e| Outcome::Unknown(e.to_string()));
                self.history.complete(op, outcome);
            } else {
                let outcome = self.write(home, &call, &format!("w{}-{i}", self.w)).await;
                // Only a definite answer moves what this writer believes about its plate.
                match (&call, &outcome) {
                    (Call::Enter { .. }, Outcome::Done) => inside[plate] = true,
                    (Call::Enter { .. }, Outcome::Failed(m)) => inside[plate] = m.starts_with("AlreadyExists"),
                    (Call::Exit { .. }, Outcome::Done | Outcome::Failed(_)) => inside[plate] = false,
                    _ => {}
                }
            }
            if self.shape.eventual && i % 5 == 1 {
                self.eventual_add(home).await;
            }
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
    }

    /// One logical write: the same request id until a definite answer, the budget, or the stop.
    async fn write(&self, home: usize, call: &Call, request_id: &str) -> Outcome {
        let started = Instant::now();
        let mut at = home;
        let op = self.history.invoke(format!("n{}/w{}", self.nodes[home].id, self.w), call.clone());
        loop {
            let sent = Instant::now();
            let node = &self.nodes[at];
            let outcome = match attempt(node, call, request_id).await {
                Ok(outcome) => {
                    self.acked[&node.id].fetch_add(1, Ordering::Relaxed);
                    let mut gap = self.gap.lock().expect("gap lock");
                    if let Some(fault) = gap.fault.filter(|f| sent >= *f) {
                        gap.gap.get_or_insert_with(|| fault.elapsed());
                    }
                    outcome
                }
                Err(status) => write_outcome(&status),
            };
            let give_up = started.elapsed() >= self.shape.op_budget || self.stop.load(Ordering::Relaxed);
            if !matches!(outcome, Outcome::Unknown(_)) || give_up {
                self.history.complete(op, outcome.clone());
                return outcome;
            }
            if self.shape.failover {
                at = (at + 1) % self.nodes.len();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn eventual_add(&self, home: usize) {
        let mut counters = self.nodes[home].counters.clone();
        let request =
            AddRequest { name: EVENTUAL_COUNTER.into(), delta: 1, mode: W::Eventual as i32, ..Default::default() };
        match counters.add(timed(request)).await {
            Ok(_) => self.eventual_acked.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.eventual_unknown.fetch_add(1, Ordering::Relaxed),
        };
    }
}

async fn configure_lot(parking: ParkingClient<Channel>) {
    let request = ConfigureLotRequest { lot: LOT.into(), capacity: LOT_CAPACITY, gates: 2, ..Default::default() };
    eventually("the fault lot to be configured", WAIT, || {
        let (mut parking, request) = (parking.clone(), request.clone());
        async move { parking.configure_lot(timed(request)).await.ok().map(|_| ()) }
    })
    .await;
}

/// Waits until node `id` (just restarted) has applied what the leader had applied when it came back.
async fn wait_caught_up(cluster: &TestCluster, id: u64) {
    let leader = cluster.wait_for_leader().await;
    let target = eventually("the leader's applied index", WAIT, || cluster.applied_index(leader)).await;
    eventually(&format!("node {id} to apply index {target}"), WAIT, || async {
        (cluster.applied_index(id).await? >= target).then_some(())
    })
    .await;
}

const CRASH_LOAD: Shape =
    Shape { writers: 6, max_ops: 20_000, failover: true, eventual: false, op_budget: Duration::from_secs(8) };

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

/// 1. three processes that snapshot every 20 entries; 2. node 1 (the lowest id, which initialises a
/// new cluster when its data is empty) is stopped; 3. adds through the others until the leader has
/// compacted past node 1's last entry and both survivors hold the whole log; 4. node 1's data
/// directory is deleted and it starts again, empty, under the same id: it can only catch up by
/// snapshot, and does; 5. the other survivor is SIGKILLed and writes still commit, so node 1 is a
/// voter holding the data again.
///
/// openraft cannot tell a wiped voter from a new one: it comes back at term 0 with no log and no
/// vote, and grants its vote to any candidate whose log is at least as long as its empty one. That
/// vote is only dangerous if it helps elect a candidate missing a committed entry, which needs that
/// entry to have been on a majority that counted the wiped node's old copy. Step 3 rules that out:
/// both survivors hold every entry before the wipe, so any candidate the wiped node can help elect
/// (it cannot win itself with an empty log) has them all. Node 1's re-initialisation is harmless
/// for the same reason: its lone membership entry at index 0 carries term 0, loses every election
/// against the survivors' logs, and is replaced by the leader's snapshot. In production, replace a
/// member whose disk was lost only after the rest hold the whole log, as here.
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
    let wiped = 1;
    for i in 0..10 {
        assert!(matches!(add(2, i).await, Outcome::Value(_)), "add before the wipe");
    }
    let status = cluster.status(wiped).await.expect("status");
    let wiped_last = status.nodes.iter().find(|n| n.id == wiped).expect("self in status").last_log_index;
    cluster.stop(wiped).await;
    let leader = cluster.wait_for_leader().await;
    let other = cluster.followers(leader).into_iter().find(|id| *id != wiped).expect("the other survivor");
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
    let applied = cluster.applied_index(leader).await.expect("leader's applied index");
    cluster.wait_for_applied(applied).await;

    std::fs::remove_dir_all(cluster.data_dir(wiped)).expect("wipe the data directory");
    let restarted = Instant::now();
    cluster.restart(wiped);
    eventually(&format!("the wiped node {wiped} to catch up"), WAIT, || async {
        (cluster.get(wiped, COUNTER, C::Local).await.ok()? == 160).then_some(())
    })
    .await;
    let caught_up = restarted.elapsed();
    let me = cluster.status(wiped).await.expect("status").nodes.into_iter().find(|n| n.id == wiped).expect("self");
    assert!(me.snapshot_index > wiped_last, "the wiped node holds a snapshot: {me:?}");
    println!(
        "node {wiped} stopped at log index {wiped_last}, leader purged up to {purged}; wiped and restarted, it \
         installed a snapshot at {} and caught up in {caught_up:?}",
        me.snapshot_index
    );

    cluster.kill(other);
    for i in 160..170 {
        assert!(matches!(add(wiped, i).await, Outcome::Value(_)), "add with node {other} down: node {wiped} must vote");
    }
    let op = history.invoke("final", Call::Read { counter: COUNTER.into() });
    let value = cluster.get(wiped, COUNTER, C::Linearizable).await.expect("final read");
    history.complete(op, Outcome::Value(value));
    let verdict = history.verdict();
    let row = Row {
        converged: Some(caught_up),
        ..verdict.row(
            "member replace",
            "a follower's data directory deleted while down, restarted under the same id after compaction",
        )
    };
    println!("{row}");
    verdict.assert_clean("member replace");
    assert_eq!(value, 170);
}
