//! `raftlot.v1.Cluster`: membership and replication progress as the asked node sees it, and the
//! membership changes an operator makes (any node takes them; the leader runs them).

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::domain::DomainError;
use crate::error::Error;
use crate::node::{MemberChange, Members, Node};
use crate::pb::v1 as pb;
use crate::pb::v1::cluster_server::Cluster;
use crate::raft::PeerNode;

pub struct ClusterService {
    pub node: Arc<Node>,
}

fn invalid(field: &str, reason: impl Into<String>) -> Status {
    Error::from(DomainError::invalid(field, reason)).into()
}

fn node_id(field: &str, id: u64) -> Result<u64, Status> {
    if id == 0 {
        return Err(invalid(field, "node ids start at 1"));
    }
    Ok(id)
}

/// A `host:port` another node can dial: a host name or IP (IPv6 in brackets) and a port 1-65535.
fn address(field: &str, value: &str) -> Result<String, Status> {
    let (host, port) = value.rsplit_once(':').ok_or_else(|| invalid(field, format!("{value:?} is not host:port")))?;
    if host.is_empty() || host.len() > 253 || host.chars().any(|c| c.is_whitespace() || c == '/' || c.is_control()) {
        return Err(invalid(field, format!("{value:?} does not name a host")));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(value.to_string()),
        _ => Err(invalid(field, format!("{value:?} does not end in a port 1-65535"))),
    }
}

impl From<Members> for pb::MembershipReply {
    fn from(m: Members) -> Self {
        let member = |voter: bool| {
            move |(id, n): (u64, PeerNode)| pb::Member { id, client_addr: n.client_addr, peer_addr: n.peer_addr, voter }
        };
        let mut members: Vec<pb::Member> =
            m.voters.into_iter().map(member(true)).chain(m.learners.into_iter().map(member(false))).collect();
        members.sort_by_key(|m| m.id);
        pb::MembershipReply { members, leader_id: m.leader_id.unwrap_or(0), term: m.term, log_index: m.log_index }
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn status(&self, _request: Request<pb::StatusRequest>) -> Result<Response<pb::StatusReply>, Status> {
        Ok(Response::new(self.node.cluster_view().await.into()))
    }

    async fn add_node(&self, request: Request<pb::AddNodeRequest>) -> Result<Response<pb::MembershipReply>, Status> {
        let r = request.into_inner();
        let id = node_id("id", r.id)?;
        let node = PeerNode {
            client_addr: address("client_addr", &r.client_addr)?,
            peer_addr: address("peer_addr", &r.peer_addr)?,
        };
        Ok(Response::new(self.node.change_members(MemberChange::Add { id, node }).await?.into()))
    }

    async fn remove_node(
        &self,
        request: Request<pb::RemoveNodeRequest>,
    ) -> Result<Response<pb::MembershipReply>, Status> {
        let id = node_id("id", request.into_inner().id)?;
        Ok(Response::new(self.node.change_members(MemberChange::Remove { id }).await?.into()))
    }

    async fn transfer_leader(
        &self,
        request: Request<pb::TransferLeaderRequest>,
    ) -> Result<Response<pb::MembershipReply>, Status> {
        let to = request.into_inner().to;
        let to = (to != 0).then_some(to);
        Ok(Response::new(self.node.change_members(MemberChange::TransferLeader { to }).await?.into()))
    }
}
