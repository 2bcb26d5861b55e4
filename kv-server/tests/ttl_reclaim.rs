//! Expired keys are reclaimed by RocksDB compaction, and only those: the
//! horizon is the shard's apply clock (see `kv_server::ttl`).

use kv_server::engine::{Engine, RocksEngine, WriteBatch};
use kv_server::keys::{self, ValueRecord, CF_DATA};
use kv_server::ttl::ExpiryHorizons;
use shoal_types::{KeyspaceId, ShardId, UshardId, Version};
use std::sync::Arc;

fn record(expires_at_ms: u64) -> Vec<u8> {
    ValueRecord {
        version: Version(1),
        expires_at_ms,
        value: b"v".to_vec(),
    }
    .encode()
}

#[test]
fn compaction_drops_exactly_the_records_expired_at_the_shard_clock() {
    let dir = tempfile::TempDir::new().unwrap();
    let horizons = ExpiryHorizons::new();
    let reclaim = horizons.clone();
    let engine = RocksEngine::open(
        &dir.path().join("db"),
        Some(Arc::new(move |key: &[u8], value: &[u8]| {
            reclaim.reclaimable(key, value)
        })),
    )
    .unwrap();
    let shard = ShardId(5);
    let key = |k: &str| keys::data_key(shard, KeyspaceId(1), UshardId(0), k.as_bytes());
    let mut batch = WriteBatch::default();
    batch.put(CF_DATA, key("expired"), record(1_000));
    batch.put(CF_DATA, key("later"), record(5_000));
    batch.put(CF_DATA, key("forever"), record(0));
    batch.put(CF_DATA, keys::clock_key(shard), keys::encode_u64(2_000));
    engine.write(batch).unwrap();
    horizons.set(shard, 2_000);
    let (start, end) = keys::shard_range(shard);
    engine.compact(CF_DATA, &start, &end).unwrap();
    assert_eq!(engine.get(CF_DATA, &key("expired")).unwrap(), None);
    assert!(engine.get(CF_DATA, &key("later")).unwrap().is_some());
    assert!(engine.get(CF_DATA, &key("forever")).unwrap().is_some());
    assert!(engine.get(CF_DATA, &keys::clock_key(shard)).unwrap().is_some());
}
