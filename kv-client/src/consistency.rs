//! What a request asks for beyond its key: how fresh a read must be, and
//! how a write is conditioned, timed out and acknowledged
//! (docs/consistency.md).

use std::time::Duration;

/// How fresh a read must be.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReadConsistency {
    /// Linearizable: served by the primary (the default).
    #[default]
    Strong,
    /// Never older than this: any replica that can prove it, preferring the
    /// client's region.
    Bounded(Duration),
    /// Sees every write up to this version of the shard (read-your-writes
    /// with an explicit token; [`crate::Session`] tracks tokens for you).
    AtLeast(u64),
}

impl ReadConsistency {
    /// Whether only the primary may answer.
    pub fn needs_primary(&self) -> bool {
        matches!(self, ReadConsistency::Strong)
    }
}

/// What the current state of a key must be for a write to apply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Condition {
    /// The key does not exist (put-if-absent).
    Absent,
    /// The key exists (delete-if-present).
    Present,
    /// The key's version is this one (put/delete-if-version).
    Version(u64),
    /// The key's value is these bytes (put-if-value).
    Value(Vec<u8>),
}

/// Options of a put; `Default` is an unconditional quorum write forever.
#[derive(Clone, Debug, Default)]
pub struct PutOptions {
    pub condition: Option<Condition>,
    /// The key disappears this long after the write.
    pub ttl: Option<Duration>,
    /// Acknowledged once the primary accepted it, before a quorum has it:
    /// lost if the primary dies first. Not with a condition.
    pub fast_ack: bool,
}
