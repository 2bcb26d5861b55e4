//! The shard-manager configuration. Its file format, defaults and
//! validation live in `shoal-config` (shared with the launcher that writes
//! these files); see `shard-manager/example.toml`.

pub use shoal_config::manager::ManagerConfig;
