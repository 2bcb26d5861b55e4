//! The client's cached view of the cluster: which shard owns a key, which
//! nodes hold the shard, and who last led it; and fetching the layout it is
//! built from.

use crate::error::{ClientError, ClientResult};
use shoal_proto::admin::admin_client::AdminClient;
use shoal_proto::admin::{GetLayoutRequest, Layout};
use shoal_proto::routing::{shard_index_for_ushard, ushard_for_key};
use shoal_types::{Epoch, NodeId, ShardId, UshardId, UshardMap, UshardRun};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tonic::transport::Endpoint;

#[derive(Clone, Debug)]
pub struct KeyspaceRoute {
    pub name: String,
    pub ushard_count: u32,
    pub shards: Vec<ShardId>,
    /// The μshard map; `None` when the layout names none (the static
    /// mapping) or sent runs out of order (the server then redirects).
    pub map: Option<UshardMap>,
}

impl KeyspaceRoute {
    pub fn shard_of_ushard(&self, ushard: u32) -> ShardId {
        if let Some(owner) = self.map.as_ref().and_then(|m| m.owner(UshardId(ushard))) {
            return owner;
        }
        self.shards[shard_index_for_ushard(ushard, self.shards.len())]
    }
}

/// Where a key goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    pub shard: ShardId,
    pub ushard: u32,
}

/// What the table knows of one shard.
#[derive(Clone, Debug, Default)]
struct ShardRoute {
    /// Voters, the only replicas that can lead.
    replicas: Vec<NodeId>,
    /// Non-voting replicas: they serve bounded and read-your-writes reads.
    learners: Vec<NodeId>,
    /// The shard manager's primary, if it named one, and its epoch.
    primary: Option<NodeId>,
    epoch: Epoch,
}

pub struct RoutingTable {
    version: u64,
    keyspaces: HashMap<String, KeyspaceRoute>,
    shards: HashMap<ShardId, ShardRoute>,
    addrs: HashMap<NodeId, String>,
    regions: HashMap<NodeId, String>,
    // A plain mutex: held for a map lookup or insert, never across an await.
    leaders: Mutex<HashMap<ShardId, NodeId>>,
}

impl RoutingTable {
    /// The table of a layout: the one place the client turns the wire's
    /// numbers into ids.
    pub fn from_layout(layout: &Layout) -> RoutingTable {
        let nodes = |ids: &[u64]| ids.iter().copied().map(NodeId).collect::<Vec<_>>();
        RoutingTable {
            version: layout.version,
            keyspaces: layout
                .keyspaces
                .iter()
                .map(|k| {
                    let route = KeyspaceRoute {
                        name: k.name.clone(),
                        ushard_count: k.ushard_count,
                        shards: k.shard_ids.iter().copied().map(ShardId).collect(),
                        map: UshardMap::from_runs(
                            k.ushard_count,
                            k.ushard_runs
                                .iter()
                                .map(|r| UshardRun {
                                    first: UshardId(r.first_ushard),
                                    shard: ShardId(r.shard_id),
                                })
                                .collect(),
                        ),
                    };
                    (k.name.clone(), route)
                })
                .collect(),
            shards: layout
                .shards
                .iter()
                .map(|s| {
                    let route = ShardRoute {
                        replicas: nodes(&s.replicas),
                        learners: nodes(&s.learners),
                        // The wire says 0 for "none": node ids start at 1.
                        primary: (s.primary != 0).then_some(NodeId(s.primary)),
                        epoch: Epoch(s.epoch),
                    };
                    (ShardId(s.shard_id), route)
                })
                .collect(),
            addrs: layout
                .nodes
                .iter()
                .map(|n| (NodeId(n.node_id), n.client_addr.clone()))
                .collect(),
            regions: layout
                .nodes
                .iter()
                .map(|n| (NodeId(n.node_id), n.region.clone()))
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
    pub fn first_node(&self) -> Option<NodeId> {
        self.addrs.keys().min().copied()
    }

    pub fn addr(&self, node: NodeId) -> Option<&str> {
        self.addrs.get(&node).map(String::as_str)
    }

    /// The shard's epoch in this table (0 when the layout has none).
    pub fn epoch(&self, shard: ShardId) -> Epoch {
        self.shards.get(&shard).map(|s| s.epoch).unwrap_or_default()
    }

    /// The order in which to try a shard's replicas: the leader last seen
    /// (even one this table does not list yet, when its address is known),
    /// else the shard manager's primary, then the other replicas.
    pub fn candidates(&self, shard: ShardId) -> Vec<NodeId> {
        let route = self.shards.get(&shard).cloned().unwrap_or_default();
        let mut nodes = route.replicas;
        let first = self
            .leader(shard)
            .filter(|l| self.addrs.contains_key(l))
            .or(route.primary);
        if let Some(first) = first {
            nodes.retain(|n| *n != first);
            nodes.insert(0, first);
        }
        nodes
    }

    /// The order in which to try replicas for a read any replica may serve
    /// (bounded staleness, read-your-writes): replicas in `region` before
    /// the others, and within each group followers and learners before the
    /// leader, which keeps that load off the primary.
    pub fn read_candidates(&self, shard: ShardId, region: Option<&str>) -> Vec<NodeId> {
        let route = self.shards.get(&shard).cloned().unwrap_or_default();
        let leader = self.leader(shard).or(route.primary);
        let mut nodes: Vec<NodeId> = route.replicas.iter().chain(&route.learners).copied().collect();
        nodes.dedup();
        nodes.sort_by_key(|n| {
            let elsewhere = region.is_some_and(|r| self.regions.get(n).map(String::as_str) != Some(r));
            (elsewhere, Some(*n) == leader)
        });
        nodes
    }

    pub fn leader(&self, shard: ShardId) -> Option<NodeId> {
        self.leaders.lock().ok()?.get(&shard).copied()
    }

    pub fn set_leader(&self, shard: ShardId, node: NodeId) {
        if let Ok(mut leaders) = self.leaders.lock() {
            leaders.insert(shard, node);
        }
    }
}

pub(crate) fn endpoint(addr: &str) -> Result<Endpoint, tonic::transport::Error> {
    Ok(Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_millis(500))
        .tcp_nodelay(true))
}

/// Asks every endpoint at once and keeps the newest layout: one endpoint
/// may lag (a node cut off from the shard manager), and a down one costs
/// no more than the 2 s timeout.
pub async fn fetch_layout(endpoints: &[String]) -> ClientResult<Layout> {
    let attempts = endpoints.iter().map(|addr| async move {
        let attempt = async {
            let channel = endpoint(addr)
                .map_err(|e| e.to_string())?
                .connect()
                .await
                .map_err(|e| e.to_string())?;
            let mut admin = AdminClient::new(channel);
            admin
                .get_layout(GetLayoutRequest {})
                .await
                .map(tonic::Response::into_inner)
                .map_err(|s| s.message().to_string())
        };
        match tokio::time::timeout(Duration::from_secs(2), attempt).await {
            Ok(result) => result.map_err(|e| format!("{addr}: {e}")),
            Err(_) => Err(format!("{addr}: timed out")),
        }
    });
    let mut newest: Option<Layout> = None;
    let mut last_error = String::from("no endpoints given");
    for result in futures::future::join_all(attempts).await {
        match result {
            Ok(layout) if newest.as_ref().is_none_or(|n| layout.version > n.version) => newest = Some(layout),
            Ok(_) => {}
            Err(e) => last_error = e,
        }
    }
    newest.ok_or_else(|| ClientError::Routing(format!("no endpoint answered ({last_error})")))
}
