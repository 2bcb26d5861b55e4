//! Request validation: everything a request must satisfy before it touches
//! a replica. A request failing here has written nothing.

use crate::apply::command::{Condition, MutateOp, RequestId, TxnRange, TxnRead, TxnSnapshot};
use crate::apply::moves::{Access, MoveStates, UshardState};
use crate::config::Limits;
use crate::error::{KvError, KvResult};
use crate::layout::{ClusterLayout, KeyspaceLayout};
use crate::shard::replica::ReadMode;
use crate::shard::scan::Cursor;
use shoal_proto::kv::{
    batch_op, condition, read_consistency, BatchOp, CommitRequest, KeyRef, ReadConsistency, RequestHeader,
};
use shoal_proto::kv::{Condition as WireCondition, WriteOptions};
use shoal_types::{Epoch, ShardId, UshardId, Version};
use std::sync::Arc;

/// The longest TTL accepted: 100 years.
const MAX_TTL_MS: u64 = 100 * 365 * 24 * 3600 * 1000;

/// What a request header names, checked against this node's layout.
pub struct Resolved<'a> {
    pub keyspace: &'a KeyspaceLayout,
    pub shard: ShardId,
    /// The version of the layout checked against (a `WRONG_SHARD` names it).
    pub map_version: u64,
    /// The shard's μshards with a move state, as this replica last applied
    /// them (empty until the caller fills them in: [`resolve_header`] does
    /// not know the replica).
    pub moves: Arc<MoveStates>,
    /// The client named a newer epoch than this node's map has: the map is
    /// behind (the request is still served; Raft decides who leads).
    pub map_behind: bool,
}

/// The keyspace and shard a request header names, checked against the
/// layout, with the epoch check both ways.
pub fn resolve_header<'a>(layout: &'a ClusterLayout, header: Option<&RequestHeader>) -> KvResult<Resolved<'a>> {
    let header = header.ok_or_else(|| KvError::Malformed("missing header".into()))?;
    if header.keyspace.is_empty() {
        return Err(KvError::Malformed("header.keyspace is empty".into()));
    }
    let keyspace = layout
        .keyspace(&header.keyspace)
        .ok_or_else(|| KvError::UnknownKeyspace(header.keyspace.clone()))?;
    let shard = ShardId(header.shard_id);
    if !keyspace.shards.contains(&shard) {
        return Err(KvError::UnknownShard(shard));
    }
    let current = layout.shard(shard).map(|s| s.epoch).unwrap_or_default();
    let requested = Epoch(header.epoch);
    if requested != Epoch(0) && requested < current {
        return Err(KvError::StaleEpoch {
            shard,
            requested,
            current,
        });
    }
    Ok(Resolved {
        keyspace,
        shard,
        map_version: layout.version,
        moves: Arc::default(),
        map_behind: requested > current,
    })
}

/// Checks a micro-shard number against the keyspace and the target shard.
/// A μshard with a move state here is judged by it (see
/// [`crate::apply::moves`]: a μshard frozen or not yet taken in passes,
/// and the applier or the read view refuses it for what it is); one
/// without is this shard's if it was created here.
pub fn check_ushard(target: &Resolved<'_>, ushard: u32) -> KvResult<UshardId> {
    let keyspace = target.keyspace;
    let (Some(home), Some(owner)) = (keyspace.home_of(ushard), keyspace.shard_of(ushard)) else {
        return Err(KvError::Malformed(format!(
            "ushard {ushard} out of range: keyspace {:?} has {} ushards",
            keyspace.name, keyspace.ushard_count
        )));
    };
    let id = UshardId(ushard);
    let wrong_shard = |owner| KvError::WrongShard {
        keyspace: keyspace.name.clone(),
        ushard,
        shard: target.shard,
        owner,
        map_version: target.map_version,
    };
    match target
        .moves
        .get(&(keyspace.id, id))
        .map(|s| UshardState::access(Some(s)))
    {
        Some(Access::Elsewhere(owner)) => Err(wrong_shard(owner)),
        Some(_) => Ok(id),
        None if home == target.shard => Ok(id),
        // The map gives it to this shard but this replica has not applied
        // its taking in yet: a lagging replica, or a map ahead of it.
        None if owner == target.shard => Err(KvError::Moving {
            keyspace: keyspace.name.clone(),
            ushard,
        }),
        None => Err(wrong_shard(owner)),
    }
}

/// Every μshard a whole-shard scan of the target reads: those
/// [`check_ushard`] lets through. One the map gives this shard that this
/// replica has not taken in yet fails the scan (`MOVING`) rather than
/// being left out.
pub fn served_ushards(target: &Resolved<'_>) -> KvResult<Vec<UshardId>> {
    let keyspace = target.keyspace;
    let mut served = Vec::new();
    for ushard in 0..keyspace.ushard_count {
        let has_state = target.moves.contains_key(&(keyspace.id, UshardId(ushard)));
        let ours_by_layout =
            keyspace.shard_of(ushard) == Some(target.shard) || keyspace.home_of(ushard) == Some(target.shard);
        if !has_state && !ours_by_layout {
            continue;
        }
        match check_ushard(target, ushard) {
            Ok(id) => served.push(id),
            Err(KvError::WrongShard { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(served)
}

/// Checks a key reference: present, non-empty, under the limit, in this shard.
pub fn check_key<'k>(
    limits: &Limits,
    target: &Resolved<'_>,
    key: Option<&'k KeyRef>,
) -> KvResult<(UshardId, &'k [u8])> {
    let key = key.ok_or_else(|| KvError::Malformed("missing key".into()))?;
    if key.key.is_empty() {
        return Err(KvError::EmptyKey);
    }
    if key.key.len() > limits.max_key_bytes {
        return Err(KvError::KeyTooLarge {
            len: key.key.len(),
            max: limits.max_key_bytes,
        });
    }
    let ushard = check_ushard(target, key.ushard)?;
    Ok((ushard, &key.key))
}

pub fn check_value(limits: &Limits, value: &[u8]) -> KvResult<()> {
    if value.len() > limits.max_value_bytes {
        return Err(KvError::ValueTooLarge {
            len: value.len(),
            max: limits.max_value_bytes,
        });
    }
    Ok(())
}

/// A write's condition, when it has one.
pub fn check_condition(limits: &Limits, condition: Option<&WireCondition>) -> KvResult<Option<Condition>> {
    let Some(condition) = condition else {
        return Ok(None);
    };
    Ok(Some(match &condition.check {
        None => return Err(KvError::Malformed("condition names no check".into())),
        Some(condition::Check::Absent(true)) => Condition::Absent,
        Some(condition::Check::Present(true)) => Condition::Present,
        Some(condition::Check::Absent(false) | condition::Check::Present(false)) => {
            return Err(KvError::Malformed(
                "condition absent/present must be true when set".into(),
            ))
        }
        Some(condition::Check::Version(v)) => Condition::Version(*v),
        Some(condition::Check::Value(bytes)) => {
            check_value(limits, bytes)?;
            Condition::Value(bytes.clone())
        }
    }))
}

/// The absolute expiry (ms) of a write with `ttl_ms` made at `now_ms`; 0 = never.
pub fn expiry_of(ttl_ms: u64, now_ms: u64) -> KvResult<u64> {
    if ttl_ms == 0 {
        return Ok(0);
    }
    if ttl_ms > MAX_TTL_MS {
        return Err(KvError::Malformed(format!(
            "ttl_ms {ttl_ms} exceeds the limit of {MAX_TTL_MS} (100 years)"
        )));
    }
    Ok(now_ms.saturating_add(ttl_ms))
}

/// A write's acknowledgement mode and its exactly-once id. Fast-ack is
/// refused for `ops` whose answer depends on the applied state (a
/// condition, an increment), which a fast-ack write does not wait for.
pub fn check_write_options(options: Option<&WriteOptions>, ops: &[MutateOp]) -> KvResult<(bool, Option<RequestId>)> {
    let Some(options) = options else {
        return Ok((false, None));
    };
    let needs_state = ops
        .iter()
        .any(|op| op.condition().is_some() || matches!(op, MutateOp::Increment { .. }));
    if options.fast_ack && needs_state {
        return Err(KvError::Malformed(
            "fast_ack cannot be combined with a condition or an increment: their answer needs the applied state".into(),
        ));
    }
    let request = match (options.client_id, options.seq) {
        (0, 0) => None,
        (0, _) => return Err(KvError::Malformed("options.seq given without options.client_id".into())),
        (_, 0) => return Err(KvError::Malformed("options.seq must be at least 1".into())),
        (client, seq) => {
            if options.first_incomplete_seq > seq {
                return Err(KvError::Malformed(format!(
                    "options.first_incomplete_seq {} is past this request's seq {seq}",
                    options.first_incomplete_seq
                )));
            }
            Some(RequestId {
                client,
                seq,
                first_incomplete: options.first_incomplete_seq,
            })
        }
    };
    Ok((options.fast_ack, request))
}

/// What a read asks for; unset means strong.
pub fn read_mode(consistency: Option<&ReadConsistency>) -> ReadMode {
    match consistency.and_then(|c| c.mode.as_ref()) {
        None | Some(read_consistency::Mode::Strong(_)) => ReadMode::Strong,
        Some(read_consistency::Mode::MaxStalenessMs(ms)) => ReadMode::Bounded { max_staleness_ms: *ms },
        Some(read_consistency::Mode::MinVersion(version)) => ReadMode::AtLeast { version: *version },
    }
}

/// Validates every op of a batch and converts it; the first bad op fails the
/// whole batch.
pub fn check_batch(limits: &Limits, target: &Resolved<'_>, ops: &[BatchOp], now_ms: u64) -> KvResult<Vec<MutateOp>> {
    if ops.is_empty() {
        return Err(KvError::Malformed("batch has no operations".into()));
    }
    if ops.len() > limits.max_batch_ops {
        return Err(KvError::BatchTooLarge(format!(
            "{} operations; the limit is {}",
            ops.len(),
            limits.max_batch_ops
        )));
    }
    let mut total = 0usize;
    let mut out = Vec::with_capacity(ops.len());
    for (i, op) in ops.iter().enumerate() {
        let write = match &op.op {
            Some(batch_op::Op::Put(put)) => {
                let (ushard, key) = check_key(limits, target, put.key.as_ref())?;
                check_value(limits, &put.value)?;
                total += key.len() + put.value.len();
                MutateOp::Put {
                    ushard,
                    key: key.to_vec(),
                    value: put.value.clone(),
                    expires_at_ms: expiry_of(put.ttl_ms, now_ms)?,
                    condition: check_condition(limits, put.condition.as_ref())?,
                }
            }
            Some(batch_op::Op::Delete(delete)) => {
                let (ushard, key) = check_key(limits, target, delete.key.as_ref())?;
                total += key.len();
                MutateOp::Delete {
                    ushard,
                    key: key.to_vec(),
                    condition: check_condition(limits, delete.condition.as_ref())?,
                }
            }
            None => return Err(KvError::Malformed(format!("batch op {i} has no operation"))),
        };
        out.push(write);
    }
    if total > limits.max_batch_bytes {
        return Err(KvError::BatchTooLarge(format!(
            "{total} bytes; the limit is {}",
            limits.max_batch_bytes
        )));
    }
    Ok(out)
}

/// A multi-get's keys, each checked like a single key's, and no more of
/// them than a batch may hold.
pub fn check_multi_get<'k>(
    limits: &Limits,
    target: &Resolved<'_>,
    keys: &'k [KeyRef],
) -> KvResult<Vec<(UshardId, &'k [u8])>> {
    if keys.len() > limits.max_batch_ops {
        return Err(KvError::BatchTooLarge(format!(
            "{} keys; the limit is {}",
            keys.len(),
            limits.max_batch_ops
        )));
    }
    keys.iter().map(|key| check_key(limits, target, Some(key))).collect()
}

/// A scan page's budget: the entries and bytes asked for (0 = the server's
/// defaults), refused beyond the server's maxima.
pub fn scan_budget(limits: &Limits, limit: u32, max_bytes: u64) -> KvResult<(usize, u64)> {
    if limit > limits.max_scan_limit {
        return Err(KvError::Malformed(format!(
            "limit {limit} exceeds {}",
            limits.max_scan_limit
        )));
    }
    if max_bytes > limits.max_scan_bytes {
        return Err(KvError::Malformed(format!(
            "max_bytes {max_bytes} exceeds {}",
            limits.max_scan_bytes
        )));
    }
    let limit = if limit == 0 { limits.default_scan_limit } else { limit };
    let max_bytes = if max_bytes == 0 {
        limits.default_scan_bytes
    } else {
        max_bytes
    };
    Ok((limit as usize, max_bytes))
}

/// Where a scan page resumes: nowhere (empty), or a cursor an earlier page
/// returned; anything else is refused.
pub fn scan_cursor(resume_after: &[u8]) -> KvResult<Option<Cursor>> {
    if resume_after.is_empty() {
        return Ok(None);
    }
    Cursor::decode(resume_after)
        .map(Some)
        .ok_or_else(|| KvError::Malformed("resume_after is not a cursor returned by scan".into()))
}

/// A commit request, checked and converted.
pub struct CheckedCommit {
    pub snapshot: Option<TxnSnapshot>,
    pub reads: Vec<TxnRead>,
    pub ranges: Vec<TxnRange>,
    pub ops: Vec<MutateOp>,
    pub request: Option<RequestId>,
}

/// Checks everything but the state: the shape of each read, range and
/// write, that they all belong to the shard, and the transaction limits.
pub fn check_commit(
    limits: &Limits,
    target: &Resolved<'_>,
    req: &CommitRequest,
    now_ms: u64,
) -> KvResult<CheckedCommit> {
    if req.reads.is_empty() && req.ranges.is_empty() && req.writes.is_empty() {
        return Err(KvError::EmptyTxn);
    }
    let keys = req.reads.len() + req.ranges.len() + req.writes.len();
    if keys > limits.max_txn_keys {
        return Err(KvError::TxnTooLarge(format!(
            "{keys} reads, ranges and writes; the limit is {}",
            limits.max_txn_keys
        )));
    }
    let mut bytes = 0usize;
    let mut reads = Vec::with_capacity(req.reads.len());
    for read in &req.reads {
        let (ushard, key) = check_key(limits, target, read.key.as_ref())?;
        bytes += key.len();
        reads.push(TxnRead {
            ushard,
            key: key.to_vec(),
            version: (read.version > 0).then_some(Version(read.version)),
        });
    }
    let mut ranges = Vec::with_capacity(req.ranges.len());
    for range in &req.ranges {
        let ushard = check_ushard(target, range.ushard)?;
        // One byte more than a key: a range cut short ends just past the
        // last key it read (that key with a zero byte added).
        for bound in [&range.start, &range.end] {
            if bound.len() > limits.max_key_bytes + 1 {
                return Err(KvError::KeyTooLarge {
                    len: bound.len(),
                    max: limits.max_key_bytes + 1,
                });
            }
        }
        if !range.end.is_empty() && range.end <= range.start {
            return Err(KvError::Malformed("a range's end must be after its start".into()));
        }
        bytes += range.start.len() + range.end.len();
        ranges.push(TxnRange {
            ushard,
            start: range.start.clone(),
            end: (!range.end.is_empty()).then(|| range.end.clone()),
        });
    }
    // Judged before the writes are checked as a batch, so a transaction
    // over its limits is told so, not that a batch is.
    bytes += req.writes.iter().map(wire_op_bytes).sum::<usize>();
    if bytes > limits.max_txn_bytes {
        return Err(KvError::TxnTooLarge(format!(
            "{bytes} bytes of keys and values; the limit is {}",
            limits.max_txn_bytes
        )));
    }
    let ops = if req.writes.is_empty() {
        Vec::new()
    } else {
        check_batch(limits, target, &req.writes, now_ms)?
    };
    if ops.iter().any(|op| op.condition().is_some()) {
        return Err(KvError::Malformed(
            "a transaction's writes take no conditions: what it read is the condition".into(),
        ));
    }
    if req.options.as_ref().is_some_and(|o| o.fast_ack) {
        return Err(KvError::Malformed(
            "fast_ack cannot be used for a commit: its answer needs the applied state".into(),
        ));
    }
    let (_, request) = check_write_options(req.options.as_ref(), &ops)?;
    let snapshot = (!reads.is_empty() || !ranges.is_empty()).then_some(TxnSnapshot {
        version: Version(req.snapshot_version),
        epoch: req.snapshot_epoch,
    });
    Ok(CheckedCommit {
        snapshot,
        reads,
        ranges,
        ops,
        request,
    })
}

fn wire_op_bytes(op: &BatchOp) -> usize {
    let key_len = |key: &Option<KeyRef>| key.as_ref().map(|k| k.key.len()).unwrap_or(0);
    match &op.op {
        Some(batch_op::Op::Put(put)) => key_len(&put.key) + put.value.len(),
        Some(batch_op::Op::Delete(delete)) => key_len(&delete.key),
        None => 0,
    }
}
