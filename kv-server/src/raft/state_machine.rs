//! A shard's state machine: applies committed commands to the shard's data
//! range, builds snapshots from a frozen engine view, installs snapshots.
//!
//! **Invariant: the applied log id and the data it produced are written in one
//! atomic batch**, so after a crash the state machine is exactly "everything
//! up to applied" and openraft re-applies the rest from the log — nothing
//! twice, nothing lost.
//!
//! **Invariant: the recorded current snapshot's file always exists.** The
//! record is made durable before older files are deleted, and one lock
//! serialises builders finishing, installs and readers (openraft runs a
//! build in its own task, concurrently with an install).

use crate::apply::applier::{read_clock, read_txn_floor, read_version_base, Applier};
use crate::apply::command::{Command, CommandResult};
use crate::apply::moves::{load_states, MoveStates};
use crate::apply::staged::StagedView;
use crate::codec::{decode, encode};
use crate::engine::{SharedEngine, WriteBatch};
use crate::keys::{self, RaftMetaTag, SmMetaTag, CF_DATA, CF_RAFT_META};
use crate::raft::snapshot::{read_snapshot_file, write_snapshot_file, SnapshotDir, StoredSnapshotInfo};
use crate::raft::types::{LogId, Snapshot, SnapshotData, SnapshotMeta, StoredMembership, TypeConfig};
use crate::ttl::ExpiryHorizons;
use futures::{Stream, TryStreamExt};
use openraft::entry::RaftEntry;
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend};
use serde::{Deserialize, Serialize};
use shoal_types::{ShardId, Version};
use std::fs::File;
use std::io;
use std::sync::Arc;
use tokio::sync::{oneshot, watch, Mutex};

/// Persisted next to the data, in the same batch.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct AppliedState {
    last_applied: Option<LogId>,
    membership: StoredMembership,
}

/// The applied index recorded in a shard's `AppliedState` metadata value.
pub fn applied_index_of(meta_value: &[u8]) -> io::Result<u64> {
    let state: AppliedState = decode(meta_value)?;
    Ok(log_index(&state.last_applied))
}

/// The version of a shard's last applied entry: its index plus the
/// version base (see [`crate::apply::applier`]); 0 before the first entry
/// (the base is raised only by an entry).
pub fn applied_version(applied_index: u64, version_base: u64) -> u64 {
    applied_index + version_base
}

fn log_index(id: &Option<LogId>) -> u64 {
    id.as_ref().map(|id| id.index()).unwrap_or(0)
}

pub struct ShardStateMachine {
    shard: ShardId,
    engine: SharedEngine,
    snapshots: SnapshotDir,
    state: AppliedState,
    /// The version of the last applied entry, published for read barriers
    /// and freshness stamps (versions grow with the log, so "applied
    /// version ≥ v" means every write of version ≤ v is applied).
    applied_tx: Arc<watch::Sender<u64>>,
    /// Serialises every change to, and read of, "the current snapshot".
    snapshot_lock: Arc<Mutex<()>>,
    /// The apply clock (see [`crate::apply::command::Command::Mutate`]), also
    /// published to compaction as this shard's expiry horizon.
    clock_ms: u64,
    /// The version base (see [`crate::apply::applier`]).
    version_base: u64,
    /// The transaction window's floor (see [`crate::apply::txn`]), also
    /// published to compaction.
    txn_floor: Version,
    /// The μshards with a move state, published after every batch that
    /// moved one and after a snapshot install.
    moves_tx: Arc<watch::Sender<Arc<MoveStates>>>,
    horizons: Arc<ExpiryHorizons>,
}

impl ShardStateMachine {
    pub fn open(
        shard: ShardId,
        engine: SharedEngine,
        snapshots: SnapshotDir,
        horizons: Arc<ExpiryHorizons>,
    ) -> io::Result<ShardStateMachine> {
        let state = match engine.get(CF_DATA, &keys::sm_meta_key(shard, SmMetaTag::AppliedState))? {
            Some(bytes) => decode(&bytes)?,
            None => AppliedState::default(),
        };
        let clock_ms = read_clock(&engine, shard)?;
        let version_base = read_version_base(&engine, shard)?;
        let txn_floor = read_txn_floor(&engine, shard)?;
        let (applied_tx, _) = watch::channel(applied_version(log_index(&state.last_applied), version_base));
        let (moves_tx, _) = watch::channel(Arc::new(load_states(&engine, shard)?));
        horizons.set(shard, horizon(clock_ms, txn_floor));
        Ok(ShardStateMachine {
            shard,
            engine,
            snapshots,
            state,
            applied_tx: Arc::new(applied_tx),
            snapshot_lock: Arc::new(Mutex::new(())),
            clock_ms,
            version_base,
            txn_floor,
            moves_tx: Arc::new(moves_tx),
            horizons,
        })
    }

    /// A receiver of the shard's move states.
    pub fn moves_watch(&self) -> watch::Receiver<Arc<MoveStates>> {
        self.moves_tx.subscribe()
    }

    fn publish_moves(&self) -> io::Result<()> {
        self.moves_tx
            .send_replace(Arc::new(load_states(&self.engine, self.shard)?));
        Ok(())
    }

    /// A receiver of the last applied entry's version.
    pub fn applied_watch(&self) -> watch::Receiver<u64> {
        self.applied_tx.subscribe()
    }

    fn publish_applied(&self) {
        self.applied_tx
            .send_replace(applied_version(log_index(&self.state.last_applied), self.version_base));
    }
}

fn read_snapshot_info(engine: &SharedEngine, shard: ShardId) -> io::Result<Option<StoredSnapshotInfo>> {
    match engine.get(CF_RAFT_META, &keys::raft_meta_key(shard, RaftMetaTag::SnapshotMeta))? {
        Some(bytes) => Ok(Some(decode(&bytes)?)),
        None => Ok(None),
    }
}

fn stage_snapshot_info(batch: &mut WriteBatch, shard: ShardId, info: &StoredSnapshotInfo) -> io::Result<()> {
    batch.put(
        CF_RAFT_META,
        keys::raft_meta_key(shard, RaftMetaTag::SnapshotMeta),
        encode(info)?,
    );
    Ok(())
}

/// Makes the new snapshot file's folder entry durable, writes `batch`
/// (which records it as the current snapshot), makes that durable, and
/// only then deletes older snapshot files. Blocking.
fn commit_snapshot_switch(engine: &SharedEngine, dir: &SnapshotDir, batch: WriteBatch, keep: &str) -> io::Result<()> {
    dir.sync()?;
    engine.write(batch)?;
    engine.sync_wal()?;
    dir.remove_all_but(keep)
}

fn join_error(what: &str, e: tokio::task::JoinError) -> io::Error {
    io::Error::other(format!("{what} task failed: {e}"))
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
    snapshot_lock: Arc<Mutex<()>>,
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
        let _guard = self.snapshot_lock.lock().await;
        let (engine, shard, dir) = (self.engine.clone(), self.shard, self.snapshots.clone());
        let own = StoredSnapshotInfo {
            meta: self.meta.clone(),
            file_name: self.file_name.clone(),
        };
        let chosen = tokio::task::spawn_blocking(move || -> io::Result<StoredSnapshotInfo> {
            // An install may have moved the shard past this build meanwhile:
            // then the installed snapshot stays current and ours is dropped.
            if let Some(current) = read_snapshot_info(&engine, shard)? {
                if log_index(&current.meta.last_log_id) >= log_index(&own.meta.last_log_id) {
                    let _ = std::fs::remove_file(dir.path_of(&own.file_name));
                    return Ok(current);
                }
            }
            let mut batch = WriteBatch::default();
            stage_snapshot_info(&mut batch, shard, &own)?;
            commit_snapshot_switch(&engine, &dir, batch, &own.file_name)?;
            Ok(own)
        })
        .await
        .map_err(|e| join_error("snapshot save", e))??;
        tracing::info!(shard_id = %self.shard, entries = count, last = ?chosen.meta.last_log_id, "built snapshot");
        let file = File::open(self.snapshots.path_of(&chosen.file_name))?;
        Ok(Snapshot {
            meta: chosen.meta,
            snapshot: file,
        })
    }
}

impl RaftStateMachine<TypeConfig> for ShardStateMachine {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = ShardSnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        Ok((self.state.last_applied, self.state.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        let engine = self.engine.clone();
        let mut view = StagedView::new(&engine);
        let mut applier = Applier {
            shard: self.shard,
            view: &mut view,
            clock_ms: self.clock_ms,
            version_base: self.version_base,
            txn_floor: self.txn_floor,
        };
        let mut replies = Vec::new();
        let mut moved = false;
        while let Some((entry, responder)) = entries.try_next().await? {
            let log_id = entry.log_id();
            let index = log_id.index();
            moved |= matches!(&entry.payload, EntryPayload::Normal(Command::Move { .. }));
            let result = match entry.payload {
                EntryPayload::Blank => CommandResult {
                    version: applier.version_at(index),
                    ..Default::default()
                },
                EntryPayload::Normal(command) => applier.apply(command, index)?,
                EntryPayload::Membership(membership) => {
                    self.state.membership = StoredMembership::new(Some(log_id), membership);
                    CommandResult {
                        version: applier.version_at(index),
                        ..Default::default()
                    }
                }
            };
            self.state.last_applied = Some(log_id);
            if let Some(responder) = responder {
                replies.push((responder, result));
            }
        }
        let (clock_ms, version_base, txn_floor) = (applier.clock_ms, applier.version_base, applier.txn_floor);
        view.put(
            keys::sm_meta_key(self.shard, SmMetaTag::AppliedState),
            encode(&self.state)?,
        );
        self.engine.write(view.into_batch())?;
        self.clock_ms = clock_ms;
        self.version_base = version_base;
        self.txn_floor = txn_floor;
        self.horizons.set(self.shard, horizon(clock_ms, txn_floor));
        if moved {
            self.publish_moves()?;
        }
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
            last_log_id: self.state.last_applied,
            last_membership: self.state.membership.clone(),
        };
        let file_name = self.snapshots.new_file_name(log_index(&meta.last_log_id));
        let path = self.snapshots.path_of(&file_name);
        let (tx, rx) = oneshot::channel();
        let (start, end) = keys::snapshot_range(self.shard);
        // Compaction must not drop what this view holds (see crate::ttl).
        let horizon_pin = self.horizons.pin(self.shard);
        let pinned = self.engine.export_frozen(
            CF_DATA,
            start,
            end,
            Box::new(move |entries| {
                let _horizon_pin = horizon_pin;
                let mut stripped = entries.map(|item| item.map(|(k, v)| (keys::shard_relative(&k).to_vec(), v)));
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
            snapshot_lock: self.snapshot_lock.clone(),
        }
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, mut snapshot: SnapshotData) -> Result<(), io::Error> {
        let (engine, shard, dir) = (self.engine.clone(), self.shard, self.snapshots.clone());
        let file_name = dir.new_file_name(log_index(&meta.last_log_id));
        let new_state = AppliedState {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
        };
        let info = StoredSnapshotInfo {
            meta: meta.clone(),
            file_name: file_name.clone(),
        };
        let applied_state = new_state.clone();
        let _guard = self.snapshot_lock.lock().await;
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
            // the new applied state and the new current snapshot. A crash
            // leaves either all old or all new.
            let mut batch = WriteBatch::default();
            let (start, end) = keys::shard_range(shard);
            batch.delete_range(CF_DATA, start, end);
            let mut own = File::open(&own_path)?;
            read_snapshot_file(&mut own, |key, value| {
                batch.put(CF_DATA, keys::from_shard_relative(shard, &key), value);
            })?;
            batch.put(
                CF_DATA,
                keys::sm_meta_key(shard, SmMetaTag::AppliedState),
                encode(&applied_state)?,
            );
            stage_snapshot_info(&mut batch, shard, &info)?;
            commit_snapshot_switch(&engine, &dir, batch, &file_name)
        })
        .await
        .map_err(|e| join_error("snapshot install", e))??;
        self.state = new_state;
        self.clock_ms = read_clock(&self.engine, self.shard)?;
        self.version_base = read_version_base(&self.engine, self.shard)?;
        self.txn_floor = read_txn_floor(&self.engine, self.shard)?;
        self.horizons.set(self.shard, horizon(self.clock_ms, self.txn_floor));
        self.publish_moves()?;
        self.publish_applied();
        tracing::info!(shard_id = %self.shard, last = ?meta.last_log_id, "installed snapshot");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        let _guard = self.snapshot_lock.lock().await;
        let Some(info) = read_snapshot_info(&self.engine, self.shard)? else {
            return Ok(None);
        };
        let file = File::open(self.snapshots.path_of(&info.file_name))?;
        Ok(Some(Snapshot {
            meta: info.meta,
            snapshot: file,
        }))
    }
}

/// What compaction may drop up to on this shard (see [`crate::ttl`]).
fn horizon(clock_ms: u64, txn_floor: Version) -> crate::ttl::Horizon {
    crate::ttl::Horizon {
        clock_ms,
        txn_floor: txn_floor.0,
    }
}
