//! The domain's one error type. It crosses the network (a follower forwards to the leader, and the
//! outcome of a committed command is stored for deduplication), hence serde.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum DomainError {
    /// A request field is malformed; `field` is the protobuf field name.
    #[error("invalid {field}: {reason}")]
    InvalidArgument { field: String, reason: String },
    /// Checked arithmetic refused the add; nothing was applied.
    #[error("counter {name} would overflow: {value} + {delta} is outside the signed 64-bit range")]
    Overflow { name: String, value: i64, delta: i64 },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    /// The request is valid but the state refuses it now (a full lot, a shrink below occupancy).
    #[error("{0}")]
    FailedPrecondition(String),
    /// A bounded store is full (the cache); nothing was applied.
    #[error("{0}")]
    ResourceExhausted(String),
}

impl DomainError {
    pub fn invalid(field: &str, reason: impl Into<String>) -> Self {
        DomainError::InvalidArgument { field: field.to_string(), reason: reason.into() }
    }
}
