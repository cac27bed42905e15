//! `raftlot.v1.Cache`: validate, then write through Raft or read at the asked consistency. A HELD
//! claim may wait for the holder's value on this node.

use std::sync::Arc;
use std::time::Duration;

use tonic::{Request, Response, Status};

use super::convert;
use crate::domain::{
    check_ttl, check_value, CacheKey, ClaimOutcome, Command, DomainError, Query, QueryReply, Reply, MAX_LEASE_MS,
    MAX_TTL_MS,
};
use crate::error::Error;
use crate::node::Node;
use crate::pb::v1 as pb;
use crate::pb::v1::cache_server::Cache;

const MAX_HOLDER_BYTES: usize = 128;
const MAX_TOKEN_BYTES: usize = 64;
/// A claim waits at most this long for a value, and never past the node's request deadline.
const MAX_WAIT_MS: u64 = 60_000;

pub struct CacheService {
    pub node: Arc<Node>,
}

fn key(value: String) -> Result<CacheKey, Status> {
    Ok(CacheKey::parse(value).map_err(Error::from)?)
}

/// A free-text field from the network: bounded and printable, so it can be shown to other callers.
fn text(field: &str, value: String, max: usize) -> Result<String, Status> {
    if value.len() > max {
        return Err(
            Error::from(DomainError::invalid(field, format!("is {} bytes, the limit is {max}", value.len()))).into()
        );
    }
    if let Some(bad) = value.chars().find(|c| c.is_control()) {
        return Err(Error::from(DomainError::invalid(field, format!("contains the control character {bad:?}"))).into());
    }
    Ok(value)
}

fn unexpected(what: &str, reply: Reply) -> Status {
    Error::internal(format!("a cache {what} was answered with {reply:?}")).into()
}

#[tonic::async_trait]
impl Cache for CacheService {
    async fn put(&self, request: Request<pb::PutRequest>) -> Result<Response<pb::PutReply>, Status> {
        let r = request.into_inner();
        let key = key(r.key)?;
        check_value(&r.value).map_err(Error::from)?;
        check_ttl("ttl_ms", r.ttl_ms, MAX_TTL_MS).map_err(Error::from)?;
        let token = text("claim_token", r.claim_token, MAX_TOKEN_BYTES)?;
        let token = (!token.is_empty()).then_some(token);
        let command = Command::CachePut { key, value: r.value, ttl_ms: r.ttl_ms, token };
        match self.node.write(command, None).await?.outcome.map_err(Error::from)? {
            Reply::CacheStored { key, value } => {
                Ok(Response::new(pb::PutReply { key, expires_at_ms: value.expires_at_ms, version: value.version }))
            }
            other => Err(unexpected("put", other)),
        }
    }

    async fn get(&self, request: Request<pb::CacheGetRequest>) -> Result<Response<pb::CacheGetReply>, Status> {
        let r = request.into_inner();
        let key = key(r.key)?;
        let consistency = convert::consistency(r.consistency)?;
        let result = self.node.read(Query::Cache(key.clone()), consistency).await?;
        let QueryReply::Cache(read) = result.reply else {
            return Err(Error::internal("a cache get was answered with another read").into());
        };
        let mut reply = pb::CacheGetReply {
            key: key.as_str().to_string(),
            removed_at_index: read.removed_at_index.unwrap_or(0),
            meta: Some(result.meta.into()),
            ..Default::default()
        };
        if let Some(v) = read.value {
            reply.found = true;
            reply.value = v.value;
            reply.expires_at_ms = v.expires_at_ms;
            reply.version = v.version;
        }
        Ok(Response::new(reply))
    }

    async fn delete(&self, request: Request<pb::DeleteRequest>) -> Result<Response<pb::DeleteReply>, Status> {
        let key = key(request.into_inner().key)?;
        let applied = self.node.write(Command::CacheDelete { key }, None).await?;
        match applied.outcome.map_err(Error::from)? {
            Reply::CacheDeleted { key, existed } => {
                Ok(Response::new(pb::DeleteReply { key, existed, log_index: applied.index }))
            }
            other => Err(unexpected("delete", other)),
        }
    }

    async fn claim(&self, request: Request<pb::ClaimRequest>) -> Result<Response<pb::ClaimReply>, Status> {
        let r = request.into_inner();
        let key = key(r.key)?;
        check_ttl("lease_ms", r.lease_ms, MAX_LEASE_MS).map_err(Error::from)?;
        let holder = text("holder", r.holder, MAX_HOLDER_BYTES)?;
        let holder = if holder.is_empty() { format!("client of node {}", self.node.id) } else { holder };
        if r.wait_ms > MAX_WAIT_MS {
            return Err(
                Error::from(DomainError::invalid("wait_ms", format!("{} is above {MAX_WAIT_MS}", r.wait_ms))).into()
            );
        }
        let command = Command::CacheClaim { key: key.clone(), lease_ms: r.lease_ms, holder };
        let applied = self.node.write(command, None).await?;
        let outcome = match applied.outcome.map_err(Error::from)? {
            Reply::Claimed { outcome, .. } => outcome,
            other => return Err(unexpected("claim", other)),
        };
        let mut reply =
            pb::ClaimReply { key: key.as_str().to_string(), log_index: applied.index, ..Default::default() };
        let hit = |reply: &mut pb::ClaimReply, v: crate::domain::CachedValue| {
            reply.status = pb::ClaimStatus::Hit as i32;
            reply.value = v.value;
            reply.expires_at_ms = v.expires_at_ms;
            reply.version = v.version;
        };
        match outcome {
            ClaimOutcome::Hit(v) => hit(&mut reply, v),
            ClaimOutcome::Granted { token, expires_at_ms } => {
                reply.status = pb::ClaimStatus::Granted as i32;
                reply.claim_token = token;
                reply.expires_at_ms = expires_at_ms;
            }
            ClaimOutcome::Held { holder, expires_at_ms } => {
                let waited = match r.wait_ms {
                    0 => None,
                    ms => self.node.wait_for_cached(&key, Duration::from_millis(ms)).await,
                };
                match waited {
                    Some(v) => hit(&mut reply, v),
                    None => {
                        reply.status = pb::ClaimStatus::Held as i32;
                        reply.holder = holder;
                        reply.expires_at_ms = expires_at_ms;
                    }
                }
            }
        }
        Ok(Response::new(reply))
    }
}
