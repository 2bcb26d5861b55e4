//! A cluster of kv-server child processes on this machine: what
//! `shoal playground` runs, and what integration tests and benchmarks drive
//! (kill -9, restart, leader lookup).
//!
//! It writes the layout and one config per node under `data_dir`, in the
//! file formats documented in `kv-server/example.toml`, and only talks to
//! 127.0.0.1. [`probe`] holds what tests and benchmarks ask of a running
//! cluster (raw connections, error codes, convergence).

pub mod manager;
pub mod probe;

pub use manager::ShardManagerAt;

use anyhow::{bail, Context};
use shoal_proto::admin::admin_client::AdminClient;
use shoal_proto::admin::{ReplicaStatusResponse, SetFailpointRequest, ShardDigestResponse};
use shoal_proto::sm::{CreateKeyspaceRequest, ShardMap};
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
    /// Lines for each node's `[faults]` table, e.g. `lose_unsynced_writes = true`
    /// (kv-server built with `failpoints`).
    pub fault_settings: Vec<String>,
    /// Run a shard manager that owns the layout (instead of a static file).
    pub shard_manager: bool,
    pub shard_manager_bin: PathBuf,
    /// Region of node i is `regions[(i - 1) % len]`; empty = "local".
    pub regions: Vec<String>,
    /// Replicas per shard of the default keyspace (shard-manager mode).
    pub replicas: u32,
    /// The shard manager's repair grace period: a node silent this long is
    /// dead and its replicas are rebuilt elsewhere.
    pub dead_after: Duration,
}

impl LocalClusterSpec {
    pub fn new(data_dir: impl Into<PathBuf>) -> LocalClusterSpec {
        LocalClusterSpec {
            data_dir: data_dir.into(),
            nodes: 3,
            shards: 4,
            ushards: 64,
            ports: Ports::Ephemeral,
            kv_server_bin: find_binary("kv-server", "SHOAL_KV_SERVER"),
            raft_settings: Vec::new(),
            fault_settings: Vec::new(),
            shard_manager: false,
            shard_manager_bin: find_binary("shard-manager", "SHOAL_SHARD_MANAGER_BIN"),
            regions: Vec::new(),
            replicas: 3,
            dead_after: Duration::from_secs(10),
        }
    }

    fn region_of(&self, id: u64) -> String {
        if self.regions.is_empty() {
            "local".into()
        } else {
            self.regions[((id - 1) as usize) % self.regions.len()].clone()
        }
    }
}

/// A Shoal binary: `$ENV_VAR`, else next to this executable (or its
/// parent, for test binaries in `deps/`), else `name` on PATH.
pub fn find_binary(name: &str, env_var: &str) -> PathBuf {
    if let Ok(path) = std::env::var(env_var) {
        return PathBuf::from(path);
    }
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1).take(2) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    PathBuf::from(name)
}

/// Starts `bin --config config`, appending its output to `log`.
fn spawn_logged(bin: &Path, config: &Path, log: &Path) -> anyhow::Result<Child> {
    let log_file = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
    Command::new(bin)
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .spawn()
        .with_context(|| {
            format!(
                "starting {} (build it with `cargo build --workspace --bins`)",
                bin.display()
            )
        })
}

/// SIGTERM, then kill -9 after `grace`; the exit status if it stopped by itself.
fn terminate_child(child: &mut Child, grace: Duration) -> anyhow::Result<Option<std::process::ExitStatus>> {
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

/// The shard manager process.
struct ManagedProcess {
    addr: String,
    config_path: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
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
    shard_manager: Option<ManagedProcess>,
}

/// Ports handed out by this process, so two clusters of one test binary
/// never get the same one.
static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());

/// A port that is free now, picked at random *below* the kernel's ephemeral
/// range (32768+): a port taken from that range with `bind(0)` can be handed
/// to some other process's outgoing connection before our server binds it,
/// which made parallel tests fail with "Address already in use".
fn free_port() -> anyhow::Result<u16> {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner());
    for _ in 0..1000 {
        let port = rng.gen_range(20_000..32_000);
        if handed_out.contains(&port) {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed_out.push(port);
            return Ok(port);
        }
    }
    bail!("found no free port in 20000-32000")
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

/// Where a node's layout comes from.
enum LayoutSource<'a> {
    File(&'a Path),
    ShardManager(&'a str),
}

fn node_toml(spec: &LocalClusterSpec, id: u64, client: &str, raft: &str, source: &LayoutSource) -> String {
    let dir = spec.data_dir.join(format!("node-{id}"));
    let mut out = format!(
        "data_dir = \"{}\"\nlisten_client = \"{client}\"\nlisten_raft = \"{raft}\"\nregion = \"{}\"\n",
        dir.display(),
        spec.region_of(id)
    );
    match source {
        LayoutSource::File(layout) => {
            out.push_str(&format!("node_id = {id}\nlayout_file = \"{}\"\n", layout.display()));
        }
        LayoutSource::ShardManager(addr) => {
            out.push_str(&format!("shard_manager = \"{addr}\"\nsm_heartbeat_interval_ms = 200\n"));
        }
    }
    for (table, lines) in [("raft", &spec.raft_settings), ("faults", &spec.fault_settings)] {
        if !lines.is_empty() {
            out.push_str(&format!("\n[{table}]\n"));
            for line in lines {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// The gRPC endpoint at `addr` (127.0.0.1 ports, plain HTTP/2), giving up
/// connecting after `connect_within`. Callers add request deadlines.
pub(crate) fn endpoint(addr: &str, connect_within: Duration) -> anyhow::Result<tonic::transport::Endpoint> {
    Ok(tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?.connect_timeout(connect_within))
}

/// The shard manager address recorded in an addresses file, read with the
/// TOML parser.
fn sm_addr_from(text: &str) -> anyhow::Result<Option<String>> {
    let doc: toml::Table = text.parse()?;
    Ok(doc.get("shard_manager").and_then(toml::Value::as_str).map(String::from))
}

/// Reads the (client, raft) addresses of every node back from an existing
/// layout file with the TOML parser, so a restarted playground keeps the
/// addresses its data was created with.
fn addrs_from_layout(text: &str) -> anyhow::Result<Vec<(String, String)>> {
    let doc: toml::Table = text.parse()?;
    let nodes = doc
        .get("nodes")
        .and_then(toml::Value::as_array)
        .context("no [[nodes]] table")?;
    nodes
        .iter()
        .map(|node| {
            let field = |name: &str| {
                node.get(name)
                    .and_then(toml::Value::as_str)
                    .map(String::from)
                    .with_context(|| format!("a [[nodes]] entry without {name}"))
            };
            Ok((field("client_addr")?, field("raft_addr")?))
        })
        .collect()
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
        // Addresses are chosen once per data directory and reused after, so
        // a restarted cluster finds its peers where its data says they are.
        let addresses_path = spec.data_dir.join(if spec.shard_manager {
            "addresses.toml"
        } else {
            "layout.toml"
        });
        let (sm_addr, addrs) = if addresses_path.exists() {
            let text = std::fs::read_to_string(&addresses_path)?;
            let existing = addrs_from_layout(&text).with_context(|| format!("reading {}", addresses_path.display()))?;
            if existing.len() as u64 != spec.nodes {
                bail!(
                    "{} describes {} nodes, not {}; use another --data-dir",
                    addresses_path.display(),
                    existing.len(),
                    spec.nodes
                );
            }
            (sm_addr_from(&text)?, existing)
        } else {
            let mut addrs = Vec::new();
            for i in 0..spec.nodes as u16 {
                let (client, raft) = match spec.ports {
                    Ports::Fixed { client_base, raft_base } => (client_base + i, raft_base + i),
                    Ports::Ephemeral => (free_port()?, free_port()?),
                };
                addrs.push((format!("127.0.0.1:{client}"), format!("127.0.0.1:{raft}")));
            }
            let sm_addr = match spec.ports {
                Ports::Fixed { client_base, .. } => format!("127.0.0.1:{}", client_base.saturating_sub(1)),
                Ports::Ephemeral => format!("127.0.0.1:{}", free_port()?),
            };
            let mut text = layout_toml(&spec, &addrs);
            if spec.shard_manager {
                // Only the addresses matter here; the shard manager owns the layout.
                text = format!("shard_manager = \"{sm_addr}\"\n{text}");
            }
            std::fs::write(&addresses_path, text)?;
            (Some(sm_addr), addrs)
        };
        let shard_manager = match (spec.shard_manager, &sm_addr) {
            (true, Some(addr)) => {
                let config_path = spec.data_dir.join("shard-manager.toml");
                let text = format!(
                    "data_dir = \"{}\"\nlisten = \"{addr}\"\nsuspect_after_ms = 1000\ndead_after_ms = {}\n",
                    spec.data_dir.join("shard-manager").display(),
                    spec.dead_after.as_millis().max(1001)
                );
                std::fs::write(&config_path, text)?;
                Some(ManagedProcess {
                    addr: addr.clone(),
                    config_path,
                    log_path: spec.data_dir.join("shard-manager.log"),
                    child: None,
                })
            }
            (true, None) => bail!("{} names no shard manager", addresses_path.display()),
            (false, _) => None,
        };
        let mut nodes = Vec::new();
        for (i, (client, raft)) in addrs.iter().enumerate() {
            let id = i as u64 + 1;
            let config_path = spec.data_dir.join(format!("node-{id}.toml"));
            let source = match &shard_manager {
                Some(sm) => LayoutSource::ShardManager(&sm.addr),
                None => LayoutSource::File(&addresses_path),
            };
            std::fs::write(&config_path, node_toml(&spec, id, client, raft, &source))?;
            nodes.push(NodeProcess {
                id,
                client_addr: client.clone(),
                config_path,
                log_path: spec.data_dir.join(format!("node-{id}.log")),
                child: None,
            });
        }
        let mut cluster = LocalCluster {
            spec,
            nodes,
            shard_manager,
        };
        if cluster.shard_manager.is_some() {
            cluster.start_shard_manager()?;
        }
        for id in 1..=cluster.nodes.len() as u64 {
            cluster.start_node(id)?;
            if cluster.shard_manager.is_some() {
                // One at a time, so the shard manager hands out ids in
                // process order and node i is node id i.
                cluster.wait_registered(id, Duration::from_secs(60))?;
            }
        }
        Ok(cluster)
    }

    fn wait_registered(&mut self, id: u64, timeout: Duration) -> anyhow::Result<()> {
        let id_file = self.spec.data_dir.join(format!("node-{id}")).join("node_id");
        let deadline = std::time::Instant::now() + timeout;
        while !id_file.exists() {
            if let Some((_, status)) = self.reap_exited().into_iter().find(|(n, _)| *n == id) {
                let log = self
                    .log_path(id)
                    .map(std::fs::read_to_string)
                    .transpose()?
                    .unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                bail!(
                    "node {id} exited before registering ({status}); its log ends: {:?}",
                    tail
                );
            }
            if std::time::Instant::now() >= deadline {
                bail!("node {id} did not register within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let registered: u64 = std::fs::read_to_string(&id_file)?.trim().parse()?;
        if registered != id {
            bail!("node {id} registered as node id {registered}; use a fresh --data-dir");
        }
        Ok(())
    }

    /// Starts the shard manager if it is not running.
    pub fn start_shard_manager(&mut self) -> anyhow::Result<()> {
        let bin = self.spec.shard_manager_bin.clone();
        let sm = self
            .shard_manager
            .as_mut()
            .context("this cluster has no shard manager")?;
        if sm.child.is_some() {
            bail!("the shard manager is already running");
        }
        sm.child = Some(spawn_logged(&bin, &sm.config_path, &sm.log_path)?);
        Ok(())
    }

    /// kill -9 of the shard manager.
    pub fn kill_shard_manager(&mut self) -> anyhow::Result<()> {
        let sm = self
            .shard_manager
            .as_mut()
            .context("this cluster has no shard manager")?;
        if let Some(mut child) = sm.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    pub fn shard_manager_addr(&self) -> Option<&str> {
        self.shard_manager.as_ref().map(|sm| sm.addr.as_str())
    }

    /// The running shard manager's operations (an error without one).
    pub fn shard_manager(&self) -> anyhow::Result<ShardManagerAt> {
        let addr = self.shard_manager_addr().context("this cluster has no shard manager")?;
        Ok(ShardManagerAt::new(addr))
    }

    pub async fn shard_map(&self) -> anyhow::Result<ShardMap> {
        self.shard_manager()?.shard_map().await
    }

    pub async fn move_primary(&self, shard: u64, node: u64) -> anyhow::Result<()> {
        self.shard_manager()?.move_primary(shard, node).await
    }

    /// Asks the shard manager to drain node `id`.
    pub async fn drain_node(&self, id: u64) -> anyhow::Result<()> {
        self.shard_manager()?.drain_node(id).await
    }

    /// Asks the shard manager to make node `id` active again (ends a drain).
    pub async fn activate_node(&self, id: u64) -> anyhow::Result<()> {
        self.shard_manager()?.activate_node(id).await
    }

    /// Shifts the shard manager's clock by `offset_ms` (a shard-manager
    /// built with `failpoints`).
    pub async fn set_shard_manager_clock(&self, offset_ms: i64) -> anyhow::Result<()> {
        self.shard_manager()?.set_clock(offset_ms).await
    }

    /// Asks the shard manager to remove node `id`.
    pub async fn remove_node(&self, id: u64) -> Result<(), tonic::Status> {
        let sm = self
            .shard_manager()
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        sm.remove_node(id).await
    }

    pub async fn create_keyspace(&self, request: CreateKeyspaceRequest) -> anyhow::Result<()> {
        self.shard_manager()?.create_keyspace(request).await
    }

    /// With a shard manager: [`ShardManagerAt::ensure_default_keyspace`]
    /// once every node is alive. A no-op with a static layout (the file
    /// already has it).
    pub async fn ensure_default_keyspace(&self, timeout: Duration) -> anyhow::Result<()> {
        if self.shard_manager.is_none() {
            return Ok(());
        }
        let replicas = self.spec.replicas.min(self.spec.nodes as u32);
        self.shard_manager()?
            .ensure_default_keyspace(
                self.spec.nodes,
                self.spec.shards as u32,
                self.spec.ushards,
                replicas,
                timeout,
            )
            .await
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
        let child = spawn_logged(&bin, &node.config_path, &node.log_path)?;
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
        terminate_child(&mut child, grace)
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
        probe::admin_at(self.client_addr(id).with_context(|| format!("no node {id}"))?).await
    }

    pub async fn replica_status(&self, id: u64) -> anyhow::Result<ReplicaStatusResponse> {
        probe::replica_status_at(self.client_addr(id).with_context(|| format!("no node {id}"))?).await
    }

    /// Sets a failpoint on node `id` (kv-server built with `failpoints`).
    pub async fn set_failpoint(&self, id: u64, name: &str, actions: &str) -> anyhow::Result<()> {
        self.admin(id)
            .await?
            .set_failpoint(SetFailpointRequest {
                name: name.into(),
                actions: actions.into(),
            })
            .await
            .with_context(|| format!("failpoint {name}={actions} on node {id}"))?;
        Ok(())
    }

    /// Shifts node `id`'s wall clock (kv-server built with `failpoints`).
    pub async fn set_node_clock(&self, id: u64, offset_ms: i64) -> anyhow::Result<()> {
        self.admin(id)
            .await?
            .set_clock_offset(shoal_proto::admin::SetClockOffsetRequest { offset_ms })
            .await
            .with_context(|| format!("clock offset {offset_ms} ms on node {id}"))?;
        Ok(())
    }

    pub async fn shard_digest(&self, id: u64, shard: u64) -> anyhow::Result<ShardDigestResponse> {
        probe::shard_digest_at(self.client_addr(id).with_context(|| format!("no node {id}"))?, shard).await
    }

    /// (id, client address) of every running node.
    fn running(&self) -> Vec<(u64, String)> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| (n.id, n.client_addr.clone()))
            .collect()
    }

    /// Shard → node of the replica that says it is leader, over running nodes.
    pub async fn leaders(&self) -> HashMap<u64, u64> {
        probe::leaders_among(&self.running()).await
    }

    /// Waits until every shard has a leader among the running nodes.
    pub async fn wait_for_leaders(&self, timeout: Duration) -> anyhow::Result<HashMap<u64, u64>> {
        probe::wait_for_leaders_among(&self.running(), self.spec.shards, timeout).await
    }

    /// SIGTERM to every node, kill -9 after `grace`.
    pub fn stop_all(&mut self, grace: Duration) {
        let ids: Vec<u64> = self.nodes.iter().map(|n| n.id).collect();
        for id in ids {
            let _ = self.terminate(id, grace);
        }
        if let Some(mut child) = self.shard_manager.as_mut().and_then(|sm| sm.child.take()) {
            let _ = terminate_child(&mut child, grace);
        }
    }
}

impl Drop for LocalCluster {
    /// Every test stops what it started, even when it panics.
    fn drop(&mut self) {
        let sm = self.shard_manager.iter_mut().filter_map(|sm| sm.child.take());
        let nodes: Vec<Child> = self.nodes.iter_mut().filter_map(|n| n.child.take()).collect();
        for mut child in nodes.into_iter().chain(sm) {
            let _ = child.kill();
            let _ = child.wait();
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
        assert_eq!(addrs_from_layout(&layout_toml(&spec, &addrs)).unwrap(), addrs);
        let with_manager = format!("shard_manager = \"127.0.0.1:9\"\n{}", layout_toml(&spec, &addrs));
        assert_eq!(sm_addr_from(&with_manager).unwrap().as_deref(), Some("127.0.0.1:9"));
        assert_eq!(addrs_from_layout(&with_manager).unwrap(), addrs);
        assert!(addrs_from_layout("nodes = 3").is_err());
    }
}
