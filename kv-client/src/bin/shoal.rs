//! `shoal`: the command-line tool. Starts a local playground cluster, reads
//! and writes keys, shows status, runs the load generator.

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use kv_client::bench::{self, BenchOp, BenchSpec};
use kv_client::local_cluster::{LocalCluster, LocalClusterSpec, Ports};
use kv_client::{ClientConfig, Key, ScanOptions, ShoalClient};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The playground's client ports, so commands work in a second terminal with no flags.
const DEFAULT_ENDPOINTS: &str = "127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103";

#[derive(Parser)]
#[command(
    name = "shoal",
    about = "Shoal: a strongly consistent, sharded key-value store",
    version
)]
struct Cli {
    /// Comma-separated kv-server client addresses.
    #[arg(long, env = "SHOAL_ENDPOINTS", default_value = DEFAULT_ENDPOINTS, global = true)]
    endpoints: String,
    /// Keyspace to use.
    #[arg(long, env = "SHOAL_KEYSPACE", default_value = "default", global = true)]
    keyspace: String,
    /// Deadline of one operation, retries included, in seconds.
    #[arg(long, default_value_t = 10.0, global = true)]
    timeout: f64,
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Start a local cluster of kv-server processes; Ctrl-C stops it.
    Playground {
        #[arg(long, default_value = "shoal-data")]
        data_dir: PathBuf,
        #[arg(long, default_value_t = 3)]
        nodes: u64,
        #[arg(long, default_value_t = 4)]
        shards: u64,
        #[arg(long, default_value_t = 64)]
        ushards: u32,
        /// Client port of node 1; node i uses base+i-1, and base+100+i-1 for Raft.
        #[arg(long, default_value_t = 7101)]
        base_port: u16,
    },
    /// Write a value.
    Put {
        key: String,
        value: String,
        /// Place the key in this routing key's micro-shard.
        #[arg(long)]
        routing_key: Option<String>,
    },
    /// Read a value (strongly consistent). Exits 1 if the key does not exist.
    Get {
        key: String,
        #[arg(long)]
        routing_key: Option<String>,
        /// Also print the version.
        #[arg(long)]
        versions: bool,
    },
    /// Delete a key.
    Del {
        key: String,
        #[arg(long)]
        routing_key: Option<String>,
    },
    /// List keys in order, as `key<TAB>value` lines.
    Scan {
        #[arg(long, default_value = "")]
        prefix: String,
        #[arg(long, default_value = "")]
        start: String,
        /// Exclusive end key.
        #[arg(long, default_value = "")]
        end: String,
        #[arg(long)]
        reverse: bool,
        /// Stop after this many entries.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// Show nodes, shards, leaders and replica progress.
    Status,
    /// Run the load generator and print ops/s and latency percentiles.
    Bench {
        /// Start a fresh local 3-node cluster in a temporary folder and run
        /// put and get at 1 and 64 clients against it.
        #[arg(long)]
        local: bool,
        #[arg(long, value_enum, default_value = "put")]
        op: BenchOp,
        #[arg(long, default_value_t = 1)]
        concurrency: usize,
        /// Seconds per run.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 100)]
        value_bytes: usize,
        #[arg(long, default_value_t = 10_000)]
        keys: u64,
    },
}

fn client_config(cli: &Cli) -> anyhow::Result<ClientConfig> {
    if !(cli.timeout.is_finite() && cli.timeout > 0.0) {
        bail!("--timeout must be a positive number of seconds");
    }
    let endpoints: Vec<String> = cli
        .endpoints
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    if endpoints.is_empty() {
        bail!("--endpoints is empty");
    }
    if let Some(bad) = endpoints
        .iter()
        .find(|e| e.parse::<std::net::SocketAddr>().is_err() && !e.contains(':'))
    {
        bail!("--endpoints: {bad:?} is not HOST:PORT");
    }
    Ok(ClientConfig {
        endpoints,
        keyspace: cli.keyspace.clone(),
        timeout: Duration::from_secs_f64(cli.timeout),
        ..ClientConfig::default()
    })
}

fn key_of(key: String, routing_key: Option<String>) -> Key {
    match routing_key {
        Some(r) => Key::routed(r, key),
        None => Key::from(key),
    }
}

async fn connect(cli: &Cli) -> anyhow::Result<ShoalClient> {
    Ok(ShoalClient::connect(client_config(cli)?).await?)
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli).await {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        Commands::Playground {
            data_dir,
            nodes,
            shards,
            ushards,
            base_port,
        } => {
            let mut spec = LocalClusterSpec::new(data_dir);
            spec.nodes = *nodes;
            spec.shards = *shards;
            spec.ushards = *ushards;
            spec.ports = Ports::Fixed {
                client_base: *base_port,
                raft_base: base_port.saturating_add(100),
            };
            playground(spec).await
        }
        Commands::Put {
            key,
            value,
            routing_key,
        } => {
            let client = connect(&cli).await?;
            let ack = client
                .put(key_of(key.clone(), routing_key.clone()), value.clone())
                .await?;
            println!("OK version={} shard={}", ack.version, ack.shard);
            Ok(())
        }
        Commands::Get {
            key,
            routing_key,
            versions,
        } => {
            let client = connect(&cli).await?;
            match client.get(key_of(key.clone(), routing_key.clone())).await? {
                Some(v) if *versions => println!("{}\tversion={}", String::from_utf8_lossy(&v.value), v.version),
                Some(v) => println!("{}", String::from_utf8_lossy(&v.value)),
                None => bail!("key not found: {key}"),
            }
            Ok(())
        }
        Commands::Del { key, routing_key } => {
            let client = connect(&cli).await?;
            let ack = client.delete(key_of(key.clone(), routing_key.clone())).await?;
            println!("OK version={} shard={}", ack.version, ack.shard);
            Ok(())
        }
        Commands::Scan {
            prefix,
            start,
            end,
            reverse,
            limit,
        } => {
            let client = connect(&cli).await?;
            let options = ScanOptions {
                prefix: prefix.clone().into_bytes(),
                start: start.clone().into_bytes(),
                end: end.clone().into_bytes(),
                reverse: *reverse,
                limit: (*limit).clamp(1, 1000) as u32,
                ..ScanOptions::default()
            };
            for entry in client.scan_all(&options, *limit).await? {
                println!(
                    "{}\t{}",
                    String::from_utf8_lossy(&entry.key),
                    String::from_utf8_lossy(&entry.value)
                );
            }
            Ok(())
        }
        Commands::Status => status(&cli).await,
        Commands::Bench {
            local,
            op,
            concurrency,
            seconds,
            value_bytes,
            keys,
        } => {
            let duration = Duration::from_secs(*seconds);
            if *local {
                return bench_local(duration, *value_bytes, *keys).await;
            }
            let client = Arc::new(connect(&cli).await?);
            if *op == BenchOp::Get {
                bench::preload(&client, *keys, *value_bytes).await?;
            }
            let spec = BenchSpec {
                op: *op,
                concurrency: *concurrency,
                duration,
                value_bytes: *value_bytes,
                keys: *keys,
            };
            println!("{}", bench::run(client, spec).await?);
            Ok(())
        }
    }
}

async fn playground(spec: LocalClusterSpec) -> anyhow::Result<()> {
    let mut cluster = LocalCluster::start(spec)?;
    let leaders = cluster
        .wait_for_leaders(Duration::from_secs(30))
        .await
        .context("waiting for the cluster to elect leaders")?;
    let endpoints = cluster.endpoints().join(",");
    println!(
        "Shoal playground is up: {} nodes, {} shards.",
        cluster.endpoints().len(),
        leaders.len()
    );
    println!("  data:      {}", cluster.data_dir().display());
    println!("  endpoints: {endpoints}");
    println!("  logs:      {}/node-*.log", cluster.data_dir().display());
    let shoal = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "shoal".into());
    println!("Try, in another terminal:");
    println!("  {shoal} put hello world && {shoal} get hello");
    if cluster.endpoints() != DEFAULT_ENDPOINTS.split(',').map(String::from).collect::<Vec<_>>() {
        println!("  (first: export SHOAL_ENDPOINTS={endpoints})");
    }
    println!("Ctrl-C stops the cluster.");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = tick.tick() => {
                for (node, status) in cluster.reap_exited() {
                    println!("node {node} exited ({status}); the others keep serving. Restart the playground to bring it back.");
                }
            }
        }
    }
    println!("stopping...");
    cluster.stop_all(Duration::from_secs(10));
    println!("stopped.");
    Ok(())
}

async fn status(cli: &Cli) -> anyhow::Result<()> {
    use shoal_proto::admin::admin_client::AdminClient;
    use shoal_proto::admin::ReplicaStatusRequest;
    let config = client_config(cli)?;
    let layout = kv_client::client::fetch_layout(&config.endpoints).await?;
    println!("layout version {}", layout.version);
    for ks in &layout.keyspaces {
        println!(
            "keyspace {} (id {}): {} ushards over shards {:?}",
            ks.name, ks.keyspace_id, ks.ushard_count, ks.shard_ids
        );
    }
    println!(
        "{:<6} {:<22} {:<8} {:<11} {:<6} {:<8} {:>9} {:>9} {:>9}",
        "node", "address", "shard", "role", "term", "leader", "applied", "last_log", "snapshot"
    );
    for node in &layout.nodes {
        let result = async {
            let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", node.client_addr))?
                .connect_timeout(Duration::from_millis(500))
                .timeout(Duration::from_secs(2))
                .connect()
                .await?;
            Ok::<_, anyhow::Error>(
                AdminClient::new(channel)
                    .replica_status(ReplicaStatusRequest {})
                    .await?
                    .into_inner(),
            )
        }
        .await;
        match result {
            Ok(status) => {
                for r in status.replicas {
                    println!(
                        "{:<6} {:<22} {:<8} {:<11} {:<6} {:<8} {:>9} {:>9} {:>9}",
                        node.node_id,
                        node.client_addr,
                        r.shard_id,
                        r.role,
                        r.term,
                        r.leader_id,
                        r.applied_index,
                        r.last_log_index,
                        r.snapshot_index
                    );
                }
            }
            Err(e) => println!("{:<6} {:<22} DOWN ({e})", node.node_id, node.client_addr),
        }
    }
    Ok(())
}

/// Starts a local cluster in a temp dir (same process tree as the load, so
/// CPU is shared fairly), runs put and get at 1 and 64 clients, stops it.
async fn bench_local(duration: Duration, value_bytes: usize, keys: u64) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut cluster = LocalCluster::start(LocalClusterSpec::new(dir.path()))?;
    cluster.wait_for_leaders(Duration::from_secs(30)).await?;
    let config = ClientConfig {
        endpoints: cluster.endpoints(),
        ..ClientConfig::default()
    };
    let client = Arc::new(ShoalClient::connect(config).await?);
    bench::preload(&client, keys, value_bytes).await?;
    // Ratios against a bare round trip at the same concurrency, measured in
    // this run, stay comparable on a noisy shared machine.
    let mut baseline = std::collections::HashMap::new();
    for op in [BenchOp::Ping, BenchOp::Put, BenchOp::Get] {
        for concurrency in [1, 64] {
            let spec = BenchSpec {
                op,
                concurrency,
                duration,
                value_bytes,
                keys,
            };
            let report = bench::run(client.clone(), spec).await?;
            match baseline.get(&concurrency) {
                Some((ping_ops, ping_p50)) if op != BenchOp::Ping => println!(
                    "{report}  | vs ping: {:.2}x ops/s, {:.1}x p50",
                    report.ops_per_sec() / ping_ops,
                    report.p50.as_secs_f64() / Duration::as_secs_f64(ping_p50).max(1e-9)
                ),
                _ => println!("{report}"),
            }
            if op == BenchOp::Ping {
                baseline.insert(concurrency, (report.ops_per_sec(), report.p50));
            }
        }
    }
    cluster.stop_all(Duration::from_secs(10));
    Ok(())
}
