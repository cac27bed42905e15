//! How the operator commands reach a cluster: plaintext by default, TLS when `--tls-ca` names the CA
//! the nodes' certificates chain to, and `authorization: Bearer` on every call when a client token
//! is given. Every command that dials a cluster connects here, so none of them can differ on it.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::config::read_pem;

#[derive(Debug, Clone, Default, Args)]
pub struct ClientAccess {
    /// PEM CA certificate the nodes' certificates chain to: connect with TLS (http:// endpoints
    /// become https://).
    #[arg(long = "tls-ca", env = "RAFTLOT_TLS_CA", global = true)]
    pub tls_ca: Option<PathBuf>,
    /// Bearer token for nodes started with --client-token.
    #[arg(long, env = "RAFTLOT_CLIENT_TOKEN", hide_env_values = true, global = true)]
    pub client_token: Option<String>,
}

/// A channel that adds the client token, if any, to every call.
pub type Transport = InterceptedService<Channel, BearerToken>;

#[derive(Clone)]
pub struct BearerToken(Option<MetadataValue<Ascii>>);

impl Interceptor for BearerToken {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}

impl ClientAccess {
    /// Connects to `endpoint` (`host:port` or a URI) as these options say.
    pub async fn connect(&self, endpoint: &str) -> anyhow::Result<Transport> {
        let bare = endpoint.split_once("://").map_or(endpoint, |(_, rest)| rest);
        let uri = match (&self.tls_ca, endpoint.starts_with("https://")) {
            (Some(_), _) | (None, true) => format!("https://{bare}"),
            (None, false) => format!("http://{bare}"),
        };
        let mut builder = Endpoint::from_shared(uri.clone()).with_context(|| format!("bad endpoint {endpoint}"))?;
        if let Some(ca) = &self.tls_ca {
            let ca = Certificate::from_pem(read_pem("--tls-ca", ca)?);
            builder = builder.tls_config(ClientTlsConfig::new().ca_certificate(ca))?;
        }
        let channel = crate::api::connect(&builder.connect_timeout(Duration::from_secs(2)))
            .await
            .with_context(|| format!("cannot connect to {uri}"))?;
        let token = match &self.client_token {
            Some(t) => Some(format!("Bearer {t}").parse().context("--client-token must be printable ASCII")?),
            None => None,
        };
        Ok(InterceptedService::new(channel, BearerToken(token)))
    }
}
