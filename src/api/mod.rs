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
use tonic::transport::{Certificate, Channel, Endpoint, Identity, Server, ServerTlsConfig};

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

/// The TCP connector behind every channel this program opens, to peers and from the CLI and bench.
/// Its sockets set SO_REUSEADDR. A client that dials a loopback port before the server is up can
/// be handed that very port as its own source port (the cluster's ports lie in Linux's ephemeral
/// range) and connect to itself; closed, that connection stays in TIME_WAIT for a minute, and unless
/// both it and the server's listener carry SO_REUSEADDR it keeps the server from binding its port
/// for all that time. The endpoint's connect timeout still applies; its TCP settings do not, so
/// they are set here.
fn connector() -> hyper_util::client::legacy::connect::HttpConnector {
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    // The endpoint's scheme decides TLS; the connector must accept https URIs as well.
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_reuse_address(true);
    http
}

/// A channel to `endpoint` that connects on first use, through `connector`.
pub fn connect_lazy(endpoint: &Endpoint) -> Channel {
    endpoint.connect_with_connector_lazy(connector())
}

/// A channel to `endpoint`, connected now, through `connector`.
pub async fn connect(endpoint: &Endpoint) -> Result<Channel, tonic::transport::Error> {
    endpoint.connect_with_connector(connector()).await
}

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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::AsyncReadExt;

    use super::*;
    use crate::pb::v1::counters_client::CountersClient;
    use crate::pb::v1::GetRequest;

    /// A connection this program closes leaves its source port in TIME_WAIT; a listener must still be
    /// able to bind that port, as a node restarting on the port its own client once used must.
    #[tokio::test]
    async fn a_port_our_client_used_can_be_listened_on_at_once() {
        let server = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let endpoint = Endpoint::from_shared(format!("http://{}", server.local_addr().expect("addr"))).expect("uri");
        let call = tokio::spawn(async move {
            let mut client = CountersClient::new(connect_lazy(&endpoint));
            client.get(GetRequest::default()).await
        });
        let (mut accepted, client_port) = server.accept().await.expect("the client connects");
        // The client closes first, so its end of the connection is the one left in TIME_WAIT.
        call.abort();
        let mut sink = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), accepted.read_to_end(&mut sink))
            .await
            .expect("the client closes its connection")
            .expect("read");
        drop(accepted);
        TcpListener::bind(client_port).await.expect("a listener binds the port the client left in TIME_WAIT");
    }
}
