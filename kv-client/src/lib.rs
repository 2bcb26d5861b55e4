//! kv-client: the Rust client of Shoal. The `shoal` command is the
//! `shoal-cli` crate; the process launcher for tests and the playground is
//! `local-cluster`.
//!
//! # Layout
//! - [`client`]: [`ShoalClient`]: routing, leader following, retries, scans.
//! - [`consistency`]: read consistency modes, write conditions and options.
//! - [`session`]: [`Session`], read-your-writes with automatic tokens.
//! - [`routing`]: the cached layout: key → micro-shard → shard → replicas.
//! - [`error`]: [`ClientError`] with `is_retryable` / `is_indeterminate`.
//!
//! The client depends only on the wire protocol (`shoal-proto`), never on
//! server internals.

pub mod client;
pub mod consistency;
pub mod error;
mod request_ids;
pub mod routing;
pub mod session;

pub use client::{ClientConfig, Entry, Key, Mutation, ScanOptions, ScanPage, ShoalClient, Versioned, WriteAck};
pub use consistency::{Condition, PutOptions, ReadConsistency, WriteResult};
pub use error::{ClientError, ClientResult};
pub use session::Session;
