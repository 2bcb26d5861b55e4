//! What the shard manager knows: nodes, keyspaces, shards. These records are
//! the durable state (see [`crate::store`]); liveness is derived from
//! heartbeat times, which are deliberately not durable.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub use shoal_types::{Epoch, KeyspaceId, Mapping, NodeId, ShardId, UshardId, UshardMap};

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
    pub id: KeyspaceId,
    pub replicas: u32,
    pub ushard_count: u32,
    pub shards: Vec<ShardId>,
    /// Regions voters may live in; empty = any.
    pub regions: Vec<String>,
    /// Where primaries should sit when possible; empty = no preference.
    pub preferred_region: String,
    /// One learner (non-voting replica) per listed region.
    #[serde(default)]
    pub learner_regions: Vec<String>,
    #[serde(default)]
    pub mapping: Mapping,
    /// Which shard owns each μshard; its changes bump the map version.
    /// `None` in records from before maps were explicit: the static
    /// mapping (`u % shards.len()`) holds for them.
    #[serde(default)]
    pub map: Option<UshardMap>,
    /// The map at creation (nodes judge μshards that never moved by it);
    /// never changed: it may name shards since retired.
    #[serde(default)]
    pub home: Option<UshardMap>,
    /// Shards being merged away: they take no μshard in, and retire once
    /// they own none.
    #[serde(default)]
    pub retiring: Vec<ShardId>,
    /// Shards merged away and retired: no longer the keyspace's, their
    /// records are gone, and nodes delete any replica of them.
    #[serde(default)]
    pub retired: Vec<ShardId>,
    /// μshards pinned to a region (akkio keyspaces): locality keeps each
    /// in a shard whose primary is there.
    #[serde(default)]
    pub pins: BTreeMap<u32, String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardRecord {
    pub id: ShardId,
    pub keyspace: String,
    pub voters: Vec<NodeId>,
    pub learners: Vec<NodeId>,
    pub primary: Option<NodeId>,
    /// Strictly increases every time the primary changes.
    pub epoch: Epoch,
    /// Bumped by every change of `voters`, `learners` or `change`. A node
    /// bootstraps a shard's Raft group only at version 1: a replica added
    /// later joins the existing group instead.
    #[serde(default = "first_conf_ver")]
    pub conf_ver: u64,
    /// The replica replacement in progress, if any: at most one per shard,
    /// so Raft sees one membership change at a time.
    #[serde(default)]
    pub change: Option<ReplicaChange>,
}

fn first_conf_ver() -> u64 {
    1
}

impl ShardRecord {
    /// Whether `node` hosts (or is about to host, or still hosts) a replica
    /// of this shard. The load counts call this for every shard and node on
    /// each reconcile pass, so it allocates nothing.
    pub fn is_hosted_on(&self, node: NodeId) -> bool {
        self.voters.contains(&node)
            || self.learners.contains(&node)
            || self
                .change
                .as_ref()
                .is_some_and(|c| c.adding == node || c.removing == node)
    }

    /// Every node that hosts (or is about to host, or still hosts) this
    /// shard: voters, learners and both ends of a change.
    pub fn hosts(&self) -> Vec<NodeId> {
        let mut hosts: Vec<NodeId> = self.voters.iter().chain(&self.learners).copied().collect();
        if let Some(change) = &self.change {
            hosts.extend([change.adding, change.removing]);
        }
        hosts.sort_unstable();
        hosts.dedup();
        hosts
    }
}

/// Replacing one replica of a shard by a new one on another node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaChange {
    /// The node being added. While catching up it is a Raft learner.
    pub adding: NodeId,
    /// The node being replaced; it keeps its replica until Raft has
    /// committed a membership without it.
    pub removing: NodeId,
    /// Whether the replaced replica is a voter (else a learner).
    pub voter: bool,
    pub phase: ChangePhase,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChangePhase {
    /// `adding` is a learner receiving the log (or a snapshot).
    CatchingUp,
    /// `adding` has replaced `removing` in the record; waiting for Raft to
    /// commit that membership.
    Promoting,
}

impl ChangePhase {
    pub fn name(self) -> &'static str {
        match self {
            ChangePhase::CatchingUp => "catching-up",
            ChangePhase::Promoting => "promoting",
        }
    }
}

/// A μshard move: the shard manager's durable record of it, from which a
/// restarted shard manager resumes it (docs/moves.md).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveRecord {
    pub id: u64,
    pub keyspace: String,
    pub keyspace_id: KeyspaceId,
    pub ushard: UshardId,
    pub from: ShardId,
    pub to: ShardId,
    pub phase: MovePhase,
    /// Why it was started ("operator", "split", "locality: …").
    pub reason: String,
    /// Wall-clock ms when it was created, and when the destination
    /// activated (the grace period before the source drops its copy runs
    /// from there).
    pub created_ms: u64,
    #[serde(default)]
    pub activated_ms: u64,
    /// The last error of a failed attempt, or why it was aborted.
    #[serde(default)]
    pub error: String,
}

/// Where a move is. Until `Activated` it can be aborted; after, it only
/// rolls forward.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MovePhase {
    /// The destination's primary copies and catches up, has the source
    /// release the μshard, then activates.
    Copying,
    /// The destination serves the μshard and the map names it; the source
    /// answers `WRONG_SHARD` and drops its copy after a grace period.
    Activated,
    /// Finished.
    Done,
    /// Being undone: the destination abandons, then the source resumes.
    Aborting,
    /// Undone: the source kept the μshard.
    Aborted,
}

impl MovePhase {
    pub fn name(self) -> &'static str {
        match self {
            MovePhase::Copying => "copying",
            MovePhase::Activated => "activated",
            MovePhase::Done => "done",
            MovePhase::Aborting => "aborting",
            MovePhase::Aborted => "aborted",
        }
    }

    /// Whether the move still has steps to take.
    pub fn is_active(self) -> bool {
        !matches!(self, MovePhase::Done | MovePhase::Aborted)
    }

    /// Whether the μshard is still in the move's hands (no second move of
    /// it may start): until the source dropped its copy, or the abort ended.
    pub fn holds_ushard(self) -> bool {
        matches!(self, MovePhase::Copying | MovePhase::Activated | MovePhase::Aborting)
    }
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

impl NodeIntent {
    pub fn name(self) -> &'static str {
        match self {
            NodeIntent::Active => "active",
            NodeIntent::Draining => "draining",
            NodeIntent::Removed => "removed",
        }
    }
}
