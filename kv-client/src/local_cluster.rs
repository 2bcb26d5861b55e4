//! A cluster of kv-server child processes on this machine: what
//! `shoal playground` runs, and what integration tests and benchmarks drive
//! (kill -9, restart, leader lookup).
//!
//! It writes the layout and one config per node under `data_dir`, in the
//! file formats documented in `kv-server/example.toml`, and only talks to
//! 127.0.0.1.

use anyhow::{bail, Context};
use shoal_proto::admin::admin_client::AdminClient;
use shoal_proto::admin::{ReplicaStatusRequest, ReplicaStatusResponse, ShardDigestRequest, ShardDigestResponse};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// How node ports are chosen.
#[derive(Clone, Debug)]
pub enum Ports {
    /// Node i (from 1) listens on `client_base + i - 1` and `raft_base + i - 1`.
    Fixed { client_base: u16, raft_base: u16 },
    /// Free ports picked at start (tests).
    Ephemeral,
}

#[derive(Clone, Debug)]
pub struct LocalClusterSpec {
    pub data_dir: PathBuf,
    pub nodes: u64,
    pub shards: u64,
    pub ushards: u32,
    pub ports: Ports,
    pub kv_server_bin: PathBuf,
    /// Extra lines for each node's `[raft]` table, e.g. `snapshot_every_entries = 500`.
    pub raft_settings: Vec<String>,
}

impl LocalClusterSpec {
    pub fn new(data_dir: impl Into<PathBuf>) -> LocalClusterSpec {
        LocalClusterSpec {
            data_dir: data_dir.into(),
            nodes: 3,
            shards: 4,
            ushards: 64,
            ports: Ports::Ephemeral,
            kv_server_bin: find_kv_server(),
            raft_settings: Vec::new(),
        }
    }
}

/// The kv-server binary: `$SHOAL_KV_SERVER`, else next to this executable
/// (or its parent, for test binaries in `deps/`), else `kv-server` on PATH.
pub fn find_kv_server() -> PathBuf {
    if let Ok(path) = std::env::var("SHOAL_KV_SERVER") {
        return PathBuf::from(path);
    }
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1).take(2) {
            let candidate = dir.join("kv-server");
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    PathBuf::from("kv-server")
}

struct NodeProcess {
    id: u64,
    client_addr: String,
    config_path: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
}

pub struct LocalCluster {
    spec: LocalClusterSpec,
    nodes: Vec<NodeProcess>,
}

fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

fn layout_toml(spec: &LocalClusterSpec, addrs: &[(String, String)]) -> String {
    let mut out =
        String::from("# Written by the shoal local cluster. Static until the shard manager owns it.\nversion = 1\n");
    for (i, (client, raft)) in addrs.iter().enumerate() {
        let _ = write!(
            out,
            "\n[[nodes]]\nid = {}\nclient_addr = \"{client}\"\nraft_addr = \"{raft}\"\nregion = \"local\"\n",
            i + 1
        );
    }
    let shard_ids: Vec<String> = (1..=spec.shards).map(|s| s.to_string()).collect();
    let _ = write!(
        out,
        "\n[[keyspaces]]\nname = \"default\"\nid = 1\nushard_count = {}\nshards = [{}]\n",
        spec.ushards,
        shard_ids.join(", ")
    );
    let node_ids: Vec<u64> = (1..=spec.nodes).collect();
    for shard in 1..=spec.shards {
        // Rotate so every node bootstraps (is listed first for) some shards.
        let mut replicas = node_ids.clone();
        replicas.rotate_left(((shard - 1) % spec.nodes) as usize);
        replicas.truncate(3);
        let list: Vec<String> = replicas.iter().map(u64::to_string).collect();
        let _ = write!(out, "\n[[shards]]\nid = {shard}\nreplicas = [{}]\n", list.join(", "));
    }
    out
}

fn node_toml(spec: &LocalClusterSpec, id: u64, client: &str, raft: &str, layout: &Path) -> String {
    let dir = spec.data_dir.join(format!("node-{id}"));
    let mut out = format!(
        "node_id = {id}\ndata_dir = \"{}\"\nlisten_client = \"{client}\"\nlisten_raft = \"{raft}\"\nlayout_file = \"{}\"\n",
        dir.display(),
        layout.display()
    );
    if !spec.raft_settings.is_empty() {
        out.push_str("\n[raft]\n");
        for line in &spec.raft_settings {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Reads `client_addr` of every node back from an existing layout file, so a
/// restarted playground keeps the addresses its data was created with.
fn addrs_from_layout(text: &str) -> Vec<(String, String)> {
    let mut clients = Vec::new();
    let mut rafts = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        let value = |l: &str| l.split('"').nth(1).unwrap_or_default().to_string();
        if line.starts_with("client_addr") {
            clients.push(value(line));
        } else if line.starts_with("raft_addr") {
            rafts.push(value(line));
        }
    }
    clients.into_iter().zip(rafts).collect()
}

impl LocalCluster {
    /// Writes the layout and node configs (reusing an existing layout in
    /// `data_dir`) and starts every node.
    pub fn start(spec: LocalClusterSpec) -> anyhow::Result<LocalCluster> {
        if spec.nodes == 0 || spec.shards == 0 || spec.ushards == 0 {
            bail!("nodes, shards and ushards must each be at least 1");
        }
        std::fs::create_dir_all(&spec.data_dir).with_context(|| format!("creating {}", spec.data_dir.display()))?;
        let data_dir = spec.data_dir.canonicalize()?;
        let spec = LocalClusterSpec { data_dir, ..spec };
        let layout_path = spec.data_dir.join("layout.toml");
        let addrs = if layout_path.exists() {
            let existing = addrs_from_layout(&std::fs::read_to_string(&layout_path)?);
            if existing.len() as u64 != spec.nodes {
                bail!(
                    "{} describes {} nodes, not {}; use another --data-dir",
                    layout_path.display(),
                    existing.len(),
                    spec.nodes
                );
            }
            existing
        } else {
            let mut addrs = Vec::new();
            for i in 0..spec.nodes as u16 {
                let (client, raft) = match spec.ports {
                    Ports::Fixed { client_base, raft_base } => (client_base + i, raft_base + i),
                    Ports::Ephemeral => (free_port()?, free_port()?),
                };
                addrs.push((format!("127.0.0.1:{client}"), format!("127.0.0.1:{raft}")));
            }
            std::fs::write(&layout_path, layout_toml(&spec, &addrs))?;
            addrs
        };
        let mut nodes = Vec::new();
        for (i, (client, raft)) in addrs.iter().enumerate() {
            let id = i as u64 + 1;
            let config_path = spec.data_dir.join(format!("node-{id}.toml"));
            std::fs::write(&config_path, node_toml(&spec, id, client, raft, &layout_path))?;
            nodes.push(NodeProcess {
                id,
                client_addr: client.clone(),
                config_path,
                log_path: spec.data_dir.join(format!("node-{id}.log")),
                child: None,
            });
        }
        let mut cluster = LocalCluster { spec, nodes };
        for id in 1..=cluster.nodes.len() as u64 {
            cluster.start_node(id)?;
        }
        Ok(cluster)
    }

    fn node_mut(&mut self, id: u64) -> anyhow::Result<&mut NodeProcess> {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .with_context(|| format!("no node {id}"))
    }

    /// Starts a node that is not running.
    pub fn start_node(&mut self, id: u64) -> anyhow::Result<()> {
        let bin = self.spec.kv_server_bin.clone();
        let node = self.node_mut(id)?;
        if node.child.is_some() {
            bail!("node {id} is already running");
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log_path)?;
        let child = Command::new(&bin)
            .arg("--config")
            .arg(&node.config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {} (build it with `cargo build -p kv-server`)", bin.display()))?;
        node.child = Some(child);
        Ok(())
    }

    /// kill -9 of a node, then reaps it.
    pub fn kill(&mut self, id: u64) -> anyhow::Result<()> {
        let node = self.node_mut(id)?;
        if let Some(mut child) = node.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// SIGTERM, then waits up to `grace` before kill -9. Returns the exit
    /// status when the node stopped by itself, `None` when it had to be
    /// killed or was not running.
    pub fn terminate(&mut self, id: u64, grace: Duration) -> anyhow::Result<Option<std::process::ExitStatus>> {
        let node = self.node_mut(id)?;
        let Some(mut child) = node.child.take() else {
            return Ok(None);
        };
        // SAFETY: plain kill(2) on a child pid we own and have not reaped.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = std::time::Instant::now() + grace;
        while std::time::Instant::now() < deadline {
            if let Some(status) = child.try_wait()? {
                return Ok(Some(status));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child.kill()?;
        child.wait()?;
        Ok(None)
    }

    pub fn restart(&mut self, id: u64) -> anyhow::Result<()> {
        self.kill(id)?;
        self.start_node(id)
    }

    /// Nodes whose process exited on its own since the last call.
    pub fn reap_exited(&mut self) -> Vec<(u64, std::process::ExitStatus)> {
        let mut exited = Vec::new();
        for node in &mut self.nodes {
            if let Some(child) = node.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    exited.push((node.id, status));
                    node.child = None;
                }
            }
        }
        exited
    }

    pub fn pid(&self, id: u64) -> Option<u32> {
        self.nodes.iter().find(|n| n.id == id)?.child.as_ref().map(Child::id)
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.client_addr.clone()).collect()
    }

    pub fn client_addr(&self, id: u64) -> Option<&str> {
        self.nodes.iter().find(|n| n.id == id).map(|n| n.client_addr.as_str())
    }

    pub fn data_dir(&self) -> &Path {
        &self.spec.data_dir
    }

    pub fn log_path(&self, id: u64) -> Option<&Path> {
        self.nodes.iter().find(|n| n.id == id).map(|n| n.log_path.as_path())
    }

    async fn admin(&self, id: u64) -> anyhow::Result<AdminClient<tonic::transport::Channel>> {
        let addr = self.client_addr(id).with_context(|| format!("no node {id}"))?;
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
            .connect_timeout(Duration::from_millis(500))
            .timeout(Duration::from_secs(2))
            .connect()
            .await?;
        Ok(AdminClient::new(channel))
    }

    pub async fn replica_status(&self, id: u64) -> anyhow::Result<ReplicaStatusResponse> {
        Ok(self
            .admin(id)
            .await?
            .replica_status(ReplicaStatusRequest {})
            .await?
            .into_inner())
    }

    pub async fn shard_digest(&self, id: u64, shard: u64) -> anyhow::Result<ShardDigestResponse> {
        Ok(self
            .admin(id)
            .await?
            .shard_digest(ShardDigestRequest { shard_id: shard })
            .await?
            .into_inner())
    }

    /// Shard → node of the replica that says it is leader, over running nodes.
    pub async fn leaders(&self) -> HashMap<u64, u64> {
        let mut leaders = HashMap::new();
        for node in self.nodes.iter().filter(|n| n.child.is_some()) {
            if let Ok(status) = self.replica_status(node.id).await {
                for replica in status.replicas.iter().filter(|r| r.role == "leader") {
                    leaders.insert(replica.shard_id, node.id);
                }
            }
        }
        leaders
    }

    /// Waits until every shard has a leader among the running nodes.
    pub async fn wait_for_leaders(&self, timeout: Duration) -> anyhow::Result<HashMap<u64, u64>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let leaders = self.leaders().await;
            if leaders.len() as u64 == self.spec.shards {
                return Ok(leaders);
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "only {} of {} shards have a leader after {timeout:?}",
                    leaders.len(),
                    self.spec.shards
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGTERM to every node, kill -9 after `grace`.
    pub fn stop_all(&mut self, grace: Duration) {
        let ids: Vec<u64> = self.nodes.iter().map(|n| n.id).collect();
        for id in ids {
            let _ = self.terminate(id, grace);
        }
    }
}

impl Drop for LocalCluster {
    /// Every test stops what it started, even when it panics.
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_addresses_are_read_back() {
        let spec = LocalClusterSpec::new("/tmp/x");
        let addrs = vec![
            ("127.0.0.1:1".to_string(), "127.0.0.1:2".to_string()),
            ("127.0.0.1:3".into(), "127.0.0.1:4".into()),
        ];
        assert_eq!(addrs_from_layout(&layout_toml(&spec, &addrs)), addrs);
    }
}
