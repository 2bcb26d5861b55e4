//! shard-manager: the Shoal control plane.
//!
//! # Layout
//! - [`model`]: the records it keeps: nodes, keyspaces, shards.
//! - [`store`]: **what is durable and why**; the only module naming RocksDB.
//! - [`placement`]: pure placement rules (replicas, primaries), unit tested.
//! - [`manager`]: registration, heartbeats, keyspace creation, the map.
//! - [`service`]: the gRPC service and its one error → status mapping.
//! - [`config`], [`server`]: configuration and the runnable server.
//!
//! Built so far: durable state, node registration with ids never reused,
//! heartbeats and liveness, keyspace creation with placement and primaries,
//! the shard map, primary failover and primary moves with epochs. Not yet:
//! repair, drain, remove, high availability (see ARCHITECTURE.md).

// tonic::Status is the error type of every gRPC handler.
#![allow(clippy::result_large_err)]

pub mod clock;
pub mod config;
pub mod layout_service;
pub mod manager;
pub mod model;
pub mod placement;
pub mod repair;
pub mod server;
pub mod service;
pub mod store;
