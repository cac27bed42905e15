//! Membership changes and leader transfer, run on the leader: joining (as a learner that catches up,
//! then a voter), leaving, handing leadership over on request and before a leader stops.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::domain::DomainError;
use crate::error::{Error, Result};
use crate::raft::consensus::Members;
use crate::raft::consensus::Refusal;
use crate::raft::{NodeId, PeerNode};

use super::{Attempt, Forwarded, ForwardedReply, MemberChange, Node};

/// How long a leader waits for a transfer to land before it asks again.
const TRANSFER_RETRY: Duration = Duration::from_millis(500);

impl Node {
    /// Runs a membership change on the leader and returns the membership it left.
    pub async fn change_members(&self, change: MemberChange) -> Result<Members> {
        match self.route(Forwarded::Member(change)).await? {
            ForwardedReply::Member(members) => Ok(members),
            other => Err(Error::internal(format!("the leader answered a membership change with {other:?}"))),
        }
    }

    /// Runs a membership change on this node, which believes it leads; openraft refuses it otherwise.
    pub(super) async fn run_change(&self, change: MemberChange) -> Attempt {
        let (voters, learners) = {
            let members = self.consensus.members();
            let ids = |nodes: Vec<(NodeId, PeerNode)>| nodes.into_iter().map(|(id, _)| id).collect::<BTreeSet<_>>();
            (ids(members.voters), ids(members.learners))
        };
        let refuse = |e: DomainError| Attempt::Done(Err(e.into()));
        let result = match change {
            MemberChange::Add { id, node } => {
                if let Some(existing) = self.member(id) {
                    if voters.contains(&id) && existing == node {
                        return Attempt::Done(Ok(ForwardedReply::Member(self.members())));
                    }
                    if voters.contains(&id) {
                        return refuse(DomainError::AlreadyExists(format!(
                            "node {id} is already a voter at {existing}"
                        )));
                    }
                }
                self.consensus.add_voter(id, node).await
            }
            MemberChange::Remove { id } => {
                if voters.contains(&id) {
                    if voters.len() == 1 {
                        return refuse(DomainError::FailedPrecondition(format!(
                            "node {id} is the last voter; a cluster cannot remove its last voter"
                        )));
                    }
                    self.consensus.remove_voter(id).await
                } else if learners.contains(&id) {
                    self.consensus.remove_learner(id).await
                } else {
                    return refuse(DomainError::NotFound(format!("node {id} is not a member")));
                }
            }
            MemberChange::TransferLeader { to } => {
                if self.leader_term().is_none() {
                    return Attempt::Retry(self.not_leader(self.consensus.leader()));
                }
                let to = match to {
                    Some(id) if id == self.id => return Attempt::Done(Ok(ForwardedReply::Member(self.members()))),
                    Some(id) if voters.contains(&id) => id,
                    Some(id) => {
                        return refuse(DomainError::FailedPrecondition(format!(
                            "node {id} is not a voter; only voters can lead"
                        )))
                    }
                    None => match self.consensus.successor() {
                        Some(id) => id,
                        None => {
                            return refuse(DomainError::FailedPrecondition(
                                "there is no other voter to hand leadership to".to_string(),
                            ))
                        }
                    },
                };
                return match self.transfer_leadership(to).await {
                    Ok(leader) if leader == to => Attempt::Done(Ok(ForwardedReply::Member(self.members()))),
                    // Another voter won the election: ask the new leader to hand over to `to`.
                    Ok(leader) => Attempt::Retry(self.not_leader(Some(leader))),
                    Err(e) => Attempt::Done(Err(e)),
                };
            }
        };
        match result {
            Ok(()) => Attempt::Done(Ok(ForwardedReply::Member(self.members()))),
            Err(Refusal::NotLeader(leader)) => Attempt::Retry(self.not_leader(leader)),
            Err(Refusal::Refused(reason)) => refuse(DomainError::FailedPrecondition(reason)),
            Err(e @ (Refusal::Stopped(_) | Refusal::Undecided(_))) => {
                Attempt::Done(Err(Error::unavailable(e.to_string(), None)))
            }
        }
    }

    /// Asks openraft to hand leadership to `to` and waits until this node no longer leads; answers
    /// who leads then, normally `to`. The target gives up if its log is not flushed up to the
    /// leader's within an election timeout, which under load it may miss; then the request is sent
    /// again. Another voter may also win the election the transfer starts; the caller decides what
    /// that means.
    async fn transfer_leadership(&self, to: NodeId) -> Result<NodeId> {
        let mut changes = self.consensus.changes();
        loop {
            self.consensus.request_transfer(to).await.map_err(|e| Error::unavailable(e.to_string(), None))?;
            let retry_at = tokio::time::Instant::now() + TRANSFER_RETRY;
            loop {
                let leader = changes.leader();
                match leader {
                    Some(l) if l == to || (l != self.id && self.leader_term().is_none()) => return Ok(l),
                    _ => {}
                }
                match tokio::time::timeout_at(retry_at, changes.changed()).await {
                    Ok(true) => {}
                    Ok(false) => return Err(Error::unavailable("raft stopped during the leader transfer", None)),
                    Err(_) => break,
                }
            }
        }
    }

    /// On shutdown: if this node leads, hand leadership to the most caught-up voter first, so
    /// clients see a handover instead of waiting out an election timeout. Bounded by `within`.
    pub(super) async fn hand_over_leadership(&self, within: Duration) {
        if self.leader_term().is_none() {
            return;
        }
        let Some(to) = self.consensus.successor() else { return };
        let started = Instant::now();
        match tokio::time::timeout(within, self.transfer_leadership(to)).await {
            Ok(Ok(leader)) => {
                tracing::info!(id = self.id, leader, elapsed = ?started.elapsed(), "handed leadership over before stopping")
            }
            Ok(Err(e)) => tracing::warn!(id = self.id, to, "leader handover failed: {e}"),
            Err(_) => {
                tracing::warn!(id = self.id, to, "leader handover did not finish within {within:?}; stopping anyway")
            }
        }
    }

    pub(super) fn members(&self) -> Members {
        self.consensus.members()
    }
}
