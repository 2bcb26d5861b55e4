//! The file formats of Shoal's processes, as serde types with their
//! defaults and validation: **every config and layout file is read and
//! written through these types**, by the servers and by the launcher
//! (`local-cluster`) alike.
//!
//! - [`node`]: the kv-server config (`kv-server/example.toml`).
//! - [`manager`]: the shard-manager config (`shard-manager/example.toml`).
//! - [`layout`]: the static cluster layout (nodes, keyspaces, shards).
//!
//! What depends on how a server was built (openraft's settings, whether
//! fault injection is compiled in) is checked by that server, not here.

pub mod layout;
pub mod manager;
pub mod node;

use anyhow::Context;
use std::path::Path;

/// Reads a TOML file of kind `what` ("config", "layout", …) into `T`; the
/// error names the file. Validation is the caller's.
pub fn read_toml<T: serde::de::DeserializeOwned>(path: &Path, what: &str) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {what} {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing {what} {}", path.display()))
}

/// The region of a node whose config or layout names none.
pub const DEFAULT_REGION: &str = "local";

pub use layout::ClusterLayout;
pub use manager::ManagerConfig;
pub use node::NodeConfig;
