//! [`Engine`] in memory: a `BTreeMap` per column family behind one lock.
//! Used by unit tests and the storage conformance suite; it keeps the same
//! atomicity (a batch applies under one lock) but has no durability.

use super::{BatchOp, Direction, Engine, ExportSink, ReadView, ScanVisitor, ViewReader, Visit, WriteBatch};
use crate::keys::ALL_CFS;
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::{Arc, Mutex};

type Table = BTreeMap<Vec<u8>, Vec<u8>>;

#[derive(Default)]
pub struct MemEngine {
    // One std Mutex: every operation is short and never awaits while holding it.
    tables: Mutex<HashMap<&'static str, Table>>,
}

impl MemEngine {
    pub fn new() -> Arc<MemEngine> {
        let tables = ALL_CFS.iter().map(|cf| (*cf, Table::new())).collect();
        Arc::new(MemEngine {
            tables: Mutex::new(tables),
        })
    }

    fn with_table<T>(&self, cf: &'static str, f: impl FnOnce(&mut Table) -> T) -> io::Result<T> {
        let mut tables = self
            .tables
            .lock()
            .map_err(|_| io::Error::other("mem engine lock poisoned"))?;
        let table = tables
            .get_mut(cf)
            .ok_or_else(|| io::Error::other(format!("missing column family {cf}")))?;
        Ok(f(table))
    }

    fn range_copy(&self, cf: &'static str, start: &[u8], end: &[u8]) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.with_table(cf, |t| {
            t.range(start.to_vec()..end.to_vec())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
    }
}

impl Engine for MemEngine {
    fn get(&self, cf: &'static str, key: &[u8]) -> io::Result<Option<Vec<u8>>> {
        self.with_table(cf, |t| t.get(key).cloned())
    }

    fn write(&self, batch: WriteBatch) -> io::Result<()> {
        let mut tables = self
            .tables
            .lock()
            .map_err(|_| io::Error::other("mem engine lock poisoned"))?;
        for op in &batch.ops {
            let cf = match op {
                BatchOp::Put { cf, .. } | BatchOp::Delete { cf, .. } | BatchOp::DeleteRange { cf, .. } => *cf,
            };
            if !tables.contains_key(cf) {
                return Err(io::Error::other(format!("missing column family {cf}")));
            }
        }
        for op in batch.ops {
            match op {
                BatchOp::Put { cf, key, value } => {
                    tables.get_mut(cf).map(|t| t.insert(key, value));
                }
                BatchOp::Delete { cf, key } => {
                    tables.get_mut(cf).map(|t| t.remove(&key));
                }
                BatchOp::DeleteRange { cf, start, end } => {
                    if let Some(t) = tables.get_mut(cf) {
                        let doomed: Vec<Vec<u8>> = t.range(start..end).map(|(k, _)| k.clone()).collect();
                        for key in doomed {
                            t.remove(&key);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn sync_wal(&self) -> io::Result<()> {
        Ok(())
    }

    fn scan(
        &self,
        cf: &'static str,
        start: &[u8],
        end: &[u8],
        direction: Direction,
        visitor: &mut ScanVisitor<'_>,
    ) -> io::Result<()> {
        if start >= end {
            return Ok(());
        }
        // Copy first so the visitor runs without the lock held.
        let entries = self.range_copy(cf, start, end)?;
        visit_in_order(entries.iter().map(|(k, v)| (k, v)), direction, visitor)
    }

    fn read_view(&self, reader: &mut ViewReader<'_>) -> io::Result<()> {
        // A copy of every table: slow, but this engine serves tests only.
        let tables = self
            .tables
            .lock()
            .map_err(|_| io::Error::other("mem engine lock poisoned"))?
            .clone();
        reader(&MemView { tables })
    }

    fn approximate_bytes(&self, cf: &'static str, start: &[u8], end: &[u8]) -> io::Result<u64> {
        if start >= end {
            return Ok(0);
        }
        let entries = self.range_copy(cf, start, end)?;
        Ok(entries.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum())
    }

    fn export_frozen(&self, cf: &'static str, start: Vec<u8>, end: Vec<u8>, sink: ExportSink) -> io::Result<()> {
        let entries = if start < end {
            self.range_copy(cf, &start, &end)?
        } else {
            Vec::new()
        };
        std::thread::Builder::new().name("shoal-export".into()).spawn(move || {
            let mut iter = entries.into_iter().map(Ok);
            sink(&mut iter);
        })?;
        Ok(())
    }
}

/// Feeds `entries` (in key order) to `visitor` in `direction` until it stops.
fn visit_in_order<'a>(
    entries: impl DoubleEndedIterator<Item = (&'a Vec<u8>, &'a Vec<u8>)>,
    direction: Direction,
    visitor: &mut ScanVisitor<'_>,
) -> io::Result<()> {
    let entries: Box<dyn Iterator<Item = (&Vec<u8>, &Vec<u8>)>> = match direction {
        Direction::Forward => Box::new(entries),
        Direction::Reverse => Box::new(entries.rev()),
    };
    for (key, value) in entries {
        if visitor(key, value)? == Visit::Stop {
            break;
        }
    }
    Ok(())
}

/// A copy of the tables at one moment.
struct MemView {
    tables: HashMap<&'static str, Table>,
}

impl MemView {
    fn table(&self, cf: &'static str) -> io::Result<&Table> {
        self.tables
            .get(cf)
            .ok_or_else(|| io::Error::other(format!("missing column family {cf}")))
    }
}

impl ReadView for MemView {
    fn get(&self, cf: &'static str, key: &[u8]) -> io::Result<Option<Vec<u8>>> {
        Ok(self.table(cf)?.get(key).cloned())
    }

    fn scan(
        &self,
        cf: &'static str,
        start: &[u8],
        end: &[u8],
        direction: Direction,
        visitor: &mut ScanVisitor<'_>,
    ) -> io::Result<()> {
        if start >= end {
            return Ok(());
        }
        visit_in_order(self.table(cf)?.range(start.to_vec()..end.to_vec()), direction, visitor)
    }
}
