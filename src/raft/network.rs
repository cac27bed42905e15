//! The peer transport's client side: one cached tonic channel per peer, openraft messages as
//! bincode inside a protobuf `Blob`.
//!
//! AppendEntries travel on long-lived bidirectional streams (`AppendStream`), so the leader sends
//! new entries, or a new commit index, without waiting for the answer to the previous request: with
//! one request in flight at a time, a write's entries waited behind the round trip that carried the
//! previous write's commit. openraft starts a call per replication session and per heartbeat; a
//! call that drains leaves its stream open for the next one (see `Pipe`).
//!
//! Channels are created lazily and reconnect by themselves, so a peer that is down costs a refused
//! connection per attempt (openraft backs off on `Unreachable`), and a restarted peer is picked up
//! without any bookkeeping here. A peer's address may be a DNS name: each reconnect resolves it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures::StreamExt;
use openraft::base::{BoxFuture, BoxStream};
use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendResult, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::{OptionalSend, RaftNetworkFactory, RaftNetworkV2};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use super::identity::{ClusterIdentity, CLUSTER_METADATA, MISMATCH};
use super::{NodeId, PeerNode, Snapshot, TypeConfig, Vote};
use crate::config::TlsPem;
use crate::pb::peer::raft_peer_client::RaftPeerClient;
use crate::pb::peer::Blob;

/// The metadata key that carries the cluster secret on every peer RPC.
pub const SECRET_METADATA: &str = "x-raftlot-secret";

/// Peer messages carry whole snapshots, far above tonic's 4 MiB default.
pub const MAX_PEER_MESSAGE: usize = 1 << 30;

/// Why a peer call failed, split by what the caller may assume about the request.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The request cannot have been processed: no connection could be made.
    #[error("peer {addr} unreachable: {reason}")]
    Unreachable { addr: String, reason: String },
    /// The request may or may not have been processed (timeout, broken stream, bad reply).
    #[error("peer {addr} call failed: {reason}")]
    Failed { addr: String, reason: String },
}

/// Injected network faults: the directed links that drop every message. Tests share one `Faults`
/// between the nodes they run in one process; a production node's is always empty.
#[derive(Clone, Default)]
pub struct Faults {
    cut: Arc<RwLock<HashSet<(NodeId, NodeId)>>>,
}

impl Faults {
    fn links(&self) -> std::sync::RwLockWriteGuard<'_, HashSet<(NodeId, NodeId)>> {
        self.cut.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Cuts `node` off from every one of `members`, both ways.
    pub fn isolate(&self, node: NodeId, members: impl IntoIterator<Item = NodeId>) {
        let mut links = self.links();
        for other in members.into_iter().filter(|m| *m != node) {
            links.insert((node, other));
            links.insert((other, node));
        }
    }

    /// Cuts the link between `a` and `b`, both ways.
    pub fn cut(&self, a: NodeId, b: NodeId) {
        let mut links = self.links();
        links.insert((a, b));
        links.insert((b, a));
    }

    pub fn heal(&self) {
        self.links().clear();
    }

    fn blocks(&self, from: NodeId, to: NodeId) -> bool {
        self.cut.read().unwrap_or_else(|p| p.into_inner()).contains(&(from, to))
    }
}

/// The one cache of peer channels, shared by Raft replication, forwarding, gossip and status.
#[derive(Clone)]
pub struct PeerClients {
    me: NodeId,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    secret: Option<Arc<str>>,
    /// Stamped on every request, so a peer from another cluster refuses it.
    identity: Arc<ClusterIdentity>,
    /// Mutual TLS to every peer when configured: this node's certificate, and `--tls-ca` to check
    /// theirs. Forwarded client requests travel the same channels, so they are covered too.
    tls: Option<ClientTlsConfig>,
    /// Peers that refused this node's credentials, so the refusal is logged once when it starts and
    /// once when it ends, not on every heartbeat.
    refused_by: Arc<Mutex<HashSet<String>>>,
    faults: Faults,
}

impl PeerClients {
    pub fn new(
        me: NodeId,
        secret: Option<String>,
        tls: Option<&TlsPem>,
        identity: Arc<ClusterIdentity>,
        faults: Faults,
    ) -> Self {
        let tls = tls.map(|pem| {
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&pem.ca))
                .identity(Identity::from_pem(&pem.cert, &pem.key))
        });
        PeerClients {
            me,
            channels: Arc::default(),
            secret: secret.map(Arc::from),
            identity,
            tls,
            refused_by: Arc::default(),
            faults,
        }
    }

    fn client(&self, addr: &str) -> Result<RaftPeerClient<Channel>, CallError> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        let channel = match channels.get(addr) {
            Some(c) => c.clone(),
            None => {
                let unreachable = |e: tonic::transport::Error| CallError::Unreachable {
                    addr: addr.to_string(),
                    reason: format!(
                        "{e}: {}",
                        std::error::Error::source(&e).map(|s| s.to_string()).unwrap_or_default()
                    ),
                };
                let scheme = if self.tls.is_some() { "https" } else { "http" };
                let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}")).map_err(unreachable)?;
                if let Some(tls) = &self.tls {
                    endpoint = endpoint.tls_config(tls.clone()).map_err(unreachable)?;
                }
                let endpoint = endpoint
                    .connect_timeout(Duration::from_millis(500))
                    // A peer that vanishes without a reset (a rescheduled pod, a disconnected
                    // network) leaves the connection open, swallowing every call until a ping goes
                    // unanswered; closing it within seconds makes the channel reconnect, which also
                    // resolves the peer's name again and so finds it at its new address.
                    .http2_keep_alive_interval(Duration::from_secs(1))
                    .keep_alive_timeout(Duration::from_secs(2))
                    .keep_alive_while_idle(true);
                let channel = crate::api::connect_lazy(&endpoint);
                channels.insert(addr.to_string(), channel.clone());
                channel
            }
        };
        Ok(RaftPeerClient::new(channel)
            .max_decoding_message_size(MAX_PEER_MESSAGE)
            .max_encoding_message_size(MAX_PEER_MESSAGE))
    }

    pub fn request<T>(&self, message: T, timeout: Duration) -> tonic::Request<T> {
        let mut request = self.stamped(message);
        request.set_timeout(timeout);
        request
    }

    /// A request carrying this node's credentials and no deadline, for a long-lived stream.
    fn stamped<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(secret) = &self.secret {
            // A secret that is not valid metadata was refused by config validation's caller; if
            // one slips through, the peer answers UNAUTHENTICATED, which is the right outcome.
            if let Ok(v) = secret.parse() {
                request.metadata_mut().insert(SECRET_METADATA, v);
            }
        }
        if let Some(Ok(id)) = self.identity.get().map(|id| id.parse()) {
            request.metadata_mut().insert(CLUSTER_METADATA, id);
        }
        request
    }

    fn cut_off(&self, from: NodeId, to: NodeId, addr: &str) -> Option<CallError> {
        self.faults
            .blocks(from, to)
            .then(|| CallError::Unreachable { addr: addr.to_string(), reason: "link cut by fault injection".into() })
    }

    /// Calls peer `to` at `addr` with a deadline, classifying failures by what they imply.
    pub async fn call<F, Fut, T>(&self, to: NodeId, addr: &str, timeout: Duration, f: F) -> Result<T, CallError>
    where
        F: FnOnce(RaftPeerClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        if let Some(cut) = self.cut_off(self.me, to, addr) {
            return Err(cut);
        }
        let client = self.client(addr)?;
        let failed = |reason: String| CallError::Failed { addr: addr.to_string(), reason };
        let reply = tokio::time::timeout(timeout, f(client)).await;
        self.note_refusal(addr, &reply);
        match reply {
            Err(_) => Err(failed(format!("no reply within {timeout:?}"))),
            Ok(Ok(reply)) => Ok(reply.into_inner()),
            Ok(Err(status)) => Err(classify(addr, &status)),
        }
    }
}

fn classify(addr: &str, status: &tonic::Status) -> CallError {
    let reason = format!("{}: {}", status.code(), status.message());
    if is_connect_error(status) {
        CallError::Unreachable { addr: addr.to_string(), reason: status.message().to_string() }
    } else {
        CallError::Failed { addr: addr.to_string(), reason }
    }
}

fn rpc_error(e: CallError) -> RPCError<TypeConfig> {
    match e {
        CallError::Unreachable { .. } => RPCError::Unreachable(Unreachable::new(&e)),
        CallError::Failed { .. } => RPCError::Network(NetworkError::new(&e)),
    }
}

impl PeerClients {
    /// Logs when a peer starts or stops refusing this node's cluster secret or cluster id. Such a
    /// node can never join: the warning is what tells its operator why.
    fn note_refusal<T, E>(&self, addr: &str, reply: &Result<Result<T, tonic::Status>, E>) {
        let refusal = match reply {
            Ok(Err(status)) if is_refusal(status) => Some(status),
            Ok(Ok(_)) => None,
            // A timeout or another error says nothing about the credentials.
            _ => return,
        };
        let mut refused_by = self.refused_by.lock().unwrap_or_else(|p| p.into_inner());
        match refusal {
            Some(status) if refused_by.insert(addr.to_string()) => {
                let code = if status.code() == tonic::Code::Unauthenticated {
                    "UNAUTHENTICATED"
                } else {
                    "FAILED_PRECONDITION"
                };
                tracing::warn!(peer = addr, "peer refused this node with {code}: {}", status.message())
            }
            None if refused_by.remove(addr) => {
                tracing::info!(peer = addr, "peer accepts this node's credentials again")
            }
            _ => {}
        }
    }
}

/// Whether a peer refused this node for who it is (secret or cluster), not for what it asked.
fn is_refusal(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::Unauthenticated
        || (status.code() == tonic::Code::FailedPrecondition && status.message().starts_with(MISMATCH))
}

/// tonic reports a refused or failed connection as UNAVAILABLE from the transport, before anything
/// was sent; a server-side UNAVAILABLE carries our own message instead.
fn is_connect_error(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::Unavailable
        && (status.message().contains("transport") || status.message().contains("connect"))
}

pub fn to_blob<T: Serialize>(value: &T) -> Result<Blob, bincode::Error> {
    Ok(Blob { data: bincode::serialize(value)? })
}

pub fn from_blob<T: DeserializeOwned>(blob: &Blob) -> Result<T, bincode::Error> {
    bincode::deserialize(&blob.data)
}

/// Builds one [`Network`] per replication target.
#[derive(Clone)]
pub struct NetworkFactory {
    pub clients: PeerClients,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = Network;

    async fn new_client(&mut self, target: NodeId, node: &PeerNode) -> Network {
        Network { clients: self.clients.clone(), target, addr: node.peer_addr.clone(), idle: None }
    }
}

pub struct Network {
    clients: PeerClients,
    target: NodeId,
    addr: String,
    /// The stream the last call drained, kept for the next one.
    idle: Option<Pipe>,
}

impl Network {
    async fn unary<Req, Resp>(&self, method: Method, req: &Req, ttl: Duration) -> Result<Resp, RPCError<TypeConfig>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
    {
        let blob = to_blob(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let request = self.clients.request(blob, ttl);
        let reply = self
            .clients
            .call(self.target, &self.addr, ttl, |mut c| async move {
                match method {
                    Method::Append => c.append_entries(request).await,
                    Method::Vote => c.vote(request).await,
                    Method::PreVote => c.pre_vote(request).await,
                    Method::TransferLeader => c.transfer_leader(request).await,
                }
            })
            .await
            .map_err(rpc_error)?;
        from_blob(&reply).map_err(|e| RPCError::Network(NetworkError::new(&e)))
    }
}

/// How many append requests may wait for their answers at once. Two let a new write's entries
/// overtake the request carrying the previous write's commit; more only split the entries that
/// pile up under load into more, smaller requests, each costing the follower a flush (measured:
/// one-client writes took the same time at 2 and 4, while 64-client throughput fell at 4).
const APPEND_STREAM_DEPTH: usize = 2;

/// One open `AppendStream` to a follower. A call whose requests drained and were all answered
/// leaves it open for the next call: openraft sends every heartbeat as a one-request call, and
/// opening a stream for each (a new HTTP/2 stream, a routed and authenticated call and a task on
/// the follower) took about half of a LINEARIZABLE read's quorum round.
struct Pipe {
    requests: tokio::sync::mpsc::Sender<Blob>,
    replies: tonic::Streaming<Blob>,
}

/// One `stream_append` call on a pipe: openraft's requests and when each unanswered one was sent.
///
/// The requests are read by whoever reads the answers (openraft's replication and heartbeat tasks
/// poll them without pause), so a request goes from openraft's task straight into the HTTP/2
/// stream, with no task of its own in between.
struct Call<S> {
    input: S,
    /// No more requests: openraft ended them, or they were cut short (`broken`).
    input_over: bool,
    /// Cut short by a cut link or a request that cannot be encoded: the pipe is closed after the
    /// answers owed, and openraft opens a new one.
    broken: bool,
    sent: VecDeque<tokio::time::Instant>,
}

/// Why reading an `AppendStream`'s answers stopped.
enum Stop {
    /// Every request of the call is answered and no more will come: the pipe may be reused.
    Drained,
    /// The follower ended the stream, or the call's requests were cut short.
    Closed,
    Failed(CallError),
}

impl Network {
    async fn open_pipe(&self, ttl: Duration) -> Result<Pipe, CallError> {
        let (requests, queued) = tokio::sync::mpsc::channel(APPEND_STREAM_DEPTH);
        let request = self.clients.stamped(tokio_stream::wrappers::ReceiverStream::new(queued));
        // Opening the stream is a call like any other: the same cut links, deadline, refusal
        // logging and failure classes.
        let replies = self
            .clients
            .call(self.target, &self.addr, ttl, |mut c| async move { c.append_stream(request).await })
            .await?;
        Ok(Pipe { requests, replies })
    }

    /// Sends the call's requests while fewer than `APPEND_STREAM_DEPTH` are unanswered, and
    /// returns the next answer, with a deadline while a request waits for one.
    async fn answer<S>(
        &self,
        pipe: &mut Pipe,
        call: &mut Call<S>,
        ttl: Duration,
    ) -> Result<StreamAppendResult<TypeConfig>, Stop>
    where
        S: futures::Stream<Item = AppendEntriesRequest<TypeConfig>> + Unpin,
    {
        let failed = |reason: String| Stop::Failed(CallError::Failed { addr: self.addr.clone(), reason });
        let reply = loop {
            if call.input_over && call.sent.is_empty() {
                return Err(if call.broken { Stop::Closed } else { Stop::Drained });
            }
            let room = !call.input_over && call.sent.len() < APPEND_STREAM_DEPTH;
            // An idle stream waits for ever; a request waits for its answer until the deadline.
            let deadline = call.sent.front().map(|sent| *sent + ttl);
            tokio::select! {
                reply = pipe.replies.message() => break reply,
                next = call.input.next(), if room => {
                    let Some(request) = next else {
                        call.input_over = true;
                        continue;
                    };
                    let blob = match self.clients.cut_off(self.clients.me, self.target, "") {
                        Some(_) => None,
                        None => to_blob(&request)
                            .inspect_err(|e| tracing::error!(self.target, "cannot encode an append request: {e}"))
                            .ok(),
                    };
                    // The channel holds APPEND_STREAM_DEPTH, so it is full only if the stream is gone.
                    match blob.map(|blob| pipe.requests.try_send(blob)) {
                        Some(Ok(())) => call.sent.push_back(tokio::time::Instant::now()),
                        _ => (call.input_over, call.broken) = (true, true),
                    }
                }
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)), if deadline.is_some() => {
                    return Err(failed(format!("no answer within {ttl:?}")));
                }
            }
        };
        match reply {
            Ok(Some(blob)) => {
                if let Some(cut) = self.clients.cut_off(self.target, self.clients.me, &self.addr) {
                    return Err(Stop::Failed(cut));
                }
                call.sent.pop_front();
                from_blob(&blob).map_err(|e| failed(format!("undecodable answer: {e}")))
            }
            Ok(None) => Err(Stop::Closed),
            Err(status) => Err(Stop::Failed(classify(&self.addr, &status))),
        }
    }
}

#[derive(Clone, Copy)]
enum Method {
    Append,
    Vote,
    PreVote,
    TransferLeader,
}

impl RaftNetworkV2<TypeConfig> for Network {
    type SnapshotData = Vec<u8>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.unary(Method::Append, &rpc, option.soft_ttl()).await
    }

    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<
        's,
        Result<BoxStream<'s, Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>>, RPCError<TypeConfig>>,
    >
    where
        S: futures::Stream<Item = AppendEntriesRequest<TypeConfig>> + OptionalSend + Unpin + 'static,
    {
        Box::pin(async move {
            let ttl = option.soft_ttl();
            let pipe = match self.idle.take() {
                Some(pipe) if !pipe.requests.is_closed() => pipe,
                _ => self.open_pipe(ttl).await.map_err(rpc_error)?,
            };
            let call = Call { input, input_over: false, broken: false, sent: VecDeque::new() };
            let answers = futures::stream::unfold(Some((self, pipe, call)), move |state| async move {
                let (network, mut pipe, mut call) = state?;
                match network.answer(&mut pipe, &mut call, ttl).await {
                    Ok(answer) => Some((Ok(answer), Some((network, pipe, call)))),
                    Err(Stop::Drained) => {
                        network.idle = Some(pipe);
                        None
                    }
                    Err(Stop::Closed) => None,
                    Err(Stop::Failed(e)) => Some((Err(rpc_error(e)), None)),
                }
            });
            Ok(answers.boxed())
        })
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.unary(Method::Vote, &rpc, option.soft_ttl()).await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.unary(Method::PreVote, &rpc, option.soft_ttl()).await
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.unary(Method::TransferLeader, &req, option.soft_ttl()).await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let body = (vote, snapshot.meta, snapshot.snapshot);
        let blob = to_blob(&body).map_err(|e| StreamingError::Network(NetworkError::new(&e)))?;
        // A snapshot can be large: allow it the hard TTL rather than the heartbeat-sized soft one.
        let ttl = option.hard_ttl();
        let request = self.clients.request(blob, ttl);
        let send =
            self.clients.call(self.target, &self.addr, ttl, |mut c| async move { c.full_snapshot(request).await });
        let reply = tokio::select! {
            closed = cancel => return Err(StreamingError::Closed(closed)),
            reply = send => reply,
        };
        let reply = reply.map_err(|e| match e {
            CallError::Unreachable { .. } => StreamingError::Unreachable(Unreachable::new(&e)),
            CallError::Failed { .. } => StreamingError::Network(NetworkError::new(&e)),
        })?;
        tracing::debug!(target = self.target, "snapshot sent");
        from_blob(&reply).map_err(|e| StreamingError::Network(NetworkError::new(&e)))
    }
}
