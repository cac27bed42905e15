//! `raftlot status`: `Cluster/Status` from any node, printed as a table.

use anyhow::Context;

use super::ClientAccess;
use crate::config::StatusArgs;
use crate::pb::v1::cluster_client::ClusterClient;
use crate::pb::v1::{StatusReply, StatusRequest};

pub async fn fetch_status(endpoint: &str, access: &ClientAccess) -> anyhow::Result<StatusReply> {
    let mut client = ClusterClient::new(access.connect(endpoint).await?);
    Ok(client.status(StatusRequest {}).await.with_context(|| format!("Cluster/Status at {endpoint}"))?.into_inner())
}

pub fn format_status(reply: &StatusReply) -> String {
    let mut out = String::new();
    let leader = if reply.leader_id == 0 { "none".to_string() } else { reply.leader_id.to_string() };
    out.push_str(&format!("leader {leader}, term {}, as seen by node {}\n", reply.term, reply.served_by));
    out.push_str(&format!(
        "{:<4} {:<12} {:>5} {:>9} {:>9} {:>9}  {:<22} {:<22}\n",
        "ID", "ROLE", "TERM", "LAST_LOG", "APPLIED", "MATCHED", "CLIENT", "PEER"
    ));
    for n in &reply.nodes {
        let matched = n.matched_index.map_or("-".to_string(), |m| m.to_string());
        out.push_str(&format!(
            "{:<4} {:<12} {:>5} {:>9} {:>9} {:>9}  {:<22} {:<22}\n",
            n.id, n.role, n.term, n.last_log_index, n.applied_index, matched, n.client_addr, n.peer_addr
        ));
    }
    out
}

pub async fn status(args: StatusArgs) -> anyhow::Result<()> {
    print!("{}", format_status(&fetch_status(&args.endpoint, &args.access).await?));
    Ok(())
}
