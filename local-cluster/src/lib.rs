//! A cluster of kv-server child processes on this machine: what
//! `shoal playground` runs, and what integration tests and benchmarks drive
//! (kill -9, restart, leader lookup).
//!
//! It writes the layout and one config per node under `data_dir` from the
//! servers' own config types (`shoal-config`, documented in
//! `kv-server/example.toml`), reads them back with the same types, and only
//! talks to 127.0.0.1. [`probe`] holds what tests and benchmarks ask of a running
//! cluster (raw connections, error codes, convergence).

pub mod manager;
pub mod probe;

pub use manager::ShardManagerAt;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use shoal_config::layout::{ClusterLayout, NodeLayout};
use shoal_config::node::{FaultInjection, NodeConfig, RaftTuning};
use shoal_config::{read_toml, ManagerConfig};
use shoal_proto::admin::admin_client::AdminClient;
use shoal_proto::admin::{ReplicaStatusResponse, SetFailpointRequest, ShardDigestResponse};
use shoal_proto::sm::{CreateKeyspaceRequest, ShardMap};
use shoal_types::NodeId;
use std::collections::HashMap;
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
    /// Every node's `[raft]` table.
    pub raft: RaftTuning,
    /// Every node's `[faults]` table (needs a kv-server built with `failpoints`).
    pub faults: FaultInjection,
    /// Run a shard manager that owns the layout (instead of a static file).
    pub shard_manager: bool,
    pub shard_manager_bin: PathBuf,
    /// Region of node i is `regions[(i - 1) % len]`; empty = "local". It
    /// goes into each node's config and, without a shard manager, into the
    /// static layout, where clients read it to pick nearby replicas.
    pub regions: Vec<String>,
    /// Replicas per shard of the default keyspace (shard-manager mode).
    pub replicas: u32,
    /// The shard manager's repair grace period: a node silent this long is
    /// dead and its replicas are rebuilt elsewhere.
    pub dead_after: Duration,
    /// The shard manager's budget for μshard moves (release grace 1 s by
    /// default, so tests see a moved μshard's copy dropped).
    pub moves: shoal_config::manager::MoveBudget,
    /// The shard manager's automatic split triggers (compact keyspaces).
    pub splits: shoal_config::manager::SplitTriggers,
    /// The shard manager's rebalancing tolerances.
    pub rebalance: shoal_config::manager::Rebalance,
    /// The shard manager's locality rules (akkio keyspaces).
    pub locality: shoal_config::manager::Locality,
    /// The last this many nodes are configured but not started (nor
    /// registered) by [`LocalCluster::start`]: [`LocalCluster::join_node`]
    /// adds each later, as a node that joins a running cluster.
    pub late_nodes: u64,
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
            raft: RaftTuning::default(),
            faults: FaultInjection::default(),
            shard_manager: false,
            shard_manager_bin: find_binary("shard-manager", "SHOAL_SHARD_MANAGER_BIN"),
            regions: Vec::new(),
            replicas: 3,
            dead_after: Duration::from_secs(10),
            moves: shoal_config::manager::MoveBudget {
                release_grace_ms: 1_000,
                ..Default::default()
            },
            splits: Default::default(),
            rebalance: Default::default(),
            locality: Default::default(),
            late_nodes: 0,
        }
    }

    fn region_of(&self, id: u64) -> String {
        if self.regions.is_empty() {
            shoal_config::DEFAULT_REGION.into()
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

/// The nodes' addresses, numbered from 1.
fn node_layouts(spec: &LocalClusterSpec, addrs: &[(String, String)]) -> Vec<NodeLayout> {
    (1u64..)
        .zip(addrs)
        .map(|(id, (client, raft))| NodeLayout {
            id: NodeId(id),
            client_addr: client.clone(),
            raft_addr: raft.clone(),
            region: spec.region_of(id),
        })
        .collect()
}

/// What a shard-manager cluster keeps in `addresses.toml`: where each
/// process listens (the shard manager owns the layout itself). Unknown
/// fields are allowed: older playgrounds wrote a whole layout here.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Addresses {
    shard_manager: String,
    nodes: Vec<NodeLayout>,
}

/// Where a node's layout comes from.
enum LayoutSource<'a> {
    File(&'a Path),
    ShardManager(&'a str),
}

fn node_config(spec: &LocalClusterSpec, id: u64, client: &str, raft: &str, source: &LayoutSource) -> NodeConfig {
    let mut config = NodeConfig::new(
        spec.data_dir.join(format!("node-{id}")),
        client.to_string(),
        raft.to_string(),
    );
    config.region = spec.region_of(id);
    match source {
        LayoutSource::File(layout) => {
            config.node_id = Some(NodeId(id));
            config.layout_file = Some(layout.to_path_buf());
        }
        LayoutSource::ShardManager(addr) => {
            config.shard_manager = Some(addr.to_string());
            config.sm_heartbeat_interval_ms = 200;
        }
    }
    config.raft = spec.raft.clone();
    config.faults = spec.faults.clone();
    config
}

/// Writes `value` as TOML, checking first that it reads back (a file the
/// servers would refuse is caught here, naming the file).
fn write_toml<T: Serialize + serde::de::DeserializeOwned>(path: &Path, header: &str, value: &T) -> anyhow::Result<()> {
    let text = toml::to_string(value).with_context(|| format!("writing {}", path.display()))?;
    toml::from_str::<T>(&text).with_context(|| format!("{} would not read back", path.display()))?;
    std::fs::write(path, format!("{header}\n{text}")).with_context(|| format!("writing {}", path.display()))
}

/// The gRPC endpoint at `addr` (127.0.0.1 ports, plain HTTP/2), giving up
/// connecting after `connect_within`. Callers add request deadlines.
pub(crate) fn endpoint(addr: &str, connect_within: Duration) -> anyhow::Result<tonic::transport::Endpoint> {
    Ok(tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?.connect_timeout(connect_within))
}

impl LocalCluster {
    /// Writes the layout and node configs (reusing an existing layout in
    /// `data_dir`) and starts every node.
    pub fn start(spec: LocalClusterSpec) -> anyhow::Result<LocalCluster> {
        if spec.nodes == 0 || spec.shards == 0 || spec.ushards == 0 {
            bail!("nodes, shards and ushards must each be at least 1");
        }
        if spec.late_nodes >= spec.nodes || (spec.late_nodes > 0 && !spec.shard_manager) {
            bail!("late nodes need a shard manager and at least one node started at once");
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
            let (sm_addr, nodes) = if spec.shard_manager {
                let addresses: Addresses = read_toml(&addresses_path, "addresses")?;
                (Some(addresses.shard_manager), addresses.nodes)
            } else {
                (None, read_toml::<ClusterLayout>(&addresses_path, "layout")?.nodes)
            };
            if nodes.len() as u64 != spec.nodes {
                bail!(
                    "{} describes {} nodes, not {}; use another --data-dir",
                    addresses_path.display(),
                    nodes.len(),
                    spec.nodes
                );
            }
            let addrs = nodes.into_iter().map(|n| (n.client_addr, n.raft_addr)).collect();
            (sm_addr, addrs)
        } else {
            let mut addrs = Vec::new();
            for i in 0..spec.nodes as u16 {
                let (client, raft) = match spec.ports {
                    Ports::Fixed { client_base, raft_base } => (client_base + i, raft_base + i),
                    Ports::Ephemeral => (free_port()?, free_port()?),
                };
                addrs.push((format!("127.0.0.1:{client}"), format!("127.0.0.1:{raft}")));
            }
            let nodes = node_layouts(&spec, &addrs);
            if spec.shard_manager {
                let sm_addr = match spec.ports {
                    Ports::Fixed { client_base, .. } => format!("127.0.0.1:{}", client_base.saturating_sub(1)),
                    Ports::Ephemeral => format!("127.0.0.1:{}", free_port()?),
                };
                let addresses = Addresses {
                    shard_manager: sm_addr.clone(),
                    nodes,
                };
                write_toml(
                    &addresses_path,
                    "# Written by the shoal local cluster: where each process listens.",
                    &addresses,
                )?;
                (Some(sm_addr), addrs)
            } else {
                let layout = ClusterLayout::local(&nodes, spec.shards, spec.ushards);
                write_toml(
                    &addresses_path,
                    "# Written by the shoal local cluster: the static layout every node reads.",
                    &layout,
                )?;
                (None, addrs)
            }
        };
        // An address exactly when the cluster has a shard manager.
        let shard_manager = match &sm_addr {
            Some(addr) => {
                let config_path = spec.data_dir.join("shard-manager.toml");
                let config = ManagerConfig {
                    data_dir: spec.data_dir.join("shard-manager"),
                    listen: addr.clone(),
                    suspect_after_ms: 1000,
                    dead_after_ms: (spec.dead_after.as_millis() as u64).max(1001),
                    moves: spec.moves.clone(),
                    splits: spec.splits.clone(),
                    rebalance: spec.rebalance.clone(),
                    locality: spec.locality.clone(),
                };
                config.validate()?;
                write_toml(&config_path, "# Written by the shoal local cluster.", &config)?;
                Some(ManagedProcess {
                    addr: addr.clone(),
                    config_path,
                    log_path: spec.data_dir.join("shard-manager.log"),
                    child: None,
                })
            }
            None => None,
        };
        let mut nodes = Vec::new();
        for (i, (client, raft)) in addrs.iter().enumerate() {
            let id = i as u64 + 1;
            let config_path = spec.data_dir.join(format!("node-{id}.toml"));
            let source = match &shard_manager {
                Some(sm) => LayoutSource::ShardManager(&sm.addr),
                None => LayoutSource::File(&addresses_path),
            };
            let config = node_config(&spec, id, client, raft, &source);
            config.validate().with_context(|| format!("the config of node {id}"))?;
            write_toml(&config_path, "# Written by the shoal local cluster.", &config)?;
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
        let at_once = cluster.nodes.len() as u64 - cluster.spec.late_nodes;
        for id in 1..=at_once {
            cluster.start_node(id)?;
            if cluster.shard_manager.is_some() {
                // One at a time, so the shard manager hands out ids in
                // process order and node i is node id i.
                cluster.wait_registered(id, Duration::from_secs(60))?;
            }
        }
        Ok(cluster)
    }

    /// Starts a late node (see [`LocalClusterSpec::late_nodes`]) for the
    /// first time and waits until it registered. Late nodes join in id
    /// order, so the shard manager gives node i the id i.
    pub fn join_node(&mut self, id: u64) -> anyhow::Result<()> {
        self.start_node(id)?;
        self.wait_registered(id, Duration::from_secs(60))
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
        let started = self.spec.nodes - self.spec.late_nodes;
        let replicas = self.spec.replicas.min(started as u32);
        self.shard_manager()?
            .ensure_default_keyspace(started, self.spec.shards as u32, self.spec.ushards, replicas, timeout)
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

    fn two_addresses() -> Vec<(String, String)> {
        vec![
            ("127.0.0.1:1".to_string(), "127.0.0.1:2".to_string()),
            ("127.0.0.1:3".into(), "127.0.0.1:4".into()),
        ]
    }

    #[test]
    fn address_files_are_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let spec = LocalClusterSpec::new(dir.path());
        let nodes = node_layouts(&spec, &two_addresses());
        let path = dir.path().join("addresses.toml");
        let addresses = Addresses {
            shard_manager: "127.0.0.1:9".into(),
            nodes: nodes.clone(),
        };
        write_toml(&path, "# test", &addresses).unwrap();
        assert_eq!(read_toml::<Addresses>(&path, "addresses").unwrap(), addresses);
        // A playground from before this format kept a whole layout here.
        let layout = ClusterLayout::local(&nodes, 4, 64);
        let old = format!("shard_manager = \"127.0.0.1:9\"\n{}", toml::to_string(&layout).unwrap());
        std::fs::write(&path, old).unwrap();
        assert_eq!(read_toml::<Addresses>(&path, "addresses").unwrap(), addresses);
        std::fs::write(&path, "nodes = 3").unwrap();
        let err = format!("{:#}", read_toml::<Addresses>(&path, "addresses").unwrap_err());
        assert!(err.contains("addresses.toml"), "{err}");
    }

    #[test]
    fn a_written_node_config_reads_back_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = LocalClusterSpec::new(dir.path());
        spec.raft.snapshot_every_entries = 300;
        spec.faults.lose_unsynced_writes = true;
        let layout = dir.path().join("layout.toml");
        let config = node_config(&spec, 2, "127.0.0.1:1", "127.0.0.1:2", &LayoutSource::File(&layout));
        let path = dir.path().join("node-2.toml");
        write_toml(&path, "# test", &config).unwrap();
        let back = NodeConfig::load(&path).unwrap();
        assert_eq!(back.node_id, Some(NodeId(2)));
        assert_eq!(back.layout_file.as_deref(), Some(layout.as_path()));
        assert_eq!(back.raft.snapshot_every_entries, 300);
        assert!(back.faults.lose_unsynced_writes);
        assert_eq!(back.data_dir, dir.path().join("node-2"));
    }
}
