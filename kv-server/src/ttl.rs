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
//! RocksDB snapshots do not shield entries from compaction filters, so a
//! point-in-time export (a Raft snapshot being built, a digest) *pins* the
//! horizon at the clock of its view until it finishes: the export then
//! holds exactly what the state machine had at that index.

use crate::keys::{self, ValueRecord};
use dashmap::DashMap;
use shoal_types::ShardId;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

#[derive(Debug, Default)]
struct Horizon {
    clock_ms: u64,
    /// (pin id, clock when pinned) of exports in progress.
    pins: Vec<(u64, u64)>,
}

/// The apply clock of every shard open on this node.
#[derive(Debug, Default)]
pub struct ExpiryHorizons {
    by_shard: DashMap<ShardId, Horizon>,
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

    /// Records the shard's apply clock (its state machine calls this after
    /// every applied batch, open and snapshot install).
    pub fn set(&self, shard: ShardId, clock_ms: u64) {
        self.by_shard.entry(shard).or_default().clock_ms = clock_ms;
    }

    /// The shard's apply clock as last applied here.
    pub fn clock_of(&self, shard: ShardId) -> Option<u64> {
        self.by_shard.get(&shard).map(|h| h.clock_ms)
    }

    /// Pins the shard's horizon at its current clock until the pin drops.
    /// Take it before pinning an export's view: the view's clock is then at
    /// least the pinned one, so nothing the view holds can be compacted away.
    pub fn pin(self: &Arc<Self>, shard: ShardId) -> HorizonPin {
        let id = self.next_pin.fetch_add(1, Ordering::Relaxed);
        let mut horizon = self.by_shard.entry(shard).or_default();
        let clock = horizon.clock_ms;
        horizon.pins.push((id, clock));
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
    /// a user record whose expiry is at or before its shard's horizon.
    /// Metadata, and shards with no known horizon, are always kept.
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
            .map(|h| h.pins.iter().map(|(_, clock)| *clock).fold(h.clock_ms, u64::min))
        else {
            return false;
        };
        match ValueRecord::expires_at_of(value) {
            Some(expires) => expires != 0 && expires <= horizon,
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_types::{KeyspaceId, UshardId, Version};

    fn record(expires_at_ms: u64) -> Vec<u8> {
        ValueRecord {
            version: Version(1),
            expires_at_ms,
            value: b"v".to_vec(),
        }
        .encode()
    }

    #[test]
    fn only_user_records_expired_at_their_shards_clock_are_reclaimable() {
        let horizons = ExpiryHorizons::new();
        let key = keys::data_key(ShardId(3), KeyspaceId(1), UshardId(0), b"k");
        assert!(!horizons.reclaimable(&key, &record(10)), "no horizon known yet");
        horizons.set(ShardId(3), 100);
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
        horizons.set(ShardId(3), 100);
        let pin = horizons.pin(ShardId(3));
        horizons.set(ShardId(3), 500);
        assert!(horizons.reclaimable(&key, &record(100)));
        assert!(
            !horizons.reclaimable(&key, &record(300)),
            "an export pinned at 100 may hold it"
        );
        drop(pin);
        assert!(horizons.reclaimable(&key, &record(300)));
    }
}
