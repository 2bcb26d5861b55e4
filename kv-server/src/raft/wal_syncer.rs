//! Group commit of the node's WAL.
//!
//! Every shard's Raft log lives in the one RocksDB WAL, and an append may be
//! acknowledged only once it is on disk. Instead of one fsync per append per
//! shard, appends write unsynced and queue their completion here; one thread
//! fsyncs once for everything queued and completes them all. Because the WAL
//! is a single ordered file, one fsync covers every earlier write of every
//! shard.

use crate::engine::SharedEngine;
use crate::raft::types::TypeConfig;
use openraft::storage::IOFlushed;
use std::io;
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;

enum Waiter {
    LogFlush(IOFlushed<TypeConfig>),
    Notify(tokio::sync::oneshot::Sender<io::Result<()>>),
    /// Sync what is queued, then exit (see [`WalSyncer::stop`]).
    Stop,
}

#[derive(Clone)]
pub struct WalSyncer {
    tx: mpsc::Sender<Waiter>,
    thread: Arc<Mutex<Option<JoinHandle<()>>>>,
}

fn copy_result(result: &io::Result<()>) -> io::Result<()> {
    match result {
        Ok(()) => Ok(()),
        Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
    }
}

impl WalSyncer {
    /// Starts the sync thread. It exits on [`WalSyncer::stop`] or when every
    /// clone is dropped.
    pub fn start(engine: SharedEngine) -> io::Result<WalSyncer> {
        let (tx, rx) = mpsc::channel::<Waiter>();
        let thread = std::thread::Builder::new()
            .name("shoal-wal-sync".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    batch.extend(rx.try_iter());
                    let result = engine.sync_wal();
                    let mut stop = false;
                    for waiter in batch {
                        match waiter {
                            Waiter::LogFlush(cb) => cb.io_completed(copy_result(&result)),
                            Waiter::Notify(tx) => {
                                let _ = tx.send(copy_result(&result));
                            }
                            Waiter::Stop => stop = true,
                        }
                    }
                    if stop {
                        return;
                    }
                }
            })?;
        Ok(WalSyncer {
            tx,
            thread: Arc::new(Mutex::new(Some(thread))),
        })
    }

    /// Completes `callback` once everything written so far is durable.
    pub fn flush_then(&self, callback: IOFlushed<TypeConfig>) {
        if let Err(mpsc::SendError(Waiter::LogFlush(cb))) = self.tx.send(Waiter::LogFlush(callback)) {
            cb.io_completed(Err(io::Error::other("wal syncer stopped")));
        }
    }

    /// Waits until everything written so far is durable.
    pub async fn flush(&self) -> io::Result<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.tx
            .send(Waiter::Notify(tx))
            .map_err(|_| io::Error::other("wal syncer stopped"))?;
        rx.await.map_err(|_| io::Error::other("wal syncer stopped"))?
    }

    /// Syncs what is queued and stops the thread, releasing its hold on the
    /// engine so the database is closed by its owner, not by this thread
    /// racing process exit. Blocking; later flushes fail.
    pub fn stop(&self) {
        let _ = self.tx.send(Waiter::Stop);
        let handle = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }
}
