//! The node's one error enum, and the one place it becomes a `tonic::Status`.
//!
//! Errors cross the peer network when a follower forwards a request to the leader, so they are plain
//! serde data: the leader's error reaches the client exactly as if it had asked the leader.

use serde::{Deserialize, Serialize};
use tonic::metadata::MetadataValue;

use crate::domain::DomainError;

/// The metadata key that names the current leader on `UNAVAILABLE`, like etcd's leader hints.
pub const LEADER_METADATA: &str = "x-raftlot-leader";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderHint {
    pub id: u64,
    pub client_addr: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// No leader, no quorum, or the request's deadline passed first. Retryable; never acknowledged.
    #[error("{reason}")]
    Unavailable { reason: String, leader: Option<LeaderHint> },
    /// This node is not the leader (or stopped being it before executing the request): the
    /// request was not executed, so a retry at the leader is safe.
    #[error("{reason}")]
    NotLeader { reason: String, leader: Option<LeaderHint> },
    /// A storage or protocol failure this node cannot recover from by itself.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub fn unavailable(reason: impl Into<String>, leader: Option<LeaderHint>) -> Self {
        Error::Unavailable { reason: reason.into(), leader }
    }

    pub fn internal(e: impl std::fmt::Display) -> Self {
        Error::Internal(e.to_string())
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        let message = e.to_string();
        match e {
            Error::Domain(DomainError::InvalidArgument { .. }) => tonic::Status::invalid_argument(message),
            Error::Domain(DomainError::Overflow { .. }) => tonic::Status::out_of_range(message),
            Error::Domain(DomainError::NotFound(_)) => tonic::Status::not_found(message),
            Error::Domain(DomainError::AlreadyExists(_)) => tonic::Status::already_exists(message),
            Error::Domain(DomainError::FailedPrecondition(_)) => tonic::Status::failed_precondition(message),
            Error::Domain(DomainError::ResourceExhausted(_)) => tonic::Status::resource_exhausted(message),
            Error::Unavailable { leader, .. } | Error::NotLeader { leader, .. } => {
                let mut status = tonic::Status::unavailable(message);
                if let Some(hint) = leader {
                    // A hint that is not valid ASCII metadata is dropped rather than failing the reply.
                    let value = format!("{}={}", hint.id, hint.client_addr);
                    if let Ok(v) = MetadataValue::try_from(value.as_str()) {
                        status.metadata_mut().insert(LEADER_METADATA, v);
                    }
                }
                status
            }
            Error::Internal(_) => tonic::Status::internal(message),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
