//! One raftlot node: opens storage, starts Raft, serves the client and peer ports, and owns
//! shutdown. It also decides where each request runs: the leader executes writes and strong reads,
//! every other node forwards them there, so clients may call any node.
//!
//! This file holds the node's request types and its routing (`route`: run here if this node
//! leads, else forward); `forward` the batched hand-off to the leader, `members` membership
//! changes, `gossip` the eventual replica's anti-entropy, `start` start-up and shutdown. None of
//! them names openraft, sled or tonic: `raft::consensus` is the node's handle on Raft.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::crdt::gossip::GossipLag;
use crate::domain::{
    Applied, CacheKey, CacheRead, CachedValue, Command, JobEffect, Proposal, Query, QueryReply, RequestId, State,
};
use crate::error::{Error, LeaderHint, Result};
use crate::jobs::{JobView, Jobs};
use crate::now_ms;
pub use crate::raft::consensus::Members;
use crate::raft::consensus::{Confirm, Confirmation, Consensus, Refusal};
use crate::raft::identity::ClusterIdentity;
use crate::raft::network::PeerClients;
use crate::raft::replica::EventualReplica;
use crate::raft::{NodeId, PeerNode};

mod forward;
mod gossip;
mod members;
mod start;

use forward::{Forwarder, Lane};
pub use start::{run, serve, shutdown_signal, Listeners};

/// How fresh a read must be. See the README's consistency table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Consistency {
    Linearizable,
    Lease,
    Local,
    Eventual,
}

/// How a write is made durable. See the README's consistency table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    Strong,
    Eventual,
}

/// Where and how a read was served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadMeta {
    pub served_by: NodeId,
    pub leader_id: Option<NodeId>,
    pub term: u64,
    pub applied_index: u64,
    pub consistency: Consistency,
    pub staleness_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadResult {
    pub reply: QueryReply,
    pub meta: ReadMeta,
}

/// A membership change an operator asked for; the leader runs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberChange {
    /// Joins as a learner, catches up, then becomes a voter.
    Add {
        id: NodeId,
        node: PeerNode,
    },
    Remove {
        id: NodeId,
    },
    /// To the given voter, or to the most caught-up other voter.
    TransferLeader {
        to: Option<NodeId>,
    },
}

/// A client request in the form a follower hands it to the leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Forwarded {
    Write { command: Command, request_id: Option<RequestId> },
    Read { query: Query, consistency: Consistency },
    Member(MemberChange),
}

impl Forwarded {
    fn is_linearizable_read(&self) -> bool {
        matches!(self, Forwarded::Read { consistency: Consistency::Linearizable, .. })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ForwardedReply {
    Write(Applied),
    Read(ReadResult),
    Member(Members),
}

/// A membership change may wait for a new node to catch up on the whole log, far longer than a
/// write may wait for a quorum.
const MEMBERSHIP_TIMEOUT: Duration = Duration::from_secs(60);

/// One node's view of itself, as `Cluster/Status` and the peer `NodeInfo` RPC report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    pub id: NodeId,
    pub client_addr: String,
    pub peer_addr: String,
    pub role: String,
    pub term: u64,
    pub last_log_index: u64,
    pub applied_index: u64,
    pub matched_index: Option<u64>,
    pub leader_id: Option<NodeId>,
    pub snapshot_index: u64,
    pub purged_index: u64,
    pub gossip: Vec<GossipLag>,
    /// The singleton jobs running on this node (only a leader runs any).
    pub jobs: Vec<JobView>,
}

impl NodeView {
    /// A member that did not answer.
    fn unreachable(id: NodeId, member: PeerNode) -> Self {
        NodeView {
            id,
            client_addr: member.client_addr,
            peer_addr: member.peer_addr,
            role: "unreachable".to_string(),
            term: 0,
            last_log_index: 0,
            applied_index: 0,
            matched_index: None,
            leader_id: None,
            snapshot_index: 0,
            purged_index: 0,
            gossip: Vec::new(),
            jobs: Vec::new(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ClusterView {
    pub served_by: NodeId,
    pub leader_id: Option<NodeId>,
    pub term: u64,
    pub nodes: Vec<NodeView>,
}

pub struct Node {
    pub id: NodeId,
    pub consensus: Consensus,
    replica: Arc<EventualReplica>,
    peers: PeerClients,
    request_timeout: Duration,
    started: Instant,
    /// Milliseconds after `started` at which a leader last reached this node (an append or a
    /// heartbeat accepted). An atomic because the peer service updates it on every append.
    leader_contact_ms: AtomicU64,
    /// AppendEntries streams leaders opened to this node. A leader keeps a stream open across its
    /// heartbeats and appends, so this grows only when one breaks (a leader change, a lost link).
    pub append_streams_opened: AtomicU64,
    pub jobs: Jobs,
    /// The cluster this node's data belongs to; see `raft::identity`.
    pub identity: Arc<ClusterIdentity>,
    /// Batches this follower's forwarded requests, per leader address and lane.
    forwarders: Mutex<HashMap<(NodeId, String, Lane), Arc<Forwarder>>>,
}

/// Why one attempt to route a request did not produce an answer that can be returned.
enum Attempt {
    Done(Result<ForwardedReply>),
    /// The request was certainly not executed: safe to try again once the leader is known.
    Retry(Error),
}

impl Node {
    fn member(&self, id: NodeId) -> Option<PeerNode> {
        self.consensus.member(id)
    }

    fn leader_hint(&self, leader: Option<NodeId>) -> Option<LeaderHint> {
        let id = leader?;
        Some(LeaderHint { id, client_addr: self.member(id)?.client_addr })
    }

    fn not_leader(&self, leader: Option<NodeId>) -> Error {
        let hint = self.leader_hint(leader);
        let reason = match &hint {
            Some(h) => format!("node {} is not the leader; node {} at {} is", self.id, h.id, h.client_addr),
            None => format!("node {} is not the leader and knows no leader", self.id),
        };
        Error::NotLeader { reason, leader: hint }
    }

    /// Records that a leader reached this node; see `leader_contact_ms`.
    pub fn touch_leader_contact(&self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.leader_contact_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// Proposes a command through Raft (forwarding to the leader when needed) and returns its
    /// outcome once a quorum committed and this leader applied it.
    pub async fn write(&self, command: Command, request_id: Option<RequestId>) -> Result<Applied> {
        match self.route(Forwarded::Write { command, request_id }).await? {
            ForwardedReply::Write(applied) => Ok(applied),
            other => Err(Error::internal(format!("the leader answered a write with {other:?}"))),
        }
    }

    /// Applies a write in the asked mode and returns its outcome; see [`Node::write`] for STRONG.
    pub async fn write_in(&self, mode: WriteMode, command: Command, request_id: Option<RequestId>) -> Result<Applied> {
        match mode {
            WriteMode::Strong => self.write(command, request_id).await,
            WriteMode::Eventual => self.replica.write(&command, request_id).await,
        }
    }

    /// Reads at the asked consistency. LOCAL and EVENTUAL are served here; stronger levels by the
    /// leader.
    pub async fn read(&self, query: Query, consistency: Consistency) -> Result<ReadResult> {
        if matches!(consistency, Consistency::Local | Consistency::Eventual) {
            return Ok(self.read_local(&query, consistency));
        }
        match self.route(Forwarded::Read { query, consistency }).await? {
            ForwardedReply::Read(result) => Ok(result),
            other => Err(Error::internal(format!("the leader answered a read with {other:?}"))),
        }
    }

    fn read_local(&self, query: &Query, consistency: Consistency) -> ReadResult {
        let (leader_id, term) = self.consensus.leader_and_term();
        let (reply, applied_index) = {
            let applied = self.consensus.applied();
            let index = applied.applied_index();
            match consistency {
                // Released before the replica is read: an eventual read never holds up an apply.
                Consistency::Eventual => {
                    drop(applied);
                    (self.replica.query(query), index)
                }
                _ => (applied.state.query(query, now_ms()), index),
            }
        };
        let staleness_ms = if leader_id == Some(self.id) {
            0
        } else {
            let now = self.started.elapsed().as_millis() as u64;
            now.saturating_sub(self.leader_contact_ms.load(Ordering::Relaxed))
        };
        ReadResult {
            reply,
            meta: ReadMeta { served_by: self.id, leader_id, term, applied_index, consistency, staleness_ms },
        }
    }

    /// How long `request` may take, here or forwarded.
    fn timeout_for(&self, request: &Forwarded) -> Duration {
        match request {
            Forwarded::Member(_) => MEMBERSHIP_TIMEOUT,
            _ => self.request_timeout,
        }
    }

    /// Runs a request on the leader, following leadership changes until the deadline.
    async fn route(&self, request: Forwarded) -> Result<ForwardedReply> {
        let timeout = self.timeout_for(&request);
        let deadline = tokio::time::Instant::now() + timeout;
        let mut changes = self.consensus.changes();
        loop {
            let leader = changes.leader();
            let attempt = match leader {
                Some(id) if id == self.id => self.execute_attempt(request.clone(), deadline).await,
                Some(id) => self.forward(id, request.clone(), deadline).await,
                None => Attempt::Retry(Error::unavailable("no leader is elected", None)),
            };
            let last = match attempt {
                Attempt::Done(result) => return result,
                Attempt::Retry(e) => e,
            };
            // Wait for a leadership change, but poll too: a dead leader stays in the metrics
            // until the election timeout passes.
            let pause = tokio::time::Instant::now() + Duration::from_millis(25);
            let wake = pause.min(deadline);
            let _ = tokio::time::timeout_at(wake, changes.changed()).await;
            if tokio::time::Instant::now() >= deadline {
                return Err(match last {
                    Error::Unavailable { reason, leader } | Error::NotLeader { reason, leader } => {
                        Error::unavailable(format!("{reason} (gave up after {timeout:?})"), leader)
                    }
                    other => other,
                });
            }
        }
    }

    async fn execute_attempt(&self, request: Forwarded, deadline: tokio::time::Instant) -> Attempt {
        match request {
            Forwarded::Write { command, request_id } => {
                let proposal = Proposal { command, request_id, at_ms: now_ms() };
                match tokio::time::timeout_at(deadline, self.consensus.propose(proposal)).await {
                    Ok(Ok(applied)) => Attempt::Done(Ok(ForwardedReply::Write(applied))),
                    Ok(Err(Refusal::NotLeader(leader))) => Attempt::Retry(self.not_leader(leader)),
                    Ok(Err(e)) => Attempt::Done(Err(Error::unavailable(e.to_string(), None))),
                    Err(_) => Attempt::Done(Err(Error::unavailable(
                        "the write was proposed but no quorum committed it before the deadline; \
                         it is not acknowledged and may or may not apply",
                        None,
                    ))),
                }
            }
            Forwarded::Member(change) => match tokio::time::timeout_at(deadline, self.run_change(change)).await {
                Ok(attempt) => attempt,
                Err(_) => Attempt::Done(Err(Error::unavailable(
                    "the membership change did not finish before the deadline; Cluster/Status shows where it got to",
                    None,
                ))),
            },
            Forwarded::Read { query, consistency } => {
                let how = match consistency {
                    Consistency::Lease if self.consensus.lease_holds() => {
                        return Attempt::Done(Ok(ForwardedReply::Read(self.read_local(&query, consistency))));
                    }
                    Consistency::Lease => Confirm::Lease,
                    _ => Confirm::Quorum,
                };
                match tokio::time::timeout_at(deadline, self.consensus.confirm(how)).await {
                    Ok(Confirmation::Confirmed) => {
                        Attempt::Done(Ok(ForwardedReply::Read(self.read_local(&query, consistency))))
                    }
                    Ok(Confirmation::NotLeader(leader)) => Attempt::Retry(self.not_leader(leader)),
                    Ok(Confirmation::Refused(reason)) => Attempt::Done(Err(Error::unavailable(
                        format!("leadership could not be confirmed: {reason}"),
                        None,
                    ))),
                    Err(_) => Attempt::Done(Err(Error::unavailable(
                        "leadership could not be confirmed by a quorum before the deadline",
                        None,
                    ))),
                }
            }
        }
    }

    /// The term this node leads, if it is the leader.
    pub fn leader_term(&self) -> Option<u64> {
        self.consensus.term_led()
    }

    /// Runs `f` on the applied state; the lock is held only for `f`.
    pub fn with_state<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&self.consensus.applied().state)
    }

    /// Proposes a singleton job's effect, planned in `term`, on this node only: a job runs where
    /// leadership is, so a job effect is never forwarded.
    pub async fn propose_job(&self, term: u64, effect: JobEffect) -> Result<Applied> {
        let proposal = Proposal { command: Command::Job { term, effect }, request_id: None, at_ms: now_ms() };
        match tokio::time::timeout(self.request_timeout, self.consensus.propose(proposal)).await {
            Ok(Ok(applied)) => Ok(applied),
            Ok(Err(e)) => Err(Error::unavailable(format!("job effect not committed: {e}"), None)),
            Err(_) => Err(Error::unavailable("job effect not committed before the deadline", None)),
        }
    }

    /// Waits until this node has applied a live value for `key`, for at most `wait` (and never past
    /// the request deadline). Any applied value is committed, so a LOCAL look suffices; the wake-up
    /// is raft's metrics watch, which changes on every apply.
    pub async fn wait_for_cached(&self, key: &CacheKey, wait: Duration) -> Option<CachedValue> {
        let deadline = tokio::time::Instant::now() + wait.min(self.request_timeout);
        let mut changes = self.consensus.changes();
        let query = Query::Cache(key.clone());
        loop {
            let applied = self.consensus.applied().state.query(&query, now_ms());
            if let QueryReply::Cache(CacheRead { value: Some(v), .. }) = applied {
                return Some(v);
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(true) => {}
                Ok(false) | Err(_) => return None,
            }
        }
    }

    /// This node's own view, for `NodeInfo` and `Cluster/Status`.
    pub fn view(&self) -> NodeView {
        let progress = self.consensus.progress();
        let me = self.member(self.id).unwrap_or_default();
        NodeView {
            id: self.id,
            client_addr: me.client_addr,
            peer_addr: me.peer_addr,
            role: progress.role,
            term: progress.term,
            last_log_index: progress.last_log_index,
            applied_index: progress.applied_index,
            matched_index: None,
            leader_id: progress.leader_id,
            snapshot_index: progress.snapshot_index,
            purged_index: progress.purged_index,
            gossip: self.replica.lag(self.peer_members().into_iter().map(|(id, _)| id)),
            jobs: self.jobs.views(),
        }
    }

    /// The leader, the term and every member, as this node knows them.
    pub fn membership(&self) -> (Option<NodeId>, u64, Vec<(NodeId, PeerNode)>) {
        let members = self.members();
        (members.leader_id, members.term, members.all())
    }

    /// Every other member with its peer address.
    fn peer_members(&self) -> Vec<(NodeId, String)> {
        let all = self.members().all().into_iter();
        all.filter(|(id, _)| *id != self.id).map(|(id, n)| (id, n.peer_addr)).collect()
    }

    /// The cluster as this node sees it, completed by asking every other member for its view.
    pub async fn cluster_view(&self) -> ClusterView {
        let (members, progress) = (self.members(), self.consensus.progress());
        let lookups = members.all().into_iter().map(|(id, node)| async move {
            if id == self.id {
                return self.view();
            }
            let timeout = Duration::from_millis(300);
            let req = self.peers.request(crate::pb::peer::NodeInfoRequest {}, timeout);
            let info =
                self.peers.call(id, &node.peer_addr, timeout, |mut c| async move { c.node_info(req).await }).await;
            match info {
                Ok(i) => NodeView {
                    id,
                    client_addr: node.client_addr,
                    peer_addr: node.peer_addr,
                    role: i.role,
                    term: i.term,
                    last_log_index: i.last_log_index,
                    applied_index: i.applied_index,
                    matched_index: None,
                    leader_id: (i.leader_id != 0).then_some(i.leader_id),
                    snapshot_index: i.snapshot_index,
                    purged_index: i.purged_index,
                    gossip: i
                        .gossip
                        .into_iter()
                        .map(|g| GossipLag {
                            peer: g.peer_id,
                            pending: g.pending_deltas,
                            needs_full: g.needs_full_sync,
                            since_ack_ms: g.since_ack_ms,
                        })
                        .collect(),
                    jobs: i
                        .jobs
                        .into_iter()
                        .map(|j| JobView {
                            name: j.name,
                            term: j.term,
                            since_ms: j.since_ms,
                            runs: j.runs,
                            applied: j.applied,
                            last_error: (!j.last_error.is_empty()).then_some(j.last_error),
                        })
                        .collect(),
                },
                Err(_) => NodeView::unreachable(id, node),
            }
        });
        let mut nodes = futures::future::join_all(lookups).await;
        if let Some(matched) = &progress.matched {
            for node in &mut nodes {
                node.matched_index = matched.get(&node.id).copied();
            }
        }
        ClusterView { served_by: self.id, leader_id: progress.leader_id, term: progress.term, nodes }
    }
}
