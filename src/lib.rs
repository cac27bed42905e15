//! raftlot: parking lots, PN counters and a TTL cache replicated through an openraft log persisted in
//! sled.
//!
//! # Layout
//! - `config`: every flag and environment variable, validated once.
//! - `error`: the node's error enum and its one conversion to `tonic::Status`.
//! - `domain`: pure, deterministic state (counters, commands, replies). No IO.
//! - `crdt`: pure delta-state CRDTs for the eventual path, and gossip bookkeeping.
//! - `raft`: openraft glue: type config, the node's one handle on Raft (`consensus`), sled log store
//!   and state machine, the cluster identity a data directory belongs to, peer transport client.
//! - `api`: gRPC services on the client and peer ports, the HTTP routes, `/metrics` and the
//!   request layer that measures and traces every client call, and who may call what (`auth`).
//! - `node`: wires storage, Raft and servers; routes each request to where it must run. It names no
//!   openraft, sled or tonic type: those stay in `raft` and `api`.
//! - `jobs`: singleton jobs (overstay and cache-expiry sweepers) that run on the leader, fenced by term.
//! - `cli`: the `cluster`, `status` and `bench` commands, and how they connect (TLS, client token).
//!
//! # How a write flows
//! Any node's `Counters/Add` validates the request (`api`), then `Node::write` finds the leader. A
//! follower forwards the request over the peer port; the leader stamps its clock on a `Proposal` and
//! proposes it (`Consensus::propose`, openraft's `client_write`). openraft appends it to the sled log
//! on a quorum (each node flushes before acknowledging), commits it, and every node's state machine
//! applies it through `domain::State::apply`. The leader replies with the applied outcome.
//!
//! # How a read flows
//! `LINEARIZABLE` and `LEASE` reads travel to the leader like writes; the leader confirms its
//! leadership (a quorum round trip for ReadIndex, its lease for LEASE), waits until its state machine
//! has applied up to the read index, then reads. `LOCAL` reads the asked node's applied state with no
//! network at all; `EVENTUAL` reads its CRDT replica, which folds in every committed write at apply
//! time and every eventual write it took or received by gossip.

pub mod api;
pub mod batch;
pub mod cli;
pub mod config;
pub mod crdt;
pub mod domain;
pub mod error;
pub mod jobs;
pub mod node;
pub mod pb;
pub mod raft;

/// Wall-clock milliseconds since the Unix epoch: the time a leader stamps on a proposal, and a node's
/// local time for eventual writes and gossip bookkeeping. A clock before 1970 reads as 0.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
