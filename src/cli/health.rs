//! `raftlot health`: asks a node's standard gRPC health service whether it serves, and says so in
//! the exit status. It is the container health check of an image with no shell and no grpcurl; it
//! dials like every other command (TLS with `--tls-ca`, which a TLS node's environment already sets).

use std::time::Duration;

use anyhow::{bail, Context};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::config::HealthArgs;

pub async fn health(args: HealthArgs) -> anyhow::Result<()> {
    let timeout = Duration::from_millis(args.timeout_ms);
    let check = async {
        let transport = args.access.connect(&args.endpoint).await?;
        let mut request = tonic::Request::new(HealthCheckRequest { service: args.service.clone() });
        request.set_timeout(timeout);
        let reply = HealthClient::new(transport)
            .check(request)
            .await
            .with_context(|| format!("health check of {} failed", args.endpoint))?;
        anyhow::Ok(reply.into_inner())
    };
    let reply = tokio::time::timeout(timeout, check)
        .await
        .with_context(|| format!("{} did not answer within {timeout:?}", args.endpoint))??;
    let status = ServingStatus::try_from(reply.status).unwrap_or(ServingStatus::Unknown);
    if status != ServingStatus::Serving {
        bail!("{} reports {:?} for service {:?}", args.endpoint, status, args.service);
    }
    println!("{} serving", args.endpoint);
    Ok(())
}
