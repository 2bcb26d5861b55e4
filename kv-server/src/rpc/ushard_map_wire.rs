//! The μshard map on the wire: runs and the mapping policy, to and from
//! the shard-manager map a node receives and the layout it serves.

use shoal_proto::admin::{UshardMapping, UshardRun as RunProto};
use shoal_types::{Mapping, ShardId, UshardId, UshardMap, UshardRun};

/// The map a keyspace's runs describe; `Ok(None)` when there are none (a
/// layout that predates explicit maps: the static mapping).
pub fn map_from_runs(keyspace: &str, ushard_count: u32, runs: &[RunProto]) -> anyhow::Result<Option<UshardMap>> {
    if runs.is_empty() {
        return Ok(None);
    }
    let runs = runs
        .iter()
        .map(|r| UshardRun {
            first: UshardId(r.first_ushard),
            shard: ShardId(r.shard_id),
        })
        .collect();
    UshardMap::from_runs(ushard_count, runs)
        .map(Some)
        .ok_or_else(|| anyhow::anyhow!("keyspace {keyspace:?}: the μshard map's runs are not in order"))
}

pub fn runs_to_proto(map: Option<&UshardMap>) -> Vec<RunProto> {
    map.map(|m| m.runs())
        .unwrap_or_default()
        .iter()
        .map(|r| RunProto {
            first_ushard: r.first.0,
            shard_id: r.shard.0,
        })
        .collect()
}

/// Unspecified (and values this build does not know) read as compact.
pub fn mapping_from_proto(raw: i32) -> Mapping {
    match UshardMapping::try_from(raw) {
        Ok(UshardMapping::Akkio) => Mapping::Akkio,
        _ => Mapping::Compact,
    }
}

pub fn mapping_to_proto(mapping: Mapping) -> i32 {
    match mapping {
        Mapping::Compact => UshardMapping::Compact as i32,
        Mapping::Akkio => UshardMapping::Akkio as i32,
    }
}
