//! The applied state in sled and in memory, and its snapshots.
//!
//! Reads are served from the in-memory `domain::State`; sled's `sm` tree mirrors it entity by entity
//! so a restart does not replay the whole log. Each apply batch is written as one sled batch together
//! with `last_applied`, so storage always holds a state that matches some applied prefix of the log;
//! it is not flushed, because the flushed log can always re-derive it.

use std::collections::HashSet;
use std::io;
use std::sync::{Arc, RwLock, RwLockReadGuard};

use futures::{Stream, TryStreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};

use super::disk::Disk;
use super::log_store::{decode, encode, io_err};
use super::replica::EventualReplica;
use super::{LogId, Snapshot, SnapshotMeta, StoredMembership, TypeConfig};
use crate::domain::{Applied, Key, Record, State};

/// Key prefixes of the `sm` tree.
const RECORD_PREFIX: u8 = b'r';
const LAST_APPLIED: &[u8] = b"m/last_applied";
const MEMBERSHIP: &[u8] = b"m/membership";
/// The one current snapshot, in tree `snapshot`.
const CURRENT_SNAPSHOT: &[u8] = b"current";

/// Everything the state machine owns in memory.
#[derive(Default)]
pub struct AppliedState {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    pub state: State,
}

/// The bytes of a snapshot: the whole domain state with the log position it reflects.
#[derive(Serialize, Deserialize)]
struct SnapshotBody {
    state: State,
}

/// Shared between openraft (which applies) and the node (which reads). The lock is held only for
/// the in-memory part of an apply batch or a read, never across IO or an await.
#[derive(Clone)]
pub struct StateMachine {
    inner: Arc<RwLock<AppliedState>>,
    /// Every committed write is folded into the eventual view as it is applied.
    replica: Arc<EventualReplica>,
    disk: Disk,
    sm: sled::Tree,
    snapshots: sled::Tree,
}

fn record_key(key: &Key) -> io::Result<Vec<u8>> {
    let mut bytes = vec![RECORD_PREFIX];
    bytes.extend(encode(key)?);
    Ok(bytes)
}

impl StateMachine {
    /// Loads the persisted applied state and brings the eventual view's committed part up to it.
    pub fn open(disk: &Disk, replica: Arc<EventualReplica>) -> io::Result<Self> {
        let sm = disk.open_tree("sm")?;
        let snapshots = disk.open_tree("snapshot")?;
        let mut records = Vec::new();
        for kv in sm.scan_prefix([RECORD_PREFIX]) {
            let (k, v) = kv.map_err(io_err)?;
            records.push((decode::<Key>(&k[1..])?, decode::<Record>(&v)?));
        }
        let last_applied = match sm.get(LAST_APPLIED).map_err(io_err)? {
            Some(b) => decode(&b)?,
            None => None,
        };
        let membership = match sm.get(MEMBERSHIP).map_err(io_err)? {
            Some(b) => decode(&b)?,
            None => StoredMembership::default(),
        };
        let inner = AppliedState { last_applied, membership, state: State::from_records(records) };
        replica.reconcile(&inner.state, last_applied.map_or(0, |id: LogId| id.index));
        Ok(StateMachine { inner: Arc::new(RwLock::new(inner)), replica, disk: disk.clone(), sm, snapshots })
    }

    /// A read view of the applied state. Poisoning cannot leave the state half-applied (apply
    /// mutates only after decoding succeeded), so a poisoned lock is still read.
    pub fn read(&self) -> RwLockReadGuard<'_, AppliedState> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, AppliedState> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    fn build(&self) -> io::Result<Snapshot> {
        let (meta, data) = {
            let applied = self.read();
            let data = encode(&SnapshotBody { state: applied.state.clone() })?;
            let meta = SnapshotMeta { last_log_id: applied.last_applied, last_membership: applied.membership.clone() };
            (meta, data)
        };
        self.snapshots.insert(CURRENT_SNAPSHOT, encode(&(&meta, &data))?).map_err(io_err)?;
        Ok(Snapshot { meta, snapshot: data })
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    type SnapshotData = Vec<u8>;

    async fn build_snapshot(&mut self) -> io::Result<Snapshot> {
        self.build()
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = Vec<u8>;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> io::Result<(Option<LogId>, StoredMembership)> {
        let applied = self.read();
        Ok((applied.last_applied, applied.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> io::Result<()>
    where
        Strm: Stream<Item = io::Result<EntryResponder<TypeConfig>>> + Unpin + OptionalSend,
    {
        let mut responses = Vec::new();
        let mut touched = Vec::new();
        let mut batch = sled::Batch::default();
        {
            let mut pending = Vec::new();
            while let Some((entry, responder)) = entries.try_next().await? {
                pending.push((entry, responder));
            }
            let mut applied = self.write();
            for (entry, responder) in pending {
                let index = entry.log_id.index;
                let reply = match &entry.payload {
                    EntryPayload::Normal(proposal) => {
                        let reply = applied.state.apply(proposal, index, &mut touched);
                        if let (Ok(outcome), false) = (&reply.outcome, reply.deduplicated) {
                            self.replica.fold_committed(index, &proposal.command, outcome, &applied.state);
                        }
                        reply
                    }
                    EntryPayload::Membership(m) => {
                        applied.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                        batch.insert(MEMBERSHIP, encode(&applied.membership)?);
                        Applied { index, ..Applied::default() }
                    }
                    EntryPayload::Blank => Applied { index, ..Applied::default() },
                };
                applied.last_applied = Some(entry.log_id);
                if let Some(r) = responder {
                    responses.push((r, reply));
                }
            }
            let unique: HashSet<&Key> = touched.iter().collect();
            for key in unique {
                match applied.state.record(key) {
                    Some(record) => batch.insert(record_key(key)?, encode(&record)?),
                    None => batch.remove(record_key(key)?),
                }
            }
            batch.insert(LAST_APPLIED, encode(&applied.last_applied)?);
        }
        self.disk.batch(&self.sm, batch).await?;
        for (responder, reply) in responses {
            responder.send(reply);
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, snapshot: Vec<u8>) -> io::Result<()> {
        let body: SnapshotBody = decode(&snapshot)?;
        let mut batch = sled::Batch::default();
        for key in self.sm.iter().keys() {
            batch.remove(key.map_err(io_err)?);
        }
        for (key, record) in body.state.records() {
            batch.insert(record_key(&key)?, encode(&record)?);
        }
        batch.insert(LAST_APPLIED, encode(&meta.last_log_id)?);
        batch.insert(MEMBERSHIP, encode(&meta.last_membership)?);
        self.disk.batch(&self.sm, batch).await?;
        self.snapshots.insert(CURRENT_SNAPSHOT, encode(&(meta, &snapshot))?).map_err(io_err)?;
        let mut applied = self.write();
        applied.state = body.state;
        self.replica.reconcile(&applied.state, meta.last_log_id.map_or(0, |id| id.index));
        applied.last_applied = meta.last_log_id;
        applied.membership = meta.last_membership.clone();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> io::Result<Option<Snapshot>> {
        match self.snapshots.get(CURRENT_SNAPSHOT).map_err(io_err)? {
            Some(bytes) => {
                let (meta, snapshot): (SnapshotMeta, Vec<u8>) = decode(&bytes)?;
                Ok(Some(Snapshot { meta, snapshot }))
            }
            None => Ok(None),
        }
    }
}
