//! Expired keys and tombstones are reclaimed by RocksDB compaction, and
//! only those: the horizon is the shard's apply clock and transaction floor
//! (see `kv_server::ttl`).

use kv_server::engine::{Engine, RocksEngine, WriteBatch};
use kv_server::keys::{self, ValueRecord, CF_DATA};
use kv_server::ttl::{ExpiryHorizons, Horizon};
use shoal_types::{KeyspaceId, ShardId, UshardId, Version};
use std::sync::Arc;

fn record(expires_at_ms: u64) -> Vec<u8> {
    record_at(1, expires_at_ms)
}

fn record_at(version: u64, expires_at_ms: u64) -> Vec<u8> {
    ValueRecord {
        version: Version(version),
        expires_at_ms,
        value: b"v".to_vec(),
    }
    .encode()
}

#[test]
fn compaction_drops_exactly_the_records_expired_at_the_shard_clock_and_below_its_floor() {
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
    batch.put(CF_DATA, key("deleted"), ValueRecord::tombstone(Version(3)).encode());
    batch.put(
        CF_DATA,
        key("deleted-late"),
        ValueRecord::tombstone(Version(10)).encode(),
    );
    batch.put(CF_DATA, key("expired-late"), record_at(10, 1_000));
    batch.put(CF_DATA, keys::clock_key(shard), keys::encode_u64(2_000));
    engine.write(batch).unwrap();
    horizons.set(
        shard,
        Horizon {
            clock_ms: 2_000,
            txn_floor: 10,
        },
    );
    let (start, end) = keys::shard_range(shard);
    engine.compact(CF_DATA, &start, &end).unwrap();
    assert_eq!(engine.get(CF_DATA, &key("expired")).unwrap(), None);
    assert!(engine.get(CF_DATA, &key("later")).unwrap().is_some());
    assert!(engine.get(CF_DATA, &key("forever")).unwrap().is_some());
    assert_eq!(engine.get(CF_DATA, &key("deleted")).unwrap(), None);
    // A transaction with a snapshot at the floor (10) must still see these.
    assert!(engine.get(CF_DATA, &key("deleted-late")).unwrap().is_some());
    assert!(engine.get(CF_DATA, &key("expired-late")).unwrap().is_some());
    assert!(engine.get(CF_DATA, &keys::clock_key(shard)).unwrap().is_some());
}
