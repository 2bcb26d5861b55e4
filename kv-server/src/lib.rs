//! kv-server: a Shoal replica node.
//!
//! # Layout
//! - [`clock`]: the node's wall clock (TTL, freshness), skewable in fault tests.
//! - [`peer_clocks`]: how far this node's clock is from its peers' (leaders refuse to stamp writes with a clock a quorum disagrees with).
//! - [`config`]: the node's configuration (its format and validation are `shoal-config`'s), openraft's settings from it, and refusing faults this build cannot inject.
//! - [`identity`]: which node id a data directory belongs to.
//! - [`layout`]: the cluster layout (nodes, keyspaces, shards) a node serves (`shoal-config`'s types).
//! - [`keys`]: **the only module that builds storage keys**.
//! - [`engine`]: the storage trait, its RocksDB and in-memory implementations.
//! - [`apply`]: what a shard's log means: the command format and how every replica applies a command alike (conditions, counters, TTL, exactly-once). Nothing in it knows openraft.
//! - [`raft`]: openraft glue: log store, state machine, snapshots, network.
//! - [`codec`]: the binary encoding of stored and transported values.
//! - [`shard`]: the replicas a node hosts; reads, writes, scans on them.
//! - [`rpc`]: every tonic service and the one error → status mapping.
//! - [`ttl`]: which expired keys compaction may reclaim.
//! - [`transport_filter`]: per-link cuts and delays between nodes, for the in-process test harness.
//! - [`server`]: wires the above into a running node.
//!
//! Request path: client → `rpc::kv_service` (validate, route to the shard) →
//! `shard::replica` (leader check, propose / read barrier) → openraft log
//! (`raft::log_store`, fsynced by `raft::wal_syncer`) → apply
//! (`raft::state_machine` hands each entry to `apply::applier`) → engine.

// tonic::Status is the error type of every gRPC handler; boxing it would
// only move the allocation.
#![allow(clippy::result_large_err)]

pub mod apply;
pub mod clock;
pub mod codec;
pub mod config;
pub mod engine;
pub mod error;
pub mod failpoints;
pub mod identity;
pub mod keys;
pub mod layout;
pub mod peer_clocks;
pub mod raft;
pub mod rpc;
pub mod server;
pub mod shard;
pub mod transport_filter;
pub mod ttl;
