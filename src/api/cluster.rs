//! `raftlot.v1.Cluster`: membership and replication progress as the asked node sees it.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::node::Node;
use crate::pb::v1 as pb;
use crate::pb::v1::cluster_server::Cluster;

pub struct ClusterService {
    pub node: Arc<Node>,
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn status(&self, _request: Request<pb::StatusRequest>) -> Result<Response<pb::StatusReply>, Status> {
        Ok(Response::new(self.node.cluster_view().await.into()))
    }
}
