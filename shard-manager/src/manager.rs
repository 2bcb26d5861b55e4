//! The shard manager's logic: node registration and heartbeats, keyspace
//! creation with placement, the shard map. State lives in memory behind one
//! lock and every change is committed to [`MetaStore`] before it is
//! visible, so a restart never loses what a caller was told.

use crate::clock::Clock;
use crate::model::{KeyspaceRecord, Liveness, NodeId, NodeIntent, NodeRecord, ShardId, ShardRecord};
use crate::placement::{choose_primary, place_learner, place_replicas, Candidate, PlacementError};
use crate::repair::{self, KeyspaceRules, LeaderView, NodeView, RepairStep};
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
}

/// A node registering (or re-registering).
#[derive(Clone, Debug)]
pub struct Registration {
    pub node_id: NodeId,
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
    pub epoch: u64,
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
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
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
        }
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, DurableState> {
        // A panic while holding the lock leaves the in-memory copy possibly
        // ahead of nothing: every change is committed before it is applied.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn commit(&self, change: &Change) -> SmResult<()> {
        self.store.commit(change).map_err(|e| SmError::Storage(e.to_string()))
    }

    /// Commits new versions of some shards as one new map version, then
    /// makes them visible. Nothing to commit: no new version.
    fn commit_shards(&self, state: &mut DurableState, updated: Vec<ShardRecord>) -> SmResult<()> {
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

    pub fn liveness_of(&self, node: NodeId) -> (Liveness, Option<Duration>) {
        let heartbeats = self.heartbeats.lock().unwrap_or_else(|p| p.into_inner());
        match heartbeats.get(&node) {
            None => (Liveness::Dead, None),
            Some(at) => {
                let age = self.clock.since(*at);
                let liveness = if age >= self.liveness.dead_after {
                    Liveness::Dead
                } else if age >= self.liveness.suspect_after {
                    Liveness::Suspect
                } else {
                    Liveness::Alive
                };
                (liveness, Some(age))
            }
        }
    }

    /// Nodes whose last heartbeat is recent enough to call them alive.
    pub fn alive_nodes(&self) -> Vec<NodeId> {
        let ids: Vec<NodeId> = self.lock_state().nodes.keys().copied().collect();
        ids.into_iter()
            .filter(|id| self.liveness_of(*id).0 == Liveness::Alive)
            .collect()
    }

    /// Registers a new node (id 0: allocates a fresh id, never reused) or
    /// updates a known one.
    pub fn register(&self, reg: Registration) -> SmResult<NodeId> {
        if reg.client_addr.is_empty() || reg.raft_addr.is_empty() {
            return Err(SmError::InvalidArgument(
                "client_addr and raft_addr are required".into(),
            ));
        }
        if reg.region.is_empty() {
            return Err(SmError::InvalidArgument("region is required".into()));
        }
        let mut state = self.lock_state();
        let mut change = Change::default();
        let id = if reg.node_id == 0 {
            let id = state.counters.next_node_id;
            let mut counters = state.counters.clone();
            counters.next_node_id += 1;
            counters.map_version += 1;
            change.counters = Some(counters);
            id
        } else {
            match state.nodes.get(&reg.node_id) {
                None => return Err(SmError::UnknownNode(reg.node_id)),
                Some(n) if n.intent == NodeIntent::Removed => return Err(SmError::NodeRemoved(reg.node_id)),
                Some(_) => reg.node_id,
            }
        };
        let intent = state.nodes.get(&id).map(|n| n.intent).unwrap_or(NodeIntent::Active);
        let record = NodeRecord {
            id,
            client_addr: reg.client_addr,
            raft_addr: reg.raft_addr,
            region: reg.region,
            labels: reg.labels,
            intent,
        };
        if state.nodes.get(&id) != Some(&record) {
            if change.counters.is_none() {
                let mut counters = state.counters.clone();
                counters.map_version += 1;
                change.counters = Some(counters);
            }
            change.nodes.push(record.clone());
            self.commit(&change)?;
            state.nodes.insert(id, record);
            if let Some(counters) = change.counters {
                state.counters = counters;
            }
        }
        drop(state);
        self.heartbeats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, self.clock.now());
        Ok(id)
    }

    /// Records a heartbeat and the node's replica reports; returns the
    /// current shard map version.
    pub fn heartbeat(&self, node: NodeId, replicas: Vec<ReplicaView>) -> SmResult<u64> {
        let state = self.lock_state();
        match state.nodes.get(&node) {
            None => return Err(SmError::UnknownNode(node)),
            Some(n) if n.intent == NodeIntent::Removed => return Err(SmError::NodeRemoved(node)),
            Some(_) => {}
        }
        let version = state.counters.map_version;
        drop(state);
        self.reports
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(node, replicas);
        self.heartbeats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(node, self.clock.now());
        Ok(version)
    }

    /// Nodes that may receive new replicas: active and alive.
    fn candidates(&self, state: &DurableState) -> Vec<Candidate> {
        state
            .nodes
            .values()
            .filter(|n| n.intent == NodeIntent::Active && self.liveness_of(n.id).0 == Liveness::Alive)
            .map(|n| Candidate {
                id: n.id,
                region: n.region.clone(),
                replicas: state.shards.values().filter(|s| s.is_hosted_on(n.id)).count(),
                primaries: state.shards.values().filter(|s| s.primary == Some(n.id)).count(),
            })
            .collect()
    }

    /// Creates a keyspace: its shards, their replicas and primaries, all in
    /// one durable change.
    pub fn create_keyspace(&self, spec: KeyspaceSpec) -> SmResult<KeyspaceRecord> {
        if !valid_name(&spec.name) {
            return Err(SmError::InvalidArgument(format!(
                "keyspace name {:?}: 1-64 characters of letters, digits, '-' and '_'",
                spec.name
            )));
        }
        if spec.replicas == 0 || spec.shards == 0 {
            return Err(SmError::InvalidArgument(
                "replicas and shards must be at least 1".into(),
            ));
        }
        if spec.ushards < spec.shards {
            return Err(SmError::InvalidArgument(format!(
                "ushards ({}) must be at least shards ({})",
                spec.ushards, spec.shards
            )));
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(bad) = spec.learner_regions.iter().find(|r| r.is_empty() || !seen.insert(*r)) {
            return Err(SmError::InvalidArgument(format!(
                "learner_regions: empty or repeated region {bad:?}"
            )));
        }
        let mut state = self.lock_state();
        if state.keyspaces.contains_key(&spec.name) {
            return Err(SmError::AlreadyExists(format!("keyspace {:?}", spec.name)));
        }
        let mut candidates = self.candidates(&state);
        let mut counters = state.counters.clone();
        let mut shards = Vec::new();
        for _ in 0..spec.shards {
            let voters = place_replicas(&candidates, spec.replicas as usize, &spec.regions)?;
            for c in candidates.iter_mut().filter(|c| voters.contains(&c.id)) {
                c.replicas += 1;
            }
            let by_id: HashMap<NodeId, Candidate> = candidates.iter().map(|c| (c.id, c.clone())).collect();
            let primary = choose_primary(&voters, &by_id, &spec.preferred_region);
            if let Some(p) = primary {
                if let Some(c) = candidates.iter_mut().find(|c| c.id == p) {
                    c.primaries += 1;
                }
            }
            let mut learners = Vec::new();
            for region in &spec.learner_regions {
                let learner = place_learner(&candidates, region, &voters)?;
                if let Some(c) = candidates.iter_mut().find(|c| c.id == learner) {
                    c.replicas += 1;
                }
                learners.push(learner);
            }
            let id = counters.next_shard_id;
            counters.next_shard_id += 1;
            shards.push(ShardRecord {
                id,
                keyspace: spec.name.clone(),
                voters,
                learners,
                primary,
                epoch: 1,
                conf_ver: 1,
                change: None,
            });
        }
        let keyspace = KeyspaceRecord {
            name: spec.name.clone(),
            id: counters.next_keyspace_id,
            replicas: spec.replicas,
            ushard_count: spec.ushards,
            shards: shards.iter().map(|s| s.id).collect(),
            regions: spec.regions,
            preferred_region: spec.preferred_region,
            learner_regions: spec.learner_regions,
        };
        counters.next_keyspace_id += 1;
        counters.map_version += 1;
        let change = Change {
            keyspaces: vec![keyspace.clone()],
            shards: shards.clone(),
            counters: Some(counters.clone()),
            ..Default::default()
        };
        self.commit(&change)?;
        state.keyspaces.insert(keyspace.name.clone(), keyspace.clone());
        for shard in shards {
            state.shards.insert(shard.id, shard);
        }
        state.counters = counters;
        Ok(keyspace)
    }

    /// Fails over every shard whose primary is not alive: the new primary is
    /// an alive voter, preferring the one Raft already elected (highest
    /// term), then the most applied, then the placement rule; its epoch goes
    /// up by one. All changes commit in one durable batch.
    pub fn reconcile_primaries(&self) -> SmResult<Vec<PrimaryChange>> {
        if self.clock.since(self.started) < self.liveness.suspect_after {
            return Ok(Vec::new());
        }
        let mut state = self.lock_state();
        let reports = self.reports.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let candidates: HashMap<NodeId, Candidate> = self.candidates(&state).into_iter().map(|c| (c.id, c)).collect();
        let mut changes = Vec::new();
        let mut updated = Vec::new();
        for shard in state.shards.values() {
            if shard
                .primary
                .is_some_and(|p| candidates.contains_key(&p) && shard.voters.contains(&p))
            {
                continue;
            }
            let view = |node: NodeId| {
                reports
                    .get(&node)
                    .and_then(|r| r.iter().find(|v| v.shard == shard.id))
                    .cloned()
                    .unwrap_or_default()
            };
            let alive_voters: Vec<NodeId> = shard
                .voters
                .iter()
                .copied()
                .filter(|v| candidates.contains_key(v))
                .collect();
            let raft_leader = alive_voters
                .iter()
                .copied()
                .filter(|v| view(*v).is_leader)
                .max_by_key(|v| view(*v).term);
            let most_applied = alive_voters.iter().map(|v| view(*v).applied_index).max();
            let to = raft_leader.or_else(|| {
                let up_to_date: Vec<NodeId> = alive_voters
                    .iter()
                    .copied()
                    .filter(|v| Some(view(*v).applied_index) == most_applied)
                    .collect();
                let preferred = state
                    .keyspaces
                    .get(&shard.keyspace)
                    .map(|k| k.preferred_region.as_str())
                    .unwrap_or("");
                choose_primary(&up_to_date, &candidates, preferred)
            });
            let Some(to) = to else {
                continue; // no alive voter: nothing to promote yet
            };
            let mut next = shard.clone();
            next.primary = Some(to);
            next.epoch += 1;
            changes.push(PrimaryChange {
                shard: shard.id,
                from: shard.primary,
                to,
                epoch: next.epoch,
            });
            updated.push(next);
        }
        self.commit_shards(&mut state, updated)?;
        Ok(changes)
    }

    /// Makes `node` the primary of `shard` with a new epoch. The node must
    /// be an alive, active voter of the shard.
    pub fn move_primary(&self, shard: ShardId, node: NodeId) -> SmResult<ShardRecord> {
        let mut state = self.lock_state();
        let current = state.shards.get(&shard).ok_or(SmError::UnknownShard(shard))?;
        if !current.voters.contains(&node) {
            return Err(SmError::InvalidArgument(format!(
                "node {node} is not a voter of shard {shard}"
            )));
        }
        let active = state.nodes.get(&node).is_some_and(|n| n.intent == NodeIntent::Active);
        if !active || self.liveness_of(node).0 != Liveness::Alive {
            return Err(SmError::InvalidArgument(format!("node {node} is not alive and active")));
        }
        if current.primary == Some(node) {
            return Ok(current.clone());
        }
        let mut next = current.clone();
        next.primary = Some(node);
        next.epoch += 1;
        self.commit_shards(&mut state, vec![next.clone()])?;
        Ok(next)
    }

    /// Marks a node draining: its primaries move (see
    /// [`Self::reconcile_primaries`]), then its replicas (see
    /// [`Self::reconcile_membership`]), and it gets no new ones.
    pub fn drain_node(&self, node: NodeId) -> SmResult<NodeRecord> {
        self.set_intent(node, NodeIntent::Draining, |_| Ok(()))
    }

    /// Ends a drain: the node may receive replicas and primaries again.
    pub fn activate_node(&self, node: NodeId) -> SmResult<NodeRecord> {
        self.set_intent(node, NodeIntent::Active, |_| Ok(()))
    }

    /// Forgets a node for good. Refused while it is alive and still holds
    /// replicas (drain it first); a dead node's replicas are rebuilt at once.
    pub fn remove_node(&self, node: NodeId) -> SmResult<NodeRecord> {
        self.set_intent(node, NodeIntent::Removed, |state| {
            let held = state.shards.values().filter(|s| s.is_hosted_on(node)).count();
            if held > 0 && !self.judged_dead(node) {
                return Err(SmError::FailedPrecondition(format!(
                    "node {node} is {} and holds {held} replicas; drain it first",
                    self.liveness_of(node).0.name()
                )));
            }
            Ok(())
        })
    }

    fn set_intent(
        &self,
        node: NodeId,
        intent: NodeIntent,
        allowed: impl FnOnce(&DurableState) -> SmResult<()>,
    ) -> SmResult<NodeRecord> {
        let mut state = self.lock_state();
        let current = state.nodes.get(&node).ok_or(SmError::UnknownNode(node))?;
        if current.intent == NodeIntent::Removed {
            return Err(SmError::NodeRemoved(node));
        }
        if current.intent == intent {
            return Ok(current.clone());
        }
        allowed(&state)?;
        let mut record = current.clone();
        record.intent = intent;
        let mut counters = state.counters.clone();
        counters.map_version += 1;
        self.commit(&Change {
            nodes: vec![record.clone()],
            counters: Some(counters.clone()),
            ..Default::default()
        })?;
        state.nodes.insert(node, record.clone());
        state.counters = counters;
        Ok(record)
    }

    /// Dead past the grace period. Heartbeat times are not durable, so for
    /// one grace period after a start no node is judged dead.
    fn judged_dead(&self, node: NodeId) -> bool {
        self.clock.since(self.started) >= self.liveness.dead_after && self.liveness_of(node).0 == Liveness::Dead
    }

    /// How repair sees every node right now: a dead node's replicas are
    /// rebuilt only once it is judged dead; draining and removed nodes are
    /// acted on at once.
    fn node_views(&self, state: &DurableState) -> BTreeMap<NodeId, NodeView> {
        state
            .nodes
            .values()
            .map(|n| {
                let liveness = self.liveness_of(n.id).0;
                let view = NodeView {
                    region: n.region.clone(),
                    usable: n.intent == NodeIntent::Active && liveness == Liveness::Alive,
                    gone: n.intent == NodeIntent::Removed || self.judged_dead(n.id),
                    draining: n.intent == NodeIntent::Draining,
                };
                (n.id, view)
            })
            .collect()
    }

    /// Every shard's freshest Raft-leader report among alive nodes (the
    /// highest term wins when two nodes claim a shard), in one pass.
    fn leader_views(&self) -> HashMap<ShardId, LeaderView> {
        let alive = self.alive_nodes();
        let reports = self.reports.lock().unwrap_or_else(|p| p.into_inner());
        let mut best: HashMap<ShardId, (u64, LeaderView)> = HashMap::new();
        for node in alive {
            for view in reports.get(&node).into_iter().flatten().filter(|v| v.is_leader) {
                let Some(mut raft) = view.raft.clone() else {
                    continue;
                };
                raft.node = node;
                if best.get(&view.shard).is_none_or(|(term, _)| view.term > *term) {
                    best.insert(view.shard, (view.term, raft));
                }
            }
        }
        best.into_iter().map(|(shard, (_, raft))| (shard, raft)).collect()
    }

    /// Moves every shard one repair step further (see [`crate::repair`]):
    /// replicas on nodes dead past the grace period, removed or draining
    /// are rebuilt elsewhere, one membership change at a time per shard.
    pub fn reconcile_membership(&self) -> SmResult<Vec<MembershipStep>> {
        let leaders = self.leader_views();
        let mut state = self.lock_state();
        let nodes = self.node_views(&state);
        let mut candidates = self.candidates(&state);
        let mut steps = Vec::new();
        let mut updated = Vec::new();
        for shard in state.shards.values() {
            let rules = KeyspaceRules {
                regions: state
                    .keyspaces
                    .get(&shard.keyspace)
                    .map(|k| k.regions.clone())
                    .unwrap_or_default(),
            };
            let Some(step) = repair::next_step(shard, &nodes, leaders.get(&shard.id), &candidates, &rules) else {
                continue;
            };
            if let RepairStep::Start(change) = &step {
                // Later shards in this pass see the new load.
                if let Some(c) = candidates.iter_mut().find(|c| c.id == change.adding) {
                    c.replicas += 1;
                }
            }
            let next = repair::apply(shard, &step);
            steps.push(MembershipStep {
                shard: shard.id,
                step,
                conf_ver: next.conf_ver,
            });
            updated.push(next);
        }
        self.commit_shards(&mut state, updated)?;
        Ok(steps)
    }

    /// A node's load, summed over its last replica reports: bytes on disk
    /// and client requests per second.
    pub fn node_usage(&self, node: NodeId) -> (u64, f64) {
        let reports = self.reports.lock().unwrap_or_else(|p| p.into_inner());
        let views = reports.get(&node).map(Vec::as_slice).unwrap_or_default();
        (
            views.iter().map(|v| v.approx_bytes).sum(),
            views.iter().map(|v| v.ops_per_sec).sum(),
        )
    }

    /// How many log entries each shard's furthest-behind replica trails its
    /// leader by, from the leaders' last reports.
    pub fn shard_lags(&self) -> HashMap<ShardId, u64> {
        self.leader_views()
            .into_iter()
            .map(|(shard, leader)| {
                let lag = leader
                    .matched_index
                    .iter()
                    .filter(|(node, _)| **node != leader.node)
                    .map(|(_, matched)| leader.last_log_index.saturating_sub(*matched))
                    .max()
                    .unwrap_or(0);
                (shard, lag)
            })
            .collect()
    }

    /// Replicas and primaries per node, from the current map.
    pub fn node_load(&self, node: NodeId) -> (u32, u32) {
        let state = self.lock_state();
        let replicas = state.shards.values().filter(|s| s.is_hosted_on(node)).count();
        let primaries = state.shards.values().filter(|s| s.primary == Some(node)).count();
        (replicas as u32, primaries as u32)
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
