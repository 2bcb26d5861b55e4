//! Validating a transaction commit at apply time (docs/transactions.md).
//!
//! **A transaction commits at its log entry, or not at all**: its reads are
//! checked against the state the entry is applied to, on every replica
//! alike, and its writes applied in the same entry. If every key it read
//! still has the version it read (or, read absent, had no write since the
//! snapshot) and no range it scanned had a write since the snapshot, then
//! everything it read is what the state holds at that entry, so it is as
//! if the whole transaction ran there: serializable, in log order.
//!
//! Two more refusals keep the rule cheap to hold:
//! - **the window**: a snapshot below the shard's floor is `TxnTooOld`;
//!   the floor is replicated and only rises, and compaction keeps every
//!   tombstone at or above it, so a check against a snapshot inside the
//!   window never misses a delete;
//! - **the epoch**: the shard remembers the highest epoch a commit was
//!   proposed in; a snapshot from an older epoch is `EpochChanged`.

use crate::apply::command::{Outcome, TxnRange, TxnRead, TxnSnapshot};
use crate::apply::reads::{self, Expected};
use crate::apply::staged::StagedView;
use crate::keys;
use shoal_types::{KeyspaceId, ShardId, Version};
use std::io;

/// Reads a replicated counter from the batch's view (0 when unset).
fn read_u64(view: &StagedView<'_>, key: &[u8]) -> io::Result<u64> {
    Ok(view.get(key)?.map(|bytes| keys::decode_u64(&bytes)).unwrap_or(0))
}

/// Raises the shard's record of the newest epoch a commit was proposed in
/// to `proposed_in`, and returns the record.
pub fn note_epoch(view: &mut StagedView<'_>, shard: ShardId, proposed_in: u64) -> io::Result<u64> {
    let key = keys::txn_epoch_key(shard);
    let current = read_u64(view, &key)?;
    if proposed_in > current {
        view.put(key, keys::encode_u64(proposed_in));
        return Ok(proposed_in);
    }
    Ok(current)
}

/// What a transaction's reads and ranges are checked against.
pub struct Check<'a> {
    pub shard: ShardId,
    pub keyspace: KeyspaceId,
    pub snapshot: Option<TxnSnapshot>,
    pub reads: &'a [TxnRead],
    pub ranges: &'a [TxnRange],
    /// The apply clock.
    pub clock_ms: u64,
    /// The window's floor.
    pub floor: Version,
    /// The newest epoch a commit was proposed in (see [`note_epoch`]).
    pub epoch: u64,
}

/// Why the transaction may not commit, or None when it may.
pub fn refusal(view: &StagedView<'_>, check: &Check<'_>) -> io::Result<Option<Outcome>> {
    let Some(snapshot) = check.snapshot else {
        // Nothing read: blind writes, applied like a batch.
        return Ok(None);
    };
    if snapshot.epoch < check.epoch {
        return Ok(Some(Outcome::EpochChanged {
            snapshot: snapshot.epoch,
            current: check.epoch,
        }));
    }
    if snapshot.version < check.floor {
        return Ok(Some(Outcome::TxnTooOld {
            snapshot: snapshot.version,
            floor: check.floor,
        }));
    }
    // A deliberate bug (docs/failpoints.md): commit whatever was read, so
    // the transaction checkers must find the anomalies.
    if crate::failpoints::is_on("txn-skip-read-validation") {
        return Ok(None);
    }
    let mut conflicts = Vec::new();
    for read in check.reads {
        let data_key = keys::data_key(check.shard, check.keyspace, read.ushard, &read.key);
        let stored = reads::stored(view, &data_key)?;
        let expected = Expected::of_read(read.version, snapshot.version);
        if !reads::holds(&expected, stored.as_ref(), check.clock_ms) {
            conflicts.push((read.ushard, read.key.clone()));
        }
    }
    for range in check.ranges {
        let (start, end) = keys::ushard_range(
            check.shard,
            check.keyspace,
            range.ushard,
            &range.start,
            range.end.as_deref(),
        );
        for data_key in reads::written_since(view, &start, &end, snapshot.version)? {
            let key = keys::user_key_of(&data_key).to_vec();
            if !conflicts.iter().any(|(u, k)| *u == range.ushard && *k == key) {
                conflicts.push((range.ushard, key));
            }
        }
    }
    Ok((!conflicts.is_empty()).then_some(Outcome::TxnConflict { keys: conflicts }))
}

/// Raises the window's floor to `floor` (never lowers it); returns the
/// floor now in force.
pub fn advance_floor(view: &mut StagedView<'_>, shard: ShardId, current: Version, floor: Version) -> Version {
    if floor > current {
        view.put(keys::txn_floor_key(shard), keys::encode_u64(floor.0));
        return floor;
    }
    current
}
