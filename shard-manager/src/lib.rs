//! shard-manager: the Shoal control plane.
//!
//! # Layout
//! - [`model`]: the records it keeps: nodes, keyspaces, shards.
//! - [`store`]: **what is durable and why**; the only module naming RocksDB.
//! - [`placement`]: pure placement rules (replicas, primaries), unit tested.
//! - [`repair`]: pure: the next membership step of a shard (repair, drain,
//!   balance), unit tested.
//! - [`manager`]: the operations, one file each: `nodes` (registration,
//!   heartbeats, liveness, drain / activate / remove), `keyspaces`,
//!   `primaries` (failover and moves under epochs), `membership`.
//! - [`clock`]: the clock liveness is judged by (skewable in fault tests).
//! - [`service`]: the gRPC service and its one error → status mapping;
//!   [`layout_service`]: `Admin/GetLayout` for clients; [`wire`]: **the one
//!   place records and typed ids meet protobuf**.
//! - [`config`], [`server`]: configuration and the runnable server (the
//!   reconcile loop).
//!
//! Built: durable state, node registration with ids never reused,
//! heartbeats and liveness, keyspace creation with placement and primaries,
//! the shard map, primary failover and moves with epochs, repair of lost
//! replicas after a grace period, drain and remove. Not yet: high
//! availability of the shard manager itself, live μshard moves (see
//! ARCHITECTURE.md).

// tonic::Status is the error type of every gRPC handler.
#![allow(clippy::result_large_err)]

pub mod clock;
pub mod config;
pub mod layout_service;
pub mod manager;
pub mod model;
pub mod moves;
pub mod placement;
pub mod repair;
pub mod server;
pub mod service;
pub mod split_trigger;
pub mod store;
pub mod wire;
