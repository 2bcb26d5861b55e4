//! Heat: operations per client region for one μshard, as nodes count them
//! and the shard manager adds them up (locality, docs/moves.md).

use std::collections::HashMap;

/// Operations per client region (a short list: a few regions at most).
pub type RegionCounts = Vec<(String, u64)>;

/// Roughly the heap bytes of a table of region counts, from capacities: the
/// hash table's slots (key, value and one control byte each), each list's
/// capacity, each region name's. What the heat-memory figures report.
pub fn heap_bytes<K>(table: &HashMap<K, RegionCounts>) -> usize {
    let slot = std::mem::size_of::<(K, RegionCounts)>() + 1;
    let lists: usize = table
        .values()
        .map(|regions| {
            regions.capacity() * std::mem::size_of::<(String, u64)>()
                + regions.iter().map(|(r, _)| r.capacity()).sum::<usize>()
        })
        .sum();
    table.capacity() * slot + lists
}
