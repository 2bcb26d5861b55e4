//! The `shoal.sm.v1.ShardManager` gRPC service and the one mapping from
//! [`SmError`] to a status.

use crate::manager::{Manager, MoveCause, MoveRefusal, SmError};
use crate::model::{KeyspaceId, MoveRecord, NodeId, NodeRecord, ShardId};
use crate::moves::MoveDriver;
use crate::wire::{self, keyspace_state, shard_state, NodeObservation};
use shoal_proto::sm::shard_manager_server::ShardManager;
use shoal_proto::sm::*;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct ShardManagerService {
    manager: Arc<Manager>,
    moves: Arc<MoveDriver>,
}

impl ShardManagerService {
    pub fn new(manager: Arc<Manager>, moves: Arc<MoveDriver>) -> ShardManagerService {
        ShardManagerService { manager, moves }
    }

    fn move_state(&self, record: &MoveRecord) -> MoveState {
        wire::move_state(record, self.moves.progress(record.id).as_ref())
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
        SmError::Move(refusal) => {
            let mut status = match refusal {
                MoveRefusal::UnknownKeyspace(_) | MoveRefusal::UnknownShard(_) | MoveRefusal::UnknownMove(_) => {
                    Status::not_found(error.to_string())
                }
                MoveRefusal::UshardOutOfRange { .. } | MoveRefusal::UnknownRegion { .. } => {
                    Status::invalid_argument(error.to_string())
                }
                _ => Status::failed_precondition(error.to_string()),
            };
            if let Ok(code) = refusal.code().parse() {
                status.metadata_mut().insert(shoal_proto::ERROR_CODE_METADATA, code);
            }
            status
        }
    }
}

impl ShardManagerService {
    fn node_state(&self, n: &NodeRecord) -> NodeState {
        let (liveness, since_heartbeat) = self.manager.liveness_of(n.id);
        let (replica_count, primary_count) = self.manager.node_load(n.id);
        let (approx_bytes, ops_per_sec) = self.manager.node_usage(n.id);
        wire::node_state(
            n,
            NodeObservation {
                liveness,
                since_heartbeat,
                replica_count,
                primary_count,
                approx_bytes,
                ops_per_sec,
            },
        )
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

#[tonic::async_trait]
impl ShardManager for ShardManagerService {
    async fn register_node(
        &self,
        request: Request<RegisterNodeRequest>,
    ) -> Result<Response<RegisterNodeResponse>, Status> {
        let registration = wire::registration(request.into_inner());
        let id = self.manager.register(registration).map_err(to_status)?;
        Ok(Response::new(RegisterNodeResponse { node_id: id.0 }))
    }

    async fn heartbeat(&self, request: Request<HeartbeatRequest>) -> Result<Response<HeartbeatResponse>, Status> {
        let request = request.into_inner();
        let views = request.replicas.iter().map(wire::replica_view).collect();
        self.manager.record_heat(request.heat.into_iter().flat_map(|h| {
            let key = (KeyspaceId(h.keyspace_id), h.ushard);
            h.ops_by_region.into_iter().map(move |(region, ops)| (key, region, ops))
        }));
        let map_version = self
            .manager
            .heartbeat(NodeId(request.node_id), views)
            .map_err(to_status)?;
        let alive_nodes = self.manager.alive_nodes().into_iter().map(|id| id.0).collect();
        Ok(Response::new(HeartbeatResponse {
            map_version,
            alive_nodes,
        }))
    }

    async fn create_keyspace(
        &self,
        request: Request<CreateKeyspaceRequest>,
    ) -> Result<Response<KeyspaceState>, Status> {
        let raw = request.into_inner();
        let mapping = raw.mapping;
        let spec = wire::keyspace_spec(raw).ok_or_else(|| {
            to_status(SmError::InvalidArgument(format!(
                "mapping {mapping}: not one this shard manager knows (compact or akkio)"
            )))
        })?;
        let keyspace = self.manager.create_keyspace(spec).map_err(to_status)?;
        Ok(Response::new(keyspace_state(&keyspace)))
    }

    async fn move_primary(&self, request: Request<MovePrimaryRequest>) -> Result<Response<ShardState>, Status> {
        let r = request.into_inner();
        let shard = self
            .manager
            .move_primary(ShardId(r.shard_id), NodeId(r.node_id))
            .map_err(to_status)?;
        let lag = self.manager.shard_lags().get(&shard.id).copied().unwrap_or(0);
        Ok(Response::new(shard_state(&shard, lag)))
    }

    async fn drain_node(&self, request: Request<NodeRequest>) -> Result<Response<NodeState>, Status> {
        let node = self
            .manager
            .drain_node(NodeId(request.into_inner().node_id))
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
            .activate_node(NodeId(request.into_inner().node_id))
            .map_err(to_status)?;
        Ok(Response::new(self.node_state(&node)))
    }

    async fn remove_node(&self, request: Request<NodeRequest>) -> Result<Response<NodeState>, Status> {
        let node = self
            .manager
            .remove_node(NodeId(request.into_inner().node_id))
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
            moves: state.moves.values().map(|m| self.move_state(m)).collect(),
            locality: self
                .manager
                .locality_log()
                .iter()
                .map(wire::locality_decision)
                .collect(),
        }))
    }

    async fn pin_ushard(&self, request: Request<PinUshardRequest>) -> Result<Response<PinUshardResponse>, Status> {
        let r = request.into_inner();
        let pins = self
            .manager
            .pin_ushard(&r.keyspace, r.ushard, &r.region)
            .map_err(to_status)?;
        Ok(Response::new(PinUshardResponse {
            pins: pins.into_iter().collect(),
        }))
    }

    async fn move_ushard(&self, request: Request<MoveUshardRequest>) -> Result<Response<MoveState>, Status> {
        let r = request.into_inner();
        let record = self
            .manager
            .start_move(&r.keyspace, r.ushard, ShardId(r.to_shard), MoveCause::Operator, "")
            .map_err(to_status)?;
        Ok(Response::new(self.move_state(&record)))
    }

    async fn get_move(&self, request: Request<MoveRequest>) -> Result<Response<MoveState>, Status> {
        let record = self
            .manager
            .move_record(request.into_inner().move_id)
            .map_err(to_status)?;
        Ok(Response::new(self.move_state(&record)))
    }

    async fn split_shard(&self, request: Request<SplitShardRequest>) -> Result<Response<SplitShardResponse>, Status> {
        let (new_shard, moves) = self
            .manager
            .split_shard(ShardId(request.into_inner().shard_id), "")
            .map_err(to_status)?;
        Ok(Response::new(SplitShardResponse {
            new_shard_id: new_shard.0,
            moves: moves.iter().map(|m| self.move_state(m)).collect(),
        }))
    }

    async fn merge_shard(&self, request: Request<MergeShardRequest>) -> Result<Response<MergeShardResponse>, Status> {
        let r = request.into_inner();
        let moves = self
            .manager
            .merge_shard(ShardId(r.shard_id), ShardId(r.into_shard_id))
            .map_err(to_status)?;
        Ok(Response::new(MergeShardResponse {
            moves: moves.iter().map(|m| self.move_state(m)).collect(),
        }))
    }

    async fn abort_move(&self, request: Request<MoveRequest>) -> Result<Response<MoveState>, Status> {
        let record = self
            .manager
            .abort_move(request.into_inner().move_id, "aborted by an operator")
            .map_err(to_status)?;
        Ok(Response::new(self.move_state(&record)))
    }
}
