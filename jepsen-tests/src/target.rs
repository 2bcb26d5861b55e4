//! The cluster under test, as the nemeses and clients need it. Two kinds:
//! [`LocalTarget`], kv-server processes on 127.0.0.1 started by this run,
//! and (see `compose.rs`) containers started by docker-compose.

use local_cluster::{LocalCluster, LocalClusterSpec};
use shoal_proto::sm::ShardMap;
use std::time::Duration;

/// What a run does to a cluster.
#[allow(async_fn_in_trait)]
pub trait Target {
    /// Where clients fetch the map: the shard manager first, then the nodes.
    fn endpoints(&self) -> Vec<String>;
    fn nodes(&self) -> Vec<u64>;
    fn kill(&mut self, node: u64) -> anyhow::Result<()>;
    fn restart(&mut self, node: u64) -> anyhow::Result<()>;
    fn pause(&mut self, node: u64) -> anyhow::Result<()>;
    fn resume(&mut self, node: u64) -> anyhow::Result<()>;
    fn kill_shard_manager(&mut self) -> anyhow::Result<()>;
    fn restart_shard_manager(&mut self) -> anyhow::Result<()>;
    /// Cuts traffic between two groups of nodes (both directions).
    async fn partition(&mut self, side_a: &[u64], side_b: &[u64]) -> anyhow::Result<()>;
    /// Cuts one node off from every peer and from the shard manager.
    async fn isolate(&mut self, node: u64) -> anyhow::Result<()>;
    /// Messages from `from` to `to` are lost; the other way still works
    /// (requests `to` sends reach `from`, and their answers come back).
    async fn cut_one_way(&mut self, from: &[u64], to: &[u64]) -> anyhow::Result<()>;
    /// Cuts one node off from the shard manager only.
    async fn cut_from_shard_manager(&mut self, node: u64) -> anyhow::Result<()>;
    /// Undoes every partition.
    async fn heal_network(&mut self) -> anyhow::Result<()>;
    async fn set_failpoint(&mut self, node: u64, name: &str, actions: &str) -> anyhow::Result<()>;
    async fn shard_map(&self) -> anyhow::Result<ShardMap>;
    async fn move_primary(&self, shard: u64, node: u64) -> anyhow::Result<()>;
    /// Starts moving μshard `ushard` of the `default` keyspace to shard
    /// `to`; returns the move's id.
    async fn move_ushard(&self, ushard: u32, to: u64) -> anyhow::Result<u64>;
    /// Splits shard `shard`; returns the new shard's id.
    async fn split_shard(&self, shard: u64) -> anyhow::Result<u64>;
    /// Merges shard `shard` into `into`; returns how many μshards move.
    async fn merge_shard(&self, shard: u64, into: u64) -> anyhow::Result<usize>;
    /// Starts draining a node through the shard manager.
    async fn drain(&self, node: u64) -> anyhow::Result<()>;
    /// Ends a drain.
    async fn activate(&self, node: u64) -> anyhow::Result<()>;
    /// Shifts the shard manager's clock (shard-manager `failpoints` feature).
    async fn set_shard_manager_clock(&self, offset_ms: i64) -> anyhow::Result<()>;
    /// Shifts a node's wall clock (kv-server `failpoints` feature).
    async fn set_node_clock(&self, node: u64, offset_ms: i64) -> anyhow::Result<()>;
    /// Ends the run: a local cluster is stopped; a compose cluster is left
    /// whole (running, unpaused, unfiltered, nothing draining, no failpoint
    /// on), even after a run that failed half-way through a fault.
    async fn stop(&mut self);
}

/// kv-server processes and a shard manager on 127.0.0.1, started in a
/// temporary folder; a partition is made with failpoints (`raft-send` to
/// the other side, on both sides), so the kv-server must be built with the
/// `failpoints` feature.
pub struct LocalTarget {
    cluster: LocalCluster,
    _dir: tempfile::TempDir,
}

impl LocalTarget {
    /// Five nodes in two regions, four shards of three replicas. With
    /// `lose_unsynced_writes` (a mix with power-kill:
    /// `Nemesis::needs_power_loss`) the nodes run with
    /// `faults.lose_unsynced_writes`, so every kill loses what was not
    /// fsynced.
    pub async fn start(lose_unsynced_writes: bool) -> anyhow::Result<LocalTarget> {
        let dir = tempfile::tempdir()?;
        let mut spec = LocalClusterSpec::new(dir.path());
        spec.nodes = 5;
        spec.shards = 4;
        spec.shard_manager = true;
        spec.regions = vec!["east".into(), "west".into()];
        // Faults are short: no repair during a run.
        spec.dead_after = Duration::from_secs(60);
        if lose_unsynced_writes {
            spec.faults.lose_unsynced_writes = true;
        }
        let cluster = LocalCluster::start(spec)?;
        cluster.ensure_default_keyspace(Duration::from_secs(60)).await?;
        cluster.wait_for_leaders(Duration::from_secs(60)).await?;
        Ok(LocalTarget { cluster, _dir: dir })
    }

    fn signal(&self, node: u64, signal: libc::c_int) -> anyhow::Result<()> {
        let pid = self
            .cluster
            .pid(node)
            .ok_or_else(|| anyhow::anyhow!("node {node} is not running"))?;
        // SAFETY: kill(2) on a child process this run started.
        if unsafe { libc::kill(pid as libc::pid_t, signal) } != 0 {
            anyhow::bail!("signal {signal} to node {node}: {}", std::io::Error::last_os_error());
        }
        Ok(())
    }
}

fn list(nodes: &[u64]) -> String {
    nodes.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}

impl Target for LocalTarget {
    fn endpoints(&self) -> Vec<String> {
        let mut endpoints: Vec<String> = self
            .cluster
            .shard_manager_addr()
            .map(String::from)
            .into_iter()
            .collect();
        endpoints.extend(self.cluster.endpoints());
        endpoints
    }

    fn nodes(&self) -> Vec<u64> {
        (1..=self.cluster.endpoints().len() as u64).collect()
    }

    fn kill(&mut self, node: u64) -> anyhow::Result<()> {
        self.cluster.kill(node)
    }

    fn restart(&mut self, node: u64) -> anyhow::Result<()> {
        self.cluster.start_node(node)
    }

    fn pause(&mut self, node: u64) -> anyhow::Result<()> {
        self.signal(node, libc::SIGSTOP)
    }

    fn resume(&mut self, node: u64) -> anyhow::Result<()> {
        self.signal(node, libc::SIGCONT)
    }

    fn kill_shard_manager(&mut self) -> anyhow::Result<()> {
        self.cluster.kill_shard_manager()
    }

    fn restart_shard_manager(&mut self) -> anyhow::Result<()> {
        self.cluster.start_shard_manager()
    }

    async fn partition(&mut self, side_a: &[u64], side_b: &[u64]) -> anyhow::Result<()> {
        for (from, to) in [(side_a, side_b), (side_b, side_a)] {
            for node in from {
                let actions = format!("return({})", list(to));
                self.cluster.set_failpoint(*node, "raft-send", &actions).await?;
            }
        }
        Ok(())
    }

    async fn cut_one_way(&mut self, from: &[u64], to: &[u64]) -> anyhow::Result<()> {
        let actions = format!("return({})", list(to));
        for node in from {
            self.cluster.set_failpoint(*node, "raft-send", &actions).await?;
        }
        Ok(())
    }

    async fn cut_from_shard_manager(&mut self, node: u64) -> anyhow::Result<()> {
        self.cluster.set_failpoint(node, "sm-heartbeat", "return").await
    }

    async fn isolate(&mut self, node: u64) -> anyhow::Result<()> {
        for failpoint in ["raft-send", "raft-receive", "sm-heartbeat"] {
            self.cluster.set_failpoint(node, failpoint, "return").await?;
        }
        Ok(())
    }

    async fn heal_network(&mut self) -> anyhow::Result<()> {
        for node in self.nodes() {
            for failpoint in ["raft-send", "raft-receive", "sm-heartbeat"] {
                // A node that is down has nothing to heal.
                let _ = self.cluster.set_failpoint(node, failpoint, "off").await;
            }
        }
        Ok(())
    }

    async fn set_failpoint(&mut self, node: u64, name: &str, actions: &str) -> anyhow::Result<()> {
        self.cluster.set_failpoint(node, name, actions).await
    }

    async fn shard_map(&self) -> anyhow::Result<ShardMap> {
        self.cluster.shard_map().await
    }

    async fn move_primary(&self, shard: u64, node: u64) -> anyhow::Result<()> {
        self.cluster.move_primary(shard, node).await
    }

    async fn move_ushard(&self, ushard: u32, to: u64) -> anyhow::Result<u64> {
        let started = self.cluster.shard_manager()?.move_ushard("default", ushard, to).await?;
        Ok(started.move_id)
    }

    async fn split_shard(&self, shard: u64) -> anyhow::Result<u64> {
        Ok(self.cluster.shard_manager()?.split_shard(shard).await?.new_shard_id)
    }

    async fn merge_shard(&self, shard: u64, into: u64) -> anyhow::Result<usize> {
        Ok(self
            .cluster
            .shard_manager()?
            .merge_shard(shard, into)
            .await?
            .moves
            .len())
    }

    async fn drain(&self, node: u64) -> anyhow::Result<()> {
        self.cluster.drain_node(node).await
    }

    async fn activate(&self, node: u64) -> anyhow::Result<()> {
        self.cluster.activate_node(node).await
    }

    async fn set_shard_manager_clock(&self, offset_ms: i64) -> anyhow::Result<()> {
        self.cluster.set_shard_manager_clock(offset_ms).await
    }

    async fn set_node_clock(&self, node: u64, offset_ms: i64) -> anyhow::Result<()> {
        self.cluster.set_node_clock(node, offset_ms).await
    }

    async fn stop(&mut self) {
        for node in self.nodes() {
            let _ = self.resume(node);
        }
        self.cluster.stop_all(Duration::from_secs(10));
    }
}
