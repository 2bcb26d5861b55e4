//! μshard moves as a shard's log sees them: each μshard's part in a move
//! (its [`UshardState`], in the replicated state, so every replica and
//! every snapshot agrees), the steps that change it, the change log a
//! source keeps for the destination, and what a write to a moving μshard
//! gets.
//!
//! A move of μshard `u` from shard S to shard D, step by step (who drives
//! them, and how a crash resumes, is docs/moves.md):
//!
//! ```text
//! S: BeginExport{to: D}   u: Exporting  every write to u is also logged
//! D: BeginIngest{from: S} u: Incoming   not served; starts the copy afresh
//! D: Ingest{records}*                   a copy of u, then S's change log
//! S: Freeze               u: Frozen     writes to u: Moving; log complete
//! D: Ingest{rest of the log}
//! S: Release              u: Gone       reads and writes: WrongShard (D)
//! D: Activate{as_of: freeze version}  u: Owned
//! S: DropData (a grace period later)    the moved records are deleted
//! abort before Activate: D: Abandon (u: Abandoned), then S: AbortExport
//! ```
//!
//! **Never two owners that serve:** D serves `u` only from `Activate`,
//! which comes after S's `Release`, so S had stopped serving it (reads
//! too: a frozen source still serves reads, and once D takes writes they
//! would be stale). S serves it again only after an abort, which starts
//! with `Abandon` at D: D's log orders `Abandon` and `Activate`, and
//! whichever comes first turns the other into a refusal.
//!
//! Every step is idempotent for its own move, so a driver that lost track
//! simply runs the move again.
//!
//! A μshard without a state has never moved in or out of this shard: the
//! layout's home map says whether it is ours. Once it has one, **the state
//! overrides the layout** (`Owned` is served whatever the map says, `Gone`
//! is refused whatever it says), so a node whose map lags cannot undo a
//! move.

use crate::apply::command::{MoveStep, MovedRecord, Outcome};
use crate::apply::staged::StagedView;
use crate::codec::{decode, encode};
use crate::keys;
use serde::{Deserialize, Serialize};
use shoal_types::{KeyspaceId, ShardId, UshardId, Version};
use std::collections::BTreeMap;
use std::io;

/// Every μshard of a shard that has a move state, as last applied: what
/// request validation consults before anything is proposed or read (the
/// applier and the read view check again against their own state).
pub type MoveStates = BTreeMap<(KeyspaceId, UshardId), UshardState>;

/// The move states a shard's engine holds.
pub fn load_states(engine: &crate::engine::SharedEngine, shard: ShardId) -> io::Result<MoveStates> {
    let (start, end) = keys::ushard_state_range(shard);
    let mut states = MoveStates::new();
    let mut failure = None;
    engine.scan(
        keys::CF_DATA,
        &start,
        &end,
        crate::engine::Direction::Forward,
        &mut |key, value| {
            match (keys::parse_ushard_state_key(key), decode::<UshardState>(value)) {
                (Some(id), Ok(state)) => {
                    states.insert(id, state);
                }
                (_, Err(e)) => failure = Some(e),
                (None, _) => failure = Some(io::Error::new(io::ErrorKind::InvalidData, "bad μshard state key")),
            }
            Ok(crate::engine::Visit::Continue)
        },
    )?;
    match failure {
        Some(e) => Err(e),
        None => Ok(states),
    }
}

/// A μshard's part in a move, on one shard.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum UshardState {
    /// Moving out to `to`, still served; every change is logged.
    Exporting { move_id: u64, to: ShardId },
    /// Moving out; writes are refused (`Moving`), reads served. The change
    /// log is complete at version `at`.
    Frozen { move_id: u64, to: ShardId, at: Version },
    /// Moved out to `to` by move `move_id`, frozen at version `at`: reads
    /// and writes are refused; the records stay until `DropData`.
    Gone { move_id: u64, to: ShardId, at: Version },
    /// Moving in from `from`; not served.
    Incoming { move_id: u64, from: ShardId },
    /// A move in that was abandoned: `from` keeps the μshard, and this
    /// move can neither begin nor activate here any more.
    Abandoned { move_id: u64, from: ShardId },
    /// Moved in by move `move_id` (or kept by its abort): ours.
    Owned { move_id: u64 },
}

impl UshardState {
    /// The move this state belongs to.
    pub fn move_id(&self) -> u64 {
        match self {
            UshardState::Exporting { move_id, .. }
            | UshardState::Frozen { move_id, .. }
            | UshardState::Gone { move_id, .. }
            | UshardState::Incoming { move_id, .. }
            | UshardState::Abandoned { move_id, .. }
            | UshardState::Owned { move_id } => *move_id,
        }
    }
}

/// What a request for a μshard gets here, by its state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Served (reads and writes), unless the layout says otherwise for a
    /// μshard with no state.
    ByLayout,
    /// Served, whatever the layout says.
    Served,
    /// Reads served; writes refused for now (`Moving`).
    ReadOnly,
    /// Not served yet: this replica has not taken it in (`Moving` for a
    /// write, a stale replica for a read).
    NotYet,
    /// Served by another shard.
    Elsewhere(ShardId),
}

impl UshardState {
    pub fn access(state: Option<&UshardState>) -> Access {
        match state {
            None => Access::ByLayout,
            Some(UshardState::Owned { .. } | UshardState::Exporting { .. }) => Access::Served,
            Some(UshardState::Frozen { .. }) => Access::ReadOnly,
            Some(UshardState::Incoming { .. }) => Access::NotYet,
            Some(UshardState::Gone { to, .. }) => Access::Elsewhere(*to),
            Some(UshardState::Abandoned { from, .. }) => Access::Elsewhere(*from),
        }
    }
}

/// The state of `ushard` as the batch sees it.
pub fn state_of(
    view: &StagedView<'_>,
    shard: ShardId,
    keyspace: KeyspaceId,
    ushard: UshardId,
) -> io::Result<Option<UshardState>> {
    match view.get(&keys::ushard_state_key(shard, keyspace, ushard))? {
        Some(bytes) => Ok(Some(decode(&bytes)?)),
        None => Ok(None),
    }
}

fn set_state(
    view: &mut StagedView<'_>,
    shard: ShardId,
    keyspace: KeyspaceId,
    ushard: UshardId,
    state: &UshardState,
) -> io::Result<()> {
    view.put(keys::ushard_state_key(shard, keyspace, ushard), encode(state)?);
    Ok(())
}

/// What a write touching `ushard` gets: `None` to apply it, or the
/// refusal (nothing of the write is applied).
pub fn write_refusal(state: Option<&UshardState>, ushard: UshardId) -> Option<Outcome> {
    match UshardState::access(state) {
        Access::ByLayout | Access::Served => None,
        Access::ReadOnly | Access::NotYet => Some(Outcome::Moving { ushard }),
        Access::Elsewhere(owner) => Some(Outcome::WrongShard { ushard, owner }),
    }
}

/// Whether changes to a μshard in this state go to its change log.
pub fn is_logged(state: Option<&UshardState>) -> bool {
    matches!(state, Some(UshardState::Exporting { .. }))
}

/// Appends what the entry of `version` did to `ushard` to its change log.
pub fn log_changes(
    view: &mut StagedView<'_>,
    shard: ShardId,
    keyspace: KeyspaceId,
    ushard: UshardId,
    version: Version,
    changes: &[MovedRecord],
) -> io::Result<()> {
    view.put(
        keys::move_log_key(shard, keyspace, ushard, version),
        encode(&changes.to_vec())?,
    );
    Ok(())
}

/// Deletes every entry of a μshard's change log.
fn drop_log(view: &mut StagedView<'_>, shard: ShardId, keyspace: KeyspaceId, ushard: UshardId) -> io::Result<()> {
    let (start, end) = keys::move_log_range(shard, keyspace, ushard, Version(0));
    // The log starts at version 1 (versions are ≥ 1): from 0 exclusive is all.
    for key in view.stored_keys(&start, &end)? {
        view.delete(key);
    }
    Ok(())
}

/// Deletes every stored record of a μshard.
fn drop_records(view: &mut StagedView<'_>, shard: ShardId, keyspace: KeyspaceId, ushard: UshardId) -> io::Result<()> {
    let (start, end) = keys::ushard_range(shard, keyspace, ushard, b"", None);
    for key in view.stored_keys(&start, &end)? {
        view.delete(key);
    }
    Ok(())
}

/// Drops whatever the shard holds of a μshard it is taking in, and leaves
/// it in `state` (`Incoming` for a fresh copy, `Abandoned` for a move given up).
fn restart_incoming(
    view: &mut StagedView<'_>,
    shard: ShardId,
    keyspace: KeyspaceId,
    ushard: UshardId,
    state: UshardState,
) -> io::Result<Outcome> {
    drop_records(view, shard, keyspace, ushard)?;
    set_state(view, shard, keyspace, ushard, &state)?;
    Ok(Outcome::Applied)
}

/// Whether a begin-ingest or an abandon of a move may (re)set a μshard to a
/// fresh incoming or abandoned state: it is not here, it moved away, this
/// move is taking it in, or another move gave it up.
fn may_restart_incoming(state: Option<&UshardState>, ours: bool) -> bool {
    match state {
        None | Some(UshardState::Gone { .. }) => true,
        Some(UshardState::Incoming { .. }) => ours,
        Some(UshardState::Abandoned { .. }) => !ours,
        _ => false,
    }
}

/// One move step, checked against the μshard's state. `version` is the
/// entry's; `raise_base` is called with the version the shard's versions
/// must from now on exceed. Returns `Applied` or `MoveRefused`.
#[allow(clippy::too_many_arguments)]
pub fn apply_step(
    view: &mut StagedView<'_>,
    shard: ShardId,
    keyspace: KeyspaceId,
    ushard: UshardId,
    move_id: u64,
    step: MoveStep,
    version: Version,
    raise_base: &mut dyn FnMut(&mut StagedView<'_>, Version),
) -> io::Result<Outcome> {
    let state = state_of(view, shard, keyspace, ushard)?;
    let refuse = |why: &str| {
        Ok(Outcome::MoveRefused(format!(
            "move {move_id} of ushard {ushard}: {why} (state here: {state:?})"
        )))
    };
    let ours = state.as_ref().is_some_and(|s| s.move_id() == move_id);
    let owned = UshardState::Owned { move_id };
    match step {
        MoveStep::BeginExport { to } => match &state {
            Some(UshardState::Exporting { .. } | UshardState::Frozen { .. } | UshardState::Gone { .. }) if ours => {
                Ok(Outcome::Applied)
            }
            None | Some(UshardState::Owned { .. }) => {
                set_state(view, shard, keyspace, ushard, &UshardState::Exporting { move_id, to })?;
                Ok(Outcome::Applied)
            }
            _ => refuse("this shard cannot export it now"),
        },
        MoveStep::Freeze => match &state {
            Some(UshardState::Frozen { .. } | UshardState::Gone { .. }) if ours => Ok(Outcome::Applied),
            Some(UshardState::Exporting { to, .. }) if ours => {
                let frozen = UshardState::Frozen {
                    move_id,
                    to: *to,
                    at: version,
                };
                set_state(view, shard, keyspace, ushard, &frozen)?;
                Ok(Outcome::Applied)
            }
            _ => refuse("not exporting for this move"),
        },
        MoveStep::Release => match &state {
            Some(UshardState::Gone { .. }) if ours => Ok(Outcome::Applied),
            Some(UshardState::Frozen { to, at, .. }) if ours => {
                let gone = UshardState::Gone {
                    move_id,
                    to: *to,
                    at: *at,
                };
                set_state(view, shard, keyspace, ushard, &gone)?;
                Ok(Outcome::Applied)
            }
            _ => refuse("not frozen for this move"),
        },
        MoveStep::AbortExport => match &state {
            // The driver aborts a released move only once the destination
            // abandoned it, so it can never activate.
            Some(UshardState::Exporting { .. } | UshardState::Frozen { .. } | UshardState::Gone { .. }) if ours => {
                set_state(view, shard, keyspace, ushard, &owned)?;
                drop_log(view, shard, keyspace, ushard)?;
                Ok(Outcome::Applied)
            }
            // Already aborted (or never begun): nothing to undo.
            None | Some(UshardState::Owned { .. }) => Ok(Outcome::Applied),
            _ => refuse("another move's state"),
        },
        MoveStep::DropData => match &state {
            Some(UshardState::Gone { .. }) if ours => {
                drop_records(view, shard, keyspace, ushard)?;
                drop_log(view, shard, keyspace, ushard)?;
                Ok(Outcome::Applied)
            }
            _ => refuse("not moved out by this move"),
        },
        MoveStep::BeginIngest { from } => {
            // A fresh start every time (a run that resumes copies again):
            // what an earlier attempt or an earlier stay left is dropped.
            let may_begin = may_restart_incoming(state.as_ref(), ours);
            match &state {
                // Activated already: a late repeat changes nothing.
                Some(UshardState::Owned { .. }) if ours => Ok(Outcome::Applied),
                _ if may_begin => {
                    restart_incoming(view, shard, keyspace, ushard, UshardState::Incoming { move_id, from })
                }
                _ => refuse("this shard cannot take it in now"),
            }
        }
        MoveStep::Ingest { records, as_of } => match &state {
            Some(UshardState::Incoming { .. }) if ours => {
                let mut newest = as_of;
                for moved in records {
                    let key = keys::data_key(shard, keyspace, ushard, &moved.key);
                    match moved.record {
                        Some(record) => {
                            newest = newest.max(record.version);
                            view.put(key, record.encode());
                        }
                        None => view.delete(key),
                    }
                }
                raise_base(view, newest);
                Ok(Outcome::Applied)
            }
            _ => refuse("not taking it in for this move"),
        },
        MoveStep::Activate { as_of, clients } => match &state {
            Some(UshardState::Owned { .. }) if ours => Ok(Outcome::Applied),
            Some(UshardState::Incoming { .. }) if ours => {
                crate::apply::exactly_once::merge_client_records(view, shard, &clients)?;
                raise_base(view, as_of);
                set_state(view, shard, keyspace, ushard, &owned)?;
                Ok(Outcome::Applied)
            }
            _ => refuse("not taking it in for this move"),
        },
        MoveStep::Abandon { from } => {
            // Taking it in for this move, never begun here, or another
            // move's leftovers: record the abandonment, so a late begin or
            // activation of this move cannot start.
            let may_abandon = may_restart_incoming(state.as_ref(), ours);
            match &state {
                Some(UshardState::Abandoned { .. }) if ours => Ok(Outcome::Applied),
                Some(UshardState::Owned { .. }) if ours => refuse(shoal_proto::REFUSED_ROLLS_FORWARD),
                _ if may_abandon => {
                    restart_incoming(view, shard, keyspace, ushard, UshardState::Abandoned { move_id, from })
                }
                _ => refuse("this shard serves it: nothing to abandon"),
            }
        }
    }
}
