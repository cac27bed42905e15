//! The Raft log and vote in sled.
//!
//! Layout: tree `log` maps a big-endian u64 index (so sled's byte order is log order) to a bincode
//! entry; tree `raft_meta` holds typed metadata keys. Invariant: every entry and vote that openraft
//! is told is stored has been flushed first, because a node that forgets a vote can vote twice in a
//! term, and a node that forgets an acknowledged entry can undo a commit.
//!
//! `append` returns as soon as the entries are written (readable, not yet durable) and hands its
//! callback to one flusher task, which flushes and then reports, in the order the log was written.
//! That lets openraft send new entries to the followers while the leader's own flush runs
//! (`broadcast_submitted_on_append`), so a commit costs one flush's time instead of two in a row.
//! A vote or a truncation waits for the same queue, so nothing is reported out of order.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};

use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use super::disk::Disk;
use super::{Entry, LogId, TypeConfig, Vote};

/// Typed keys of the `raft_meta` tree.
#[derive(Clone, Copy)]
enum MetaKey {
    Vote,
    LastPurged,
    Committed,
}

impl MetaKey {
    fn as_bytes(self) -> &'static [u8] {
        match self {
            MetaKey::Vote => b"vote",
            MetaKey::LastPurged => b"last_purged",
            MetaKey::Committed => b"committed",
        }
    }
}

pub(crate) fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

pub(crate) fn encode<T: Serialize>(value: &T) -> io::Result<Vec<u8>> {
    bincode::serialize(value).map_err(io_err)
}

pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> io::Result<T> {
    bincode::deserialize(bytes).map_err(io_err)
}

/// What the flusher makes durable, in the order the log was written.
enum Durable {
    /// Appended entries: openraft learns they are stored through the callback.
    Appended(IOFlushed<TypeConfig>),
    /// A vote or a truncation, whose caller waits.
    Waited(oneshot::Sender<io::Result<()>>),
}

/// Flushes for everything queued so far, then reports each item in queue order. Items that arrive
/// during a flush share the next one.
async fn flusher(disk: Disk, mut queue: mpsc::UnboundedReceiver<Durable>) {
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        while let Ok(next) = queue.try_recv() {
            batch.push(next);
        }
        let flushed = disk.flush().await;
        for item in batch {
            let result = flushed.as_ref().map(|_| ()).map_err(|e| io::Error::new(e.kind(), e.to_string()));
            match item {
                Durable::Appended(callback) => callback.io_completed(result),
                // A caller that stopped waiting has nothing left to learn.
                Durable::Waited(caller) => drop(caller.send(result)),
            }
        }
    }
}

fn flusher_gone() -> io::Error {
    io_err("the log flusher stopped")
}

/// Cheap to clone: sled trees are reference-counted handles, so the reader openraft asks for is the
/// same store.
#[derive(Clone)]
pub struct LogStore {
    log: sled::Tree,
    meta: sled::Tree,
    durable: mpsc::UnboundedSender<Durable>,
}

impl LogStore {
    /// Opens the trees and starts the flusher task (so it must be called inside a tokio runtime);
    /// the task ends when the last clone of the store is dropped.
    pub fn open(disk: &Disk) -> io::Result<Self> {
        let (durable, queue) = mpsc::unbounded_channel();
        tokio::spawn(flusher(disk.clone(), queue));
        Ok(LogStore { log: disk.open_tree("log")?, meta: disk.open_tree("raft_meta")?, durable })
    }

    fn get_meta<T: DeserializeOwned>(&self, key: MetaKey) -> io::Result<Option<T>> {
        match self.meta.get(key.as_bytes()).map_err(io_err)? {
            Some(bytes) => Ok(Some(decode(&bytes)?)),
            None => Ok(None),
        }
    }

    fn put_meta<T: Serialize>(&self, key: MetaKey, value: &T) -> io::Result<()> {
        self.meta.insert(key.as_bytes(), encode(value)?).map_err(io_err)?;
        Ok(())
    }

    /// Makes everything written so far durable, in turn with the appends queued before it.
    async fn flush(&self) -> io::Result<()> {
        let (done, wait) = oneshot::channel();
        self.durable.send(Durable::Waited(done)).map_err(|_| flusher_gone())?;
        wait.await.map_err(|_| flusher_gone())?
    }
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> io::Result<Vec<Entry>> {
        let start = match range.start_bound() {
            Bound::Included(i) => Bound::Included(index_key(*i)),
            Bound::Excluded(i) => Bound::Excluded(index_key(*i)),
            Bound::Unbounded => Bound::Unbounded,
        };
        let end = match range.end_bound() {
            Bound::Included(i) => Bound::Included(index_key(*i)),
            Bound::Excluded(i) => Bound::Excluded(index_key(*i)),
            Bound::Unbounded => Bound::Unbounded,
        };
        self.log.range::<[u8; 8], _>((start, end)).map(|kv| decode(&kv.map_err(io_err)?.1)).collect()
    }

    async fn read_vote(&mut self) -> io::Result<Option<Vote>> {
        self.get_meta(MetaKey::Vote)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> io::Result<LogState<TypeConfig>> {
        let last_purged_log_id: Option<LogId> = self.get_meta(MetaKey::LastPurged)?;
        let last_log_id = match self.log.last().map_err(io_err)? {
            Some((_, bytes)) => Some(decode::<Entry>(&bytes)?.log_id),
            None => last_purged_log_id,
        };
        Ok(LogState { last_purged_log_id, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> io::Result<()> {
        self.put_meta(MetaKey::Vote, vote)?;
        // Protects the vote: granting it and then forgetting it in a crash could elect two leaders in
        // one term.
        self.flush().await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> io::Result<()> {
        // Not flushed: the committed id only lets a restarted node apply sooner; losing it is safe.
        self.put_meta(MetaKey::Committed, &committed)
    }

    async fn read_committed(&mut self) -> io::Result<Option<LogId>> {
        Ok(self.get_meta::<Option<LogId>>(MetaKey::Committed)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> io::Result<()>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        // In log order, so a crash before the flush leaves a prefix of the entries, never a gap.
        for entry in entries {
            self.log.insert(index_key(entry.log_id.index), encode(&entry)?).map_err(io_err)?;
        }
        // Protects the appended entries: the leader counts this node towards a quorum as soon as the
        // callback fires, so the flusher fires it only once they survive a crash.
        if let Err(mpsc::error::SendError(Durable::Appended(callback))) = self.durable.send(Durable::Appended(callback))
        {
            callback.io_completed(Err(flusher_gone()));
            return Err(flusher_gone());
        }
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> io::Result<()> {
        let from = last_log_id.map_or(0, |id| id.index + 1);
        // From the end backwards, so a crash midway leaves a shorter log, never a hole in it.
        for key in self.log.range(index_key(from)..).keys().rev() {
            self.log.remove(key.map_err(io_err)?).map_err(io_err)?;
        }
        // Protects the truncation: conflicting entries must not come back after a crash and be
        // mistaken for the new leader's.
        self.flush().await
    }

    async fn purge(&mut self, log_id: LogId) -> io::Result<()> {
        // The purge point is recorded first, so a crash midway leaves entries that are merely
        // redundant, never a gap that the state claims to cover.
        self.put_meta(MetaKey::LastPurged, &log_id)?;
        // From the start forwards, so a crash midway leaves a log that is still contiguous.
        for key in self.log.range(..=index_key(log_id.index)).keys() {
            self.log.remove(key.map_err(io_err)?).map_err(io_err)?;
        }
        Ok(())
    }
}
