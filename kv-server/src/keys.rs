//! The byte layout of everything Shoal stores in RocksDB. This module is the
//! only place that builds or parses storage keys.
//!
//! One RocksDB per node holds every shard it hosts, split by column family:
//!
//! | cf          | key                                              | value |
//! |-------------|--------------------------------------------------|-------|
//! | `raft_log`  | `shard:u64be` `index:u64be`                      | bincode `Entry` |
//! | `raft_meta` | `shard:u64be` `tag:u8`                           | bincode vote / purged id / snapshot meta |
//! | `data`      | `shard:u64be` `keyspace:u32be` `ushard:u32be` `user key` | [`ValueRecord`] |
//! | `data`      | `shard:u64be` `0xFFFF_FFFE` `tag:u8` ...         | replicated shard state: the apply clock, the version base, exactly-once records per client, each moving μshard's state and change log |
//! | `data`      | `shard:u64be` `0xFFFF_FFFF` `tag:u8`             | state-machine metadata (applied log id, membership) |
//!
//! Why this order: every shard is one contiguous range in each cf, so a
//! snapshot or a replica removal is a range operation; within a shard, every
//! micro-shard of a keyspace is contiguous, so moving a micro-shard later is
//! a range copy; big-endian integers keep numeric order equal to byte order.
//! Keyspace id `0xFFFF_FFFF` is reserved so the state-machine metadata lives in
//! the same cf as the data and is written in the same atomic batch.

use shoal_types::{KeyspaceId, ShardId, UshardId, Version};

pub const CF_RAFT_LOG: &str = "raft_log";
pub const CF_RAFT_META: &str = "raft_meta";
pub const CF_DATA: &str = "data";
pub const ALL_CFS: [&str; 3] = [CF_RAFT_LOG, CF_RAFT_META, CF_DATA];

/// Keyspace id reserved for per-shard state-machine metadata in `data`.
pub const RESERVED_KEYSPACE: u32 = u32::MAX;

/// Keyspace id reserved for shard state that the log produces and every
/// replica must hold alike: it sorts inside the user-data range, so
/// snapshots carry it and digests compare it.
pub const REPLICATED_META_KEYSPACE: u32 = shoal_types::KeyspaceId::FIRST_RESERVED.0;

/// Tags of the replicated shard state under [`REPLICATED_META_KEYSPACE`].
#[derive(Clone, Copy, Debug)]
#[repr(u8)]
pub enum ReplicatedTag {
    /// The apply clock: the largest proposal time applied (u64be ms).
    Clock = 1,
    /// `client:u64be` → that client's exactly-once record (its watermark
    /// and the results of its requests at or above it).
    Dedup = 2,
    /// The version base: a version is the entry's log index plus it
    /// (u64be; absent = 0). Raised when the shard takes in moved records.
    VersionBase = 3,
    /// `keyspace:u32be` `ushard:u32be` → the μshard's part in a move
    /// (absent: it has never moved in or out of this shard).
    UshardState = 4,
    /// `keyspace:u32be` `ushard:u32be` `version:u64be` → what the entry of
    /// that version changed in a μshard being moved out (the change log
    /// the destination tails).
    MoveLog = 5,
    /// The transaction window's floor: the oldest snapshot version a
    /// transaction may validate against (u64be; absent = 0). Raised through
    /// the log, never lowered (docs/transactions.md).
    TxnFloor = 6,
    /// The highest epoch a transaction commit was proposed in (u64be;
    /// absent = 0): a snapshot from an older epoch is refused.
    TxnEpoch = 7,
}

/// Tags of per-shard Raft metadata in `raft_meta`.
#[derive(Clone, Copy, Debug)]
#[repr(u8)]
pub enum RaftMetaTag {
    Vote = 1,
    LastPurged = 2,
    Committed = 3,
    SnapshotMeta = 4,
}

/// Tags of per-shard state-machine metadata in `data`.
#[derive(Clone, Copy, Debug)]
#[repr(u8)]
pub enum SmMetaTag {
    AppliedState = 1,
}

fn shard_prefix(shard: ShardId) -> [u8; 8] {
    shard.0.to_be_bytes()
}

/// `[start, end)` covering every key of `shard` in a shard-prefixed cf.
pub fn shard_range(shard: ShardId) -> (Vec<u8>, Vec<u8>) {
    let start = shard_prefix(shard).to_vec();
    let end = match shard.0.checked_add(1) {
        Some(next) => next.to_be_bytes().to_vec(),
        None => vec![0xFF; 9],
    };
    (start, end)
}

/// `[start, end)` of what a shard's snapshot carries in `data`: every
/// keyspace below the reserved one (user data and the replicated metadata:
/// exactly-once records, the apply clock), not the node-local state
/// machine metadata.
pub fn snapshot_range(shard: ShardId) -> (Vec<u8>, Vec<u8>) {
    let start = shard_prefix(shard).to_vec();
    let mut end = start.clone();
    end.extend_from_slice(&RESERVED_KEYSPACE.to_be_bytes());
    (start, end)
}

/// A key of `shard` without its shard prefix, the form snapshots store.
pub fn shard_relative(key: &[u8]) -> &[u8] {
    &key[SHARD_PREFIX_LEN.min(key.len())..]
}

/// The key of `shard` whose shard-relative form is `relative`.
pub fn from_shard_relative(shard: ShardId, relative: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(SHARD_PREFIX_LEN + relative.len());
    key.extend_from_slice(&shard_prefix(shard));
    key.extend_from_slice(relative);
    key
}

/// Length of the shard prefix of every key of a shard-prefixed cf.
const SHARD_PREFIX_LEN: usize = 8;

/// The shard a key of any shard-prefixed cf belongs to.
pub fn shard_of_key(key: &[u8]) -> Option<ShardId> {
    Some(ShardId(u64::from_be_bytes(
        key.get(..SHARD_PREFIX_LEN)?.try_into().ok()?,
    )))
}

pub fn raft_log_key(shard: ShardId, index: u64) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&shard_prefix(shard));
    key[8..].copy_from_slice(&index.to_be_bytes());
    key
}

/// The log index of a `raft_log` key, or `None` if the key is not one.
pub fn parse_raft_log_key(key: &[u8]) -> Option<(ShardId, u64)> {
    if key.len() != 16 {
        return None;
    }
    let shard = u64::from_be_bytes(key[..8].try_into().ok()?);
    let index = u64::from_be_bytes(key[8..].try_into().ok()?);
    Some((ShardId(shard), index))
}

pub fn raft_meta_key(shard: ShardId, tag: RaftMetaTag) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[..8].copy_from_slice(&shard_prefix(shard));
    key[8] = tag as u8;
    key
}

pub fn sm_meta_key(shard: ShardId, tag: SmMetaTag) -> Vec<u8> {
    let mut key = Vec::with_capacity(13);
    key.extend_from_slice(&shard_prefix(shard));
    key.extend_from_slice(&RESERVED_KEYSPACE.to_be_bytes());
    key.push(tag as u8);
    key
}

fn replicated_key(shard: ShardId, tag: ReplicatedTag) -> Vec<u8> {
    let mut key = Vec::with_capacity(29);
    key.extend_from_slice(&shard_prefix(shard));
    key.extend_from_slice(&REPLICATED_META_KEYSPACE.to_be_bytes());
    key.push(tag as u8);
    key
}

/// Where a shard's apply clock is kept.
pub fn clock_key(shard: ShardId) -> Vec<u8> {
    replicated_key(shard, ReplicatedTag::Clock)
}

/// The stored form of a replicated counter: the apply clock (ms) or the
/// version base (u64be).
pub fn encode_u64(value: u64) -> Vec<u8> {
    value.to_be_bytes().to_vec()
}

/// A replicated counter as stored; unreadable bytes count as 0 (not set).
pub fn decode_u64(bytes: &[u8]) -> u64 {
    bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0)
}

/// Where a shard's transaction window floor is kept.
pub fn txn_floor_key(shard: ShardId) -> Vec<u8> {
    replicated_key(shard, ReplicatedTag::TxnFloor)
}

/// Where the highest epoch a shard's transactions were proposed in is kept.
pub fn txn_epoch_key(shard: ShardId) -> Vec<u8> {
    replicated_key(shard, ReplicatedTag::TxnEpoch)
}

/// Where a shard's version base is kept.
pub fn version_base_key(shard: ShardId) -> Vec<u8> {
    replicated_key(shard, ReplicatedTag::VersionBase)
}

fn replicated_ushard_key(shard: ShardId, tag: ReplicatedTag, keyspace: KeyspaceId, ushard: UshardId) -> Vec<u8> {
    let mut key = replicated_key(shard, tag);
    key.extend_from_slice(&keyspace.0.to_be_bytes());
    key.extend_from_slice(&ushard.0.to_be_bytes());
    key
}

/// Where a μshard's part in a move is kept.
pub fn ushard_state_key(shard: ShardId, keyspace: KeyspaceId, ushard: UshardId) -> Vec<u8> {
    replicated_ushard_key(shard, ReplicatedTag::UshardState, keyspace, ushard)
}

/// `[start, end)` of every μshard state of a shard.
pub fn ushard_state_range(shard: ShardId) -> (Vec<u8>, Vec<u8>) {
    tag_range(shard, ReplicatedTag::UshardState)
}

/// The keyspace and μshard of a key in [`ushard_state_range`].
pub fn parse_ushard_state_key(key: &[u8]) -> Option<(KeyspaceId, UshardId)> {
    let rest = key.get(SHARD_PREFIX_LEN + 5..)?;
    let keyspace = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
    let ushard = u32::from_be_bytes(rest.get(4..8)?.try_into().ok()?);
    Some((KeyspaceId(keyspace), UshardId(ushard)))
}

/// Where the change a log entry of `version` made to a moving μshard is kept.
pub fn move_log_key(shard: ShardId, keyspace: KeyspaceId, ushard: UshardId, version: Version) -> Vec<u8> {
    let mut key = replicated_ushard_key(shard, ReplicatedTag::MoveLog, keyspace, ushard);
    key.extend_from_slice(&version.0.to_be_bytes());
    key
}

/// `[start, end)` of a moving μshard's change log after `after` (exclusive).
pub fn move_log_range(shard: ShardId, keyspace: KeyspaceId, ushard: UshardId, after: Version) -> (Vec<u8>, Vec<u8>) {
    let prefix = replicated_ushard_key(shard, ReplicatedTag::MoveLog, keyspace, ushard);
    let start = move_log_key(shard, keyspace, ushard, Version(after.0.saturating_add(1)));
    let end = prefix_successor(&prefix).unwrap_or_else(|| vec![0xFF; prefix.len() + 1]);
    (start, end)
}

/// The version of a key in a [`move_log_range`].
pub fn move_log_version(key: &[u8]) -> Option<Version> {
    let tail = key.len().checked_sub(8)?;
    Some(Version(u64::from_be_bytes(key.get(tail..)?.try_into().ok()?)))
}

fn tag_range(shard: ShardId, tag: ReplicatedTag) -> (Vec<u8>, Vec<u8>) {
    let start = replicated_key(shard, tag);
    let mut end = start.clone();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    (start, end)
}

/// Where a client's exactly-once record is kept (one key per client, so
/// forgetting answered requests is an overwrite, never a range delete).
pub fn dedup_key(shard: ShardId, client: u64) -> Vec<u8> {
    let mut key = replicated_key(shard, ReplicatedTag::Dedup);
    key.extend_from_slice(&client.to_be_bytes());
    key
}

/// `[start, end)` of every client's exactly-once record of a shard.
pub fn dedup_range(shard: ShardId) -> (Vec<u8>, Vec<u8>) {
    tag_range(shard, ReplicatedTag::Dedup)
}

/// The client id of a key in [`dedup_range`].
pub fn client_of_dedup_key(key: &[u8]) -> Option<u64> {
    let tail = key.len().checked_sub(8)?;
    Some(u64::from_be_bytes(key.get(tail..)?.try_into().ok()?))
}

/// The shard and keyspace id of a `data` key, when it has both.
pub fn shard_and_keyspace_of(key: &[u8]) -> Option<(ShardId, u32)> {
    let shard = shard_of_key(key)?;
    let keyspace = u32::from_be_bytes(key.get(SHARD_PREFIX_LEN..SHARD_PREFIX_LEN + 4)?.try_into().ok()?);
    Some((shard, keyspace))
}

/// Prefix of every data key of one micro-shard of a keyspace in a shard.
pub fn ushard_prefix(shard: ShardId, keyspace: KeyspaceId, ushard: UshardId) -> Vec<u8> {
    let mut key = Vec::with_capacity(16);
    key.extend_from_slice(&shard_prefix(shard));
    key.extend_from_slice(&keyspace.0.to_be_bytes());
    key.extend_from_slice(&ushard.0.to_be_bytes());
    key
}

pub fn data_key(shard: ShardId, keyspace: KeyspaceId, ushard: UshardId, user_key: &[u8]) -> Vec<u8> {
    let mut key = ushard_prefix(shard, keyspace, ushard);
    key.extend_from_slice(user_key);
    key
}

/// Length of the prefix that [`ushard_prefix`] builds.
pub const USHARD_PREFIX_LEN: usize = 16;

/// The user key inside a data key that starts with `ushard_prefix`.
pub fn user_key_of(data_key: &[u8]) -> &[u8] {
    &data_key[USHARD_PREFIX_LEN.min(data_key.len())..]
}

/// `[start, end)` of the data keys of one micro-shard whose user keys lie
/// in `[lower, upper)`; no `upper`: to the micro-shard's end.
pub fn ushard_range(
    shard: ShardId,
    keyspace: KeyspaceId,
    ushard: UshardId,
    lower: &[u8],
    upper: Option<&[u8]>,
) -> (Vec<u8>, Vec<u8>) {
    let prefix = ushard_prefix(shard, keyspace, ushard);
    let under = |user_key: &[u8]| [prefix.as_slice(), user_key].concat();
    let start = under(lower);
    let end = match upper {
        Some(upper) => under(upper),
        None => prefix_successor(&prefix).unwrap_or_else(|| vec![0xFF; prefix.len() + 1]),
    };
    (start, end)
}

/// The smallest byte string greater than every string starting with `prefix`,
/// or `None` when no such string exists (prefix is all 0xFF).
pub fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut out = prefix.to_vec();
    while let Some(last) = out.pop() {
        if last != 0xFF {
            out.push(last + 1);
            return Some(out);
        }
    }
    None
}

/// A stored value: its version, its expiry and the user's bytes.
///
/// Layout: `version:u64be` `expires_at_ms:u64be` (0 = never) `value`.
/// A record whose expiry has passed is invisible (see [`ValueRecord::is_live_at`]).
///
/// **A delete leaves a tombstone**: a record that expired at the dawn of
/// time ([`TOMBSTONE_EXPIRY_MS`]), invisible to every read like any expired
/// record, but still carrying the delete's version, so a transaction that
/// read the key absent learns someone wrote it since (docs/transactions.md).
/// Compaction drops tombstones and expired records only once they are older
/// than the shard's transaction window (see [`crate::ttl`]).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ValueRecord {
    pub version: Version,
    pub expires_at_ms: u64,
    pub value: Vec<u8>,
}

const VALUE_HEADER_LEN: usize = 16;

/// The expiry a tombstone carries: expired for every clock.
pub const TOMBSTONE_EXPIRY_MS: u64 = 1;

impl ValueRecord {
    /// What a delete at `version` leaves behind.
    pub fn tombstone(version: Version) -> ValueRecord {
        ValueRecord {
            version,
            expires_at_ms: TOMBSTONE_EXPIRY_MS,
            value: Vec::new(),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(VALUE_HEADER_LEN + self.value.len());
        out.extend_from_slice(&self.version.0.to_be_bytes());
        out.extend_from_slice(&self.expires_at_ms.to_be_bytes());
        out.extend_from_slice(&self.value);
        out
    }

    /// Whether the record is still visible at `now_ms` (wall-clock ms). A
    /// tombstone never is, whatever the clock (a shard's apply clock is 0
    /// until its first timed entry).
    pub fn is_live_at(&self, now_ms: u64) -> bool {
        match self.expires_at_ms {
            0 => true,
            TOMBSTONE_EXPIRY_MS => false,
            expires => now_ms < expires,
        }
    }

    /// The version field of an encoded record, without copying the value.
    pub fn version_of(bytes: &[u8]) -> Option<u64> {
        Some(u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?))
    }

    /// The expiry field of an encoded record, without copying the value.
    pub fn expires_at_of(bytes: &[u8]) -> Option<u64> {
        Some(u64::from_be_bytes(bytes.get(8..16)?.try_into().ok()?))
    }

    /// Parses a stored record; `None` means the bytes are corrupt.
    pub fn decode(bytes: &[u8]) -> Option<ValueRecord> {
        if bytes.len() < VALUE_HEADER_LEN {
            return None;
        }
        Some(ValueRecord {
            version: Version(u64::from_be_bytes(bytes[..8].try_into().ok()?)),
            expires_at_ms: u64::from_be_bytes(bytes[8..16].try_into().ok()?),
            value: bytes[VALUE_HEADER_LEN..].to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_keys_round_trip_and_ranges_hold_what_they_name() {
        let shard = ShardId(7);
        let key = data_key(shard, KeyspaceId(1), UshardId(3), b"k");
        assert_eq!(from_shard_relative(shard, shard_relative(&key)), key);
        let (start, end) = snapshot_range(shard);
        assert!(start <= key && key < end);
        assert!(
            sm_meta_key(shard, SmMetaTag::AppliedState) >= end,
            "node-local metadata stays out"
        );
        assert!(dedup_key(shard, 9) < end, "exactly-once records travel with the data");
        assert_eq!(client_of_dedup_key(&dedup_key(shard, 9)), Some(9));
        let state = ushard_state_key(shard, KeyspaceId(2), UshardId(3));
        assert!(state < end, "move states travel with the data");
        assert_eq!(parse_ushard_state_key(&state), Some((KeyspaceId(2), UshardId(3))));
        let (lo, hi) = ushard_state_range(shard);
        assert!(lo <= state && state < hi);
        let logged = move_log_key(shard, KeyspaceId(2), UshardId(3), Version(10));
        assert!(logged < end);
        assert_eq!(move_log_version(&logged), Some(Version(10)));
        let (after_9, log_end) = move_log_range(shard, KeyspaceId(2), UshardId(3), Version(9));
        assert!(after_9 <= logged && logged < log_end);
        let (after_10, _) = move_log_range(shard, KeyspaceId(2), UshardId(3), Version(10));
        assert!(logged < after_10, "after is exclusive");
        assert!(move_log_key(shard, KeyspaceId(2), UshardId(4), Version(0)) >= log_end);
        let (lo, hi) = ushard_range(shard, KeyspaceId(1), UshardId(3), b"b", Some(b"d"));
        assert!(lo <= data_key(shard, KeyspaceId(1), UshardId(3), b"c"));
        assert!(data_key(shard, KeyspaceId(1), UshardId(3), b"c") < hi);
        assert!(data_key(shard, KeyspaceId(1), UshardId(3), b"d") >= hi);
        let (_, to_end) = ushard_range(shard, KeyspaceId(1), UshardId(3), b"", None);
        assert!(data_key(shard, KeyspaceId(1), UshardId(3), &[0xFF; 40]) < to_end);
        assert!(data_key(shard, KeyspaceId(1), UshardId(4), b"") >= to_end);
    }

    #[test]
    fn log_keys_sort_by_shard_then_index() {
        let a = raft_log_key(ShardId(1), 300);
        let b = raft_log_key(ShardId(1), 1000);
        let c = raft_log_key(ShardId(2), 1);
        assert!(a < b && b < c);
        assert_eq!(parse_raft_log_key(&b), Some((ShardId(1), 1000)));
    }

    #[test]
    fn shard_range_covers_exactly_one_shard() {
        let (start, end) = shard_range(ShardId(7));
        let inside = data_key(ShardId(7), KeyspaceId(u32::MAX), UshardId(u32::MAX), &[0xFF; 10]);
        let next = data_key(ShardId(8), KeyspaceId(0), UshardId(0), b"");
        assert!(start.as_slice() <= inside.as_slice() && inside < end);
        assert!(next >= end);
    }

    #[test]
    fn sm_meta_sorts_after_all_user_data_of_the_shard() {
        let meta = sm_meta_key(ShardId(3), SmMetaTag::AppliedState);
        let data = data_key(ShardId(3), KeyspaceId(u32::MAX - 1), UshardId(u32::MAX), &[0xFF; 8]);
        assert!(data < meta);
    }

    #[test]
    fn value_record_round_trips() {
        let record = ValueRecord {
            version: Version(42),
            expires_at_ms: 0,
            value: b"hello".to_vec(),
        };
        assert_eq!(ValueRecord::decode(&record.encode()), Some(record));
        assert_eq!(ValueRecord::decode(b"short"), None);
    }

    #[test]
    fn prefix_successor_handles_carry() {
        assert_eq!(prefix_successor(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_successor(&[0x01, 0xFF]), Some(vec![0x02]));
        assert_eq!(prefix_successor(&[0xFF, 0xFF]), None);
    }
}
