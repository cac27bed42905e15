//! `raftlot.v1.Cache`: validate, then write through Raft or read at the asked consistency. A HELD
//! claim may wait for the holder's value on this node.

use std::sync::Arc;
use std::time::Duration;

use tonic::{Request, Response, Status};

use super::convert;
use crate::domain::{ClaimOutcome, Command, Query, QueryReply, Reply};
use crate::error::Error;
use crate::node::Node;
use crate::pb::v1 as pb;
use crate::pb::v1::cache_server::Cache;

pub struct CacheService {
    pub node: Arc<Node>,
}

fn unexpected(what: &str, reply: Reply) -> Status {
    Error::internal(format!("a cache {what} was answered with {reply:?}")).into()
}

#[tonic::async_trait]
impl Cache for CacheService {
    async fn put(&self, request: Request<pb::PutRequest>) -> Result<Response<pb::PutReply>, Status> {
        let command = convert::cache_put(request.into_inner())?;
        match self.node.write(command, None).await?.outcome.map_err(Error::from)? {
            Reply::CacheStored { key, value } => {
                Ok(Response::new(pb::PutReply { key, expires_at_ms: value.expires_at_ms, version: value.version }))
            }
            other => Err(unexpected("put", other)),
        }
    }

    async fn get(&self, request: Request<pb::CacheGetRequest>) -> Result<Response<pb::CacheGetReply>, Status> {
        let (key, consistency) = convert::cache_get(request.into_inner())?;
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
        let key = convert::cache_delete(request.into_inner())?;
        let applied = self.node.write(Command::CacheDelete { key }, None).await?;
        match applied.outcome.map_err(Error::from)? {
            Reply::CacheDeleted { key, existed } => {
                Ok(Response::new(pb::DeleteReply { key, existed, log_index: applied.index }))
            }
            other => Err(unexpected("delete", other)),
        }
    }

    async fn claim(&self, request: Request<pb::ClaimRequest>) -> Result<Response<pb::ClaimReply>, Status> {
        let (key, command, wait_ms) = convert::cache_claim(request.into_inner(), self.node.id)?;
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
                let waited = match wait_ms {
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
