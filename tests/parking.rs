//! Parking on the strong path: every rule with its exact status code and the lot unchanged after
//! each refusal, then many clients racing for a small lot while the leader is killed.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{eventually, TestCluster, WAIT};
use raftlot::pb::v1::parking_client::ParkingClient;
use raftlot::pb::v1::{ConfigureLotRequest, EnterRequest, ExitRequest, GetLotReply, GetLotRequest, GetVehicleRequest};
use tonic::transport::Channel;
use tonic::Code;

fn enter(lot: &str, plate: &str, gate: u32) -> EnterRequest {
    EnterRequest { lot: lot.into(), plate: plate.into(), gate, mode: 0, request_id: String::new() }
}

fn exit(lot: &str, plate: &str, gate: u32) -> ExitRequest {
    ExitRequest { lot: lot.into(), plate: plate.into(), gate, mode: 0, request_id: String::new() }
}

async fn lot(client: &mut ParkingClient<Channel>, name: &str) -> GetLotReply {
    let mut reply =
        client.get_lot(GetLotRequest { lot: name.into(), consistency: 0 }).await.expect("get lot").into_inner();
    reply.meta = None; // compare the lot, not where it was read
    reply
}

/// Every rule, each refusal checked for its code, its message and an unchanged lot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_parking_rule_holds_with_its_status_code() {
    let cluster = TestCluster::start(3).await;
    let mut p1 = cluster.parking(1);
    let mut p2 = cluster.parking(2);
    let mut p3 = cluster.parking(3);

    let main = eventually("the start-up lot main", WAIT, || {
        let mut c = p1.clone();
        async move { c.get_lot(GetLotRequest { lot: "main".into(), consistency: 0 }).await.ok() }
    })
    .await
    .into_inner();
    assert_eq!((main.capacity, main.gates, main.occupied, main.free), (100, 4, 0, 100));

    let made = p2
        .configure_lot(ConfigureLotRequest { lot: "tiny".into(), capacity: 2, gates: 2, ..Default::default() })
        .await
        .expect("configure")
        .into_inner();
    assert!(made.created);

    let first = p1.enter(enter("tiny", " ab-12 ", 1)).await.expect("enter").into_inner();
    assert_eq!((first.plate.as_str(), first.occupied, first.capacity), ("AB-12", 1, 2));
    assert!(first.entered_at_ms > 1_600_000_000_000, "entered_at is the leader's wall clock");
    p3.enter(enter("tiny", "CD 34", 2)).await.expect("second enter");

    let before = lot(&mut p1, "tiny").await;
    let refusals: Vec<(&str, Result<(), tonic::Status>, Code, &str)> = vec![
        (
            "a full lot",
            p2.enter(enter("tiny", "EF56", 1)).await.map(drop),
            Code::FailedPrecondition,
            "lot tiny is full (2/2)",
        ),
        ("a plate already inside", p1.enter(enter("tiny", "ab-12", 2)).await.map(drop), Code::AlreadyExists, "tiny"),
        (
            "the same plate in another lot",
            p3.enter(enter("main", "AB-12", 1)).await.map(drop),
            Code::AlreadyExists,
            "inside lot tiny",
        ),
        (
            "gate above the lot's gates",
            p1.enter(enter("main", "GH78", 5)).await.map(drop),
            Code::InvalidArgument,
            "gate",
        ),
        ("gate 0", p2.enter(enter("main", "GH78", 0)).await.map(drop), Code::InvalidArgument, "gate"),
        ("an empty plate", p3.enter(enter("main", "  ", 1)).await.map(drop), Code::InvalidArgument, "plate"),
        (
            "a 17-character plate",
            p1.enter(enter("main", "ABCDEFGHIJKLMNOPQ", 1)).await.map(drop),
            Code::InvalidArgument,
            "plate",
        ),
        (
            "a plate with a bad character",
            p1.enter(enter("main", "AB_12", 1)).await.map(drop),
            Code::InvalidArgument,
            "plate",
        ),
        ("an unknown lot", p2.enter(enter("nowhere", "GH78", 1)).await.map(drop), Code::NotFound, "nowhere"),
        ("a bad lot name", p2.enter(enter("no where", "GH78", 1)).await.map(drop), Code::InvalidArgument, "lot"),
        ("an exit of a car not inside", p3.exit(exit("tiny", "ZZ99", 1)).await.map(drop), Code::NotFound, "ZZ99"),
        ("an exit from the wrong lot", p3.exit(exit("main", "AB-12", 1)).await.map(drop), Code::NotFound, "main"),
        (
            "an exit at a gate that does not exist",
            p1.exit(exit("tiny", "AB-12", 3)).await.map(drop),
            Code::InvalidArgument,
            "gate",
        ),
        (
            "shrinking below occupancy",
            p2.configure_lot(ConfigureLotRequest { lot: "tiny".into(), capacity: 1, gates: 2, ..Default::default() })
                .await
                .map(drop),
            Code::FailedPrecondition,
            "cannot shrink",
        ),
        (
            "capacity 0",
            p2.configure_lot(ConfigureLotRequest { lot: "tiny".into(), capacity: 0, gates: 2, ..Default::default() })
                .await
                .map(drop),
            Code::InvalidArgument,
            "capacity",
        ),
        (
            "65 gates",
            p2.configure_lot(ConfigureLotRequest { lot: "tiny".into(), capacity: 5, gates: 65, ..Default::default() })
                .await
                .map(drop),
            Code::InvalidArgument,
            "gates",
        ),
        (
            "an unknown write mode",
            p1.enter(EnterRequest { mode: 7, ..enter("tiny", "EF56", 1) }).await.map(drop),
            Code::InvalidArgument,
            "mode",
        ),
    ];
    for (what, result, code, needle) in refusals {
        let status = result.expect_err(what);
        assert_eq!(status.code(), code, "{what}: {status:?}");
        assert!(status.message().contains(needle), "{what}: {:?} should contain {needle:?}", status.message());
        assert_eq!(lot(&mut p1, "tiny").await, before, "{what} must not change the lot");
    }
    assert_eq!(lot(&mut p1, "main").await.occupied, 0, "no refusal admitted a car to main");

    let left = p2.exit(exit("tiny", "ab-12", 2)).await.expect("exit").into_inner();
    assert_eq!((left.occupied, left.gate), (1, 2));
    let gone =
        p3.get_vehicle(GetVehicleRequest { plate: "AB-12".into(), consistency: 0 }).await.expect("where").into_inner();
    assert!(!gone.inside);
    let there =
        p1.get_vehicle(GetVehicleRequest { plate: "cd 34".into(), consistency: 0 }).await.expect("where").into_inner();
    assert!(there.inside);
    assert_eq!((there.lot.as_str(), there.gate), ("tiny", 2));

    let now = lot(&mut p3, "tiny").await;
    assert_eq!((now.occupied, now.free), (1, 1));
    let stats: Vec<(u32, u64, u64)> = now.gate_stats.iter().map(|g| (g.gate, g.entries, g.exits)).collect();
    assert_eq!(stats, vec![(1, 1, 0), (2, 1, 1)]);
    assert_eq!(now.vehicles.iter().map(|v| v.plate.as_str()).collect::<Vec<_>>(), vec!["CD 34"]);

    // request_id: a retry of an entry applies once, on any node.
    let request = EnterRequest { request_id: "gate1-evt-9".into(), ..enter("tiny", "EF56", 1) };
    let a = p1.enter(request.clone()).await.expect("enter with id").into_inner();
    let b = p3.enter(request).await.expect("retry").into_inner();
    assert!(b.deduplicated);
    assert_eq!((a.occupied, a.log_index, a.entered_at_ms), (b.occupied, b.log_index, b.entered_at_ms));
    assert_eq!(lot(&mut p2, "tiny").await.occupied, 2);
}

/// What one client ended up knowing about its own plate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Known {
    Inside,
    Outside,
    /// A request never got a definitive answer before the run ended: either state is allowed.
    Unknown,
}

fn definitive(code: Code) -> bool {
    matches!(code, Code::FailedPrecondition | Code::AlreadyExists | Code::NotFound | Code::InvalidArgument)
}

/// 1. a lot of 10 spaces; 2. 30 clients, each with its own plate, spread over all nodes, enter
/// and leave repeatedly, retrying each request under the same request_id until it gets a definitive
/// answer; 3. a reader checks every LINEARIZABLE GetLot for capacity and duplicate plates; 4. the
/// leader is SIGKILLed midway; 5. at the end the lot holds exactly the plates whose clients know
/// they are inside, give or take plates whose last request has an unknown outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contended_small_lot_never_overflows_while_the_leader_dies() {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let mut admin = cluster.parking(leader);
    admin
        .configure_lot(ConfigureLotRequest { lot: "small".into(), capacity: 10, gates: 2, ..Default::default() })
        .await
        .expect("configure small");

    let stop = Arc::new(AtomicBool::new(false));
    let known: Arc<Mutex<BTreeMap<String, Known>>> = Arc::default();
    let violations: Arc<Mutex<Vec<String>>> = Arc::default();

    let reader = {
        let clients: Vec<_> = cluster.ids().iter().map(|id| cluster.parking(*id)).collect();
        let (stop, violations) = (stop.clone(), violations.clone());
        tokio::spawn(async move {
            let mut reads = 0u64;
            // Bounded: at most 2,000 reads.
            while !stop.load(Ordering::Relaxed) && reads < 2_000 {
                let mut c = clients[(reads % 3) as usize].clone();
                reads += 1;
                if let Ok(r) = c.get_lot(GetLotRequest { lot: "small".into(), consistency: 0 }).await {
                    let r = r.into_inner();
                    let plates: BTreeSet<&str> = r.vehicles.iter().map(|v| v.plate.as_str()).collect();
                    if r.occupied > r.capacity
                        || plates.len() != r.vehicles.len()
                        || r.occupied as usize != r.vehicles.len()
                    {
                        violations.lock().expect("lock").push(format!("bad read: {r:?}"));
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            reads
        })
    };

    let mut drivers = Vec::new();
    for i in 0..30u32 {
        // Each driver starts at its own node and moves to the next one when a call fails, as a
        // client with the list of endpoints would.
        let clients: Vec<_> = cluster.ids().iter().map(|id| cluster.parking(*id)).collect();
        let mut at = (i % 3) as usize;
        let (stop, known) = (stop.clone(), known.clone());
        let plate = format!("CAR-{i:02}");
        drivers.push(tokio::spawn(async move {
            known.lock().expect("lock").insert(plate.clone(), Known::Outside);
            // Bounded: eight visits per car at most.
            for visit in 0..8u32 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let gate = 1 + (i + visit) % 2;
                let entered = loop {
                    let request =
                        EnterRequest { request_id: format!("{plate}-in-{visit}"), ..enter("small", &plate, gate) };
                    let mut req = tonic::Request::new(request);
                    req.set_timeout(Duration::from_secs(3));
                    match clients[at].clone().enter(req).await {
                        Ok(_) => break Some(true),
                        Err(s) if definitive(s.code()) => break Some(false),
                        Err(_) if stop.load(Ordering::Relaxed) => break None,
                        Err(_) => {
                            known.lock().expect("lock").insert(plate.clone(), Known::Unknown);
                            at = (at + 1) % clients.len();
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                };
                let state = match entered {
                    Some(true) => Known::Inside,
                    Some(false) => Known::Outside,
                    None => Known::Unknown,
                };
                known.lock().expect("lock").insert(plate.clone(), state);
                if state != Known::Inside {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
                if visit == 7 {
                    break; // the last visit stays parked, so the end state is not trivially empty
                }
                tokio::time::sleep(Duration::from_millis(15)).await;
                let left = loop {
                    let request =
                        ExitRequest { request_id: format!("{plate}-out-{visit}"), ..exit("small", &plate, gate) };
                    let mut req = tonic::Request::new(request);
                    req.set_timeout(Duration::from_secs(3));
                    match clients[at].clone().exit(req).await {
                        Ok(_) => break Some(Known::Outside),
                        Err(s) if definitive(s.code()) => break Some(Known::Inside),
                        Err(_) if stop.load(Ordering::Relaxed) => break None,
                        Err(_) => {
                            known.lock().expect("lock").insert(plate.clone(), Known::Unknown);
                            at = (at + 1) % clients.len();
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                };
                known.lock().expect("lock").insert(plate.clone(), left.unwrap_or(Known::Unknown));
                if left.is_none() {
                    break;
                }
            }
        }));
    }

    // Kill the leader once the lot has been full at least once.
    let mut probe = cluster.parking(leader);
    eventually("the small lot to fill up", WAIT, || {
        let mut c = probe.clone();
        async move {
            let r = c.get_lot(GetLotRequest { lot: "small".into(), consistency: 3 }).await.ok()?.into_inner();
            (r.occupied == r.capacity).then_some(())
        }
    })
    .await;
    cluster.kill(leader);
    let survivors = cluster.followers(leader);
    // Let the drivers finish their bounded visits (or give up after 60 s).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    for d in drivers {
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        if tokio::time::timeout(remaining, d).await.is_err() {
            stop.store(true, Ordering::Relaxed);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let reads = reader.await.expect("reader");

    let new_leader = cluster.wait_for_leader().await;
    assert!(survivors.contains(&new_leader));
    probe = cluster.parking(new_leader);
    let end = lot(&mut probe, "small").await;
    let inside: BTreeSet<String> = end.vehicles.iter().map(|v| v.plate.clone()).collect();
    let known = known.lock().expect("lock").clone();
    let must: BTreeSet<String> = known.iter().filter(|(_, k)| **k == Known::Inside).map(|(p, _)| p.clone()).collect();
    let may: BTreeSet<String> = known.iter().filter(|(_, k)| **k != Known::Outside).map(|(p, _)| p.clone()).collect();
    let unknown = may.len() - must.len();
    println!(
        "leader {leader} killed; {reads} linearizable reads; {} inside at the end, {} acknowledged inside, {unknown} unknown",
        inside.len(),
        must.len()
    );
    let violations = violations.lock().expect("lock").clone();
    assert!(violations.is_empty(), "invariant violations:\n{}", violations.join("\n"));
    assert!(end.occupied <= end.capacity);
    assert!(must.is_subset(&inside), "acknowledged cars missing: {:?}", must.difference(&inside).collect::<Vec<_>>());
    assert!(
        inside.is_subset(&may),
        "cars inside that no client believes entered: {:?}",
        inside.difference(&may).collect::<Vec<_>>()
    );
}
