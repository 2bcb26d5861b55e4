//! This node's side of the shard manager: register (once, keeping the id it
//! is given), fetch the shard map as a [`ClusterLayout`], and heartbeat with
//! per-replica status, refreshing the map whenever its version moves. After
//! each heartbeat, the shards this node leads are moved toward the map:
//! leadership to the chosen primary, Raft membership to the listed replicas.
//!
//! While the shard manager is unreachable the node keeps serving with the
//! map it has; heartbeats simply fail and are retried.

use crate::config::NodeConfig;
use crate::identity;
use crate::layout::{ClusterLayout, KeyspaceLayout, NodeLayout, ShardLayout};
use crate::rpc::ushard_map_wire::{map_from_runs, mapping_from_proto};
use crate::shard::host::NodeHost;
use crate::shard::membership::MembershipDriver;
use anyhow::Context;
use openraft::ServerState;
use shoal_proto::sm::shard_manager_client::ShardManagerClient;
use shoal_proto::sm::{GetShardMapRequest, HeartbeatRequest, RegisterNodeRequest, ReplicaReport, ShardMap};
use shoal_types::{Epoch, KeyspaceId, NodeId, ShardId};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint};

pub type SmClient = ShardManagerClient<Channel>;

pub fn connect(addr: &str) -> anyhow::Result<SmClient> {
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .with_context(|| format!("shard_manager: bad address {addr:?}"))?
        .connect_timeout(Duration::from_millis(500))
        .timeout(Duration::from_secs(3))
        .connect_lazy();
    Ok(ShardManagerClient::new(channel))
}

/// Registers with the shard manager, retrying for up to `patience`. A node
/// that registered before presents its id (from `data_dir/node_id`), so an
/// id is allocated once per data directory and never reused.
pub async fn register(config: &NodeConfig, client: &mut SmClient, patience: Duration) -> anyhow::Result<NodeId> {
    let recorded = identity::recorded(&config.data_dir)?;
    if let (Some(recorded), Some(configured)) = (recorded, config.node_id) {
        identity::ensure_same(&config.data_dir, recorded, configured)?;
    }
    let known = recorded.or(config.node_id);
    let request = RegisterNodeRequest {
        node_id: known.map(|id| id.0).unwrap_or(0),
        client_addr: config.client_addr().to_string(),
        raft_addr: config.raft_addr().to_string(),
        region: config.region.clone(),
        labels: Default::default(),
    };
    let deadline = tokio::time::Instant::now() + patience;
    let id = loop {
        match client.register_node(request.clone()).await {
            Ok(reply) => break NodeId(reply.into_inner().node_id),
            // Unavailable: not up yet; anything else is a real refusal.
            Err(status) if status.code() == tonic::Code::Unavailable && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(status) => anyhow::bail!("registering with the shard manager: {}", status.message()),
        }
    };
    if recorded != Some(id) {
        identity::record(&config.data_dir, id)?;
    }
    Ok(id)
}

/// The shard map as a layout this node can serve.
pub fn layout_from_map(map: &ShardMap) -> anyhow::Result<ClusterLayout> {
    let layout = ClusterLayout {
        version: map.version,
        // Removed nodes stay: one may still be listed until its replicas
        // are rebuilt elsewhere.
        nodes: map
            .nodes
            .iter()
            .map(|n| NodeLayout {
                id: NodeId(n.node_id),
                client_addr: n.client_addr.clone(),
                raft_addr: n.raft_addr.clone(),
                region: n.region.clone(),
            })
            .collect(),
        keyspaces: map
            .keyspaces
            .iter()
            .map(|k| {
                Ok(KeyspaceLayout {
                    name: k.name.clone(),
                    id: KeyspaceId(k.keyspace_id),
                    ushard_count: k.ushard_count,
                    shards: k.shard_ids.iter().copied().map(ShardId).collect(),
                    mapping: mapping_from_proto(k.mapping),
                    map: map_from_runs(&k.name, k.ushard_count, &k.ushard_runs)?,
                    home: map_from_runs(&k.name, k.ushard_count, &k.home_runs)?,
                    retired: k.retired_shard_ids.iter().copied().map(ShardId).collect(),
                })
            })
            .collect::<anyhow::Result<_>>()?,
        shards: map
            .shards
            .iter()
            .map(|s| {
                // While catching up, the added replica is a learner; while
                // promoting, the removed one is still hosted.
                let mut learners: Vec<NodeId> = s.learners.iter().copied().map(NodeId).collect();
                let mut leaving = Vec::new();
                match s.change_phase.as_str() {
                    "catching-up" => learners.push(NodeId(s.adding)),
                    "promoting" => leaving.push(NodeId(s.removing)),
                    _ => {}
                }
                ShardLayout {
                    id: ShardId(s.shard_id),
                    replicas: s.voters.iter().copied().map(NodeId).collect(),
                    learners,
                    leaving,
                    conf_ver: s.conf_ver,
                    primary: (s.primary != 0).then_some(NodeId(s.primary)),
                    epoch: Epoch(s.epoch),
                }
            })
            .collect(),
    };
    layout.validate().context("the shard map is not a valid layout")?;
    Ok(layout)
}

pub async fn fetch_layout(client: &mut SmClient) -> anyhow::Result<ClusterLayout> {
    let map = client
        .get_shard_map(GetShardMapRequest {})
        .await
        .context("fetching the shard map")?
        .into_inner();
    layout_from_map(&map)
}

/// Turns each replica's served-request counter into a rate between two
/// heartbeats.
#[derive(Default)]
pub struct LoadMeter {
    last: HashMap<ShardId, (u64, Instant)>,
}

impl LoadMeter {
    /// Requests per second since the previous call for `shard` (0 the first time).
    pub fn rate(&mut self, shard: ShardId, served: u64, now: Instant) -> f64 {
        let rate = match self.last.get(&shard) {
            Some((before, at)) if now > *at => served.saturating_sub(*before) as f64 / (now - *at).as_secs_f64(),
            _ => 0.0,
        };
        self.last.insert(shard, (served, now));
        rate
    }
}

fn reports(host: &NodeHost, meter: &mut LoadMeter) -> Vec<ReplicaReport> {
    let now = Instant::now();
    host.replicas()
        .iter()
        .map(|replica| {
            let m = replica.metrics();
            let role = crate::rpc::admin_service::role_name(m.state);
            let mut report = ReplicaReport {
                shard_id: replica.id.0,
                role: role.into(),
                term: m.current_term,
                applied_index: m.last_applied.map(|id| id.index()).unwrap_or(0),
                leader_id: m.current_leader.unwrap_or(0),
                approx_bytes: replica.approximate_bytes(),
                ops_per_sec: meter.rate(replica.id, replica.served(), now),
                ..Default::default()
            };
            // The shard manager drives repair from the leader's view of the
            // group: its *committed* membership (a replica may only be
            // deleted once a membership without it is committed) and each
            // peer's progress.
            if m.state == ServerState::Leader {
                let membership = m.committed_membership_config.membership();
                report.voters = membership.voter_ids().collect();
                report.learners = membership.learner_ids().collect();
                report.joint = membership.get_joint_config().len() > 1;
                report.last_log_index = m.last_log_index.unwrap_or(0);
                report.matched_index = m
                    .replication
                    .iter()
                    .flatten()
                    .map(|(node, matched)| (*node, matched.as_ref().map(|id| id.index()).unwrap_or(0)))
                    .collect();
            }
            report
        })
        .collect()
}

/// One heartbeat, and a map refresh when the shard manager has a newer one.
/// Returns the nodes the shard manager sees alive.
async fn beat(
    host: &NodeHost,
    config: &NodeConfig,
    client: &mut SmClient,
    meter: &mut LoadMeter,
) -> anyhow::Result<Vec<NodeId>> {
    if crate::failpoints::is_on("sm-heartbeat") {
        anyhow::bail!("failpoint sm-heartbeat");
    }
    host.pass_shard_manager_link(true).await?;
    let request = HeartbeatRequest {
        node_id: host.node_id.0,
        replicas: reports(host, meter),
        heat: host
            .heat
            .take()
            .into_iter()
            .map(|c| shoal_proto::sm::UshardHeat {
                keyspace_id: c.keyspace.0,
                ushard: c.ushard.0,
                ops_by_region: c.ops_by_region.into_iter().collect(),
            })
            .collect(),
    };
    let reply = client.heartbeat(request).await.context("heartbeat")?.into_inner();
    host.pass_shard_manager_link(false).await?;
    if reply.map_version > host.layout().version {
        let layout = fetch_layout(client).await?;
        if host.set_layout(layout) {
            tracing::info!(version = reply.map_version, "installed a new shard map");
        }
    }
    // Also after a sync that failed: it is retried every beat until it works.
    if host.needs_sync() {
        host.sync_shards(config).await?;
    }
    Ok(reply.alive_nodes.into_iter().map(NodeId).collect())
}

/// How recently the target of a leadership hand-off must have acknowledged
/// this leader's heartbeat.
const TARGET_FRESHNESS: Duration = Duration::from_millis(300);

/// Least time between two leadership hand-offs of one shard.
const TRANSFER_COOLDOWN: Duration = Duration::from_secs(3);

/// Hands Raft leadership of the shards this node leads to the primary the
/// shard manager chose, when that primary is alive. Raft keeps electing on
/// its own (that is what makes failover fast); this only moves leadership
/// to where placement wants it, e.g. to balance primaries or to honour a
/// preferred region.
async fn align_leaders(host: &NodeHost, alive: &[NodeId], last_transfer: &mut HashMap<ShardId, Instant>) {
    let layout = host.layout();
    for replica in host.replicas() {
        let Some(primary) = layout.shard(replica.id).and_then(|s| s.primary) else {
            continue;
        };
        if primary == host.node_id || !alive.contains(&primary) {
            continue;
        }
        let metrics = replica.metrics();
        // A transfer stops this leader from proposing until the target takes
        // over, so only hand off to a target that answered Raft just now:
        // the shard manager's "alive" lags a kill -9 by its suspicion time.
        let target_answering = metrics
            .heartbeat
            .as_ref()
            .and_then(|acks| acks.get(&primary.0).cloned().flatten())
            .is_some_and(|acked| openraft::Instant::elapsed(&*acked) < TARGET_FRESHNESS);
        if metrics.state != ServerState::Leader || !target_answering {
            continue;
        }
        if last_transfer
            .get(&replica.id)
            .is_some_and(|at| at.elapsed() < TRANSFER_COOLDOWN)
        {
            continue;
        }
        last_transfer.insert(replica.id, Instant::now());
        tracing::info!(shard_id = %replica.id, to = %primary, "handing leadership to the shard manager's primary");
        replica.freshness().note_transfer();
        if let Err(e) = replica.raft.trigger().transfer_leader(primary.0).await {
            tracing::warn!(shard_id = %replica.id, error = %e, "leader transfer failed");
        }
    }
}

/// Heartbeats until `stop` says so.
pub async fn heartbeat_loop(
    host: Arc<NodeHost>,
    config: NodeConfig,
    mut client: SmClient,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(config.sm_heartbeat_interval_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    let mut last_transfer = HashMap::new();
    let membership = MembershipDriver::default();
    let mut meter = LoadMeter::default();
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tick.tick() => {}
            _ = host.map_refresh_requested() => {}
        }
        match beat(&host, &config, &mut client, &mut meter).await {
            Ok(alive) => {
                if failing {
                    failing = false;
                    tracing::info!("shard manager reachable again");
                }
                align_leaders(&host, &alive, &mut last_transfer).await;
                // Right after a successful beat the map is the shard
                // manager's latest, which is when acting on it is safest.
                membership.drive(&host);
            }
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %format!("{e:#}"), "shard manager unreachable; serving with the map we have");
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_is_a_rate_between_two_reports() {
        let mut meter = LoadMeter::default();
        let t0 = Instant::now();
        assert_eq!(meter.rate(ShardId(1), 100, t0), 0.0, "no rate before a second sample");
        let rate = meter.rate(ShardId(1), 600, t0 + Duration::from_millis(500));
        assert!((rate - 1000.0).abs() < 1e-6, "{rate}");
        assert_eq!(meter.rate(ShardId(2), 5, t0), 0.0, "per shard");
    }
}
