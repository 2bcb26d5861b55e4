//! shard-manager: the Shoal control plane.
//!
//! # Layout
//! - [`model`]: the records it keeps: nodes, keyspaces, shards.
//! - [`store`]: **what is durable and why**; the only module naming RocksDB.
//! - [`placement`]: pure placement rules (replicas, primaries), unit tested.
//! - [`repair`]: pure: the next membership step of a shard (repair,
//!   drain), unit tested; [`rebalance`]: pure: the next replica or primary
//!   to move so that nodes carry even loads.
//! - [`moves`]: drives μshard moves through their phases;
//!   [`split_trigger`]: pure: which shards split by themselves;
//!   [`locality`]: pure: which μshards of akkio keyspaces follow their
//!   traffic to another region.
//! - [`manager`]: the operations, one file each: `nodes` (registration,
//!   heartbeats, liveness, drain / activate / remove), `keyspaces`,
//!   `primaries` (failover and moves under epochs), `membership`,
//!   `balancing`, `moves` (μshard move records), `resharding` (split,
//!   merge).
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
//! replicas after a grace period, drain and remove, rebalancing, live
//! μshard moves, split and merge. Not yet: high availability of the shard
//! manager itself (see ARCHITECTURE.md).

// tonic::Status is the error type of every gRPC handler.
#![allow(clippy::result_large_err)]

pub mod clock;
pub mod config;
pub mod layout_service;
pub mod locality;
pub mod manager;
pub mod model;
pub mod moves;
pub mod placement;
pub mod rebalance;
pub mod repair;
pub mod server;
pub mod service;
pub mod split_trigger;
pub mod store;
pub mod wire;
