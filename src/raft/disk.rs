//! The one sled database of a node, with the rule that keeps it from deadlocking.
//!
//! sled 0.34 takes a global exclusive lock for `apply_batch`, while `flush` holds that lock's shared
//! side until the flushed buffer is on disk, and the lock is fair: a batch waiting behind a flush
//! blocks the readers the flush needs to finish. Concurrent batches and flushes from several tasks
//! (Raft appends, the state machine, eventual writes) hung a node under `raftlot bench`. So every
//! batch and every flush goes through [`Disk`], which never lets the two overlap.

use std::io;

use tokio::sync::RwLock;

use super::log_store::io_err;

#[derive(Clone)]
pub struct Disk {
    db: sled::Db,
    /// Held shared by flushes (any number at once) and exclusively by batches.
    gate: std::sync::Arc<RwLock<()>>,
}

impl Disk {
    pub fn new(db: sled::Db) -> Self {
        Disk { db, gate: Default::default() }
    }

    pub fn open_tree(&self, name: &str) -> io::Result<sled::Tree> {
        self.db.open_tree(name).map_err(io_err)
    }

    /// Applies `batch` to `tree` atomically.
    pub async fn batch(&self, tree: &sled::Tree, batch: sled::Batch) -> io::Result<()> {
        let _exclusive = self.gate.write().await;
        tree.apply_batch(batch).map_err(io_err)
    }

    /// Makes every write so far durable (see the README on what sled's flush guarantees).
    pub async fn flush(&self) -> io::Result<()> {
        let _shared = self.gate.read().await;
        self.db.flush_async().await.map_err(io_err)?;
        Ok(())
    }
}
