//! The client's cached view of the cluster: which shard owns a key, which
//! nodes hold the shard, and who last led it.

use crate::error::{ClientError, ClientResult};
use shoal_proto::admin::Layout;
use shoal_proto::routing::{shard_index_for_ushard, ushard_for_key};
use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Clone, Debug)]
pub struct KeyspaceRoute {
    pub name: String,
    pub ushard_count: u32,
    pub shards: Vec<u64>,
}

impl KeyspaceRoute {
    pub fn shard_of_ushard(&self, ushard: u32) -> u64 {
        self.shards[shard_index_for_ushard(ushard, self.shards.len())]
    }
}

/// Where a key goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    pub shard: u64,
    pub ushard: u32,
}

pub struct RoutingTable {
    version: u64,
    keyspaces: HashMap<String, KeyspaceRoute>,
    replicas: HashMap<u64, Vec<u64>>,
    addrs: HashMap<u64, String>,
    // A plain mutex: held for a map lookup or insert, never across an await.
    leaders: Mutex<HashMap<u64, u64>>,
}

impl RoutingTable {
    pub fn from_layout(layout: &Layout) -> RoutingTable {
        RoutingTable {
            version: layout.version,
            keyspaces: layout
                .keyspaces
                .iter()
                .map(|k| {
                    let route = KeyspaceRoute {
                        name: k.name.clone(),
                        ushard_count: k.ushard_count,
                        shards: k.shard_ids.clone(),
                    };
                    (k.name.clone(), route)
                })
                .collect(),
            replicas: layout.shards.iter().map(|s| (s.shard_id, s.replicas.clone())).collect(),
            addrs: layout
                .nodes
                .iter()
                .map(|n| (n.node_id, n.client_addr.clone()))
                .collect(),
            leaders: Mutex::new(HashMap::new()),
        }
    }

    pub fn keyspace(&self, name: &str) -> ClientResult<&KeyspaceRoute> {
        self.keyspaces
            .get(name)
            .ok_or_else(|| ClientError::Routing(format!("unknown keyspace {name:?}")))
    }

    /// Places a key: by its routing key when given, else by its own hash.
    pub fn place(&self, keyspace: &str, key: &[u8], routing_key: Option<&[u8]>) -> ClientResult<Placement> {
        let ks = self.keyspace(keyspace)?;
        if ks.shards.is_empty() {
            return Err(ClientError::Routing(format!("keyspace {keyspace:?} has no shards")));
        }
        let ushard = ushard_for_key(routing_key.unwrap_or(key), ks.ushard_count);
        Ok(Placement {
            shard: ks.shard_of_ushard(ushard),
            ushard,
        })
    }

    /// Version of the layout this table was built from.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Client addresses of every node in the layout.
    pub fn node_addrs(&self) -> Vec<String> {
        self.addrs.values().cloned().collect()
    }

    /// The lowest node id of the layout.
    pub fn first_node(&self) -> Option<u64> {
        self.addrs.keys().min().copied()
    }

    pub fn addr(&self, node: u64) -> Option<&str> {
        self.addrs.get(&node).map(String::as_str)
    }

    /// The order in which to try a shard's replicas: the cached leader first.
    pub fn candidates(&self, shard: u64) -> Vec<u64> {
        let mut nodes = self.replicas.get(&shard).cloned().unwrap_or_default();
        if let Some(leader) = self.leader(shard) {
            if let Some(pos) = nodes.iter().position(|n| *n == leader) {
                nodes.remove(pos);
                nodes.insert(0, leader);
            }
        }
        nodes
    }

    pub fn leader(&self, shard: u64) -> Option<u64> {
        self.leaders.lock().ok()?.get(&shard).copied()
    }

    pub fn set_leader(&self, shard: u64, node: u64) {
        if let Ok(mut leaders) = self.leaders.lock() {
            leaders.insert(shard, node);
        }
    }
}
