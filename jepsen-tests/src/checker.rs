//! Checkers: a history in, a verdict out. The register checker tests each
//! key's history for linearizability (Wing & Gong, via `todc-utils`); the
//! set checker looks for acknowledged elements that were lost and for
//! elements nobody added.

use crate::history::{Op, OpKind, Outcome};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use todc_utils::linearizability::history::{Action, History};
use todc_utils::linearizability::WGLChecker;
use todc_utils::specifications::Specification;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", content = "why", rename_all = "lowercase")]
pub enum Verdict {
    Valid,
    Invalid(Vec<String>),
    /// The checker ran out of time before it could decide.
    Unknown(String),
}

impl Verdict {
    pub fn name(&self) -> &'static str {
        match self {
            Verdict::Valid => "valid",
            Verdict::Invalid(_) => "invalid",
            Verdict::Unknown(_) => "unknown",
        }
    }
}

impl Verdict {
    /// Both verdicts: invalid if either is (with both's reasons), else
    /// unknown if either is, else valid.
    pub fn and(self, other: Verdict) -> Verdict {
        match (self, other) {
            (Verdict::Invalid(mut a), Verdict::Invalid(b)) => {
                a.extend(b);
                Verdict::Invalid(a)
            }
            (v @ Verdict::Invalid(_), _) | (_, v @ Verdict::Invalid(_)) => v,
            (v @ Verdict::Unknown(_), _) | (_, v @ Verdict::Unknown(_)) => v,
            (Verdict::Valid, Verdict::Valid) => Verdict::Valid,
        }
    }
}

/// Checks the versions answers carried, per key (docs/consistency.md, the
/// version rule): **a value has one version** (a read shows the version
/// its write was acknowledged with, also after the μshard moved), and
/// **versions never decrease in real time**: an operation that began after
/// another ended shows a version at least as high, and a write a strictly
/// higher one. `reads` says whether reads count (bounded reads may be
/// stale, so the bounded workload checks only its writes).
pub fn check_versions(ops: &[Op], reads: bool) -> Verdict {
    struct Seen<'a> {
        op: &'a Op,
        version: u64,
        is_write: bool,
    }
    let mut by_key: BTreeMap<&str, Vec<Seen>> = BTreeMap::new();
    for op in ops.iter().filter(|o| o.outcome == Outcome::Ok) {
        let Some(version) = op.version else { continue };
        let is_write = !matches!(op.kind, OpKind::Read { .. } | OpKind::ReadPair { .. });
        if is_write || reads {
            by_key.entry(&op.key).or_default().push(Seen { op, version, is_write });
        }
    }
    let mut problems = Vec::new();
    for (key, seen) in &by_key {
        // One version per value.
        let mut version_of: BTreeMap<u64, (u64, &Op)> = BTreeMap::new();
        for s in seen {
            let value = match s.op.kind {
                OpKind::Read { value: Some(v) } if v != 0 => v,
                OpKind::Write { value } => value,
                OpKind::Cas { new, .. } | OpKind::IfAbsent { new, .. } => new,
                _ => continue,
            };
            match version_of.get(&value) {
                Some((v, other)) if *v != s.version => problems.push(format!(
                    "key {key}: value {value} has version {v} (at {:.3} s) and version {} (at {:.3} s)",
                    other.complete_ns as f64 / 1e9,
                    s.version,
                    s.op.complete_ns as f64 / 1e9
                )),
                Some(_) => {}
                None => {
                    version_of.insert(value, (s.version, s.op));
                }
            }
        }
        // Never lower than what ended before it began.
        let mut by_end: Vec<&Seen> = seen.iter().collect();
        by_end.sort_by_key(|s| s.op.complete_ns);
        let mut by_start: Vec<&Seen> = seen.iter().collect();
        by_start.sort_by_key(|s| s.op.invoke_ns);
        let mut ended = 0;
        let mut highest: Option<&Seen> = None;
        for s in by_start {
            while ended < by_end.len() && by_end[ended].op.complete_ns < s.op.invoke_ns {
                if highest.is_none_or(|h| by_end[ended].version > h.version) {
                    highest = Some(by_end[ended]);
                }
                ended += 1;
            }
            let Some(h) = highest else { continue };
            let went_down = s.version < h.version || (s.is_write && s.version == h.version);
            if went_down {
                problems.push(format!(
                    "key {key}: version went down: {} at {:.3} s after {} ended at {:.3} s",
                    s.version,
                    s.op.invoke_ns as f64 / 1e9,
                    h.version,
                    h.op.complete_ns as f64 / 1e9
                ));
            }
        }
    }
    verdict_of(problems, "version problems")
}

/// A register of u64 values; 0 means "no value yet".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RegisterOp {
    /// `None` at the call (not known yet), the value seen at the response.
    Read(Option<u64>),
    Write(u64),
    /// Compare-and-set (expected, new, whether it applied: `None` unknown).
    Cas(u64, u64, Option<bool>),
}

pub struct RegisterSpec;

impl Specification for RegisterSpec {
    type State = u64;
    type Operation = RegisterOp;

    fn init() -> u64 {
        0
    }

    fn apply(op: &RegisterOp, state: &u64) -> (bool, u64) {
        match op {
            RegisterOp::Read(seen) => (*seen == Some(*state), *state),
            RegisterOp::Write(value) => (true, *value),
            RegisterOp::Cas(expected, new, applied) => {
                let holds = state == expected;
                let next = if holds { *new } else { *state };
                match applied {
                    Some(true) => (holds, next),
                    Some(false) => (!holds, *state),
                    None => (true, next),
                }
            }
        }
    }
}

/// The WGL history of one key. Failed operations took no effect and are
/// left out, as are reads that returned nothing. An indeterminate write may
/// take effect at any point after its call, so its response goes after
/// everything else. Every operation gets its own process id: the library
/// pairs calls and responses per process in order, which an indeterminate
/// write (answered "at the end") would otherwise scramble.
fn key_history(ops: &[&Op]) -> Option<History<RegisterOp>> {
    let mut events: Vec<(u64, u8, usize, Action<RegisterOp>)> = Vec::new();
    for (process, op) in ops.iter().enumerate() {
        let (call, response, end) = match (&op.kind, op.outcome) {
            (OpKind::Write { value }, Outcome::Ok) => {
                (RegisterOp::Write(*value), RegisterOp::Write(*value), op.complete_ns)
            }
            (OpKind::Write { value }, Outcome::Info) => {
                (RegisterOp::Write(*value), RegisterOp::Write(*value), u64::MAX)
            }
            (OpKind::Read { value: Some(v) }, Outcome::Ok) => {
                (RegisterOp::Read(None), RegisterOp::Read(Some(*v)), op.complete_ns)
            }
            (OpKind::Cas { expected, new }, outcome) => {
                let call = RegisterOp::Cas(*expected, *new, None);
                match (outcome, &op.error) {
                    (Outcome::Ok, _) => (call, RegisterOp::Cas(*expected, *new, Some(true)), op.complete_ns),
                    // A refused condition is an observation of the state.
                    (Outcome::Fail, None) => (call, RegisterOp::Cas(*expected, *new, Some(false)), op.complete_ns),
                    // Refused before it was applied: no effect, nothing seen.
                    (Outcome::Fail, Some(_)) => continue,
                    (Outcome::Info, _) => (call, call, u64::MAX),
                }
            }
            _ => continue,
        };
        // At equal times calls sort first: overlap is the weaker claim.
        events.push((op.invoke_ns, 0, process, Action::Call(call)));
        events.push((end, 1, process, Action::Response(response)));
    }
    if events.is_empty() {
        return None;
    }
    events.sort_by_key(|(t, order, process, _)| (*t, *order, *process));
    Some(History::from_actions(
        events
            .into_iter()
            .map(|(_, _, process, action)| (process, action))
            .collect(),
    ))
}

/// Checks every key's register history for linearizability within `budget`.
pub fn check_register(ops: &[Op], budget: Duration) -> Verdict {
    let mut by_key: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in ops
        .iter()
        .filter(|o| matches!(o.kind, OpKind::Read { .. } | OpKind::Write { .. } | OpKind::Cas { .. }))
    {
        by_key.entry(&op.key).or_default().push(op);
    }
    let histories: Vec<(String, History<RegisterOp>)> = by_key
        .into_iter()
        .filter_map(|(key, ops)| key_history(&ops).map(|h| (key.to_string(), h)))
        .collect();
    let total = histories.len();
    let (tx, rx) = mpsc::channel();
    // The search runs on its own thread so a hard history cannot hold the
    // run hostage: past the budget the verdict is "unknown".
    std::thread::spawn(move || {
        for (key, history) in histories {
            let linearizable = WGLChecker::<RegisterSpec>::is_linearizable(history);
            if tx.send((key, linearizable)).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + budget;
    let mut bad = Vec::new();
    for checked in 0..total {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok((key, true)) => drop(key),
            Ok((key, false)) => bad.push(format!("key {key}: not linearizable")),
            Err(_) => {
                return Verdict::Unknown(format!(
                    "checked {checked} of {total} keys within {budget:?}; {} not linearizable so far",
                    bad.len()
                ))
            }
        }
    }
    verdict_of(bad, "keys")
}

/// Valid without problems; else invalid, naming the first ten.
fn verdict_of(mut problems: Vec<String>, what: &str) -> Verdict {
    if problems.is_empty() {
        return Verdict::Valid;
    }
    let count = problems.len();
    problems.truncate(10);
    if count > problems.len() {
        problems.push(format!("... {count} {what} in all"));
    }
    Verdict::Invalid(problems)
}

/// Checks the set: every acknowledged element is in `final_elements`, and
/// every element there was added by someone (acknowledged or not).
pub fn check_set(ops: &[Op], final_elements: &BTreeSet<u64>) -> Verdict {
    check_kept(ops, final_elements, LossRule::NoneLost).0
}

/// Whether a run may lose acknowledged elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LossRule {
    /// Quorum writes, or fast-ack writes under faults that kill or cut off
    /// no primary: nothing acknowledged may be lost.
    NoneLost,
    /// Fast-ack writes under faults that kill or cut off primaries: losses
    /// are counted, not judged (the fast-ack loss window).
    Counted,
}

/// The set check, with losses judged by `rule`; also returns the
/// acknowledged elements that were lost. Elements nobody added are always
/// invalid.
pub fn check_kept(ops: &[Op], final_elements: &BTreeSet<u64>, rule: LossRule) -> (Verdict, Vec<u64>) {
    let mut acked = BTreeSet::new();
    let mut attempted = BTreeSet::new();
    for op in ops {
        if let OpKind::Add { element } = op.kind {
            if op.outcome != Outcome::Fail {
                attempted.insert(element);
            }
            if op.outcome == Outcome::Ok {
                acked.insert(element);
            }
        }
    }
    let lost: Vec<u64> = acked.difference(final_elements).copied().collect();
    let unexpected: Vec<u64> = final_elements.difference(&attempted).copied().collect();
    let mut problems = Vec::new();
    if !lost.is_empty() && rule == LossRule::NoneLost {
        problems.push(format!("{} acknowledged elements lost: {:?}", lost.len(), first(&lost)));
    }
    if !unexpected.is_empty() {
        problems.push(format!(
            "{} elements nobody added (or whose add failed): {:?}",
            unexpected.len(),
            first(&unexpected)
        ));
    }
    let verdict = if problems.is_empty() {
        Verdict::Valid
    } else {
        Verdict::Invalid(problems)
    };
    (verdict, lost)
}

/// The pairs workload: every read saw both keys of its pair alike (never
/// half of a batch), and each pair, read as one register, is
/// linearizable.
pub fn check_pairs(ops: &[Op], budget: Duration) -> Verdict {
    let mut torn = Vec::new();
    let as_register: Vec<Op> = ops
        .iter()
        .filter_map(|op| match op.kind {
            OpKind::ReadPair { a, b, by_scan } if op.outcome == Outcome::Ok => {
                if a != b {
                    torn.push(format!(
                        "pair {}: a {} at {:.3} s saw {a:?} and {b:?}",
                        op.key,
                        if by_scan { "scan" } else { "multi-get" },
                        op.invoke_ns as f64 / 1e9
                    ));
                    return None;
                }
                Some(Op {
                    kind: OpKind::Read { value: a },
                    ..op.clone()
                })
            }
            OpKind::ReadPair { .. } => None,
            _ => Some(op.clone()),
        })
        .collect();
    if !torn.is_empty() {
        return verdict_of(torn, "torn reads");
    }
    check_register(&as_register, budget)
}

/// The ttl workload. Values are unique and each is written at most once,
/// so a key holds a value over one stretch of its history: once it has
/// been seen, then something else (absence, after expiry or a delete, or
/// another value), it is gone for good. An observation is an operation that
/// saw the key's state at some point between its invocation and its
/// completion: a read, an acknowledged write (it saw its own value), a
/// put-if-absent (applied: its value; refused: the value it found), a
/// delete-if-present (absence, either way). Also, every value seen was
/// written by an operation that began before the observation ended.
pub fn check_no_resurrection(ops: &[Op]) -> Verdict {
    let mut by_key: BTreeMap<&str, Vec<(u64, u64, u64)>> = BTreeMap::new();
    let mut written: BTreeMap<&str, BTreeMap<u64, u64>> = BTreeMap::new();
    for op in ops {
        let seen = match (&op.kind, op.outcome, &op.error) {
            (OpKind::Read { value: Some(v) }, Outcome::Ok, _) => Some(*v),
            (OpKind::Write { value }, Outcome::Ok, _) => Some(*value),
            (OpKind::IfAbsent { new, .. }, Outcome::Ok, _) => Some(*new),
            (OpKind::IfAbsent { found: Some(v), .. }, Outcome::Fail, None) => Some(*v),
            (OpKind::DeleteIfPresent, Outcome::Ok, _) | (OpKind::DeleteIfPresent, Outcome::Fail, None) => Some(0),
            _ => None,
        };
        if let OpKind::Write { value: v } | OpKind::IfAbsent { new: v, .. } = op.kind {
            // A refused or failed write wrote nothing; an indeterminate one may have.
            if op.outcome != Outcome::Fail {
                let first = written.entry(&op.key).or_default().entry(v).or_insert(op.invoke_ns);
                *first = (*first).min(op.invoke_ns);
            }
        }
        if let Some(v) = seen {
            by_key
                .entry(&op.key)
                .or_default()
                .push((op.invoke_ns, op.complete_ns, v));
        }
    }
    let mut problems = Vec::new();
    for (key, observations) in by_key {
        let writes = written.get(key);
        // Per value: the earliest completion and the latest invocation of
        // an observation of it.
        let mut span: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
        for (invoke, complete, v) in &observations {
            let written_before = writes.and_then(|w| w.get(v)).is_some_and(|at| at < complete);
            if *v != 0 && !written_before {
                problems.push(format!("key {key}: saw {v}, which no write made before"));
            }
            let entry = span.entry(*v).or_insert((*complete, *invoke));
            entry.0 = entry.0.min(*complete);
            entry.1 = entry.1.max(*invoke);
        }
        for (v, (first_done, last_begun)) in &span {
            if *v == 0 {
                continue;
            }
            let between = observations
                .iter()
                .find(|(invoke, complete, other)| other != v && invoke > first_done && complete < last_begun);
            if let Some((invoke, _, other)) = between {
                problems.push(format!(
                    "key {key}: {v} was seen, then {} at {:.3} s, then {v} again",
                    if *other == 0 {
                        "absent".to_string()
                    } else {
                        other.to_string()
                    },
                    *invoke as f64 / 1e9
                ));
            }
        }
    }
    verdict_of(problems, "resurrections")
}

/// The ttl workload: keys that saw increments are counters
/// ([`check_counters`]); every other key is checked for resurrections
/// ([`check_no_resurrection`]).
pub fn check_ttl(ops: &[Op]) -> Verdict {
    let counters: BTreeSet<&str> = ops
        .iter()
        .filter(|o| matches!(o.kind, OpKind::Increment { .. }))
        .map(|o| o.key.as_str())
        .collect();
    let (counter_ops, others): (Vec<Op>, Vec<Op>) =
        ops.iter().cloned().partition(|o| counters.contains(o.key.as_str()));
    both(check_no_resurrection(&others), check_counters(&counter_ops))
}

/// Counters incremented by one: every observation of a counter (a read,
/// or the value an increment answered with) lies between the increments
/// acknowledged before it began (an increment counts itself) and the
/// increments that may have applied by the time it ended (indeterminate
/// ones included); and no two acknowledged increments answered with the
/// same value. An increment applied twice (an exactly-once record
/// forgotten, a retry applied again) pushes a later observation above its
/// upper bound.
pub fn check_counters(ops: &[Op]) -> Verdict {
    let mut by_key: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in ops {
        by_key.entry(&op.key).or_default().push(op);
    }
    let mut problems = Vec::new();
    for (key, ops) in by_key {
        let increments: Vec<&Op> = ops
            .iter()
            .copied()
            .filter(|o| matches!(o.kind, OpKind::Increment { .. }))
            .collect();
        let mut answered: BTreeMap<u64, usize> = BTreeMap::new();
        for op in &ops {
            let (seen, is_increment) = match (&op.kind, op.outcome) {
                (OpKind::Read { value: Some(v) }, Outcome::Ok) => (*v, false),
                (OpKind::Increment { result: Some(v) }, Outcome::Ok) => (*v, true),
                _ => continue,
            };
            let acknowledged_before = increments
                .iter()
                .filter(|i| i.outcome == Outcome::Ok && i.complete_ns < op.invoke_ns)
                .count() as u64;
            let lower = acknowledged_before + u64::from(is_increment);
            let upper = increments
                .iter()
                .filter(|i| i.outcome != Outcome::Fail && i.invoke_ns < op.complete_ns)
                .count() as u64;
            if seen < lower || seen > upper {
                problems.push(format!(
                    "key {key}: {} at {:.3} s saw {seen}, outside [{lower}, {upper}] (increments acknowledged before it, and begun before it ended)",
                    if is_increment { "an increment" } else { "a read" },
                    op.invoke_ns as f64 / 1e9
                ));
            }
            if is_increment {
                *answered.entry(seen).or_default() += 1;
            }
        }
        for (value, times) in answered {
            if times > 1 {
                problems.push(format!(
                    "key {key}: {times} acknowledged increments all answered {value}"
                ));
            }
        }
    }
    verdict_of(problems, "counter anomalies")
}

/// Both verdicts: invalid if either is (with both reasons), else unknown
/// if either is, else valid.
fn both(a: Verdict, b: Verdict) -> Verdict {
    match (a, b) {
        (Verdict::Invalid(mut x), Verdict::Invalid(y)) => {
            x.extend(y);
            Verdict::Invalid(x)
        }
        (v @ Verdict::Invalid(_), _) | (_, v @ Verdict::Invalid(_)) => v,
        (v @ Verdict::Unknown(_), _) | (_, v @ Verdict::Unknown(_)) => v,
        (Verdict::Valid, Verdict::Valid) => Verdict::Valid,
    }
}

/// What a read of the bounded and ryw workloads must see. Each key has one
/// writer, which writes increasing values, so "at least as new" is "at
/// least as large".
#[derive(Clone, Copy, Debug)]
pub enum FreshnessRule {
    /// Everything acknowledged more than this long before the read began.
    Bounded(Duration),
    /// The reading process's own writes acknowledged before the read began.
    OwnWrites,
}

/// Checks every successful read against its key's writes: it saw a value
/// that was written (or attempted) before it ended, and no older than the
/// rule allows.
pub fn check_fresh_reads(ops: &[Op], rule: FreshnessRule) -> Verdict {
    let mut by_key: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in ops {
        by_key.entry(&op.key).or_default().push(op);
    }
    let mut problems = Vec::new();
    for (key, ops) in by_key {
        let writes: Vec<(&Op, u64)> = ops
            .iter()
            .filter_map(|o| match o.kind {
                OpKind::Write { value } => Some((*o, value)),
                _ => None,
            })
            .collect();
        for read in ops.iter().filter(|o| o.outcome == Outcome::Ok) {
            let OpKind::Read { value: Some(seen) } = read.kind else {
                continue;
            };
            let possible = seen == 0
                || writes
                    .iter()
                    .any(|(w, v)| *v == seen && w.outcome != Outcome::Fail && w.invoke_ns < read.complete_ns);
            if !possible {
                problems.push(format!(
                    "key {key}: a read saw {seen}, which no write made before the read ended"
                ));
                continue;
            }
            let floor = writes
                .iter()
                .filter(|(w, _)| w.outcome == Outcome::Ok)
                .filter(|(w, _)| match rule {
                    FreshnessRule::Bounded(bound) => {
                        (w.complete_ns as u128) + bound.as_nanos() < read.invoke_ns as u128
                    }
                    FreshnessRule::OwnWrites => w.process == read.process && w.complete_ns < read.invoke_ns,
                })
                .map(|(_, v)| *v)
                .max()
                .unwrap_or(0);
            if seen < floor {
                problems.push(format!(
                    "key {key}: a read at {:.3} s saw {seen}, older than {floor} ({rule:?})",
                    read.invoke_ns as f64 / 1e9
                ));
            }
        }
        if matches!(rule, FreshnessRule::OwnWrites) {
            problems.extend(non_monotonic_reads(key, &ops));
        }
    }
    verdict_of(problems, "stale reads")
}

/// Monotonic reads: each process's successful reads of `key`, in the order
/// it made them (one at a time), never see an older value than the one
/// before.
fn non_monotonic_reads(key: &str, ops: &[&Op]) -> Vec<String> {
    let mut last_seen: BTreeMap<usize, u64> = BTreeMap::new();
    let mut reads: Vec<&&Op> = ops.iter().filter(|o| o.outcome == Outcome::Ok).collect();
    reads.sort_by_key(|o| o.invoke_ns);
    let mut problems = Vec::new();
    for read in reads {
        let OpKind::Read { value: Some(seen) } = read.kind else {
            continue;
        };
        let before = last_seen.entry(read.process).or_insert(0);
        if seen < *before {
            problems.push(format!(
                "key {key}: process {} read {seen} at {:.3} s after reading {before}",
                read.process,
                read.invoke_ns as f64 / 1e9
            ));
        }
        *before = (*before).max(seen);
    }
    problems
}

fn first(v: &[u64]) -> &[u64] {
    &v[..v.len().min(20)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(process: usize, kind: OpKind, outcome: Outcome, invoke: u64, complete: u64) -> Op {
        Op {
            process,
            key: "k".into(),
            kind,
            outcome,
            invoke_ns: invoke,
            complete_ns: complete,
            error: None,
            version: None,
        }
    }

    fn versioned(mut op: Op, version: u64) -> Op {
        op.version = Some(version);
        op
    }

    #[test]
    fn versions_that_rise_and_overlap_are_valid() {
        let ops = vec![
            versioned(write(1, Outcome::Ok, 0, 10), 100),
            versioned(read(1, 11, 20), 100),
            // Overlapping the next write, a read may see either version.
            versioned(write(2, Outcome::Ok, 21, 40), 205),
            versioned(read(1, 22, 30), 100),
            versioned(read(2, 41, 50), 205),
            // A read of an absent key carries no version.
            op(1, OpKind::Read { value: Some(0) }, Outcome::Ok, 51, 60),
        ];
        assert_eq!(check_versions(&ops, true), Verdict::Valid);
    }

    #[test]
    fn a_version_that_goes_down_or_changes_is_invalid() {
        // After a move whose destination kept a low version base: the next
        // write gets a version below one already seen.
        let down = vec![
            versioned(write(1, Outcome::Ok, 0, 10), 900),
            versioned(read(1, 11, 20), 900),
            versioned(write(2, Outcome::Ok, 21, 30), 350),
        ];
        let Verdict::Invalid(why) = check_versions(&down, true) else {
            panic!("a version going down passed");
        };
        assert!(why[0].contains("version went down: 350"), "{why:?}");
        // A write equal to what ended before it is no rise either.
        let equal = vec![
            versioned(write(1, Outcome::Ok, 0, 10), 7),
            versioned(write(2, Outcome::Ok, 11, 20), 7),
        ];
        assert!(matches!(check_versions(&equal, true), Verdict::Invalid(_)));
        // A moved record must keep its version.
        let changed = vec![
            versioned(write(1, Outcome::Ok, 0, 10), 40),
            versioned(read(1, 11, 20), 41),
        ];
        let Verdict::Invalid(why) = check_versions(&changed, true) else {
            panic!("a changed version passed");
        };
        assert!(why[0].contains("value 1 has version 40"), "{why:?}");
        // Reads left out (bounded): a stale read is no problem.
        let stale = vec![
            versioned(write(1, Outcome::Ok, 0, 10), 40),
            versioned(write(2, Outcome::Ok, 11, 20), 50),
            versioned(read(1, 21, 30), 40),
        ];
        assert_eq!(check_versions(&stale, false), Verdict::Valid);
        assert!(matches!(check_versions(&stale, true), Verdict::Invalid(_)));
    }

    fn write(v: u64, outcome: Outcome, invoke: u64, complete: u64) -> Op {
        op(0, OpKind::Write { value: v }, outcome, invoke, complete)
    }

    fn read(v: u64, invoke: u64, complete: u64) -> Op {
        op(1, OpKind::Read { value: Some(v) }, Outcome::Ok, invoke, complete)
    }

    const BUDGET: Duration = Duration::from_secs(10);

    #[test]
    fn sequential_and_overlapping_histories_are_valid() {
        let ops = vec![
            write(1, Outcome::Ok, 0, 10),
            read(1, 20, 30),
            write(2, Outcome::Ok, 40, 60),
            read(1, 45, 50),
        ];
        assert_eq!(check_register(&ops, BUDGET), Verdict::Valid);
    }

    #[test]
    fn a_stale_read_is_invalid() {
        let ops = vec![
            write(1, Outcome::Ok, 0, 10),
            write(2, Outcome::Ok, 20, 30),
            read(1, 40, 50),
        ];
        assert!(matches!(check_register(&ops, BUDGET), Verdict::Invalid(_)));
    }

    #[test]
    fn a_read_of_a_value_nobody_wrote_is_invalid() {
        let ops = vec![write(1, Outcome::Ok, 0, 10), read(7, 20, 30)];
        assert!(matches!(check_register(&ops, BUDGET), Verdict::Invalid(_)));
    }

    #[test]
    fn an_indeterminate_write_may_land_late_but_a_failed_one_never() {
        // Write 2 timed out; a read much later may still see it...
        let late = vec![
            write(1, Outcome::Ok, 0, 10),
            write(2, Outcome::Info, 20, 30),
            read(1, 40, 50),
            read(2, 60, 70),
        ];
        assert_eq!(check_register(&late, BUDGET), Verdict::Valid);
        // ...but a failed write must never be seen.
        let failed = vec![
            write(1, Outcome::Ok, 0, 10),
            write(2, Outcome::Fail, 20, 30),
            read(2, 40, 50),
        ];
        assert!(matches!(check_register(&failed, BUDGET), Verdict::Invalid(_)));
    }

    fn cas(expected: u64, new: u64, outcome: Outcome, invoke: u64, complete: u64) -> Op {
        op(2, OpKind::Cas { expected, new }, outcome, invoke, complete)
    }

    #[test]
    fn compare_and_set_histories() {
        let valid = vec![
            write(1, Outcome::Ok, 0, 10),
            cas(1, 3, Outcome::Ok, 20, 30),
            cas(1, 4, Outcome::Fail, 40, 50),
            read(3, 60, 70),
        ];
        assert_eq!(check_register(&valid, BUDGET), Verdict::Valid);
        // Two CAS from the same value cannot both win.
        let double = vec![
            write(1, Outcome::Ok, 0, 10),
            cas(1, 3, Outcome::Ok, 20, 30),
            cas(1, 4, Outcome::Ok, 40, 50),
        ];
        assert!(matches!(check_register(&double, BUDGET), Verdict::Invalid(_)));
        // A CAS refused although the value matched is a lie.
        let refused = vec![write(1, Outcome::Ok, 0, 10), cas(1, 4, Outcome::Fail, 20, 30)];
        assert!(matches!(check_register(&refused, BUDGET), Verdict::Invalid(_)));
    }

    #[test]
    fn fresh_read_rules() {
        let w = |v, complete| op(0, OpKind::Write { value: v }, Outcome::Ok, complete - 1, complete);
        let r = |process, v, invoke| {
            op(
                process,
                OpKind::Read { value: Some(v) },
                Outcome::Ok,
                invoke,
                invoke + 1,
            )
        };
        let bound = FreshnessRule::Bounded(Duration::from_nanos(100));
        // Within the bound an older value is fine; past it, not.
        let ops = vec![w(1, 10), w(2, 20), r(1, 1, 50), r(1, 2, 150)];
        assert_eq!(check_fresh_reads(&ops, bound), Verdict::Valid);
        let stale = vec![w(1, 10), w(2, 20), r(1, 1, 150)];
        assert!(matches!(check_fresh_reads(&stale, bound), Verdict::Invalid(_)));
        // Own writes must be seen at once; another process's need not.
        let ryw = vec![w(1, 10), w(2, 20), r(1, 1, 30)];
        assert_eq!(check_fresh_reads(&ryw, FreshnessRule::OwnWrites), Verdict::Valid);
        let missed = vec![w(1, 10), w(2, 20), r(0, 1, 30)];
        assert!(matches!(
            check_fresh_reads(&missed, FreshnessRule::OwnWrites),
            Verdict::Invalid(_)
        ));
        // A session never reads back in time, even within what it may see.
        let back = vec![w(1, 10), w(2, 20), r(1, 2, 30), r(1, 1, 40)];
        assert!(matches!(
            check_fresh_reads(&back, FreshnessRule::OwnWrites),
            Verdict::Invalid(_)
        ));
        let forward = vec![w(1, 10), w(2, 20), r(1, 1, 30), r(1, 2, 40)];
        assert_eq!(check_fresh_reads(&forward, FreshnessRule::OwnWrites), Verdict::Valid);
        // A value from the future, or never written, is invalid under any rule.
        let future = vec![w(1, 10), r(1, 2, 30), w(2, 50)];
        assert!(matches!(check_fresh_reads(&future, bound), Verdict::Invalid(_)));
    }

    #[test]
    fn pair_reads_must_see_both_keys_alike_and_be_linearizable() {
        let pair = |a, b, invoke| {
            op(
                1,
                OpKind::ReadPair { a, b, by_scan: false },
                Outcome::Ok,
                invoke,
                invoke + 1,
            )
        };
        let whole = vec![write(1, Outcome::Ok, 0, 10), pair(Some(1), Some(1), 20)];
        assert_eq!(check_pairs(&whole, BUDGET), Verdict::Valid);
        let torn = vec![write(1, Outcome::Ok, 0, 10), pair(Some(1), Some(0), 20)];
        assert!(matches!(check_pairs(&torn, BUDGET), Verdict::Invalid(_)));
        let stale = vec![
            write(1, Outcome::Ok, 0, 10),
            write(2, Outcome::Ok, 20, 30),
            pair(Some(1), Some(1), 40),
        ];
        assert!(matches!(check_pairs(&stale, BUDGET), Verdict::Invalid(_)));
    }

    #[test]
    fn a_value_seen_gone_never_comes_back() {
        let put = |v, invoke, complete| op(0, OpKind::Write { value: v }, Outcome::Ok, invoke, complete);
        let get = |v, invoke| op(1, OpKind::Read { value: Some(v) }, Outcome::Ok, invoke, invoke + 5);
        let gone = |invoke| op(2, OpKind::DeleteIfPresent, Outcome::Fail, invoke, invoke + 5);
        // Expiry: seen, then absent, stays absent.
        let expired = vec![put(1, 0, 10), get(1, 20), gone(40), get(0, 60)];
        assert_eq!(check_no_resurrection(&expired), Verdict::Valid);
        // Overlapping observations may go either way.
        let overlapping = vec![put(1, 0, 10), gone(20), get(1, 22)];
        assert_eq!(check_no_resurrection(&overlapping), Verdict::Valid);
        // Hole 2: a delete-if-present finds it expired, a later read shows it.
        let back = vec![put(1, 0, 10), gone(20), get(1, 40)];
        assert!(matches!(check_no_resurrection(&back), Verdict::Invalid(_)));
        // A put-if-absent that found another value, then the old one again.
        let found = |v, invoke| {
            op(
                3,
                OpKind::IfAbsent { new: 9, found: Some(v) },
                Outcome::Fail,
                invoke,
                invoke + 5,
            )
        };
        let overwritten = vec![put(1, 0, 10), put(2, 20, 30), found(2, 40), get(1, 60)];
        assert!(matches!(check_no_resurrection(&overwritten), Verdict::Invalid(_)));
        // A value nobody wrote.
        assert!(matches!(check_no_resurrection(&[get(5, 10)]), Verdict::Invalid(_)));
    }

    #[test]
    fn fast_ack_losses_are_counted_or_judged_by_the_rule() {
        let add = |e, outcome| op(0, OpKind::Add { element: e }, outcome, 0, 1);
        let ops = vec![add(1, Outcome::Ok), add(2, Outcome::Ok)];
        let kept = BTreeSet::from([1]);
        assert_eq!(check_kept(&ops, &kept, LossRule::Counted), (Verdict::Valid, vec![2]));
        assert!(matches!(
            check_kept(&ops, &kept, LossRule::NoneLost),
            (Verdict::Invalid(_), lost) if lost == [2]
        ));
        // An element nobody added is invalid whatever the rule.
        assert!(matches!(
            check_kept(&ops, &BTreeSet::from([1, 2, 7]), LossRule::Counted),
            (Verdict::Invalid(_), lost) if lost.is_empty()
        ));
    }

    #[test]
    fn counters_catch_increments_applied_twice_and_lost() {
        let inc = |result, outcome, invoke, complete| op(0, OpKind::Increment { result }, outcome, invoke, complete);
        let get = |v, invoke| op(1, OpKind::Read { value: Some(v) }, Outcome::Ok, invoke, invoke + 5);
        // Two increments, one indeterminate: a read may see 1 or 2.
        let fine = vec![
            inc(Some(1), Outcome::Ok, 0, 10),
            inc(None, Outcome::Info, 20, 30),
            get(1, 40),
            get(2, 50),
        ];
        assert_eq!(check_counters(&fine), Verdict::Valid);
        // One increment applied twice (a retry its exactly-once record forgot).
        let twice = vec![inc(Some(1), Outcome::Ok, 0, 10), get(2, 20)];
        assert!(matches!(check_counters(&twice), Verdict::Invalid(_)));
        // An acknowledged increment lost.
        let lost = vec![
            inc(Some(1), Outcome::Ok, 0, 10),
            inc(Some(2), Outcome::Ok, 20, 30),
            get(1, 40),
        ];
        assert!(matches!(check_counters(&lost), Verdict::Invalid(_)));
        // Two acknowledged increments answered alike.
        let alike = vec![inc(Some(1), Outcome::Ok, 0, 10), inc(Some(1), Outcome::Ok, 5, 15)];
        assert!(matches!(check_counters(&alike), Verdict::Invalid(_)));
        // check_ttl sends counter keys to the counter check.
        let mut counter_key = get(2, 20);
        counter_key.key = "c".into();
        let mut first = inc(Some(1), Outcome::Ok, 0, 10);
        first.key = "c".into();
        assert!(matches!(check_ttl(&[first, counter_key]), Verdict::Invalid(_)));
    }

    #[test]
    fn set_finds_lost_and_unexpected_elements() {
        let add = |e, outcome| op(0, OpKind::Add { element: e }, outcome, 0, 1);
        let ops = vec![add(1, Outcome::Ok), add(2, Outcome::Info), add(3, Outcome::Fail)];
        assert_eq!(check_set(&ops, &BTreeSet::from([1])), Verdict::Valid);
        assert_eq!(check_set(&ops, &BTreeSet::from([1, 2])), Verdict::Valid);
        assert!(matches!(check_set(&ops, &BTreeSet::from([2])), Verdict::Invalid(_)));
        assert!(matches!(check_set(&ops, &BTreeSet::from([1, 3])), Verdict::Invalid(_)));
    }
}
