//! Applying one command to a shard: conditions, counters, TTL by the apply
//! clock, all decided from replicated state only, so every replica reaches
//! the same outcome. Exactly-once retries are `exactly_once`'s; the state a
//! batch is applied against is `staged`'s.

use crate::apply::command::{Command, CommandResult, Condition, MutateOp, Outcome, WriteOp};
use crate::apply::exactly_once;
use crate::apply::staged::StagedView;
use crate::engine::SharedEngine;
use crate::keys::{self, ValueRecord, CF_DATA};
use shoal_types::{KeyspaceId, ShardId, UshardId, Version};
use std::io;

/// Reads a shard's stored apply clock (0 before the first timed write).
pub fn read_clock(engine: &SharedEngine, shard: ShardId) -> io::Result<u64> {
    Ok(engine
        .get(CF_DATA, &keys::clock_key(shard))?
        .map(|bytes| keys::decode_clock(&bytes))
        .unwrap_or(0))
}

/// Applies commands of one shard; owns the shard's apply clock for the batch.
pub struct Applier<'v, 'e> {
    pub shard: ShardId,
    pub view: &'v mut StagedView<'e>,
    /// The shard's apply clock, advanced by every `Mutate` command.
    pub clock_ms: u64,
}

impl Applier<'_, '_> {
    pub fn apply(&mut self, command: Command, version: Version) -> io::Result<CommandResult> {
        match command {
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
                let Some(request) = request else {
                    return self.mutate(keyspace, ops, version);
                };
                let clock_ms = self.clock_ms;
                let shard = self.shard;
                exactly_once::answer_once(self.view, shard, clock_ms, &request, version, |view| {
                    Applier { shard, view, clock_ms }.mutate(keyspace, ops, version)
                })
            }
        }
    }

    /// The apply clock never goes back, whatever the proposer's clock says.
    fn advance_clock(&mut self, now_ms: u64) {
        if now_ms > self.clock_ms {
            self.clock_ms = now_ms;
            self.view
                .put(keys::clock_key(self.shard), keys::encode_clock(self.clock_ms));
        }
    }

    /// The live record of a key at the apply clock (expired = absent).
    fn live(&self, key: &[u8]) -> io::Result<Option<ValueRecord>> {
        let Some(bytes) = self.view.get(key)? else {
            return Ok(None);
        };
        let record = ValueRecord::decode(&bytes)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "corrupt value record"))?;
        Ok(record.is_live_at(self.clock_ms).then_some(record))
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
            let current = self.live(&self.data_key(keyspace, ushard, key))?;
            if let MutateOp::Increment { delta, .. } = op {
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
                if !holds(condition, current.as_ref()) {
                    return Ok(CommandResult {
                        version,
                        outcome: Outcome::ConditionFailed { op: i as u32, current },
                    });
                }
            }
        }
        let mut sums = sums.into_iter();
        let mut outcome = Outcome::Applied;
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
                MutateOp::Delete { ushard, key, .. } => self.view.delete(self.data_key(keyspace, ushard, &key)),
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

fn holds(condition: &Condition, current: Option<&ValueRecord>) -> bool {
    match (condition, current) {
        (Condition::Absent, current) => current.is_none(),
        (Condition::Present, current) => current.is_some(),
        (Condition::Version(v), Some(record)) => record.version.0 == *v,
        (Condition::Value(bytes), Some(record)) => record.value == *bytes,
        (Condition::Version(_) | Condition::Value(_), None) => false,
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
    use crate::apply::command::RequestId;
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
        let mut results = Vec::new();
        for (command, index) in commands {
            let mut view = StagedView::new(engine);
            let clock_ms = read_clock(engine, SHARD).unwrap();
            let mut applier = Applier {
                shard: SHARD,
                view: &mut view,
                clock_ms,
            };
            results.push(applier.apply(command, Version(index)).unwrap());
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
        };
        applier.apply(mutate(vec![incr(1)], 9_000, id(8)), Version(4)).unwrap();
        applier.apply(forget(9_000), Version(5)).unwrap();
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
        };
        let add_two = incr(2);
        let request = Some(RequestId {
            client: 1,
            seq: 4,
            first_incomplete: 4,
        });
        let first = applier
            .apply(mutate(vec![add_two.clone()], 1, request), Version(1))
            .unwrap();
        let again = applier.apply(mutate(vec![add_two], 1, request), Version(2)).unwrap();
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
}
