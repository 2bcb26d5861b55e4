//! Rebalancing: the cluster's loads turned into the next replica or primary
//! move (decided by [`crate::rebalance`]), within the move budget.

use super::{Manager, SmResult};
use crate::model::{MovePhase, NodeId, ShardId};
use crate::rebalance::{self, BalanceStep, NodeLoad, SettledShard};
use crate::repair::CATCH_UP_SLACK;
use shoal_config::manager::{MoveBudget, Rebalance};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// When the next replica move may start: each one waits for the byte budget
/// to have paid for the previous one (a replica is copied by Raft, which
/// the shard manager cannot throttle, so it paces the starts instead).
#[derive(Debug)]
pub struct BalancePacing {
    next_replica_move: Instant,
}

impl BalancePacing {
    pub fn new(now: Instant) -> BalancePacing {
        BalancePacing { next_replica_move: now }
    }
}

impl Manager {
    /// One balancing pass: at most one replica move (when fewer than
    /// `max_concurrent` membership changes and μshard copies run and the
    /// byte budget allows) and one primary move. Returns what it started.
    pub fn rebalance(
        &self,
        policy: &Rebalance,
        budget: &MoveBudget,
        pacing: &mut BalancePacing,
        now: Instant,
    ) -> SmResult<Vec<BalanceStep>> {
        // Right after a start nothing has reported yet: every shard would
        // look unsettled and every node empty.
        if !policy.enabled || self.clock.since(self.started) < self.liveness.suspect_after {
            return Ok(Vec::new());
        }
        let leaders = self.leader_views();
        let mut shard_bytes: HashMap<ShardId, u64> = HashMap::new();
        for view in self.replica_reports().iter().flatten() {
            let bytes = shard_bytes.entry(view.shard).or_default();
            *bytes = (*bytes).max(view.approx_bytes);
        }
        let mut state = self.lock_state();
        let usable: HashSet<NodeId> = self.candidates(&state).into_iter().map(|c| c.id).collect();
        let moving: HashSet<ShardId> = state
            .moves
            .values()
            .filter(|m| m.phase.is_active())
            .flat_map(|m| [m.from, m.to])
            .collect();
        let copying = state.moves.values().filter(|m| m.phase == MovePhase::Copying).count();
        let changing = state.shards.values().filter(|s| s.change.is_some()).count();
        let retiring: HashSet<ShardId> = state
            .keyspaces
            .values()
            .flat_map(|k| k.retiring.iter().copied())
            .collect();

        let mut settled = Vec::new();
        for shard in state.shards.values() {
            let Some(leader) = leaders.get(&shard.id) else { continue };
            let quiet = shard.change.is_none()
                && !moving.contains(&shard.id)
                && !retiring.contains(&shard.id)
                && shard.hosts().iter().all(|n| usable.contains(n))
                && leader.matches(&shard.voters, &shard.learners)
                && shard.primary == Some(leader.node);
            let Some(keyspace) = state.keyspaces.get(&shard.keyspace) else {
                continue;
            };
            if !quiet {
                continue;
            }
            let caught_up = shard
                .voters
                .iter()
                .copied()
                .filter(|v| {
                    *v == leader.node
                        || leader
                            .matched_index
                            .get(v)
                            .is_some_and(|m| m + CATCH_UP_SLACK >= leader.last_log_index)
                })
                .collect();
            settled.push(SettledShard {
                record: shard,
                bytes: shard_bytes.get(&shard.id).copied().unwrap_or(0),
                caught_up,
                regions: &keyspace.regions,
                preferred_region: &keyspace.preferred_region,
            });
        }
        let hosts: Vec<(ShardId, Vec<NodeId>)> = state
            .shards
            .values()
            .map(|s| (s.id, rebalance::settled_hosts(s)))
            .collect();
        let nodes: Vec<NodeLoad> = self
            .candidates(&state)
            .into_iter()
            .map(|c| {
                let hosted = || hosts.iter().filter(|(_, h)| h.contains(&c.id));
                NodeLoad {
                    bytes: hosted().map(|(s, _)| shard_bytes.get(s).copied().unwrap_or(0)).sum(),
                    replicas: hosted().count(),
                    id: c.id,
                    region: c.region,
                    primaries: c.primaries,
                }
            })
            .collect();

        let mut steps = Vec::new();
        let room = changing + copying < budget.max_concurrent as usize;
        if room && now >= pacing.next_replica_move {
            steps.extend(rebalance::next_replica_move(&nodes, &settled, policy));
        }
        // A shard whose replica just moved is not led elsewhere in the
        // same pass: one change per shard at a time.
        let replica_shard = steps.first().map(step_shard);
        let others: Vec<SettledShard> = settled
            .into_iter()
            .filter(|s| Some(s.record.id) != replica_shard)
            .collect();
        steps.extend(rebalance::next_primary_move(&nodes, &others, policy));

        let mut updated = Vec::new();
        for step in &steps {
            let mut next = state.shards[&step_shard(step)].clone();
            match step {
                BalanceStep::Replica { change, bytes, .. } => {
                    next.change = Some(change.clone());
                    next.conf_ver += 1;
                    if budget.bytes_per_sec > 0 {
                        let wait = Duration::from_secs_f64(*bytes as f64 / budget.bytes_per_sec as f64);
                        pacing.next_replica_move = now + wait;
                    }
                }
                BalanceStep::Primary { to, .. } => {
                    next.primary = Some(*to);
                    next.epoch = next.epoch.next();
                }
            }
            updated.push(next);
        }
        self.commit_shards(&mut state, updated)?;
        Ok(steps)
    }
}

fn step_shard(step: &BalanceStep) -> ShardId {
    match step {
        BalanceStep::Replica { shard, .. } | BalanceStep::Primary { shard, .. } => *shard,
    }
}
