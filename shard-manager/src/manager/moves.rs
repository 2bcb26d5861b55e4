//! μshard moves as the shard manager keeps them: starting one (every bad
//! request refused with a stable code, nothing recorded), and each phase
//! change, committed before it is acted on. The map flips in the same
//! durable change that records the destination's activation. Driving the
//! nodes through each phase is `crate::moves`'s (docs/moves.md).

use super::{Manager, SmError, SmResult};
use crate::model::{Mapping, MovePhase, MoveRecord, ShardId, UshardId};
use crate::store::{Change, Counters, DurableState};

/// Why a move was refused; each has a stable code (`shoal-error`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MoveRefusal {
    #[error("unknown keyspace {0:?}")]
    UnknownKeyspace(String),
    #[error("ushard {ushard} out of range: keyspace {keyspace:?} has {count}")]
    UshardOutOfRange { keyspace: String, ushard: u32, count: u32 },
    #[error("unknown shard {0}")]
    UnknownShard(ShardId),
    #[error("shard {shard} belongs to keyspace {its:?}, not {keyspace:?}")]
    OtherKeyspace {
        shard: ShardId,
        its: String,
        keyspace: String,
    },
    #[error("ushard {ushard} of keyspace {keyspace:?} is already in shard {shard}")]
    AlreadyOwner {
        keyspace: String,
        ushard: u32,
        shard: ShardId,
    },
    #[error("ushard {ushard} of keyspace {keyspace:?} is already moving (move {move_id})")]
    AlreadyMoving {
        keyspace: String,
        ushard: u32,
        move_id: u64,
    },
    #[error(
        "keyspace {0:?} uses the compact mapping: its μshards move only by shard split and merge (create it with --mapping akkio to move μshards one by one)"
    )]
    CompactMapping(String),
    #[error("unknown move {0}")]
    UnknownMove(u64),
    #[error("move {id} is {phase}: only a copying move can be aborted")]
    NotAbortable { id: u64, phase: &'static str },
    #[error("shard {shard} owns {ushards} μshard(s): a split needs at least 2")]
    TooFewUshards { shard: ShardId, ushards: usize },
    #[error("shard {0} cannot be merged into itself")]
    SameShard(ShardId),
    #[error("shard {shard} has a μshard moving in or out (move {move_id}): wait for it")]
    ShardBusy { shard: ShardId, move_id: u64 },
    #[error("shard {0} is being merged away: it takes no μshard in and cannot split or merge")]
    ShardRetiring(ShardId),
    #[error("no node is in region {region:?}; regions with nodes: {known:?}")]
    UnknownRegion { region: String, known: Vec<String> },
}

impl MoveRefusal {
    /// The stable code clients see.
    pub fn code(&self) -> &'static str {
        match self {
            MoveRefusal::UnknownKeyspace(_) => "UNKNOWN_KEYSPACE",
            MoveRefusal::UshardOutOfRange { .. } => "USHARD_OUT_OF_RANGE",
            MoveRefusal::UnknownShard(_) => "UNKNOWN_SHARD",
            MoveRefusal::OtherKeyspace { .. } => "OTHER_KEYSPACE",
            MoveRefusal::AlreadyOwner { .. } => "ALREADY_OWNER",
            MoveRefusal::AlreadyMoving { .. } => "ALREADY_MOVING",
            MoveRefusal::CompactMapping(_) => "COMPACT_MAPPING",
            MoveRefusal::UnknownMove(_) => "UNKNOWN_MOVE",
            MoveRefusal::NotAbortable { .. } => "NOT_ABORTABLE",
            MoveRefusal::TooFewUshards { .. } => "TOO_FEW_USHARDS",
            MoveRefusal::SameShard(_) => "SAME_SHARD",
            MoveRefusal::ShardBusy { .. } => "SHARD_BUSY",
            MoveRefusal::ShardRetiring(_) => "SHARD_RETIRING",
            MoveRefusal::UnknownRegion { .. } => "UNKNOWN_REGION",
        }
    }
}

/// Who asks for a move: an operator may move μshards of akkio keyspaces
/// only; split and merge move those of any keyspace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MoveCause {
    Operator,
    Split,
    Merge,
    Locality,
}

impl MoveCause {
    fn name(self) -> &'static str {
        match self {
            MoveCause::Operator => "operator",
            MoveCause::Split => "split",
            MoveCause::Merge => "merge",
            MoveCause::Locality => "locality",
        }
    }
}

impl Manager {
    /// Records a move of `ushard` of `keyspace` to shard `to`, to be driven
    /// from its first phase. Refused (nothing recorded) for an unknown
    /// keyspace, μshard or shard, a shard of another keyspace, the shard
    /// that owns it already, a μshard already moving, or an operator's
    /// move in a compact keyspace.
    pub fn start_move(
        &self,
        keyspace: &str,
        ushard: u32,
        to: ShardId,
        cause: MoveCause,
        detail: &str,
    ) -> SmResult<MoveRecord> {
        let mut state = self.lock_state();
        let mut counters = state.counters.clone();
        let record = self.new_move(&state, &mut counters, keyspace, ushard, to, cause, detail)?;
        self.commit(&Change {
            moves: vec![record.clone()],
            counters: Some(counters.clone()),
            ..Default::default()
        })?;
        state.moves.insert(record.id, record.clone());
        state.counters = counters;
        tracing::info!(move_id = record.id, keyspace, ushard, from = %record.from, to = %to, reason = %record.reason, "move started");
        Ok(record)
    }

    /// A new move record (its id taken from `counters`), checked as
    /// [`Manager::start_move`] says; nothing is committed.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new_move(
        &self,
        state: &DurableState,
        counters: &mut Counters,
        keyspace: &str,
        ushard: u32,
        to: ShardId,
        cause: MoveCause,
        detail: &str,
    ) -> Result<MoveRecord, MoveRefusal> {
        let ks = keyspace_with_ushard(state, keyspace, ushard)?;
        let target = state.shards.get(&to).ok_or(MoveRefusal::UnknownShard(to))?;
        if target.keyspace != keyspace {
            return Err(MoveRefusal::OtherKeyspace {
                shard: to,
                its: target.keyspace.clone(),
                keyspace: keyspace.to_string(),
            });
        }
        if cause == MoveCause::Operator && ks.mapping == Mapping::Compact {
            return Err(MoveRefusal::CompactMapping(keyspace.to_string()));
        }
        if ks.retiring.contains(&to) {
            return Err(MoveRefusal::ShardRetiring(to));
        }
        let from = owner_of(ks, ushard);
        if from == to {
            return Err(MoveRefusal::AlreadyOwner {
                keyspace: keyspace.to_string(),
                ushard,
                shard: to,
            });
        }
        if let Some(busy) = state
            .moves
            .values()
            .find(|m| m.keyspace == keyspace && m.ushard == UshardId(ushard) && m.phase.holds_ushard())
        {
            return Err(MoveRefusal::AlreadyMoving {
                keyspace: keyspace.to_string(),
                ushard,
                move_id: busy.id,
            });
        }
        let id = counters.next_move_id;
        counters.next_move_id += 1;
        let reason = if detail.is_empty() {
            cause.name().to_string()
        } else {
            format!("{}: {detail}", cause.name())
        };
        Ok(MoveRecord {
            id,
            keyspace: keyspace.to_string(),
            keyspace_id: ks.id,
            ushard: UshardId(ushard),
            from,
            to,
            phase: MovePhase::Copying,
            reason,
            created_ms: self.wall_ms(),
            activated_ms: 0,
            error: String::new(),
        })
    }

    /// The destination serves the μshard: record it and give the μshard to
    /// the destination in the map, in one durable change (one new map
    /// version). Repeating it changes nothing.
    pub fn move_activated(&self, id: u64) -> SmResult<MoveRecord> {
        let mut state = self.lock_state();
        let mut record = state.moves.get(&id).cloned().ok_or(MoveRefusal::UnknownMove(id))?;
        if !matches!(record.phase, MovePhase::Copying | MovePhase::Aborting) {
            return Ok(record);
        }
        let mut keyspace = state
            .keyspaces
            .get(&record.keyspace)
            .cloned()
            .ok_or_else(|| MoveRefusal::UnknownKeyspace(record.keyspace.clone()))?;
        let mut map = keyspace
            .map
            .clone()
            .or_else(|| crate::model::UshardMap::modulo(keyspace.ushard_count, &keyspace.shards))
            .ok_or_else(|| SmError::Storage(format!("keyspace {:?} has no μshard map", keyspace.name)))?;
        map.assign(record.ushard, record.to);
        keyspace.map = Some(map);
        record.phase = MovePhase::Activated;
        record.activated_ms = self.wall_ms();
        record.error.clear();
        let mut counters = state.counters.clone();
        counters.map_version += 1;
        self.commit(&Change {
            keyspaces: vec![keyspace.clone()],
            moves: vec![record.clone()],
            counters: Some(counters.clone()),
            ..Default::default()
        })?;
        state.keyspaces.insert(keyspace.name.clone(), keyspace);
        state.moves.insert(id, record.clone());
        state.counters = counters;
        tracing::info!(move_id = id, to = %record.to, "move activated; the map names the destination");
        Ok(record)
    }

    /// Moves `id` to `phase` (durably), noting `error` ("" clears it).
    pub fn set_move_phase(&self, id: u64, phase: MovePhase, error: &str) -> SmResult<MoveRecord> {
        let mut state = self.lock_state();
        let mut record = state.moves.get(&id).cloned().ok_or(MoveRefusal::UnknownMove(id))?;
        if record.phase == phase && record.error == error {
            return Ok(record);
        }
        record.phase = phase;
        record.error = error.to_string();
        self.commit(&Change {
            moves: vec![record.clone()],
            ..Default::default()
        })?;
        state.moves.insert(id, record.clone());
        tracing::info!(move_id = id, phase = phase.name(), error, "move phase");
        Ok(record)
    }

    /// Asks for a copying move to be undone.
    pub fn abort_move(&self, id: u64, why: &str) -> SmResult<MoveRecord> {
        let phase = {
            let state = self.lock_state();
            state
                .moves
                .get(&id)
                .map(|m| m.phase)
                .ok_or(MoveRefusal::UnknownMove(id))?
        };
        match phase {
            MovePhase::Copying => self.set_move_phase(id, MovePhase::Aborting, why),
            MovePhase::Aborting | MovePhase::Aborted => self.move_record(id),
            other => Err(MoveRefusal::NotAbortable {
                id,
                phase: other.name(),
            }
            .into()),
        }
    }

    pub fn move_record(&self, id: u64) -> SmResult<MoveRecord> {
        self.lock_state()
            .moves
            .get(&id)
            .cloned()
            .ok_or_else(|| MoveRefusal::UnknownMove(id).into())
    }

    /// Every move with steps left, oldest first.
    pub fn active_moves(&self) -> Vec<MoveRecord> {
        self.lock_state()
            .moves
            .values()
            .filter(|m| m.phase.is_active())
            .cloned()
            .collect()
    }

    pub(super) fn wall_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// The keyspace named, if it has μshard `ushard`.
pub(super) fn keyspace_with_ushard<'s>(
    state: &'s DurableState,
    keyspace: &str,
    ushard: u32,
) -> Result<&'s crate::model::KeyspaceRecord, MoveRefusal> {
    let ks = state
        .keyspaces
        .get(keyspace)
        .ok_or_else(|| MoveRefusal::UnknownKeyspace(keyspace.to_string()))?;
    if ushard >= ks.ushard_count {
        return Err(MoveRefusal::UshardOutOfRange {
            keyspace: keyspace.to_string(),
            ushard,
            count: ks.ushard_count,
        });
    }
    Ok(ks)
}

/// The shard owning `ushard` by the keyspace's map (or the static rule for
/// a keyspace recorded before maps were explicit).
pub fn owner_of(keyspace: &crate::model::KeyspaceRecord, ushard: u32) -> ShardId {
    match &keyspace.map {
        Some(map) => map.owner(UshardId(ushard)).unwrap_or(ShardId(0)),
        None => keyspace
            .shards
            .get(ushard as usize % keyspace.shards.len().max(1))
            .copied()
            .unwrap_or(ShardId(0)),
    }
}

impl From<MoveRefusal> for SmError {
    fn from(refusal: MoveRefusal) -> SmError {
        SmError::Move(refusal)
    }
}
