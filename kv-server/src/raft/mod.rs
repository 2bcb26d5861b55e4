//! openraft glue, and nothing else: a shard's log store, state machine,
//! snapshot files, network client and the WAL group-commit thread.

pub mod acceptance;
pub mod log_store;
pub mod network;
pub mod snapshot;
pub mod state_machine;
pub mod types;
pub mod wal_syncer;

/// A shard's Raft group.
pub type Raft = openraft::Raft<types::TypeConfig, state_machine::ShardStateMachine>;
