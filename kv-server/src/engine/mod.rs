//! The storage engine behind a node: an ordered key-value store with column
//! families, atomic write batches, an explicit WAL sync, and point-in-time
//! range exports. Nothing above this module knows it is RocksDB.
//!
//! Two implementations: [`RocksEngine`] (production) and [`MemEngine`]
//! (tests and, later, deterministic simulation).

mod memory;
mod rocks;

pub use memory::MemEngine;
pub use rocks::RocksEngine;

use std::io;
use std::sync::Arc;

/// One mutation in a [`WriteBatch`].
#[derive(Clone, Debug)]
pub enum BatchOp {
    Put {
        cf: &'static str,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        cf: &'static str,
        key: Vec<u8>,
    },
    /// Deletes every key in `[start, end)`.
    DeleteRange {
        cf: &'static str,
        start: Vec<u8>,
        end: Vec<u8>,
    },
}

/// Mutations applied all-or-nothing by [`Engine::write`].
#[derive(Clone, Debug, Default)]
pub struct WriteBatch {
    pub ops: Vec<BatchOp>,
}

impl WriteBatch {
    pub fn put(&mut self, cf: &'static str, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push(BatchOp::Put {
            cf,
            key: key.into(),
            value: value.into(),
        });
    }

    pub fn delete(&mut self, cf: &'static str, key: impl Into<Vec<u8>>) {
        self.ops.push(BatchOp::Delete { cf, key: key.into() });
    }

    pub fn delete_range(&mut self, cf: &'static str, start: Vec<u8>, end: Vec<u8>) {
        self.ops.push(BatchOp::DeleteRange { cf, start, end });
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// Direction of a range scan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Forward,
    Reverse,
}

/// Whether a scan visitor wants more entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Visit {
    Continue,
    Stop,
}

/// Called for each entry of a scan with its key and value.
pub type ScanVisitor<'a> = dyn FnMut(&[u8], &[u8]) -> io::Result<Visit> + 'a;

/// Says whether compaction may drop an entry (key, value).
pub type DataFilter = Arc<dyn Fn(&[u8], &[u8]) -> bool + Send + Sync>;

/// One point-in-time state of the engine: every read through it sees the
/// same writes, whatever is written meanwhile (see [`Engine::read_view`]).
pub trait ReadView {
    fn get(&self, cf: &'static str, key: &[u8]) -> io::Result<Option<Vec<u8>>>;

    /// Like [`Engine::scan`], over this view.
    fn scan(
        &self,
        cf: &'static str,
        start: &[u8],
        end: &[u8],
        direction: Direction,
        visitor: &mut ScanVisitor<'_>,
    ) -> io::Result<()>;
}

/// Reads through one [`ReadView`].
pub type ViewReader<'a> = dyn FnMut(&dyn ReadView) -> io::Result<()> + 'a;

/// Receives the entries of a frozen (point-in-time) range export.
pub type ExportSink = Box<dyn FnOnce(&mut dyn Iterator<Item = io::Result<(Vec<u8>, Vec<u8>)>>) + Send>;

pub trait Engine: Send + Sync + 'static {
    fn get(&self, cf: &'static str, key: &[u8]) -> io::Result<Option<Vec<u8>>>;

    /// Applies the batch atomically. Visible to readers on return and durable
    /// against a process crash (the WAL is in the OS); durable against power
    /// loss only after a later [`Engine::sync_wal`].
    fn write(&self, batch: WriteBatch) -> io::Result<()>;

    /// Makes every write so far durable on disk (fsync of the WAL). Blocking.
    fn sync_wal(&self) -> io::Result<()>;

    /// Visits the live entries of `[start, end)` in `direction` until the
    /// visitor says stop.
    fn scan(
        &self,
        cf: &'static str,
        start: &[u8],
        end: &[u8],
        direction: Direction,
        visitor: &mut ScanVisitor<'_>,
    ) -> io::Result<()>;

    /// Runs `reader` against one point-in-time view of the whole engine, so
    /// several gets and scans see one state (a multi-get or a scan never
    /// sees half of an atomic batch). The view lives until `reader` returns.
    fn read_view(&self, reader: &mut ViewReader<'_>) -> io::Result<()>;

    /// Pins a point-in-time view of `[start, end)` and feeds it to `sink` on a
    /// background thread. Returns once the view is pinned: writes made after
    /// the return are not seen by the sink. This is what lets a snapshot be
    /// built without stopping the state machine.
    fn export_frozen(&self, cf: &'static str, start: Vec<u8>, end: Vec<u8>, sink: ExportSink) -> io::Result<()>;

    /// Compacts `[start, end)` now, running the compaction filter over it.
    /// Blocking. An engine without compaction does nothing.
    fn compact(&self, _cf: &'static str, _start: &[u8], _end: &[u8]) -> io::Result<()> {
        Ok(())
    }

    /// Roughly how many bytes `[start, end)` takes on disk (RocksDB: in SST
    /// files, data still in the memtable not counted). For load reports
    /// only; never exact.
    fn approximate_bytes(&self, cf: &'static str, start: &[u8], end: &[u8]) -> io::Result<u64>;
}

pub type SharedEngine = Arc<dyn Engine>;
