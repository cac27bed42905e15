//! The sled log store and state machine against openraft's own storage conformance suite.

use std::sync::Arc;

use openraft::testing::log::{StoreBuilder, Suite};
use openraft::type_config::TypeConfigExt;
use openraft::StorageError;
use raftlot::raft::disk::Disk;
use raftlot::raft::log_store::LogStore;
use raftlot::raft::replica::EventualReplica;
use raftlot::raft::state_machine::StateMachine;
use raftlot::raft::TypeConfig;

struct SledBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for SledBuilder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<TypeConfig>> {
        let fail = |e: &dyn std::fmt::Display| StorageError::read(TypeConfig::err_from_string(e.to_string()));
        let dir = tempfile::TempDir::new().map_err(|e| fail(&e))?;
        let db = sled::Config::new().path(dir.path()).cache_capacity(8 << 20).open().map_err(|e| fail(&e))?;
        let disk = Disk::new(db);
        let log = LogStore::open(&disk).map_err(|e| fail(&e))?;
        let replica = Arc::new(EventualReplica::open(&disk, 1).map_err(|e| fail(&e))?);
        let sm = StateMachine::open(&disk, replica).map_err(|e| fail(&e))?;
        Ok((dir, log, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_stores_pass_the_openraft_conformance_suite() {
    if let Err(e) = Suite::test_all(SledBuilder).await {
        panic!("conformance suite failed: {e}");
    }
}
