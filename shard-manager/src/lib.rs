//! shard-manager: the Shoal control plane (not built yet).
//!
//! It will own nodes, keyspaces, shards, primaries, epochs and the versioned
//! μshard → shard map, reconciling intended against observed state. Until it
//! exists, kv-servers read a static layout file (`kv-server/src/layout.rs`)
//! and every response carries epoch 0. See ARCHITECTURE.md, "What is not
//! built yet".
