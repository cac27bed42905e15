//! Which cluster this data directory belongs to, so that a node never mixes two clusters' data.
//!
//! The node that initialises a cluster draws a random cluster id and keeps it in sled (tree
//! `identity`). Every peer RPC carries the sender's id in the metadata `x-raftlot-cluster`; a node
//! that has none yet takes it from the first append or snapshot a leader sends it (that is how a new
//! or pre-existing member learns it), and a node that has one refuses a call carrying another with
//! `FAILED_PRECONDITION`. So a node started on another cluster's data can neither receive this
//! cluster's log nor vote in its elections, and `node::run` stops it at start-up once the other
//! members say they belong elsewhere.
//!
//! Which node wrote the directory is kept by the eventual replica's actor (`raft::replica`), which
//! refuses to open under another node id.
//!
//! The id is flushed before it is used: a node that forgot its id in a crash could take another
//! cluster's.

use std::io;
use std::sync::{Arc, RwLock};

use super::disk::Disk;
use super::log_store::io_err;
use super::replica::random_u64;

/// The metadata key that carries the sender's cluster id on every peer RPC.
pub const CLUSTER_METADATA: &str = "x-raftlot-cluster";

/// The prefix of the refusal a node sends to a caller from another cluster; callers recognise it.
pub const MISMATCH: &str = "cluster mismatch";

const CLUSTER_ID: &[u8] = b"cluster_id";

/// A cluster id as it travels: 32 lowercase hex digits.
fn well_formed(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

pub struct ClusterIdentity {
    tree: sled::Tree,
    disk: Disk,
    /// Read on every peer RPC, written at most once per process (or once per data directory).
    id: RwLock<Option<Arc<str>>>,
    /// Serialises the first write, so two concurrent appends cannot store two ids.
    writing: tokio::sync::Mutex<()>,
}

impl ClusterIdentity {
    pub fn open(disk: &Disk) -> io::Result<Self> {
        let tree = disk.open_tree("identity")?;
        let id = match tree.get(CLUSTER_ID).map_err(io_err)? {
            Some(bytes) => Some(Arc::from(String::from_utf8(bytes.to_vec()).map_err(io_err)?)),
            None => None,
        };
        Ok(ClusterIdentity { tree, disk: disk.clone(), id: RwLock::new(id), writing: Default::default() })
    }

    /// This directory's cluster id, if it has one.
    pub fn get(&self) -> Option<Arc<str>> {
        self.id.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Stores `id` unless an id is already stored; returns the one in force.
    async fn store(&self, id: &str) -> io::Result<Arc<str>> {
        let _writing = self.writing.lock().await;
        if let Some(existing) = self.get() {
            return Ok(existing);
        }
        self.tree.insert(CLUSTER_ID, id.as_bytes()).map_err(io_err)?;
        self.disk.flush().await?;
        let id: Arc<str> = Arc::from(id);
        *self.id.write().unwrap_or_else(|p| p.into_inner()) = Some(id.clone());
        Ok(id)
    }

    /// Draws a new cluster id, for the node that initialises a cluster (unless it has one).
    pub async fn create(&self) -> io::Result<Arc<str>> {
        self.store(&format!("{:016x}{:016x}", random_u64(), random_u64())).await
    }

    /// Takes the id a leader sent, if this node has none yet. A malformed id is ignored, never
    /// stored.
    pub async fn adopt(&self, given: Option<&str>) -> io::Result<()> {
        match given {
            Some(id) if self.get().is_none() && well_formed(id) => {
                let id = self.store(id).await?;
                tracing::info!(cluster_id = %id, "joined cluster");
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Whether a caller sending `given` may talk to this node: refused only when both sides know
    /// their cluster and the two differ. The reason names both ids.
    pub fn check(&self, given: Option<&str>) -> Result<(), String> {
        match (self.get(), given) {
            (Some(mine), Some(theirs)) if *mine != *theirs => {
                Err(format!("{MISMATCH}: this node's data belongs to cluster {mine}, the caller's to cluster {theirs}"))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_id_is_kept_adopted_once_and_checked() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ours = "0123456789abcdef0123456789abcdef";
        {
            let identity = ClusterIdentity::open(&Disk::at(dir.path())).expect("open");
            assert_eq!(identity.get(), None);
            assert!(identity.check(Some(ours)).is_ok(), "a node without an id accepts anyone");
            identity.adopt(Some("not-an-id")).await.expect("ignored");
            assert_eq!(identity.get(), None);
            identity.adopt(Some(ours)).await.expect("adopt");
            identity.adopt(Some("fedcba9876543210fedcba9876543210")).await.expect("ignored");
            assert!(identity.check(Some(ours)).is_ok());
            assert!(identity.check(None).is_ok(), "a caller without an id is not refused");
            let refusal = identity.check(Some("fedcba9876543210fedcba9876543210")).unwrap_err();
            assert!(refusal.starts_with(MISMATCH) && refusal.contains(ours), "{refusal}");
        }
        let reopened = ClusterIdentity::open(&Disk::at(dir.path())).expect("reopen");
        assert_eq!(reopened.get().as_deref(), Some(ours), "the id survives a restart");
        assert_eq!(&*reopened.create().await.expect("create"), ours, "create keeps an existing id");
    }

    #[tokio::test]
    async fn created_ids_are_well_formed_and_differ() {
        let (a, b) = (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"));
        let first = ClusterIdentity::open(&Disk::at(a.path())).expect("open").create().await.expect("create");
        let second = ClusterIdentity::open(&Disk::at(b.path())).expect("open").create().await.expect("create");
        assert!(well_formed(&first) && well_formed(&second), "{first} {second}");
        assert_ne!(first, second);
    }
}
