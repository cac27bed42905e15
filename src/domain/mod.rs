//! Pure, deterministic replicated state: what a command does to counters, and what a read sees.
//!
//! Nothing here does IO or knows about Raft, sled or gRPC. The Raft state machine feeds committed
//! [`Proposal`]s to [`State::apply`] in log order on every node; because a proposal carries the
//! leader's clock (`at_ms`) and apply reads no other input, every node reaches the same state.

mod command;
mod dedup;
mod error;
mod lots;
mod names;
mod state;

pub use command::{Applied, Command, Proposal, Query, QueryReply, Reply};
pub use dedup::{Dedup, DedupEntry, DEDUP_MAX_ENTRIES, DEDUP_RETENTION_MS};
pub use error::DomainError;
pub use lots::{GateCount, Lot, LotSpec, LotView, Plate, Vehicle, MAX_CAPACITY, MAX_GATES};
pub use names::{CounterName, LotName, RequestId};
pub use state::State;
