//! The kv-server configuration: one TOML file, unknown fields rejected,
//! every default in this file, and `validate()` naming the bad field.
//! `kv-server/example.toml` documents every field. kv-server adds what
//! depends on its build: openraft's settings and the failpoints check.

use anyhow::bail;
use serde::{Deserialize, Serialize};
use shoal_types::NodeId;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// This node's id. Required with `layout_file`; with `shard_manager` the
    /// shard manager allocates it at first start (kept in `data_dir/node_id`).
    #[serde(default)]
    pub node_id: Option<NodeId>,
    /// Holds `db/` (RocksDB), `snapshots/` and, with a shard manager, `node_id`.
    pub data_dir: PathBuf,
    /// Where to listen for clients (Kv + Admin).
    pub listen_client: String,
    /// Where to listen for peers (Raft transport).
    pub listen_raft: String,
    /// Addresses others use to reach this node; default: the listen addresses.
    #[serde(default)]
    pub advertise_client: Option<String>,
    #[serde(default)]
    pub advertise_raft: Option<String>,
    /// The region this node reports to the shard manager.
    #[serde(default = "default_region")]
    pub region: String,
    /// A static cluster layout (see `layout.rs`). Exactly one of this and
    /// `shard_manager` must be set.
    #[serde(default)]
    pub layout_file: Option<PathBuf>,
    /// Address of the shard manager, which then owns the layout.
    #[serde(default)]
    pub shard_manager: Option<String>,
    /// How often to heartbeat the shard manager.
    #[serde(default = "default_heartbeat_ms")]
    pub sm_heartbeat_interval_ms: u64,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub raft: RaftTuning,
    #[serde(default)]
    pub reads: ReadTuning,
    /// Faults a test switches on at start; a kv-server built without the
    /// `failpoints` feature refuses them.
    #[serde(default)]
    pub faults: FaultInjection,
}

/// Faults switched on for a whole run of the node (docs/failpoints.md).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FaultInjection {
    /// A kill -9 loses every write not yet fsynced, as a power loss would:
    /// the WAL stays in the process until the node syncs it.
    pub lose_unsynced_writes: bool,
}

/// How replicas other than the primary serve reads (docs/consistency.md).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReadTuning {
    /// The most any two nodes' wall clocks may differ. Added to every
    /// follower's staleness estimate; a larger real skew breaks the
    /// bounded-staleness promise.
    pub max_clock_offset_ms: u64,
    /// How long a follower waits to catch up (to a read-your-writes version,
    /// or to the index a leader's freshness stamp names) before refusing
    /// with STALE_REPLICA.
    pub follower_wait_ms: u64,
}

impl Default for ReadTuning {
    fn default() -> Self {
        ReadTuning {
            max_clock_offset_ms: 250,
            follower_wait_ms: 100,
        }
    }
}

fn default_region() -> String {
    crate::DEFAULT_REGION.to_string()
}

fn default_heartbeat_ms() -> u64 {
    500
}

/// Input limits. A request over any of them gets a clear error and writes nothing.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub max_key_bytes: usize,
    pub max_value_bytes: usize,
    pub max_batch_ops: usize,
    /// Sum of key and value bytes of one batch.
    pub max_batch_bytes: usize,
    pub default_scan_limit: u32,
    pub max_scan_limit: u32,
    pub default_scan_bytes: u64,
    pub max_scan_bytes: u64,
    /// Keys one transaction may read, scan ranges included, plus write
    /// (docs/transactions.md).
    pub max_txn_keys: usize,
    /// Sum of the key and value bytes one transaction reads and writes.
    pub max_txn_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_key_bytes: 4 * 1024,
            max_value_bytes: 1024 * 1024,
            max_batch_ops: 1000,
            max_batch_bytes: 4 * 1024 * 1024,
            default_scan_limit: 100,
            max_scan_limit: 10_000,
            default_scan_bytes: 1024 * 1024,
            max_scan_bytes: 16 * 1024 * 1024,
            max_txn_keys: 1000,
            max_txn_bytes: 4 * 1024 * 1024,
        }
    }
}

/// Raft timing and log retention, shared by every shard of the node.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaftTuning {
    pub heartbeat_interval_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Build a snapshot after this many entries since the last one.
    pub snapshot_every_entries: u64,
    /// Entries kept in the log behind a snapshot, so a slightly lagging
    /// follower catches up from the log rather than a full snapshot.
    pub logs_kept_behind_snapshot: u64,
    /// A client's exactly-once record that no request touched for this long
    /// (on the shard's apply clock) is forgotten: a duplicate older than
    /// this is no longer recognised (docs/consistency.md).
    pub idle_client_expiry_ms: u64,
    /// How often each shard leader proposes forgetting idle clients.
    pub idle_client_sweep_ms: u64,
    /// A shard leader ticks the apply clock of a shard no write has stamped
    /// for this long, so follower reads see TTL keys expire at most this
    /// late (docs/consistency.md, "TTL").
    pub clock_tick_ms: u64,
    /// How far back a transaction's snapshot may be: a shard leader raises
    /// the shard's transaction floor to the version it had applied this
    /// long ago, and older snapshots get TXN_TOO_OLD (docs/transactions.md).
    pub txn_window_ms: u64,
}

impl Default for RaftTuning {
    fn default() -> Self {
        RaftTuning {
            heartbeat_interval_ms: 100,
            election_timeout_min_ms: 500,
            election_timeout_max_ms: 1000,
            snapshot_every_entries: 10_000,
            logs_kept_behind_snapshot: 1_000,
            idle_client_expiry_ms: 3_600_000,
            idle_client_sweep_ms: 60_000,
            clock_tick_ms: 1_000,
            txn_window_ms: 10_000,
        }
    }
}

impl NodeConfig {
    /// A config listening on the given addresses with every default and no
    /// layout source: set `layout_file` (and `node_id`) or `shard_manager`
    /// before it validates. For programs that start nodes themselves.
    pub fn new(data_dir: PathBuf, listen_client: String, listen_raft: String) -> NodeConfig {
        NodeConfig {
            node_id: None,
            data_dir,
            listen_client,
            listen_raft,
            advertise_client: None,
            advertise_raft: None,
            region: default_region(),
            layout_file: None,
            shard_manager: None,
            sm_heartbeat_interval_ms: default_heartbeat_ms(),
            limits: Limits::default(),
            raft: RaftTuning::default(),
            reads: ReadTuning::default(),
            faults: FaultInjection::default(),
        }
    }

    pub fn load(path: &Path) -> anyhow::Result<NodeConfig> {
        let config: NodeConfig = crate::read_toml(path, "config")?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        match (&self.layout_file, &self.shard_manager) {
            (Some(_), Some(_)) | (None, None) => bail!("layout_file, shard_manager: set exactly one"),
            (Some(_), None) if self.node_id.is_none() => bail!("node_id: required with layout_file"),
            _ => {}
        }
        if self.node_id == Some(NodeId(0)) {
            bail!("node_id: must be at least 1");
        }
        if self.region.is_empty() {
            bail!("region: must not be empty");
        }
        if self.sm_heartbeat_interval_ms == 0 {
            bail!("sm_heartbeat_interval_ms: must be at least 1");
        }
        if self.listen_client.is_empty() {
            bail!("listen_client: must not be empty");
        }
        if self.listen_raft.is_empty() {
            bail!("listen_raft: must not be empty");
        }
        let l = &self.limits;
        if l.max_key_bytes == 0 || l.max_value_bytes == 0 || l.max_batch_ops == 0 || l.max_batch_bytes == 0 {
            bail!("limits: every max_* must be at least 1");
        }
        if l.default_scan_limit == 0 || l.default_scan_limit > l.max_scan_limit {
            bail!("limits.default_scan_limit: must be between 1 and limits.max_scan_limit");
        }
        if l.default_scan_bytes == 0 || l.default_scan_bytes > l.max_scan_bytes {
            bail!("limits.default_scan_bytes: must be between 1 and limits.max_scan_bytes");
        }
        let r = &self.raft;
        if r.heartbeat_interval_ms == 0 {
            bail!("raft.heartbeat_interval_ms: must be at least 1");
        }
        if r.election_timeout_min_ms <= r.heartbeat_interval_ms {
            bail!("raft.election_timeout_min_ms: must exceed raft.heartbeat_interval_ms");
        }
        if r.election_timeout_max_ms <= r.election_timeout_min_ms {
            bail!("raft.election_timeout_max_ms: must exceed raft.election_timeout_min_ms");
        }
        if r.snapshot_every_entries == 0 {
            bail!("raft.snapshot_every_entries: must be at least 1");
        }
        if r.clock_tick_ms == 0 {
            bail!("raft.clock_tick_ms: must be at least 1");
        }
        Ok(())
    }

    pub fn client_addr(&self) -> &str {
        self.advertise_client.as_deref().unwrap_or(&self.listen_client)
    }

    pub fn raft_addr(&self) -> &str {
        self.advertise_raft.as_deref().unwrap_or(&self.listen_raft)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        node_id = 1
        data_dir = "/tmp/x"
        listen_client = "127.0.0.1:0"
        listen_raft = "127.0.0.1:0"
        layout_file = "layout.toml"
    "#;

    #[test]
    fn layout_source_must_be_exactly_one() {
        let mut config: NodeConfig = toml::from_str(MINIMAL).unwrap();
        config.shard_manager = Some("127.0.0.1:7100".into());
        assert!(config
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("layout_file, shard_manager"));
        config.layout_file = None;
        config.node_id = None;
        config.validate().unwrap();
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let config: NodeConfig = toml::from_str(MINIMAL).unwrap();
        config.validate().unwrap();
        assert_eq!(config.limits.max_key_bytes, 4096);
    }

    #[test]
    fn unknown_field_is_rejected() {
        let text = format!("{MINIMAL}\nlisten_clinet = \"x\"\n");
        let err = toml::from_str::<NodeConfig>(&text).unwrap_err().to_string();
        assert!(err.contains("listen_clinet"), "{err}");
    }

    #[test]
    fn validate_names_the_field() {
        let mut config: NodeConfig = toml::from_str(MINIMAL).unwrap();
        config.raft.election_timeout_min_ms = 50;
        let err = config.validate().unwrap_err().to_string();
        assert!(err.starts_with("raft.election_timeout_min_ms"), "{err}");
    }

    #[test]
    fn example_file_parses() {
        let text = include_str!("../../kv-server/example.toml");
        let config: NodeConfig = toml::from_str(text).unwrap();
        config.validate().unwrap();
    }
}
