//! [`Engine`] over RocksDB. The only module that mentions `rocksdb`.

use super::{BatchOp, DataFilter, Direction, Engine, ExportSink, ReadView, ScanVisitor, ViewReader, Visit, WriteBatch};
use crate::keys::{ALL_CFS, CF_DATA};
use rocksdb::{ColumnFamilyDescriptor, IteratorMode, Options, ReadOptions, DB};
use std::io;
use std::path::Path;
use std::sync::{mpsc, Arc};

pub struct RocksEngine {
    db: Arc<DB>,
}

fn io_err(e: rocksdb::Error) -> io::Error {
    io::Error::other(e.into_string())
}

impl RocksEngine {
    /// Opens (or creates) the node's database at `path` with every column
    /// family. `reclaim` says which entries of `data` compaction may drop
    /// (expired keys, see [`crate::ttl`]).
    pub fn open(path: &Path, reclaim: Option<DataFilter>) -> io::Result<RocksEngine> {
        RocksEngine::open_with(path, reclaim, false)
    }

    /// [`Self::open`], and with `lose_unsynced_on_crash` the WAL is kept in
    /// the process until [`Engine::sync_wal`] (RocksDB's manual WAL flush):
    /// a kill -9 then loses every write not yet synced, as a power loss
    /// would. A fault-injection mode, never for production.
    pub fn open_with(
        path: &Path,
        reclaim: Option<DataFilter>,
        lose_unsynced_on_crash: bool,
    ) -> io::Result<RocksEngine> {
        let mut opts = Options::default();
        opts.set_manual_wal_flush(lose_unsynced_on_crash);
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        // Writes are ordered through one WAL shared by all shards; after a
        // crash RocksDB recovers a consistent prefix of it, which is what lets
        // a synced Raft log append also cover every earlier unsynced write.
        opts.set_wal_recovery_mode(rocksdb::DBRecoveryMode::PointInTime);
        let cfs = ALL_CFS.iter().map(|name| {
            let mut cf_opts = Options::default();
            if let (true, Some(reclaim)) = (*name == CF_DATA, reclaim.clone()) {
                cf_opts.set_compaction_filter("shoal-expired", move |_level: u32, key: &[u8], value: &[u8]| {
                    if reclaim(key, value) {
                        rocksdb::compaction_filter::Decision::Remove
                    } else {
                        rocksdb::compaction_filter::Decision::Keep
                    }
                });
            }
            ColumnFamilyDescriptor::new(*name, cf_opts)
        });
        let db = DB::open_cf_descriptors(&opts, path, cfs).map_err(io_err)?;
        Ok(RocksEngine { db: Arc::new(db) })
    }

    fn cf(&self, name: &str) -> io::Result<&rocksdb::ColumnFamily> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| io::Error::other(format!("missing column family {name}")))
    }
}

/// Visits `[start, end)` of `cf` in `direction`, at `snapshot` if given.
fn scan_db(
    db: &DB,
    cf: &rocksdb::ColumnFamily,
    snapshot: Option<&rocksdb::Snapshot<'_>>,
    start: &[u8],
    end: &[u8],
    direction: Direction,
    visitor: &mut ScanVisitor<'_>,
) -> io::Result<()> {
    let mut read_opts = ReadOptions::default();
    read_opts.set_iterate_lower_bound(start.to_vec());
    read_opts.set_iterate_upper_bound(end.to_vec());
    if let Some(snapshot) = snapshot {
        read_opts.set_snapshot(snapshot);
    }
    let mode = match direction {
        Direction::Forward => IteratorMode::Start,
        Direction::Reverse => IteratorMode::End,
    };
    for item in db.iterator_cf_opt(cf, read_opts, mode) {
        let (key, value) = item.map_err(io_err)?;
        if visitor(&key, &value)? == Visit::Stop {
            break;
        }
    }
    Ok(())
}

/// A RocksDB snapshot: gets and scans at one sequence number.
struct RocksView<'a> {
    engine: &'a RocksEngine,
    snapshot: &'a rocksdb::Snapshot<'a>,
}

impl ReadView for RocksView<'_> {
    fn get(&self, cf: &'static str, key: &[u8]) -> io::Result<Option<Vec<u8>>> {
        self.snapshot.get_cf(self.engine.cf(cf)?, key).map_err(io_err)
    }

    fn scan(
        &self,
        cf: &'static str,
        start: &[u8],
        end: &[u8],
        direction: Direction,
        visitor: &mut ScanVisitor<'_>,
    ) -> io::Result<()> {
        scan_db(
            &self.engine.db,
            self.engine.cf(cf)?,
            Some(self.snapshot),
            start,
            end,
            direction,
            visitor,
        )
    }
}

impl Engine for RocksEngine {
    fn get(&self, cf: &'static str, key: &[u8]) -> io::Result<Option<Vec<u8>>> {
        self.db.get_cf(self.cf(cf)?, key).map_err(io_err)
    }

    fn write(&self, batch: WriteBatch) -> io::Result<()> {
        let mut wb = rocksdb::WriteBatch::default();
        for op in batch.ops {
            match op {
                BatchOp::Put { cf, key, value } => wb.put_cf(self.cf(cf)?, key, value),
                BatchOp::Delete { cf, key } => wb.delete_cf(self.cf(cf)?, key),
                BatchOp::DeleteRange { cf, start, end } => wb.delete_range_cf(self.cf(cf)?, start, end),
            }
        }
        self.db.write(wb).map_err(io_err)
    }

    fn sync_wal(&self) -> io::Result<()> {
        self.db.flush_wal(true).map_err(io_err)
    }

    fn scan(
        &self,
        cf: &'static str,
        start: &[u8],
        end: &[u8],
        direction: Direction,
        visitor: &mut ScanVisitor<'_>,
    ) -> io::Result<()> {
        scan_db(&self.db, self.cf(cf)?, None, start, end, direction, visitor)
    }

    fn read_view(&self, reader: &mut ViewReader<'_>) -> io::Result<()> {
        let snapshot = self.db.snapshot();
        reader(&RocksView {
            engine: self,
            snapshot: &snapshot,
        })
    }

    fn compact(&self, cf: &'static str, start: &[u8], end: &[u8]) -> io::Result<()> {
        self.db.compact_range_cf(self.cf(cf)?, Some(start), Some(end));
        Ok(())
    }

    fn approximate_bytes(&self, cf: &'static str, start: &[u8], end: &[u8]) -> io::Result<u64> {
        let sizes = self
            .db
            .get_approximate_sizes_cf(self.cf(cf)?, &[rocksdb::Range::new(start, end)]);
        Ok(sizes.first().copied().unwrap_or(0))
    }

    fn export_frozen(&self, cf: &'static str, start: Vec<u8>, end: Vec<u8>, sink: ExportSink) -> io::Result<()> {
        let db = self.db.clone();
        let (pinned_tx, pinned_rx) = mpsc::channel::<io::Result<()>>();
        // A RocksDB snapshot borrows the DB, so it lives on a thread that owns
        // an Arc of it; the caller waits only until the snapshot is taken.
        std::thread::Builder::new().name("shoal-export".into()).spawn(move || {
            let snapshot = db.snapshot();
            let Some(handle) = db.cf_handle(cf) else {
                let _ = pinned_tx.send(Err(io::Error::other(format!("missing column family {cf}"))));
                return;
            };
            let _ = pinned_tx.send(Ok(()));
            let mut read_opts = ReadOptions::default();
            read_opts.set_iterate_lower_bound(start);
            read_opts.set_iterate_upper_bound(end);
            read_opts.set_snapshot(&snapshot);
            let mut iter = db
                .iterator_cf_opt(handle, read_opts, IteratorMode::Start)
                .map(|item| item.map(|(k, v)| (k.into_vec(), v.into_vec())).map_err(io_err));
            sink(&mut iter);
        })?;
        pinned_rx
            .recv()
            .map_err(|_| io::Error::other("export thread died before pinning its view"))?
    }
}
