//! A shard's state machine: applies committed commands to the shard's data
//! range, builds snapshots from a frozen engine view, installs snapshots.
//!
//! **Invariant: the applied log id and the data it produced are written in one
//! atomic batch**, so after a crash the state machine is exactly "everything
//! up to applied" and openraft re-applies the rest from the log — nothing
//! twice, nothing lost.

use crate::engine::{SharedEngine, WriteBatch};
use crate::keys::{self, RaftMetaTag, SmMetaTag, ValueRecord, CF_DATA, CF_RAFT_META};
use crate::raft::snapshot::{
    read_snapshot_file, write_snapshot_file, SnapshotDir, StoredSnapshotInfo,
};
use crate::raft::types::{
    decode, encode, Command, CommandResult, LogId, Snapshot, SnapshotData, SnapshotMeta,
    StoredMembership, TypeConfig, WriteOp,
};
use crate::types::{ShardId, Version};
use futures::{Stream, TryStreamExt};
use openraft::entry::RaftEntry;
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io;
use std::sync::Arc;
use tokio::sync::{oneshot, watch};

/// Persisted next to the data, in the same batch.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct AppliedState {
    last_applied: Option<LogId>,
    membership: StoredMembership,
}

/// The applied index recorded in a shard's `AppliedState` metadata value.
pub fn applied_index_of(meta_value: &[u8]) -> io::Result<u64> {
    let state: AppliedState = decode(meta_value)?;
    Ok(state.last_applied.map(|id| id.index()).unwrap_or(0))
}

pub struct ShardStateMachine {
    shard: ShardId,
    engine: SharedEngine,
    snapshots: SnapshotDir,
    state: AppliedState,
    /// Last applied index, published for readers and status.
    applied_tx: Arc<watch::Sender<u64>>,
}

impl ShardStateMachine {
    pub fn open(
        shard: ShardId,
        engine: SharedEngine,
        snapshots: SnapshotDir,
    ) -> io::Result<ShardStateMachine> {
        let state = match engine.get(CF_DATA, &keys::sm_meta_key(shard, SmMetaTag::AppliedState))? {
            Some(bytes) => decode(&bytes)?,
            None => AppliedState::default(),
        };
        let applied = state
            .last_applied
            .as_ref()
            .map(|id| id.index())
            .unwrap_or(0);
        let (applied_tx, _) = watch::channel(applied);
        Ok(ShardStateMachine {
            shard,
            engine,
            snapshots,
            state,
            applied_tx: Arc::new(applied_tx),
        })
    }

    /// A receiver of the last applied index.
    pub fn applied_watch(&self) -> watch::Receiver<u64> {
        self.applied_tx.subscribe()
    }

    fn stage_command(&self, batch: &mut WriteBatch, command: Command, version: Version) {
        match command {
            Command::Write { keyspace, ops } => {
                for op in ops {
                    match op {
                        WriteOp::Put { ushard, key, value } => {
                            let record = ValueRecord {
                                version,
                                expires_at_ms: 0,
                                value,
                            };
                            batch.put(
                                CF_DATA,
                                keys::data_key(self.shard, keyspace, ushard, &key),
                                record.encode(),
                            );
                        }
                        WriteOp::Delete { ushard, key } => {
                            batch.delete(
                                CF_DATA,
                                keys::data_key(self.shard, keyspace, ushard, &key),
                            );
                        }
                    }
                }
            }
        }
    }

    fn stage_applied_state(&self, batch: &mut WriteBatch) -> io::Result<()> {
        batch.put(
            CF_DATA,
            keys::sm_meta_key(self.shard, SmMetaTag::AppliedState),
            encode(&self.state)?,
        );
        Ok(())
    }

    fn publish_applied(&self) {
        let applied = self
            .state
            .last_applied
            .as_ref()
            .map(|id| id.index())
            .unwrap_or(0);
        self.applied_tx.send_replace(applied);
    }

    fn read_snapshot_info(&self) -> io::Result<Option<StoredSnapshotInfo>> {
        match self.engine.get(
            CF_RAFT_META,
            &keys::raft_meta_key(self.shard, RaftMetaTag::SnapshotMeta),
        )? {
            Some(bytes) => Ok(Some(decode(&bytes)?)),
            None => Ok(None),
        }
    }
}

/// Records `info` as the shard's current snapshot and drops older files.
fn save_snapshot_info(
    engine: &SharedEngine,
    shard: ShardId,
    dir: &SnapshotDir,
    info: &StoredSnapshotInfo,
) -> io::Result<()> {
    let mut batch = WriteBatch::default();
    batch.put(
        CF_RAFT_META,
        keys::raft_meta_key(shard, RaftMetaTag::SnapshotMeta),
        encode(info)?,
    );
    engine.write(batch)?;
    dir.remove_all_but(&info.file_name)
}

/// `[start, end)` of a shard's user data in `data`, excluding its metadata.
fn user_data_range(shard: ShardId) -> (Vec<u8>, Vec<u8>) {
    let start = keys::shard_range(shard).0;
    let mut end = start.clone();
    end.extend_from_slice(&keys::RESERVED_KEYSPACE.to_be_bytes());
    (start, end)
}

/// Builds one snapshot from a view pinned when the builder was created.
pub struct ShardSnapshotBuilder {
    shard: ShardId,
    engine: SharedEngine,
    snapshots: SnapshotDir,
    meta: SnapshotMeta,
    file_name: String,
    written: Option<oneshot::Receiver<io::Result<u64>>>,
    pin_error: Option<io::Error>,
}

impl RaftSnapshotBuilder<TypeConfig> for ShardSnapshotBuilder {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        if let Some(e) = self.pin_error.take() {
            return Err(e);
        }
        let written = self
            .written
            .take()
            .ok_or_else(|| io::Error::other("snapshot builder used twice"))?;
        let count = written
            .await
            .map_err(|_| io::Error::other("snapshot export thread died"))??;
        let info = StoredSnapshotInfo {
            meta: self.meta.clone(),
            file_name: self.file_name.clone(),
        };
        save_snapshot_info(&self.engine, self.shard, &self.snapshots, &info)?;
        tracing::info!(shard_id = %self.shard, entries = count, last = ?self.meta.last_log_id, "built snapshot");
        let file = File::open(self.snapshots.path_of(&self.file_name))?;
        Ok(Snapshot {
            meta: self.meta.clone(),
            snapshot: file,
        })
    }
}

impl RaftStateMachine<TypeConfig> for ShardStateMachine {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = ShardSnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        Ok((
            self.state.last_applied.clone(),
            self.state.membership.clone(),
        ))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        let mut batch = WriteBatch::default();
        let mut replies = Vec::new();
        while let Some((entry, responder)) = entries.try_next().await? {
            let log_id = entry.log_id();
            let version = Version(log_id.index());
            match entry.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(command) => self.stage_command(&mut batch, command, version),
                EntryPayload::Membership(membership) => {
                    self.state.membership = StoredMembership::new(Some(log_id.clone()), membership);
                }
            }
            self.state.last_applied = Some(log_id);
            if let Some(responder) = responder {
                replies.push((responder, CommandResult { version }));
            }
        }
        self.stage_applied_state(&mut batch)?;
        self.engine.write(batch)?;
        self.publish_applied();
        for (responder, result) in replies {
            responder.send(result);
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        // Called while no entry is being applied: the view pinned here is
        // exactly the state at `last_applied`.
        let meta = SnapshotMeta {
            last_log_id: self.state.last_applied.clone(),
            last_membership: self.state.membership.clone(),
        };
        let last_index = meta.last_log_id.as_ref().map(|id| id.index()).unwrap_or(0);
        let file_name = self.snapshots.new_file_name(last_index);
        let path = self.snapshots.path_of(&file_name);
        let (tx, rx) = oneshot::channel();
        let (start, end) = user_data_range(self.shard);
        let prefix_len = start.len();
        let pinned = self.engine.export_frozen(
            CF_DATA,
            start,
            end,
            Box::new(move |entries| {
                let mut stripped =
                    entries.map(|item| item.map(|(k, v)| (k[prefix_len..].to_vec(), v)));
                let _ = tx.send(write_snapshot_file(&path, &mut stripped));
            }),
        );
        ShardSnapshotBuilder {
            shard: self.shard,
            engine: self.engine.clone(),
            snapshots: self.snapshots.clone(),
            meta,
            file_name,
            written: Some(rx),
            pin_error: pinned.err(),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        mut snapshot: SnapshotData,
    ) -> Result<(), io::Error> {
        let shard = self.shard;
        let engine = self.engine.clone();
        let dir = self.snapshots.clone();
        let last_index = meta.last_log_id.as_ref().map(|id| id.index()).unwrap_or(0);
        let file_name = dir.new_file_name(last_index);
        let new_state = AppliedState {
            last_applied: meta.last_log_id.clone(),
            membership: meta.last_membership.clone(),
        };
        let info = StoredSnapshotInfo {
            meta: meta.clone(),
            file_name: file_name.clone(),
        };
        tokio::task::spawn_blocking(move || -> io::Result<()> {
            // Keep our own copy: it becomes this replica's current snapshot.
            let own_path = dir.path_of(&file_name);
            {
                use std::io::Seek;
                snapshot.seek(io::SeekFrom::Start(0))?;
                let mut own = File::create(&own_path)?;
                io::copy(&mut snapshot, &mut own)?;
                own.sync_all()?;
            }
            // One batch: drop the shard's old data, load the snapshot, record
            // the new applied state. A crash leaves either all old or all new.
            let mut batch = WriteBatch::default();
            let (start, end) = keys::shard_range(shard);
            batch.delete_range(CF_DATA, start.clone(), end);
            let mut own = File::open(&own_path)?;
            read_snapshot_file(&mut own, |key, value| {
                let mut full = start.clone();
                full.extend_from_slice(&key);
                batch.put(CF_DATA, full, value);
            })?;
            batch.put(
                CF_DATA,
                keys::sm_meta_key(shard, SmMetaTag::AppliedState),
                encode(&new_state)?,
            );
            engine.write(batch)?;
            save_snapshot_info(&engine, shard, &dir, &info)
        })
        .await
        .map_err(|e| io::Error::other(format!("snapshot install task failed: {e}")))??;
        self.state = AppliedState {
            last_applied: meta.last_log_id.clone(),
            membership: meta.last_membership.clone(),
        };
        self.publish_applied();
        tracing::info!(shard_id = %self.shard, last = ?meta.last_log_id, "installed snapshot");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        let Some(info) = self.read_snapshot_info()? else {
            return Ok(None);
        };
        let file = File::open(self.snapshots.path_of(&info.file_name))?;
        Ok(Some(Snapshot {
            meta: info.meta,
            snapshot: file,
        }))
    }
}
