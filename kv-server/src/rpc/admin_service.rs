//! The `shoal.admin.v1.Admin` service: layout and replica status.

use crate::layout::ClusterLayout;
use crate::rpc::status::to_status;
use crate::rpc::ushard_map_wire::{mapping_to_proto, runs_to_proto};
use crate::shard::digest::shard_digest;
use crate::shard::host::NodeHost;
use openraft::ServerState;
use shoal_proto::admin::admin_server::Admin;
use shoal_proto::admin::*;
use shoal_types::ShardId;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct AdminService {
    host: Arc<NodeHost>,
}

impl AdminService {
    pub fn new(host: Arc<NodeHost>) -> AdminService {
        AdminService { host }
    }
}

/// The layout as clients see it: no Raft addresses.
pub fn layout_to_proto(layout: &ClusterLayout) -> Layout {
    Layout {
        version: layout.version,
        nodes: layout
            .nodes
            .iter()
            .map(|n| NodeInfo {
                node_id: n.id.0,
                client_addr: n.client_addr.clone(),
                raft_addr: String::new(),
                region: n.region.clone(),
            })
            .collect(),
        keyspaces: layout
            .keyspaces
            .iter()
            .map(|k| KeyspaceInfo {
                name: k.name.clone(),
                keyspace_id: k.id.0,
                ushard_count: k.ushard_count,
                shard_ids: k.shards.iter().map(|s| s.0).collect(),
                mapping: mapping_to_proto(k.mapping),
                ushard_runs: runs_to_proto(k.map.as_ref()),
            })
            .collect(),
        shards: layout
            .shards
            .iter()
            .map(|s| ShardInfo {
                shard_id: s.id.0,
                replicas: s.replicas.iter().map(|n| n.0).collect(),
                primary: s.primary.map(|p| p.0).unwrap_or(0),
                epoch: s.epoch.0,
                learners: s.learners.iter().map(|n| n.0).collect(),
            })
            .collect(),
    }
}

/// The wire name of a Raft role.
pub fn role_name(state: ServerState) -> &'static str {
    match state {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Candidate => "candidate",
        ServerState::Learner => "learner",
        ServerState::Shutdown => "shutdown",
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn get_layout(&self, _request: Request<GetLayoutRequest>) -> Result<Response<Layout>, Status> {
        Ok(Response::new(layout_to_proto(&self.host.layout())))
    }

    async fn replica_status(
        &self,
        _request: Request<ReplicaStatusRequest>,
    ) -> Result<Response<ReplicaStatusResponse>, Status> {
        let replicas = self
            .host
            .replicas()
            .iter()
            .map(|replica| {
                let m = replica.metrics();
                ReplicaStatus {
                    shard_id: replica.id.0,
                    role: role_name(m.state).to_string(),
                    term: m.current_term,
                    leader_id: m.current_leader.unwrap_or(0),
                    applied_index: m.last_applied.as_ref().map(|id| id.index()).unwrap_or(0),
                    last_log_index: m.last_log_index.unwrap_or(0),
                    snapshot_index: m.snapshot.as_ref().map(|id| id.index()).unwrap_or(0),
                    purged_index: m.purged.as_ref().map(|id| id.index()).unwrap_or(0),
                }
            })
            .collect();
        Ok(Response::new(ReplicaStatusResponse {
            node_id: self.host.node_id.0,
            replicas,
        }))
    }

    async fn shard_digest(
        &self,
        request: Request<ShardDigestRequest>,
    ) -> Result<Response<ShardDigestResponse>, Status> {
        let shard = ShardId(request.into_inner().shard_id);
        self.host.shard(shard).map_err(to_status)?;
        let d = shard_digest(self.host.engine(), self.host.horizons(), shard)
            .await
            .map_err(to_status)?;
        Ok(Response::new(ShardDigestResponse {
            shard_id: shard.0,
            applied_index: d.applied_index,
            key_count: d.key_count,
            digest: d.digest,
        }))
    }

    async fn set_failpoint(
        &self,
        request: Request<SetFailpointRequest>,
    ) -> Result<Response<SetFailpointResponse>, Status> {
        set_failpoint(request.into_inner())?;
        Ok(Response::new(SetFailpointResponse {}))
    }

    async fn set_clock_offset(
        &self,
        request: Request<SetClockOffsetRequest>,
    ) -> Result<Response<SetClockOffsetResponse>, Status> {
        set_clock_offset(request.into_inner().offset_ms)?;
        Ok(Response::new(SetClockOffsetResponse {}))
    }
}

#[cfg(feature = "failpoints")]
fn set_clock_offset(offset_ms: i64) -> Result<(), Status> {
    tracing::warn!(offset_ms, "wall clock offset set");
    crate::clock::set_offset_ms(offset_ms);
    Ok(())
}

#[cfg(not(feature = "failpoints"))]
fn set_clock_offset(_offset_ms: i64) -> Result<(), Status> {
    Err(Status::unimplemented(
        "this kv-server was built without the `failpoints` feature",
    ))
}

#[cfg(feature = "failpoints")]
fn set_failpoint(request: SetFailpointRequest) -> Result<(), Status> {
    tracing::warn!(name = %request.name, actions = %request.actions, "failpoint set");
    fail::cfg(&request.name, &request.actions).map_err(Status::invalid_argument)
}

#[cfg(not(feature = "failpoints"))]
fn set_failpoint(_request: SetFailpointRequest) -> Result<(), Status> {
    Err(Status::unimplemented(
        "this kv-server was built without the `failpoints` feature",
    ))
}
