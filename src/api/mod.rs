//! The servers: the public gRPC client port (Counters, Parking, Cache, Cluster, health, reflection), the
//! peer port, and the HTTP routes.
//! Each service validates its input, then calls the node; errors become a `tonic::Status` only
//! through `crate::error`. Every client call passes the metrics layer first (so refusals are counted
//! too), then the client token check; health alone skips the token, so probes need no secret.

mod auth;
mod cache;
mod cluster;
pub mod convert;
mod counters;
mod http;
pub mod metrics;
mod parking;
mod peer;

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

use self::metrics::{Metrics, RequestLayer};
use crate::config::TlsPem;

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

/// A server builder that speaks TLS when configured. The client port only proves who it is; the peer
/// port also demands a client certificate from `--tls-ca`, which makes peer links mutual TLS.
fn server(tls: Option<&TlsPem>, verify_clients: bool) -> anyhow::Result<Server> {
    let Some(tls) = tls else { return Ok(Server::builder()) };
    let mut config = ServerTlsConfig::new().identity(Identity::from_pem(&tls.cert, &tls.key));
    if verify_clients {
        config = config.client_ca_root(Certificate::from_pem(&tls.ca));
    }
    Ok(Server::builder().tls_config(config)?)
}

/// What the client port needs besides the node: who may call it and how it is measured.
pub struct ClientPort {
    pub metrics: Arc<Metrics>,
    pub token: Option<String>,
    pub tls: Option<TlsPem>,
}

pub async fn serve_client(
    node: Arc<Node>,
    port: ClientPort,
    listener: TcpListener,
    stop: CancellationToken,
) -> anyhow::Result<()> {
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
    // Reflection needs the token too, as etcd's does: it tells a stranger the whole API.
    let auth = auth::require_token(port.token.map(Arc::from));
    let layer = RequestLayer { metrics: port.metrics, node_id: node.id };
    server(port.tls.as_ref(), false)?
        .layer(layer)
        .add_service(health_service)
        .add_service(InterceptedService::new(reflection().build_v1()?, auth.clone()))
        .add_service(InterceptedService::new(reflection().build_v1alpha()?, auth.clone()))
        .add_service(InterceptedService::new(
            CountersServer::new(counters::CountersService { node: node.clone() })
                .max_decoding_message_size(MAX_CLIENT_MESSAGE),
            auth.clone(),
        ))
        .add_service(InterceptedService::new(
            ParkingServer::new(parking::ParkingService { node: node.clone() })
                .max_decoding_message_size(MAX_CLIENT_MESSAGE),
            auth.clone(),
        ))
        .add_service(InterceptedService::new(
            CacheServer::new(cache::CacheService { node: node.clone() }).max_decoding_message_size(MAX_CLIENT_MESSAGE),
            auth.clone(),
        ))
        .add_service(InterceptedService::new(
            ClusterServer::new(cluster::ClusterService { node }).max_decoding_message_size(MAX_CLIENT_MESSAGE),
            auth,
        ))
        .serve_with_incoming_shutdown(incoming(listener), stop.cancelled())
        .await?;
    Ok(())
}

pub async fn serve_peer(
    node: Arc<Node>,
    secret: Option<String>,
    tls: Option<TlsPem>,
    listener: TcpListener,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let guard = peer::guard(secret, node.identity.clone());
    let service = RaftPeerServer::new(peer::PeerService { node })
        .max_decoding_message_size(MAX_PEER_MESSAGE)
        .max_encoding_message_size(MAX_PEER_MESSAGE);
    server(tls.as_ref(), true)?
        .add_service(InterceptedService::new(service, guard))
        .serve_with_incoming_shutdown(incoming(listener), stop.cancelled())
        .await?;
    Ok(())
}
