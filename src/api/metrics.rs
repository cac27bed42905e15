//! What a node tells Prometheus on `GET /metrics`, and the tower layer that measures every call on
//! the client port.
//!
//! Raft and gossip figures are read from the node when a scrape arrives, so they are never stale and
//! cost nothing between scrapes. Request counts and latencies are recorded by [`RequestLayer`] around
//! every gRPC call, so no handler carries metrics code; the one thing the layer cannot see, the
//! consistency level inside the protobuf body, is reported by `convert` through [`note_level`] when
//! it parses that field. Label sets are bounded: an unknown method is counted as `unknown`, never by
//! its path, so a client cannot grow the registry by calling made-up names.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Metric, Registry};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::node::Node;
use crate::raft::disk::Disk;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    consistency: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    method: String,
    consistency: &'static str,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabels {
    peer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoleLabels {
    role: &'static str,
}

/// From 100 µs to about 3.3 s: a local read sits in the first buckets, a write that waits out a
/// request deadline in the last.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_1, 2.0, 16))
}

/// A new metric, registered under `name`; the registry keeps a handle to the same values.
fn registered<M: Metric + Clone + Default>(registry: &mut Registry, name: &str, help: &str) -> M {
    let metric = M::default();
    registry.register(name, help, metric.clone());
    metric
}

const ROLES: [&str; 4] = ["leader", "candidate", "follower", "learner"];

/// One node's metric families. Shared by the client server's layer, the HTTP route and the task that
/// counts leader changes.
pub struct Metrics {
    registry: Registry,
    disk: Disk,
    requests: Family<OutcomeLabels, Counter>,
    latency: Family<RequestLabels, Histogram, fn() -> Histogram>,
    leader_changes: Counter,
    node_id: Gauge,
    term: Gauge,
    role: Family<RoleLabels, Gauge>,
    leader: Gauge,
    last_log_index: Gauge,
    commit_index: Gauge,
    applied_index: Gauge,
    snapshot_index: Gauge,
    replication_lag: Family<PeerLabels, Gauge>,
    gossip_pending: Family<PeerLabels, Gauge>,
    gossip_since_ack: Family<PeerLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    sled_bytes: Gauge,
    append_streams: Counter,
    read_index_rounds: Counter,
}

impl Metrics {
    pub fn new(disk: Disk) -> Self {
        let mut r = Registry::with_prefix("raftlot");
        let latency = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        r.register(
            "grpc_request_duration_seconds",
            "Client gRPC call latency until the reply headers, by method and consistency level or write mode",
            latency.clone(),
        );
        Metrics {
            latency,
            requests: registered(
                &mut r,
                "grpc_requests",
                "Client gRPC calls answered, by method, consistency level or write mode, and status code",
            ),
            leader_changes: registered(&mut r, "leader_changes", "Times this node saw a different leader elected"),
            node_id: registered(&mut r, "node_id", "This node's id"),
            term: registered(&mut r, "raft_term", "Current Raft term"),
            role: registered(&mut r, "raft_role", "1 for this node's current Raft role, 0 for the others"),
            leader: registered(&mut r, "raft_leader_id", "The leader this node knows, 0 when none"),
            last_log_index: registered(&mut r, "raft_last_log_index", "Index of the last entry in this node's log"),
            commit_index: registered(&mut r, "raft_commit_index", "Highest log index this node knows is committed"),
            applied_index: registered(&mut r, "raft_applied_index", "Highest log index applied to the state machine"),
            snapshot_index: registered(&mut r, "raft_snapshot_index", "Log index of the last snapshot"),
            replication_lag: registered(
                &mut r,
                "raft_replication_lag_entries",
                "On the leader: entries each follower has yet to acknowledge",
            ),
            gossip_pending: registered(
                &mut r,
                "gossip_pending_deltas",
                "Eventual-write deltas each peer has not acknowledged",
            ),
            gossip_since_ack: registered(
                &mut r,
                "gossip_since_ack_seconds",
                "Seconds since each peer last acknowledged gossip",
            ),
            sled_bytes: registered(&mut r, "sled_size_bytes", "sled's size on disk"),
            append_streams: registered(
                &mut r,
                "raft_append_streams_opened",
                "AppendEntries streams leaders opened to this node; each break (leader change, lost link) opens a new one",
            ),
            read_index_rounds: registered(
                &mut r,
                "raft_read_index_rounds",
                "ReadIndex rounds this node ran as leader; concurrent LINEARIZABLE reads share one",
            ),
            registry: r,
            disk,
        }
    }

    fn record(&self, method: String, consistency: &'static str, code: String, elapsed: f64) {
        self.latency.get_or_create(&RequestLabels { method: method.clone(), consistency }).observe(elapsed);
        self.requests.get_or_create(&OutcomeLabels { method, consistency, code }).inc();
    }

    /// Reads the node's current Raft, gossip and disk figures into the gauges, then renders every
    /// family in the Prometheus text format.
    pub fn render(&self, node: &Node) -> Result<String, std::fmt::Error> {
        let as_gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let view = node.view();
        let progress = node.consensus.progress();
        self.commit_index.set(as_gauge(progress.committed_index));
        self.replication_lag.clear();
        for (peer, matched) in progress.matched.iter().flatten().filter(|(id, _)| **id != node.id) {
            let labels = PeerLabels { peer: peer.to_string() };
            let lag = progress.last_log_index.saturating_sub(*matched);
            self.replication_lag.get_or_create(&labels).set(as_gauge(lag));
        }
        self.node_id.set(as_gauge(view.id));
        self.term.set(as_gauge(view.term));
        for role in ROLES {
            self.role.get_or_create(&RoleLabels { role }).set(i64::from(view.role == role));
        }
        self.leader.set(as_gauge(view.leader_id.unwrap_or(0)));
        self.last_log_index.set(as_gauge(view.last_log_index));
        self.applied_index.set(as_gauge(view.applied_index));
        self.snapshot_index.set(as_gauge(view.snapshot_index));
        let opened = node.append_streams_opened.load(std::sync::atomic::Ordering::Relaxed);
        self.append_streams.inner().store(opened, std::sync::atomic::Ordering::Relaxed);
        let rounds = node.consensus.read_index_rounds();
        self.read_index_rounds.inner().store(rounds, std::sync::atomic::Ordering::Relaxed);
        self.gossip_pending.clear();
        self.gossip_since_ack.clear();
        for lag in &view.gossip {
            let labels = PeerLabels { peer: lag.peer.to_string() };
            self.gossip_pending.get_or_create(&labels).set(as_gauge(lag.pending));
            if let Some(ms) = lag.since_ack_ms {
                self.gossip_since_ack.get_or_create(&labels).set(ms as f64 / 1000.0);
            }
        }
        match self.disk.size_on_disk() {
            Ok(bytes) => {
                self.sled_bytes.set(as_gauge(bytes));
            }
            Err(e) => tracing::debug!("sled size unknown: {e}"),
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }

    /// Counts leader changes as this node sees them, until `stop`.
    pub async fn count_leader_changes(self: Arc<Self>, node: Arc<Node>, stop: CancellationToken) {
        // The server metrics change with the vote and the leader only; the full metrics change on
        // every commit, and watching those woke this task for every write.
        let mut changes = node.consensus.leader_changes();
        let mut last = changes.leader();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                changed = changes.changed() => if !changed { return },
            }
            let leader = changes.leader();
            if leader.is_some() && leader != last {
                self.leader_changes.inc();
            }
            if leader.is_some() {
                last = leader;
            }
        }
    }
}

tokio::task_local! {
    /// The consistency level (or write mode) of the call being served, filled in by `convert` once
    /// it has parsed the field.
    static LEVEL: Arc<OnceLock<&'static str>>;
}

/// Records the consistency level or write mode of the call being served, for its metrics labels and
/// its span. Outside a client call (the HTTP routes, unit tests) it does nothing.
pub fn note_level(level: &'static str) {
    let _ = LEVEL.try_with(|cell| cell.set(level));
    tracing::Span::current().record("consistency", level);
}

/// Wraps every client gRPC call in a span carrying its method, consistency level and node, and
/// records its count and latency.
#[derive(Clone)]
pub struct RequestLayer {
    pub metrics: Arc<Metrics>,
    pub node_id: u64,
}

impl<S> tower::Layer<S> for RequestLayer {
    type Service = RequestService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestService { inner, metrics: self.metrics.clone(), node_id: self.node_id }
    }
}

#[derive(Clone)]
pub struct RequestService<S> {
    inner: S,
    metrics: Arc<Metrics>,
    node_id: u64,
}

/// The gRPC status of a reply, as far as its headers tell: tonic sends an error as a headers-only
/// reply carrying `grpc-status`, and a success's status follows in the trailers.
fn status_code<B>(response: &http::Response<B>) -> tonic::Code {
    response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map_or(tonic::Code::Ok, tonic::Code::from_i32)
}

impl<S, B, R> tower::Service<http::Request<B>> for RequestService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // The clone takes over the readiness `poll_ready` established, as tower asks.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let metrics = self.metrics.clone();
        let path = request.uri().path().trim_start_matches('/').to_string();
        let span = tracing::info_span!(
            "request",
            method = %path,
            consistency = tracing::field::Empty,
            node = self.node_id
        );
        Box::pin(
            async move {
                let started = Instant::now();
                let level = Arc::new(OnceLock::new());
                let result = LEVEL.scope(level.clone(), inner.call(request)).await;
                let elapsed = started.elapsed();
                let code = match &result {
                    Ok(response) => status_code(response),
                    Err(_) => tonic::Code::Internal,
                };
                let method = if code == tonic::Code::Unimplemented { "unknown".to_string() } else { path };
                let consistency = level.get().copied().unwrap_or("none");
                tracing::debug!(target: "raftlot::request", code = ?code, elapsed_ms = elapsed.as_secs_f64() * 1000.0, "request done");
                metrics.record(method, consistency, format!("{code:?}"), elapsed.as_secs_f64());
                result
            }
            .instrument(span),
        )
    }
}
