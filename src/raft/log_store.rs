//! The Raft log and vote in sled.
//!
//! Layout: tree `log_runs` maps a big-endian u64 index (so sled's byte order is log order) to a
//! run: the bincode entries of one `append`, the first at that index. One record per append, not
//! per entry, because sled's per-key insert and remove were a sixth of a busy leader's CPU. A run
//! ends where the next begins. Tree `raft_meta` holds typed metadata keys. Invariant: every entry
//! and vote that openraft is told is stored has been flushed first, because a node that forgets a
//! vote can vote twice in a term, and a node that forgets an acknowledged entry can undo a commit.
//!
//! `append` returns as soon as the entries are written (readable, not yet durable) and hands its
//! callback to one flusher task, which flushes and then reports, in the order the log was written.
//! That lets openraft send new entries to the followers while the leader's own flush runs
//! (`broadcast_submitted_on_append`), so a commit costs one flush's time instead of two in a row.
//! A vote or a truncation waits for the same queue, so nothing is reported out of order.
//!
//! The newest entries are also kept in memory (`tail`), because nearly every read is of them:
//! replication sends what was just appended and the state machine applies what was just committed.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

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
    /// The first index not purged. Reads start there: a purge leaves the run it falls in behind.
    kept_from: Arc<AtomicU64>,
    durable: mpsc::UnboundedSender<Durable>,
    /// The newest entries, also in sled: replication and apply read what was just appended, and
    /// serving them from memory spares a sled lookup and the decoding of a whole run to take a few
    /// of its entries. Always a contiguous suffix of the log (or empty), so a read from an index it
    /// holds can be answered from it alone.
    tail: Arc<Mutex<VecDeque<Entry>>>,
    voted: VotedTerm,
}

/// The highest term this node has voted in or followed a leader of, raised before the vote that
/// moves it is saved. openraft saves a vote before it grants it or accepts a leader of that term,
/// so when this is read the node has taken part in no later term than it shows: what a leader
/// needs to count a forwarded read as this node's acknowledgement.
#[derive(Clone, Default)]
pub struct VotedTerm(Arc<AtomicU64>);

impl VotedTerm {
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// The most entries the tail keeps, a few hundred KiB: well beyond how far replication and apply
/// trail the newest entry in a healthy cluster, even at full speed (about 15,000 writes a second).
const TAIL_ENTRIES: usize = 4096;

impl LogStore {
    /// Opens the trees and starts the flusher task (so it must be called inside a tokio runtime);
    /// the task ends when the last clone of the store is dropped.
    pub fn open(disk: &Disk) -> io::Result<Self> {
        let log = disk.open_tree("log_runs")?;
        migrate_entry_per_key(disk, &log)?;
        let (durable, queue) = mpsc::unbounded_channel();
        tokio::spawn(flusher(disk.clone(), queue));
        let meta = disk.open_tree("raft_meta")?;
        let store = LogStore {
            log,
            meta,
            kept_from: Arc::default(),
            durable,
            tail: Arc::default(),
            voted: VotedTerm::default(),
        };
        let purged: Option<LogId> = store.get_meta(MetaKey::LastPurged)?;
        store.kept_from.store(purged.map_or(0, |id| id.index + 1), Ordering::SeqCst);
        let vote: Option<Vote> = store.get_meta(MetaKey::Vote)?;
        store.voted.0.store(vote.map_or(0, |v| v.leader_id().term), Ordering::SeqCst);
        Ok(store)
    }

    pub fn voted_term(&self) -> VotedTerm {
        self.voted.clone()
    }

    /// The run holding `index`, or failing that the first run after it, and every run after that.
    fn runs_from(&self, index: u64) -> io::Result<impl Iterator<Item = io::Result<(u64, Vec<u8>)>>> {
        let from = match self.log.range(..=index_key(index)).next_back() {
            Some(kv) => kv.map_err(io_err)?.0.to_vec(),
            None => index_key(index).to_vec(),
        };
        Ok(self.log.range(from..).map(|kv| {
            let (key, value) = kv.map_err(io_err)?;
            Ok((key_index(&key)?, value.to_vec()))
        }))
    }

    fn tail(&self) -> MutexGuard<'_, VecDeque<Entry>> {
        self.tail.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The entries from `from` on, up to `past`, if the tail holds `from`.
    fn read_tail(&self, from: u64, past: impl Fn(u64) -> bool) -> Option<Vec<Entry>> {
        let tail = self.tail();
        let first = tail.front()?.log_id.index;
        let last = tail.back()?.log_id.index;
        if from < first || from > last {
            return None;
        }
        let skip = usize::try_from(from - first).ok()?;
        Some(tail.iter().skip(skip).take_while(|e| !past(e.log_id.index)).cloned().collect())
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

fn key_index(key: &[u8]) -> io::Result<u64> {
    let bytes: [u8; 8] = key.try_into().map_err(|_| io_err(format!("a log key of {} bytes", key.len())))?;
    Ok(u64::from_be_bytes(bytes))
}

/// Rewrites a log stored one entry per key (tree `log`, before runs) as one run per entry, then
/// drops the old tree. The new tree is flushed before the old one goes, and a crash before that
/// starts the copy over, so no entry is ever in neither.
fn migrate_entry_per_key(disk: &Disk, runs: &sled::Tree) -> io::Result<()> {
    let old = disk.open_tree("log")?;
    if old.is_empty() {
        return Ok(());
    }
    runs.clear().map_err(io_err)?;
    for kv in old.iter() {
        let (key, value) = kv.map_err(io_err)?;
        let entry: Entry = decode(&value)?;
        runs.insert(key, encode(&vec![entry])?).map_err(io_err)?;
    }
    disk.flush_now()?;
    disk.drop_tree("log")
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> io::Result<Vec<Entry>> {
        let from = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let from = from.max(self.kept_from.load(Ordering::SeqCst));
        let past = |index: u64| match range.end_bound() {
            Bound::Included(i) => index > *i,
            Bound::Excluded(i) => index >= *i,
            Bound::Unbounded => false,
        };
        if let Some(entries) = self.read_tail(from, past) {
            return Ok(entries);
        }
        let mut entries = Vec::new();
        for run in self.runs_from(from)? {
            let (start, bytes) = run?;
            if past(start) {
                break;
            }
            let run: Vec<Entry> = decode(&bytes)?;
            entries.extend(run.into_iter().filter(|e| e.log_id.index >= from && !past(e.log_id.index)));
        }
        Ok(entries)
    }

    async fn read_vote(&mut self) -> io::Result<Option<Vote>> {
        self.get_meta(MetaKey::Vote)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> io::Result<LogState<TypeConfig>> {
        let last_purged_log_id: Option<LogId> = self.get_meta(MetaKey::LastPurged)?;
        let last_entry = match self.log.last().map_err(io_err)? {
            Some((_, bytes)) => decode::<Vec<Entry>>(&bytes)?.last().map(|e| e.log_id),
            None => None,
        };
        // A purge can leave its last run behind with only purged entries in it.
        let last_log_id = last_entry.max(last_purged_log_id);
        Ok(LogState { last_purged_log_id, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> io::Result<()> {
        self.voted.0.fetch_max(vote.leader_id().term, Ordering::SeqCst);
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
        // One insert, so a crash before the flush leaves the whole run or none of it, never a gap.
        let run: Vec<Entry> = entries.into_iter().collect();
        if let Some(first) = run.first() {
            self.log.insert(index_key(first.log_id.index), encode(&run)?).map_err(io_err)?;
            let mut tail = self.tail();
            if tail.back().is_some_and(|last| last.log_id.index + 1 != first.log_id.index) {
                tail.clear();
            }
            tail.extend(run);
            let excess = tail.len().saturating_sub(TAIL_ENTRIES);
            tail.drain(..excess);
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
        self.tail().retain(|e| e.log_id.index < from);
        // Whole runs from the end backwards, then the run the cut falls in is rewritten shorter, so
        // a crash midway leaves a shorter log, never a hole in it.
        let mut straddling = None;
        for run in self.runs_from(from)?.collect::<Vec<_>>().into_iter().rev() {
            let (start, bytes) = run?;
            if start >= from {
                self.log.remove(index_key(start)).map_err(io_err)?;
            } else {
                straddling = Some((start, bytes));
            }
        }
        if let Some((start, bytes)) = straddling {
            let mut run: Vec<Entry> = decode(&bytes)?;
            let len = run.len();
            run.retain(|e| e.log_id.index < from);
            if run.len() < len {
                self.log.insert(index_key(start), encode(&run)?).map_err(io_err)?;
            }
        }
        // Protects the truncation: conflicting entries must not come back after a crash and be
        // mistaken for the new leader's.
        self.flush().await
    }

    async fn purge(&mut self, log_id: LogId) -> io::Result<()> {
        // The purge point is recorded first, so a crash midway leaves entries that are merely
        // redundant, never a gap that the state claims to cover.
        self.put_meta(MetaKey::LastPurged, &log_id)?;
        let kept_from = log_id.index + 1;
        self.kept_from.fetch_max(kept_from, Ordering::SeqCst);
        self.tail().retain(|e| e.log_id.index >= kept_from);
        // Whole runs, from the start forwards, so a crash midway leaves a log that is still
        // contiguous. A run ends where the next begins; the run the purge point falls in stays
        // until a later purge passes it (reads never ask below the purge point).
        let starts: Vec<u64> = self
            .log
            .range(..=index_key(kept_from))
            .keys()
            .map(|key| key_index(&key.map_err(io_err)?))
            .collect::<io::Result<_>>()?;
        for pair in starts.windows(2) {
            if pair[1] <= kept_from {
                self.log.remove(index_key(pair[0])).map_err(io_err)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use openraft::testing::blank_ent;

    use super::*;

    #[tokio::test]
    async fn a_log_stored_entry_per_key_is_rewritten_as_runs() {
        let dir = tempfile::tempdir().expect("temp dir");
        let old: Vec<Entry> = (1..=3).map(|i| blank_ent::<TypeConfig>(1, 1, i)).collect();
        {
            let disk = Disk::at(dir.path());
            let tree = disk.open_tree("log").expect("old tree");
            for entry in &old {
                tree.insert(index_key(entry.log_id.index), encode(entry).expect("encode")).expect("insert");
            }
            disk.flush_now().expect("flush");
        }
        let disk = Disk::at(dir.path());
        let mut store = LogStore::open(&disk).expect("open");
        assert_eq!(store.try_get_log_entries(0..10).await.expect("read"), old);
        assert_eq!(store.get_log_state().await.expect("state").last_log_id, Some(old[2].log_id));
        assert!(disk.open_tree("log").expect("tree").is_empty(), "the old tree is gone");
    }

    fn indexes(entries: Vec<Entry>) -> Vec<u64> {
        entries.iter().map(|e| e.log_id.index).collect()
    }

    /// What `store` answers for `range`, after checking that its tail and sled agree on it.
    async fn read(store: &LogStore, range: std::ops::Range<u64>) -> Vec<u64> {
        let from_tail = indexes(store.clone().try_get_log_entries(range.clone()).await.expect("read"));
        let mut sled_only = LogStore { tail: Arc::default(), ..store.clone() };
        let from_sled = indexes(sled_only.try_get_log_entries(range.clone()).await.expect("read"));
        assert_eq!(from_tail, from_sled, "the tail and sled disagree on {range:?}");
        from_tail
    }

    #[tokio::test]
    async fn runs_are_cut_and_purged_at_any_index() {
        let dir = tempfile::tempdir().expect("temp dir");
        let disk = Disk::at(dir.path());
        let mut store = LogStore::open(&disk).expect("open");
        for run in [1..4, 4..8, 8..10] {
            store.append(run.map(|i| blank_ent::<TypeConfig>(1, 1, i)), IOFlushed::noop()).await.expect("append");
        }
        store.flush().await.expect("flush");
        assert_eq!(read(&store, 2..9).await, (2..9).collect::<Vec<_>>());
        assert_eq!(read(&store, 0..100).await, (1..10).collect::<Vec<_>>());

        // The cut falls inside the second run: it is rewritten, the third removed.
        store.truncate_after(Some(blank_ent::<TypeConfig>(1, 1, 5).log_id)).await.expect("truncate");
        assert_eq!(read(&store, 0..100).await, vec![1, 2, 3, 4, 5]);
        assert_eq!(store.log.len(), 2);

        // New entries after the cut continue the tail.
        store.append((6..8).map(|i| blank_ent::<TypeConfig>(2, 1, i)), IOFlushed::noop()).await.expect("append");
        assert_eq!(read(&store, 4..100).await, vec![4, 5, 6, 7]);
        store.truncate_after(Some(blank_ent::<TypeConfig>(1, 1, 5).log_id)).await.expect("truncate");

        // The purge point falls inside the second run: the first goes, the second stays hidden below 5.
        store.purge(blank_ent::<TypeConfig>(1, 1, 4).log_id).await.expect("purge");
        assert_eq!(read(&store, 0..100).await, vec![5]);
        assert_eq!(store.log.len(), 1);
        let state = store.get_log_state().await.expect("state");
        assert_eq!(state.last_log_id.map(|id| id.index), Some(5));

        // Reopened, the purge point still hides the purged entries.
        drop(store);
        let store = LogStore::open(&disk).expect("reopen");
        assert_eq!(read(&store, 0..100).await, vec![5]);
    }

    /// The tail keeps only the newest entries; a read that starts below it comes from sled whole.
    #[tokio::test]
    async fn the_tail_is_bounded_and_reads_below_it_come_from_sled() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut store = LogStore::open(&Disk::at(dir.path())).expect("open");
        let last = TAIL_ENTRIES as u64 + 100;
        for start in (1..=last).step_by(7) {
            let run = (start..(start + 7).min(last + 1)).map(|i| blank_ent::<TypeConfig>(1, 1, i));
            store.append(run, IOFlushed::noop()).await.expect("append");
        }
        assert_eq!(store.tail().len(), TAIL_ENTRIES);
        assert_eq!(store.tail().front().map(|e| e.log_id.index), Some(last + 1 - TAIL_ENTRIES as u64));
        assert_eq!(read(&store, 50..last + 1).await, (50..=last).collect::<Vec<_>>());
        assert_eq!(read(&store, last - 3..last + 10).await, (last - 3..=last).collect::<Vec<_>>());
    }
}
