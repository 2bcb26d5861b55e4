//! The shard-manager configuration: TOML, unknown fields rejected, defaults
//! here, `validate()` naming the bad field. See `shard-manager/example.toml`.

use anyhow::bail;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManagerConfig {
    /// Holds the RocksDB database of the durable state.
    pub data_dir: PathBuf,
    /// gRPC address for nodes, clients and operators.
    pub listen: String,
    /// No heartbeat for this long: the node is suspect.
    #[serde(default = "default_suspect_after_ms")]
    pub suspect_after_ms: u64,
    /// No heartbeat for this long: the node is dead and its replicas are
    /// rebuilt elsewhere (the repair grace period).
    #[serde(default = "default_dead_after_ms")]
    pub dead_after_ms: u64,
    /// The cluster-wide budget of μshard moves.
    #[serde(default)]
    pub moves: MoveBudget,
    /// When shards of compact keyspaces split by themselves.
    #[serde(default)]
    pub splits: SplitTriggers,
}

/// Automatic splits of compact keyspaces' shards (docs/moves.md): a shard
/// over `max_shard_bytes`, or over `max_shard_ops_per_sec` for
/// `load_windows` windows in a row, splits, then neither half splits again
/// for `cooldown_ms`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitTriggers {
    /// Bytes on disk (all replicas' largest report); 0 = never by size.
    #[serde(default = "default_max_shard_bytes")]
    pub max_shard_bytes: u64,
    /// Client requests per second over all its replicas; 0 = never by load.
    #[serde(default = "default_max_shard_ops_per_sec")]
    pub max_shard_ops_per_sec: f64,
    /// How many windows in a row the load must be over the threshold.
    #[serde(default = "default_load_windows")]
    pub load_windows: u32,
    /// One window, in milliseconds.
    #[serde(default = "default_window_ms")]
    pub window_ms: u64,
    /// After a split, how long neither half splits again.
    #[serde(default = "default_split_cooldown_ms")]
    pub cooldown_ms: u64,
}

impl Default for SplitTriggers {
    fn default() -> Self {
        SplitTriggers {
            max_shard_bytes: default_max_shard_bytes(),
            max_shard_ops_per_sec: default_max_shard_ops_per_sec(),
            load_windows: default_load_windows(),
            window_ms: default_window_ms(),
            cooldown_ms: default_split_cooldown_ms(),
        }
    }
}

fn default_max_shard_bytes() -> u64 {
    4 << 30
}

fn default_max_shard_ops_per_sec() -> f64 {
    20_000.0
}

fn default_load_windows() -> u32 {
    3
}

fn default_window_ms() -> u64 {
    10_000
}

fn default_split_cooldown_ms() -> u64 {
    300_000
}

/// How much moving the cluster does at once (docs/moves.md).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoveBudget {
    /// Moves copying at the same time; more wait their turn.
    #[serde(default = "default_max_concurrent")]
    pub max_concurrent: u32,
    /// Copy rate of all moves together, bytes per second (0 = unlimited);
    /// each running move gets an equal share.
    #[serde(default = "default_bytes_per_sec")]
    pub bytes_per_sec: u64,
    /// How long a source keeps a moved μshard's records after it answers
    /// `WRONG_SHARD` for it (reads already under way finish on them).
    #[serde(default = "default_release_grace_ms")]
    pub release_grace_ms: u64,
}

impl Default for MoveBudget {
    fn default() -> Self {
        MoveBudget {
            max_concurrent: default_max_concurrent(),
            bytes_per_sec: default_bytes_per_sec(),
            release_grace_ms: default_release_grace_ms(),
        }
    }
}

fn default_max_concurrent() -> u32 {
    2
}

fn default_bytes_per_sec() -> u64 {
    64 << 20
}

fn default_release_grace_ms() -> u64 {
    5_000
}

fn default_suspect_after_ms() -> u64 {
    2_000
}

fn default_dead_after_ms() -> u64 {
    30_000
}

impl ManagerConfig {
    pub fn load(path: &Path) -> anyhow::Result<ManagerConfig> {
        let config: ManagerConfig = crate::read_toml(path, "config")?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        if self.listen.is_empty() {
            bail!("listen: must not be empty");
        }
        if self.suspect_after_ms == 0 {
            bail!("suspect_after_ms: must be at least 1");
        }
        if self.dead_after_ms <= self.suspect_after_ms {
            bail!("dead_after_ms: must exceed suspect_after_ms");
        }
        if self.moves.max_concurrent == 0 {
            bail!("moves.max_concurrent: must be at least 1");
        }
        if self.splits.load_windows == 0 {
            bail!("splits.load_windows: must be at least 1");
        }
        if self.splits.window_ms == 0 {
            bail!("splits.window_ms: must be at least 1");
        }
        let ops = self.splits.max_shard_ops_per_sec;
        if ops.is_nan() || ops < 0.0 {
            bail!("splits.max_shard_ops_per_sec: must be 0 (off) or more");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_file_parses_and_validates() {
        let config: ManagerConfig = toml::from_str(include_str!("../../shard-manager/example.toml")).unwrap();
        config.validate().unwrap();
    }

    #[test]
    fn bad_timing_names_the_field() {
        let mut config: ManagerConfig = toml::from_str(include_str!("../../shard-manager/example.toml")).unwrap();
        config.dead_after_ms = 1;
        assert!(config.validate().unwrap_err().to_string().starts_with("dead_after_ms"));
        let err = toml::from_str::<ManagerConfig>("data_dir = \"x\"\nlisten = \"y\"\nlisten_typo = 1\n").unwrap_err();
        assert!(err.to_string().contains("listen_typo"));
    }
}
