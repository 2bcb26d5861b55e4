//! The shard manager's logic: node registration and heartbeats, keyspace
//! creation with placement, the shard map. State lives in memory behind one
//! lock and every change is committed to [`MetaStore`] before it is
//! visible, so a restart never loses what a caller was told.
//!
//! One file per kind of operation: `nodes`, `keyspaces`, `primaries`,
//! `membership`, `balancing`, `moves`, `resharding`, `locality`; this one holds the shared state and how it is
//! committed.

mod balancing;
mod keyspaces;
mod locality;
mod membership;
mod moves;
mod nodes;
mod primaries;
mod resharding;

pub use balancing::BalancePacing;
pub use locality::{LoggedDecision, DECISION_LOG_LEN};
pub use moves::{owner_of, MoveCause, MoveRefusal};

use crate::clock::Clock;
use crate::model::{Epoch, NodeId, ShardId, ShardRecord};
use crate::placement::PlacementError;
use crate::repair::{LeaderView, RepairStep};
use crate::store::{Change, DurableState, MetaStore};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum SmError {
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("{0} already exists")]
    AlreadyExists(String),
    #[error("unknown node {0}")]
    UnknownNode(NodeId),
    #[error("unknown shard {0}")]
    UnknownShard(ShardId),
    #[error("node {0} was removed; a removed node id is never reused")]
    NodeRemoved(NodeId),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("cannot place: {0}")]
    Placement(#[from] PlacementError),
    #[error("storage: {0}")]
    Storage(String),
    #[error("{0}")]
    Move(MoveRefusal),
}

pub type SmResult<T> = Result<T, SmError>;

/// Liveness timing.
#[derive(Clone, Copy, Debug)]
pub struct LivenessConfig {
    /// No heartbeat for this long: suspect (no new placement on it).
    pub suspect_after: Duration,
    /// No heartbeat for this long: dead.
    pub dead_after: Duration,
}

impl Default for LivenessConfig {
    fn default() -> Self {
        LivenessConfig {
            suspect_after: Duration::from_secs(2),
            dead_after: Duration::from_secs(30),
        }
    }
}

/// A keyspace to create.
#[derive(Clone, Debug)]
pub struct KeyspaceSpec {
    pub name: String,
    pub replicas: u32,
    pub shards: u32,
    pub ushards: u32,
    pub regions: Vec<String>,
    pub preferred_region: String,
    pub learner_regions: Vec<String>,
    pub mapping: crate::model::Mapping,
}

/// A node registering (or re-registering).
#[derive(Clone, Debug)]
pub struct Registration {
    /// `None`: a new node, to be given a fresh id.
    pub node_id: Option<NodeId>,
    pub client_addr: String,
    pub raft_addr: String,
    pub region: String,
    pub labels: BTreeMap<String, String>,
}

/// What a node last said about one of its replicas.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReplicaView {
    pub shard: ShardId,
    pub is_leader: bool,
    pub term: u64,
    pub applied_index: u64,
    /// Raft's membership and peer progress, from a leader only (its `node`
    /// is filled in by the manager).
    pub raft: Option<LeaderView>,
    /// Load: bytes on disk (approximate) and client requests per second.
    pub approx_bytes: u64,
    pub ops_per_sec: f64,
}

/// A membership step taken by [`Manager::reconcile_membership`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MembershipStep {
    pub shard: ShardId,
    pub step: RepairStep,
    pub conf_ver: u64,
}

/// A primary change made by [`Manager::reconcile_primaries`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrimaryChange {
    pub shard: ShardId,
    pub from: Option<NodeId>,
    pub to: NodeId,
    pub epoch: Epoch,
}

pub struct Manager {
    store: MetaStore,
    liveness: LivenessConfig,
    /// Latest replica reports per node (not durable: rebuilt by heartbeats).
    reports: Mutex<HashMap<NodeId, Vec<ReplicaView>>>,
    // One std Mutex: critical sections are short and never await; the
    // synced RocksDB write inside is the price of "durable before visible".
    state: Mutex<DurableState>,
    heartbeats: Mutex<HashMap<NodeId, Instant>>,
    /// Heartbeat times are not durable, so right after a restart every node
    /// looks dead; no failover is judged before one suspicion period.
    started: Instant,
    /// Every elapsed-time judgment reads this clock (a fault test can make
    /// it jump).
    clock: Clock,
    /// Heat counted by the nodes in the current locality window (not
    /// durable).
    heat: Mutex<crate::locality::HeatWindow>,
    /// The latest locality decisions (not durable).
    locality_log: Mutex<std::collections::VecDeque<LoggedDecision>>,
    /// Operations per μshard: this split window's, and the last whole
    /// one's (splits cut a shard's μshards by it; not durable).
    ushard_load: Mutex<UshardLoad>,
}

/// Operations per μshard, whatever the client's region.
#[derive(Debug, Default)]
struct UshardLoad {
    current: HashMap<crate::locality::UshardKey, u64>,
    last: HashMap<crate::locality::UshardKey, u64>,
}

impl Manager {
    pub fn new(store: MetaStore, state: DurableState, liveness: LivenessConfig) -> Manager {
        Manager {
            store,
            liveness,
            reports: Mutex::new(HashMap::new()),
            state: Mutex::new(state),
            heartbeats: Mutex::new(HashMap::new()),
            started: Instant::now(),
            clock: Clock::default(),
            heat: Default::default(),
            locality_log: Default::default(),
            ushard_load: Default::default(),
        }
    }

    pub(super) fn lock_state(&self) -> std::sync::MutexGuard<'_, DurableState> {
        // A panic while holding the lock leaves the in-memory copy possibly
        // ahead of nothing: every change is committed before it is applied.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(super) fn commit(&self, change: &Change) -> SmResult<()> {
        self.store.commit(change).map_err(|e| SmError::Storage(e.to_string()))
    }

    /// Commits new versions of some shards as one new map version, then
    /// makes them visible. Nothing to commit: no new version.
    pub(super) fn commit_shards(&self, state: &mut DurableState, updated: Vec<ShardRecord>) -> SmResult<()> {
        if updated.is_empty() {
            return Ok(());
        }
        let mut counters = state.counters.clone();
        counters.map_version += 1;
        self.commit(&Change {
            shards: updated.clone(),
            counters: Some(counters.clone()),
            ..Default::default()
        })?;
        for shard in updated {
            state.shards.insert(shard.id, shard);
        }
        state.counters = counters;
        Ok(())
    }

    /// The clock liveness is judged by.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// A copy of the durable state (the shard map).
    pub fn snapshot(&self) -> DurableState {
        self.lock_state().clone()
    }
}
