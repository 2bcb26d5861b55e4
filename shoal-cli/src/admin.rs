//! Admin commands: node status (asks the nodes), cluster status and
//! keyspace creation (ask the shard manager).

use crate::connect::{channel, shard_manager};
use crate::{client_config, Cli};
use shoal_proto::admin::admin_client::AdminClient;
use shoal_proto::admin::{ReplicaStatusRequest, ReplicaStatusResponse};
use shoal_proto::sm::{CreateKeyspaceRequest, GetShardMapRequest, MovePrimaryRequest, NodeRequest, NodeState};
use std::collections::HashMap;

async fn replica_status(addr: &str) -> anyhow::Result<ReplicaStatusResponse> {
    Ok(AdminClient::new(channel(addr).await?)
        .replica_status(ReplicaStatusRequest {})
        .await?
        .into_inner())
}

pub async fn node_status(cli: &Cli) -> anyhow::Result<()> {
    let config = client_config(cli)?;
    let layout = kv_client::routing::fetch_layout(&config.endpoints).await?;
    println!("shard map version {}", layout.version);
    for ks in &layout.keyspaces {
        println!(
            "keyspace {} (id {}): {} ushards over shards {:?}",
            ks.name, ks.keyspace_id, ks.ushard_count, ks.shard_ids
        );
    }
    println!(
        "{:<6} {:<22} {:<8} {:<11} {:<6} {:<8} {:>9} {:>9} {:>9}",
        "node", "address", "shard", "role", "term", "leader", "applied", "last_log", "snapshot"
    );
    for node in &layout.nodes {
        match replica_status(&node.client_addr).await {
            Ok(status) => {
                for r in status.replicas {
                    println!(
                        "{:<6} {:<22} {:<8} {:<11} {:<6} {:<8} {:>9} {:>9} {:>9}",
                        node.node_id,
                        node.client_addr,
                        r.shard_id,
                        r.role,
                        r.term,
                        r.leader_id,
                        r.applied_index,
                        r.last_log_index,
                        r.snapshot_index
                    );
                }
            }
            Err(e) => println!("{:<6} {:<22} DOWN ({e:#})", node.node_id, node.client_addr),
        }
    }
    Ok(())
}

pub async fn cluster_status(cli: &Cli) -> anyhow::Result<()> {
    let map = shard_manager(cli)
        .await?
        .get_shard_map(GetShardMapRequest {})
        .await?
        .into_inner();
    println!("shard map version {}", map.version);
    println!(
        "{:<6} {:<22} {:<10} {:<9} {:<9} {:>8} {:>9} {:>9} {:>8} {:>12}",
        "node", "address", "region", "liveness", "intent", "replicas", "primaries", "disk_mb", "ops/s", "last_hb_ms"
    );
    // Who actually leads each shard, as the live nodes see it.
    let mut raft_leaders: HashMap<u64, u64> = HashMap::new();
    for node in &map.nodes {
        let age = if node.ms_since_heartbeat == u64::MAX {
            "never".into()
        } else {
            node.ms_since_heartbeat.to_string()
        };
        println!(
            "{:<6} {:<22} {:<10} {:<9} {:<9} {:>8} {:>9} {:>9.1} {:>8.0} {:>12}",
            node.node_id,
            node.client_addr,
            node.region,
            node.liveness,
            node.intent,
            node.replica_count,
            node.primary_count,
            node.approx_bytes as f64 / (1 << 20) as f64,
            node.ops_per_sec,
            age
        );
        if node.liveness == "alive" {
            if let Ok(status) = replica_status(&node.client_addr).await {
                for r in status.replicas.iter().filter(|r| r.role == "leader") {
                    raft_leaders.insert(r.shard_id, node.node_id);
                }
            }
        }
    }
    for ks in &map.keyspaces {
        println!(
            "keyspace {} (id {}): {} replicas, {} ushards, regions {:?}, preferred {:?}, learner regions {:?}",
            ks.name, ks.keyspace_id, ks.replicas, ks.ushard_count, ks.regions, ks.preferred_region, ks.learner_regions
        );
    }
    println!(
        "{:<7} {:<12} {:<14} {:<10} {:<8} {:<6} {:<5} {:<12} {:>7} {:<24}",
        "shard", "keyspace", "voters", "learners", "primary", "epoch", "conf", "raft_leader", "max_lag", "change"
    );
    let list = |ids: &[u64]| {
        if ids.is_empty() {
            "-".to_string()
        } else {
            ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
        }
    };
    for s in &map.shards {
        let leader = raft_leaders
            .get(&s.shard_id)
            .map(u64::to_string)
            .unwrap_or_else(|| "-".into());
        let change = if s.change_phase.is_empty() {
            "-".to_string()
        } else {
            format!("{} -> {} ({})", s.removing, s.adding, s.change_phase)
        };
        println!(
            "{:<7} {:<12} {:<14} {:<10} {:<8} {:<6} {:<5} {:<12} {:>7} {:<24}",
            s.shard_id,
            s.keyspace,
            list(&s.voters),
            list(&s.learners),
            s.primary,
            s.epoch,
            s.conf_ver,
            leader,
            s.max_lag,
            change
        );
    }
    crate::ushard::print_map(&map);
    Ok(())
}

fn print_node(verb: &str, n: &NodeState) {
    println!(
        "node {} {verb}: {} ({}); replicas: {}, primaries: {}",
        n.node_id, n.intent, n.liveness, n.replica_count, n.primary_count
    );
}

/// What `shoal node ...` asks of the shard manager.
#[derive(Clone, Copy)]
pub enum NodeAction {
    Drain,
    Activate,
    Remove,
}

pub async fn node_action(cli: &Cli, id: u64, action: NodeAction) -> anyhow::Result<()> {
    let mut sm = shard_manager(cli).await?;
    let request = NodeRequest { node_id: id };
    let (reply, verb) = match action {
        NodeAction::Drain => (sm.drain_node(request).await, "draining"),
        NodeAction::Activate => (sm.activate_node(request).await, "activated"),
        NodeAction::Remove => (sm.remove_node(request).await, "removed"),
    };
    let n = reply.map_err(|s| anyhow::anyhow!("{}", s.message()))?.into_inner();
    print_node(verb, &n);
    Ok(())
}

/// Asks `addr` (a node or the shard manager) for the layout.
pub async fn health(addr: &str) -> anyhow::Result<()> {
    let layout = AdminClient::new(channel(addr).await?)
        .get_layout(shoal_proto::admin::GetLayoutRequest {})
        .await
        .map_err(|s| anyhow::anyhow!("{addr}: {}", s.message()))?
        .into_inner();
    println!("{addr} answers (map version {})", layout.version);
    Ok(())
}

pub async fn create_keyspace(cli: &Cli, request: CreateKeyspaceRequest, if_not_exists: bool) -> anyhow::Result<()> {
    let name = request.name.clone();
    let ks = match shard_manager(cli).await?.create_keyspace(request).await {
        Ok(reply) => reply.into_inner(),
        Err(s) if if_not_exists && s.code() == tonic::Code::AlreadyExists => {
            println!("keyspace {name} exists");
            return Ok(());
        }
        Err(s) => anyhow::bail!("{}", s.message()),
    };
    println!(
        "created keyspace {} (id {}) with shards {:?}",
        ks.name, ks.keyspace_id, ks.shard_ids
    );
    Ok(())
}

pub async fn move_primary(cli: &Cli, shard: u64, node: u64) -> anyhow::Result<()> {
    let s = shard_manager(cli)
        .await?
        .move_primary(MovePrimaryRequest {
            shard_id: shard,
            node_id: node,
        })
        .await
        .map_err(|s| anyhow::anyhow!("{}", s.message()))?
        .into_inner();
    println!(
        "shard {} primary is now node {} (epoch {})",
        s.shard_id, s.primary, s.epoch
    );
    Ok(())
}
