//! openraft glue: the type configuration, the node's handle on Raft (`consensus`), the sled log
//! store and state machine, and the peer transport. This module and `api` are the only places that
//! name openraft or sled, and the servers' tonic stays in `api` (`error` converts to
//! `tonic::Status`, the `cli` commands are tonic clients), so a version move stays local.

pub mod consensus;
pub mod disk;
pub mod identity;
pub mod log_store;
pub mod network;
pub mod replica;
pub mod state_machine;

use std::fmt;

use openraft::alias;
use serde::{Deserialize, Serialize};

use crate::domain::{Applied, Proposal};

/// What every node knows about a member: where clients and peers reach it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerNode {
    pub client_addr: String,
    pub peer_addr: String,
}

impl fmt::Display for PeerNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.client_addr, self.peer_addr)
    }
}

openraft::declare_raft_types!(
    /// raftlot's Raft types: log entries carry domain proposals, applying one answers `Applied`.
    pub TypeConfig:
        D = Proposal,
        R = Applied,
        NodeId = u64,
        Node = PeerNode,
);

pub type NodeId = u64;
pub type Entry = alias::EntryOf<TypeConfig>;
pub type Vote = alias::VoteOf<TypeConfig>;
pub type LogId = alias::LogIdOf<TypeConfig>;
pub type Membership = openraft::Membership<NodeId, PeerNode>;
pub type StoredMembership = alias::StoredMembershipOf<TypeConfig>;
pub type SnapshotMeta = alias::SnapshotMetaOf<TypeConfig>;
pub type Snapshot = alias::SnapshotOf<TypeConfig, Vec<u8>>;
pub type Raft = openraft::Raft<TypeConfig, state_machine::StateMachine>;
