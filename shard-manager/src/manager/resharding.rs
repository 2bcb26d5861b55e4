//! Split and merge, built on μshard moves (docs/moves.md). A split creates
//! a shard, placed like any other, and moves the upper half of a shard's
//! μshards into it; a merge moves every μshard of a shard into another and
//! marks it retiring; once a retiring shard owns no μshard and no move
//! touches it, it retires: it leaves the keyspace, its record goes, and
//! nodes delete its replicas. **Split and merge change a keyspace's shard
//! list only with its map and home map written out**, never by the static
//! `u mod shards` rule, which a new shard list would silently change. Each is one durable change, so a shard-manager
//! crash leaves either nothing or a change its move driver carries on.

use super::keyspaces::ShardPlacement;
use super::moves::{MoveCause, MoveRefusal};
use super::{Manager, SmResult};
use crate::model::{KeyspaceRecord, Mapping, MoveRecord, ShardId, UshardId, UshardMap};
use crate::split_trigger::ShardUsage;
use crate::store::{Change, DurableState};
use std::collections::HashMap;

/// Where to cut a shard's μshards (ascending) for a split: the index of
/// the first one that moves to the new shard, and how it was chosen. **By
/// load** when the last split window counted any: the upper part that
/// carries nearest half of it (at least one μshard on each side); else by
/// count, the upper half. Either way the moved μshards are one contiguous
/// range, as a compact keyspace needs.
fn split_point(owned: &[UshardId], load: impl Fn(UshardId) -> u64) -> (usize, String) {
    let loads: Vec<u64> = owned.iter().map(|u| load(*u)).collect();
    let total: u64 = loads.iter().sum();
    if total == 0 || owned.len() < 2 {
        return (owned.len() / 2, "by count".into());
    }
    let mut best = (u64::MAX, owned.len() / 2, 0);
    let mut upper = total;
    for (cut, moved_before) in loads.iter().enumerate().take(owned.len()) {
        if cut > 0 {
            let off = upper.abs_diff(total / 2);
            if off < best.0 {
                best = (off, cut, upper);
            }
        }
        upper -= moved_before;
    }
    let (_, cut, moved) = best;
    (cut, format!("by load: {moved} of {total} ops in the last window move"))
}

/// The keyspace's map (or the static rule for records from before maps
/// were explicit).
fn map_of(keyspace: &KeyspaceRecord) -> Option<UshardMap> {
    keyspace
        .map
        .clone()
        .or_else(|| UshardMap::modulo(keyspace.ushard_count, &keyspace.shards))
}

/// The keyspace with its map and home map written out (records from
/// before maps were explicit have neither, and follow the static rule over
/// their current shards).
fn with_explicit_maps(keyspace: &KeyspaceRecord) -> SmResult<KeyspaceRecord> {
    let mut explicit = keyspace.clone();
    let map = map_of(keyspace)
        .ok_or_else(|| crate::manager::SmError::Storage(format!("keyspace {:?} has no μshard map", keyspace.name)))?;
    explicit.home = explicit.home.or_else(|| Some(map.clone()));
    explicit.map = Some(map);
    Ok(explicit)
}

/// The shard's keyspace, refusing a shard that is unknown, retiring, or
/// has a move in flight in or out of it.
fn idle_shard(state: &DurableState, shard: ShardId, retiring_ok: bool) -> Result<&KeyspaceRecord, MoveRefusal> {
    let record = state.shards.get(&shard).ok_or(MoveRefusal::UnknownShard(shard))?;
    let keyspace = state
        .keyspaces
        .get(&record.keyspace)
        .ok_or_else(|| MoveRefusal::UnknownKeyspace(record.keyspace.clone()))?;
    if !retiring_ok && keyspace.retiring.contains(&shard) {
        return Err(MoveRefusal::ShardRetiring(shard));
    }
    if let Some(busy) = state
        .moves
        .values()
        .find(|m| m.phase.holds_ushard() && (m.from == shard || m.to == shard))
    {
        return Err(MoveRefusal::ShardBusy {
            shard,
            move_id: busy.id,
        });
    }
    Ok(keyspace)
}

impl Manager {
    /// Splits `shard`: a new shard of its keyspace takes the upper half of
    /// its μshards (by count), one move each. Refused for an unknown,
    /// busy or retiring shard, or one with fewer than two μshards.
    /// `why` says what asked for it ("" for an operator).
    pub fn split_shard(&self, shard: ShardId, why: &str) -> SmResult<(ShardId, Vec<MoveRecord>)> {
        let mut state = self.lock_state();
        let keyspace = with_explicit_maps(idle_shard(&state, shard, false)?)?;
        let owned = map_of(&keyspace).map(|m| m.ushards_of(shard)).unwrap_or_default();
        if owned.len() < 2 {
            return Err(MoveRefusal::TooFewUshards {
                shard,
                ushards: owned.len(),
            }
            .into());
        }
        let mut counters = state.counters.clone();
        let new_id = counters.next_shard_id;
        counters.next_shard_id = new_id.next();
        let placement = ShardPlacement {
            keyspace: &keyspace.name,
            replicas: keyspace.replicas,
            regions: &keyspace.regions,
            preferred_region: &keyspace.preferred_region,
            learner_regions: &keyspace.learner_regions,
        };
        let new_shard = placement.place(new_id, &mut self.candidates(&state))?;
        let mut grown = keyspace.clone();
        grown.shards.push(new_id);
        // The new shard must be known for the moves into it to be checked.
        let mut planned = (*state).clone();
        planned.shards.insert(new_id, new_shard.clone());
        planned.keyspaces.insert(grown.name.clone(), grown.clone());
        let detail = match why {
            "" => format!("shard {shard} into new shard {new_id}"),
            why => format!("shard {shard} into new shard {new_id} ({why})"),
        };
        let (cut, by) = split_point(&owned, |u| self.last_ushard_load((keyspace.id, u.0)));
        let detail = format!("{detail}, {by}");
        let moves = owned[cut..]
            .iter()
            .map(|u| {
                self.new_move(
                    &planned,
                    &mut counters,
                    &keyspace.name,
                    u.0,
                    new_id,
                    MoveCause::Split,
                    &detail,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        counters.map_version += 1;
        self.commit(&Change {
            keyspaces: vec![grown.clone()],
            shards: vec![new_shard.clone()],
            moves: moves.clone(),
            counters: Some(counters.clone()),
            ..Default::default()
        })?;
        state.keyspaces.insert(grown.name.clone(), grown);
        state.shards.insert(new_id, new_shard);
        for m in &moves {
            state.moves.insert(m.id, m.clone());
        }
        state.counters = counters;
        tracing::info!(shard = %shard, new_shard = %new_id, moves = moves.len(), "split started");
        Ok((new_id, moves))
    }

    /// Merges `shard` into `into` (same keyspace): every μshard of `shard`
    /// moves to `into`, and `shard` retires once it owns none. Refused for
    /// unknown or busy shards, a retiring target, shards of different
    /// keyspaces, or a shard merged into itself. Merging a retiring shard
    /// again (after one of its moves aborted) moves what is left.
    pub fn merge_shard(&self, shard: ShardId, into: ShardId) -> SmResult<Vec<MoveRecord>> {
        if shard == into {
            return Err(MoveRefusal::SameShard(shard).into());
        }
        let mut state = self.lock_state();
        // Merging a retiring shard again moves what an aborted move left.
        let keyspace = with_explicit_maps(idle_shard(&state, shard, true)?)?;
        let target = idle_shard(&state, into, false)?;
        if target.name != keyspace.name {
            return Err(MoveRefusal::OtherKeyspace {
                shard: into,
                its: target.name.clone(),
                keyspace: keyspace.name.clone(),
            }
            .into());
        }
        let owned = map_of(&keyspace).map(|m| m.ushards_of(shard)).unwrap_or_default();
        let mut counters = state.counters.clone();
        let detail = format!("shard {shard} into {into}");
        let moves = owned
            .iter()
            .map(|u| {
                self.new_move(
                    &state,
                    &mut counters,
                    &keyspace.name,
                    u.0,
                    into,
                    MoveCause::Merge,
                    &detail,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut shrinking = keyspace;
        if !shrinking.retiring.contains(&shard) {
            shrinking.retiring.push(shard);
        }
        counters.map_version += 1;
        self.commit(&Change {
            keyspaces: vec![shrinking.clone()],
            moves: moves.clone(),
            counters: Some(counters.clone()),
            ..Default::default()
        })?;
        state.keyspaces.insert(shrinking.name.clone(), shrinking);
        for m in &moves {
            state.moves.insert(m.id, m.clone());
        }
        state.counters = counters;
        tracing::info!(shard = %shard, into = %into, moves = moves.len(), "merge started");
        Ok(moves)
    }

    /// The usage of every shard that may split by itself: of a compact
    /// keyspace, not retiring, owning two μshards or more.
    pub fn splittable_usage(&self) -> HashMap<ShardId, ShardUsage> {
        let candidates: Vec<ShardId> = {
            let state = self.lock_state();
            state
                .keyspaces
                .values()
                .filter(|k| k.mapping == Mapping::Compact)
                .flat_map(|k| {
                    let map = map_of(k);
                    k.shards
                        .iter()
                        .copied()
                        .filter(|s| !k.retiring.contains(s))
                        .filter(move |s| map.as_ref().is_some_and(|m| m.ushards_of(*s).len() >= 2))
                        .collect::<Vec<_>>()
                })
                .collect()
        };
        let reports = self.replica_reports();
        let mut usage: HashMap<ShardId, ShardUsage> = candidates.iter().map(|s| (*s, ShardUsage::default())).collect();
        for view in reports.iter().flatten() {
            if let Some(u) = usage.get_mut(&view.shard) {
                u.bytes = u.bytes.max(view.approx_bytes);
                u.ops_per_sec += view.ops_per_sec;
            }
        }
        usage
    }

    /// Retires every retiring shard that owns no μshard and that no move
    /// still holds; returns the shards retired. Called by the move driver.
    pub fn retire_merged_shards(&self) -> SmResult<Vec<ShardId>> {
        let mut state = self.lock_state();
        // Every tick asks; almost always nothing is being merged.
        if state.keyspaces.values().all(|k| k.retiring.is_empty()) {
            return Ok(Vec::new());
        }
        let mut retired = Vec::new();
        let mut changed = Vec::new();
        for keyspace in state.keyspaces.values() {
            let Some(map) = map_of(keyspace) else { continue };
            let ready: Vec<ShardId> = keyspace
                .retiring
                .iter()
                .copied()
                .filter(|s| map.ushards_of(*s).is_empty())
                .filter(|s| {
                    !state
                        .moves
                        .values()
                        .any(|m| m.phase.holds_ushard() && (m.from == *s || m.to == *s))
                })
                .collect();
            if ready.is_empty() {
                continue;
            }
            // The home map keeps naming the retired shard: a replica with
            // no move state for one of its μshards then serves nothing,
            // however far behind it is.
            let mut next = keyspace.clone();
            next.shards.retain(|s| !ready.contains(s));
            next.retiring.retain(|s| !ready.contains(s));
            next.retired.extend(ready.iter().copied());
            retired.extend(ready);
            changed.push(next);
        }
        if retired.is_empty() {
            return Ok(retired);
        }
        let mut counters = state.counters.clone();
        counters.map_version += 1;
        self.commit(&Change {
            keyspaces: changed.clone(),
            counters: Some(counters.clone()),
            removed_shards: retired.clone(),
            ..Default::default()
        })?;
        for keyspace in changed {
            state.keyspaces.insert(keyspace.name.clone(), keyspace);
        }
        for shard in &retired {
            state.shards.remove(shard);
        }
        state.counters = counters;
        tracing::info!(?retired, "merged shards retired");
        Ok(retired)
    }
}

#[cfg(test)]
mod tests {
    use super::split_point;
    use crate::model::UshardId;

    fn ushards(range: std::ops::Range<u32>) -> Vec<UshardId> {
        range.map(UshardId).collect()
    }

    #[test]
    fn a_split_cuts_by_load_when_it_was_counted_and_by_count_otherwise() {
        let owned = ushards(0..8);
        assert_eq!(split_point(&owned, |_| 0), (4, "by count".to_string()));
        // One hot μshard (6) carries most of the load: the upper part from
        // it on carries nearest half.
        let (cut, by) = split_point(&owned, |u| if u.0 == 6 { 1000 } else { 10 });
        assert_eq!(cut, 6, "{by}");
        assert!(by.starts_with("by load: 1010 of 1070"), "{by}");
        // The hottest first: everything but it moves, never nothing.
        let (cut, _) = split_point(&owned, |u| if u.0 == 0 { 1000 } else { 1 });
        assert_eq!(cut, 1);
        // The hottest last: only it moves, never everything.
        let (cut, _) = split_point(&owned, |u| if u.0 == 7 { 1000 } else { 1 });
        assert_eq!(cut, 7);
        // Even load: the middle.
        assert_eq!(split_point(&owned, |_| 5).0, 4);
        assert_eq!(split_point(&ushards(0..2), |u| u64::from(u.0) + 1).0, 1);
    }
}
