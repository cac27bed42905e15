//! Bad input on every public method: each field at its edges gets the right status code and a
//! message naming the field, no node panics, and no state changes; garbage bytes on the client,
//! peer and HTTP ports are dropped without harm.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::history::Row;
use common::local::LocalCluster;
use raftlot::pb::v1::{
    AddRequest, ConfigureLotRequest, EnterRequest, ExitRequest, GetLotRequest, GetRequest, GetVehicleRequest,
    ListRequest, ReadConsistency as C,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

/// Panics in node code anywhere in this test process: a panicking handler only drops its
/// connection, so the client alone would not notice.
static PANICS: AtomicUsize = AtomicUsize::new(0);

/// The tests' own threads, named after them: their failed assertions are not node panics.
const TESTS: [&str; 2] =
    ["every_field_at_its_edges_is_refused_by_name_and_changes_nothing", "garbage_bytes_on_every_port_harm_nothing"];

fn count_panics() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !std::thread::current().name().is_some_and(|n| TESTS.contains(&n)) {
                PANICS.fetch_add(1, Ordering::SeqCst);
            }
            default(info)
        }));
    });
}

/// Just over the client port's 1 MiB message limit.
const HUGE: usize = (1 << 20) + 1;

/// One request to any public method.
#[derive(Debug, Clone)]
enum Req {
    Add(AddRequest),
    Get(GetRequest),
    List(ListRequest),
    Enter(EnterRequest),
    Exit(ExitRequest),
    GetLot(GetLotRequest),
    Configure(ConfigureLotRequest),
    Vehicle(GetVehicleRequest),
}

async fn send(cluster: &LocalCluster, id: u64, req: Req) -> Result<(), tonic::Status> {
    let (mut counters, mut parking) = (cluster.counters(id), cluster.parking(id));
    match req {
        Req::Add(r) => counters.add(r).await.map(drop),
        Req::Get(r) => counters.get(r).await.map(drop),
        Req::List(r) => counters.list(r).await.map(drop),
        Req::Enter(r) => parking.enter(r).await.map(drop),
        Req::Exit(r) => parking.exit(r).await.map(drop),
        Req::GetLot(r) => parking.get_lot(r).await.map(drop),
        Req::Configure(r) => parking.configure_lot(r).await.map(drop),
        Req::Vehicle(r) => parking.get_vehicle(r).await.map(drop),
    }
}

fn add() -> AddRequest {
    AddRequest { name: "fresh".into(), delta: 1, ..Default::default() }
}

fn enter() -> EnterRequest {
    EnterRequest { lot: "edge".into(), plate: "NEW-1".into(), gate: 1, ..Default::default() }
}

fn exit() -> ExitRequest {
    ExitRequest { lot: "edge".into(), plate: "IN-1".into(), gate: 1, ..Default::default() }
}

fn configure() -> ConfigureLotRequest {
    ConfigureLotRequest { lot: "edge".into(), capacity: 3, gates: 2, max_stay_ms: 0 }
}

/// Every bad request, the code it must get, and the text its message must contain (the field).
fn cases() -> Vec<(Req, Code, &'static str)> {
    use Code::{InvalidArgument as Invalid, NotFound, OutOfRange};
    let long = "x".repeat(129);
    let mut cases = Vec::new();
    for bad_name in ["", long.as_str(), "a b", "é", "a/b", "nul\0", "emoji-\u{1F697}"] {
        cases.push((Req::Add(AddRequest { name: bad_name.into(), ..add() }), Invalid, "name"));
        cases.push((Req::Get(GetRequest { name: bad_name.into(), consistency: 0 }), Invalid, "name"));
        cases.push((Req::Enter(EnterRequest { lot: bad_name.into(), ..enter() }), Invalid, "lot"));
        cases.push((Req::Exit(ExitRequest { lot: bad_name.into(), ..exit() }), Invalid, "lot"));
        cases.push((Req::GetLot(GetLotRequest { lot: bad_name.into(), consistency: 0 }), Invalid, "lot"));
        cases.push((Req::Configure(ConfigureLotRequest { lot: bad_name.into(), ..configure() }), Invalid, "lot"));
        if !bad_name.is_empty() {
            // An empty request id means "none"; anything else must be a valid token.
            cases.push((Req::Add(AddRequest { request_id: bad_name.into(), ..add() }), Invalid, "request_id"));
            cases.push((Req::Enter(EnterRequest { request_id: bad_name.into(), ..enter() }), Invalid, "request_id"));
            cases.push((Req::Exit(ExitRequest { request_id: bad_name.into(), ..exit() }), Invalid, "request_id"));
        }
    }
    for bad_plate in ["", "   ", "ABCDEFGHIJKLMNOPQ", "AB_1", "ÄB-1", "A\tB", "\u{0}"] {
        cases.push((Req::Enter(EnterRequest { plate: bad_plate.into(), ..enter() }), Invalid, "plate"));
        cases.push((Req::Exit(ExitRequest { plate: bad_plate.into(), ..exit() }), Invalid, "plate"));
        cases.push((Req::Vehicle(GetVehicleRequest { plate: bad_plate.into(), consistency: 0 }), Invalid, "plate"));
    }
    for bad_enum in [5, -1, i32::MAX, i32::MIN] {
        cases.push((Req::Add(AddRequest { mode: bad_enum, ..add() }), Invalid, "mode"));
        cases.push((Req::Enter(EnterRequest { mode: bad_enum, ..enter() }), Invalid, "mode"));
        cases.push((Req::Exit(ExitRequest { mode: bad_enum, ..exit() }), Invalid, "mode"));
        cases.push((Req::Get(GetRequest { name: "hi".into(), consistency: bad_enum }), Invalid, "consistency"));
        cases.push((Req::List(ListRequest { consistency: bad_enum }), Invalid, "consistency"));
        let lot = GetLotRequest { lot: "edge".into(), consistency: bad_enum };
        cases.push((Req::GetLot(lot), Invalid, "consistency"));
        let vehicle = GetVehicleRequest { plate: "IN-1".into(), consistency: bad_enum };
        cases.push((Req::Vehicle(vehicle), Invalid, "consistency"));
    }
    for mode in [1, 2] {
        // Gates are checked against the lot's configuration, on both write paths.
        for gate in [0, 3, u32::MAX] {
            cases.push((Req::Enter(EnterRequest { gate, mode, ..enter() }), Invalid, "gate"));
            cases.push((Req::Exit(ExitRequest { gate, mode, ..exit() }), Invalid, "gate"));
        }
        cases.push((Req::Enter(EnterRequest { lot: "nolot".into(), mode, ..enter() }), NotFound, "nolot"));
    }
    for capacity in [0, 100_001, u32::MAX] {
        cases.push((Req::Configure(ConfigureLotRequest { capacity, ..configure() }), Invalid, "capacity"));
    }
    for gates in [0, 65, u32::MAX] {
        cases.push((Req::Configure(ConfigureLotRequest { gates, ..configure() }), Invalid, "gates"));
    }
    for max_stay_ms in [365 * 24 * 3600 * 1000 + 1, u64::MAX] {
        cases.push((Req::Configure(ConfigureLotRequest { max_stay_ms, ..configure() }), Invalid, "max_stay_ms"));
    }
    // Checked arithmetic at both ends of the signed 64-bit range; nothing is applied.
    cases.push((Req::Add(AddRequest { name: "hi".into(), delta: 1, ..add() }), OutOfRange, "counter hi"));
    cases.push((Req::Add(AddRequest { name: "hi".into(), delta: i64::MAX, ..add() }), OutOfRange, "counter hi"));
    cases.push((Req::Add(AddRequest { name: "lo".into(), delta: -1, ..add() }), OutOfRange, "counter lo"));
    cases.push((Req::Add(AddRequest { name: "lo".into(), delta: i64::MIN, ..add() }), OutOfRange, "counter lo"));
    // Over the message limit: refused before decoding, so no field can be named; the size is.
    let huge = "x".repeat(HUGE);
    cases.push((Req::Add(AddRequest { name: huge.clone(), ..add() }), OutOfRange, "too large"));
    cases.push((Req::Enter(EnterRequest { plate: huge.clone(), ..enter() }), OutOfRange, "too large"));
    cases.push((Req::Configure(ConfigureLotRequest { lot: huge, ..configure() }), OutOfRange, "too large"));
    cases
}

/// Everything a client can read, strong and eventual, through node `id`.
async fn everything(cluster: &LocalCluster, id: u64) -> Vec<String> {
    let mut seen = Vec::new();
    for consistency in [C::Linearizable, C::Eventual] {
        let c = consistency as i32;
        let mut counters = cluster.counters(id);
        let list = counters.list(ListRequest { consistency: c }).await.expect("list").into_inner();
        seen.push(format!("{:?}", list.counters));
        for lot in ["main", "edge"] {
            let reply = cluster.parking(id).get_lot(GetLotRequest { lot: lot.into(), consistency: c }).await;
            let reply = reply.expect("get lot").into_inner();
            let vehicles: Vec<_> = reply.vehicles.iter().map(|v| (&v.plate, v.gate, v.entered_at_ms)).collect();
            seen.push(format!("{lot} {}x{} {vehicles:?} {:?}", reply.capacity, reply.gates, reply.gate_stats));
        }
    }
    seen
}

/// 1. three in-process nodes; a counter at i64::MAX, one at i64::MIN, a 2-space lot with one car;
/// 2. every bad request through every node gets its code and names its field; 3. every node's
/// strong and eventual views are what they were, and nothing panicked.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_field_at_its_edges_is_refused_by_name_and_changes_nothing() {
    count_panics();
    let cluster = LocalCluster::start(3, &[]).await;
    let setup = [
        Req::Add(AddRequest { name: "hi".into(), delta: i64::MAX, ..add() }),
        Req::Add(AddRequest { name: "lo".into(), delta: i64::MIN, ..add() }),
        Req::Configure(ConfigureLotRequest { lot: "edge".into(), capacity: 2, gates: 2, max_stay_ms: 0 }),
        Req::Enter(EnterRequest { plate: " in-1 ".into(), ..enter() }),
    ];
    for req in setup {
        send(&cluster, 1, req.clone()).await.unwrap_or_else(|e| panic!("setup {req:?}: {e:?}"));
    }
    let ids = cluster.ids();
    let mut before = Vec::new();
    for id in &ids {
        // Each node has applied the setup before its view is taken.
        common::eventually(&format!("node {id} to see the setup"), common::WAIT, || async {
            let view = everything(&cluster, *id).await;
            view[2].contains("IN-1").then_some(view)
        })
        .await;
        before.push(everything(&cluster, *id).await);
    }

    let cases = cases();
    let mut wrong = Vec::new();
    for (req, code, needle) in &cases {
        for id in &ids {
            match send(&cluster, *id, req.clone()).await {
                Ok(()) => wrong.push(format!("node {id} accepted {}", short(req))),
                Err(s) if s.code() != *code || !s.message().contains(needle) => wrong.push(format!(
                    "node {id}: {} got {:?} {:?}, want {code:?} naming {needle:?}",
                    short(req),
                    s.code(),
                    s.message()
                )),
                Err(_) => {}
            }
        }
    }
    let mut changed = Vec::new();
    for (id, was) in ids.iter().zip(&before) {
        let now = everything(&cluster, *id).await;
        if &now != was {
            changed.push(format!("node {id}: {was:?}\n  became {now:?}"));
        }
    }
    let panics = PANICS.load(Ordering::SeqCst);
    let row = Row {
        scenario: "bad input",
        injected: "every public field at its edges, through every node",
        ops: cases.len() * ids.len(),
        lost: 0,
        violations: wrong.len() + changed.len() + panics,
        gaps: Vec::new(),
        converged: None,
    };
    println!("{row}");
    assert!(wrong.is_empty(), "{} of {} bad requests were mishandled:\n{}", wrong.len(), cases.len(), wrong.join("\n"));
    assert!(changed.is_empty(), "bad requests changed state:\n{}", changed.join("\n"));
    assert_eq!(panics, 0, "a node panicked; see the output above");
    cluster.stop().await;
}

/// A request, cut short for a failure message (the huge ones are a megabyte long).
fn short(req: &Req) -> String {
    let text = format!("{req:?}");
    if text.len() > 200 {
        format!("{}... ({} bytes)", &text[..200], text.len())
    } else {
        text
    }
}

/// Deterministic noise: the same bytes every run, so a failure can be replayed.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.max(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Writes `bytes` to `addr` and reads whatever comes back until the server closes or 5 s pass;
/// `hang_up` closes the sending side first, as a client that vanishes mid-request does.
async fn throw(addr: std::net::SocketAddr, bytes: &[u8], hang_up: bool) -> Vec<u8> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    // The server may close before reading everything: a refused write is an answer too.
    let _ = stream.write_all(bytes).await;
    if hang_up {
        let _ = stream.shutdown().await;
    }
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut reply)).await;
    reply
}

/// 1. three in-process nodes; 2. noise, an HTTP/2 preface followed by noise, a malformed HTTP/1
/// request and an endless header line go to every node's client, peer and HTTP ports; 3. every node
/// still answers on every port, the cluster still commits, and nothing panicked.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn garbage_bytes_on_every_port_harm_nothing() {
    count_panics();
    let cluster = LocalCluster::start(3, &[]).await;
    let mut preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    preface.extend(noise(7, 4096));
    let long_header = format!("GET /ping HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(200_000));
    let payloads: Vec<Vec<u8>> = vec![
        noise(1, 64),
        noise(2, 256 * 1024),
        preface,
        b"GET /counter/x/value HTTP/1.1\r\nContent-Length: -5\r\n\r\n\xff\xfe".to_vec(),
        long_header.into_bytes(),
        vec![0; 9],
    ];
    let mut thrown = 0;
    for id in cluster.ids() {
        for addr in [cluster.client_addr(id), cluster.peer_addr(id), cluster.http_addr(id)] {
            for payload in &payloads {
                throw(addr, payload, true).await;
                thrown += 1;
            }
        }
    }
    for id in cluster.ids() {
        let reply = cluster.status(id).await.unwrap_or_else(|| panic!("node {id} still answers Status"));
        assert_ne!(reply.leader_id, 0, "node {id} knows a leader");
        let ping =
            throw(cluster.http_addr(id), b"GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", false).await;
        assert!(String::from_utf8_lossy(&ping).ends_with("pong"), "node {id}'s HTTP port still answers");
        let added = cluster.add(id, "after-garbage", 1, raftlot::pb::v1::WriteMode::Strong).await;
        assert!(added.is_ok(), "node {id} still commits through its peers: {added:?}");
    }
    let panics = PANICS.load(Ordering::SeqCst);
    let row = Row {
        scenario: "garbage bytes",
        injected: "noise, an HTTP/2 preface then noise, malformed HTTP/1 on the client, peer and HTTP ports",
        ops: thrown,
        lost: 0,
        violations: panics,
        gaps: Vec::new(),
        converged: None,
    };
    println!("{row}");
    assert_eq!(panics, 0, "a node panicked; see the output above");
    cluster.stop().await;
}
