//! kv-client: the Rust client of Shoal, and the `shoal` command-line tool.
//!
//! # Layout
//! - [`client`]: [`ShoalClient`]: routing, leader following, retries, scans.
//! - [`routing`]: the cached layout: key → micro-shard → shard → replicas.
//! - [`error`]: [`ClientError`] with `is_retryable` / `is_indeterminate`.
//! - [`local_cluster`]: kv-server child processes on this machine (playground, tests, benchmarks).
//! - [`bench`](mod@bench): the load generator behind `shoal bench`.
//!
//! The client depends only on the wire protocol (`shoal-proto`), never on
//! server internals.

pub mod bench;
pub mod client;
pub mod error;
pub mod local_cluster;
pub mod routing;

pub use client::{ClientConfig, Entry, Key, Mutation, ScanOptions, ScanPage, ShoalClient, Versioned, WriteAck};
pub use error::{ClientError, ClientResult};
