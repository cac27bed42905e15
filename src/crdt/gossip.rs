//! Anti-entropy bookkeeping for delta-state replication (Almeida et al., algorithm 2): a buffer of
//! deltas numbered by a local sequence, what each peer has acknowledged, and the decision of what to
//! ship next. Pure: the caller owns the network and the clock.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::{Lattice, Replica};

/// Deltas kept for peers that have not acknowledged them. A peer further behind than this (down,
/// or partitioned for long) gets the whole state instead, so memory stays bounded.
pub const MAX_BUFFERED_DELTAS: usize = 10_000;

/// One gossip message, sent on the peer port.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GossipMessage {
    pub from: u64,
    /// The sender's process session; a change tells the receiver nothing, it is for diagnostics.
    pub session: u64,
    /// The sender's buffer sequence this message brings the receiver up to.
    pub upto: u64,
    /// `state` is the sender's whole replica rather than a group of deltas.
    pub full: bool,
    pub state: Replica,
}

/// The receiver's answer. Its session changes when it restarts; deltas it received before may not
/// have reached its disk, so the sender starts over with a full state.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct GossipAck {
    pub session: u64,
}

/// What to send a peer next.
#[derive(Debug, Clone, PartialEq)]
pub enum Outgoing {
    /// The whole state; the caller fills it in.
    Full {
        upto: u64,
    },
    Deltas {
        upto: u64,
        delta: Replica,
    },
}

#[derive(Debug, Clone, Copy, Default)]
struct PeerSync {
    /// Every buffered delta up to here has reached the peer; `None` until a full state did.
    acked: Option<u64>,
    session: Option<u64>,
    last_ack_ms: Option<u64>,
    last_sent_ms: Option<u64>,
}

/// How far one peer is behind this node's eventual writes, for `Cluster/Status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GossipLag {
    pub peer: u64,
    /// Deltas buffered here and not yet acknowledged by the peer.
    pub pending: u64,
    /// The next message will be a whole state (first contact, restart, or too far behind).
    pub needs_full: bool,
    /// Milliseconds since the peer last acknowledged a message; `None` if it never did.
    pub since_ack_ms: Option<u64>,
}

#[derive(Debug)]
struct Buffered {
    seq: u64,
    /// The peer this delta came from, which need not get it back.
    origin: Option<u64>,
    delta: Replica,
}

#[derive(Debug, Default)]
pub struct DeltaBuffer {
    seq: u64,
    /// Deltas up to this sequence were dropped to bound memory.
    dropped_upto: u64,
    entries: VecDeque<Buffered>,
    peers: BTreeMap<u64, PeerSync>,
}

impl DeltaBuffer {
    pub fn push(&mut self, origin: Option<u64>, delta: Replica) {
        self.seq += 1;
        self.entries.push_back(Buffered { seq: self.seq, origin, delta });
        while self.entries.len() > MAX_BUFFERED_DELTAS {
            if let Some(old) = self.entries.pop_front() {
                self.dropped_upto = old.seq;
            }
        }
    }

    /// What `peer` needs now, or `None` when it is up to date and was contacted within
    /// `keepalive_ms` (an idle peer is still contacted now and then, to notice its restart).
    pub fn outgoing(&mut self, peer: u64, now_ms: u64, keepalive_ms: u64) -> Option<Outgoing> {
        let sync = self.peers.entry(peer).or_default();
        let upto = self.seq;
        let out = match sync.acked {
            None => Outgoing::Full { upto },
            Some(acked) if acked < self.dropped_upto => Outgoing::Full { upto },
            Some(acked) if acked >= upto => {
                let idle = sync.last_sent_ms.is_none_or(|t| now_ms.saturating_sub(t) >= keepalive_ms);
                if !idle {
                    return None;
                }
                Outgoing::Deltas { upto, delta: Replica::default() }
            }
            Some(acked) => {
                let mut delta = Replica::default();
                for b in self.entries.iter().filter(|b| b.seq > acked && b.origin != Some(peer)) {
                    delta.join(&b.delta);
                }
                Outgoing::Deltas { upto, delta }
            }
        };
        sync.last_sent_ms = Some(now_ms);
        Some(out)
    }

    /// Records that `peer` (in process session `session`) acknowledged everything up to `upto`.
    pub fn acked(&mut self, peer: u64, upto: u64, session: u64, now_ms: u64) {
        let sync = self.peers.entry(peer).or_default();
        let restarted = sync.session.is_some_and(|s| s != session);
        sync.session = Some(session);
        sync.last_ack_ms = Some(now_ms);
        sync.acked = if restarted { None } else { Some(sync.acked.map_or(upto, |a| a.max(upto))) };
        self.collect();
    }

    /// Drops deltas every peer that will get deltas (rather than a full state) already has.
    fn collect(&mut self) {
        let floor = self.peers.values().filter_map(|p| p.acked).min().unwrap_or(self.seq);
        while self.entries.front().is_some_and(|b| b.seq <= floor) {
            self.entries.pop_front();
        }
    }

    pub fn lag(&self, peer: u64, now_ms: u64) -> GossipLag {
        let sync = self.peers.get(&peer).copied().unwrap_or_default();
        GossipLag {
            peer,
            pending: self.seq - sync.acked.unwrap_or(0).min(self.seq),
            needs_full: sync.acked.is_none_or(|a| a < self.dropped_upto),
            since_ack_ms: sync.last_ack_ms.map(|t| now_ms.saturating_sub(t)),
        }
    }

    pub fn buffered(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crdt::{PnCounter, ReplicaId};

    fn delta(n: i64) -> Replica {
        let r = ReplicaId { node: 1, incarnation: 0 };
        let c = PnCounter::default().add(r, n).unwrap();
        Replica { counters: [(format!("c{n}"), c)].into(), ..Replica::default() }
    }

    #[test]
    fn a_new_peer_gets_the_full_state_then_only_what_it_lacks() {
        let mut b = DeltaBuffer::default();
        b.push(None, delta(1));
        assert_eq!(b.outgoing(2, 0, 1000), Some(Outgoing::Full { upto: 1 }));
        b.acked(2, 1, 7, 0);
        assert_eq!(b.buffered(), 0, "everything acknowledged is collected");
        b.push(None, delta(2));
        b.push(Some(2), delta(3));
        match b.outgoing(2, 10, 1000) {
            Some(Outgoing::Deltas { upto: 3, delta: d }) => assert_eq!(d, delta(2), "a peer's own delta is not echoed"),
            other => panic!("unexpected {other:?}"),
        }
        b.acked(2, 3, 7, 10);
        assert_eq!(b.outgoing(2, 20, 1000), None, "up to date and recently contacted");
        assert!(matches!(b.outgoing(2, 2000, 1000), Some(Outgoing::Deltas { upto: 3, .. })), "keepalive");
    }

    #[test]
    fn a_restarted_peer_or_one_too_far_behind_gets_the_full_state() {
        let mut b = DeltaBuffer::default();
        b.outgoing(2, 0, 1000);
        b.acked(2, 0, 7, 0);
        b.push(None, delta(1));
        b.acked(2, 1, 8, 5);
        assert_eq!(b.outgoing(2, 10, 1000), Some(Outgoing::Full { upto: 1 }));
        b.acked(2, 1, 8, 10);
        // Peer 3 acknowledged once, then went silent while far more deltas than the bound arrived.
        b.outgoing(3, 0, 1000);
        b.acked(3, 1, 9, 0);
        for i in 0..(MAX_BUFFERED_DELTAS as i64 + 5) {
            b.push(None, delta(i));
        }
        assert!(b.buffered() <= MAX_BUFFERED_DELTAS);
        assert!(b.lag(3, 0).needs_full);
        assert!(matches!(b.outgoing(3, 20, 1000), Some(Outgoing::Full { .. })));
    }
}
