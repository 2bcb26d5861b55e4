//! Locality: the nodes' heat counts gathered per window, where each μshard
//! of an akkio keyspace is, pins, and the decision log (the judgments are
//! [`crate::locality`]'s).

use super::moves::{keyspace_with_ushard, owner_of};
use super::{Manager, MoveCause, MoveRefusal, SmResult};
use crate::locality::{Decision, RegionCounts, UshardKey, Whereabouts};
use crate::model::{KeyspaceRecord, Mapping, ShardId};
use crate::store::{Change, DurableState};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

/// How many decisions the log keeps (oldest dropped first).
pub const DECISION_LOG_LEN: usize = 64;

/// One logged decision, with when it was made and the move it started.
#[derive(Clone, Debug)]
pub struct LoggedDecision {
    pub at_ms: u64,
    pub decision: Decision,
    pub move_id: u64,
}

impl Manager {
    /// Adds one heartbeat's counts to the current window.
    pub fn record_heat(&self, heat: impl IntoIterator<Item = (UshardKey, String, u64)>) {
        let mut window = self.heat.lock().unwrap_or_else(|p| p.into_inner());
        let mut load = self.ushard_load.lock().unwrap_or_else(|p| p.into_inner());
        for (key, region, ops) in heat {
            *load.current.entry(key).or_default() += ops;
            window.add(key, &region, ops);
        }
    }

    /// Ends a split window: its per-μshard operations become the ones
    /// splits cut by, and the next window starts empty.
    pub fn roll_ushard_load(&self) {
        let mut load = self.ushard_load.lock().unwrap_or_else(|p| p.into_inner());
        load.last = std::mem::take(&mut load.current);
    }

    /// Operations on `ushard` of keyspace `keyspace` in the last whole
    /// split window (0 when none were counted).
    pub(super) fn last_ushard_load(&self, key: UshardKey) -> u64 {
        let load = self.ushard_load.lock().unwrap_or_else(|p| p.into_inner());
        load.last.get(&key).copied().unwrap_or(0)
    }

    /// The window's counts; the next window starts empty.
    pub fn take_heat(&self) -> HashMap<UshardKey, RegionCounts> {
        self.heat.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// Every μshard of an akkio keyspace that had traffic or is pinned,
    /// with where it is now.
    pub fn locality_candidates(&self, heat: &HashMap<UshardKey, RegionCounts>) -> Vec<(UshardKey, Whereabouts)> {
        let state = self.lock_state();
        let moving: BTreeSet<UshardKey> = state
            .moves
            .values()
            .filter(|m| m.phase.holds_ushard())
            .map(|m| (m.keyspace_id, m.ushard.0))
            .collect();
        let mut out = Vec::new();
        for keyspace in state.keyspaces.values().filter(|k| k.mapping == Mapping::Akkio) {
            let reachable: BTreeSet<String> = keyspace
                .shards
                .iter()
                .filter(|s| !keyspace.retiring.contains(s))
                .filter_map(|s| primary_region(&state, *s))
                .collect();
            let hot = heat.keys().filter(|(k, _)| *k == keyspace.id).map(|(_, u)| *u);
            let ushards: BTreeSet<u32> = hot.chain(keyspace.pins.keys().copied()).collect();
            for ushard in ushards.into_iter().filter(|u| *u < keyspace.ushard_count) {
                let key = (keyspace.id, ushard);
                out.push((
                    key,
                    Whereabouts {
                        keyspace: keyspace.name.clone(),
                        region: primary_region(&state, owner_of(keyspace, ushard)).unwrap_or_default(),
                        pinned: keyspace.pins.get(&ushard).cloned(),
                        moving: moving.contains(&key),
                        reachable: reachable.clone(),
                    },
                ));
            }
        }
        out
    }

    /// Carries out one window's decisions: each move goes to the shard of
    /// the keyspace, not retiring, with its primary in the decided region
    /// and the fewest μshards. Everything is logged; returns the μshards
    /// whose move started.
    pub fn act_on_locality(&self, decisions: Vec<Decision>) -> Vec<UshardKey> {
        let mut started = Vec::new();
        for mut decision in decisions {
            let mut move_id = 0;
            if decision.action == crate::locality::Action::Move {
                let (ks, ushard) = decision.ushard;
                match self.locality_target(&decision.keyspace, &decision.to_region) {
                    Some(to) => {
                        let reason = format!(
                            "{} -> {}: {}",
                            decision.from_region, decision.to_region, decision.reason
                        );
                        match self.start_move(&decision.keyspace, ushard, to, MoveCause::Locality, &reason) {
                            Ok(record) => {
                                move_id = record.id;
                                started.push((ks, ushard));
                            }
                            Err(e) => {
                                decision.action = crate::locality::Action::Hold;
                                decision.reason = format!("{}; the move was refused: {e}", decision.reason);
                            }
                        }
                    }
                    None => {
                        decision.action = crate::locality::Action::Hold;
                        decision.reason = format!("{}; no shard to take it", decision.reason);
                    }
                }
            }
            tracing::info!(
                keyspace = %decision.keyspace,
                ushard = decision.ushard.1,
                action = decision.action.name(),
                from = %decision.from_region,
                to = %decision.to_region,
                reason = %decision.reason,
                move_id,
                "locality"
            );
            let mut log = self.locality_log.lock().unwrap_or_else(|p| p.into_inner());
            if log.len() == DECISION_LOG_LEN {
                log.pop_front();
            }
            log.push_back(LoggedDecision {
                at_ms: self.wall_ms(),
                decision,
                move_id,
            });
        }
        started
    }

    /// The latest decisions, oldest first.
    pub fn locality_log(&self) -> VecDeque<LoggedDecision> {
        self.locality_log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn locality_target(&self, keyspace: &str, region: &str) -> Option<ShardId> {
        let state = self.lock_state();
        let ks = state.keyspaces.get(keyspace)?;
        let map = ks.map.as_ref();
        ks.shards
            .iter()
            .copied()
            .filter(|s| !ks.retiring.contains(s))
            .filter(|s| primary_region(&state, *s).as_deref() == Some(region))
            .min_by_key(|s| (map.map_or(0, |m| m.ushards_of(*s).len()), *s))
    }

    /// Pins `ushard` of `keyspace` to `region` ("" unpins). Refused for an
    /// unknown keyspace or μshard, a compact keyspace, or a region no node
    /// is in. Returns the keyspace's pins after the change.
    pub fn pin_ushard(&self, keyspace: &str, ushard: u32, region: &str) -> SmResult<BTreeMap<u32, String>> {
        let mut state = self.lock_state();
        let ks = keyspace_with_ushard(&state, keyspace, ushard)?;
        if ks.mapping == Mapping::Compact {
            return Err(MoveRefusal::CompactMapping(keyspace.to_string()).into());
        }
        let known: BTreeSet<String> = state.nodes.values().map(|n| n.region.clone()).collect();
        if !region.is_empty() && !known.contains(region) {
            return Err(MoveRefusal::UnknownRegion {
                region: region.to_string(),
                known: known.into_iter().collect(),
            }
            .into());
        }
        let mut next: KeyspaceRecord = ks.clone();
        if region.is_empty() {
            next.pins.remove(&ushard);
        } else {
            next.pins.insert(ushard, region.to_string());
        }
        if next.pins == ks.pins {
            return Ok(next.pins);
        }
        self.commit(&Change {
            keyspaces: vec![next.clone()],
            ..Default::default()
        })?;
        let pins = next.pins.clone();
        state.keyspaces.insert(next.name.clone(), next);
        Ok(pins)
    }
}

/// The region of `shard`'s primary's node, if it has one.
fn primary_region(state: &DurableState, shard: ShardId) -> Option<String> {
    let primary = state.shards.get(&shard)?.primary?;
    state.nodes.get(&primary).map(|n| n.region.clone())
}
