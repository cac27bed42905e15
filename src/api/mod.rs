//! The servers: the public gRPC client port (Counters, Parking, Cache, Cluster, health, reflection), the
//! peer port, and the HTTP routes.
//! Each service validates its input, then calls the node; errors become a `tonic::Status` only
//! through `crate::error`.

mod cache;
mod cluster;
pub mod convert;
mod counters;
mod http;
mod parking;
mod peer;

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;

use crate::node::Node;
use crate::pb;
use crate::pb::peer::raft_peer_server::RaftPeerServer;
use crate::pb::v1::cache_server::CacheServer;
use crate::pb::v1::cluster_server::ClusterServer;
use crate::pb::v1::counters_server::CountersServer;
use crate::pb::v1::parking_server::ParkingServer;
use crate::raft::network::MAX_PEER_MESSAGE;

pub use http::serve as serve_http;

/// Client requests are small; anything bigger than this is refused before it is decoded.
const MAX_CLIENT_MESSAGE: usize = 1 << 20;

fn incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

pub async fn serve_client(node: Arc<Node>, listener: TcpListener, stop: CancellationToken) -> anyhow::Result<()> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<CountersServer<counters::CountersService>>().await;
    health.set_serving::<ClusterServer<cluster::ClusterService>>().await;
    health.set_serving::<ParkingServer<parking::ParkingService>>().await;
    health.set_serving::<CacheServer<cache::CacheService>>().await;
    // Both reflection versions: grpcurl releases before 1.9 only speak v1alpha.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    Server::builder()
        .add_service(health_service)
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?)
        .add_service(
            CountersServer::new(counters::CountersService { node: node.clone() })
                .max_decoding_message_size(MAX_CLIENT_MESSAGE),
        )
        .add_service(
            ParkingServer::new(parking::ParkingService { node: node.clone() })
                .max_decoding_message_size(MAX_CLIENT_MESSAGE),
        )
        .add_service(
            CacheServer::new(cache::CacheService { node: node.clone() }).max_decoding_message_size(MAX_CLIENT_MESSAGE),
        )
        .add_service(ClusterServer::new(cluster::ClusterService { node }).max_decoding_message_size(MAX_CLIENT_MESSAGE))
        .serve_with_incoming_shutdown(incoming(listener), stop.cancelled())
        .await?;
    Ok(())
}

pub async fn serve_peer(
    node: Arc<Node>,
    secret: Option<String>,
    listener: TcpListener,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let service = RaftPeerServer::new(peer::PeerService { node })
        .max_decoding_message_size(MAX_PEER_MESSAGE)
        .max_encoding_message_size(MAX_PEER_MESSAGE);
    Server::builder()
        .add_service(InterceptedService::new(service, peer::require_secret(secret)))
        .serve_with_incoming_shutdown(incoming(listener), stop.cancelled())
        .await?;
    Ok(())
}
