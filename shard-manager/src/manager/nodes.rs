//! Nodes: registration, heartbeats and what they tell (liveness, load),
//! and an operator's intent for a node (drain, activate, remove).

use super::{Manager, Registration, ReplicaView, SmError, SmResult};
use crate::model::{Liveness, NodeId, NodeIntent, NodeRecord};
use crate::store::{Change, DurableState};
use std::time::Duration;

impl Manager {
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

    /// Registers a new node (no id: allocates a fresh one, never reused)
    /// or updates a known one.
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
        let id = match reg.node_id {
            None => {
                let id = state.counters.next_node_id;
                let mut counters = state.counters.clone();
                counters.next_node_id = id.next();
                counters.map_version += 1;
                change.counters = Some(counters);
                id
            }
            Some(id) => match state.nodes.get(&id) {
                None => return Err(SmError::UnknownNode(id)),
                Some(n) if n.intent == NodeIntent::Removed => return Err(SmError::NodeRemoved(id)),
                Some(_) => id,
            },
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

    pub(super) fn set_intent(
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
    pub(super) fn judged_dead(&self, node: NodeId) -> bool {
        self.clock.since(self.started) >= self.liveness.dead_after && self.liveness_of(node).0 == Liveness::Dead
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

    /// Every node's last replica reports.
    pub(super) fn replica_reports(&self) -> Vec<Vec<ReplicaView>> {
        self.reports
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Replicas and primaries per node, from the current map.
    pub fn node_load(&self, node: NodeId) -> (u32, u32) {
        let state = self.lock_state();
        let replicas = state.shards.values().filter(|s| s.is_hosted_on(node)).count();
        let primaries = state.shards.values().filter(|s| s.primary == Some(node)).count();
        (replicas as u32, primaries as u32)
    }
}
