//! Exactly-once writes: each client's record on each shard (which of its
//! requests were answered, and how), kept in the shard's replicated state
//! so every replica answers a retry alike, and forgotten once the client
//! is idle (docs/consistency.md).

use crate::apply::command::{CommandResult, Outcome, RequestId};
use crate::apply::staged::StagedView;
use crate::codec::{decode, encode};
use crate::keys;
use serde::{Deserialize, Serialize};
use shoal_types::{ShardId, Version};
use std::collections::BTreeMap;
use std::io;

/// One client's exactly-once state on one shard: requests below the
/// watermark are answered and forgotten; the results of those at or above
/// it are kept for retries (at most the client's requests in flight).
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct ClientRecord {
    pub(super) watermark: u64,
    pub(super) results: BTreeMap<u64, CommandResult>,
    /// The apply clock at the client's last request here.
    pub(super) last_used_ms: u64,
}

/// Applies a client's request once: a retry of a request already applied
/// gets the first answer again, a request below the client's watermark is
/// refused for good (`Expired`), and anything else is applied by `apply`
/// and its answer kept for retries. `clock_ms` is the apply clock.
pub fn answer_once(
    view: &mut StagedView<'_>,
    shard: ShardId,
    clock_ms: u64,
    request: &RequestId,
    version: Version,
    apply: impl FnOnce(&mut StagedView<'_>) -> io::Result<CommandResult>,
) -> io::Result<CommandResult> {
    let key = keys::dedup_key(shard, request.client);
    let mut record: ClientRecord = match view.get(&key)? {
        Some(bytes) => decode(&bytes)?,
        None => ClientRecord::default(),
    };
    // Everything below the client's first unanswered request is answered
    // (or given up on): forget it, and refuse it for good.
    record.watermark = record.watermark.max(request.first_incomplete);
    let watermark = record.watermark;
    record.results.retain(|seq, _| *seq >= watermark);
    record.last_used_ms = clock_ms;
    let result = if let Some(first) = record.results.get(&request.seq) {
        // A retry of a request already applied: answer as the first time.
        first.clone()
    } else if request.seq < record.watermark {
        CommandResult {
            version,
            outcome: Outcome::Expired,
        }
    } else {
        let result = apply(view)?;
        record.results.insert(request.seq, result.clone());
        result
    };
    view.put(key, encode(&record)?);
    Ok(result)
}

/// Deletes the records of clients idle for `idle_ms` on the apply clock
/// `clock_ms`. Records are found in the engine and judged as staged in
/// this batch, so a client refreshed by an earlier entry of the batch is
/// kept.
pub fn forget_idle_clients(view: &mut StagedView<'_>, shard: ShardId, clock_ms: u64, idle_ms: u64) -> io::Result<()> {
    let (start, end) = keys::dedup_range(shard);
    for key in view.stored_keys(&start, &end)? {
        let Some(bytes) = view.get(&key)? else {
            continue;
        };
        let record: ClientRecord = decode(&bytes)?;
        if record.last_used_ms.saturating_add(idle_ms) <= clock_ms {
            view.delete(key);
        }
    }
    Ok(())
}

/// Merges a move source's client records into this shard's: per client the
/// higher watermark (a watermark says every request below it is answered,
/// whichever shard answered it), the results of both at or above it, and
/// the later use. A result both hold is the same request's: ours is kept.
pub fn merge_client_records(view: &mut StagedView<'_>, shard: ShardId, incoming: &[(u64, Vec<u8>)]) -> io::Result<()> {
    for (client, bytes) in incoming {
        let theirs: ClientRecord = decode(bytes)?;
        let key = keys::dedup_key(shard, *client);
        let mut ours: ClientRecord = match view.get(&key)? {
            Some(bytes) => decode(&bytes)?,
            None => ClientRecord::default(),
        };
        ours.watermark = ours.watermark.max(theirs.watermark);
        for (seq, result) in theirs.results {
            ours.results.entry(seq).or_insert(result);
        }
        let watermark = ours.watermark;
        ours.results.retain(|seq, _| *seq >= watermark);
        ours.last_used_ms = ours.last_used_ms.max(theirs.last_used_ms);
        view.put(key, encode(&ours)?);
    }
    Ok(())
}
