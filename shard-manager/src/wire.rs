//! The one place where the shard manager's records meet protobuf: typed
//! ids ([`NodeId`], [`ShardId`], [`Epoch`](crate::model::Epoch)) become the wire's plain numbers
//! here and nowhere else, and "no primary" / "no change" become the wire's 0.

use crate::manager::{KeyspaceSpec, Registration, ReplicaView};
use crate::model::{
    KeyspaceRecord, Liveness, Mapping, MovePhase, MoveRecord, NodeId, NodeRecord, ShardId, ShardRecord, UshardMap,
};
use crate::moves::MoveProgress;
use crate::repair::LeaderView;
use crate::store::DurableState;
use shoal_proto::{admin, sm};
use std::time::Duration;

/// The wire's "none" for an optional node id.
const NO_NODE: u64 = 0;

fn node_ids(ids: &[NodeId]) -> Vec<u64> {
    ids.iter().map(|id| id.0).collect()
}

pub fn keyspace_state(k: &KeyspaceRecord) -> sm::KeyspaceState {
    sm::KeyspaceState {
        name: k.name.clone(),
        keyspace_id: k.id.0,
        replicas: k.replicas,
        ushard_count: k.ushard_count,
        shard_ids: k.shards.iter().map(|id| id.0).collect(),
        regions: k.regions.clone(),
        preferred_region: k.preferred_region.clone(),
        learner_regions: k.learner_regions.clone(),
        mapping: mapping_to_proto(k.mapping),
        ushard_runs: runs_to_proto(k.map.as_ref()),
        home_runs: runs_to_proto(k.home.as_ref()),
        retired_shard_ids: k.retired.iter().map(|id| id.0).collect(),
        retiring_shard_ids: k.retiring.iter().map(|id| id.0).collect(),
        pins: k.pins.iter().map(|(u, r)| (*u, r.clone())).collect(),
    }
}

pub fn locality_decision(logged: &crate::manager::LoggedDecision) -> sm::LocalityDecision {
    let d = &logged.decision;
    sm::LocalityDecision {
        at_ms: logged.at_ms,
        keyspace: d.keyspace.clone(),
        ushard: d.ushard.1,
        action: d.action.name().to_string(),
        from_region: d.from_region.clone(),
        to_region: d.to_region.clone(),
        reason: d.reason.clone(),
        move_id: logged.move_id,
    }
}

fn runs_to_proto(map: Option<&UshardMap>) -> Vec<admin::UshardRun> {
    map.map(|m| m.runs())
        .unwrap_or_default()
        .iter()
        .map(|r| admin::UshardRun {
            first_ushard: r.first.0,
            shard_id: r.shard.0,
        })
        .collect()
}

fn mapping_to_proto(mapping: Mapping) -> i32 {
    match mapping {
        Mapping::Compact => admin::UshardMapping::Compact as i32,
        Mapping::Akkio => admin::UshardMapping::Akkio as i32,
    }
}

/// Unspecified reads as compact; a value this build does not know is refused.
pub fn mapping_from_proto(raw: i32) -> Option<Mapping> {
    match admin::UshardMapping::try_from(raw).ok()? {
        admin::UshardMapping::Unspecified | admin::UshardMapping::Compact => Some(Mapping::Compact),
        admin::UshardMapping::Akkio => Some(Mapping::Akkio),
    }
}

/// A shard as the map shows it; `max_lag` from its leader's last report.
pub fn shard_state(s: &ShardRecord, max_lag: u64) -> sm::ShardState {
    sm::ShardState {
        shard_id: s.id.0,
        keyspace: s.keyspace.clone(),
        voters: node_ids(&s.voters),
        learners: node_ids(&s.learners),
        primary: s.primary.map_or(NO_NODE, |p| p.0),
        epoch: s.epoch.0,
        conf_ver: s.conf_ver,
        adding: s.change.as_ref().map_or(NO_NODE, |c| c.adding.0),
        removing: s.change.as_ref().map_or(NO_NODE, |c| c.removing.0),
        change_phase: s
            .change
            .as_ref()
            .map(|c| c.phase.name().to_string())
            .unwrap_or_default(),
        max_lag,
    }
}

/// What the manager observes about a node besides its record.
pub struct NodeObservation {
    pub liveness: Liveness,
    pub since_heartbeat: Option<Duration>,
    pub replica_count: u32,
    pub primary_count: u32,
    pub approx_bytes: u64,
    pub ops_per_sec: f64,
}

pub fn node_state(n: &NodeRecord, seen: NodeObservation) -> sm::NodeState {
    sm::NodeState {
        node_id: n.id.0,
        client_addr: n.client_addr.clone(),
        raft_addr: n.raft_addr.clone(),
        region: n.region.clone(),
        labels: n.labels.clone().into_iter().collect(),
        liveness: seen.liveness.name().to_string(),
        ms_since_heartbeat: seen.since_heartbeat.map_or(u64::MAX, |a| a.as_millis() as u64),
        intent: n.intent.name().to_string(),
        replica_count: seen.replica_count,
        primary_count: seen.primary_count,
        approx_bytes: seen.approx_bytes,
        ops_per_sec: seen.ops_per_sec,
    }
}

pub fn registration(r: sm::RegisterNodeRequest) -> Registration {
    Registration {
        node_id: (r.node_id != NO_NODE).then_some(NodeId(r.node_id)),
        client_addr: r.client_addr,
        raft_addr: r.raft_addr,
        region: r.region,
        labels: r.labels.into_iter().collect(),
    }
}

/// A move as the map and `GetMove` show it, with the destination's last
/// progress report while it copies.
pub fn move_state(m: &MoveRecord, progress: Option<&MoveProgress>) -> sm::MoveState {
    // The step only while copying; bytes and time stay once past it.
    let copying = m.phase == MovePhase::Copying;
    sm::MoveState {
        move_id: m.id,
        keyspace: m.keyspace.clone(),
        ushard: m.ushard.0,
        from_shard: m.from.0,
        to_shard: m.to.0,
        phase: m.phase.name().to_string(),
        reason: m.reason.clone(),
        error: m.error.clone(),
        step: progress
            .filter(|_| copying)
            .map(|p| p.phase.clone())
            .unwrap_or_default(),
        bytes_copied: progress.map_or(0, |p| p.bytes_copied),
        elapsed_ms: progress.map_or(0, |p| p.elapsed_ms),
    }
}

/// The keyspace a request asks for; `None` for a mapping this build does
/// not know.
pub fn keyspace_spec(r: sm::CreateKeyspaceRequest) -> Option<KeyspaceSpec> {
    Some(KeyspaceSpec {
        mapping: mapping_from_proto(r.mapping)?,
        name: r.name,
        replicas: r.replicas,
        shards: r.shards,
        ushards: r.ushards,
        regions: r.regions,
        preferred_region: r.preferred_region,
        learner_regions: r.learner_regions,
    })
}

pub fn replica_view(r: &sm::ReplicaReport) -> ReplicaView {
    ReplicaView {
        shard: ShardId(r.shard_id),
        is_leader: r.role == "leader",
        term: r.term,
        applied_index: r.applied_index,
        raft: leader_view(r),
        approx_bytes: r.approx_bytes,
        ops_per_sec: r.ops_per_sec,
    }
}

/// What a leader's report says about its Raft group (its `node` is filled
/// in by the manager, which knows who sent the report).
fn leader_view(r: &sm::ReplicaReport) -> Option<LeaderView> {
    (r.role == "leader").then(|| LeaderView {
        node: NodeId::default(),
        voters: r.voters.iter().copied().map(NodeId).collect(),
        learners: r.learners.iter().copied().map(NodeId).collect(),
        joint: r.joint,
        last_log_index: r.last_log_index,
        matched_index: r.matched_index.iter().map(|(k, v)| (NodeId(*k), *v)).collect(),
    })
}

/// The map as clients see it: voters, learners, primaries and epochs; no
/// Raft addresses. Removed nodes stay listed: a shard may name one until
/// its replica is rebuilt elsewhere.
pub fn client_layout(state: &DurableState) -> admin::Layout {
    admin::Layout {
        version: state.counters.map_version,
        nodes: state
            .nodes
            .values()
            .map(|n| admin::NodeInfo {
                node_id: n.id.0,
                client_addr: n.client_addr.clone(),
                raft_addr: String::new(),
                region: n.region.clone(),
            })
            .collect(),
        keyspaces: state
            .keyspaces
            .values()
            .map(|k| admin::KeyspaceInfo {
                name: k.name.clone(),
                keyspace_id: k.id.0,
                ushard_count: k.ushard_count,
                shard_ids: k.shards.iter().map(|id| id.0).collect(),
                mapping: mapping_to_proto(k.mapping),
                ushard_runs: runs_to_proto(k.map.as_ref()),
            })
            .collect(),
        shards: state
            .shards
            .values()
            .map(|s| admin::ShardInfo {
                shard_id: s.id.0,
                replicas: node_ids(&s.voters),
                primary: s.primary.map_or(NO_NODE, |p| p.0),
                epoch: s.epoch.0,
                learners: node_ids(&s.learners),
            })
            .collect(),
    }
}
