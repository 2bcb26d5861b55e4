//! The cluster layout: nodes, keyspaces, shards and their replicas.
//!
//! A node holds the layout the shard manager sends it, or a static TOML
//! file (the process tests write one). A keyspace's μshard map is explicit
//! (`map`) in layouts from the shard manager; a layout without one places
//! micro-shard `u` in `shards[u % shards.len()]`, the static mapping.

use anyhow::bail;
use serde::{Deserialize, Serialize};
use shoal_types::{Epoch, KeyspaceId, Mapping, NodeId, ShardId, UshardId, UshardMap};
use std::collections::HashSet;
use std::path::Path;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeLayout {
    pub id: NodeId,
    /// Address clients use (the Kv and Admin services).
    pub client_addr: String,
    /// Address peers use for the Raft transport; never given to clients.
    pub raft_addr: String,
    #[serde(default = "default_region")]
    pub region: String,
}

fn first_conf_ver() -> u64 {
    1
}

impl ShardLayout {
    /// Every node hosting this shard.
    pub fn hosts(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.replicas.iter().chain(&self.learners).chain(&self.leaving).copied()
    }
}

fn default_region() -> String {
    crate::DEFAULT_REGION.to_string()
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyspaceLayout {
    pub name: String,
    pub id: KeyspaceId,
    pub ushard_count: u32,
    pub shards: Vec<ShardId>,
    #[serde(default)]
    pub mapping: Mapping,
    /// The μshard map; `None`: the static mapping (see the module docs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub map: Option<UshardMap>,
    /// The map the keyspace was created with, never changed (it may name
    /// retired shards); `None`: the static mapping. A μshard that never
    /// moved in or out of a shard is that shard's by this map (moves leave
    /// a state in the shards they touch, and that state decides instead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub home: Option<UshardMap>,
    /// Shards merged away: a node deletes any replica of them it holds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retired: Vec<ShardId>,
}

impl KeyspaceLayout {
    /// The shard owning `ushard`: by the map, or the static mapping.
    pub fn shard_of(&self, ushard: u32) -> Option<ShardId> {
        if ushard >= self.ushard_count {
            return None;
        }
        if let Some(map) = &self.map {
            return map.owner(UshardId(ushard));
        }
        let index = shoal_proto::routing::shard_index_for_ushard(ushard, self.shards.len());
        self.shards.get(index).copied()
    }

    /// The shard `ushard` was created in.
    pub fn home_of(&self, ushard: u32) -> Option<ShardId> {
        if ushard >= self.ushard_count {
            return None;
        }
        if let Some(home) = &self.home {
            return home.owner(UshardId(ushard));
        }
        let index = shoal_proto::routing::shard_index_for_ushard(ushard, self.shards.len());
        self.shards.get(index).copied()
    }

    /// Every micro-shard that `shard` owns in this keyspace.
    pub fn ushards_of(&self, shard: ShardId) -> Vec<u32> {
        if let Some(map) = &self.map {
            return map.ushards_of(shard).into_iter().map(|u| u.0).collect();
        }
        (0..self.ushard_count)
            .filter(|u| self.shard_of(*u) == Some(shard))
            .collect()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardLayout {
    pub id: ShardId,
    /// Voters.
    pub replicas: Vec<NodeId>,
    /// Non-voting replicas Raft should have: the keyspace's read learners
    /// and a replica being built to replace another.
    #[serde(default)]
    pub learners: Vec<NodeId>,
    /// Replicas on their way out: still hosted until Raft has committed a
    /// membership without them.
    #[serde(default)]
    pub leaving: Vec<NodeId>,
    /// Membership version from the shard manager. Only at version 1 does
    /// the first voter bootstrap the group; later replicas join it.
    #[serde(default = "first_conf_ver")]
    pub conf_ver: u64,
    /// The replica the shard manager wants leading; none in a static layout.
    #[serde(default)]
    pub primary: Option<NodeId>,
    /// The shard's leadership epoch from the shard manager; 0 when static.
    #[serde(default)]
    pub epoch: Epoch,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterLayout {
    pub version: u64,
    pub nodes: Vec<NodeLayout>,
    pub keyspaces: Vec<KeyspaceLayout>,
    pub shards: Vec<ShardLayout>,
}

impl ClusterLayout {
    pub fn load(path: &Path) -> anyhow::Result<ClusterLayout> {
        let layout: ClusterLayout = crate::read_toml(path, "layout")?;
        layout.validate()?;
        Ok(layout)
    }

    /// Checks the references between nodes, shards and keyspaces.
    pub fn validate(&self) -> anyhow::Result<()> {
        let node_ids: HashSet<NodeId> = self.nodes.iter().map(|n| n.id).collect();
        if node_ids.len() != self.nodes.len() {
            bail!("layout.nodes: duplicate node id");
        }
        if node_ids.contains(&NodeId(0)) {
            bail!("layout.nodes: node id 0 is reserved");
        }
        let shard_ids: HashSet<ShardId> = self.shards.iter().map(|s| s.id).collect();
        if shard_ids.len() != self.shards.len() {
            bail!("layout.shards: duplicate shard id");
        }
        for shard in &self.shards {
            if shard.replicas.is_empty() {
                bail!("layout.shards[{}].replicas: empty", shard.id);
            }
            let hosts: Vec<NodeId> = shard.hosts().collect();
            let unique: HashSet<_> = hosts.iter().collect();
            if unique.len() != hosts.len() {
                bail!("layout.shards[{}].replicas: a node appears twice", shard.id);
            }
            if let Some(missing) = hosts.iter().find(|n| !node_ids.contains(n)) {
                bail!("layout.shards[{}].replicas: unknown node {missing}", shard.id);
            }
        }
        let mut names = HashSet::new();
        let mut ids = HashSet::new();
        let mut owned = HashSet::new();
        for ks in &self.keyspaces {
            if ks.name.is_empty() || !names.insert(ks.name.clone()) {
                bail!("layout.keyspaces: empty or duplicate name {:?}", ks.name);
            }
            if ks.id >= KeyspaceId::FIRST_RESERVED || !ids.insert(ks.id) {
                bail!("layout.keyspaces[{}].id: reserved or duplicate id {}", ks.name, ks.id);
            }
            if ks.ushard_count == 0 || ks.shards.is_empty() {
                bail!("layout.keyspaces[{}]: needs at least one ushard and one shard", ks.name);
            }
            for (field, map) in [("map", &ks.map), ("home", &ks.home)] {
                let Some(map) = map else { continue };
                let reread = UshardMap::from_runs(map.count(), map.runs().to_vec());
                if map.count() != ks.ushard_count || reread.as_ref() != Some(map) {
                    bail!(
                        "layout.keyspaces[{}].{field}: runs must be sorted, start at 0, stay below ushard_count and not repeat a shard next to itself",
                        ks.name
                    );
                }
                // The home map may name shards merged away (retired).
                let known = |s: &ShardId| ks.shards.contains(s) || (field == "home" && ks.retired.contains(s));
                if let Some(stranger) = map.shards().into_iter().find(|s| !known(s)) {
                    bail!(
                        "layout.keyspaces[{}].{field}: shard {stranger} is not one of the keyspace's shards",
                        ks.name
                    );
                }
            }
            for shard in &ks.shards {
                if !shard_ids.contains(shard) {
                    bail!("layout.keyspaces[{}].shards: unknown shard {shard}", ks.name);
                }
                if !owned.insert(*shard) {
                    bail!(
                        "layout.keyspaces[{}].shards: shard {shard} already belongs to a keyspace",
                        ks.name
                    );
                }
            }
        }
        Ok(())
    }

    pub fn node(&self, id: NodeId) -> Option<&NodeLayout> {
        self.nodes.iter().find(|n| n.id == id)
    }

    pub fn keyspace(&self, name: &str) -> Option<&KeyspaceLayout> {
        self.keyspaces.iter().find(|k| k.name == name)
    }

    /// The keyspace a shard belongs to.
    pub fn keyspace_of_shard(&self, shard: ShardId) -> Option<&KeyspaceLayout> {
        self.keyspaces.iter().find(|k| k.shards.contains(&shard))
    }

    pub fn shard(&self, id: ShardId) -> Option<&ShardLayout> {
        self.shards.iter().find(|s| s.id == id)
    }

    /// Shards with a replica (voter, learner or leaving) on `node`.
    pub fn shards_on(&self, node: NodeId) -> Vec<&ShardLayout> {
        self.shards.iter().filter(|s| s.hosts().any(|h| h == node)).collect()
    }

    /// A layout of `nodes` nodes, one keyspace `default`, `shards` shards each
    /// replicated on every node (up to 3). Used by the playground and tests.
    pub fn local(nodes: &[NodeLayout], shards: u64, ushard_count: u32) -> ClusterLayout {
        let replicas: Vec<NodeId> = nodes.iter().map(|n| n.id).collect();
        let shard_layouts: Vec<ShardLayout> = (1..=shards)
            .map(|id| {
                // Rotate so each node is first (the bootstrapper) for some shards.
                let mut r = replicas.clone();
                r.rotate_left((id as usize - 1) % replicas.len().max(1));
                r.truncate(3);
                ShardLayout {
                    id: ShardId(id),
                    replicas: r,
                    learners: vec![],
                    leaving: vec![],
                    conf_ver: 1,
                    primary: None,
                    epoch: Epoch(0),
                }
            })
            .collect();
        ClusterLayout {
            version: 1,
            nodes: nodes.to_vec(),
            keyspaces: vec![KeyspaceLayout {
                name: "default".into(),
                id: KeyspaceId(1),
                ushard_count,
                shards: shard_layouts.iter().map(|s| s.id).collect(),
                mapping: Mapping::Compact,
                map: None,
                home: None,
                retired: Vec::new(),
            }],
            shards: shard_layouts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(n: u64) -> Vec<NodeLayout> {
        (1..=n)
            .map(|i| NodeLayout {
                id: NodeId(i),
                client_addr: format!("127.0.0.1:{}", 7100 + i),
                raft_addr: format!("127.0.0.1:{}", 7200 + i),
                region: "local".into(),
            })
            .collect()
    }

    #[test]
    fn local_layout_is_valid_and_maps_every_ushard() {
        let layout = ClusterLayout::local(&nodes(3), 4, 64);
        layout.validate().unwrap();
        let ks = layout.keyspace("default").unwrap();
        let total: usize = ks.shards.iter().map(|s| ks.ushards_of(*s).len()).sum();
        assert_eq!(total, 64);
        assert_eq!(ks.shard_of(64), None);
    }

    #[test]
    fn an_explicit_map_routes_and_is_checked() {
        let mut layout = ClusterLayout::local(&nodes(3), 2, 8);
        let ks = &mut layout.keyspaces[0];
        let mut map = UshardMap::ranges(8, &ks.shards).unwrap();
        map.assign(UshardId(0), ShardId(2));
        ks.home = ks.map.clone();
        ks.map = Some(map);
        layout.validate().unwrap();
        let ks = layout.keyspace("default").unwrap();
        assert_eq!(ks.shard_of(0), Some(ShardId(2)));
        assert_eq!(ks.home_of(0), Some(ShardId(1)), "the static mapping: no home given");
        assert_eq!(ks.shard_of(1), Some(ShardId(1)));
        assert_eq!(ks.ushards_of(ShardId(1)), vec![1, 2, 3]);
        let text = toml::to_string(&layout).unwrap();
        assert_eq!(toml::from_str::<ClusterLayout>(&text).unwrap(), layout);

        let mut stranger = layout.clone();
        stranger.keyspaces[0].map = UshardMap::ranges(8, &[ShardId(1), ShardId(9)]);
        let err = stranger.validate().unwrap_err().to_string();
        assert!(err.contains("shard 9 is not one of"), "{err}");
        let mut short = layout.clone();
        short.keyspaces[0].map = UshardMap::ranges(4, &[ShardId(1), ShardId(2)]);
        assert!(short.validate().is_err(), "a map of 4 ushards for a keyspace of 8");
    }

    #[test]
    fn validate_rejects_unknown_replica() {
        let mut layout = ClusterLayout::local(&nodes(3), 2, 8);
        layout.shards[0].replicas.push(NodeId(9));
        let err = layout.validate().unwrap_err().to_string();
        assert!(err.contains("unknown node 9"), "{err}");
    }

    #[test]
    fn layout_round_trips_through_toml() {
        let layout = ClusterLayout::local(&nodes(3), 2, 8);
        let text = toml::to_string(&layout).unwrap();
        assert_eq!(toml::from_str::<ClusterLayout>(&text).unwrap(), layout);
    }
}
