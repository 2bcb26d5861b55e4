//! The replicas a node hosts: opens one Raft group per shard of the layout
//! that lists this node, bootstraps new groups, and shuts them down.

use crate::config::{Limits, NodeConfig, ReadTuning};
use crate::engine::SharedEngine;
use crate::engine::{Direction, Visit, WriteBatch};
use crate::error::{KvError, KvResult};
use crate::keys;
use crate::layout::ClusterLayout;
use crate::raft::acceptance::Acceptances;
use crate::raft::log_store::ShardLogStore;
use crate::raft::network::{PeerChannels, ShardNetworkFactory};
use crate::raft::snapshot::SnapshotDir;
use crate::raft::state_machine::ShardStateMachine;
use crate::raft::wal_syncer::WalSyncer;
use crate::shard::freshness::{ClockGuard, Freshness};
use crate::shard::replica::ShardReplica;
use crate::transport_filter::{LinkCut, TransportFilter, SHARD_MANAGER};
use crate::ttl::ExpiryHorizons;
use anyhow::Context;
use dashmap::DashMap;
use openraft::BasicNode;
use shoal_types::{NodeId, ShardId};
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

pub struct NodeHost {
    pub node_id: NodeId,
    /// Replaced when the shard manager publishes a new map; readers take a
    /// cheap Arc copy and never hold the lock.
    layout: RwLock<Arc<ClusterLayout>>,
    /// Serialises `sync_shards` (startup and map refreshes).
    sync_lock: tokio::sync::Mutex<()>,
    pub limits: Limits,
    pub reads: ReadTuning,
    engine: SharedEngine,
    syncer: WalSyncer,
    peers: Arc<PeerChannels>,
    shards: DashMap<ShardId, Arc<ShardReplica>>,
    /// Wakes the shard-manager agent to fetch the map before its next tick.
    map_refresh: tokio::sync::Notify,
    /// The layout changed (or a sync failed) since the last successful
    /// [`NodeHost::sync_shards`].
    sync_pending: std::sync::atomic::AtomicBool,
    /// Each open shard's apply clock, for compaction (see [`crate::ttl`]).
    horizons: Arc<ExpiryHorizons>,
    /// Until then this node grants no votes (see [`NodeHost::may_vote`]).
    votes_from: std::time::Instant,
    /// Writes and strong reads per μshard and client region (locality).
    pub heat: crate::shard::heat::HeatCounters,
}

impl NodeHost {
    /// A host with no replicas open yet; see [`NodeHost::sync_shards`].
    pub fn new(
        node_id: NodeId,
        config: &NodeConfig,
        layout: ClusterLayout,
        engine: SharedEngine,
        horizons: Arc<ExpiryHorizons>,
        filter: Arc<TransportFilter>,
    ) -> anyhow::Result<Arc<NodeHost>> {
        if layout.node(node_id).is_none() {
            anyhow::bail!("node_id: {node_id} is not in the layout");
        }
        let syncer = WalSyncer::start(engine.clone()).context("starting the WAL sync thread")?;
        Ok(Arc::new(NodeHost {
            node_id,
            layout: RwLock::new(Arc::new(layout)),
            sync_lock: tokio::sync::Mutex::new(()),
            limits: config.limits.clone(),
            reads: config.reads.clone(),
            engine,
            syncer,
            peers: PeerChannels::new(node_id, filter),
            shards: DashMap::new(),
            map_refresh: tokio::sync::Notify::new(),
            sync_pending: std::sync::atomic::AtomicBool::new(true),
            horizons,
            votes_from: std::time::Instant::now() + Duration::from_millis(config.raft.election_timeout_max_ms),
            heat: Default::default(),
        }))
    }

    /// Whether this node may take part in elections yet. Before a crash it
    /// may have acknowledged a leader, promising (openraft's follower lease)
    /// not to vote for anyone else for one lease; openraft forgets that
    /// promise on restart, so the node keeps it by neither voting (votes and
    /// pre-votes are refused) nor campaigning (elections are off, see
    /// `allow_elections_after_embargo`) until one lease
    /// (`election_timeout_max_ms`) after it started. Otherwise a quick
    /// restart could elect a second leader while the first still serves
    /// reads under its lease. A leadership transfer still goes through: the
    /// old leader asked for it and stopped serving under its lease.
    pub fn may_vote(&self) -> bool {
        // A deliberate bug for proving the fault schedules can fail: no
        // embargo, as before issue 10 (docs/failpoints.md).
        if crate::failpoints::is_on("restart-embargo-off") {
            return true;
        }
        std::time::Instant::now() >= self.votes_from
    }

    /// Lets `raft` campaign once the restart embargo is over. Until then a
    /// replica opened during the embargo neither starts an election nor
    /// grants a vote (see [`Self::may_vote`]): a restarted node that
    /// campaigned could be elected by a peer whose lease on the old leader
    /// has run out, while the old leader still serves under the lease this
    /// node promised it before the crash.
    fn allow_elections_after_embargo(&self, raft: crate::raft::Raft) {
        let at = tokio::time::Instant::from_std(self.votes_from);
        tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            raft.runtime_config().elect(true);
        });
    }

    /// Waits as the transport filter says for one message between this
    /// node and the shard manager, `to_manager` or back; `Err` when the link
    /// is cut (the in-process harness cuts it; nothing else does).
    pub async fn pass_shard_manager_link(&self, to_manager: bool) -> Result<(), LinkCut> {
        let (me, filter) = (self.node_id, self.peers.filter());
        match to_manager {
            true => filter.pass(me, SHARD_MANAGER).await,
            false => filter.pass(SHARD_MANAGER, me).await,
        }
    }

    /// Asks for an early map refresh (requests coalesce).
    pub fn request_map_refresh(&self) {
        self.map_refresh.notify_one();
    }

    /// Resolves when an early map refresh was asked for.
    pub async fn map_refresh_requested(&self) {
        self.map_refresh.notified().await
    }

    /// The current cluster layout.
    pub fn layout(&self) -> Arc<ClusterLayout> {
        self.layout.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Installs a newer layout (an older or equal version is ignored).
    /// Returns whether it was installed; call [`Self::sync_shards`] after.
    pub fn set_layout(&self, layout: ClusterLayout) -> bool {
        let mut current = self.layout.write().unwrap_or_else(|p| p.into_inner());
        if layout.version <= current.version {
            return false;
        }
        *current = Arc::new(layout);
        self.sync_pending.store(true, std::sync::atomic::Ordering::SeqCst);
        true
    }

    /// Whether replicas may not match the layout yet.
    pub fn needs_sync(&self) -> bool {
        self.sync_pending.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Opens every replica the layout places on this node that is not open
    /// yet. A shard at membership version 1 whose first listed replica is
    /// this node and that has never been initialized is bootstrapped with
    /// the layout's replicas as voters; replicas added later wait for the
    /// leader to add them.
    ///
    /// With a shard manager, a replica of a shard the map knows but no
    /// longer places here (it was moved away while this node was down or
    /// draining) is shut down and its data deleted.
    pub async fn sync_shards(&self, config: &NodeConfig) -> anyhow::Result<()> {
        let _serial = self.sync_lock.lock().await;
        // Cleared first: a layout installed while this runs sets it again.
        self.sync_pending.store(false, std::sync::atomic::Ordering::SeqCst);
        let result = self.sync_to_layout(config).await;
        if result.is_err() {
            self.sync_pending.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        result
    }

    async fn sync_to_layout(&self, config: &NodeConfig) -> anyhow::Result<()> {
        let raft_config = Arc::new(crate::config::openraft_config(&config.raft)?);
        let layout = self.layout();
        if config.shard_manager.is_some() {
            self.remove_unowned(&layout, config).await?;
        }
        for shard in layout.shards_on(self.node_id) {
            if self.shards.contains_key(&shard.id) {
                continue;
            }
            let snapshots = SnapshotDir::new(config.data_dir.join("snapshots").join(format!("shard-{}", shard.id)))
                .with_context(|| format!("creating snapshot dir of shard {}", shard.id))?;
            let acceptances = Arc::new(Acceptances::default());
            let log = ShardLogStore::new(shard.id, self.engine.clone(), self.syncer.clone())
                .with_acceptances(acceptances.clone());
            let sm = ShardStateMachine::open(shard.id, self.engine.clone(), snapshots, self.horizons.clone())
                .with_context(|| format!("opening state machine of shard {}", shard.id))?;
            let moves = sm.moves_watch();
            let freshness = Arc::new(Freshness::new(
                sm.applied_watch(),
                Duration::from_millis(raft_config.election_timeout_max),
                ClockGuard {
                    me: self.node_id.0,
                    clocks: self.peers.clocks().clone(),
                    max_offset_ms: self.reads.max_clock_offset_ms,
                },
            ));
            let network = ShardNetworkFactory::new(shard.id, self.peers.clone(), freshness.clone());
            let embargoed = !self.may_vote();
            let shard_config = if embargoed {
                Arc::new(openraft::Config {
                    enable_elect: false,
                    ..(*raft_config).clone()
                })
            } else {
                raft_config.clone()
            };
            let raft = openraft::Raft::new(self.node_id.0, shard_config, network, log, sm)
                .await
                .with_context(|| format!("starting raft of shard {}", shard.id))?;
            if embargoed {
                self.allow_elections_after_embargo(raft.clone());
            }
            freshness.attach(raft.clone());
            let opened_empty = !raft.is_initialized().await?;
            if shard.conf_ver == 1 && shard.replicas.first() == Some(&self.node_id) && !raft.is_initialized().await? {
                let members: BTreeMap<u64, BasicNode> = shard
                    .replicas
                    .iter()
                    .filter_map(|id| {
                        layout.node(*id).map(|n| {
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
                Arc::new(ShardReplica::new(
                    shard.id,
                    raft,
                    self.engine.clone(),
                    freshness,
                    acceptances,
                    moves,
                    opened_empty,
                )),
            );
        }
        Ok(())
    }

    /// Shuts down and deletes every replica (open, or only on disk) of a
    /// shard that `layout` knows but does not place on this node.
    async fn remove_unowned(&self, layout: &ClusterLayout, config: &NodeConfig) -> anyhow::Result<()> {
        let owned: HashSet<ShardId> = layout.shards_on(self.node_id).iter().map(|s| s.id).collect();
        let mut present: HashSet<ShardId> = self.shards.iter().map(|r| r.id).collect();
        present.extend(stored_shards(&self.engine)?);
        for shard in present {
            // A shard the map does not know is left alone: deleting data
            // takes a map that positively places the shard elsewhere, or
            // names it retired (merged away).
            let retired = layout.keyspaces.iter().any(|k| k.retired.contains(&shard));
            if owned.contains(&shard) || (layout.shard(shard).is_none() && !retired) {
                continue;
            }
            if let Some((_, replica)) = self.shards.remove(&shard) {
                // Before any data goes: reads in flight must not answer
                // "absent" from a half-deleted replica.
                replica.retire();
                if let Err(e) = replica.raft.shutdown().await {
                    tracing::warn!(shard_id = %shard, error = %e, "raft shutdown failed");
                }
            }
            self.horizons.forget(shard);
            let mut batch = WriteBatch::default();
            for cf in keys::ALL_CFS {
                let (start, end) = keys::shard_range(shard);
                batch.delete_range(cf, start, end);
            }
            self.engine
                .write(batch)
                .with_context(|| format!("deleting shard {shard}"))?;
            let snapshots = config.data_dir.join("snapshots").join(format!("shard-{shard}"));
            match std::fs::remove_dir_all(&snapshots) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("removing {}", snapshots.display())),
            }
            tracing::info!(shard_id = %shard, "removed a replica this node no longer owns");
        }
        Ok(())
    }

    pub fn shard(&self, id: ShardId) -> KvResult<Arc<ShardReplica>> {
        self.shards.get(&id).map(|r| r.clone()).ok_or(KvError::UnknownShard(id))
    }

    pub fn engine(&self) -> &SharedEngine {
        &self.engine
    }

    /// As leader of each shard, proposes forgetting the exactly-once records
    /// of clients idle for `idle_ms`. Failures wait for the next sweep.
    pub async fn forget_idle_clients(&self, idle_ms: u64) {
        for replica in self.replicas() {
            if replica.raft.as_leader().is_err() {
                continue;
            }
            let command = crate::apply::command::Command::ForgetIdleClients {
                idle_ms,
                now_ms: crate::clock::wall_ms(),
            };
            if let Err(e) = replica.propose(command).await {
                tracing::debug!(shard_id = %replica.id, error = %e, "idle-client sweep not applied");
            }
        }
    }

    /// As leader of each shard whose apply clock has not moved for
    /// `lag_ms` on this node's clock (no write stamped it), proposes a
    /// tick: follower reads judge expiry by the clock they apply, so they
    /// see a key expire at most `lag_ms` late. Failures wait for the next
    /// round.
    pub async fn tick_idle_clocks(&self, lag_ms: u64) {
        for replica in self.replicas() {
            if replica.raft.as_leader().is_err() {
                continue;
            }
            let now_ms = crate::clock::wall_ms();
            let clock_ms = self.horizons.clock_of(replica.id).unwrap_or(0);
            if clock_ms.saturating_add(lag_ms) > now_ms {
                continue;
            }
            // A leader cut off from its quorum never commits: do not let
            // one such shard hold up the others.
            let tick = replica.propose(crate::apply::command::Command::Tick { now_ms });
            match tokio::time::timeout(Duration::from_millis(lag_ms.max(100)), tick).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::debug!(shard_id = %replica.id, error = %e, "apply clock tick not applied"),
                Err(_) => tracing::debug!(shard_id = %replica.id, "apply clock tick not committed in time"),
            }
        }
    }

    /// Samples every replica's applied version and, as leader of a shard
    /// whose transaction floor lags the version it had applied `window_ms`
    /// ago, proposes raising the floor there (see [`crate::apply::txn`]).
    /// Failures wait for the next round.
    pub async fn advance_txn_floors(&self, window_ms: u64) {
        for replica in self.replicas() {
            let Some(floor) = replica.sample_txn_floor(crate::clock::wall_ms(), window_ms) else {
                continue;
            };
            if replica.raft.as_leader().is_err() {
                continue;
            }
            let current = self.horizons.txn_floor_of(replica.id).unwrap_or(0);
            if floor <= current {
                continue;
            }
            let advance = replica.propose(crate::apply::command::Command::AdvanceTxnFloor {
                floor: shoal_types::Version(floor),
            });
            match tokio::time::timeout(Duration::from_millis(1_000), advance).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::debug!(shard_id = %replica.id, error = %e, "transaction floor not raised"),
                Err(_) => tracing::debug!(shard_id = %replica.id, "transaction floor not committed in time"),
            }
        }
    }

    /// Each open shard's expiry horizon (see [`crate::ttl`]).
    pub fn horizons(&self) -> &Arc<ExpiryHorizons> {
        &self.horizons
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
        let syncer = self.syncer.clone();
        let _ = tokio::task::spawn_blocking(move || syncer.stop()).await;
    }
}

/// Shards with Raft state in this node's database.
fn stored_shards(engine: &SharedEngine) -> std::io::Result<Vec<ShardId>> {
    let mut shards: Vec<ShardId> = Vec::new();
    engine.scan(
        keys::CF_RAFT_META,
        &[],
        &[0xFF; 9],
        Direction::Forward,
        &mut |key, _| {
            if let Some(shard) = keys::shard_of_key(key) {
                if shards.last() != Some(&shard) {
                    shards.push(shard);
                }
            }
            Ok(Visit::Continue)
        },
    )?;
    Ok(shards)
}
