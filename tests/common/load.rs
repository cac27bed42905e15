//! A recorded client load for fault scenarios: writers spread over the nodes, each logical write
//! retried under one request id until it gets a definite answer, every operation recorded in one
//! `History` for the checker, and the client-visible write gap after a marked fault.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use raftlot::pb::v1::counters_client::CountersClient;
use raftlot::pb::v1::parking_client::ParkingClient;
use raftlot::pb::v1::{
    AddRequest, ConfigureLotRequest, EnterRequest, ExitRequest, GetLotRequest, GetRequest, ReadConsistency as C,
    WriteMode as W,
};
use tonic::transport::Channel;

use super::history::{write_outcome, Call, History, Outcome};
use super::{eventually, WAIT};

pub const COUNTER: &str = "hits";
pub const EVENTUAL_COUNTER: &str = "ev";
pub const LOT: &str = "fz";
/// Fewer spaces than the writers' plates, so entries contend for the last ones.
pub const LOT_CAPACITY: u32 = 6;

/// One node's client stubs.
#[derive(Clone)]
pub struct Endpoint {
    pub id: u64,
    pub counters: CountersClient<Channel>,
    pub parking: ParkingClient<Channel>,
}

pub fn endpoints(
    ids: Vec<u64>,
    stubs: impl Fn(u64) -> (CountersClient<Channel>, ParkingClient<Channel>),
) -> Vec<Endpoint> {
    ids.into_iter()
        .map(|id| {
            let (counters, parking) = stubs(id);
            Endpoint { id, counters, parking }
        })
        .collect()
}

pub fn timed<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(Duration::from_secs(2));
    request
}

/// One attempt of `call` through `node`; writes carry `request_id` so a retry applies at most once.
pub async fn attempt(node: &Endpoint, call: &Call, request_id: &str) -> Result<Outcome, tonic::Status> {
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
pub struct Shape {
    pub writers: u64,
    /// Bounded per writer, whatever else happens.
    pub max_ops: u64,
    /// A failed attempt is retried through the next node (crash scenarios), or always through the
    /// writer's own node (partitions, where which side took a write is the point).
    pub failover: bool,
    /// Also add 1 to `ev` with eventual writes, which never enter the Raft log.
    pub eventual: bool,
    /// How long one logical write may keep retrying before it is recorded as unknown.
    pub op_budget: Duration,
}

/// What the writers share with the test: the history, the stop flag, and running tallies.
pub struct Shared {
    pub history: History,
    pub stop: AtomicBool,
    gap: Mutex<Gap>,
    /// Strong writes acknowledged, per node that acknowledged them.
    pub acked: BTreeMap<u64, AtomicU64>,
    pub eventual_acked: AtomicU64,
    pub eventual_unknown: AtomicU64,
}

/// Writers spread over every node, recording every operation in one history.
pub struct Load {
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
    pub fn start(nodes: Vec<Endpoint>, shape: Shape) -> Load {
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

    pub fn acked(&self) -> u64 {
        self.acked.values().map(|a| a.load(Ordering::Relaxed)).sum()
    }

    pub fn acked_via(&self, ids: &[u64]) -> u64 {
        ids.iter().map(|id| self.acked[id].load(Ordering::Relaxed)).sum()
    }

    pub async fn wait_for_acks(&self, what: &str, more: u64) {
        let target = self.acked() + more;
        eventually(what, WAIT, || async { (self.acked() >= target).then_some(()) }).await;
    }

    /// Marks a fault now: the next write sent after this and acknowledged closes the gap.
    pub fn fault(&self) {
        *self.gap.lock().expect("gap lock") = Gap { fault: Some(Instant::now()), gap: None };
    }

    pub async fn wait_for_gap(&self) -> Duration {
        eventually("a write acknowledged after the fault", WAIT, || async { self.gap.lock().expect("gap lock").gap })
            .await
    }

    /// Stops the writers and waits for each to finish its current op.
    pub async fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks.drain(..) {
            tokio::time::timeout(Duration::from_secs(15), task).await.expect("writer stops").expect("writer task");
        }
    }

    /// Records one LINEARIZABLE read of the counter and of the lot through each node, retried until
    /// it answers: the observations that the final state must satisfy.
    pub async fn final_reads(&self, nodes: &[Endpoint]) {
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

pub async fn configure_lot(parking: ParkingClient<Channel>) {
    let request = ConfigureLotRequest { lot: LOT.into(), capacity: LOT_CAPACITY, gates: 2, ..Default::default() };
    eventually("the fault lot to be configured", WAIT, || {
        let (mut parking, request) = (parking.clone(), request.clone());
        async move { parking.configure_lot(timed(request)).await.ok().map(|_| ()) }
    })
    .await;
}

pub const CRASH_LOAD: Shape =
    Shape { writers: 6, max_ops: 20_000, failover: true, eventual: false, op_budget: Duration::from_secs(8) };
