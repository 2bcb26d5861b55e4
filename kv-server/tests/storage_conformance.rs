//! openraft's storage conformance suite (`openraft::testing`) against the
//! shard log store and state machine, on RocksDB and on the in-memory engine.
//! Two shards share each engine, so a layout bug that leaks one shard's log
//! or data into another shows up as a suite failure.

use kv_server::engine::{MemEngine, RocksEngine, SharedEngine};
use kv_server::raft::log_store::ShardLogStore;
use kv_server::raft::snapshot::SnapshotDir;
use kv_server::raft::state_machine::ShardStateMachine;
use kv_server::raft::types::TypeConfig;
use kv_server::raft::wal_syncer::WalSyncer;
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::type_config::TypeConfigExt;
use openraft::StorageError;
use shoal_types::ShardId;
use std::sync::Arc;
use tempfile::TempDir;

fn storage_error(e: std::io::Error) -> StorageError<TypeConfig> {
    StorageError::read(TypeConfig::err_from_error(&e))
}

fn build(engine: SharedEngine, dir: &TempDir, shard: ShardId) -> std::io::Result<(ShardLogStore, ShardStateMachine)> {
    let syncer = WalSyncer::start(engine.clone())?;
    let snapshots = SnapshotDir::new(dir.path().join(format!("snapshots-{shard}")))?;
    let log = ShardLogStore::new(shard, engine.clone(), syncer);
    let sm = ShardStateMachine::open(shard, engine, snapshots, kv_server::ttl::ExpiryHorizons::new())?;
    Ok((log, sm))
}

/// Each build also writes through a neighbouring shard on the same engine.
async fn poison_neighbour(engine: &SharedEngine, dir: &TempDir) -> std::io::Result<()> {
    use openraft::storage::RaftLogStorage;
    let (mut neighbour, _) = build(engine.clone(), dir, ShardId(8))?;
    let vote = openraft::alias::VoteOf::<TypeConfig>::new(99, 9);
    neighbour.save_vote(&vote).await
}

/// Every RocksDB the suite opened. The test keeps a handle on each and,
/// at the end, waits until it holds the last one and closes them itself: a
/// database closed by a background thread racing process exit makes RocksDB
/// abort ("pthread lock: Invalid argument").
static OPENED: std::sync::Mutex<Vec<Arc<RocksEngine>>> = std::sync::Mutex::new(Vec::new());

fn must_close_engines() {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let held = OPENED
            .lock()
            .unwrap()
            .iter()
            .filter(|e| Arc::strong_count(e) > 1)
            .count();
        if held == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{held} engines still held by background threads"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let engines = std::mem::take(&mut *OPENED.lock().unwrap());
    drop(engines);
}

struct RocksBuilder;

impl StoreBuilder<TypeConfig, ShardLogStore, ShardStateMachine, TempDir> for RocksBuilder {
    async fn build(&self) -> Result<(TempDir, ShardLogStore, ShardStateMachine), StorageError<TypeConfig>> {
        let dir = TempDir::new().map_err(storage_error)?;
        let rocks = Arc::new(RocksEngine::open(&dir.path().join("db"), None).map_err(storage_error)?);
        OPENED.lock().unwrap().push(rocks.clone());
        let engine: SharedEngine = rocks;
        poison_neighbour(&engine, &dir).await.map_err(storage_error)?;
        let (log, sm) = build(engine, &dir, ShardId(7)).map_err(storage_error)?;
        Ok((dir, log, sm))
    }
}

struct MemBuilder;

impl StoreBuilder<TypeConfig, ShardLogStore, ShardStateMachine, TempDir> for MemBuilder {
    async fn build(&self) -> Result<(TempDir, ShardLogStore, ShardStateMachine), StorageError<TypeConfig>> {
        let dir = TempDir::new().map_err(storage_error)?;
        let engine: SharedEngine = MemEngine::new();
        poison_neighbour(&engine, &dir).await.map_err(storage_error)?;
        let (log, sm) = build(engine, &dir, ShardId(7)).map_err(storage_error)?;
        Ok((dir, log, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rocksdb_log_store_and_state_machine_pass_openraft_suite() {
    Suite::test_all(RocksBuilder).await.unwrap();
    tokio::task::spawn_blocking(must_close_engines).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_log_store_and_state_machine_pass_openraft_suite() {
    Suite::test_all(MemBuilder).await.unwrap();
}
