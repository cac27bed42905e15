//! `raftlot bench`: drives a running cluster with concurrent clients spread over its nodes and prints
//! what each consistency level costs, optionally next to etcd doing the same operations in the same
//! invocation. Latency is measured at the client, per call, into HDR histograms; failed calls are
//! counted, never dropped.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use super::status::fetch_status;
use super::{ClientAccess, Transport};
use crate::config::parse_duration;
use crate::pb::etcd::kv_client::KvClient;
use crate::pb::etcd::maintenance_client::MaintenanceClient;
use crate::pb::etcd::{PutRequest, RangeRequest, StatusRequest as EtcdStatusRequest};
use crate::pb::v1::counters_client::CountersClient;
use crate::pb::v1::parking_client::ParkingClient;
use crate::pb::v1::{
    AddRequest, ConfigureLotRequest, EnterRequest, ExitRequest, GetRequest, ReadConsistency, WriteMode,
};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// The lot the `park` workload uses: big enough that no run fills it.
const BENCH_LOT: &str = "bench";
const BENCH_GATES: u32 = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// Counter adds.
    Add,
    /// Enter/Exit pairs at random gates.
    Park,
    /// Counter reads.
    Read,
    /// Reads and adds, `--read-ratio` of them reads.
    Mixed,
    /// Write at one node, poll another until it shows the write: the convergence lag.
    Staleness,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Linearizable,
    Lease,
    Local,
    Eventual,
}

impl Level {
    fn read(self) -> ReadConsistency {
        match self {
            Level::Linearizable => ReadConsistency::Linearizable,
            Level::Lease => ReadConsistency::Lease,
            Level::Local => ReadConsistency::Local,
            Level::Eventual => ReadConsistency::Eventual,
        }
    }

    /// Writes have two modes: `eventual` writes to the CRDT replica, every other level is STRONG.
    fn write(self) -> WriteMode {
        if self == Level::Eventual {
            WriteMode::Eventual
        } else {
            WriteMode::Strong
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// raftlot client endpoints, comma separated; clients are spread over them.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:50051,127.0.0.1:50052,127.0.0.1:50053")]
    pub endpoints: Vec<String>,
    #[command(flatten)]
    pub access: ClientAccess,
    #[arg(long, value_enum, default_value = "read")]
    pub workload: Workload,
    /// One pass per level. For add and park, `eventual` writes with WRITE_MODE_EVENTUAL and the other
    /// levels write STRONG (so list one of them); for staleness only local and eventual apply.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "linearizable,lease,local,eventual")]
    pub consistency: Vec<Level>,
    /// Concurrent clients, one run per value.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    pub clients: Vec<usize>,
    /// Connections per system, shared by the clients in turn (as etcd's benchmark tool's --conns);
    /// 0 gives each client its own.
    #[arg(long, default_value_t = 0)]
    pub conns: usize,
    /// How long each run lasts, e.g. 5s or 500ms. Default 5s, or with --ops an hour, so that the
    /// operation count is what ends a run.
    #[arg(long)]
    pub duration: Option<String>,
    /// Stop each run after this many operations (and at --duration, whichever comes first).
    #[arg(long)]
    pub ops: Option<u64>,
    /// The read workload also measures a gRPC health check on each system, a call that reads
    /// nothing on the same connections: the floor every read pays. Read rows show their p50 over it.
    #[arg(long)]
    pub health_check: bool,
    /// The share of reads in the mixed workload.
    #[arg(long, default_value_t = 0.9)]
    pub read_ratio: f64,
    /// How many counters the workloads spread over.
    #[arg(long, default_value_t = 64)]
    pub keys: u32,
    /// Write every figure to this JSON file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Draw the latency distributions to this SVG file.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// etcd client endpoints; when set, the same operations run against etcd in this invocation
    /// (put; linearizable get; serializable get) and each raftlot row shows its ratio to etcd.
    #[arg(long, value_delimiter = ',')]
    pub etcd: Vec<String>,
    /// Run every pass this many times, raftlot's and etcd's in alternating order, and print medians.
    /// Ratios are taken within each round, against the pass run beside it, before the median: on a
    /// shared machine whose speed drifts, a ratio from one round is fairer than a ratio of medians.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub rounds: u32,
}

/// One measured run.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub round: u32,
    pub target: &'static str,
    pub op: String,
    pub clients: usize,
    /// The TCP connections the clients shared (see --conns).
    pub connections: usize,
    pub ops: u64,
    pub errors: u64,
    pub seconds: f64,
    pub ops_per_sec: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    /// (quantile, microseconds) for plotting.
    pub distribution: Vec<(f64, u64)>,
    /// Which etcd row this one is compared with.
    #[serde(skip)]
    baseline: Option<&'static str>,
    /// A LEASE, LOCAL or EVENTUAL read, whose p50 is compared with LINEARIZABLE's.
    #[serde(skip)]
    weaker_read: bool,
}

/// One operation's runs across the rounds: medians, and each round's ratios.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub target: &'static str,
    pub op: String,
    pub clients: usize,
    pub rounds: usize,
    pub ops_per_sec: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    /// The highest of the rounds' maxima.
    pub max_us: u64,
    /// Every round's errors together.
    pub errors: u64,
    /// Against etcd's operation in the same round, one ratio per round.
    pub vs_etcd: Option<Ratios>,
    /// p50 over raftlot's LINEARIZABLE read in the same round, one per round.
    pub p50_vs_linearizable: Vec<f64>,
    /// p50 over the same system's health check in the same round (`--health-check`), one per
    /// round: how far above a call that does nothing the operation sits.
    pub p50_vs_health_check: Vec<f64>,
    /// The median of each quantile across the rounds.
    pub distribution: Vec<(f64, u64)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Ratios {
    pub etcd_op: &'static str,
    pub ops_per_sec: Vec<f64>,
    pub p50: Vec<f64>,
}

/// Whether each system's first endpoint led when the bench started, `None` when it could not tell.
/// A one-client run sends every call there, and a follower of either system forwards, so one-client
/// figures compare like with like only when both first endpoints lead or neither does.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct FirstEndpointLeads {
    pub raftlot: Option<bool>,
    pub etcd: Option<bool>,
}

#[derive(Serialize)]
struct Report<'a> {
    workload: Workload,
    endpoints: &'a [String],
    etcd: &'a [String],
    first_endpoint_leads: FirstEndpointLeads,
    rounds: u32,
    rows: &'a [Row],
    summary: &'a [Summary],
}

/// What one client call does.
#[derive(Debug, Clone, Copy)]
enum Op {
    Add(Level),
    Park(Level),
    Read(Level),
    Mixed(Level, f64),
    EtcdPut,
    EtcdGet { serializable: bool },
    // A gRPC health check, which reads nothing: the read workload's floor, the cost of a call
    // through the same connections and HTTP/2 stack with no work behind it.
    HealthCheck,
    EtcdHealthCheck,
}

impl Op {
    fn label(self) -> String {
        match self {
            Op::Add(l) => format!("add {}", mode_name(l)),
            Op::Park(l) => format!("park {}", mode_name(l)),
            Op::Read(l) => format!("get {}", level_name(l)),
            Op::Mixed(l, r) => format!("mixed {:.0}% get {}", r * 100.0, level_name(l)),
            Op::HealthCheck | Op::EtcdHealthCheck => HEALTH_CHECK.into(),
            Op::EtcdPut => "put".into(),
            Op::EtcdGet { serializable: false } => "get linearizable".into(),
            Op::EtcdGet { serializable: true } => "get serializable".into(),
        }
    }

    /// The etcd operation this one is compared with.
    fn baseline(self) -> Option<&'static str> {
        match self {
            Op::Add(_) | Op::Park(_) => Some("put"),
            Op::Read(Level::Linearizable | Level::Lease) => Some("get linearizable"),
            Op::Read(Level::Local | Level::Eventual) => Some("get serializable"),
            Op::HealthCheck => Some(HEALTH_CHECK),
            _ => None,
        }
    }

    /// A read whose p50 is compared with LINEARIZABLE's.
    fn weaker_read(self) -> bool {
        matches!(self, Op::Read(l) if l != Level::Linearizable)
    }
}

const HEALTH_CHECK: &str = "health check";

fn level_name(l: Level) -> &'static str {
    match l {
        Level::Linearizable => "linearizable",
        Level::Lease => "lease",
        Level::Local => "local",
        Level::Eventual => "eventual",
    }
}

fn mode_name(l: Level) -> &'static str {
    match l.write() {
        WriteMode::Eventual => "eventual",
        _ => "strong",
    }
}

/// A client's connection to one node of the system under test.
// One per client, made once per run: the size difference costs nothing, a Box would cost a pointer
// chase on every measured call.
#[allow(clippy::large_enum_variant)]
enum Conn {
    Raftlot { counters: CountersClient<Transport>, parking: ParkingClient<Transport>, health: HealthClient<Transport> },
    Etcd { kv: KvClient<Transport>, health: HealthClient<Transport> },
}

/// etcd is reached in plaintext without a token: `--tls-ca` and `--client-token` are raftlot's.
fn etcd_access() -> ClientAccess {
    ClientAccess::default()
}

/// A small fast generator: the workload needs spread, not cryptographic randomness.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn chance(&mut self, p: f64) -> bool {
        (self.next() % 1_000_000) as f64 / 1_000_000.0 < p
    }
}

/// Per-client state across calls.
struct Client {
    id: usize,
    conn: Conn,
    rng: Rng,
    keys: u32,
    /// The park workload's car is inside (its next call is an exit).
    parked: bool,
}

/// One of the `keys` counters the workloads spread over, chosen at random.
fn key(rng: &mut Rng, keys: u32) -> String {
    format!("bench-{}", rng.below(keys as u64))
}

impl Client {
    async fn call(&mut self, op: Op) -> Result<(), tonic::Status> {
        let op = match op {
            Op::Mixed(l, ratio) if self.rng.chance(ratio) => Op::Read(l),
            Op::Mixed(..) => Op::Add(Level::Linearizable),
            op => op,
        };
        // Borrowed field by field, so the connection is used in place while the generator moves on.
        let Client { id, conn, rng, keys, parked } = self;
        match (conn, op) {
            (Conn::Raftlot { counters, .. }, Op::Add(l)) => {
                let request =
                    AddRequest { name: key(rng, *keys), delta: 1, mode: l.write() as i32, request_id: String::new() };
                counters.add(request).await.map(|_| ())
            }
            (Conn::Raftlot { counters, .. }, Op::Read(l)) => {
                counters.get(GetRequest { name: key(rng, *keys), consistency: l.read() as i32 }).await.map(|_| ())
            }
            (Conn::Raftlot { parking, .. }, Op::Park(l)) => {
                let gate = 1 + rng.below(BENCH_GATES as u64) as u32;
                let (lot, plate, mode) = (BENCH_LOT.to_string(), format!("BENCH-{id}"), l.write() as i32);
                let result = if *parked {
                    let request = ExitRequest { lot, plate, gate, mode, request_id: String::new() };
                    parking.exit(request).await.map(|_| ())
                } else {
                    let request = EnterRequest { lot, plate, gate, mode, request_id: String::new() };
                    parking.enter(request).await.map(|_| ())
                };
                if result.is_ok() {
                    *parked = !*parked;
                }
                result
            }
            (Conn::Raftlot { health, .. }, Op::HealthCheck) | (Conn::Etcd { health, .. }, Op::EtcdHealthCheck) => {
                health.check(HealthCheckRequest { service: String::new() }).await.map(|_| ())
            }
            (Conn::Etcd { kv, .. }, Op::EtcdPut) => {
                kv.put(PutRequest { key: key(rng, *keys).into_bytes(), value: b"1".to_vec() }).await.map(|_| ())
            }
            (Conn::Etcd { kv, .. }, Op::EtcdGet { serializable }) => {
                kv.range(RangeRequest { key: key(rng, *keys).into_bytes(), serializable }).await.map(|_| ())
            }
            (_, op) => Err(tonic::Status::internal(format!("{op:?} does not apply to this target"))),
        }
    }
}

/// Microseconds from 1 us to 100 s, at 3 significant digits.
fn histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 100_000_000, 3).context("cannot create a latency histogram")
}

fn progress(label: &str, len: u64) -> ProgressBar {
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template("{msg:>40} [{elapsed_precise}] {wide_bar} {percent:>3}%") {
        bar.set_style(style);
    }
    bar.set_message(label.to_string());
    bar
}

/// Runs `op` from `conns.len()` concurrent clients until the time or operation bound.
async fn run(
    target: &'static str,
    op: Op,
    conns: Vec<Conn>,
    keys: u32,
    duration: Duration,
    max_ops: Option<u64>,
) -> anyhow::Result<Row> {
    let clients = conns.len();
    let label = format!("{target} {} x{clients}", op.label());
    let done = Arc::new(AtomicU64::new(0));
    let bar = progress(&label, 1000);
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::with_capacity(clients);
    for (id, conn) in conns.into_iter().enumerate() {
        let done = done.clone();
        let mut hist = histogram()?;
        tasks.push(tokio::spawn(async move {
            let mut client =
                Client { id, conn, rng: Rng(0x9E37_79B9_7F4A_7C15 ^ (id as u64 + 1)), keys, parked: false };
            let mut errors = 0u64;
            loop {
                if Instant::now() >= deadline || max_ops.is_some_and(|m| done.load(Ordering::Relaxed) >= m) {
                    break;
                }
                let t = Instant::now();
                match client.call(op).await {
                    Ok(()) => {
                        let _ = hist.record(t.elapsed().as_micros().max(1) as u64);
                    }
                    Err(_) => errors += 1,
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            // Leave the lot as it was, so the next run's entries are not refused.
            if client.parked {
                let _ = client.call(op).await;
            }
            (hist, errors)
        }));
    }
    let ticker = {
        let (bar, done) = (bar.clone(), done.clone());
        tokio::spawn(async move {
            loop {
                let by_time = started.elapsed().as_secs_f64() / duration.as_secs_f64();
                let by_ops = max_ops.map_or(0.0, |m| done.load(Ordering::Relaxed) as f64 / m as f64);
                bar.set_position((by_time.max(by_ops).min(1.0) * 1000.0) as u64);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let (mut hist, mut errors) = (histogram()?, 0u64);
    for task in tasks {
        let (h, e) = task.await.context("a benchmark client panicked")?;
        hist.add(&h).context("merging histograms")?;
        errors += e;
    }
    let seconds = started.elapsed().as_secs_f64();
    ticker.abort();
    bar.finish_and_clear();
    warn_if_cut_short(&label, hist.len() + errors, max_ops);
    Ok(row(target, op.label(), clients, &hist, errors, seconds, Some(op)))
}

/// Says so when the time bound ended a run before its --ops count: its figures describe fewer
/// operations than were asked for.
fn warn_if_cut_short(label: &str, done: u64, max_ops: Option<u64>) {
    if let Some(wanted) = max_ops.filter(|&m| done < m) {
        eprintln!("{label}: the --duration bound ended this run after {done} of {wanted} operations");
    }
}

/// `compared` is the operation measured, when its row is set beside others (etcd's, LINEARIZABLE's).
fn row(
    target: &'static str,
    op: String,
    clients: usize,
    hist: &Histogram<u64>,
    errors: u64,
    seconds: f64,
    compared: Option<Op>,
) -> Row {
    let q = |q: f64| if hist.is_empty() { 0 } else { hist.value_at_quantile(q) };
    let distribution =
        [0.0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9999, 1.0].into_iter().map(|p| (p, q(p))).collect();
    Row {
        round: 0,
        target,
        op,
        clients,
        connections: clients,
        ops: hist.len(),
        errors,
        seconds,
        ops_per_sec: hist.len() as f64 / seconds.max(1e-9),
        p50_us: q(0.5),
        p90_us: q(0.9),
        p99_us: q(0.99),
        p999_us: q(0.999),
        max_us: if hist.is_empty() { 0 } else { hist.max() },
        distribution,
        baseline: compared.and_then(Op::baseline),
        weaker_read: compared.is_some_and(Op::weaker_read),
    }
}

/// The connections a run of `clients` opens to each system (--conns, or one per client).
fn channel_count(args: &BenchArgs, clients: usize) -> usize {
    if args.conns == 0 {
        clients
    } else {
        args.conns.min(clients)
    }
}

/// One channel per client: client `i` shares channel `i % channels`, and channel `j` goes to
/// endpoint `j % endpoints`.
async fn client_channels(
    access: &ClientAccess,
    endpoints: &[String],
    args: &BenchArgs,
    clients: usize,
) -> anyhow::Result<Vec<Transport>> {
    let mut channels = Vec::new();
    for j in 0..channel_count(args, clients) {
        channels.push(access.connect(&endpoints[j % endpoints.len()]).await?);
    }
    Ok((0..clients).map(|i| channels[i % channels.len()].clone()).collect())
}

async fn raftlot_conns(args: &BenchArgs, clients: usize) -> anyhow::Result<Vec<Conn>> {
    let channels = client_channels(&args.access, &args.endpoints, args, clients).await?;
    Ok(channels
        .into_iter()
        .map(|channel| Conn::Raftlot {
            counters: CountersClient::new(channel.clone()),
            parking: ParkingClient::new(channel.clone()),
            health: HealthClient::new(channel),
        })
        .collect())
}

async fn etcd_conns(args: &BenchArgs, clients: usize) -> anyhow::Result<Vec<Conn>> {
    let channels = client_channels(&etcd_access(), &args.etcd, args, clients).await?;
    Ok(channels
        .into_iter()
        .map(|channel| Conn::Etcd { kv: KvClient::new(channel.clone()), health: HealthClient::new(channel) })
        .collect())
}

/// Writes every key once so reads find data, and creates the park workload's lot.
async fn prepare(args: &BenchArgs) -> anyhow::Result<()> {
    let channel = args.access.connect(&args.endpoints[0]).await?;
    let mut counters = CountersClient::new(channel.clone());
    for k in 0..args.keys {
        let request = AddRequest { name: format!("bench-{k}"), delta: 0, ..Default::default() };
        counters.add(request).await.with_context(|| format!("cannot prepare counter bench-{k}"))?;
    }
    if args.workload == Workload::Park {
        let lot =
            ConfigureLotRequest { lot: BENCH_LOT.into(), capacity: 100_000, gates: BENCH_GATES, ..Default::default() };
        ParkingClient::new(channel).configure_lot(lot).await.context("cannot create the bench lot")?;
    }
    if !args.etcd.is_empty() {
        let mut kv = KvClient::new(etcd_access().connect(&args.etcd[0]).await?);
        for k in 0..args.keys {
            kv.put(PutRequest { key: format!("bench-{k}").into_bytes(), value: b"0".to_vec() })
                .await
                .context("cannot prepare etcd keys")?;
        }
    }
    Ok(())
}

/// Asks each system's first endpoint whether it leads, and warns when one does and the other does
/// not: the one-client rows would then set a leader against a follower.
async fn first_endpoint_leads(args: &BenchArgs) -> FirstEndpointLeads {
    let raftlot = async {
        let status = fetch_status(&args.endpoints[0], &args.access).await.ok()?;
        Some(status.leader_id != 0 && status.leader_id == status.served_by)
    };
    let etcd = async {
        let mut maintenance = MaintenanceClient::new(etcd_access().connect(args.etcd.first()?).await.ok()?);
        let status = maintenance.status(EtcdStatusRequest {}).await.ok()?.into_inner();
        Some(status.leader != 0 && Some(status.leader) == status.header.map(|h| h.member_id))
    };
    let leads = FirstEndpointLeads { raftlot: raftlot.await, etcd: etcd.await };
    if let (Some(raftlot), Some(etcd)) = (leads.raftlot, leads.etcd) {
        if raftlot != etcd {
            let role = |leads: bool| if leads { "its leader" } else { "a follower" };
            eprintln!(
                "warning: one-client runs reach raftlot at {} ({}) and etcd at {} ({}): their one-client rows set a \
                 leader against a follower, which forwards (benches/etcd-cluster.sh hands etcd's leadership to e1)",
                args.endpoints[0],
                role(raftlot),
                args.etcd[0],
                role(etcd)
            );
        }
    }
    leads
}

/// The staleness workload: write through the first endpoint, then poll the last one at `level`
/// until it shows the write. Records the lag from the write's acknowledgement.
async fn staleness(args: &BenchArgs, level: Level, duration: Duration, max_ops: Option<u64>) -> anyhow::Result<Row> {
    if args.endpoints.len() < 2 {
        bail!("the staleness workload needs two endpoints: it writes at one node and reads at another");
    }
    let mut writer = CountersClient::new(args.access.connect(&args.endpoints[0]).await?);
    let mut reader = CountersClient::new(args.access.connect(&args.endpoints[args.endpoints.len() - 1]).await?);
    let label = format!("staleness {}", level_name(level));
    let bar = progress(&format!("raftlot {label}"), max_ops.unwrap_or(0));
    let (mut hist, mut errors, started) = (histogram()?, 0u64, Instant::now());
    let name = format!("bench-staleness-{}", level_name(level));
    while started.elapsed() < duration && max_ops.is_none_or(|m| hist.len() + errors < m) {
        let add = AddRequest { name: name.clone(), delta: 1, mode: level.write() as i32, request_id: String::new() };
        let Ok(reply) = writer.add(add).await else {
            errors += 1;
            continue;
        };
        let written = reply.into_inner().value;
        let acked = Instant::now();
        let limit = acked + Duration::from_secs(5);
        loop {
            let get = GetRequest { name: name.clone(), consistency: level.read() as i32 };
            match reader.get(get).await {
                Ok(r) if r.get_ref().value >= written => {
                    let _ = hist.record(acked.elapsed().as_micros().max(1) as u64);
                    break;
                }
                _ if Instant::now() >= limit => {
                    errors += 1;
                    break;
                }
                _ => {}
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    warn_if_cut_short(&format!("raftlot {label}"), hist.len() + errors, max_ops);
    // One connection writes, another reads.
    Ok(Row { connections: 2, ..row("raftlot", label, 1, &hist, errors, started.elapsed().as_secs_f64(), None) })
}

/// Every pass of the workload once: per client count, raftlot's levels and etcd's operations,
/// etcd's first in even rounds so that neither system always runs on the warmer machine.
async fn one_round(args: &BenchArgs, levels: &[Level], duration: Duration, round: u32) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    if args.workload == Workload::Staleness {
        for level in levels.iter().filter(|l| matches!(l, Level::Local | Level::Eventual)) {
            rows.push(staleness(args, *level, duration, args.ops).await?);
        }
        return Ok(rows);
    }
    let raftlot = levels.iter().map(|&level| match args.workload {
        Workload::Add => Op::Add(level),
        Workload::Park => Op::Park(level),
        Workload::Read => Op::Read(level),
        Workload::Mixed => Op::Mixed(level, args.read_ratio),
        Workload::Staleness => unreachable!("handled above"),
    });
    let etcd: &[Op] = match (args.etcd.is_empty(), args.workload) {
        (true, _) | (false, Workload::Mixed | Workload::Staleness) => &[],
        (false, Workload::Add | Workload::Park) => &[Op::EtcdPut],
        (false, Workload::Read) => &[Op::EtcdGet { serializable: false }, Op::EtcdGet { serializable: true }],
    };
    // Each system's reads start with the floor they are measured against, when asked for (`bench`
    // takes --health-check for the read workload only).
    let raftlot = args.health_check.then_some(Op::HealthCheck).into_iter().chain(raftlot);
    let etcd_floor = (args.health_check && !etcd.is_empty()).then_some(Op::EtcdHealthCheck);
    let etcd = etcd_floor.into_iter().chain(etcd.iter().copied());
    let passes: Vec<Op> = if round % 2 == 1 { raftlot.chain(etcd).collect() } else { etcd.chain(raftlot).collect() };
    for &clients in &args.clients {
        for &op in &passes {
            let row = match op {
                Op::EtcdPut | Op::EtcdGet { .. } | Op::EtcdHealthCheck => {
                    run("etcd", op, etcd_conns(args, clients).await?, args.keys, duration, args.ops).await?
                }
                _ => run("raftlot", op, raftlot_conns(args, clients).await?, args.keys, duration, args.ops).await?,
            };
            rows.push(Row { connections: channel_count(args, clients), ..row });
        }
    }
    Ok(rows)
}

pub async fn bench(args: BenchArgs) -> anyhow::Result<()> {
    if args.endpoints.is_empty() || args.clients.is_empty() || args.consistency.is_empty() {
        bail!("--endpoints, --clients and --consistency each need at least one value");
    }
    if args.clients.contains(&0) {
        bail!("--clients: every value must be at least 1");
    }
    if !(0.0..=1.0).contains(&args.read_ratio) {
        bail!("--read-ratio must be between 0 and 1");
    }
    if args.health_check && args.workload != Workload::Read {
        bail!("--health-check applies to the read workload only");
    }
    if args.keys == 0 {
        bail!("--keys must be at least 1");
    }
    let duration = match (&args.duration, args.ops) {
        (Some(text), _) => parse_duration("--duration", text)?,
        (None, Some(_)) => Duration::from_secs(3600),
        (None, None) => Duration::from_secs(5),
    };
    prepare(&args).await?;
    let leads = first_endpoint_leads(&args).await;
    let mut levels = args.consistency.clone();
    if matches!(args.workload, Workload::Add | Workload::Park) {
        // Writes only have two modes; one pass per distinct mode, in the order first listed.
        let mut modes = Vec::new();
        levels.retain(|l| {
            let fresh = !modes.contains(&l.write());
            modes.push(l.write());
            fresh
        });
    }
    let mut rows = Vec::new();
    for round in 1..=args.rounds {
        for mut row in one_round(&args, &levels, duration, round).await? {
            row.round = round;
            rows.push(row);
        }
    }
    let summary = summarize(&rows);
    if args.rounds > 1 {
        println!(
            "medians of {} rounds; each ratio is taken within a round, then the median (each round's in brackets)",
            args.rounds
        );
    }
    print!("{}", table(&summary));
    if let Some(path) = &args.json {
        let report = Report {
            workload: args.workload,
            endpoints: &args.endpoints,
            etcd: &args.etcd,
            first_endpoint_leads: leads,
            rounds: args.rounds,
            rows: &rows,
            summary: &summary,
        };
        let file = std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
        serde_json::to_writer_pretty(file, &report).context("cannot write the JSON report")?;
        println!("figures written to {}", path.display());
    }
    if let Some(path) = &args.plot {
        plot(path, &summary)?;
        println!("latency distributions drawn to {}", path.display());
    }
    Ok(())
}

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

/// The middle value, or the mean of the two middle ones.
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

fn median_us(runs: &[&Row], field: impl Fn(&Row) -> u64) -> u64 {
    median(runs.iter().map(|r| field(r) as f64).collect()).round() as u64
}

/// Groups the rounds' runs by operation, in the order they first ran, and takes each one's medians
/// and its per-round ratios: to etcd's operation, for weaker reads to LINEARIZABLE's p50, and for
/// reads to their own system's health check.
pub fn summarize(rows: &[Row]) -> Vec<Summary> {
    let mut keys: Vec<(&'static str, &str, usize)> = Vec::new();
    for r in rows {
        if !keys.contains(&(r.target, r.op.as_str(), r.clients)) {
            keys.push((r.target, r.op.as_str(), r.clients));
        }
    }
    let beside = |r: &Row, target: &str, op: &str| {
        rows.iter().find(|o| o.round == r.round && o.clients == r.clients && o.target == target && o.op == op)
    };
    let linearizable = Op::Read(Level::Linearizable).label();
    keys.into_iter()
        .map(|(target, op, clients)| {
            let runs: Vec<&Row> =
                rows.iter().filter(|r| r.target == target && r.op == op && r.clients == clients).collect();
            let first = runs[0];
            let vs_etcd = first.baseline.and_then(|etcd_op| {
                let pairs: Vec<(&Row, &Row)> =
                    runs.iter().filter_map(|r| Some((*r, beside(r, "etcd", etcd_op)?))).collect();
                (!pairs.is_empty()).then(|| Ratios {
                    etcd_op,
                    ops_per_sec: pairs.iter().map(|(r, e)| r.ops_per_sec / e.ops_per_sec.max(1e-9)).collect(),
                    p50: pairs.iter().map(|(r, e)| r.p50_us as f64 / e.p50_us.max(1) as f64).collect(),
                })
            });
            let p50_vs_linearizable = runs
                .iter()
                .filter(|r| r.weaker_read)
                .filter_map(|r| Some(r.p50_us as f64 / beside(r, "raftlot", &linearizable)?.p50_us.max(1) as f64))
                .collect();
            let p50_vs_health_check = runs
                .iter()
                .filter(|r| r.op != HEALTH_CHECK)
                .filter_map(|r| Some(r.p50_us as f64 / beside(r, r.target, HEALTH_CHECK)?.p50_us.max(1) as f64))
                .collect();
            let distribution = first
                .distribution
                .iter()
                .enumerate()
                .map(|(i, (q, _))| (*q, median_us(&runs, |r| r.distribution.get(i).map_or(0, |d| d.1))))
                .collect();
            Summary {
                target,
                op: op.to_string(),
                clients,
                rounds: runs.len(),
                ops_per_sec: median(runs.iter().map(|r| r.ops_per_sec).collect()),
                p50_us: median_us(&runs, |r| r.p50_us),
                p90_us: median_us(&runs, |r| r.p90_us),
                p99_us: median_us(&runs, |r| r.p99_us),
                p999_us: median_us(&runs, |r| r.p999_us),
                max_us: runs.iter().map(|r| r.max_us).max().unwrap_or(0),
                errors: runs.iter().map(|r| r.errors).sum(),
                vs_etcd,
                p50_vs_linearizable,
                p50_vs_health_check,
                distribution,
            }
        })
        .collect()
}

/// "1.48x" for one round; "1.48x (1.53 1.55 1.28)" for several, the median first.
fn ratio(values: &[f64]) -> String {
    let mid = format!("{:.2}x", median(values.to_vec()));
    if values.len() < 2 {
        return mid;
    }
    let each: Vec<String> = values.iter().map(|v| format!("{v:.2}")).collect();
    format!("{mid} ({})", each.join(" "))
}

/// The results as a table, with each raftlot row's ratio to the etcd row it is compared with, each
/// weaker read's p50 against LINEARIZABLE's, and each read's p50 against its system's health check.
pub fn table(rows: &[Summary]) -> String {
    let mut out = format!(
        "{:<8} {:<28} {:>7} {:>10} {:>8} {:>8} {:>8} {:>8} {:>9} {:>7}  {}\n",
        "target",
        "operation",
        "clients",
        "ops/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        "errors",
        "compared"
    );
    for r in rows {
        let mut compared = Vec::new();
        if let Some(e) = &r.vs_etcd {
            compared.push(format!("{} ops/s, {} p50 (etcd {})", ratio(&e.ops_per_sec), ratio(&e.p50), e.etcd_op));
        }
        if !r.p50_vs_linearizable.is_empty() {
            compared.push(format!("{} p50 (linearizable)", ratio(&r.p50_vs_linearizable)));
        }
        if !r.p50_vs_health_check.is_empty() {
            compared.push(format!("{} p50 (health check)", ratio(&r.p50_vs_health_check)));
        }
        out.push_str(&format!(
            "{:<8} {:<28} {:>7} {:>10.0} {:>8} {:>8} {:>8} {:>8} {:>9} {:>7}  {}\n",
            r.target,
            r.op,
            r.clients,
            r.ops_per_sec,
            ms(r.p50_us),
            ms(r.p90_us),
            ms(r.p99_us),
            ms(r.p999_us),
            ms(r.max_us),
            r.errors,
            compared.join("; ")
        ));
    }
    out
}

/// Latency against percentile ("nines" on x, so the tail gets room), one line per operation: the
/// median of its rounds at each percentile.
fn plot(path: &std::path::Path, rows: &[Summary]) -> anyhow::Result<()> {
    use plotters::prelude::*;
    let err = |e: &dyn std::fmt::Display| anyhow::anyhow!("cannot draw {}: {e}", path.display());
    let nines = |q: f64| if q >= 1.0 { 4.5 } else { -(1.0 - q).log10() };
    let top = rows.iter().map(|r| r.max_us).max().unwrap_or(1).max(10) as f64 / 1000.0 * 1.5;
    let root = SVGBackend::new(path, (1100, 650)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption("latency by percentile (client side)", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..4.6f64, (0.01f64..top).log_scale())
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (ms, log scale)")
        .x_label_formatter(&|x| match x.round() as i64 {
            0 => "p0".into(),
            1 => "p90".into(),
            2 => "p99".into(),
            3 => "p99.9".into(),
            4 => "p99.99".into(),
            _ => String::new(),
        })
        .draw()
        .map_err(|e| err(&e))?;
    for (i, r) in rows.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let points: Vec<(f64, f64)> =
            r.distribution.iter().map(|(q, us)| (nines(*q), (*us as f64 / 1000.0).max(0.01))).collect();
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(format!("{} {} x{}", r.target, r.op, r.clients))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured(round: u32, target: &'static str, op: Op, ops_per_sec: f64, p50_us: u64) -> Row {
        let mut hist = histogram().expect("histogram");
        hist.record(p50_us).expect("in range");
        let mut r = row(target, op.label(), 64, &hist, 0, 1.0, Some(op));
        r.round = round;
        r.ops_per_sec = ops_per_sec;
        r
    }

    #[test]
    fn ratios_are_taken_within_each_round_before_the_median() {
        // The machine got twice as fast in round 2: the ratio of medians would be 1.5, while both
        // systems ran at 2x and 1x of each other within a round.
        let rows = [
            measured(1, "raftlot", Op::Add(Level::Linearizable), 2000.0, 400),
            measured(1, "etcd", Op::EtcdPut, 1000.0, 800),
            measured(2, "etcd", Op::EtcdPut, 2000.0, 400),
            measured(2, "raftlot", Op::Add(Level::Linearizable), 4000.0, 200),
            measured(3, "raftlot", Op::Add(Level::Linearizable), 3000.0, 300),
            measured(3, "etcd", Op::EtcdPut, 1000.0, 600),
        ];
        let summary = summarize(&rows);
        let ops: Vec<(&str, &str)> = summary.iter().map(|s| (s.target, s.op.as_str())).collect();
        assert_eq!(ops, [("raftlot", "add strong"), ("etcd", "put")], "in the order they first ran");
        let add = &summary[0];
        assert_eq!((add.rounds, add.ops_per_sec, add.p50_us), (3, 3000.0, 300));
        let vs = add.vs_etcd.as_ref().expect("compared with etcd's put");
        assert_eq!(vs.ops_per_sec, [2.0, 2.0, 3.0]);
        assert_eq!(vs.p50, [0.5, 0.5, 0.5]);
        assert_eq!(ratio(&vs.ops_per_sec), "2.00x (2.00 2.00 3.00)");
        assert!(summary[1].vs_etcd.is_none() && summary[1].p50_vs_linearizable.is_empty());
        assert!(table(&summary).contains("2.00x (2.00 2.00 3.00) ops/s, 0.50x (0.50 0.50 0.50) p50 (etcd put)"));
    }

    #[test]
    fn weaker_reads_are_compared_with_linearizable_in_the_same_round() {
        let rows = [
            measured(1, "raftlot", Op::Read(Level::Linearizable), 1000.0, 400),
            measured(1, "raftlot", Op::Read(Level::Eventual), 3000.0, 100),
            measured(2, "raftlot", Op::Read(Level::Linearizable), 1000.0, 300),
            measured(2, "raftlot", Op::Read(Level::Eventual), 3000.0, 150),
        ];
        let summary = summarize(&rows);
        assert!(summary[0].p50_vs_linearizable.is_empty(), "LINEARIZABLE is not compared with itself");
        assert_eq!(summary[1].p50_vs_linearizable, [0.25, 0.5]);
        assert_eq!(summary[1].p50_us, 125, "the median of two is their mean");
        assert!(summary[1].vs_etcd.is_none(), "no etcd ran in this invocation");
        assert!(table(&summary).contains("0.38x (0.25 0.50) p50 (linearizable)"));
        assert!(summary.iter().all(|s| s.p50_vs_health_check.is_empty()), "no health check ran");
    }

    #[test]
    fn reads_are_compared_with_their_own_systems_health_check_in_the_same_round() {
        let rows = [
            measured(1, "raftlot", Op::HealthCheck, 4000.0, 100),
            measured(1, "raftlot", Op::Read(Level::Linearizable), 1000.0, 400),
            measured(1, "raftlot", Op::Read(Level::Eventual), 3000.0, 110),
            measured(1, "etcd", Op::EtcdHealthCheck, 2000.0, 200),
            measured(1, "etcd", Op::EtcdGet { serializable: true }, 1000.0, 300),
        ];
        let summary = summarize(&rows);
        let by_op =
            |target: &str, op: &str| summary.iter().find(|s| s.target == target && s.op == op).expect("summarized");
        assert!(by_op("raftlot", HEALTH_CHECK).p50_vs_health_check.is_empty(), "not compared with itself");
        assert_eq!(by_op("raftlot", "get linearizable").p50_vs_health_check, [4.0]);
        assert_eq!(by_op("raftlot", "get eventual").p50_vs_health_check, [1.1]);
        assert_eq!(by_op("etcd", "get serializable").p50_vs_health_check, [1.5], "etcd's own floor");
        let floors = by_op("raftlot", HEALTH_CHECK).vs_etcd.as_ref().expect("compared with etcd's health check");
        assert_eq!((floors.ops_per_sec.as_slice(), floors.p50.as_slice()), ([2.0].as_slice(), [0.5].as_slice()));
        assert!(table(&summary).contains("4.00x p50 (health check)"));
    }
}
