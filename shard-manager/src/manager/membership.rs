//! Membership: what each node and leader reports, turned into the next
//! step of repairing, draining or balancing a shard's replicas.

use super::{Manager, MembershipStep, SmResult};
use crate::model::{Liveness, NodeId, NodeIntent, ShardId};
use crate::repair::{self, KeyspaceRules, LeaderView, NodeView, RepairStep};
use crate::store::DurableState;
use std::collections::{BTreeMap, HashMap};

impl Manager {
    /// How repair sees every node right now: a dead node's replicas are
    /// rebuilt only once it is judged dead; draining and removed nodes are
    /// acted on at once.
    pub(super) fn node_views(&self, state: &DurableState) -> BTreeMap<NodeId, NodeView> {
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
    pub(super) fn leader_views(&self) -> HashMap<ShardId, LeaderView> {
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

    /// Shards with a replica change under way (they share the move budget).
    pub fn membership_changes_in_flight(&self) -> usize {
        self.lock_state().shards.values().filter(|s| s.change.is_some()).count()
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
}
