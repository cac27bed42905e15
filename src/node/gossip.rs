//! Anti-entropy for the eventual replica: one task per peer sends it the deltas it lacks, as soon as a
//! write buffers one and on a timer, so a slow or unreachable peer never delays the others.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::crdt::gossip::{GossipAck, GossipMessage};
use crate::error::Result;
use crate::raft::network::{from_blob, to_blob};
use crate::raft::NodeId;

use super::Node;

/// The least time between two gossip sends to one peer that a write triggers.
const GOSSIP_SPACING: Duration = Duration::from_millis(2);

/// Runs anti-entropy: one task per peer, each sending what that peer lacks as soon as this node
/// buffers a delta and at least every `interval` (for acks, retries and full syncs), so a slow or
/// unreachable peer never delays the others.
pub(super) async fn gossip(node: Arc<Node>, interval: Duration, stop: CancellationToken) {
    let mut running: BTreeMap<NodeId, tokio::task::JoinHandle<()>> = BTreeMap::new();
    loop {
        let members = node.peer_members();
        running.retain(|id, task| {
            let member = members.iter().any(|(m, _)| m == id);
            if !member {
                task.abort();
            }
            member
        });
        for (id, addr) in members {
            if running.get(&id).is_some_and(|t| !t.is_finished()) {
                continue;
            }
            let (node, stop) = (node.clone(), stop.clone());
            running.insert(
                id,
                tokio::spawn(async move {
                    let mut tick = tokio::time::interval(interval);
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    // A write wakes the loop at once, but sends to one peer are at least
                    // GOSSIP_SPACING apart: an idle cluster converges in well under a millisecond,
                    // while under load the deltas of a burst share one message instead of each
                    // costing a call. A peer that just failed is tried again on the tick only.
                    let mut buffered = node.replica.subscribe();
                    let mut reachable = true;
                    let mut next_send = tokio::time::Instant::now();
                    loop {
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = tick.tick() => {}
                            Ok(()) = buffered.changed(), if reachable => {
                                tokio::time::sleep_until(next_send).await;
                            }
                        }
                        next_send = tokio::time::Instant::now() + GOSSIP_SPACING;
                        reachable = node.gossip_to(id, &addr).await;
                    }
                }),
            );
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            // Membership changes are rare; looking once a second is plenty.
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
    for task in running.into_values() {
        task.abort();
    }
}

impl Node {
    /// Merges a peer's gossip into the eventual replica.
    pub fn receive_gossip(&self, message: &GossipMessage) -> Result<GossipAck> {
        self.replica.receive(message)
    }

    /// Sends `peer` what it lacks of this node's eventual writes, if anything. False when the peer
    /// could not be reached or answered nonsense.
    async fn gossip_to(&self, peer: NodeId, addr: &str) -> bool {
        let Some(message) = self.replica.outgoing(peer) else { return true };
        let upto = message.upto;
        // A whole state may be large; a delta group is small and late ones are simply resent.
        let timeout = Duration::from_millis(if message.full { 5_000 } else { 1_000 });
        let blob = match to_blob(&message) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(peer, "cannot encode gossip: {e}");
                return false;
            }
        };
        let req = self.peers.request(blob, timeout);
        match self.peers.call(peer, addr, timeout, |mut c| async move { c.gossip(req).await }).await {
            Ok(reply) => match from_blob::<GossipAck>(&reply) {
                Ok(ack) => {
                    self.replica.acked(peer, upto, ack);
                    true
                }
                Err(e) => {
                    tracing::warn!(peer, "bad gossip ack: {e}");
                    false
                }
            },
            Err(e) => {
                tracing::debug!(peer, "gossip not delivered: {e}");
                false
            }
        }
    }
}
