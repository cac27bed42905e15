//! `raftlot.v1.Counters`: validate, then write through Raft or read at the asked consistency.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::convert;
use crate::domain::{Query, QueryReply, Reply};
use crate::error::Error;
use crate::node::Node;
use crate::pb::v1 as pb;
use crate::pb::v1::counters_server::Counters;

pub struct CountersService {
    pub node: Arc<Node>,
}

#[tonic::async_trait]
impl Counters for CountersService {
    async fn add(&self, request: Request<pb::AddRequest>) -> Result<Response<pb::AddReply>, Status> {
        let convert::Write { mode, command, request_id } = convert::add(request.into_inner())?;
        let applied = self.node.write_in(mode, command, request_id).await?;
        match applied.outcome.map_err(Error::from)? {
            Reply::Added { name, value } => Ok(Response::new(pb::AddReply {
                name,
                value,
                log_index: applied.index,
                deduplicated: applied.deduplicated,
                mode: convert::write_mode_to_pb(mode),
                served_by: self.node.id,
            })),
            other => Err(Error::internal(format!("an add was answered with {other:?}")).into()),
        }
    }

    async fn get(&self, request: Request<pb::GetRequest>) -> Result<Response<pb::GetReply>, Status> {
        let (name, consistency) = convert::get(request.into_inner())?;
        let result = self.node.read(Query::Counter(name.clone()), consistency).await?;
        match result.reply {
            QueryReply::Counter { value, exists } => Ok(Response::new(pb::GetReply {
                name: name.as_str().to_string(),
                value,
                exists,
                meta: Some(result.meta.into()),
            })),
            other => Err(Error::internal(format!("a get was answered with {other:?}")).into()),
        }
    }

    async fn list(&self, request: Request<pb::ListRequest>) -> Result<Response<pb::ListReply>, Status> {
        let consistency = convert::list(request.into_inner())?;
        let result = self.node.read(Query::Counters, consistency).await?;
        match result.reply {
            QueryReply::Counters(all) => Ok(Response::new(pb::ListReply {
                counters: all.into_iter().map(|(name, value)| pb::Counter { name, value }).collect(),
                meta: Some(result.meta.into()),
            })),
            other => Err(Error::internal(format!("a list was answered with {other:?}")).into()),
        }
    }
}
