//! Heat counters (docs/moves.md, "Locality"): how many writes and strong
//! reads this node served as primary, per μshard and per client region
//! ("" for clients that name none), since the previous heartbeat took
//! them. The shard manager moves μshards of akkio keyspaces by their
//! regions, and splits shards by their μshards' totals.
//!
//! Bounded: a μshard keeps at most [`MAX_REGIONS`] regions (more are
//! dropped: locality needs the leaders, not a census) and a region name at
//! most [`MAX_REGION_BYTES`] bytes. Only μshards that saw traffic since the
//! last heartbeat have an entry.

use shoal_types::heat::RegionCounts;
use shoal_types::{KeyspaceId, UshardId};
use std::collections::HashMap;
use std::sync::Mutex;

/// Regions counted per μshard.
pub const MAX_REGIONS: usize = 8;
/// Longer region names are not counted (node regions are config names).
pub const MAX_REGION_BYTES: usize = 64;

/// One μshard's counts, as the heartbeat carries them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UshardCounts {
    pub keyspace: KeyspaceId,
    pub ushard: UshardId,
    pub ops_by_region: RegionCounts,
}

#[derive(Default)]
pub struct HeatCounters {
    // One lock: an increment is a hash lookup; contention is per node, and
    // the request it counts costs a Raft round trip or a lease read.
    counts: Mutex<HashMap<(KeyspaceId, UshardId), RegionCounts>>,
}

impl HeatCounters {
    /// Counts one operation on `ushard` from a client in `region`.
    pub fn record(&self, keyspace: KeyspaceId, ushard: UshardId, region: &str) {
        self.record_each(keyspace, &[ushard], region);
    }

    /// Counts one operation on each of `ushards` (distinct) from a client
    /// in `region`, under one lock.
    pub fn record_each(&self, keyspace: KeyspaceId, ushards: &[UshardId], region: &str) {
        if region.len() > MAX_REGION_BYTES {
            return;
        }
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        for ushard in ushards {
            Self::bump(&mut counts, keyspace, *ushard, region);
        }
    }

    fn bump(
        counts: &mut HashMap<(KeyspaceId, UshardId), RegionCounts>,
        keyspace: KeyspaceId,
        ushard: UshardId,
        region: &str,
    ) {
        let regions = counts.entry((keyspace, ushard)).or_default();
        if let Some((_, n)) = regions.iter_mut().find(|(r, _)| r == region) {
            *n += 1;
        } else if regions.len() < MAX_REGIONS {
            // Lists stay as long as their regions (a Vec would round a
            // first push up to four): 10,000 μshards add up.
            regions.reserve_exact(1);
            regions.push((region.to_string(), 1));
        }
    }

    /// Roughly how many heap bytes the counters hold now (table slots,
    /// region lists, region names), from their capacities.
    pub fn approx_heap_bytes(&self) -> usize {
        let counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        shoal_types::heat::heap_bytes(&counts)
    }

    /// Everything counted since the previous call, which starts afresh.
    pub fn take(&self) -> Vec<UshardCounts> {
        let counts = std::mem::take(&mut *self.counts.lock().unwrap_or_else(|p| p.into_inner()));
        counts
            .into_iter()
            .map(|((keyspace, ushard), ops_by_region)| UshardCounts {
                keyspace,
                ushard,
                ops_by_region,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_region_until_taken_and_bounds_what_it_keeps() {
        let heat = HeatCounters::default();
        let (k, u) = (KeyspaceId(1), UshardId(7));
        for _ in 0..3 {
            heat.record(k, u, "east");
        }
        heat.record(k, u, "west");
        heat.record(k, u, &"x".repeat(MAX_REGION_BYTES + 1));
        for i in 0..20 {
            heat.record(k, UshardId(8), &format!("r{i}"));
        }
        let mut taken = heat.take();
        taken.sort_by_key(|c| c.ushard);
        assert_eq!(
            taken[0].ops_by_region,
            vec![("east".to_string(), 3), ("west".to_string(), 1)]
        );
        assert_eq!(taken[1].ops_by_region.len(), MAX_REGIONS);
        assert!(heat.take().is_empty(), "taking starts afresh");
    }

    /// The figure docs/moves.md quotes: 10,000 μshards, each with traffic
    /// from two regions, between two heartbeats.
    #[test]
    fn ten_thousand_ushards_in_two_regions_take_under_a_megabyte_and_a_half() {
        let heat = HeatCounters::default();
        for u in 0..10_000 {
            heat.record(KeyspaceId(1), UshardId(u), "us-east-1");
            heat.record(KeyspaceId(1), UshardId(u), "eu-west-1");
        }
        let bytes = heat.approx_heap_bytes();
        eprintln!(
            "node heat counters, 10,000 μshards x 2 regions: {bytes} bytes ({} per μshard)",
            bytes / 10_000
        );
        assert!(bytes < 3 << 19, "{bytes} bytes");
        heat.take();
        assert_eq!(heat.approx_heap_bytes(), 0, "taken counters free their memory");
    }
}
