//! An in-process cluster: each kv-server node (and, if asked, the shard
//! manager) runs as tasks of the test process, started by calling
//! `server::run_filtered` on listeners bound to port 0 and stopped by its
//! shutdown future. Every node shares one [`TransportFilter`], so a test
//! cuts, delays or isolates the link between any two nodes (or a node and
//! the shard manager), one way or both, and heals it, without failpoints:
//! schedules such as "cut A from C, restart B at once" run in one process,
//! fast and the same every time.
//!
//! What it cannot do, and the process-level [`local_cluster::LocalCluster`]
//! still does: kill -9 (a stop here is clean: the node closes its database),
//! power loss, per-node clocks and failpoints (both are global to a
//! process, so they hit every node at once, and every test of the process
//! when tests share one: see `FAILPOINTS` in `tests/in_process.rs`).
//!
//! A test that panics before [`InProcessCluster::shutdown`] drops the
//! cluster: each node gets its stop signal but nobody waits for it, so the
//! process may abort at exit with a database still open. The test fails
//! either way; its panic message is printed first.

use kv_client::{ClientConfig, ShoalClient};
use kv_server::config::{NodeConfig, RaftTuning};
use kv_server::layout::{ClusterLayout, NodeLayout};
use kv_server::transport_filter::TransportFilter;
use local_cluster::{probe, ShardManagerAt};
use shoal_proto::kv::kv_client::KvClient;
use shoal_types::NodeId;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

/// What to start.
#[derive(Clone, Debug)]
pub struct InProcessSpec {
    pub nodes: u64,
    pub shards: u64,
    pub ushards: u32,
    pub raft: RaftTuning,
    /// Run a shard manager too (it then owns the layout and node ids);
    /// without one, the nodes share a static layout file.
    pub shard_manager: bool,
    /// The shard manager's repair grace period.
    pub dead_after: Duration,
}

impl InProcessSpec {
    /// `nodes` nodes, one keyspace `default` of `shards` shards, the fast
    /// Raft timing of the process-level tests.
    pub fn new(nodes: u64, shards: u64) -> InProcessSpec {
        InProcessSpec {
            nodes,
            shards,
            ushards: 64,
            raft: super::fast_raft(),
            shard_manager: false,
            dead_after: Duration::from_secs(60),
        }
    }
}

/// A node or shard manager running as tasks: its stop signal and its task.
struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    fn spawn<F>(run: impl FnOnce(futures::future::BoxFuture<'static, ()>) -> F) -> Running
    where
        F: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = Box::pin(async move {
            let _ = stopped.await;
        });
        Running {
            stop,
            task: tokio::spawn(run(shutdown)),
        }
    }

    /// Stops cleanly and says how the run ended.
    async fn stop(self, what: &str) {
        let _ = self.stop.send(());
        match tokio::time::timeout(Duration::from_secs(30), self.task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => panic!("{what} failed: {e:#}"),
            Ok(Err(e)) => panic!("{what} panicked: {e}"),
            Err(_) => panic!("{what} did not stop within 30 s"),
        }
    }
}

struct Node {
    id: u64,
    config: NodeConfig,
    client_addr: SocketAddr,
    raft_addr: SocketAddr,
    running: Option<Running>,
}

pub struct InProcessCluster {
    /// The links between nodes: cut, delay, isolate, heal.
    pub filter: Arc<TransportFilter>,
    spec: InProcessSpec,
    nodes: Vec<Node>,
    shard_manager: Option<(ShardManagerAt, Running)>,
    _dir: TempDir,
}

/// A listener on `addr`, retried for a while: a node restarted at once
/// binds the address it just closed.
async fn bind(addr: SocketAddr) -> TcpListener {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match TcpListener::bind(addr).await {
            Ok(listener) => return listener,
            Err(e) if tokio::time::Instant::now() < deadline => {
                eprintln!("binding {addr}: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("binding {addr}: {e}"),
        }
    }
}

async fn bind_any() -> TcpListener {
    bind("127.0.0.1:0".parse().unwrap()).await
}

impl InProcessCluster {
    /// Starts every node (and the shard manager) and waits until every
    /// shard has a leader; panics with the reason otherwise.
    pub async fn start(spec: InProcessSpec) -> InProcessCluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let filter = TransportFilter::new();
        let mut listeners = Vec::new();
        for _ in 0..spec.nodes {
            listeners.push((bind_any().await, bind_any().await));
        }
        let addrs: Vec<(SocketAddr, SocketAddr)> = listeners
            .iter()
            .map(|(c, r)| (c.local_addr().unwrap(), r.local_addr().unwrap()))
            .collect();

        let shard_manager = match spec.shard_manager {
            true => Some(start_shard_manager(&spec, dir.path().join("shard-manager")).await),
            false => None,
        };
        let layout_file = dir.path().join("layout.toml");
        if shard_manager.is_none() {
            let nodes: Vec<NodeLayout> = addrs
                .iter()
                .enumerate()
                .map(|(i, (client, raft))| NodeLayout {
                    id: NodeId(i as u64 + 1),
                    client_addr: client.to_string(),
                    raft_addr: raft.to_string(),
                    region: "local".into(),
                })
                .collect();
            let layout = ClusterLayout::local(&nodes, spec.shards, spec.ushards);
            std::fs::write(&layout_file, toml::to_string(&layout).expect("layout as TOML")).unwrap();
        }

        let mut cluster = InProcessCluster {
            filter,
            nodes: Vec::new(),
            shard_manager,
            spec: spec.clone(),
            _dir: dir,
        };
        for (i, ((client, raft), (client_addr, raft_addr))) in listeners.into_iter().zip(addrs).enumerate() {
            let id = i as u64 + 1;
            let data_dir = cluster._dir.path().join(format!("node-{id}"));
            let mut config = NodeConfig::new(data_dir.clone(), client_addr.to_string(), raft_addr.to_string());
            config.raft = spec.raft.clone();
            match &cluster.shard_manager {
                Some((sm, _)) => config.shard_manager = Some(sm.addr().to_string()),
                None => {
                    config.node_id = Some(NodeId(id));
                    config.layout_file = Some(layout_file.clone());
                }
            }
            config.validate().expect("node config");
            let running = cluster.spawn_node(&config, client, raft);
            cluster.nodes.push(Node {
                id,
                config,
                client_addr,
                raft_addr,
                running: Some(running),
            });
            if cluster.shard_manager.is_some() {
                // One at a time, so the shard manager hands out ids in
                // start order and node i is node id i.
                wait_registered(&data_dir, id).await;
            }
        }
        if let Some((sm, _)) = &cluster.shard_manager {
            let replicas = spec.nodes.min(3) as u32;
            sm.ensure_default_keyspace(
                spec.nodes,
                spec.shards as u32,
                spec.ushards,
                replicas,
                Duration::from_secs(60),
            )
            .await
            .expect("default keyspace");
        }
        cluster
            .wait_for_leaders(Duration::from_secs(60))
            .await
            .expect("every shard elects a leader");
        cluster
    }

    fn spawn_node(&self, config: &NodeConfig, client: TcpListener, raft: TcpListener) -> Running {
        let (config, filter) = (config.clone(), self.filter.clone());
        Running::spawn(move |shutdown| kv_server::server::run_filtered(config, client, raft, shutdown, filter))
    }

    fn node(&self, id: u64) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    fn node_mut(&mut self, id: u64) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    /// Node ids, from 1.
    pub fn ids(&self) -> Vec<u64> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    /// Client addresses of every node, running or not.
    pub fn endpoints(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.client_addr.to_string()).collect()
    }

    /// (id, client address) of the running nodes.
    fn running(&self) -> Vec<(u64, String)> {
        self.nodes
            .iter()
            .filter(|n| n.running.is_some())
            .map(|n| (n.id, n.client_addr.to_string()))
            .collect()
    }

    /// A client over every node, with a 20 s deadline per call.
    pub async fn client(&self) -> ShoalClient {
        self.client_of(self.endpoints()).await
    }

    /// A client that learns the layout from the shard manager only.
    pub async fn client_via_shard_manager(&self) -> ShoalClient {
        self.client_of(vec![self.shard_manager().addr().to_string()]).await
    }

    async fn client_of(&self, endpoints: Vec<String>) -> ShoalClient {
        let config = ClientConfig {
            endpoints,
            timeout: Duration::from_secs(20),
            ..ClientConfig::default()
        };
        ShoalClient::connect(config).await.expect("connect client")
    }

    /// A raw connection to node `id`, bypassing the client's routing.
    pub fn kv(&self, id: u64) -> KvClient<Channel> {
        probe::kv_at(&self.node(id).client_addr.to_string()).expect("kv connection")
    }

    /// Sets failpoint `name` (a kv-server built with `failpoints`). Every
    /// node of this process shares the failpoint registry, so it applies
    /// to all of them at once.
    pub async fn set_failpoint(&self, name: &str, actions: &str) {
        let addr = self
            .running()
            .first()
            .map(|(_, addr)| addr.clone())
            .expect("no node is running");
        probe::admin_at(&addr)
            .await
            .expect("admin connection")
            .set_failpoint(shoal_proto::admin::SetFailpointRequest {
                name: name.into(),
                actions: actions.into(),
            })
            .await
            .expect("kv-server must be built with --features failpoints (make test does)");
    }

    /// The shard manager (panics without one).
    pub fn shard_manager(&self) -> &ShardManagerAt {
        &self
            .shard_manager
            .as_ref()
            .expect("this cluster has no shard manager")
            .0
    }

    /// Shard → leader, over the running nodes.
    pub async fn leaders(&self) -> HashMap<u64, u64> {
        probe::leaders_among(&self.running()).await
    }

    pub async fn wait_for_leaders(&self, timeout: Duration) -> anyhow::Result<HashMap<u64, u64>> {
        probe::wait_for_leaders_among(&self.running(), self.spec.shards, timeout).await
    }

    /// Node `id`'s digest of `shard` (applied index, key count, data hash).
    pub async fn digest(&self, id: u64, shard: u64) -> anyhow::Result<shoal_proto::admin::ShardDigestResponse> {
        probe::shard_digest_at(&self.node(id).client_addr.to_string(), shard).await
    }

    /// Waits until every host of each `(shard, hosts)` has the same data.
    pub async fn wait_converged(&self, groups: &[(u64, Vec<u64>)], patience: Duration) -> anyhow::Result<()> {
        let addrs = self.nodes.iter().map(|n| (n.id, n.client_addr.to_string())).collect();
        probe::wait_converged_at(&addrs, groups, patience).await
    }

    /// Stops node `id` cleanly (its tasks end, its database closes).
    pub async fn stop(&mut self, id: u64) {
        let running = self.node_mut(id).running.take();
        if let Some(running) = running {
            running.stop(&format!("node {id}")).await;
        }
    }

    /// Starts node `id` again on its addresses and data.
    pub async fn start_node(&mut self, id: u64) {
        let node = self.node(id);
        assert!(node.running.is_none(), "node {id} is already running");
        let (client, raft) = (bind(node.client_addr).await, bind(node.raft_addr).await);
        let running = self.spawn_node(&node.config, client, raft);
        self.node_mut(id).running = Some(running);
    }

    /// Stops node `id` and starts it again at once.
    pub async fn restart(&mut self, id: u64) {
        self.stop(id).await;
        self.start_node(id).await;
    }

    /// Stops every node, then the shard manager. Every test calls this at
    /// its end (see the module doc for a test that panics first).
    pub async fn shutdown(mut self) {
        self.filter.heal();
        for id in self.ids() {
            self.stop(id).await;
        }
        if let Some((_, running)) = self.shard_manager.take() {
            running.stop("the shard manager").await;
        }
    }
}

async fn start_shard_manager(spec: &InProcessSpec, data_dir: PathBuf) -> (ShardManagerAt, Running) {
    let listener = bind_any().await;
    let addr = listener.local_addr().unwrap().to_string();
    let config = shard_manager::config::ManagerConfig {
        data_dir,
        listen: addr.clone(),
        suspect_after_ms: 1000,
        dead_after_ms: (spec.dead_after.as_millis() as u64).max(1001),
        // Short, so tests see a moved μshard's copy dropped.
        moves: shoal_config::manager::MoveBudget {
            release_grace_ms: 1_000,
            ..Default::default()
        },
        splits: Default::default(),
        rebalance: Default::default(),
        locality: Default::default(),
    };
    config.validate().expect("shard-manager config");
    let running = Running::spawn(move |shutdown| shard_manager::server::run(config, listener, shutdown));
    (ShardManagerAt::new(addr), running)
}

/// Waits until the node with data directory `data_dir` has registered,
/// and checks it got node id `id`.
async fn wait_registered(data_dir: &std::path::Path, id: u64) {
    let id_file = data_dir.join("node_id");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !id_file.exists() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "node {id} did not register within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let registered: u64 = std::fs::read_to_string(&id_file).unwrap().trim().parse().unwrap();
    assert_eq!(registered, id, "node {id} registered as node id {registered}");
}
