//! `raftlot member add|remove` and `raftlot transfer-leader`: the Cluster membership RPCs from the
//! command line, printing the membership they leave.

use crate::config::{MemberAction, MemberArgs, TransferLeaderArgs};
use crate::pb::v1::cluster_client::ClusterClient;
use crate::pb::v1::{AddNodeRequest, MembershipReply, RemoveNodeRequest, TransferLeaderRequest};

fn print_members(reply: &MembershipReply) {
    let leader = if reply.leader_id == 0 { "none".to_string() } else { reply.leader_id.to_string() };
    println!("leader {leader}, term {}, membership at log index {}", reply.term, reply.log_index);
    println!("{:<4} {:<8} {:<22} {:<22}", "ID", "KIND", "CLIENT", "PEER");
    for m in &reply.members {
        let kind = if m.voter { "voter" } else { "learner" };
        println!("{:<4} {:<8} {:<22} {:<22}", m.id, kind, m.client_addr, m.peer_addr);
    }
}

pub async fn member(args: MemberArgs) -> anyhow::Result<()> {
    let mut client = ClusterClient::new(args.access.connect(&args.endpoint).await?);
    let reply = match args.action {
        MemberAction::Add { id, client_addr, peer_addr } => {
            client.add_node(AddNodeRequest { id, client_addr, peer_addr }).await?
        }
        MemberAction::Remove { id } => client.remove_node(RemoveNodeRequest { id }).await?,
    };
    print_members(reply.get_ref());
    Ok(())
}

pub async fn transfer_leader(args: TransferLeaderArgs) -> anyhow::Result<()> {
    let mut client = ClusterClient::new(args.access.connect(&args.endpoint).await?);
    let reply = client.transfer_leader(TransferLeaderRequest { to: args.to.unwrap_or(0) }).await?;
    print_members(reply.get_ref());
    Ok(())
}
