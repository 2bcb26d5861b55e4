//! What happened during a run: every client operation from invocation to
//! completion, and every nemesis action, with times. Written as JSON lines
//! so a run can be checked again or read by a person.

use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// How an operation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Acknowledged: it took effect (a read: this is what it saw).
    Ok,
    /// Definitely did not take effect.
    Fail,
    /// Unknown: it may or may not have taken effect (timeouts, cut
    /// connections, leadership lost after proposing). Never a failure.
    Info,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "f")]
pub enum OpKind {
    /// A strong read; `value` is what it returned (0: no value).
    Read {
        value: Option<u64>,
    },
    Write {
        value: u64,
    },
    /// Adding an element to the set (a key of its own).
    Add {
        element: u64,
    },
    /// Compare-and-set: write `new` if the key holds `expected`. `Ok`: it
    /// held and `new` was written; `Fail`: it did not hold (nothing written).
    Cas {
        expected: u64,
        new: u64,
    },
    /// Put-if-absent (ttl workload): `Ok` it was absent and `new` was
    /// written; `Fail` with no error it held `found` (0: an unparsable
    /// value never appears; see the workload).
    IfAbsent {
        new: u64,
        found: Option<u64>,
    },
    /// Delete-if-present (ttl workload): `Ok` it was there and is gone;
    /// `Fail` with no error it was absent.
    DeleteIfPresent,
    /// A strong read of both keys of a pair (pairs workload), by multi-get
    /// or by scan; each value as in [`OpKind::Read`].
    ReadPair {
        a: Option<u64>,
        b: Option<u64>,
        by_scan: bool,
    },
    /// Adding one to a counter (ttl workload); `result` is the counter's
    /// value the increment answered with (`None` when it did not answer).
    Increment {
        result: Option<u64>,
    },
    /// A bank transfer (bank workload), one transaction: `amount` from
    /// account `from` to account `to`.
    Transfer {
        from: u32,
        to: u32,
        amount: i64,
    },
    /// A read-only transaction reading every account (bank workload); the
    /// balances in account order when it committed.
    BankRead {
        balances: Option<Vec<i64>>,
    },
    /// A transaction of the list-append workload: its micro-operations in
    /// order, each read with the list it saw (when it committed).
    Txn {
        mops: Vec<Mop>,
    },
}

/// One micro-operation of a list-append transaction, on key `key` of its
/// group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "m")]
pub enum Mop {
    /// Appends the run-unique `value` to the key's list.
    Append { key: u32, value: u64 },
    /// Reads the key's list (None: the transaction did not commit).
    Read { key: u32, list: Option<Vec<u64>> },
}

/// What one operation did, before its times are known: the key, what was
/// done, how it ended, the error, and the version the answer carried (a
/// read's value's, a write's ack's, a commit's), when it had one.
pub type Step = (String, OpKind, Outcome, Option<String>, Option<u64>);

/// One client operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    pub process: usize,
    pub key: String,
    #[serde(flatten)]
    pub kind: OpKind,
    pub outcome: Outcome,
    /// Nanoseconds since the run started.
    pub invoke_ns: u64,
    pub complete_ns: u64,
    /// The error, when there was one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
    /// The version the answer carried: a read's value's, an acknowledged
    /// write's (none for a fast-ack write or an absent key).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub version: Option<u64>,
}

/// One nemesis action.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NemesisEvent {
    pub at_ns: u64,
    pub action: String,
}

/// Collects a run's history from many tasks.
#[derive(Clone)]
pub struct Recorder {
    start: Instant,
    ops: Arc<Mutex<Vec<Op>>>,
    nemesis: Arc<Mutex<Vec<NemesisEvent>>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            start: Instant::now(),
            ops: Arc::default(),
            nemesis: Arc::default(),
        }
    }
}

impl Recorder {
    /// Nanoseconds since the run started.
    pub fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    pub fn record(&self, op: Op) {
        self.ops.lock().unwrap_or_else(|p| p.into_inner()).push(op);
    }

    pub fn nemesis(&self, action: impl Into<String>) {
        let event = NemesisEvent {
            at_ns: self.now(),
            action: action.into(),
        };
        println!("[{:>7.1}s] nemesis: {}", event.at_ns as f64 / 1e9, event.action);
        self.nemesis.lock().unwrap_or_else(|p| p.into_inner()).push(event);
    }

    pub fn ops(&self) -> Vec<Op> {
        self.ops.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn nemesis_events(&self) -> Vec<NemesisEvent> {
        self.nemesis.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Writes `history.jsonl`: operations, then nemesis events, in time order.
    pub fn write(&self, path: &std::path::Path) -> anyhow::Result<()> {
        use std::io::Write;
        let mut ops = self.ops();
        ops.sort_by_key(|o| o.invoke_ns);
        let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
        for op in ops {
            writeln!(out, "{}", serde_json::to_string(&op)?)?;
        }
        for event in self.nemesis_events() {
            writeln!(
                out,
                "{}",
                serde_json::json!({"nemesis": event.action, "at_ns": event.at_ns})
            )?;
        }
        out.flush()?;
        Ok(())
    }
}

/// Operation counts by outcome.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub ok: usize,
    pub fail: usize,
    pub info: usize,
}

impl Counts {
    pub fn of(ops: &[Op]) -> Counts {
        let mut counts = Counts::default();
        for op in ops {
            match op.outcome {
                Outcome::Ok => counts.ok += 1,
                Outcome::Fail => counts.fail += 1,
                Outcome::Info => counts.info += 1,
            }
        }
        counts
    }
}

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ok {} / failed {} / indeterminate {}", self.ok, self.fail, self.info)
    }
}
