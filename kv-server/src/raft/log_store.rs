//! A shard's durable Raft log and vote, stored under the shard's prefix in
//! the node's engine (see [`crate::keys`]).
//!
//! Durability: entries are acknowledged to openraft (the `IOFlushed`
//! callback) only after the WAL is fsynced by the [`WalSyncer`]; votes are
//! fsynced before `save_vote` returns. Truncation and purge need no fsync:
//! openraft tolerates seeing purged or truncated entries again after a crash.

use crate::codec::{decode, encode};
use crate::engine::{Direction, SharedEngine, Visit, WriteBatch};
use crate::keys::{self, RaftMetaTag, CF_RAFT_LOG, CF_RAFT_META};
use crate::raft::acceptance::Acceptances;
use crate::raft::types::{Entry, LogId, TypeConfig, Vote};
use crate::raft::wal_syncer::WalSyncer;
use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{EntryPayload, OptionalSend};
use shoal_types::ShardId;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

#[derive(Clone)]
pub struct ShardLogStore {
    shard: ShardId,
    engine: SharedEngine,
    syncer: WalSyncer,
    /// Told of every fast-ack entry this store appends.
    acceptances: Arc<Acceptances>,
}

impl ShardLogStore {
    pub fn new(shard: ShardId, engine: SharedEngine, syncer: WalSyncer) -> ShardLogStore {
        ShardLogStore {
            shard,
            engine,
            syncer,
            acceptances: Arc::default(),
        }
    }

    /// Reports appended fast-ack entries to `acceptances`.
    pub fn with_acceptances(mut self, acceptances: Arc<Acceptances>) -> ShardLogStore {
        self.acceptances = acceptances;
        self
    }

    fn get_meta<T: serde::de::DeserializeOwned>(&self, tag: RaftMetaTag) -> io::Result<Option<T>> {
        match self.engine.get(CF_RAFT_META, &keys::raft_meta_key(self.shard, tag))? {
            Some(bytes) => Ok(Some(decode(&bytes)?)),
            None => Ok(None),
        }
    }

    fn put_meta<T: serde::Serialize>(&self, tag: RaftMetaTag, value: &T) -> io::Result<()> {
        let mut batch = WriteBatch::default();
        batch.put(CF_RAFT_META, keys::raft_meta_key(self.shard, tag), encode(value)?);
        self.engine.write(batch)
    }

    fn last_entry(&self) -> io::Result<Option<Entry>> {
        let (start, end) = keys::shard_range(self.shard);
        let mut last = None;
        self.engine
            .scan(CF_RAFT_LOG, &start, &end, Direction::Reverse, &mut |_, value| {
                last = Some(decode::<Entry>(value)?);
                Ok(Visit::Stop)
            })?;
        Ok(last)
    }
}

fn index_bounds(shard: ShardId, range: &impl RangeBounds<u64>) -> Option<([u8; 16], [u8; 16])> {
    let start = match range.start_bound() {
        Bound::Included(i) => *i,
        Bound::Excluded(i) => i.checked_add(1)?,
        Bound::Unbounded => 0,
    };
    // End is exclusive in the key space; an unbounded end is the last index.
    let end_key = match range.end_bound() {
        Bound::Included(i) => match i.checked_add(1) {
            Some(e) => keys::raft_log_key(shard, e),
            None => keys::raft_log_key(shard, u64::MAX),
        },
        Bound::Excluded(i) => keys::raft_log_key(shard, *i),
        Bound::Unbounded => keys::raft_log_key(shard, u64::MAX),
    };
    Some((keys::raft_log_key(shard, start), end_key))
}

impl RaftLogReader<TypeConfig> for ShardLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let Some((start, end)) = index_bounds(self.shard, &range) else {
            return Ok(Vec::new());
        };
        let mut entries = Vec::new();
        if start >= end {
            return Ok(entries);
        }
        self.engine
            .scan(CF_RAFT_LOG, &start, &end, Direction::Forward, &mut |key, value| {
                let entry: Entry = decode(value)?;
                if keys::parse_raft_log_key(key).map(|(_, i)| i) != Some(entry.index()) {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "log key does not match entry index",
                    ));
                }
                entries.push(entry);
                Ok(Visit::Continue)
            })?;
        Ok(entries)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        self.get_meta(RaftMetaTag::Vote)
    }
}

impl RaftLogStorage<TypeConfig> for ShardLogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let last_purged_log_id: Option<LogId> = self.get_meta(RaftMetaTag::LastPurged)?;
        let last_log_id = match self.last_entry()? {
            Some(entry) => Some(entry.log_id()),
            None => last_purged_log_id,
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        self.put_meta(RaftMetaTag::Vote, vote)?;
        self.syncer.flush().await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        // Not synced: losing it only means re-applying from the last applied index.
        self.put_meta(RaftMetaTag::Committed, &committed)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.get_meta::<Option<LogId>>(RaftMetaTag::Committed)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = WriteBatch::default();
        let mut accepted = Vec::new();
        for entry in entries {
            if let EntryPayload::Normal(command) = &entry.payload {
                if command.accept_ticket() != 0 {
                    accepted.push((command.accept_ticket(), entry.index()));
                }
            }
            batch.put(
                CF_RAFT_LOG,
                keys::raft_log_key(self.shard, entry.index()),
                encode(&entry)?,
            );
        }
        // Written (and readable) now; acknowledged once the syncer fsyncs.
        self.engine.write(batch)?;
        // A fast-ack write is acknowledged here: in the leader's log, safe
        // from a process crash (the WAL is in the OS), not yet fsynced.
        for (ticket, index) in accepted {
            self.acceptances.accepted(ticket, index);
        }
        self.syncer.flush_then(callback);
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.map(|id| id.index() + 1).unwrap_or(0);
        let (_, end) = keys::shard_range(self.shard);
        let mut batch = WriteBatch::default();
        batch.delete_range(CF_RAFT_LOG, keys::raft_log_key(self.shard, from).to_vec(), end);
        self.engine.write(batch)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        // Record the purge point first, in the same batch as the deletion, so
        // a crash never leaves a gap that get_log_state cannot explain.
        let mut batch = WriteBatch::default();
        batch.put(
            CF_RAFT_META,
            keys::raft_meta_key(self.shard, RaftMetaTag::LastPurged),
            encode(&log_id)?,
        );
        let (start, _) = keys::shard_range(self.shard);
        batch.delete_range(
            CF_RAFT_LOG,
            start,
            keys::raft_log_key(self.shard, log_id.index() + 1).to_vec(),
        );
        self.engine.write(batch)
    }
}
