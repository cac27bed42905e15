//! `raftlot.v1.Counters`: validate, then write through Raft or read at the asked consistency.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::convert;
use crate::domain::{Command, CounterName, Query, QueryReply, Reply, RequestId};
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
        let r = request.into_inner();
        let name = CounterName::parse(r.name).map_err(Error::from)?;
        let mode = convert::write_mode(r.mode)?;
        let request_id = RequestId::parse_optional(r.request_id).map_err(Error::from)?;
        let applied = self.node.write_in(mode, Command::Add { name, delta: r.delta }, request_id).await?;
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
        let r = request.into_inner();
        let name = CounterName::parse(r.name).map_err(Error::from)?;
        let consistency = convert::consistency(r.consistency)?;
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
        let consistency = convert::consistency(request.into_inner().consistency)?;
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
