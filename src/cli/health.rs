//! `raftlot health`: asks a node's standard gRPC health service whether it serves, and says so in
//! the exit status. It is the container health check of an image with no shell and no grpcurl.

use std::time::Duration;

use anyhow::{bail, Context};
use tonic::transport::Endpoint;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::config::HealthArgs;

pub async fn health(args: HealthArgs) -> anyhow::Result<()> {
    let timeout = Duration::from_millis(args.timeout_ms);
    let endpoint = Endpoint::from_shared(args.endpoint.clone())
        .with_context(|| format!("invalid --endpoint {:?}", args.endpoint))?
        .connect_timeout(timeout)
        .timeout(timeout);
    let channel = endpoint.connect().await.with_context(|| format!("cannot connect to {}", args.endpoint))?;
    let reply = HealthClient::new(channel)
        .check(HealthCheckRequest { service: args.service.clone() })
        .await
        .with_context(|| format!("health check of {} failed", args.endpoint))?
        .into_inner();
    let status = ServingStatus::try_from(reply.status).unwrap_or(ServingStatus::Unknown);
    if status != ServingStatus::Serving {
        bail!("{} reports {:?} for service {:?}", args.endpoint, status, args.service);
    }
    println!("{} serving", args.endpoint);
    Ok(())
}
