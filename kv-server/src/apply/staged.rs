//! The state one batch of log entries is applied against: the engine's
//! state plus what the earlier entries of the batch staged. openraft hands
//! the state machine several entries at once and they are written in one
//! batch, so each entry must read what the ones before it left, before
//! anything reaches the engine.

use crate::engine::{Direction, SharedEngine, Visit, WriteBatch};
use crate::keys::CF_DATA;
use std::collections::HashMap;
use std::io;

/// A key and its value as a view sees it (None: deleted in this batch).
pub type ViewEntry = (Vec<u8>, Option<Vec<u8>>);

/// The engine's state plus the writes staged in the current batch. Only
/// each key's last staged value matters, so the batch is built from the
/// overlay at the end (values are not copied twice).
pub struct StagedView<'a> {
    engine: &'a SharedEngine,
    /// Latest staged value per key (None = deleted).
    overlay: HashMap<Vec<u8>, Option<Vec<u8>>>,
}

impl<'a> StagedView<'a> {
    pub fn new(engine: &'a SharedEngine) -> StagedView<'a> {
        StagedView {
            engine,
            overlay: HashMap::new(),
        }
    }

    pub fn get(&self, key: &[u8]) -> io::Result<Option<Vec<u8>>> {
        if let Some(staged) = self.overlay.get(key) {
            return Ok(staged.clone());
        }
        self.engine.get(CF_DATA, key)
    }

    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.overlay.insert(key, Some(value));
    }

    pub fn delete(&mut self, key: Vec<u8>) {
        self.overlay.insert(key, None);
    }

    /// The keys the engine holds in `[start, end)` (what is staged is not
    /// looked at: read each through [`Self::get`]).
    pub fn stored_keys(&self, start: &[u8], end: &[u8]) -> io::Result<Vec<Vec<u8>>> {
        let mut stored = Vec::new();
        self.engine
            .scan(CF_DATA, start, end, Direction::Forward, &mut |key, _| {
                stored.push(key.to_vec());
                Ok(Visit::Continue)
            })?;
        Ok(stored)
    }

    /// Every entry in `[start, end)` as this view sees it, in key order:
    /// the engine's, with what is staged laid over them (None = deleted
    /// in this batch).
    pub fn entries_in(&self, start: &[u8], end: &[u8]) -> io::Result<Vec<ViewEntry>> {
        let mut entries = std::collections::BTreeMap::new();
        self.engine
            .scan(CF_DATA, start, end, Direction::Forward, &mut |key, value| {
                entries.insert(key.to_vec(), Some(value.to_vec()));
                Ok(Visit::Continue)
            })?;
        for (key, value) in &self.overlay {
            if key.as_slice() >= start && key.as_slice() < end {
                entries.insert(key.clone(), value.clone());
            }
        }
        Ok(entries.into_iter().collect())
    }

    pub fn into_batch(self) -> WriteBatch {
        let mut batch = WriteBatch::default();
        for (key, value) in self.overlay {
            match value {
                Some(value) => batch.put(CF_DATA, key, value),
                None => batch.delete(CF_DATA, key),
            }
        }
        batch
    }
}
