//! kv-client: the Rust client of Shoal. The `shoal` command is the
//! `shoal-cli` crate; the process launcher for tests and the playground is
//! `local-cluster`.
//!
//! # Layout
//! - [`client`]: [`ShoalClient`]: reads, writes, the retry loop; scans in
//!   `client::scan`; optimistic transactions in [`client::txn`].
//! - [`types`]: what callers pass and get back: settings, keys, values, acks, scan options.
//! - [`consistency`]: read consistency modes, write conditions and options.
//! - [`session`]: [`Session`], read-your-writes with automatic tokens.
//! - [`routing`]: the cached layout: key → micro-shard → shard → replicas, and fetching it.
//! - [`error`]: [`ClientError`] with `is_retryable` / `is_indeterminate`.
//! - `retry`: how a failed attempt is handled (pure; unit tested).
//! - `wire`: conversions to and from `shoal-proto`, in one place.
//!
//! The client depends only on the wire protocol (`shoal-proto`), never on
//! server internals.

pub mod client;
pub mod consistency;
pub mod error;
mod request_ids;
mod retry;
pub mod routing;
pub mod session;
pub mod types;
mod wire;

pub use client::txn::{Committed, SnapshotReads, Transaction, TxnOptions};
pub use client::{SharedClient, ShoalClient};
pub use consistency::{Condition, PutOptions, ReadConsistency};
pub use error::{ClientError, ClientResult};
pub use session::Session;
pub use types::{ClientConfig, Entry, Key, Mutation, ScanOptions, ScanPage, Versioned, WriteAck, WriteResult};
