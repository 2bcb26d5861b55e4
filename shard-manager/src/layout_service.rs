//! The shard manager's side of `shoal.admin.v1.Admin`: clients fetch the
//! shard map here (`GetLayout`) in the same shape nodes serve it, so a
//! client may be pointed at the shard manager, at any node, or both — and
//! keeps working from the nodes while the shard manager is down. The
//! per-replica RPCs belong to nodes and are refused here.

use crate::manager::Manager;
use crate::wire::client_layout;
use shoal_proto::admin::admin_server::Admin;
use shoal_proto::admin::*;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct LayoutService {
    manager: Arc<Manager>,
}

impl LayoutService {
    pub fn new(manager: Arc<Manager>) -> LayoutService {
        LayoutService { manager }
    }
}

fn node_only(rpc: &str) -> Status {
    Status::unimplemented(format!("{rpc} is served by kv-server nodes, not the shard manager"))
}

#[tonic::async_trait]
impl Admin for LayoutService {
    async fn get_layout(&self, _request: Request<GetLayoutRequest>) -> Result<Response<Layout>, Status> {
        Ok(Response::new(client_layout(&self.manager.snapshot())))
    }

    async fn replica_status(
        &self,
        _request: Request<ReplicaStatusRequest>,
    ) -> Result<Response<ReplicaStatusResponse>, Status> {
        Err(node_only("ReplicaStatus"))
    }

    async fn shard_digest(
        &self,
        _request: Request<ShardDigestRequest>,
    ) -> Result<Response<ShardDigestResponse>, Status> {
        Err(node_only("ShardDigest"))
    }

    async fn set_failpoint(
        &self,
        _request: Request<SetFailpointRequest>,
    ) -> Result<Response<SetFailpointResponse>, Status> {
        Err(node_only("SetFailpoint"))
    }

    /// The shard manager's own clock is shifted through its own API
    /// (`ShardManager/SetClockOffset`).
    async fn set_clock_offset(
        &self,
        _request: Request<SetClockOffsetRequest>,
    ) -> Result<Response<SetClockOffsetResponse>, Status> {
        Err(node_only("Admin/SetClockOffset"))
    }
}
