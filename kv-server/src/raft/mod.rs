//! openraft glue, and nothing else: a shard's log store, state machine,
//! snapshot files, network client and the WAL group-commit thread.

pub mod acceptance;
pub mod log_store;
pub mod mutate;
pub mod network;
pub mod snapshot;
pub mod state_machine;
pub mod types;
pub mod wal_syncer;
