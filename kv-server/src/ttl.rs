//! Reclaiming expired keys. An expired record is invisible at once (reads,
//! conditions and counters all judge it by the shard's apply clock, see
//! [`crate::shard::view`]) and is dropped later by RocksDB compaction.
//!
//! Compaction must not change what a state machine decides: a condition or
//! counter applied later must see the same "absent" on every replica. So
//! the horizon compaction uses is each shard's *apply clock*, which every
//! replica advances alike and which never goes back: a record expired at
//! the horizon is expired for every command the replica will ever apply.
//!
//! Deletes leave tombstones (expired records, see [`crate::keys::ValueRecord`])
//! whose versions transactions validate against, so an expired record is
//! only dropped once its version is also below the shard's *transaction
//! floor* (replicated, raised through the log): every transaction still
//! allowed to commit has a snapshot at or above the floor, and to it a
//! record older than its snapshot and one that is gone look alike.
//!
//! RocksDB snapshots do not shield entries from compaction filters, so a
//! point-in-time export (a Raft snapshot being built, a digest) *pins* the
//! horizon at the clock of its view until it finishes: the export then
//! holds exactly what the state machine had at that index.

use crate::keys::{self, ValueRecord};
use dashmap::DashMap;
use shoal_types::ShardId;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// What compaction may drop up to: records expired at `clock_ms` whose
/// version is below `txn_floor`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Horizon {
    pub clock_ms: u64,
    pub txn_floor: u64,
}

impl Horizon {
    fn min(self, other: Horizon) -> Horizon {
        Horizon {
            clock_ms: self.clock_ms.min(other.clock_ms),
            txn_floor: self.txn_floor.min(other.txn_floor),
        }
    }
}

#[derive(Debug, Default)]
struct ShardHorizon {
    current: Horizon,
    /// (pin id, horizon when pinned) of exports in progress.
    pins: Vec<(u64, Horizon)>,
}

/// The apply clock and transaction floor of every shard open on this node.
#[derive(Debug, Default)]
pub struct ExpiryHorizons {
    by_shard: DashMap<ShardId, ShardHorizon>,
    next_pin: AtomicU64,
}

/// Holds a shard's horizon at or below its clock when pinned; dropping it
/// releases the pin.
pub struct HorizonPin {
    horizons: Arc<ExpiryHorizons>,
    shard: ShardId,
    id: u64,
}

impl Drop for HorizonPin {
    fn drop(&mut self) {
        if let Some(mut horizon) = self.horizons.by_shard.get_mut(&self.shard) {
            horizon.pins.retain(|(id, _)| *id != self.id);
        }
    }
}

impl ExpiryHorizons {
    pub fn new() -> Arc<ExpiryHorizons> {
        Arc::new(ExpiryHorizons::default())
    }

    /// Records the shard's apply clock and transaction floor (its state
    /// machine calls this after every applied batch, open and snapshot
    /// install).
    pub fn set(&self, shard: ShardId, horizon: Horizon) {
        self.by_shard.entry(shard).or_default().current = horizon;
    }

    /// The shard's apply clock as last applied here.
    pub fn clock_of(&self, shard: ShardId) -> Option<u64> {
        self.by_shard.get(&shard).map(|h| h.current.clock_ms)
    }

    /// The shard's transaction floor as last applied here.
    pub fn txn_floor_of(&self, shard: ShardId) -> Option<u64> {
        self.by_shard.get(&shard).map(|h| h.current.txn_floor)
    }

    /// Pins the shard's horizon at its current clock until the pin drops.
    /// Take it before pinning an export's view: the view's clock is then at
    /// least the pinned one, so nothing the view holds can be compacted away.
    pub fn pin(self: &Arc<Self>, shard: ShardId) -> HorizonPin {
        let id = self.next_pin.fetch_add(1, Ordering::Relaxed);
        let mut horizon = self.by_shard.entry(shard).or_default();
        let current = horizon.current;
        horizon.pins.push((id, current));
        HorizonPin {
            horizons: self.clone(),
            shard,
            id,
        }
    }

    /// Forgets a shard whose replica left this node: a replica that comes
    /// back starts over from an older clock.
    pub fn forget(&self, shard: ShardId) {
        self.by_shard.remove(&shard);
    }

    /// Whether compaction may drop this entry of the `data` column family:
    /// a user record whose expiry is at or before its shard's clock and
    /// whose version is below its shard's transaction floor. Metadata, and
    /// shards with no known horizon, are always kept.
    pub fn reclaimable(&self, key: &[u8], value: &[u8]) -> bool {
        let Some((shard, keyspace)) = keys::shard_and_keyspace_of(key) else {
            return false;
        };
        if keyspace >= keys::REPLICATED_META_KEYSPACE {
            return false;
        }
        let Some(horizon) = self
            .by_shard
            .get(&shard)
            .map(|h| h.pins.iter().map(|(_, pinned)| *pinned).fold(h.current, Horizon::min))
        else {
            return false;
        };
        match (ValueRecord::expires_at_of(value), ValueRecord::version_of(value)) {
            (Some(expires), Some(version)) => {
                expires != 0 && expires <= horizon.clock_ms && version < horizon.txn_floor
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_types::{KeyspaceId, UshardId, Version};

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

    fn at(clock_ms: u64, txn_floor: u64) -> Horizon {
        Horizon { clock_ms, txn_floor }
    }

    #[test]
    fn only_user_records_expired_at_their_shards_clock_are_reclaimable() {
        let horizons = ExpiryHorizons::new();
        let key = keys::data_key(ShardId(3), KeyspaceId(1), UshardId(0), b"k");
        assert!(!horizons.reclaimable(&key, &record(10)), "no horizon known yet");
        horizons.set(ShardId(3), at(100, 2));
        assert!(horizons.reclaimable(&key, &record(100)));
        assert!(!horizons.reclaimable(&key, &record(101)));
        assert!(!horizons.reclaimable(&key, &record(0)), "0 never expires");
        assert!(!horizons.reclaimable(&keys::clock_key(ShardId(3)), &record(1)));
        let other = keys::data_key(ShardId(4), KeyspaceId(1), UshardId(0), b"k");
        assert!(!horizons.reclaimable(&other, &record(1)), "another shard's clock");
        horizons.forget(ShardId(3));
        assert!(!horizons.reclaimable(&key, &record(1)));
    }

    #[test]
    fn a_pin_holds_the_horizon_until_it_drops() {
        let horizons = ExpiryHorizons::new();
        let key = keys::data_key(ShardId(3), KeyspaceId(1), UshardId(0), b"k");
        horizons.set(ShardId(3), at(100, 2));
        let pin = horizons.pin(ShardId(3));
        horizons.set(ShardId(3), at(500, 2));
        assert!(horizons.reclaimable(&key, &record(100)));
        assert!(
            !horizons.reclaimable(&key, &record(300)),
            "an export pinned at 100 may hold it"
        );
        drop(pin);
        assert!(horizons.reclaimable(&key, &record(300)));
    }

    #[test]
    fn tombstones_and_expired_records_stay_until_the_transaction_floor_passes_them() {
        let horizons = ExpiryHorizons::new();
        let key = keys::data_key(ShardId(3), KeyspaceId(1), UshardId(0), b"k");
        let tombstone = |version| ValueRecord::tombstone(Version(version)).encode();
        horizons.set(ShardId(3), at(1_000, 50));
        assert!(horizons.reclaimable(&key, &tombstone(49)));
        assert!(
            !horizons.reclaimable(&key, &tombstone(50)),
            "a snapshot at 50 must see it"
        );
        assert!(!horizons.reclaimable(&key, &record_at(60, 10)));
        let pin = horizons.pin(ShardId(3));
        horizons.set(ShardId(3), at(1_000, 100));
        assert!(
            !horizons.reclaimable(&key, &tombstone(60)),
            "an export pinned at floor 50 may hold it"
        );
        drop(pin);
        assert!(horizons.reclaimable(&key, &tombstone(60)));
        assert!(horizons.reclaimable(&key, &record_at(60, 10)));
    }
}
