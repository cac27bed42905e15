//! The one sled database of a node, and the two rules that keep sled 0.34 from wedging under load.
//!
//! - **No batches.** `apply_batch` (and transactions) switch the whole database, for good, to a
//!   global reader-writer lock. `flush` holds its shared side while it waits for the log buffer to
//!   reach disk, and the lock is fair, so a batch queued behind a flush blocks the threads that would
//!   finish it. So every write here is a single-key insert or remove, ordered so that a crash between
//!   two of them leaves a state the code can use (each store says how).
//! - **One flush at a time.** `flush_async` parks a thread of sled's small pool until the buffer is
//!   stable, and the write that makes it stable is queued on the same pool; enough concurrent
//!   flushes starve it. So flushes are group-committed: callers that arrive while a flush runs share
//!   the next one.
//!
//! Both hung nodes under `raftlot bench` before they were rules.
//!
//! A flush runs on the calling task's own thread while flushes are quick: handing it to a blocking
//! thread and back costs two thread wake-ups per flush, which on a busy node cost more than the
//! flush itself (see `flush`).

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use super::log_store::io_err;

#[derive(Clone)]
pub struct Disk {
    db: sled::Db,
    /// Tickets handed to flush callers, in order; a caller's writes precede its ticket.
    tickets: Arc<AtomicU64>,
    /// The highest ticket a completed flush covers; the lock admits one flush at a time.
    flushed: Arc<Mutex<u64>>,
    /// How long the last flush took, in microseconds: whether the next may block its thread.
    last_flush_us: Arc<AtomicU64>,
}

/// The longest a flush may last and still be followed by one that blocks the async thread it is
/// called on. Far below the election timeout, so a node that blocks for a flush still sends its
/// heartbeats on time; far above a flush on a healthy disk (about 0.2 ms alone on the machine the
/// benchmarks ran on).
const BLOCKING_FLUSH_LIMIT: Duration = Duration::from_millis(5);

impl Disk {
    /// Opens (or creates) the database in `dir`, caching up to `cache_bytes` of it in memory.
    pub fn open(dir: &std::path::Path, cache_bytes: u64) -> io::Result<Self> {
        sled::Config::new().path(dir).cache_capacity(cache_bytes).open().map(Disk::new).map_err(io_err)
    }

    pub fn new(db: sled::Db) -> Self {
        Disk { db, tickets: Arc::default(), flushed: Arc::default(), last_flush_us: Arc::default() }
    }

    pub fn open_tree(&self, name: &str) -> io::Result<sled::Tree> {
        self.db.open_tree(name).map_err(io_err)
    }

    /// Removes a tree and its contents.
    pub fn drop_tree(&self, name: &str) -> io::Result<()> {
        self.db.drop_tree(name).map(|_| ()).map_err(io_err)
    }

    /// Flushes on this thread; only for start-up, before any other flush can run.
    pub fn flush_now(&self) -> io::Result<()> {
        self.db.flush().map(|_| ()).map_err(io_err)
    }

    /// Bytes sled occupies on disk, for the metrics.
    pub fn size_on_disk(&self) -> io::Result<u64> {
        self.db.size_on_disk().map_err(io_err)
    }

    /// Makes every write this caller made so far durable (see the README on what sled's flush
    /// guarantees), sharing one flush with every caller that arrives while another runs.
    pub async fn flush(&self) -> io::Result<()> {
        let mine = self.tickets.fetch_add(1, Ordering::SeqCst) + 1;
        let mut flushed = self.flushed.lock().await;
        if *flushed >= mine {
            return Ok(());
        }
        // Tasks already woken run first: on a leader those send the entries just appended to the
        // followers, whose flushes then overlap this one instead of waiting for it.
        tokio::task::yield_now().await;
        // Every ticket issued before this flush starts is covered by it.
        let covers = self.tickets.load(Ordering::SeqCst);
        let started = Instant::now();
        if Duration::from_micros(self.last_flush_us.load(Ordering::Relaxed)) < BLOCKING_FLUSH_LIMIT {
            // Blocks this thread, and with it the tasks that share it, for the flush; cheaper than
            // the two wake-ups of a hand-off (benches/README.md, "Flushes on the calling thread").
            self.db.flush().map_err(io_err)?;
        } else {
            // The disk is slow: the thread keeps serving while a blocking thread waits on it.
            let db = self.db.clone();
            tokio::task::spawn_blocking(move || db.flush()).await.map_err(io_err)?.map_err(io_err)?;
        }
        let took = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.last_flush_us.store(took, Ordering::Relaxed);
        *flushed = covers;
        Ok(())
    }
}

#[cfg(test)]
impl Disk {
    /// A database in `dir`, for unit tests.
    pub(crate) fn at(dir: &std::path::Path) -> Self {
        Disk::new(sled::Config::new().path(dir).open().expect("a test's sled database opens"))
    }
}
