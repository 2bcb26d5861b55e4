//! Applying one command to a shard: conditions, counters, TTL by the apply
//! clock, versions by the version base, all decided from replicated state
//! only, so every replica reaches the same outcome. Exactly-once retries
//! are `exactly_once`'s; the state a batch is applied against is `staged`'s.
//!
//! **A version is the entry's log index plus the shard's version base**,
//! and the base only rises: versions grow with the log on every replica.
//! The base rises when the shard takes in a moved μshard (`Ingest` and
//! `Activate` move steps), above the version the source had reached, so a
//! μshard's versions keep growing across moves (docs/consistency.md,
//! "versions across moves"). Move steps themselves are [`moves`]'s.

use crate::apply::command::{Command, CommandResult, MovedRecord, MutateOp, Outcome, WriteOp};
use crate::apply::exactly_once;
use crate::apply::moves;
use crate::apply::reads::{self, Expected};
use crate::apply::staged::StagedView;
use crate::apply::txn;
use crate::engine::SharedEngine;
use crate::keys::{self, ValueRecord, CF_DATA};
use shoal_types::{KeyspaceId, ShardId, UshardId, Version};
use std::io;

/// Reads a shard's stored apply clock (0 before the first timed write).
pub fn read_clock(engine: &SharedEngine, shard: ShardId) -> io::Result<u64> {
    read_u64(engine, &keys::clock_key(shard))
}

/// Reads a shard's stored version base (0 until it took in a μshard).
pub fn read_version_base(engine: &SharedEngine, shard: ShardId) -> io::Result<u64> {
    read_u64(engine, &keys::version_base_key(shard))
}

/// Reads a shard's stored transaction floor (0 until first raised; see
/// [`txn`]).
pub fn read_txn_floor(engine: &SharedEngine, shard: ShardId) -> io::Result<Version> {
    read_u64(engine, &keys::txn_floor_key(shard)).map(Version)
}

fn read_u64(engine: &SharedEngine, key: &[u8]) -> io::Result<u64> {
    Ok(engine
        .get(CF_DATA, key)?
        .map(|bytes| keys::decode_u64(&bytes))
        .unwrap_or(0))
}

/// Applies commands of one shard; owns the shard's apply clock and version
/// base for the batch.
pub struct Applier<'v, 'e> {
    pub shard: ShardId,
    pub view: &'v mut StagedView<'e>,
    /// The shard's apply clock, advanced by every `Mutate` command.
    pub clock_ms: u64,
    /// Added to an entry's log index to give its version; raised by
    /// `IngestRecords`, never lowered.
    pub version_base: u64,
    /// The transaction window's floor (see [`txn`]); raised by
    /// `AdvanceTxnFloor`, never lowered.
    pub txn_floor: Version,
}

impl Applier<'_, '_> {
    /// The version of the entry at `index` under the current base.
    pub fn version_at(&self, index: u64) -> Version {
        Version(index + self.version_base)
    }

    /// Applies the entry at log `index`.
    pub fn apply(&mut self, command: Command, index: u64) -> io::Result<CommandResult> {
        // Under the base before the entry; an ingest computes its own.
        let version = self.version_at(index);
        match command {
            Command::Move {
                keyspace,
                ushard,
                move_id,
                step,
            } => {
                let (shard, mut base) = (self.shard, self.version_base);
                let mut raise_base = |view: &mut StagedView<'_>, above: Version| {
                    // A deliberate bug (docs/failpoints.md): take μshards in
                    // at this shard's versions, so theirs can go down.
                    if crate::failpoints::is_on("move-version-base-kept") {
                        return;
                    }
                    // index + base > above, with index ≥ 1 for every log entry.
                    let needed = (above.0 + 1).saturating_sub(index);
                    if needed > base {
                        base = needed;
                        view.put(keys::version_base_key(shard), keys::encode_u64(base));
                    }
                };
                let outcome = moves::apply_step(
                    self.view,
                    shard,
                    keyspace,
                    ushard,
                    move_id,
                    step,
                    version,
                    &mut raise_base,
                )?;
                self.version_base = base;
                Ok(CommandResult {
                    version: self.version_at(index),
                    outcome,
                })
            }
            Command::Write { keyspace, ops } => {
                let ops = ops.into_iter().map(legacy_op).collect();
                self.mutate(keyspace, ops, version)
            }
            Command::ForgetIdleClients { idle_ms, now_ms } => {
                self.advance_clock(now_ms);
                exactly_once::forget_idle_clients(self.view, self.shard, self.clock_ms, idle_ms)?;
                Ok(CommandResult {
                    version,
                    outcome: Outcome::Applied,
                })
            }
            Command::Tick { now_ms } => {
                self.advance_clock(now_ms);
                Ok(CommandResult {
                    version,
                    outcome: Outcome::Applied,
                })
            }
            Command::Mutate {
                keyspace,
                ops,
                now_ms,
                request,
                ..
            } => {
                self.advance_clock(now_ms);
                // A write to a μshard that is moving or gone is refused
                // whole, before its client's record is touched: a retry at
                // the new owner must find it unanswered.
                if let Some(refusal) = self.moving_refusal(keyspace, ops.iter().map(MutateOp::ushard))? {
                    return Ok(CommandResult {
                        version,
                        outcome: refusal,
                    });
                }
                let Some(request) = request else {
                    return self.mutate(keyspace, ops, version);
                };
                self.answer_once(&request, version, |applier| applier.mutate(keyspace, ops, version))
            }
            Command::Txn {
                keyspace,
                snapshot,
                reads,
                ranges,
                ops,
                now_ms,
                request,
                proposed_in,
            } => {
                self.advance_clock(now_ms);
                // Refused whole, as a write is, when any μshard it read or
                // writes is moving or gone: never a partial commit.
                let ushards = reads
                    .iter()
                    .map(|r| r.ushard)
                    .chain(ranges.iter().map(|r| r.ushard))
                    .chain(ops.iter().map(MutateOp::ushard));
                if let Some(refusal) = self.moving_refusal(keyspace, ushards)? {
                    return Ok(CommandResult {
                        version,
                        outcome: refusal,
                    });
                }
                let epoch = txn::note_epoch(self.view, self.shard, proposed_in)?;
                let commit = |applier: &mut Applier<'_, '_>| {
                    let check = txn::Check {
                        shard: applier.shard,
                        keyspace,
                        snapshot,
                        reads: &reads,
                        ranges: &ranges,
                        clock_ms: applier.clock_ms,
                        floor: applier.txn_floor,
                        epoch,
                    };
                    if let Some(outcome) = txn::refusal(applier.view, &check)? {
                        return Ok(CommandResult { version, outcome });
                    }
                    applier.mutate(keyspace, ops, version)
                };
                match request {
                    Some(request) => self.answer_once(&request, version, commit),
                    None => commit(self),
                }
            }
            Command::AdvanceTxnFloor { floor } => {
                self.txn_floor = txn::advance_floor(self.view, self.shard, self.txn_floor, floor);
                Ok(CommandResult {
                    version,
                    outcome: Outcome::Applied,
                })
            }
        }
    }

    /// Applies a client's request once (see [`exactly_once::answer_once`]).
    fn answer_once(
        &mut self,
        request: &crate::apply::command::RequestId,
        version: Version,
        apply: impl FnOnce(&mut Applier<'_, '_>) -> io::Result<CommandResult>,
    ) -> io::Result<CommandResult> {
        let (shard, clock_ms, version_base, txn_floor) = (self.shard, self.clock_ms, self.version_base, self.txn_floor);
        exactly_once::answer_once(self.view, shard, clock_ms, request, version, |view| {
            apply(&mut Applier {
                shard,
                view,
                clock_ms,
                version_base,
                txn_floor,
            })
        })
    }

    /// The refusal a write gets when one of its μshards does not take
    /// writes here now (see [`moves`]).
    fn moving_refusal(
        &self,
        keyspace: KeyspaceId,
        ushards: impl IntoIterator<Item = UshardId>,
    ) -> io::Result<Option<Outcome>> {
        for ushard in ushards {
            let state = moves::state_of(self.view, self.shard, keyspace, ushard)?;
            if let Some(refusal) = moves::write_refusal(state.as_ref(), ushard) {
                return Ok(Some(refusal));
            }
        }
        Ok(None)
    }

    /// Logs what an applied write did to μshards being moved out, for the
    /// destination to tail.
    fn log_moving_changes(
        &mut self,
        keyspace: KeyspaceId,
        touched: &[(UshardId, Vec<u8>)],
        version: Version,
    ) -> io::Result<()> {
        let mut by_ushard: Vec<(UshardId, Vec<MovedRecord>)> = Vec::new();
        for (ushard, key) in touched {
            let state = moves::state_of(self.view, self.shard, keyspace, *ushard)?;
            if !moves::is_logged(state.as_ref()) {
                continue;
            }
            let record = reads::stored(self.view, &self.data_key(keyspace, *ushard, key))?;
            let moved = MovedRecord {
                key: key.clone(),
                record,
            };
            match by_ushard.iter_mut().find(|(u, _)| u == ushard) {
                Some((_, changes)) => changes.push(moved),
                None => by_ushard.push((*ushard, vec![moved])),
            }
        }
        for (ushard, changes) in by_ushard {
            moves::log_changes(self.view, self.shard, keyspace, ushard, version, &changes)?;
        }
        Ok(())
    }

    /// The apply clock never goes back, whatever the proposer's clock says.
    fn advance_clock(&mut self, now_ms: u64) {
        if now_ms > self.clock_ms {
            self.clock_ms = now_ms;
            self.view
                .put(keys::clock_key(self.shard), keys::encode_u64(self.clock_ms));
        }
    }

    fn data_key(&self, keyspace: KeyspaceId, ushard: UshardId, key: &[u8]) -> Vec<u8> {
        keys::data_key(self.shard, keyspace, ushard, key)
    }

    fn mutate(&mut self, keyspace: KeyspaceId, ops: Vec<MutateOp>, version: Version) -> io::Result<CommandResult> {
        // Every condition and counter is checked against the state before
        // the command, so a refusal leaves nothing staged.
        let mut sums = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            let (ushard, key) = op_key(op);
            let stored = reads::stored(self.view, &self.data_key(keyspace, ushard, key))?;
            if let MutateOp::Increment { delta, .. } = op {
                let current = reads::live(stored, self.clock_ms);
                match add_to_counter(current.as_ref(), *delta) {
                    Ok(sum) => sums.push((sum, current.map(|c| c.expires_at_ms).unwrap_or(0))),
                    Err(why) => {
                        return Ok(CommandResult {
                            version,
                            outcome: Outcome::NotACounter(why),
                        })
                    }
                }
            } else if let Some(condition) = op.condition() {
                if !reads::holds(&Expected::of_condition(condition), stored.as_ref(), self.clock_ms) {
                    return Ok(CommandResult {
                        version,
                        outcome: Outcome::ConditionFailed {
                            op: i as u32,
                            current: reads::live(stored, self.clock_ms),
                        },
                    });
                }
            }
        }
        let mut sums = sums.into_iter();
        let mut outcome = Outcome::Applied;
        let touched: Vec<(UshardId, Vec<u8>)> = ops.iter().map(|op| (op_key(op).0, op_key(op).1.to_vec())).collect();
        for op in ops {
            match op {
                MutateOp::Put {
                    ushard,
                    key,
                    value,
                    expires_at_ms,
                    ..
                } => {
                    let record = ValueRecord {
                        version,
                        expires_at_ms,
                        value,
                    };
                    self.view.put(self.data_key(keyspace, ushard, &key), record.encode());
                }
                // A tombstone, not a removal: transactions that read the
                // key absent must learn it was written (see [`reads`]).
                MutateOp::Delete { ushard, key, .. } => self.view.put(
                    self.data_key(keyspace, ushard, &key),
                    ValueRecord::tombstone(version).encode(),
                ),
                MutateOp::Increment { ushard, key, .. } => {
                    let (sum, expires_at_ms) = sums
                        .next()
                        .ok_or_else(|| io::Error::other("increment without a checked sum"))?;
                    let record = ValueRecord {
                        version,
                        expires_at_ms,
                        value: sum.to_string().into_bytes(),
                    };
                    self.view.put(self.data_key(keyspace, ushard, &key), record.encode());
                    outcome = Outcome::Counter(sum);
                }
            }
        }
        self.log_moving_changes(keyspace, &touched, version)?;
        Ok(CommandResult { version, outcome })
    }
}

fn legacy_op(op: WriteOp) -> MutateOp {
    match op {
        WriteOp::Put { ushard, key, value } => MutateOp::Put {
            ushard,
            key,
            value,
            expires_at_ms: 0,
            condition: None,
        },
        WriteOp::Delete { ushard, key } => MutateOp::Delete {
            ushard,
            key,
            condition: None,
        },
    }
}

fn op_key(op: &MutateOp) -> (UshardId, &[u8]) {
    match op {
        MutateOp::Put { ushard, key, .. }
        | MutateOp::Delete { ushard, key, .. }
        | MutateOp::Increment { ushard, key, .. } => (*ushard, key),
    }
}

fn add_to_counter(current: Option<&ValueRecord>, delta: i64) -> Result<i64, String> {
    let base = match current {
        None => 0,
        Some(record) => std::str::from_utf8(&record.value)
            .ok()
            .and_then(|text| text.parse::<i64>().ok())
            .ok_or_else(|| "the current value is not a decimal 64-bit integer".to_string())?,
    };
    base.checked_add(delta)
        .ok_or_else(|| format!("{base} + {delta} overflows a 64-bit integer"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::command::{Condition, MoveStep, RequestId, TxnRange, TxnRead, TxnSnapshot};
    use crate::apply::exactly_once::ClientRecord;
    use crate::engine::MemEngine;

    const SHARD: ShardId = ShardId(7);
    const KS: KeyspaceId = KeyspaceId(1);
    const U: UshardId = UshardId(0);

    fn put(key: &str, value: &str, condition: Option<Condition>) -> MutateOp {
        MutateOp::Put {
            ushard: U,
            key: key.into(),
            value: value.into(),
            expires_at_ms: 0,
            condition,
        }
    }

    /// Adds `delta` to counter `n`.
    fn incr(delta: i64) -> MutateOp {
        MutateOp::Increment {
            ushard: U,
            key: b"n".to_vec(),
            delta,
        }
    }

    fn mutate(ops: Vec<MutateOp>, now_ms: u64, request: Option<RequestId>) -> Command {
        Command::Mutate {
            keyspace: KS,
            ops,
            now_ms,
            request,
            accept_ticket: 0,
        }
    }

    /// Applies each command in its own batch, like separate apply calls.
    fn run(engine: &SharedEngine, commands: Vec<(Command, u64)>) -> Vec<CommandResult> {
        run_on(engine, SHARD, commands)
    }

    fn run_on(engine: &SharedEngine, shard: ShardId, commands: Vec<(Command, u64)>) -> Vec<CommandResult> {
        let mut results = Vec::new();
        for (command, index) in commands {
            let mut view = StagedView::new(engine);
            let mut applier = Applier {
                shard,
                view: &mut view,
                clock_ms: read_clock(engine, shard).unwrap(),
                version_base: read_version_base(engine, shard).unwrap(),
                txn_floor: read_txn_floor(engine, shard).unwrap(),
            };
            results.push(applier.apply(command, index).unwrap());
            engine.write(view.into_batch()).unwrap();
        }
        results
    }

    #[test]
    fn failed_condition_writes_nothing_and_reports_the_current_record() {
        let engine: SharedEngine = MemEngine::new();
        let results = run(
            &engine,
            vec![
                (mutate(vec![put("a", "1", Some(Condition::Absent))], 1, None), 1),
                (
                    mutate(
                        vec![put("b", "x", None), put("a", "2", Some(Condition::Absent))],
                        1,
                        None,
                    ),
                    2,
                ),
                (mutate(vec![put("a", "3", Some(Condition::Version(1)))], 1, None), 3),
                (mutate(vec![put("a", "4", Some(Condition::Version(1)))], 1, None), 4),
            ],
        );
        assert_eq!(results[0].outcome, Outcome::Applied);
        match &results[1].outcome {
            Outcome::ConditionFailed {
                op: 1,
                current: Some(r),
            } => assert_eq!(r.value, b"1"),
            other => panic!("{other:?}"),
        }
        assert_eq!(engine.get(CF_DATA, &keys::data_key(SHARD, KS, U, b"b")).unwrap(), None);
        assert_eq!(results[2].outcome, Outcome::Applied);
        match &results[3].outcome {
            Outcome::ConditionFailed { current: Some(r), .. } => assert_eq!(r.version, Version(3)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_retried_request_applies_once_and_gets_the_first_answer() {
        let engine: SharedEngine = MemEngine::new();
        let id = |seq, first_incomplete| {
            Some(RequestId {
                client: 9,
                seq,
                first_incomplete,
            })
        };
        let results = run(
            &engine,
            vec![
                (mutate(vec![incr(5)], 1, id(1, 1)), 1),
                (mutate(vec![incr(5)], 1, id(1, 1)), 2),
                (mutate(vec![incr(1)], 1, id(2, 2)), 3),
            ],
        );
        assert_eq!(results[0].outcome, Outcome::Counter(5));
        assert_eq!(results[1], results[0], "the retry gets the first answer");
        assert_eq!(results[2].outcome, Outcome::Counter(6));
        // seq 1 was forgotten once the client said it was answered; a late
        // duplicate of it is refused, not applied again.
        let record: ClientRecord =
            crate::codec::decode(&engine.get(CF_DATA, &keys::dedup_key(SHARD, 9)).unwrap().unwrap()).unwrap();
        assert_eq!(record.watermark, 2);
        assert_eq!(record.results.keys().copied().collect::<Vec<_>>(), vec![2]);
        let late = run(&engine, vec![(mutate(vec![incr(5)], 1, id(1, 1)), 4)]);
        assert_eq!(late[0].outcome, Outcome::Expired);
        let counter = run(&engine, vec![(mutate(vec![incr(0)], 1, id(3, 3)), 5)]);
        assert_eq!(
            counter[0].outcome,
            Outcome::Counter(6),
            "the late duplicate added nothing"
        );
    }

    #[test]
    fn idle_clients_are_forgotten_by_the_apply_clock() {
        let engine: SharedEngine = MemEngine::new();
        let id = |client| {
            Some(RequestId {
                client,
                seq: 1,
                first_incomplete: 1,
            })
        };
        let forget = |now_ms| Command::ForgetIdleClients { idle_ms: 1_000, now_ms };
        run(
            &engine,
            vec![
                (mutate(vec![incr(1)], 1_000, id(7)), 1),
                (mutate(vec![incr(1)], 2_000, id(8)), 2),
                (forget(2_500), 3),
            ],
        );
        let stored = |client| engine.get(CF_DATA, &keys::dedup_key(SHARD, client)).unwrap().is_some();
        assert!(!stored(7), "idle since 1000, clock 2500");
        assert!(stored(8), "idle since 2000 only");
        // A client refreshed earlier in the same apply batch is kept.
        let mut view = StagedView::new(&engine);
        let mut applier = Applier {
            shard: SHARD,
            view: &mut view,
            clock_ms: 2_500,
            version_base: 0,
            txn_floor: Version(0),
        };
        applier.apply(mutate(vec![incr(1)], 9_000, id(8)), 4).unwrap();
        applier.apply(forget(9_000), 5).unwrap();
        engine.write(view.into_batch()).unwrap();
        assert!(stored(8));
    }

    #[test]
    fn duplicates_inside_one_batch_apply_once() {
        let engine: SharedEngine = MemEngine::new();
        let mut view = StagedView::new(&engine);
        let mut applier = Applier {
            shard: SHARD,
            view: &mut view,
            clock_ms: 0,
            version_base: 0,
            txn_floor: Version(0),
        };
        let add_two = incr(2);
        let request = Some(RequestId {
            client: 1,
            seq: 4,
            first_incomplete: 4,
        });
        let first = applier.apply(mutate(vec![add_two.clone()], 1, request), 1).unwrap();
        let again = applier.apply(mutate(vec![add_two], 1, request), 2).unwrap();
        assert_eq!(first.outcome, Outcome::Counter(2));
        assert_eq!(again, first);
    }

    #[test]
    fn counters_refuse_non_integers_and_overflow() {
        let engine: SharedEngine = MemEngine::new();
        let results = run(
            &engine,
            vec![
                (mutate(vec![put("n", "seven", None)], 1, None), 1),
                (mutate(vec![incr(1)], 1, None), 2),
                (mutate(vec![put("n", &i64::MAX.to_string(), None)], 1, None), 3),
                (mutate(vec![incr(1)], 1, None), 4),
                (mutate(vec![incr(-1)], 1, None), 5),
            ],
        );
        assert!(matches!(results[1].outcome, Outcome::NotACounter(_)));
        assert!(matches!(results[3].outcome, Outcome::NotACounter(_)));
        assert_eq!(results[4].outcome, Outcome::Counter(i64::MAX - 1));
    }

    #[test]
    fn expiry_is_judged_by_the_apply_clock_not_the_replica_clock() {
        let engine: SharedEngine = MemEngine::new();
        let ttl_put = MutateOp::Put {
            ushard: U,
            key: b"t".to_vec(),
            value: b"v".to_vec(),
            expires_at_ms: 1_000,
            condition: None,
        };
        let results = run(
            &engine,
            vec![
                (mutate(vec![ttl_put], 500, None), 1),
                (mutate(vec![put("t", "w", Some(Condition::Absent))], 999, None), 2),
                // A proposer with a slow clock cannot move the apply clock back.
                (mutate(vec![put("x", "x", None)], 1_000, None), 3),
                (mutate(vec![put("t", "w", Some(Condition::Absent))], 10, None), 4),
            ],
        );
        assert!(matches!(results[1].outcome, Outcome::ConditionFailed { .. }));
        assert_eq!(
            results[3].outcome,
            Outcome::Applied,
            "expired at clock 1000 even though now_ms is 10"
        );
    }

    fn read(key: &str, version: u64) -> TxnRead {
        TxnRead {
            ushard: U,
            key: key.into(),
            version: (version > 0).then_some(Version(version)),
        }
    }

    /// A transaction reading `reads` at snapshot `at` (epoch 1) and
    /// writing `ops`, proposed in epoch 1.
    fn txn(at: u64, reads: Vec<TxnRead>, ranges: Vec<TxnRange>, ops: Vec<MutateOp>) -> Command {
        Command::Txn {
            keyspace: KS,
            snapshot: Some(TxnSnapshot {
                version: Version(at),
                epoch: 1,
            }),
            reads,
            ranges,
            ops,
            now_ms: 1,
            request: None,
            proposed_in: 1,
        }
    }

    fn delete(key: &str) -> MutateOp {
        MutateOp::Delete {
            ushard: U,
            key: key.into(),
            condition: None,
        }
    }

    fn conflict_keys(result: &CommandResult) -> Vec<String> {
        match &result.outcome {
            Outcome::TxnConflict { keys } => keys
                .iter()
                .map(|(_, k)| String::from_utf8(k.clone()).unwrap())
                .collect(),
            other => panic!("expected a conflict, got {other:?}"),
        }
    }

    #[test]
    fn write_skew_is_refused_one_of_two_transactions_reading_both_keys_aborts() {
        let engine: SharedEngine = MemEngine::new();
        let results = run(
            &engine,
            vec![
                (mutate(vec![put("x", "1", None), put("y", "1", None)], 1, None), 1),
                // Both read x and y at version 1; each writes the other.
                (
                    txn(1, vec![read("x", 1), read("y", 1)], vec![], vec![put("x", "0", None)]),
                    2,
                ),
                (
                    txn(1, vec![read("x", 1), read("y", 1)], vec![], vec![put("y", "0", None)]),
                    3,
                ),
            ],
        );
        assert_eq!(results[1].outcome, Outcome::Applied);
        assert_eq!(conflict_keys(&results[2]), vec!["x"]);
        assert_eq!(stored(&engine, "y").unwrap().value, b"1", "the loser wrote nothing");
    }

    #[test]
    fn a_key_read_absent_then_written_and_deleted_is_a_conflict() {
        let engine: SharedEngine = MemEngine::new();
        let results = run(
            &engine,
            vec![
                (mutate(vec![put("other", "1", None)], 1, None), 1),
                (mutate(vec![put("k", "1", None)], 1, None), 2),
                (mutate(vec![delete("k")], 1, None), 3),
                // Read k absent at snapshot 1: the write and delete after it
                // leave a tombstone at 3.
                (txn(1, vec![read("k", 0)], vec![], vec![put("w", "1", None)]), 4),
                (txn(3, vec![read("k", 0)], vec![], vec![put("w", "2", None)]), 5),
            ],
        );
        assert_eq!(conflict_keys(&results[3]), vec!["k"]);
        assert_eq!(results[4].outcome, Outcome::Applied, "the delete is inside snapshot 3");
        let tombstone = stored(&engine, "k").unwrap();
        assert_eq!(tombstone, ValueRecord::tombstone(Version(3)));
    }

    #[test]
    fn a_scanned_range_conflicts_with_an_insert_or_a_delete_in_it_and_not_outside() {
        let engine: SharedEngine = MemEngine::new();
        let range = |start: &str, end: &str| TxnRange {
            ushard: U,
            start: start.into(),
            end: Some(end.into()),
        };
        let results = run(
            &engine,
            vec![
                (mutate(vec![put("b", "1", None)], 1, None), 1),
                (mutate(vec![put("d", "1", None)], 1, None), 2),
                (mutate(vec![put("z", "1", None)], 1, None), 3),
                (txn(2, vec![], vec![range("a", "e")], vec![put("w", "1", None)]), 4),
                (mutate(vec![delete("b")], 1, None), 5),
                (txn(4, vec![], vec![range("a", "e")], vec![put("w", "2", None)]), 6),
                (txn(5, vec![], vec![range("a", "e")], vec![put("w", "3", None)]), 7),
            ],
        );
        assert_eq!(results[3].outcome, Outcome::Applied, "z is outside the range");
        assert_eq!(conflict_keys(&results[5]), vec!["b"]);
        assert_eq!(results[6].outcome, Outcome::Applied);
    }

    #[test]
    fn a_snapshot_below_the_floor_is_too_old_and_an_older_epoch_is_refused() {
        let engine: SharedEngine = MemEngine::new();
        let mut stale_epoch = txn(5, vec![read("x", 1)], vec![], vec![put("x", "2", None)]);
        if let Command::Txn { snapshot, .. } = &mut stale_epoch {
            snapshot.as_mut().unwrap().epoch = 0;
        }
        let results = run(
            &engine,
            vec![
                (mutate(vec![put("x", "1", None)], 1, None), 1),
                (Command::AdvanceTxnFloor { floor: Version(3) }, 2),
                (Command::AdvanceTxnFloor { floor: Version(2) }, 3),
                (txn(2, vec![read("x", 1)], vec![], vec![put("x", "2", None)]), 4),
                (stale_epoch, 5),
                (txn(3, vec![read("x", 1)], vec![], vec![put("x", "2", None)]), 6),
            ],
        );
        assert_eq!(
            results[3].outcome,
            Outcome::TxnTooOld {
                snapshot: Version(2),
                floor: Version(3)
            },
            "the floor never goes down"
        );
        assert_eq!(
            results[4].outcome,
            Outcome::EpochChanged {
                snapshot: 0,
                current: 1
            }
        );
        assert_eq!(results[5].outcome, Outcome::Applied);
        assert_eq!(read_txn_floor(&engine, SHARD).unwrap(), Version(3));
    }

    #[test]
    fn a_transaction_touching_a_frozen_ushard_writes_nothing_and_a_retry_is_answered_once() {
        let engine: SharedEngine = MemEngine::new();
        let id = Some(RequestId {
            client: 4,
            seq: 1,
            first_incomplete: 1,
        });
        let with_id = |mut command: Command| {
            if let Command::Txn { request, .. } = &mut command {
                *request = id;
            }
            command
        };
        let results = run_on(
            &engine,
            SOURCE,
            vec![
                (mutate(vec![put("x", "1", None)], 1, None), 1),
                (
                    with_id(txn(1, vec![read("x", 1)], vec![], vec![put("x", "2", None)])),
                    2,
                ),
                // The retry of a commit whose answer was lost.
                (
                    with_id(txn(1, vec![read("x", 1)], vec![], vec![put("x", "2", None)])),
                    3,
                ),
                (step(MoveStep::BeginExport { to: DEST }), 4),
                (step(MoveStep::Freeze), 5),
                (txn(3, vec![read("x", 2)], vec![], vec![put("y", "2", None)]), 6),
            ],
        );
        assert_eq!(results[1].outcome, Outcome::Applied);
        assert_eq!(results[2], results[1], "the first answer, not a conflict");
        assert_eq!(results[5].outcome, Outcome::Moving { ushard: U });
        assert_eq!(stored_on(&engine, SOURCE, "y"), None);
    }

    const SOURCE: ShardId = ShardId(7);
    const DEST: ShardId = ShardId(8);
    const MOVE: u64 = 1;

    fn moved(key: &str, version: u64, value: &str) -> MovedRecord {
        MovedRecord {
            key: key.into(),
            record: Some(ValueRecord {
                version: Version(version),
                expires_at_ms: 0,
                value: value.into(),
            }),
        }
    }

    fn step(step: MoveStep) -> Command {
        Command::Move {
            keyspace: KS,
            ushard: U,
            move_id: MOVE,
            step,
        }
    }

    fn ingest(records: Vec<MovedRecord>, as_of: u64) -> Command {
        step(MoveStep::Ingest {
            records,
            as_of: Version(as_of),
        })
    }

    fn activate(as_of: u64) -> Command {
        step(MoveStep::Activate {
            as_of: Version(as_of),
            clients: vec![],
        })
    }

    fn begin_ingest() -> Command {
        step(MoveStep::BeginIngest { from: SOURCE })
    }

    fn stored_on(engine: &SharedEngine, shard: ShardId, key: &str) -> Option<ValueRecord> {
        engine
            .get(CF_DATA, &keys::data_key(shard, KS, U, key.as_bytes()))
            .unwrap()
            .map(|bytes| ValueRecord::decode(&bytes).unwrap())
    }

    fn stored(engine: &SharedEngine, key: &str) -> Option<ValueRecord> {
        stored_on(engine, SHARD, key)
    }

    #[test]
    fn moved_records_keep_their_versions_and_every_later_version_is_above_the_source() {
        let engine: SharedEngine = MemEngine::new();
        let results = run(
            &engine,
            vec![
                (mutate(vec![put("local", "1", None)], 1, None), 1),
                (begin_ingest(), 2),
                // The source had reached version 300; its records of the
                // μshard are older.
                (ingest(vec![moved("a", 100, "x"), moved("b", 250, "y")], 300), 3),
                (activate(300), 4),
                (mutate(vec![put("c", "3", None)], 1, None), 5),
            ],
        );
        assert_eq!(results[0].version, Version(1));
        assert!(results.iter().all(|r| r.outcome == Outcome::Applied), "{results:?}");
        assert!(results[2].version > Version(300), "{:?}", results[2]);
        assert!(results[4].version > results[3].version);
        assert_eq!(stored(&engine, "a").unwrap().version, Version(100));
        assert_eq!(stored(&engine, "b").unwrap().version, Version(250));
        assert_eq!(
            stored(&engine, "local"),
            None,
            "begin-ingest drops what an earlier stay left"
        );
        assert_eq!(read_version_base(&engine, SHARD).unwrap(), results[4].version.0 - 5);
    }

    #[test]
    fn a_version_read_at_the_source_is_a_condition_the_destination_honours() {
        let engine: SharedEngine = MemEngine::new();
        let results = run(
            &engine,
            vec![
                (begin_ingest(), 1),
                (ingest(vec![moved("a", 250, "x")], 300), 2),
                (activate(300), 3),
                (
                    mutate(vec![put("a", "stale", Some(Condition::Version(100)))], 1, None),
                    4,
                ),
                (
                    mutate(vec![put("a", "next", Some(Condition::Version(250)))], 1, None),
                    5,
                ),
                (
                    mutate(vec![put("a", "again", Some(Condition::Version(250)))], 1, None),
                    6,
                ),
            ],
        );
        assert!(matches!(results[3].outcome, Outcome::ConditionFailed { .. }));
        assert_eq!(results[4].outcome, Outcome::Applied, "nothing wrote since version 250");
        match &results[5].outcome {
            Outcome::ConditionFailed { current: Some(r), .. } => assert_eq!(r.version, results[4].version),
            other => panic!("a write came in between: {other:?}"),
        }
    }

    #[test]
    fn the_version_base_never_goes_down_and_a_copied_deletion_removes_the_key() {
        let engine: SharedEngine = MemEngine::new();
        let results = run(
            &engine,
            vec![
                (begin_ingest(), 1),
                (ingest(vec![moved("a", 500, "x"), moved("b", 10, "y")], 900), 2),
                // A later chunk of an older source state, and a key the
                // source deleted since the first copy.
                (
                    ingest(
                        vec![MovedRecord {
                            key: b"b".to_vec(),
                            record: None,
                        }],
                        20,
                    ),
                    3,
                ),
                (activate(20), 4),
                (mutate(vec![put("c", "1", None)], 1, None), 5),
            ],
        );
        assert!(results[2].version > results[1].version);
        assert!(results[4].version > Version(900));
        assert_eq!(stored(&engine, "b"), None);
        assert_eq!(stored(&engine, "a").unwrap().version, Version(500));
    }

    #[test]
    fn a_source_record_newer_than_its_stated_version_still_raises_the_base() {
        let engine: SharedEngine = MemEngine::new();
        let results = run(
            &engine,
            vec![
                (begin_ingest(), 1),
                (ingest(vec![moved("a", 700, "x")], 300), 2),
                (activate(300), 3),
                (mutate(vec![put("a", "y", None)], 1, None), 4),
            ],
        );
        assert!(results[3].version > Version(700));
    }

    #[test]
    fn a_source_logs_changes_while_exporting_refuses_writes_once_frozen_and_names_the_owner_once_released() {
        let engine: SharedEngine = MemEngine::new();
        let log_of = |engine: &SharedEngine| {
            let (start, end) = keys::move_log_range(SOURCE, KS, U, Version(0));
            let mut log = Vec::new();
            engine
                .scan(
                    CF_DATA,
                    &start,
                    &end,
                    crate::engine::Direction::Forward,
                    &mut |key, value| {
                        let changes: Vec<MovedRecord> = crate::codec::decode(value).unwrap();
                        log.push((keys::move_log_version(key).unwrap(), changes));
                        Ok(crate::engine::Visit::Continue)
                    },
                )
                .unwrap();
            log
        };
        let delete_a = MutateOp::Delete {
            ushard: U,
            key: b"a".to_vec(),
            condition: None,
        };
        let results = run_on(
            &engine,
            SOURCE,
            vec![
                (mutate(vec![put("before", "0", None)], 1, None), 1),
                (step(MoveStep::BeginExport { to: DEST }), 2),
                (mutate(vec![put("a", "1", None), put("b", "2", None)], 1, None), 3),
                (mutate(vec![delete_a], 1, None), 4),
                (step(MoveStep::Freeze), 5),
                (mutate(vec![put("c", "3", None)], 1, None), 6),
                // Repeats of a move's own steps change nothing.
                (step(MoveStep::BeginExport { to: DEST }), 7),
                (step(MoveStep::Freeze), 8),
            ],
        );
        assert!(
            results[..5].iter().all(|r| r.outcome == Outcome::Applied),
            "{results:?}"
        );
        assert_eq!(results[5].outcome, Outcome::Moving { ushard: U });
        assert_eq!(results[6].outcome, Outcome::Applied);
        assert_eq!(results[7].outcome, Outcome::Applied);
        assert_eq!(stored_on(&engine, SOURCE, "c"), None, "a frozen μshard takes no write");
        let log = log_of(&engine);
        assert_eq!(log.len(), 2, "only the writes after the export began: {log:?}");
        assert_eq!(log[0].0, Version(3));
        assert_eq!(log[0].1.len(), 2);
        assert_eq!(
            log[1].1,
            vec![MovedRecord {
                key: b"a".to_vec(),
                record: Some(ValueRecord::tombstone(Version(4)))
            }],
            "a delete is logged as its tombstone"
        );

        let results = run_on(
            &engine,
            SOURCE,
            vec![
                (step(MoveStep::Release), 9),
                (mutate(vec![put("c", "3", None)], 1, None), 10),
                (step(MoveStep::Release), 11),
                (step(MoveStep::DropData), 12),
            ],
        );
        assert_eq!(results[1].outcome, Outcome::WrongShard { ushard: U, owner: DEST });
        assert_eq!(results[2].outcome, Outcome::Applied, "a repeated release");
        assert!(log_of(&engine).is_empty(), "the change log goes with the data");
        assert_eq!(stored_on(&engine, SOURCE, "b"), None, "moved records dropped");
        assert!(stored_on(&engine, SOURCE, "before").is_none());
    }

    #[test]
    fn a_released_source_serves_again_when_the_destination_abandoned() {
        let engine: SharedEngine = MemEngine::new();
        let results = run_on(
            &engine,
            SOURCE,
            vec![
                (mutate(vec![put("a", "1", None)], 1, None), 1),
                (step(MoveStep::BeginExport { to: DEST }), 2),
                (step(MoveStep::Freeze), 3),
                (step(MoveStep::Release), 4),
                (step(MoveStep::AbortExport), 5),
                (mutate(vec![put("a", "2", None)], 1, None), 6),
                // Another move's abort is not ours to take.
                (
                    Command::Move {
                        keyspace: KS,
                        ushard: U,
                        move_id: 99,
                        step: MoveStep::Freeze,
                    },
                    7,
                ),
            ],
        );
        assert_eq!(results[4].outcome, Outcome::Applied);
        assert_eq!(results[5].outcome, Outcome::Applied, "served and writable again");
        assert_eq!(stored_on(&engine, SOURCE, "a").unwrap().value, b"2");
        assert!(matches!(results[6].outcome, Outcome::MoveRefused(_)));
    }

    #[test]
    fn a_destination_serves_only_after_activation_and_abandon_and_activate_exclude_each_other() {
        let engine: SharedEngine = MemEngine::new();
        let write = || mutate(vec![put("a", "1", None)], 1, None);
        let results = run_on(
            &engine,
            DEST,
            vec![
                (step(MoveStep::BeginIngest { from: SOURCE }), 1),
                (write(), 2),
                (
                    step(MoveStep::Activate {
                        as_of: Version(5),
                        clients: vec![],
                    }),
                    3,
                ),
                (write(), 4),
                (step(MoveStep::Abandon { from: SOURCE }), 5),
            ],
        );
        assert_eq!(results[1].outcome, Outcome::Moving { ushard: U }, "not taken in yet");
        assert_eq!(results[3].outcome, Outcome::Applied);
        assert!(
            matches!(results[4].outcome, Outcome::MoveRefused(_)),
            "activated: rolls forward"
        );

        // The other order: once abandoned, the move cannot activate (or
        // begin again), and the source keeps the μshard.
        let engine: SharedEngine = MemEngine::new();
        let results = run_on(
            &engine,
            DEST,
            vec![
                (step(MoveStep::BeginIngest { from: SOURCE }), 1),
                (ingest(vec![moved("a", 3, "x")], 4), 2),
                (step(MoveStep::Abandon { from: SOURCE }), 3),
                (
                    step(MoveStep::Activate {
                        as_of: Version(5),
                        clients: vec![],
                    }),
                    4,
                ),
                (step(MoveStep::BeginIngest { from: SOURCE }), 5),
                (write(), 6),
            ],
        );
        assert!(
            matches!(results[3].outcome, Outcome::MoveRefused(_)),
            "{:?}",
            results[3]
        );
        assert!(
            matches!(results[4].outcome, Outcome::MoveRefused(_)),
            "{:?}",
            results[4]
        );
        assert_eq!(
            results[5].outcome,
            Outcome::WrongShard {
                ushard: U,
                owner: SOURCE
            }
        );
        assert_eq!(stored_on(&engine, DEST, "a"), None, "what was taken in is dropped");
    }

    #[test]
    fn a_request_answered_at_the_source_is_answered_alike_at_the_destination() {
        let source: SharedEngine = MemEngine::new();
        let id = |seq| {
            Some(RequestId {
                client: 9,
                seq,
                first_incomplete: 1,
            })
        };
        let results = run_on(
            &source,
            SOURCE,
            vec![
                (step(MoveStep::BeginExport { to: DEST }), 1),
                (mutate(vec![incr(5)], 1, id(1)), 2),
                (step(MoveStep::Freeze), 3),
                // Refused by the freeze: not recorded, so it may apply at
                // the new owner.
                (mutate(vec![incr(7)], 1, id(2)), 4),
            ],
        );
        assert_eq!(results[1].outcome, Outcome::Counter(5));
        assert_eq!(results[3].outcome, Outcome::Moving { ushard: U });
        let (start, end) = keys::dedup_range(SOURCE);
        let mut clients = Vec::new();
        source
            .scan(
                CF_DATA,
                &start,
                &end,
                crate::engine::Direction::Forward,
                &mut |key, value| {
                    clients.push((keys::client_of_dedup_key(key).unwrap(), value.to_vec()));
                    Ok(crate::engine::Visit::Continue)
                },
            )
            .unwrap();
        let counter = stored_on(&source, SOURCE, "n").unwrap();
        let dest: SharedEngine = MemEngine::new();
        let results = run_on(
            &dest,
            DEST,
            vec![
                (step(MoveStep::BeginIngest { from: SOURCE }), 1),
                (
                    ingest(
                        vec![MovedRecord {
                            key: b"n".to_vec(),
                            record: Some(counter),
                        }],
                        3,
                    ),
                    2,
                ),
                (
                    step(MoveStep::Activate {
                        as_of: Version(3),
                        clients,
                    }),
                    3,
                ),
                // The retry of seq 1 whose answer was lost at the source.
                (mutate(vec![incr(5)], 1, id(1)), 4),
                (mutate(vec![incr(7)], 1, id(2)), 5),
            ],
        );
        assert_eq!(
            results[3].outcome,
            Outcome::Counter(5),
            "the first answer, not applied again"
        );
        assert_eq!(results[3].version, Version(2), "the source's version of it");
        assert_eq!(results[4].outcome, Outcome::Counter(12));
    }
}
