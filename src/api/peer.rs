//! `raftlot.peer.v1.RaftPeer`, the peer port: Raft RPCs handed to openraft, forwarded client
//! requests executed here, and this node's metrics for `Cluster/Status`.
//!
//! Every message is decoded with an error, never unwrapped: a garbage or hostile peer gets
//! `INVALID_ARGUMENT` and changes nothing.

use std::pin::Pin;
use std::sync::{Arc, Mutex};

use futures::{Stream, StreamExt};
use openraft::raft::{AppendEntriesRequest, StreamAppendError};

use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::{Request, Response, Status, Streaming};

use crate::node::Node;
use crate::pb::peer::raft_peer_server::RaftPeer;
use crate::pb::peer::{Blob, NodeInfoReply, NodeInfoRequest};
use crate::raft::identity::{ClusterIdentity, CLUSTER_METADATA};
use crate::raft::network::{from_blob, to_blob, SECRET_METADATA};
use crate::raft::{Snapshot, SnapshotMeta, TypeConfig, Vote};

pub struct PeerService {
    pub node: Arc<Node>,
}

fn decode<T: DeserializeOwned>(request: Request<Blob>) -> Result<T, Status> {
    from_blob(request.get_ref()).map_err(undecodable)
}

fn encode<T: Serialize>(value: &T) -> Result<Response<Blob>, Status> {
    reply_blob(value).map(Response::new)
}

fn reply_blob<T: Serialize>(value: &T) -> Result<Blob, Status> {
    to_blob(value).map_err(|e| Status::internal(format!("cannot encode reply: {e}")))
}

fn stopped(e: impl std::fmt::Display) -> Status {
    Status::unavailable(format!("raft is not running: {e}"))
}

/// Builds the interceptor that demands the cluster secret, and refuses callers from another
/// cluster, on every peer call.
pub fn guard(
    secret: Option<String>,
    identity: Arc<ClusterIdentity>,
) -> impl Fn(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |request: Request<()>| {
        let given = request.metadata().get(SECRET_METADATA).map(|v| v.as_bytes());
        super::auth::check_secret(secret.as_deref(), given)?;
        identity.check(cluster_of(&request)).map_err(Status::failed_precondition)?;
        Ok(request)
    }
}

fn cluster_of<T>(request: &Request<T>) -> Option<&str> {
    request.metadata().get(CLUSTER_METADATA).and_then(|v| v.to_str().ok())
}

impl PeerService {
    /// A node without a cluster id takes the one a leader's append or snapshot carries.
    async fn learn_cluster<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let given = cluster_of(request);
        self.node.identity.adopt(given).await.map_err(|e| Status::internal(format!("cannot store the cluster id: {e}")))
    }
}

fn undecodable(e: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("undecodable peer message: {e}"))
}

/// A leader's append requests as they arrive. The first undecodable one ends them and is kept in
/// `refused`, so the follower answers what came before it and then closes the stream with the reason.
fn append_requests(
    incoming: Streaming<Blob>,
    refused: Arc<Mutex<Option<Status>>>,
) -> impl Stream<Item = AppendEntriesRequest<TypeConfig>> {
    futures::stream::unfold(Some(incoming), move |incoming| {
        let refused = refused.clone();
        async move {
            let mut incoming = incoming?;
            let blob = incoming.message().await.ok()??;
            match from_blob(&blob) {
                Ok(request) => Some((request, Some(incoming))),
                Err(e) => {
                    *refused.lock().unwrap_or_else(|p| p.into_inner()) = Some(undecodable(e));
                    None
                }
            }
        }
    })
}

#[tonic::async_trait]
impl RaftPeer for PeerService {
    type AppendStreamStream = Pin<Box<dyn Stream<Item = Result<Blob, Status>> + Send + 'static>>;

    async fn append_entries(&self, request: Request<Blob>) -> Result<Response<Blob>, Status> {
        self.learn_cluster(&request).await?;
        let reply = self.node.consensus.raft().append_entries(decode(request)?).await.map_err(stopped)?;
        if !matches!(reply, openraft::raft::AppendEntriesResponse::HigherVote(_)) {
            self.node.touch_leader_contact();
        }
        encode(&reply)
    }

    async fn append_stream(
        &self,
        request: Request<Streaming<Blob>>,
    ) -> Result<Response<Self::AppendStreamStream>, Status> {
        self.learn_cluster(&request).await?;
        self.node.append_streams_opened.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let refused = Arc::new(Mutex::new(None));
        let requests = append_requests(request.into_inner(), refused.clone());
        let node = self.node.clone();
        let answers = self.node.consensus.raft().stream_append(requests).map(move |answer| {
            let answer = answer.map_err(stopped)?;
            if !matches!(answer, Err(StreamAppendError::HigherVote(_))) {
                node.touch_leader_contact();
            }
            reply_blob(&answer)
        });
        let refusal = futures::stream::once(async move { refused.lock().unwrap_or_else(|p| p.into_inner()).take() })
            .filter_map(|refusal| async move { refusal.map(Err) });
        Ok(Response::new(answers.chain(refusal).boxed()))
    }

    async fn vote(&self, request: Request<Blob>) -> Result<Response<Blob>, Status> {
        encode(&self.node.consensus.raft().vote(decode(request)?).await.map_err(stopped)?)
    }

    async fn pre_vote(&self, request: Request<Blob>) -> Result<Response<Blob>, Status> {
        encode(&self.node.consensus.raft().pre_vote(decode(request)?).await.map_err(stopped)?)
    }

    async fn transfer_leader(&self, request: Request<Blob>) -> Result<Response<Blob>, Status> {
        encode(&self.node.consensus.raft().handle_transfer_leader(decode(request)?).await.map_err(stopped)?)
    }

    async fn full_snapshot(&self, request: Request<Blob>) -> Result<Response<Blob>, Status> {
        self.learn_cluster(&request).await?;
        let (vote, meta, data): (Vote, SnapshotMeta, Vec<u8>) = decode(request)?;
        let snapshot = Snapshot { meta, snapshot: data };
        encode(&self.node.consensus.raft().install_full_snapshot(vote, snapshot).await.map_err(stopped)?)
    }

    async fn forward(&self, request: Request<Blob>) -> Result<Response<Blob>, Status> {
        encode(&self.node.execute_forwarded(request.get_ref()).await?)
    }

    async fn gossip(&self, request: Request<Blob>) -> Result<Response<Blob>, Status> {
        let message = decode(request)?;
        encode(&self.node.receive_gossip(&message)?)
    }

    async fn node_info(&self, _request: Request<NodeInfoRequest>) -> Result<Response<NodeInfoReply>, Status> {
        let v = self.node.view();
        Ok(Response::new(NodeInfoReply {
            id: v.id,
            role: v.role,
            term: v.term,
            last_log_index: v.last_log_index,
            applied_index: v.applied_index,
            leader_id: v.leader_id.unwrap_or(0),
            snapshot_index: v.snapshot_index,
            purged_index: v.purged_index,
            gossip: v
                .gossip
                .into_iter()
                .map(|g| crate::pb::peer::GossipLag {
                    peer_id: g.peer,
                    pending_deltas: g.pending,
                    needs_full_sync: g.needs_full,
                    since_ack_ms: g.since_ack_ms,
                })
                .collect(),
            jobs: v
                .jobs
                .into_iter()
                .map(|j| crate::pb::peer::Job {
                    name: j.name,
                    term: j.term,
                    since_ms: j.since_ms,
                    runs: j.runs,
                    applied: j.applied,
                    last_error: j.last_error.unwrap_or_default(),
                })
                .collect(),
            cluster_id: self.node.identity.get().map(|id| id.to_string()).unwrap_or_default(),
        }))
    }
}
