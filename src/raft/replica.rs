//! The node's eventual replica in memory and in sled (tree `crdt`), with its idempotency table and
//! its gossip buffer.
//!
//! Persistence by path:
//! - An eventual write is written and flushed before the reply: that is what acknowledges it.
//! - A state received by gossip is written but not flushed; after a crash the sender's session
//!   check makes it send everything again.
//! - Committed writes are folded in memory only. Their part of the view is a function of the applied
//!   state, so start-up and snapshot install rebuild it with [`crate::crdt::Replica::reconcile`].

use std::io;
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use super::disk::Disk;
use super::log_store::{decode, encode, io_err};
use crate::crdt::gossip::{DeltaBuffer, GossipAck, GossipLag, GossipMessage, Outgoing};
use crate::crdt::{Lattice, LotReplica, PnCounter, Replica, ReplicaId};
use crate::domain::{Applied, Command, Dedup, DedupEntry, Query, QueryReply, Reply, RequestId, State};
use crate::error::Error;
use crate::now_ms;

const ACTOR: &[u8] = b"m/actor";
const COUNTER_PREFIX: &[u8] = b"c/";
const LOT_PREFIX: &[u8] = b"l/";
const DEDUP_PREFIX: &[u8] = b"d/";

/// An idle peer is still sent an empty message this often, so a restart of it is noticed.
const KEEPALIVE_MS: u64 = 1_000;

fn key(prefix: &[u8], name: &str) -> Vec<u8> {
    [prefix, name.as_bytes()].concat()
}

/// A number that differs between starts (and between data directories) with overwhelming
/// likelihood; std's hasher is seeded randomly per process.
pub(super) fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    h.write_u32(std::process::id());
    h.finish()
}

struct Inner {
    crdt: Replica,
    dedup: Dedup,
    gossip: DeltaBuffer,
}

pub struct EventualReplica {
    node: u64,
    me: ReplicaId,
    session: u64,
    inner: Mutex<Inner>,
    disk: Disk,
    tree: sled::Tree,
    /// Bumped whenever a delta is buffered, so each peer's gossip task wakes at once instead of
    /// at its next tick: the interval bounds staleness only when nothing new happens.
    buffered: tokio::sync::watch::Sender<u64>,
}

impl EventualReplica {
    /// Loads the replica, creating this data directory's actor on first start.
    pub fn open(disk: &Disk, node: u64) -> io::Result<Self> {
        let tree = disk.open_tree("crdt")?;
        let me = match tree.get(ACTOR).map_err(io_err)? {
            Some(bytes) => decode(&bytes)?,
            None => {
                let me = ReplicaId { node, incarnation: random_u64() };
                tree.insert(ACTOR, encode(&me)?).map_err(io_err)?;
                tree.flush().map_err(io_err)?;
                me
            }
        };
        if me.node != node {
            return Err(io_err(format!(
                "it was written by node {0}, not node {node}: start node {0} on it, or give node {node} an \
                 empty directory",
                me.node
            )));
        }
        let mut crdt = Replica::default();
        for kv in tree.scan_prefix(COUNTER_PREFIX) {
            let (k, v) = kv.map_err(io_err)?;
            let name = String::from_utf8_lossy(&k[COUNTER_PREFIX.len()..]).into_owned();
            crdt.counters.insert(name, decode::<PnCounter>(&v)?);
        }
        for kv in tree.scan_prefix(LOT_PREFIX) {
            let (k, v) = kv.map_err(io_err)?;
            let name = String::from_utf8_lossy(&k[LOT_PREFIX.len()..]).into_owned();
            crdt.lots.insert(name, decode::<LotReplica>(&v)?);
        }
        let mut entries = Vec::new();
        for kv in tree.scan_prefix(DEDUP_PREFIX) {
            let (_, v) = kv.map_err(io_err)?;
            entries.push(decode::<(RequestId, DedupEntry)>(&v)?);
        }
        entries.sort_by_key(|(_, e)| e.at_ms);
        let mut dedup = Dedup::default();
        for (id, e) in entries {
            dedup.restore(id, e);
        }
        let inner = Inner { crdt, dedup, gossip: DeltaBuffer::default() };
        Ok(EventualReplica {
            node,
            me,
            session: random_u64(),
            inner: Mutex::new(inner),
            disk: disk.clone(),
            tree,
            buffered: tokio::sync::watch::Sender::new(0),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every mutation joins a complete delta under the lock, so a poisoned lock still holds a
        // valid lattice state.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes `entities`, current states of whole counters and lots. Called under the lock, so two
    /// writes to one entity reach sled in the order they were joined; each record is one atomic
    /// insert and needs no batch (see `Disk` for why batches are avoided here).
    fn persist(&self, entities: &Replica) -> io::Result<()> {
        for (name, counter) in &entities.counters {
            self.tree.insert(key(COUNTER_PREFIX, name), encode(counter)?).map_err(io_err)?;
        }
        for (name, lot) in &entities.lots {
            self.tree.insert(key(LOT_PREFIX, name), encode(lot)?).map_err(io_err)?;
        }
        Ok(())
    }

    /// Applies an eventual write here; it is acknowledged once this returns `Ok`.
    pub async fn write(&self, command: &Command, request_id: Option<RequestId>) -> Result<Applied, Error> {
        let at_ms = now_ms();
        let applied = {
            let mut inner = self.lock();
            if let Some(first) = request_id.as_ref().and_then(|id| inner.dedup.get(id)) {
                return Ok(Applied { deduplicated: true, ..first.applied.clone() });
            }
            let (reply, delta) = inner.crdt.apply_eventual(self.me, command, at_ms)?;
            let applied = Applied { index: 0, outcome: Ok(reply), deduplicated: false };
            self.persist(&inner.crdt.touched(&delta)).map_err(Error::internal)?;
            // The dedup record goes after the write it describes: a crash between the two (before
            // the flush, so before any reply) leaves a write that a retry applies again, never a
            // retry answered with a write that is not there.
            if let Some(id) = request_id {
                let entry = DedupEntry { at_ms, applied: applied.clone() };
                let record = encode(&(&id, &entry)).map_err(Error::internal)?;
                self.tree.insert(key(DEDUP_PREFIX, id.as_str()), record).map_err(Error::internal)?;
                for gone in inner.dedup.insert(id, entry) {
                    self.tree.remove(key(DEDUP_PREFIX, gone.as_str())).map_err(Error::internal)?;
                }
            }
            inner.gossip.push(None, delta);
            applied
        };
        self.buffered.send_modify(|n| *n += 1);
        self.disk.flush().await.map_err(Error::internal)?;
        Ok(applied)
    }

    pub fn query(&self, query: &Query) -> QueryReply {
        self.lock().crdt.query(query, crate::now_ms())
    }

    /// Folds one committed entry; called by the state machine right after applying it.
    pub fn fold_committed(&self, index: u64, command: &Command, reply: &Reply, state: &State) {
        self.lock().crdt.fold_committed(index, command, reply, state);
    }

    /// Rebuilds the committed part of the view from `state` at `index`.
    pub fn reconcile(&self, state: &State, index: u64) {
        self.lock().crdt.reconcile(state, index);
    }

    /// The message to send `peer` now, if any.
    pub fn outgoing(&self, peer: u64) -> Option<GossipMessage> {
        let mut inner = self.lock();
        let (upto, full, state) = match inner.gossip.outgoing(peer, now_ms(), KEEPALIVE_MS)? {
            Outgoing::Full { upto } => (upto, true, inner.crdt.clone()),
            Outgoing::Deltas { upto, delta } => (upto, false, delta),
        };
        Some(GossipMessage { from: self.node, session: self.session, upto, full, state })
    }

    pub fn acked(&self, peer: u64, upto: u64, ack: GossipAck) {
        self.lock().gossip.acked(peer, upto, ack.session, now_ms());
    }

    /// Merges a peer's message. What changed here is persisted and buffered for the other peers,
    /// so a delta crosses a cut link through a third node; what changed nothing stops spreading.
    pub fn receive(&self, message: &GossipMessage) -> Result<GossipAck, Error> {
        let ack = GossipAck { session: self.session };
        if message.state.is_empty() {
            return Ok(ack);
        }
        let mut inner = self.lock();
        let before = inner.crdt.touched(&message.state);
        inner.crdt.join(&message.state);
        let after = inner.crdt.touched(&message.state);
        let changed = Replica {
            counters: after.counters.into_iter().filter(|(k, v)| before.counters.get(k) != Some(v)).collect(),
            lots: after.lots.into_iter().filter(|(k, v)| before.lots.get(k) != Some(v)).collect(),
            cache: Default::default(),
        };
        if changed.is_empty() {
            return Ok(ack);
        }
        self.persist(&changed).map_err(Error::internal)?;
        // A delta is forwarded as it came; of a full state only the entities it changed.
        let forward = if message.full { changed } else { message.state.clone() };
        inner.gossip.push(Some(message.from), forward);
        drop(inner);
        self.buffered.send_modify(|n| *n += 1);
        Ok(ack)
    }

    /// Changes whenever there is something new to gossip.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.buffered.subscribe()
    }

    pub fn lag(&self, peers: impl IntoIterator<Item = u64>) -> Vec<GossipLag> {
        let inner = self.lock();
        let now = now_ms();
        peers.into_iter().map(|p| inner.gossip.lag(p, now)).collect()
    }
}
