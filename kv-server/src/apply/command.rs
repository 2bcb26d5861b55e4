//! The replicated command format: what one entry of a shard's log asks
//! for (writes with conditions, counters, TTLs and exactly-once ids; clock
//! ticks; membership-free), and what applying it answered. Changing it
//! changes the log format: every variant stays decodable.

use crate::keys::ValueRecord;
use serde::{Deserialize, Serialize};
use shoal_types::{KeyspaceId, ShardId, UshardId, Version};
use std::fmt;

/// One mutation inside a [`Command::Write`], the log format before
/// conditions existed. Still decoded: logs and snapshots may hold it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteOp {
    Put {
        ushard: UshardId,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        ushard: UshardId,
        key: Vec<u8>,
    },
}

/// What the current state of a key must be for a write to apply. An
/// expired key counts as absent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Condition {
    Absent,
    Present,
    Version(u64),
    Value(Vec<u8>),
}

/// One mutation inside a [`Command::Mutate`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MutateOp {
    Put {
        ushard: UshardId,
        key: Vec<u8>,
        value: Vec<u8>,
        /// Absolute wall-clock expiry (ms), 0 = never; computed by the
        /// proposer so every replica stores the same record.
        expires_at_ms: u64,
        condition: Option<Condition>,
    },
    Delete {
        ushard: UshardId,
        key: Vec<u8>,
        condition: Option<Condition>,
    },
    /// Adds `delta` to a decimal i64 value (missing = 0); keeps the key's expiry.
    Increment { ushard: UshardId, key: Vec<u8>, delta: i64 },
}

impl Command {
    /// Whether the command carries its proposer's wall clock (which moves
    /// the shard's apply clock).
    pub fn is_timed(&self) -> bool {
        matches!(
            self,
            Command::Mutate { .. } | Command::Txn { .. } | Command::ForgetIdleClients { .. } | Command::Tick { .. }
        )
    }

    /// The fast-ack ticket this entry carries on its leader (0: none).
    pub fn accept_ticket(&self) -> u64 {
        match self {
            Command::Mutate { accept_ticket, .. } => *accept_ticket,
            _ => 0,
        }
    }
}

impl MutateOp {
    pub fn ushard(&self) -> UshardId {
        match self {
            MutateOp::Put { ushard, .. } | MutateOp::Delete { ushard, .. } | MutateOp::Increment { ushard, .. } => {
                *ushard
            }
        }
    }

    pub fn condition(&self) -> Option<&Condition> {
        match self {
            MutateOp::Put { condition, .. } | MutateOp::Delete { condition, .. } => condition.as_ref(),
            MutateOp::Increment { .. } => None,
        }
    }
}

/// One record of a μshard copied from the shard it moves out of: the
/// stored record as the source holds it, version and expiry unchanged, or
/// `None` when the source no longer holds the key (deleted since an
/// earlier copy of it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MovedRecord {
    pub key: Vec<u8>,
    pub record: Option<ValueRecord>,
}

/// The steps of a μshard move, in the order they happen; which shard each
/// is proposed on and what it requires is [`crate::apply::moves`]'s.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MoveStep {
    /// Source: start logging every change to the μshard for `to`.
    BeginExport { to: ShardId },
    /// Source: refuse writes to the μshard from here on (`Moving`); the
    /// change log is complete at this entry's version.
    Freeze,
    /// Source, once the destination holds everything up to the freeze and
    /// before it activates: stop serving the μshard (reads too), answering
    /// `WrongShard` naming the destination.
    Release,
    /// Source, when a move is abandoned (the destination abandoned first):
    /// serve the μshard again, drop its change log.
    AbortExport,
    /// Source, a grace period after the activation: delete the moved
    /// records and the change log.
    DropData,
    /// Destination: start taking the μshard in from `from`, afresh (not
    /// served; what an earlier attempt took in is dropped).
    BeginIngest { from: ShardId },
    /// Destination: store records as the source held them at version
    /// `as_of` of the source, each keeping its version; raises the version
    /// base above `as_of` (docs/consistency.md, "versions across moves").
    Ingest { records: Vec<MovedRecord>, as_of: Version },
    /// Destination: serve the μshard from here on. `as_of` is the source's
    /// release version, the last at which the source served the μshard,
    /// reads included (the base is raised above it); `clients` are the
    /// source's exactly-once records at the freeze, merged into ours so a
    /// retry of a request the source applied gets its first answer here.
    Activate {
        as_of: Version,
        clients: Vec<(u64, Vec<u8>)>,
    },
    /// Destination, when a move is abandoned before activation: delete what
    /// was taken in and refuse a late activation of this move; `from`
    /// keeps the μshard.
    Abandon { from: ShardId },
}

impl MoveStep {
    pub fn name(&self) -> &'static str {
        match self {
            MoveStep::BeginExport { .. } => "begin-export",
            MoveStep::Freeze => "freeze",
            MoveStep::Release => "release",
            MoveStep::AbortExport => "abort-export",
            MoveStep::DropData => "drop-data",
            MoveStep::BeginIngest { .. } => "begin-ingest",
            MoveStep::Ingest { .. } => "ingest",
            MoveStep::Activate { .. } => "activate",
            MoveStep::Abandon { .. } => "abandon",
        }
    }
}

/// One read of a transaction: the key and the version the read returned
/// (None: absent). See [`crate::apply::reads::Expected::of_read`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnRead {
    pub ushard: UshardId,
    pub key: Vec<u8>,
    pub version: Option<Version>,
}

/// A range of one μshard a transaction scanned: user keys in
/// `[start, end)`, `end` None = to the end of the μshard.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnRange {
    pub ushard: UshardId,
    pub start: Vec<u8>,
    pub end: Option<Vec<u8>>,
}

/// Where a transaction's reads were taken: every read was served at
/// `version` of the shard or later, in `epoch`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnSnapshot {
    pub version: Version,
    pub epoch: u64,
}

/// Names a client request so that its retries apply once (exactly-once).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestId {
    pub client: u64,
    pub seq: u64,
    /// Every seq of `client` below this one has been answered: the shard
    /// forgets their results.
    pub first_incomplete: u64,
}

/// What a shard's Raft log carries. Validated before it is proposed, so
/// applying it cannot fail for reasons of input (a failed condition or a
/// non-counter value is an outcome, decided alike on every replica).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Applies every op atomically, all stamped with the entry's log index.
    /// Only decoded now; new writes are [`Command::Mutate`].
    Write { keyspace: KeyspaceId, ops: Vec<WriteOp> },
    /// Checks every op's condition against the state before the command;
    /// if all hold, applies every op atomically, stamped with the entry's
    /// log index. `now_ms` is the proposer's wall clock: the apply clock
    /// (which judges expiry) is the largest `now_ms` applied so far, so
    /// every replica decides expiry alike.
    Mutate {
        keyspace: KeyspaceId,
        ops: Vec<MutateOp>,
        now_ms: u64,
        request: Option<RequestId>,
        /// Leader-local, never encoded (followers and the stored log see
        /// 0): a fast-ack proposal's ticket, reported by the leader's log
        /// store when it appends the entry (see [`crate::raft::acceptance`]).
        #[serde(skip)]
        accept_ticket: u64,
    },
    /// Forgets the exactly-once record of every client no request touched
    /// for `idle_ms` on the apply clock (advanced to `now_ms` first).
    ForgetIdleClients { idle_ms: u64, now_ms: u64 },
    /// Advances the apply clock to `now_ms` and changes nothing else: the
    /// leader brings the clock up to its own before a strong read that the
    /// clock's lag would change, and on a shard no write has stamped for a
    /// while (see [`crate::shard::view`], "one clock judges expiry").
    Tick { now_ms: u64 },
    /// One step of moving a μshard in or out of this shard (see
    /// [`crate::apply::moves`]); `move_id` is the shard manager's.
    Move {
        keyspace: KeyspaceId,
        ushard: UshardId,
        move_id: u64,
        step: MoveStep,
    },
    /// Commits an optimistic transaction (see [`crate::apply::txn`]): if
    /// its snapshot is inside the window and its epoch current, every read
    /// still holds and no range was written since the snapshot, applies
    /// every op atomically; otherwise writes nothing. `snapshot` is None
    /// when the transaction read nothing. `proposed_in` is the epoch of
    /// the shard on the node that proposed it.
    Txn {
        keyspace: KeyspaceId,
        snapshot: Option<TxnSnapshot>,
        reads: Vec<TxnRead>,
        ranges: Vec<TxnRange>,
        ops: Vec<MutateOp>,
        now_ms: u64,
        request: Option<RequestId>,
        proposed_in: u64,
    },
    /// Raises the transaction window's floor: snapshots older than it are
    /// refused, and compaction may drop tombstones below it.
    AdvanceTxnFloor { floor: Version },
}

// Display is what openraft logs: never print user keys or values.
impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Write { keyspace, ops } => {
                write!(f, "Write(keyspace={keyspace}, ops={})", ops.len())
            }
            Command::Mutate {
                keyspace, ops, request, ..
            } => {
                write!(f, "Mutate(keyspace={keyspace}, ops={}, request={request:?})", ops.len())
            }
            Command::ForgetIdleClients { idle_ms, .. } => write!(f, "ForgetIdleClients(idle_ms={idle_ms})"),
            Command::Tick { .. } => write!(f, "Tick"),
            Command::Move {
                keyspace,
                ushard,
                move_id,
                step,
            } => write!(
                f,
                "Move(keyspace={keyspace}, ushard={ushard}, move={move_id}, {})",
                step.name()
            ),
            Command::Txn {
                keyspace,
                reads,
                ranges,
                ops,
                request,
                ..
            } => write!(
                f,
                "Txn(keyspace={keyspace}, reads={}, ranges={}, ops={}, request={request:?})",
                reads.len(),
                ranges.len(),
                ops.len()
            ),
            Command::AdvanceTxnFloor { floor } => write!(f, "AdvanceTxnFloor({floor})"),
        }
    }
}

/// How an applied command turned out.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Every op was applied.
    #[default]
    Applied,
    /// Op `op`'s condition did not hold; nothing was written. `current` is
    /// that key's live record (None: absent).
    ConditionFailed { op: u32, current: Option<ValueRecord> },
    /// The increment was applied; the counter's new value.
    Counter(i64),
    /// The increment was refused: the value is not a decimal i64, or the sum
    /// overflows. Nothing was written.
    NotACounter(String),
    /// The request's seq is below its client's watermark and its result is
    /// forgotten: a late duplicate of a request the client gave up on. Not
    /// applied (again); its first attempt's outcome is unknown.
    Expired,
    /// A μshard of the write is frozen for a move (or not yet taken in):
    /// nothing was written; retry shortly (the map will name its owner).
    Moving { ushard: UshardId },
    /// A μshard of the write has moved to `owner`: nothing was written.
    WrongShard { ushard: UshardId, owner: ShardId },
    /// A move step that does not fit the μshard's state here (another
    /// move, an abandoned one, a step out of order): nothing changed.
    MoveRefused(String),
    /// A transaction's reads no longer hold: these keys changed since it
    /// read them. Nothing was written.
    TxnConflict { keys: Vec<(UshardId, Vec<u8>)> },
    /// A transaction's snapshot is below the window's floor. Nothing was
    /// written.
    TxnTooOld { snapshot: Version, floor: Version },
    /// A transaction's snapshot was taken in an epoch older than one a
    /// transaction was since proposed in. Nothing was written.
    EpochChanged { snapshot: u64, current: u64 },
}

/// Result of applying a [`Command`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandResult {
    pub version: Version,
    pub outcome: Outcome,
}
