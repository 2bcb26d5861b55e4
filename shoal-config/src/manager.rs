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
    /// How evenly replicas, primaries and disk bytes are spread over nodes.
    #[serde(default)]
    pub rebalance: Rebalance,
    /// When μshards of akkio keyspaces follow their traffic's region.
    #[serde(default)]
    pub locality: Locality,
}

/// Akkio-style locality (docs/moves.md, "Locality"): at the end of each
/// window, a μshard of an akkio keyspace whose writes and strong reads
/// came from one region at least `margin` times as often as from the
/// region of its primary, for `windows` windows in a row, moves to a
/// shard whose primary is in that region; then it stays put for
/// `cooldown_ms`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Locality {
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// One window, in milliseconds.
    #[serde(default = "default_window_ms")]
    pub window_ms: u64,
    /// How many times the current region's count the leading region's
    /// must be (more than 1: equal traffic never moves anything).
    #[serde(default = "default_margin")]
    pub margin: f64,
    /// Windows in a row the same region must lead by the margin.
    #[serde(default = "default_load_windows")]
    pub windows: u32,
    /// Fewer operations than this in a window say nothing.
    #[serde(default = "default_min_ops")]
    pub min_ops: u64,
    /// After a move, how long the μshard is left alone.
    #[serde(default = "default_locality_cooldown_ms")]
    pub cooldown_ms: u64,
}

impl Default for Locality {
    fn default() -> Self {
        Locality {
            enabled: true,
            window_ms: default_window_ms(),
            margin: default_margin(),
            windows: default_load_windows(),
            min_ops: default_min_ops(),
            cooldown_ms: default_locality_cooldown_ms(),
        }
    }
}

fn default_margin() -> f64 {
    1.5
}

fn default_min_ops() -> u64 {
    100
}

fn default_locality_cooldown_ms() -> u64 {
    600_000
}

/// Rebalancing (docs/moves.md): while replica count, primary count or disk
/// bytes per usable node differ by more than these, replicas and primaries
/// move, within the move budget (`moves.max_concurrent` changes at once,
/// started no faster than `moves.bytes_per_sec` allows for their bytes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rebalance {
    /// Off: only repair and drain move replicas.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Most and fewest replicas per node may differ by this much.
    #[serde(default = "default_count_tolerance")]
    pub replica_tolerance: u32,
    /// Most and fewest primaries per node may differ by this much.
    #[serde(default = "default_count_tolerance")]
    pub primary_tolerance: u32,
    /// Most and fewest disk bytes per node may differ by this percentage of
    /// the mean ...
    #[serde(default = "default_disk_tolerance_pct")]
    pub disk_tolerance_pct: u32,
    /// ... or by this many bytes, whichever is larger (small clusters are
    /// not worth moving for).
    #[serde(default = "default_disk_min_bytes")]
    pub disk_min_bytes: u64,
}

impl Default for Rebalance {
    fn default() -> Self {
        Rebalance {
            enabled: true,
            replica_tolerance: default_count_tolerance(),
            primary_tolerance: default_count_tolerance(),
            disk_tolerance_pct: default_disk_tolerance_pct(),
            disk_min_bytes: default_disk_min_bytes(),
        }
    }
}

fn default_true() -> bool {
    true
}

fn default_count_tolerance() -> u32 {
    1
}

fn default_disk_tolerance_pct() -> u32 {
    10
}

fn default_disk_min_bytes() -> u64 {
    256 << 20
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
        if self.rebalance.replica_tolerance == 0 || self.rebalance.primary_tolerance == 0 {
            bail!("rebalance.replica_tolerance and rebalance.primary_tolerance: must be at least 1 (0 can never hold when counts do not divide evenly)");
        }
        let margin = self.locality.margin;
        if margin.is_nan() || margin <= 1.0 {
            bail!("locality.margin: must be more than 1 (at 1, even traffic would move μshards back and forth)");
        }
        if self.locality.windows == 0 || self.locality.window_ms == 0 {
            bail!("locality.windows and locality.window_ms: must be at least 1");
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
