//! The redb store passes openraft's storage test suite: log reads, writes,
//! truncation, purging, votes, committed index, membership and snapshots.

use fleet_state::store::{self, LogStore, StateMachine};
use fleet_state::TypeConfig;
use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<u64>> {
        let dir = tempfile::tempdir().unwrap();
        let (log, sm) = store::open(&dir.path().join("raft.redb")).unwrap();
        Ok((dir, log, sm))
    }
}

#[test]
fn the_store_passes_openraft_storage_suite() {
    Suite::test_all(Builder).unwrap();
}
