//! The cluster layout: nodes, keyspaces, shards and their replicas. Its
//! types (the static layout file's format, and the shard map as a node
//! holds it) live in `shoal-config`, shared with the launcher that writes
//! layout files; kv-server names them through this module.

pub use shoal_config::layout::{ClusterLayout, KeyspaceLayout, NodeLayout, ShardLayout};
