//! What the shard manager knows: nodes, keyspaces, shards. These records are
//! the durable state (see [`crate::store`]); liveness is derived from
//! heartbeat times, which are deliberately not durable.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub type NodeId = u64;
pub type ShardId = u64;

/// An operator's intent for a node. Liveness (alive / suspect / dead) is
/// observed, not stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeIntent {
    /// Eligible for new replicas and primaries.
    Active,
    /// Replicas and primaries are being moved off; gets no new ones.
    Draining,
    /// Gone for good; its id is never reused.
    Removed,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub id: NodeId,
    pub client_addr: String,
    pub raft_addr: String,
    pub region: String,
    pub labels: BTreeMap<String, String>,
    pub intent: NodeIntent,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyspaceRecord {
    pub name: String,
    pub id: u32,
    pub replicas: u32,
    pub ushard_count: u32,
    pub shards: Vec<ShardId>,
    /// Regions voters may live in; empty = any.
    pub regions: Vec<String>,
    /// Where primaries should sit when possible; empty = no preference.
    pub preferred_region: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardRecord {
    pub id: ShardId,
    pub keyspace: String,
    pub voters: Vec<NodeId>,
    pub learners: Vec<NodeId>,
    pub primary: Option<NodeId>,
    /// Strictly increases every time the primary changes.
    pub epoch: u64,
}

/// Observed liveness of a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Liveness {
    Alive,
    /// Missed heartbeats for longer than the suspicion timeout.
    Suspect,
    /// Missed heartbeats for longer than the grace period, or never seen
    /// since the shard manager started.
    Dead,
}

impl Liveness {
    pub fn name(self) -> &'static str {
        match self {
            Liveness::Alive => "alive",
            Liveness::Suspect => "suspect",
            Liveness::Dead => "dead",
        }
    }
}
