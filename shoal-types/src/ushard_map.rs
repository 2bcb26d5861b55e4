//! Which shard owns each μshard of a keyspace: the map the shard manager
//! versions and moves μshards in, that nodes enforce and clients route by.
//!
//! Stored as **runs**: each run names the shard owning its first μshard
//! and every μshard up to the next run's first. A compact keyspace is a
//! few long runs (one range per shard); an akkio keyspace may be many
//! short ones. **A map is normalised**: runs sorted by first μshard, the
//! first at 0, every first below the μshard count, no two neighbours on
//! the same shard; so equal maps compare equal.

use crate::{ShardId, UshardId};

/// How μshards may be placed in a keyspace's shards.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum Mapping {
    /// Each shard owns ranges of μshards, changed only by split and merge.
    #[default]
    Compact,
    /// Any μshard may sit in any shard of the keyspace (moved to where its
    /// traffic comes from).
    Akkio,
}

impl Mapping {
    pub fn name(self) -> &'static str {
        match self {
            Mapping::Compact => "compact",
            Mapping::Akkio => "akkio",
        }
    }

    /// The mapping named `name` ("compact" or "akkio").
    pub fn parse(name: &str) -> Option<Mapping> {
        match name {
            "compact" => Some(Mapping::Compact),
            "akkio" => Some(Mapping::Akkio),
            _ => None,
        }
    }
}

/// One run of a [`UshardMap`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct UshardRun {
    pub first: UshardId,
    pub shard: ShardId,
}

/// The μshard → shard map of one keyspace; see the module docs.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct UshardMap {
    count: u32,
    runs: Vec<UshardRun>,
}

impl UshardMap {
    /// `count` μshards over `shards` in contiguous ranges, the first
    /// shards taking one more when they do not divide evenly. `None` when
    /// there are no shards or fewer μshards than shards.
    pub fn ranges(count: u32, shards: &[ShardId]) -> Option<UshardMap> {
        let n = shards.len() as u32;
        if n == 0 || count < n {
            return None;
        }
        let (each, extra) = (count / n, count % n);
        let mut first = 0;
        let runs = shards
            .iter()
            .enumerate()
            .map(|(i, shard)| {
                let run = UshardRun {
                    first: UshardId(first),
                    shard: *shard,
                };
                first += each + u32::from((i as u32) < extra);
                run
            })
            .collect();
        UshardMap::from_runs(count, runs)
    }

    /// μshard `u` in `shards[u % shards.len()]`: the map of layouts written
    /// before maps were explicit. `None` without shards.
    pub fn modulo(count: u32, shards: &[ShardId]) -> Option<UshardMap> {
        if shards.is_empty() || count == 0 {
            return None;
        }
        let runs = (0..count)
            .map(|u| UshardRun {
                first: UshardId(u),
                shard: shards[u as usize % shards.len()],
            })
            .collect();
        UshardMap::from_runs(count, runs)
    }

    /// A map from runs as stored or sent; `None` unless they are sorted,
    /// start at 0 and stay below `count` (neighbours on one shard are
    /// merged).
    pub fn from_runs(count: u32, runs: Vec<UshardRun>) -> Option<UshardMap> {
        if count == 0 || runs.first().is_none_or(|r| r.first.0 != 0) {
            return None;
        }
        if runs.windows(2).any(|w| w[0].first >= w[1].first) || runs.iter().any(|r| r.first.0 >= count) {
            return None;
        }
        let mut map = UshardMap { count, runs };
        map.normalise();
        Some(map)
    }

    fn normalise(&mut self) {
        self.runs.dedup_by(|later, earlier| later.shard == earlier.shard);
    }

    /// How many μshards the keyspace has.
    pub fn count(&self) -> u32 {
        self.count
    }

    pub fn runs(&self) -> &[UshardRun] {
        &self.runs
    }

    /// The shard owning `ushard`; `None` when it is out of range.
    pub fn owner(&self, ushard: UshardId) -> Option<ShardId> {
        if ushard.0 >= self.count {
            return None;
        }
        let at = self.runs.partition_point(|r| r.first <= ushard);
        Some(self.runs[at - 1].shard)
    }

    /// Every μshard `shard` owns, in order.
    pub fn ushards_of(&self, shard: ShardId) -> Vec<UshardId> {
        let mut owned = Vec::new();
        for (i, run) in self.runs.iter().enumerate() {
            if run.shard == shard {
                let end = self.runs.get(i + 1).map(|r| r.first.0).unwrap_or(self.count);
                owned.extend((run.first.0..end).map(UshardId));
            }
        }
        owned
    }

    /// Every shard owning at least one μshard, in order of first appearance.
    pub fn shards(&self) -> Vec<ShardId> {
        let mut shards: Vec<ShardId> = Vec::new();
        for run in &self.runs {
            if !shards.contains(&run.shard) {
                shards.push(run.shard);
            }
        }
        shards
    }

    /// Gives `ushard` to `shard` (a move's flip). Out of range: no change.
    pub fn assign(&mut self, ushard: UshardId, shard: ShardId) {
        let Some(owner) = self.owner(ushard) else { return };
        if owner == shard {
            return;
        }
        let mut owners: Vec<(UshardId, ShardId)> = Vec::with_capacity(self.runs.len() + 2);
        let next = UshardId(ushard.0 + 1);
        for (i, run) in self.runs.iter().enumerate() {
            let end = self.runs.get(i + 1).map(|r| r.first.0).unwrap_or(self.count);
            if ushard.0 < run.first.0 || ushard.0 >= end {
                owners.push((run.first, run.shard));
                continue;
            }
            if run.first < ushard {
                owners.push((run.first, run.shard));
            }
            owners.push((ushard, shard));
            if next.0 < end {
                owners.push((next, run.shard));
            }
        }
        self.runs = owners
            .into_iter()
            .map(|(first, shard)| UshardRun { first, shard })
            .collect();
        self.normalise();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owners(map: &UshardMap) -> Vec<u64> {
        (0..map.count()).map(|u| map.owner(UshardId(u)).unwrap().0).collect()
    }

    #[test]
    fn ranges_split_evenly_with_the_remainder_first() {
        let map = UshardMap::ranges(8, &[ShardId(1), ShardId(2), ShardId(3)]).unwrap();
        assert_eq!(owners(&map), vec![1, 1, 1, 2, 2, 2, 3, 3]);
        assert_eq!(map.owner(UshardId(8)), None);
        assert_eq!(map.ushards_of(ShardId(3)), vec![UshardId(6), UshardId(7)]);
        assert!(UshardMap::ranges(2, &[ShardId(1), ShardId(2), ShardId(3)]).is_none());
        assert!(UshardMap::ranges(2, &[]).is_none());
    }

    #[test]
    fn modulo_is_the_old_static_rule() {
        let map = UshardMap::modulo(5, &[ShardId(1), ShardId(2)]).unwrap();
        assert_eq!(owners(&map), vec![1, 2, 1, 2, 1]);
    }

    #[test]
    fn assigning_one_ushard_splits_its_run_and_merges_neighbours() {
        let mut map = UshardMap::ranges(6, &[ShardId(1), ShardId(2)]).unwrap();
        map.assign(UshardId(1), ShardId(2));
        assert_eq!(owners(&map), vec![1, 2, 1, 2, 2, 2]);
        assert_eq!(map.runs().len(), 4);
        map.assign(UshardId(2), ShardId(2));
        assert_eq!(owners(&map), vec![1, 2, 2, 2, 2, 2]);
        assert_eq!(map.runs().len(), 2, "neighbours on one shard are one run");
        map.assign(UshardId(0), ShardId(2));
        assert_eq!(map.runs().len(), 1);
        assert_eq!(map.shards(), vec![ShardId(2)]);
        map.assign(UshardId(9), ShardId(1));
        assert_eq!(owners(&map), vec![2; 6], "out of range changes nothing");
    }

    #[test]
    fn runs_from_the_wire_are_checked() {
        let run = |first, shard| UshardRun {
            first: UshardId(first),
            shard: ShardId(shard),
        };
        assert!(UshardMap::from_runs(4, vec![run(1, 1)]).is_none(), "must start at 0");
        assert!(
            UshardMap::from_runs(4, vec![run(0, 1), run(0, 2)]).is_none(),
            "unsorted"
        );
        assert!(
            UshardMap::from_runs(4, vec![run(0, 1), run(4, 2)]).is_none(),
            "beyond count"
        );
        assert!(UshardMap::from_runs(0, vec![run(0, 1)]).is_none());
        let map = UshardMap::from_runs(4, vec![run(0, 1), run(2, 1), run(3, 2)]).unwrap();
        assert_eq!(map.runs().len(), 2);
        assert_eq!(owners(&map), vec![1, 1, 1, 2]);
    }
}
