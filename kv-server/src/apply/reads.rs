//! What the state was: **the one rule conditional writes and transaction
//! reads are judged by**, at apply time, from replicated state only.
//!
//! A key's state is its stored record: live (visible at the apply clock),
//! expired, a tombstone (a delete's expired record, see
//! [`crate::keys::ValueRecord`]), or none at all. Conditions look at the
//! live record only. A transaction that read a key absent also asks that
//! nothing wrote it since its snapshot: a stored record newer than the
//! snapshot, live or not, is a write it did not see.

use crate::apply::command::Condition;
use crate::apply::staged::StagedView;
use crate::keys::ValueRecord;
use shoal_types::Version;
use std::io;

/// What a condition or a transaction read expects of a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expected<'a> {
    /// No live record (put-if-absent).
    Absent,
    /// A live record (delete-if-present).
    Present,
    /// A live record of exactly this version (put-if-version; a
    /// transaction's read of a present key).
    Version(Version),
    /// A live record with exactly these bytes (put-if-value).
    Value(&'a [u8]),
    /// No live record, and no record of any kind newer than the snapshot:
    /// a transaction's read of an absent key.
    AbsentSince(Version),
}

impl<'a> Expected<'a> {
    pub fn of_condition(condition: &'a Condition) -> Expected<'a> {
        match condition {
            Condition::Absent => Expected::Absent,
            Condition::Present => Expected::Present,
            Condition::Version(v) => Expected::Version(Version(*v)),
            Condition::Value(bytes) => Expected::Value(bytes),
        }
    }

    /// A transaction read that returned `version` (None: absent), taken at
    /// or after `snapshot`.
    pub fn of_read(version: Option<Version>, snapshot: Version) -> Expected<'static> {
        match version {
            Some(version) => Expected::Version(version),
            None => Expected::AbsentSince(snapshot),
        }
    }
}

/// The record stored under `data_key`, live or not.
pub fn stored(view: &StagedView<'_>, data_key: &[u8]) -> io::Result<Option<ValueRecord>> {
    match view.get(data_key)? {
        Some(bytes) => decode(&bytes).map(Some),
        None => Ok(None),
    }
}

pub fn decode(bytes: &[u8]) -> io::Result<ValueRecord> {
    ValueRecord::decode(bytes).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "corrupt value record"))
}

/// The stored record if it is visible at `clock_ms`.
pub fn live(stored: Option<ValueRecord>, clock_ms: u64) -> Option<ValueRecord> {
    stored.filter(|record| record.is_live_at(clock_ms))
}

/// Whether a key whose stored record is `stored` is as `expected` at the
/// apply clock `clock_ms`.
pub fn holds(expected: &Expected<'_>, stored: Option<&ValueRecord>, clock_ms: u64) -> bool {
    let live = stored.filter(|record| record.is_live_at(clock_ms));
    match (expected, live) {
        (Expected::Absent, live) => live.is_none(),
        (Expected::Present, live) => live.is_some(),
        (Expected::Version(v), Some(record)) => record.version == *v,
        (Expected::Value(bytes), Some(record)) => record.value == *bytes,
        (Expected::Version(_) | Expected::Value(_), None) => false,
        (Expected::AbsentSince(_), Some(_)) => false,
        (Expected::AbsentSince(snapshot), None) => stored.is_none_or(|record| record.version <= *snapshot),
    }
}

/// The user keys in `[start, end)` of the data range whose stored record
/// (live, expired or a tombstone) is newer than `snapshot`: writes a
/// transaction that scanned the range did not see.
pub fn written_since(view: &StagedView<'_>, start: &[u8], end: &[u8], snapshot: Version) -> io::Result<Vec<Vec<u8>>> {
    let mut written = Vec::new();
    for (key, value) in view.entries_in(start, end)? {
        if let Some(value) = value {
            if decode(&value)?.version > snapshot {
                written.push(key);
            }
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::TOMBSTONE_EXPIRY_MS;

    fn record(version: u64, expires_at_ms: u64) -> ValueRecord {
        ValueRecord {
            version: Version(version),
            expires_at_ms,
            value: b"v".to_vec(),
        }
    }

    #[test]
    fn conditions_see_only_live_records() {
        let live = record(5, 0);
        let expired = record(5, 100);
        assert!(holds(&Expected::Absent, None, 200));
        assert!(holds(&Expected::Absent, Some(&expired), 200));
        assert!(!holds(&Expected::Absent, Some(&live), 200));
        assert!(holds(&Expected::Present, Some(&expired), 50), "not expired yet at 50");
        assert!(holds(&Expected::Version(Version(5)), Some(&live), 200));
        assert!(!holds(&Expected::Version(Version(5)), Some(&expired), 200));
        assert!(holds(&Expected::Value(b"v"), Some(&live), 200));
        assert!(!holds(&Expected::Value(b"w"), Some(&live), 200));
    }

    #[test]
    fn a_key_read_absent_conflicts_with_any_write_since_the_snapshot_even_a_delete() {
        let tombstone = ValueRecord::tombstone(Version(8));
        assert_eq!(tombstone.expires_at_ms, TOMBSTONE_EXPIRY_MS);
        assert!(!tombstone.is_live_at(0), "dead even on a shard whose clock never moved");
        assert!(holds(&Expected::Absent, Some(&tombstone), 0));
        let absent_since = |v| Expected::AbsentSince(Version(v));
        assert!(holds(&absent_since(7), None, 1_000));
        assert!(
            !holds(&absent_since(7), Some(&tombstone), 1_000),
            "written and deleted after 7"
        );
        assert!(
            holds(&absent_since(8), Some(&tombstone), 1_000),
            "deleted before the snapshot"
        );
        assert!(!holds(&absent_since(9), Some(&record(3, 0)), 1_000), "present");
        assert!(
            !holds(&absent_since(7), Some(&record(8, 500)), 1_000),
            "written since, then expired"
        );
    }
}
