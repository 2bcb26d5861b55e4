//! What a move's source hands its destination, read from one view of the
//! source replica: pages of a μshard's stored records (expired ones too,
//! versions and expiry as stored), its change log since the export began,
//! its move state, and the shard's exactly-once client records. See
//! docs/moves.md.

use crate::apply::command::MovedRecord;
use crate::apply::moves::UshardState;
use crate::codec::decode;
use crate::engine::{Direction, Visit};
use crate::error::{KvError, KvResult};
use crate::keys::{self, ValueRecord, CF_DATA};
use crate::shard::view::ReplicaView;
use shoal_types::{KeyspaceId, UshardId, Version};

/// One page of records.
pub struct Page {
    pub records: Vec<MovedRecord>,
    /// More records follow the last one.
    pub more: bool,
}

/// The μshard's move state in this view.
pub fn state(view: &ReplicaView<'_>, keyspace: KeyspaceId, ushard: UshardId) -> KvResult<Option<UshardState>> {
    match view
        .raw()
        .get(CF_DATA, &keys::ushard_state_key(view.shard(), keyspace, ushard))?
    {
        Some(bytes) => Ok(Some(decode(&bytes)?)),
        None => Ok(None),
    }
}

/// Records of the μshard after user key `after` (none: from the first),
/// up to about `max_bytes`.
pub fn page(
    view: &ReplicaView<'_>,
    keyspace: KeyspaceId,
    ushard: UshardId,
    after: Option<&[u8]>,
    max_bytes: u64,
) -> KvResult<Page> {
    let (start, end) = keys::ushard_range(view.shard(), keyspace, ushard, b"", None);
    let start = match after {
        // The smallest key after `after`: itself with a zero byte added.
        Some(after) => [keys::data_key(view.shard(), keyspace, ushard, after), vec![0]].concat(),
        None => start,
    };
    let mut page = Page {
        records: Vec::new(),
        more: false,
    };
    let mut bytes = 0u64;
    view.raw()
        .scan(CF_DATA, &start, &end, Direction::Forward, &mut |key, value| {
            if bytes >= max_bytes && !page.records.is_empty() {
                page.more = true;
                return Ok(Visit::Stop);
            }
            let record = ValueRecord::decode(value)
                .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "corrupt value record"))?;
            let user_key = keys::user_key_of(key).to_vec();
            bytes += (user_key.len() + value.len()) as u64;
            page.records.push(MovedRecord {
                key: user_key,
                record: Some(record),
            });
            Ok(Visit::Continue)
        })?;
    Ok(page)
}

/// The μshard's change log after version `after`, in version order, up to
/// about `max_bytes`.
pub fn tail(
    view: &ReplicaView<'_>,
    keyspace: KeyspaceId,
    ushard: UshardId,
    after: Version,
    max_bytes: u64,
) -> KvResult<Vec<(Version, Vec<MovedRecord>)>> {
    let (start, end) = keys::move_log_range(view.shard(), keyspace, ushard, after);
    let mut changes = Vec::new();
    let mut bytes = 0u64;
    let mut failure = None;
    view.raw()
        .scan(CF_DATA, &start, &end, Direction::Forward, &mut |key, value| {
            if bytes >= max_bytes && !changes.is_empty() {
                return Ok(Visit::Stop);
            }
            bytes += value.len() as u64;
            match (keys::move_log_version(key), decode::<Vec<MovedRecord>>(value)) {
                (Some(version), Ok(records)) => changes.push((version, records)),
                (_, Err(e)) => {
                    failure = Some(KvError::from(e));
                    return Ok(Visit::Stop);
                }
                (None, _) => {
                    failure = Some(KvError::Internal("bad change-log key".into()));
                    return Ok(Visit::Stop);
                }
            }
            Ok(Visit::Continue)
        })?;
    match failure {
        Some(e) => Err(e),
        None => Ok(changes),
    }
}

/// Every exactly-once client record of the shard, as stored.
pub fn clients(view: &ReplicaView<'_>) -> KvResult<Vec<(u64, Vec<u8>)>> {
    let (start, end) = keys::dedup_range(view.shard());
    let mut records = Vec::new();
    view.raw()
        .scan(CF_DATA, &start, &end, Direction::Forward, &mut |key, value| {
            if let Some(client) = keys::client_of_dedup_key(key) {
                records.push((client, value.to_vec()));
            }
            Ok(Visit::Continue)
        })?;
    Ok(records)
}
