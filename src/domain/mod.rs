//! Pure, deterministic replicated state: what a command does to counters, lots and the cache, and
//! what a read sees.
//!
//! Nothing here does IO or knows about Raft, sled or gRPC. The Raft state machine feeds committed
//! [`Proposal`]s to [`State::apply`] in log order on every node; because a proposal carries the
//! leader's clock (`at_ms`) and apply reads no other input, every node reaches the same state.

mod cache;
mod command;
mod dedup;
mod error;
mod lots;
mod names;
mod state;

pub use cache::{
    check_ttl, check_value, CacheKey, CacheRead, CachedValue, ClaimOutcome, MAX_CACHE_BYTES, MAX_KEY_BYTES,
    MAX_LEASE_MS, MAX_TTL_MS, MAX_VALUE_BYTES,
};
pub use command::{Applied, Command, JobEffect, Proposal, Query, QueryReply, Reply};
pub use dedup::{Dedup, DedupEntry, DEDUP_MAX_ENTRIES, DEDUP_RETENTION_MS};
pub use error::DomainError;
pub use lots::{GateCount, Lot, LotSpec, LotView, Plate, Tow, Vehicle, MAX_CAPACITY, MAX_GATES, MAX_STAY_MS};
pub use names::{CounterName, LotName, RequestId};
pub use state::State;
