//! The node's one handle on Raft. openraft's API, errors and metrics are turned here into raftlot's
//! terms (who leads which term, the members, a proposal's outcome, whether a read may be served),
//! so the node never names openraft and a version move stays in this directory and `api`.
//!
//! Two read paths reach into openraft's state and live here with their proofs: ReadIndex rounds
//! shared by concurrent LINEARIZABLE reads, and forwarded reads a follower vouches for.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLockReadGuard};
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use openraft::async_runtime::WatchReceiver;
use openraft::error::{ClientWriteError, RaftError};
use openraft::metrics::RaftServerMetrics;
use openraft::type_config::alias::WatchReceiverOf;
use openraft::{ChangeMembers, RaftMetrics, ReadPolicy};
use serde::{Deserialize, Serialize};

use super::log_store::{LogStore, VotedTerm};
use super::network::NetworkFactory;
use super::state_machine::{AppliedState, StateMachine};
use super::{NodeId, PeerNode, Raft, TypeConfig};
use crate::batch::{Batcher, SendBatch};
use crate::config::Config;
use crate::domain::{Applied, Proposal};

/// ReadIndex rounds that may run at once. A LINEARIZABLE read that finds them all busy waits for the
/// next one, which starts after it arrived and so proves as much for it as a round of its own: the
/// leader's commit index when that round begins covers every write acknowledged before the read.
/// Under load one round serves dozens of reads instead of each read queueing its own message in
/// openraft's core and its own waiter on the applied index.
const READ_INDEX_ROUNDS: usize = 2;

/// Proposal batches that may be in openraft at once. A proposal that finds the batch busy waits for
/// the next one, and a batch goes to openraft as one message, one log append and one entry run:
/// openraft's core runs the commands of each message it takes before it takes the next, so writes
/// proposed one by one become one append each, however many arrive together. One batch at a time
/// puts everything that arrives during a commit round into the next append. A second batch in flight
/// halved the batches (twice the appends and flushes) without shortening the wait: one at a time
/// wrote more in twelve of thirteen alternating pairs at 4, 16 and 64 clients, at a lower p50 and
/// with a tenth to a fifth less node CPU per write. One client is unaffected: a lone proposal goes
/// at once.
const PROPOSAL_BATCHES: usize = 1;

/// The most proposals one batch carries, so that one append stays one modest sled record.
const PROPOSAL_BATCH: usize = 512;

/// What confirming leadership found, shared by every read that waited on it.
#[derive(Debug, Clone)]
pub enum Confirmation {
    /// A quorum confirmed this leader and it has applied everything committed before the read.
    Confirmed,
    /// This node does not lead; the leader it knows of, if any. The read was not served.
    NotLeader(Option<NodeId>),
    /// Leadership could not be confirmed, and why.
    Refused(String),
}

/// How a read confirms that this node still leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirm {
    /// A quorum answers after the read arrived (a shared ReadIndex round).
    Quorum,
    /// A quorum answered within the leader lease.
    Lease,
}

/// Why a proposal or a membership change was not carried out.
#[derive(Debug, Clone)]
pub enum Refusal {
    /// This node does not lead; the leader it knows of, if any. Nothing was proposed.
    NotLeader(Option<NodeId>),
    /// Proposed, but no outcome is known: its entry left this node's log when the node followed
    /// another leader (a conflicting entry replaced it, or a snapshot covered it), and another node
    /// may hold the entry and commit it yet; or no quorum committed it in time; or raft stopped
    /// after the proposal reached it. The proposal must not be made again. The reason says which.
    Undecided(String),
    /// openraft refused the change as asked (a membership change that conflicts with one in flight).
    Refused(String),
    /// Raft on this node has stopped, before the request reached it.
    Stopped(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::NotLeader(Some(leader)) => write!(f, "this node does not lead; node {leader} does"),
            Refusal::NotLeader(None) => write!(f, "this node does not lead and knows no leader"),
            Refusal::Undecided(reason) => write!(f, "not acknowledged and may or may not apply: {reason}"),
            Refusal::Refused(reason) => write!(f, "{reason}"),
            Refusal::Stopped(reason) => write!(f, "raft stopped: {reason}"),
        }
    }
}

/// The membership as one node sees it, with who leads which term.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Members {
    pub voters: Vec<(NodeId, PeerNode)>,
    pub learners: Vec<(NodeId, PeerNode)>,
    pub leader_id: Option<NodeId>,
    pub term: u64,
    /// The log index of the (last) membership entry.
    pub log_index: u64,
}

impl Members {
    /// Voters and learners, by id.
    pub fn all(&self) -> Vec<(NodeId, PeerNode)> {
        let mut all: Vec<_> = self.voters.iter().chain(&self.learners).cloned().collect();
        all.sort_by_key(|(id, _)| *id);
        all
    }
}

/// This node's Raft progress, from openraft's metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// leader, follower, candidate, learner or shutdown.
    pub role: String,
    pub term: u64,
    pub leader_id: Option<NodeId>,
    pub last_log_index: u64,
    pub committed_index: u64,
    pub applied_index: u64,
    pub snapshot_index: u64,
    pub purged_index: u64,
    /// On a leader, the highest index each member (itself included) is known to hold.
    pub matched: Option<BTreeMap<NodeId, u64>>,
}

/// Wakes on changes to one of openraft's metrics, `M`, and tells who leads after each:
/// [`Consensus::changes`] wakes on every apply as well, [`Consensus::leader_changes`] only when the
/// vote or the leader moves.
pub struct Changes<M: Send + Sync + 'static> {
    rx: WatchReceiverOf<TypeConfig, M>,
    leader: fn(&M) -> Option<NodeId>,
}

impl<M: Send + Sync + 'static> Changes<M> {
    /// Waits for the next change; false once Raft has stopped.
    pub async fn changed(&mut self) -> bool {
        self.rx.changed().await.is_ok()
    }

    pub fn leader(&self) -> Option<NodeId> {
        (self.leader)(&self.rx.borrow_watched())
    }
}

pub struct Consensus {
    id: NodeId,
    raft: Raft,
    sm: StateMachine,
    /// Sent with forwarded LINEARIZABLE reads; see [`Consensus::vouched_by`].
    voted: VotedTerm,
    /// Gathers the proposals that arrive together into one openraft message.
    proposals: Batcher<Proposal, Result<Applied, Refusal>>,
    /// Shares ReadIndex rounds among the LINEARIZABLE reads this node serves as leader.
    read_index: Batcher<(), Confirmation>,
    /// ReadIndex rounds `read_index` started: fewer than the LINEARIZABLE reads under load.
    read_index_rounds: Arc<AtomicU64>,
}

impl Consensus {
    /// Starts Raft on this node's log and state machine; `config.request_timeout` bounds a ReadIndex
    /// round and a batch of proposals.
    pub async fn start(
        config: &Config,
        network: NetworkFactory,
        log_store: LogStore,
        sm: StateMachine,
    ) -> anyhow::Result<Self> {
        let voted = log_store.voted_term();
        let raft = Raft::new(config.id, Arc::new(openraft_config(config)?), network, log_store, sm.clone())
            .await
            .context("cannot start raft")?;
        let read_index_rounds = Arc::new(AtomicU64::new(0));
        let read_index = read_index_rounds_on(raft.clone(), config.request_timeout, read_index_rounds.clone());
        let proposals = proposal_batches_on(raft.clone(), config.request_timeout);
        Ok(Consensus { id: config.id, raft, sm, voted, proposals, read_index, read_index_rounds })
    }

    /// openraft itself, for the peer service that feeds it the other nodes' messages.
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    pub async fn is_initialized(&self) -> anyhow::Result<bool> {
        Ok(self.raft.is_initialized().await?)
    }

    /// Makes `members` the first membership of a new cluster; an election follows.
    pub async fn initialize(&self, members: BTreeMap<NodeId, PeerNode>) -> anyhow::Result<()> {
        self.raft.initialize(members).await.context("cannot initialise the cluster")
    }

    pub async fn shutdown(&self) -> anyhow::Result<()> {
        Ok(self.raft.shutdown().await?)
    }

    /// The applied state. See [`StateMachine::read`] for how long the lock may be held.
    pub fn applied(&self) -> RwLockReadGuard<'_, AppliedState> {
        self.sm.read()
    }

    /// The highest term this node has voted in or followed, as forwarded reads carry it.
    pub fn voted_term(&self) -> VotedTerm {
        self.voted.clone()
    }

    /// ReadIndex rounds run so far.
    pub fn read_index_rounds(&self) -> u64 {
        self.read_index_rounds.load(Ordering::Relaxed)
    }

    pub fn changes(&self) -> Changes<RaftMetrics<TypeConfig>> {
        Changes { rx: self.raft.metrics(), leader: |m| m.current_leader }
    }

    pub fn leader_changes(&self) -> Changes<RaftServerMetrics<TypeConfig>> {
        Changes { rx: self.raft.server_metrics(), leader: |m| m.current_leader }
    }

    pub fn leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow_watched().current_leader
    }

    /// The leader this node knows of and the current term, read together.
    pub fn leader_and_term(&self) -> (Option<NodeId>, u64) {
        let metrics = self.raft.metrics();
        let m = metrics.borrow_watched();
        (m.current_leader, m.current_term)
    }

    /// The term this node leads, if it is the leader.
    pub fn term_led(&self) -> Option<u64> {
        term_led(self.id, &self.raft.metrics().borrow_watched())
    }

    /// A member's addresses from the current membership, read under the metrics borrow rather than
    /// by cloning the whole metrics: this runs on every forwarded request.
    pub fn member(&self, id: NodeId) -> Option<PeerNode> {
        self.raft.metrics().borrow_watched().membership_config.membership().get_node(&id).cloned()
    }

    /// The current membership, leader and term.
    pub fn members(&self) -> Members {
        let metrics = self.raft.metrics();
        let m = metrics.borrow_watched();
        let membership = m.membership_config.membership();
        let entry = |id: NodeId| Some((id, membership.get_node(&id)?.clone()));
        Members {
            voters: membership.voter_ids().filter_map(entry).collect(),
            learners: membership.learner_ids().filter_map(entry).collect(),
            leader_id: m.current_leader,
            term: m.current_term,
            log_index: m.membership_config.log_id().as_ref().map_or(0, |id| id.index),
        }
    }

    pub fn progress(&self) -> Progress {
        let metrics = self.raft.metrics();
        let m = metrics.borrow_watched();
        let index = |id: Option<&super::LogId>| id.map_or(0, |id| id.index);
        Progress {
            role: format!("{:?}", m.state).to_lowercase(),
            term: m.current_term,
            leader_id: m.current_leader,
            last_log_index: m.last_log_index.unwrap_or(0),
            committed_index: index(m.local_committed.as_ref()),
            applied_index: index(m.last_applied.as_ref()),
            snapshot_index: index(m.snapshot.as_ref()),
            purged_index: index(m.purged.as_ref()),
            matched: m.replication.as_ref().map(|r| r.iter().map(|(id, l)| (*id, index(l.as_ref()))).collect()),
        }
    }

    /// The other voter with the most of the log, as this leader's replication progress shows.
    pub fn successor(&self) -> Option<NodeId> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow_watched();
        let matched = |id: &NodeId| {
            m.replication.as_ref().and_then(|r| r.get(id)).and_then(|l| l.as_ref()).map_or(0, |l| l.index)
        };
        m.membership_config.membership().voter_ids().filter(|id| *id != self.id).max_by_key(matched)
    }

    /// Commits `proposal` and returns its outcome once this leader applied it. Cancelling the call
    /// does not withdraw a proposal already made.
    pub async fn propose(&self, proposal: Proposal) -> Result<Applied, Refusal> {
        self.proposals
            .call(proposal)
            .await
            .unwrap_or_else(|| Err(Refusal::Undecided("its batch was dropped before it was answered".into())))
    }

    /// Confirms this node's leadership as `how` asks and waits until it has applied what was
    /// committed when the confirmation began.
    pub async fn confirm(&self, how: Confirm) -> Confirmation {
        match how {
            Confirm::Lease => confirm_leadership(&self.raft, ReadPolicy::LeaseRead).await,
            Confirm::Quorum => {
                self.read_index.call(()).await.unwrap_or_else(|| Confirmation::Refused("its round was dropped".into()))
            }
        }
    }

    /// Whether a LEASE read may be served from this node's state machine now, without a trip
    /// through openraft's core, by the rule openraft's LeaseRead applies: a quorum acknowledged this
    /// leader less than `election_timeout_max` ago (the followers refuse to vote for anyone else for
    /// that long), and this leader has applied an entry of its own term, so everything an earlier
    /// leader acknowledged is applied here. The figures come from openraft's metrics, which can only
    /// lag towards an older acknowledgement, so they err towards false; then the read goes through
    /// openraft's LeaseRead.
    pub fn lease_holds(&self) -> bool {
        // One reading of the metrics: the acknowledgement must belong to the term checked below.
        let led = {
            let metrics = self.raft.metrics();
            let m = metrics.borrow_watched();
            term_led(self.id, &m).zip(m.last_quorum_acked)
        };
        let Some((term, acked)) = led else { return false };
        let lease = Duration::from_millis(self.raft.config().election_timeout_max);
        openraft::Instant::elapsed(&acked.into_inner()) < lease
            && self.sm.read().last_applied.map(|id| id.leader_id.term) == Some(term)
    }

    /// Whether LINEARIZABLE reads that follower `from` forwarded while its term was `term` may be
    /// served from this node's state machine now, without a ReadIndex round; if so, it has applied
    /// everything committed when this was decided (waiting up to `within` for that).
    ///
    /// A ReadIndex round proves that a quorum still followed this leader after the read arrived,
    /// so no other leader can have acknowledged a write it lacks. The forward call is itself half
    /// of such a proof: the follower read its term after the reads reached it, and at that moment
    /// it had not voted for anyone in a later term. Checked here, inside openraft's core and
    /// against its own state rather than its metrics: this node still leads that very term (so it
    /// has not voted for anyone later either), the two of them are a majority of every
    /// configuration of a settled membership (so any leader of a later term needed one of their
    /// votes, and could not have been elected before the follower's term was read), and it has
    /// committed an entry of its own term (so every write an earlier leader acknowledged is below
    /// its commit index). Anything acknowledged before the reads arrived is then applied here once
    /// the commit index read here is. With three voters any follower qualifies; with five a
    /// forwarded read takes the ReadIndex round, as it does whenever a check fails.
    pub async fn vouched_by(&self, from: NodeId, term: u64, within: Duration) -> bool {
        let me = self.id;
        let read_index = self
            .raft
            .with_raft_state(move |st| {
                let vote = st.vote_ref();
                let leads_term = st.server_state.is_leader()
                    && vote.is_committed()
                    && vote.leader_id().term == term
                    && vote.leader_id().node_id == me;
                let membership = st.membership_state.effective();
                let settled = st.membership_state.committed().log_id() == membership.log_id();
                let majority = pair_is_majority(membership.get_joint_config(), me, from);
                let committed = st.local_committed().filter(|id| id.leader_id.term == term)?;
                (leads_term && settled && majority).then_some(committed.index)
            })
            .await
            .ok()
            .flatten();
        let Some(read_index) = read_index else { return false };
        if self.sm.read().last_applied.is_some_and(|id| id.index >= read_index) {
            return true;
        }
        self.raft.wait(Some(within)).applied_index_at_least(Some(read_index), "vouched reads").await.is_ok()
    }

    /// Adds `id` as a learner, waits until it has caught up (so it joins the quorum ready), then
    /// makes it a voter.
    pub async fn add_voter(&self, id: NodeId, node: PeerNode) -> Result<(), Refusal> {
        self.raft.add_learner(id, node, true).await.map_err(refusal)?;
        self.change(ChangeMembers::AddVoterIds(BTreeSet::from([id]))).await
    }

    pub async fn remove_voter(&self, id: NodeId) -> Result<(), Refusal> {
        self.change(ChangeMembers::RemoveVoters(BTreeSet::from([id]))).await
    }

    pub async fn remove_learner(&self, id: NodeId) -> Result<(), Refusal> {
        self.change(ChangeMembers::RemoveNodes(BTreeSet::from([id]))).await
    }

    async fn change(&self, change: ChangeMembers<NodeId, PeerNode>) -> Result<(), Refusal> {
        self.raft.change_membership(change, false).await.map(|_| ()).map_err(refusal)
    }

    /// Asks this leader to hand leadership to `to`; returns once asked, not once done.
    pub async fn request_transfer(&self, to: NodeId) -> Result<(), Refusal> {
        self.raft.trigger().transfer_leader(to).await.map_err(|e| Refusal::Stopped(e.to_string()))
    }
}

fn refusal(e: RaftError<TypeConfig, ClientWriteError<TypeConfig>>) -> Refusal {
    match e {
        RaftError::APIError(e) => refused(e),
        RaftError::Fatal(e) => Refusal::Stopped(e.to_string()),
    }
}

/// Not `RaftError::forward_to_leader`, which answers for a discarded entry as well: that proposal
/// may still commit, and a retry of it could apply it twice.
fn refused(e: ClientWriteError<TypeConfig>) -> Refusal {
    match e {
        ClientWriteError::ForwardToLeader(f) => Refusal::NotLeader(f.leader_id),
        e @ ClientWriteError::LogEntryDiscarded(_) => Refusal::Undecided(format!(
            "its log entry was dropped here when another leader took over, and another node may still commit it ({e})"
        )),
        e => Refusal::Refused(e.to_string()),
    }
}

/// The term `me` leads according to `m`, if it leads there.
fn term_led(me: NodeId, m: &RaftMetrics<TypeConfig>) -> Option<u64> {
    (m.current_leader == Some(me) && m.state.is_leader()).then_some(m.current_term)
}

/// Confirms this node's leadership under `policy` and waits until it has applied what was committed
/// when the confirmation began.
async fn confirm_leadership(raft: &Raft, policy: ReadPolicy) -> Confirmation {
    match raft.ensure_linearizable(policy).await {
        Ok(_) => Confirmation::Confirmed,
        Err(e) => match e.forward_to_leader() {
            Some(f) => Confirmation::NotLeader(f.leader_id),
            None => Confirmation::Refused(e.to_string()),
        },
    }
}

/// Shares ReadIndex rounds among concurrent LINEARIZABLE reads; see [`READ_INDEX_ROUNDS`]. A round
/// is bounded by `timeout` so a lost quorum frees its slot; each read also keeps its own deadline.
fn read_index_rounds_on(raft: Raft, timeout: Duration, rounds: Arc<AtomicU64>) -> Batcher<(), Confirmation> {
    let send: SendBatch<(), Confirmation> = Box::new(move |reads| {
        let raft = raft.clone();
        rounds.fetch_add(1, Ordering::Relaxed);
        Box::pin(async move {
            let confirmation = tokio::time::timeout(timeout, confirm_leadership(&raft, ReadPolicy::ReadIndex))
                .await
                .unwrap_or_else(|_| Confirmation::Refused("no quorum answered in time".into()));
            vec![confirmation; reads.len()]
        })
    });
    Batcher::new(READ_INDEX_ROUNDS, usize::MAX, send)
}

/// Proposes each batch in one openraft message; see [`PROPOSAL_BATCHES`]. openraft answers a batch's
/// proposals in log order. A batch is bounded by `timeout` so a lost quorum frees its slot; what it
/// has not answered by then is undecided, and each proposal also keeps its caller's deadline.
fn proposal_batches_on(raft: Raft, timeout: Duration) -> Batcher<Proposal, Result<Applied, Refusal>> {
    let send: SendBatch<Proposal, Result<Applied, Refusal>> = Box::new(move |batch| {
        let raft = raft.clone();
        Box::pin(async move {
            let count = batch.len();
            let mut answers = Vec::with_capacity(count);
            let answering = async {
                // Refused here, the batch never reached openraft's core; once it has, a proposal
                // left unanswered may have been appended and replicated, and may yet commit.
                let mut outcomes =
                    raft.client_write_many(batch).await.map_err(|fatal| Refusal::Stopped(fatal.to_string()))?;
                while let Some(outcome) = outcomes.next().await {
                    let outcome = outcome.map_err(|fatal| Refusal::Undecided(format!("raft stopped: {fatal}")))?;
                    answers.push(outcome.map(|written| written.response).map_err(refused));
                }
                Ok::<(), Refusal>(())
            };
            let unanswered = match tokio::time::timeout(timeout, answering).await {
                Ok(Ok(())) => Refusal::Undecided("openraft answered the batch short".into()),
                Ok(Err(refusal)) => refusal,
                Err(_) => Refusal::Undecided(format!("no quorum committed it within {timeout:?}")),
            };
            answers.resize_with(count, || Err(unanswered.clone()));
            answers
        })
    });
    Batcher::new(PROPOSAL_BATCHES, PROPOSAL_BATCH, send)
}

/// Whether nodes `a` and `b` (two distinct nodes) are a majority of every one of `configs`, the
/// voter sets of a membership (two while a change is joint).
fn pair_is_majority(configs: &[BTreeSet<NodeId>], a: NodeId, b: NodeId) -> bool {
    a != b
        && configs.iter().all(|voters| {
            let ours = usize::from(voters.contains(&a)) + usize::from(voters.contains(&b));
            ours * 2 > voters.len()
        })
}

fn openraft_config(config: &Config) -> anyhow::Result<openraft::Config> {
    let hb = config.heartbeat.as_millis() as u64;
    let raft_config = openraft::Config {
        cluster_name: "raftlot".to_string(),
        heartbeat_interval: hb,
        // openraft's followers refuse votes for a leader lease of election_timeout_max after the
        // last heartbeat, so a candidate's first try (before that) always fails and the election
        // lands between max and 2 x max after a leader dies. 2-4 heartbeats keeps that at
        // 200-400 ms; pre-vote keeps one starved follower from disturbing a live leader, since the
        // others still hold its lease.
        election_timeout_min: hb * 2,
        election_timeout_max: hb * 4,
        // Pre-vote keeps a partitioned node that rejoins from deposing a healthy leader.
        enable_pre_vote: Some(true),
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(config.snapshot_logs),
        // Keep some log after a snapshot so a briefly lagging follower catches up by entries, not by
        // a whole snapshot.
        max_in_snapshot_log_to_keep: config.snapshot_logs.min(1_000),
        // A whole snapshot travels in one message; openraft's 200 ms default suits only tiny ones.
        install_snapshot_timeout: 10_000,
        // The log store returns from append before its flush (see log_store.rs), so followers get
        // new entries while the leader's flush runs.
        broadcast_submitted_on_append: Some(true),
        // A member whose disk was lost comes back with an empty log while the leader still tracks
        // what it had. openraft's default treats that as a bug and stops the leader's Raft core,
        // turning one lost disk into a cluster outage; allowed, the leader starts that member's
        // replication over (by snapshot if need be). The forgotten vote is the same risk either way,
        // which is why the README still says to remove such a member before it returns.
        allow_log_reversion: Some(true),
        ..Default::default()
    };
    Ok(raft_config.validate()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_follower_vouches_for_its_leader_only_where_the_two_are_a_majority() {
        let voters = |ids: &[NodeId]| ids.iter().copied().collect::<BTreeSet<NodeId>>();
        assert!(pair_is_majority(&[voters(&[1, 2, 3])], 1, 2));
        assert!(pair_is_majority(&[voters(&[1, 2])], 1, 2));
        assert!(!pair_is_majority(&[voters(&[1, 2, 3])], 1, 1), "a leader cannot vouch for itself");
        assert!(!pair_is_majority(&[voters(&[1, 2, 3])], 1, 4), "a learner is no voter");
        assert!(!pair_is_majority(&[voters(&[1, 2, 3, 4])], 1, 2), "two of four are no majority");
        assert!(!pair_is_majority(&[voters(&[1, 2, 3, 4, 5])], 1, 2));
        // Joint: a majority of the old voters is not enough while the new ones are not all in.
        assert!(!pair_is_majority(&[voters(&[1, 2, 3]), voters(&[1, 2, 3, 4, 5])], 1, 2));
        assert!(pair_is_majority(&[voters(&[1, 2, 3]), voters(&[1, 2, 4])], 1, 2));
    }

    /// Only a proposal openraft refused before appending may be retried at another leader. One whose
    /// entry was appended and later dropped here may still commit elsewhere, so a retry could apply
    /// it twice.
    #[test]
    fn only_a_write_that_was_never_appended_counts_as_not_led() {
        let leader = || openraft::error::ForwardToLeader::<TypeConfig>::new(2, PeerNode::default());
        let not_led = refusal(RaftError::APIError(ClientWriteError::ForwardToLeader(leader())));
        assert!(matches!(not_led, Refusal::NotLeader(Some(2))), "{not_led:?}");

        let dropped = refusal(RaftError::APIError(ClientWriteError::LogEntryDiscarded(leader())));
        assert!(matches!(dropped, Refusal::Undecided(_)), "{dropped:?}");
        assert!(dropped.to_string().contains("may or may not apply"), "{dropped}");
    }
}
