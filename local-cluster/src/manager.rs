//! A shard manager's operations, reached at its address: what tests,
//! benchmarks and the fault suite ask of it, whether it runs as a child
//! process ([`crate::LocalCluster`]) or inside the test process.

use crate::endpoint;
use anyhow::{bail, Context};
use shoal_proto::sm::shard_manager_client::ShardManagerClient;
use shoal_proto::sm::{
    ClockOffset, CreateKeyspaceRequest, GetShardMapRequest, MergeShardRequest, MergeShardResponse, MovePrimaryRequest,
    MoveRequest, MoveState, MoveUshardRequest, NodeRequest, ShardMap, SplitShardRequest, SplitShardResponse,
};
use std::time::Duration;
use tonic::transport::Channel;

/// The shard manager at one address.
#[derive(Clone, Debug)]
pub struct ShardManagerAt {
    addr: String,
}

impl ShardManagerAt {
    pub fn new(addr: impl Into<String>) -> ShardManagerAt {
        ShardManagerAt { addr: addr.into() }
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// A connection (within 500 ms) with a 5 s deadline per request.
    async fn client(&self) -> anyhow::Result<ShardManagerClient<Channel>> {
        let channel = endpoint(&self.addr, Duration::from_millis(500))?
            .timeout(Duration::from_secs(5))
            .connect()
            .await?;
        Ok(ShardManagerClient::new(channel))
    }

    pub async fn shard_map(&self) -> anyhow::Result<ShardMap> {
        Ok(self
            .client()
            .await?
            .get_shard_map(GetShardMapRequest {})
            .await?
            .into_inner())
    }

    pub async fn move_primary(&self, shard: u64, node: u64) -> anyhow::Result<()> {
        self.client()
            .await?
            .move_primary(MovePrimaryRequest {
                shard_id: shard,
                node_id: node,
            })
            .await?;
        Ok(())
    }

    pub async fn drain_node(&self, id: u64) -> anyhow::Result<()> {
        self.client().await?.drain_node(NodeRequest { node_id: id }).await?;
        Ok(())
    }

    pub async fn activate_node(&self, id: u64) -> anyhow::Result<()> {
        self.client().await?.activate_node(NodeRequest { node_id: id }).await?;
        Ok(())
    }

    /// Shifts the shard manager's clock (built with `failpoints`).
    pub async fn set_clock(&self, offset_ms: i64) -> anyhow::Result<()> {
        self.client()
            .await?
            .set_clock_offset(ClockOffset { offset_ms })
            .await
            .context("shard-manager clock offset")?;
        Ok(())
    }

    pub async fn remove_node(&self, id: u64) -> Result<(), tonic::Status> {
        self.status_client()
            .await?
            .remove_node(NodeRequest { node_id: id })
            .await?;
        Ok(())
    }

    /// Pins `ushard` of `keyspace` to `region` ("" unpins); the keyspace's
    /// pins after it.
    pub async fn pin_ushard(
        &self,
        keyspace: &str,
        ushard: u32,
        region: &str,
    ) -> Result<std::collections::HashMap<u32, String>, tonic::Status> {
        Ok(self
            .status_client()
            .await?
            .pin_ushard(shoal_proto::sm::PinUshardRequest {
                keyspace: keyspace.into(),
                ushard,
                region: region.into(),
            })
            .await?
            .into_inner()
            .pins)
    }

    /// Starts moving `ushard` of `keyspace` to shard `to`.
    pub async fn move_ushard(&self, keyspace: &str, ushard: u32, to: u64) -> Result<MoveState, tonic::Status> {
        Ok(self
            .status_client()
            .await?
            .move_ushard(MoveUshardRequest {
                keyspace: keyspace.into(),
                ushard,
                to_shard: to,
            })
            .await?
            .into_inner())
    }

    pub async fn get_move(&self, move_id: u64) -> anyhow::Result<MoveState> {
        Ok(self
            .client()
            .await?
            .get_move(MoveRequest { move_id })
            .await?
            .into_inner())
    }

    pub async fn abort_move(&self, move_id: u64) -> Result<MoveState, tonic::Status> {
        Ok(self
            .status_client()
            .await?
            .abort_move(MoveRequest { move_id })
            .await?
            .into_inner())
    }

    /// Splits `shard`: a new shard takes the upper half of its μshards.
    pub async fn split_shard(&self, shard: u64) -> Result<SplitShardResponse, tonic::Status> {
        Ok(self
            .status_client()
            .await?
            .split_shard(SplitShardRequest { shard_id: shard })
            .await?
            .into_inner())
    }

    /// Merges `shard` into `into`; `shard` retires once its μshards moved.
    pub async fn merge_shard(&self, shard: u64, into: u64) -> Result<MergeShardResponse, tonic::Status> {
        Ok(self
            .status_client()
            .await?
            .merge_shard(MergeShardRequest {
                shard_id: shard,
                into_shard_id: into,
            })
            .await?
            .into_inner())
    }

    /// A client whose connection failure is an `UNAVAILABLE` status, for
    /// calls whose refusals a caller inspects by status.
    async fn status_client(&self) -> Result<ShardManagerClient<Channel>, tonic::Status> {
        self.client()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))
    }

    /// Polls move `move_id` until it reaches `phase` ("done", "aborted"...),
    /// or fails after `timeout` naming the phase it was in.
    pub async fn wait_for_move(&self, move_id: u64, phase: &str, timeout: Duration) -> anyhow::Result<MoveState> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut last = None;
        while tokio::time::Instant::now() < deadline {
            if let Ok(state) = self.get_move(move_id).await {
                if state.phase == phase {
                    return Ok(state);
                }
                last = Some(state);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("move {move_id} did not reach {phase} within {timeout:?}; last seen {last:?}")
    }

    pub async fn create_keyspace(&self, request: CreateKeyspaceRequest) -> anyhow::Result<()> {
        self.client().await?.create_keyspace(request).await?;
        Ok(())
    }

    /// Waits until `nodes` nodes are alive in the map, then creates the
    /// `default` keyspace (`shards` shards of `replicas` replicas, `ushards`
    /// μshards, the akkio mapping) unless it exists.
    pub async fn ensure_default_keyspace(
        &self,
        nodes: u64,
        shards: u32,
        ushards: u32,
        replicas: u32,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match self.shard_map().await {
                Ok(map) if map.keyspaces.iter().any(|k| k.name == "default") => return Ok(()),
                Ok(map) if map.nodes.iter().filter(|n| n.liveness == "alive").count() as u64 >= nodes => {
                    return self
                        .create_keyspace(CreateKeyspaceRequest {
                            name: "default".into(),
                            replicas,
                            shards,
                            ushards,
                            regions: vec![],
                            preferred_region: String::new(),
                            learner_regions: vec![],
                            // Any μshard may be moved by hand (docs/moves.md).
                            mapping: shoal_proto::admin::UshardMapping::Akkio as i32,
                        })
                        .await;
                }
                _ if tokio::time::Instant::now() >= deadline => {
                    bail!("the shard manager did not see all {nodes} nodes alive within {timeout:?}")
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
}
