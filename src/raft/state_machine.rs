//! The applied state in memory, and its snapshots in sled.
//!
//! Applying an entry does no IO: the state lives in memory, and a restart rebuilds it from the
//! current snapshot plus the committed log after it, which openraft replays. That keeps the apply
//! path fast and needs no multi-key write (see `Disk` for why there are none). The snapshot is one
//! record, so it is replaced atomically; snapshots are taken every `--snapshot-logs` entries, which
//! bounds the replay at start-up.

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
use crate::domain::{Applied, State};

/// The one current snapshot, in tree `snapshot`.
const CURRENT_SNAPSHOT: &[u8] = b"current";

/// Everything the state machine owns in memory.
#[derive(Default)]
pub struct AppliedState {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    pub state: State,
}

impl AppliedState {
    /// The index of the last entry applied, 0 before any.
    pub fn applied_index(&self) -> u64 {
        self.last_applied.as_ref().map_or(0, |id| id.index)
    }
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
    snapshots: sled::Tree,
}

impl StateMachine {
    /// Loads the current snapshot (openraft then replays the committed log after it) and brings
    /// the eventual view's committed part up to it.
    pub fn open(disk: &Disk, replica: Arc<EventualReplica>) -> io::Result<Self> {
        let snapshots = disk.open_tree("snapshot")?;
        let mut inner = AppliedState::default();
        if let Some(bytes) = snapshots.get(CURRENT_SNAPSHOT).map_err(io_err)? {
            let (meta, data): (SnapshotMeta, Vec<u8>) = decode(&bytes)?;
            let body: SnapshotBody = decode(&data)?;
            inner =
                AppliedState { last_applied: meta.last_log_id, membership: meta.last_membership, state: body.state };
        }
        replica.reconcile(&inner.state, inner.applied_index());
        Ok(StateMachine { inner: Arc::new(RwLock::new(inner)), replica, snapshots })
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
                        let reply = applied.state.apply(proposal, index, entry.log_id.leader_id.term);
                        if let (Ok(outcome), false) = (&reply.outcome, reply.deduplicated) {
                            self.replica.fold_committed(index, &proposal.command, outcome, &applied.state);
                        }
                        reply
                    }
                    EntryPayload::Membership(m) => {
                        applied.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                        Applied { index, ..Applied::default() }
                    }
                    EntryPayload::Blank => Applied { index, ..Applied::default() },
                };
                applied.last_applied = Some(entry.log_id);
                if let Some(r) = responder {
                    responses.push((r, reply));
                }
            }
        }
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
