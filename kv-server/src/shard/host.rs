//! The replicas a node hosts: opens one Raft group per shard of the layout
//! that lists this node, bootstraps new groups, and shuts them down.

use crate::config::{Limits, NodeConfig};
use crate::engine::SharedEngine;
use crate::error::{KvError, KvResult};
use crate::layout::ClusterLayout;
use crate::raft::log_store::ShardLogStore;
use crate::raft::network::{PeerChannels, ShardNetworkFactory};
use crate::raft::snapshot::SnapshotDir;
use crate::raft::state_machine::ShardStateMachine;
use crate::raft::wal_syncer::WalSyncer;
use crate::shard::replica::ShardReplica;
use crate::types::{NodeId, ShardId};
use anyhow::Context;
use dashmap::DashMap;
use openraft::BasicNode;
use std::collections::BTreeMap;
use std::sync::Arc;

pub struct NodeHost {
    pub node_id: NodeId,
    pub layout: ClusterLayout,
    pub limits: Limits,
    engine: SharedEngine,
    syncer: WalSyncer,
    peers: Arc<PeerChannels>,
    shards: DashMap<ShardId, Arc<ShardReplica>>,
}

impl NodeHost {
    /// A host with no replicas open yet; see [`NodeHost::open_shards`].
    pub fn new(config: &NodeConfig, layout: ClusterLayout, engine: SharedEngine) -> anyhow::Result<Arc<NodeHost>> {
        if layout.node(config.node_id).is_none() {
            anyhow::bail!("node_id: {} is not in the layout", config.node_id);
        }
        let syncer = WalSyncer::start(engine.clone()).context("starting the WAL sync thread")?;
        Ok(Arc::new(NodeHost {
            node_id: config.node_id,
            layout,
            limits: config.limits.clone(),
            engine,
            syncer,
            peers: PeerChannels::new(),
            shards: DashMap::new(),
        }))
    }

    /// Opens every replica the layout places on this node. A shard whose
    /// first listed replica is this node and that has never been initialized
    /// is bootstrapped with the layout's replicas as voters.
    pub async fn open_shards(&self, config: &NodeConfig) -> anyhow::Result<()> {
        let raft_config = Arc::new(config.openraft_config()?);
        for shard in self.layout.shards_on(self.node_id) {
            let snapshots = SnapshotDir::new(config.data_dir.join("snapshots").join(format!("shard-{}", shard.id)))
                .with_context(|| format!("creating snapshot dir of shard {}", shard.id))?;
            let log = ShardLogStore::new(shard.id, self.engine.clone(), self.syncer.clone());
            let sm = ShardStateMachine::open(shard.id, self.engine.clone(), snapshots)
                .with_context(|| format!("opening state machine of shard {}", shard.id))?;
            let network = ShardNetworkFactory::new(shard.id, self.peers.clone());
            let raft = openraft::Raft::new(self.node_id.0, raft_config.clone(), network, log, sm)
                .await
                .with_context(|| format!("starting raft of shard {}", shard.id))?;
            if shard.replicas.first() == Some(&self.node_id) && !raft.is_initialized().await? {
                let members: BTreeMap<u64, BasicNode> = shard
                    .replicas
                    .iter()
                    .filter_map(|id| {
                        self.layout.node(*id).map(|n| {
                            (
                                id.0,
                                BasicNode {
                                    addr: n.raft_addr.clone(),
                                },
                            )
                        })
                    })
                    .collect();
                raft.initialize(members)
                    .await
                    .with_context(|| format!("bootstrapping shard {}", shard.id))?;
                tracing::info!(shard_id = %shard.id, "bootstrapped shard");
            }
            self.shards.insert(
                shard.id,
                Arc::new(ShardReplica::new(shard.id, raft, self.engine.clone())),
            );
        }
        Ok(())
    }

    pub fn shard(&self, id: ShardId) -> KvResult<Arc<ShardReplica>> {
        self.shards.get(&id).map(|r| r.clone()).ok_or(KvError::UnknownShard(id))
    }

    pub fn engine(&self) -> &SharedEngine {
        &self.engine
    }

    pub fn replicas(&self) -> Vec<Arc<ShardReplica>> {
        let mut all: Vec<_> = self.shards.iter().map(|r| r.clone()).collect();
        all.sort_by_key(|r| r.id);
        all
    }

    /// Stops every Raft group and makes the WAL durable.
    pub async fn shutdown(&self) {
        for replica in self.replicas() {
            if let Err(e) = replica.raft.shutdown().await {
                tracing::warn!(shard_id = %replica.id, error = %e, "raft shutdown failed");
            }
        }
        if let Err(e) = self.syncer.flush().await {
            tracing::warn!(error = %e, "final WAL sync failed");
        }
    }
}
