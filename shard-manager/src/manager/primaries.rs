//! Primaries: failover off dead or unusable nodes, and moves an
//! operator asks for, each under a new epoch.

use super::{Manager, PrimaryChange, SmError, SmResult};
use crate::model::{Liveness, NodeId, NodeIntent, ShardId, ShardRecord};
use crate::placement::{choose_primary, Candidate};
use std::collections::HashMap;

impl Manager {
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
            next.epoch = next.epoch.next();
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
        next.epoch = next.epoch.next();
        self.commit_shards(&mut state, vec![next.clone()])?;
        Ok(next)
    }
}
