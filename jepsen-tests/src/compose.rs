//! The docker-compose cluster of `docker-compose.yml` as a [`Target`]:
//! faults are `docker kill` / `start`, `docker pause` / `unpause`, and
//! iptables rules inside each container's network namespace (entered with
//! `nsenter` from the host, which needs root). Traffic goes only to the
//! containers and to the ports compose publishes on 127.0.0.1.

use crate::target::Target;
use shoal_proto::admin::admin_client::AdminClient;
use shoal_proto::admin::SetFailpointRequest;
use shoal_proto::sm::shard_manager_client::ShardManagerClient;
use shoal_proto::sm::{
    ClockOffset, GetShardMapRequest, MergeShardRequest, MovePrimaryRequest, MoveUshardRequest, NodeRequest, ShardMap,
    SplitShardRequest,
};
use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

const SHARD_MANAGER: &str = "127.0.0.1:7100";
const SHARD_MANAGER_CONTAINER: &str = "shoal-shard-manager";

pub struct ComposeTarget {
    /// Node id → (container, client address on the host, container IP).
    nodes: BTreeMap<u64, (String, String, String)>,
    sm_ip: String,
}

fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(program).args(args).output()?;
    if !out.status.success() {
        anyhow::bail!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn inspect(container: &str, format: &str) -> anyhow::Result<String> {
    run("docker", &["inspect", "-f", format, container])
}

fn ip_of(container: &str) -> anyhow::Result<String> {
    inspect(container, "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}")
}

async fn channel(addr: &str) -> anyhow::Result<tonic::transport::Channel> {
    Ok(tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_millis(500))
        .timeout(Duration::from_secs(5))
        .connect()
        .await?)
}

impl ComposeTarget {
    /// Attaches to a running compose cluster: waits until the shard manager
    /// sees five nodes alive and the `default` keyspace exists.
    pub async fn attach() -> anyhow::Result<ComposeTarget> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        let map = loop {
            let map = async {
                Ok::<_, anyhow::Error>(
                    ShardManagerClient::new(channel(SHARD_MANAGER).await?)
                        .get_shard_map(GetShardMapRequest {})
                        .await?
                        .into_inner(),
                )
            }
            .await;
            match map {
                Ok(map)
                    if map.nodes.iter().filter(|n| n.liveness == "alive").count() >= 5
                        && map.keyspaces.iter().any(|k| k.name == "default") =>
                {
                    break map
                }
                _ if tokio::time::Instant::now() >= deadline => {
                    anyhow::bail!("the compose cluster is not up (docker-compose up -d; docker-compose ps)")
                }
                _ => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        };
        let mut nodes = BTreeMap::new();
        for node in &map.nodes {
            // Node i publishes its client port 710i: that names its container.
            let port = node.client_addr.rsplit(':').next().unwrap_or_default();
            let index = port.strip_prefix("710").unwrap_or_default();
            let container = format!("shoal-node{index}");
            let ip = ip_of(&container)?;
            nodes.insert(node.node_id, (container, node.client_addr.clone(), ip));
        }
        Ok(ComposeTarget {
            nodes,
            sm_ip: ip_of(SHARD_MANAGER_CONTAINER)?,
        })
    }

    fn container(&self, node: u64) -> anyhow::Result<&str> {
        self.nodes
            .get(&node)
            .map(|(c, _, _)| c.as_str())
            .ok_or_else(|| anyhow::anyhow!("unknown node {node}"))
    }

    fn ip(&self, node: u64) -> &str {
        self.nodes.get(&node).map(|(_, _, ip)| ip.as_str()).unwrap_or("")
    }

    /// Runs iptables inside `node`'s network namespace.
    fn iptables(&self, node: u64, args: &[&str]) -> anyhow::Result<()> {
        let pid = inspect(self.container(node)?, "{{.State.Pid}}")?;
        if pid == "0" {
            return Ok(()); // not running: no namespace, nothing to filter
        }
        let mut full = vec!["-t", pid.as_str(), "-n", "iptables"];
        full.extend_from_slice(args);
        run("nsenter", &full).map(drop)
    }

    fn drop_between(&self, node: u64, peer_ip: &str) -> anyhow::Result<()> {
        self.iptables(node, &["-A", "INPUT", "-s", peer_ip, "-j", "DROP"])?;
        self.iptables(node, &["-A", "OUTPUT", "-d", peer_ip, "-j", "DROP"])
    }
}

impl Target for ComposeTarget {
    fn endpoints(&self) -> Vec<String> {
        let mut endpoints = vec![SHARD_MANAGER.to_string()];
        endpoints.extend(self.nodes.values().map(|(_, addr, _)| addr.clone()));
        endpoints
    }

    fn nodes(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    fn kill(&mut self, node: u64) -> anyhow::Result<()> {
        run("docker", &["kill", "-s", "KILL", self.container(node)?]).map(drop)
    }

    fn restart(&mut self, node: u64) -> anyhow::Result<()> {
        run("docker", &["start", self.container(node)?]).map(drop)
    }

    fn pause(&mut self, node: u64) -> anyhow::Result<()> {
        run("docker", &["pause", self.container(node)?]).map(drop)
    }

    fn resume(&mut self, node: u64) -> anyhow::Result<()> {
        run("docker", &["unpause", self.container(node)?]).map(drop)
    }

    fn kill_shard_manager(&mut self) -> anyhow::Result<()> {
        run("docker", &["kill", "-s", "KILL", SHARD_MANAGER_CONTAINER]).map(drop)
    }

    fn restart_shard_manager(&mut self) -> anyhow::Result<()> {
        run("docker", &["start", SHARD_MANAGER_CONTAINER]).map(drop)
    }

    async fn partition(&mut self, side_a: &[u64], side_b: &[u64]) -> anyhow::Result<()> {
        for a in side_a {
            for b in side_b {
                self.drop_between(*a, self.ip(*b))?;
                self.drop_between(*b, self.ip(*a))?;
            }
        }
        Ok(())
    }

    async fn isolate(&mut self, node: u64) -> anyhow::Result<()> {
        for peer in self.nodes() {
            if peer != node {
                self.drop_between(node, self.ip(peer))?;
            }
        }
        let sm_ip = self.sm_ip.clone();
        self.drop_between(node, &sm_ip)
    }

    async fn cut_one_way(&mut self, from: &[u64], to: &[u64]) -> anyhow::Result<()> {
        // Only packets in the direction that opened the connection: what
        // `from` sends is lost, while connections `to` opens still carry
        // their requests and `from`'s answers.
        for a in from {
            for b in to {
                let ip = self.ip(*b).to_string();
                self.iptables(
                    *a,
                    &[
                        "-A",
                        "OUTPUT",
                        "-d",
                        &ip,
                        "-m",
                        "conntrack",
                        "--ctdir",
                        "ORIGINAL",
                        "-j",
                        "DROP",
                    ],
                )?;
            }
        }
        Ok(())
    }

    async fn cut_from_shard_manager(&mut self, node: u64) -> anyhow::Result<()> {
        let sm_ip = self.sm_ip.clone();
        self.drop_between(node, &sm_ip)
    }

    async fn heal_network(&mut self) -> anyhow::Result<()> {
        for node in self.nodes() {
            self.iptables(node, &["-F", "INPUT"])?;
            self.iptables(node, &["-F", "OUTPUT"])?;
        }
        Ok(())
    }

    async fn set_failpoint(&mut self, node: u64, name: &str, actions: &str) -> anyhow::Result<()> {
        let addr = self.nodes.get(&node).map(|(_, a, _)| a.clone()).unwrap_or_default();
        AdminClient::new(channel(&addr).await?)
            .set_failpoint(SetFailpointRequest {
                name: name.into(),
                actions: actions.into(),
            })
            .await?;
        Ok(())
    }

    async fn shard_map(&self) -> anyhow::Result<ShardMap> {
        Ok(ShardManagerClient::new(channel(SHARD_MANAGER).await?)
            .get_shard_map(GetShardMapRequest {})
            .await?
            .into_inner())
    }

    async fn move_primary(&self, shard: u64, node: u64) -> anyhow::Result<()> {
        ShardManagerClient::new(channel(SHARD_MANAGER).await?)
            .move_primary(MovePrimaryRequest {
                shard_id: shard,
                node_id: node,
            })
            .await?;
        Ok(())
    }

    async fn move_ushard(&self, ushard: u32, to: u64) -> anyhow::Result<u64> {
        let started = ShardManagerClient::new(channel(SHARD_MANAGER).await?)
            .move_ushard(MoveUshardRequest {
                keyspace: "default".into(),
                ushard,
                to_shard: to,
            })
            .await?
            .into_inner();
        Ok(started.move_id)
    }

    async fn split_shard(&self, shard: u64) -> anyhow::Result<u64> {
        let response = ShardManagerClient::new(channel(SHARD_MANAGER).await?)
            .split_shard(SplitShardRequest { shard_id: shard })
            .await?
            .into_inner();
        Ok(response.new_shard_id)
    }

    async fn merge_shard(&self, shard: u64, into: u64) -> anyhow::Result<usize> {
        let response = ShardManagerClient::new(channel(SHARD_MANAGER).await?)
            .merge_shard(MergeShardRequest {
                shard_id: shard,
                into_shard_id: into,
            })
            .await?
            .into_inner();
        Ok(response.moves.len())
    }

    async fn drain(&self, node: u64) -> anyhow::Result<()> {
        let mut sm = ShardManagerClient::new(channel(SHARD_MANAGER).await?);
        sm.drain_node(NodeRequest { node_id: node }).await?;
        Ok(())
    }

    async fn activate(&self, node: u64) -> anyhow::Result<()> {
        let mut sm = ShardManagerClient::new(channel(SHARD_MANAGER).await?);
        sm.activate_node(NodeRequest { node_id: node }).await?;
        Ok(())
    }

    async fn set_shard_manager_clock(&self, offset_ms: i64) -> anyhow::Result<()> {
        let mut sm = ShardManagerClient::new(channel(SHARD_MANAGER).await?);
        sm.set_clock_offset(ClockOffset { offset_ms }).await?;
        Ok(())
    }

    async fn set_node_clock(&self, node: u64, offset_ms: i64) -> anyhow::Result<()> {
        let addr = self.nodes.get(&node).map(|(_, a, _)| a.clone()).unwrap_or_default();
        AdminClient::new(channel(&addr).await?)
            .set_clock_offset(shoal_proto::admin::SetClockOffsetRequest { offset_ms })
            .await?;
        Ok(())
    }

    /// Leaves the cluster whole; taking it down is docker-compose's job.
    /// Every step is tried even when an earlier one fails.
    async fn stop(&mut self) {
        let _ = run("docker", &["start", SHARD_MANAGER_CONTAINER]);
        for (container, _, _) in self.nodes.values() {
            let _ = run("docker", &["unpause", container]);
            let _ = run("docker", &["start", container]);
        }
        let _ = self.heal_network().await;
        let _ = self.set_shard_manager_clock(0).await;
        // Give restarted containers a moment to listen before the RPCs.
        tokio::time::sleep(Duration::from_secs(2)).await;
        for node in self.nodes() {
            let _ = self.activate(node).await;
            for bug in ["ack-before-commit", "multi-get-torn"] {
                let _ = self.set_failpoint(node, bug, "off").await;
            }
            let _ = self.set_node_clock(node, 0).await;
        }
    }
}
