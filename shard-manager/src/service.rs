//! The `shoal.sm.v1.ShardManager` gRPC service and the one mapping from
//! [`SmError`] to a status.

use crate::manager::{KeyspaceSpec, Manager, Registration, ReplicaView, SmError};
use crate::model::{KeyspaceRecord, NodeRecord, ShardRecord};
use crate::repair::LeaderView;
use shoal_proto::sm::shard_manager_server::ShardManager;
use shoal_proto::sm::*;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct ShardManagerService {
    manager: Arc<Manager>,
}

impl ShardManagerService {
    pub fn new(manager: Arc<Manager>) -> ShardManagerService {
        ShardManagerService { manager }
    }
}

pub fn to_status(error: SmError) -> Status {
    match &error {
        SmError::InvalidArgument(_) => Status::invalid_argument(error.to_string()),
        SmError::AlreadyExists(_) => Status::already_exists(error.to_string()),
        SmError::UnknownNode(_) | SmError::UnknownShard(_) => Status::not_found(error.to_string()),
        SmError::NodeRemoved(_) | SmError::FailedPrecondition(_) => Status::failed_precondition(error.to_string()),
        SmError::Placement(_) => Status::failed_precondition(error.to_string()),
        SmError::Storage(_) => Status::internal(error.to_string()),
    }
}

fn keyspace_state(k: &KeyspaceRecord) -> KeyspaceState {
    KeyspaceState {
        name: k.name.clone(),
        keyspace_id: k.id,
        replicas: k.replicas,
        ushard_count: k.ushard_count,
        shard_ids: k.shards.clone(),
        regions: k.regions.clone(),
        preferred_region: k.preferred_region.clone(),
        learner_regions: k.learner_regions.clone(),
    }
}

/// A shard as the map shows it; `max_lag` from its leader's last report.
fn shard_state(s: &ShardRecord, max_lag: u64) -> ShardState {
    ShardState {
        shard_id: s.id,
        keyspace: s.keyspace.clone(),
        voters: s.voters.clone(),
        learners: s.learners.clone(),
        primary: s.primary.unwrap_or(0),
        epoch: s.epoch,
        conf_ver: s.conf_ver,
        adding: s.change.as_ref().map(|c| c.adding).unwrap_or(0),
        removing: s.change.as_ref().map(|c| c.removing).unwrap_or(0),
        change_phase: s
            .change
            .as_ref()
            .map(|c| c.phase.name().to_string())
            .unwrap_or_default(),
        max_lag,
    }
}

impl ShardManagerService {
    fn node_state(&self, n: &NodeRecord) -> NodeState {
        let (liveness, age) = self.manager.liveness_of(n.id);
        let (replica_count, primary_count) = self.manager.node_load(n.id);
        let (approx_bytes, ops_per_sec) = self.manager.node_usage(n.id);
        NodeState {
            node_id: n.id,
            client_addr: n.client_addr.clone(),
            raft_addr: n.raft_addr.clone(),
            region: n.region.clone(),
            labels: n.labels.clone().into_iter().collect(),
            liveness: liveness.name().to_string(),
            ms_since_heartbeat: age.map(|a| a.as_millis() as u64).unwrap_or(u64::MAX),
            intent: n.intent.name().to_string(),
            replica_count,
            primary_count,
            approx_bytes,
            ops_per_sec,
        }
    }
}

#[cfg(feature = "failpoints")]
fn set_clock_offset(manager: &Manager, offset_ms: i64) -> Result<(), Status> {
    tracing::warn!(offset_ms, "clock offset injected");
    manager.clock().set_offset_ms(offset_ms);
    Ok(())
}

#[cfg(not(feature = "failpoints"))]
fn set_clock_offset(_manager: &Manager, _offset_ms: i64) -> Result<(), Status> {
    Err(Status::unimplemented(
        "this shard-manager was built without the `failpoints` feature",
    ))
}

/// What a leader's report says about its Raft group.
fn leader_view(r: &ReplicaReport) -> Option<LeaderView> {
    (r.role == "leader").then(|| LeaderView {
        node: 0,
        voters: r.voters.iter().copied().collect(),
        learners: r.learners.iter().copied().collect(),
        joint: r.joint,
        last_log_index: r.last_log_index,
        matched_index: r.matched_index.iter().map(|(k, v)| (*k, *v)).collect(),
    })
}

#[tonic::async_trait]
impl ShardManager for ShardManagerService {
    async fn register_node(
        &self,
        request: Request<RegisterNodeRequest>,
    ) -> Result<Response<RegisterNodeResponse>, Status> {
        let r = request.into_inner();
        let id = self
            .manager
            .register(Registration {
                node_id: r.node_id,
                client_addr: r.client_addr,
                raft_addr: r.raft_addr,
                region: r.region,
                labels: r.labels.into_iter().collect(),
            })
            .map_err(to_status)?;
        Ok(Response::new(RegisterNodeResponse { node_id: id }))
    }

    async fn heartbeat(&self, request: Request<HeartbeatRequest>) -> Result<Response<HeartbeatResponse>, Status> {
        let request = request.into_inner();
        let views = request
            .replicas
            .iter()
            .map(|r| ReplicaView {
                shard: r.shard_id,
                is_leader: r.role == "leader",
                term: r.term,
                applied_index: r.applied_index,
                raft: leader_view(r),
                approx_bytes: r.approx_bytes,
                ops_per_sec: r.ops_per_sec,
            })
            .collect();
        let map_version = self.manager.heartbeat(request.node_id, views).map_err(to_status)?;
        let alive_nodes = self.manager.alive_nodes();
        Ok(Response::new(HeartbeatResponse {
            map_version,
            alive_nodes,
        }))
    }

    async fn create_keyspace(
        &self,
        request: Request<CreateKeyspaceRequest>,
    ) -> Result<Response<KeyspaceState>, Status> {
        let r = request.into_inner();
        let spec = KeyspaceSpec {
            name: r.name,
            replicas: r.replicas,
            shards: r.shards,
            ushards: r.ushards,
            regions: r.regions,
            preferred_region: r.preferred_region,
            learner_regions: r.learner_regions,
        };
        let keyspace = self.manager.create_keyspace(spec).map_err(to_status)?;
        Ok(Response::new(keyspace_state(&keyspace)))
    }

    async fn move_primary(&self, request: Request<MovePrimaryRequest>) -> Result<Response<ShardState>, Status> {
        let r = request.into_inner();
        let shard = self.manager.move_primary(r.shard_id, r.node_id).map_err(to_status)?;
        let lag = self.manager.shard_lags().get(&shard.id).copied().unwrap_or(0);
        Ok(Response::new(shard_state(&shard, lag)))
    }

    async fn drain_node(&self, request: Request<NodeRequest>) -> Result<Response<NodeState>, Status> {
        let node = self
            .manager
            .drain_node(request.into_inner().node_id)
            .map_err(to_status)?;
        Ok(Response::new(self.node_state(&node)))
    }

    async fn set_clock_offset(&self, request: Request<ClockOffset>) -> Result<Response<ClockOffset>, Status> {
        set_clock_offset(&self.manager, request.into_inner().offset_ms)?;
        Ok(Response::new(ClockOffset {
            offset_ms: self.manager.clock().offset_ms(),
        }))
    }

    async fn activate_node(&self, request: Request<NodeRequest>) -> Result<Response<NodeState>, Status> {
        let node = self
            .manager
            .activate_node(request.into_inner().node_id)
            .map_err(to_status)?;
        Ok(Response::new(self.node_state(&node)))
    }

    async fn remove_node(&self, request: Request<NodeRequest>) -> Result<Response<NodeState>, Status> {
        let node = self
            .manager
            .remove_node(request.into_inner().node_id)
            .map_err(to_status)?;
        Ok(Response::new(self.node_state(&node)))
    }

    async fn get_shard_map(&self, _request: Request<GetShardMapRequest>) -> Result<Response<ShardMap>, Status> {
        let state = self.manager.snapshot();
        let nodes = state.nodes.values().map(|n| self.node_state(n)).collect();
        let lags = self.manager.shard_lags();
        let shards = state
            .shards
            .values()
            .map(|s| shard_state(s, lags.get(&s.id).copied().unwrap_or(0)))
            .collect();
        Ok(Response::new(ShardMap {
            version: state.counters.map_version,
            nodes,
            keyspaces: state.keyspaces.values().map(keyspace_state).collect(),
            shards,
        }))
    }
}
