//! The kv-server configuration. The file format, its defaults and its
//! validation live in `shoal-config` (shared with the launcher that writes
//! these files); this module adds what depends on how this kv-server was
//! built: openraft's settings, and refusing faults it cannot inject.

use anyhow::{bail, Context};
pub use shoal_config::node::{FaultInjection, Limits, NodeConfig, RaftTuning, ReadTuning};

/// Reads and validates a config file, and refuses what this build cannot
/// honour, before the node binds or opens anything.
pub fn load(path: &std::path::Path) -> anyhow::Result<NodeConfig> {
    let config = NodeConfig::load(path)?;
    check_build_supports(&config)?;
    Ok(config)
}

/// Refuses a config this build cannot honour: a fault switched on in a
/// kv-server built without the `failpoints` feature.
pub fn check_build_supports(config: &NodeConfig) -> anyhow::Result<()> {
    if config.faults.lose_unsynced_writes && !cfg!(feature = "failpoints") {
        bail!("faults.lose_unsynced_writes: needs a kv-server built with the failpoints feature");
    }
    Ok(())
}

/// openraft's settings for every shard of this node.
pub fn openraft_config(r: &RaftTuning) -> anyhow::Result<openraft::Config> {
    let config = openraft::Config {
        cluster_name: "shoal".into(),
        heartbeat_interval: r.heartbeat_interval_ms,
        election_timeout_min: r.election_timeout_min_ms,
        election_timeout_max: r.election_timeout_max_ms,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(r.snapshot_every_entries),
        max_in_snapshot_log_to_keep: r.logs_kept_behind_snapshot,
        // A candidate first asks whether it could win (see the PreVote RPC).
        enable_pre_vote: Some(true),
        // A restarted leader must win an election again. Restoring its
        // leadership would trust its committed index, which is not
        // fsynced: after a power loss it can lag writes a quorum
        // acknowledged, and reads served at it would miss them.
        enable_leader_restore: Some(false),
        ..Default::default()
    };
    config.validate().context("raft: openraft rejected the settings")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_raft_tuning_is_a_valid_openraft_config() {
        openraft_config(&RaftTuning::default()).unwrap();
    }

    #[test]
    fn a_fault_needs_a_build_with_failpoints() {
        let mut config = NodeConfig::new("/tmp/x".into(), "127.0.0.1:0".into(), "127.0.0.1:0".into());
        config.faults.lose_unsynced_writes = true;
        let refused = check_build_supports(&config).is_err();
        assert_eq!(refused, !cfg!(feature = "failpoints"));
    }
}
