//! `shoal`: the command-line tool. Starts a local playground cluster, reads
//! and writes keys, administers the cluster, runs the load generator.
//!
//! Layout: `main.rs` (arguments, dispatch), `parse.rs` (consistency strings
//! and durations), `data.rs` (put/get/del/scan), `admin.rs` (status,
//! cluster, keyspace), `ushard.rs` (show, list, move with its progress),
//! `playground.rs`, `bench_cmd.rs` (the `bench`
//! command) over `bench.rs` (the load generator and its histograms).

mod admin;
mod bench;
mod bench_cmd;
mod bench_locality;
mod bench_move;
mod bench_txn;
mod connect;
mod data;
mod parse;
mod playground;
mod resharding;
mod txn;
mod ushard;

use crate::bench::BenchOp;
use anyhow::bail;
use clap::{Parser, Subcommand};
use kv_client::{ClientConfig, Condition, PutOptions, ReadConsistency};
use std::path::PathBuf;
use std::time::Duration;

/// The playground's shard manager and client ports, so commands work in a
/// second terminal with no flags. The map is fetched from the first that
/// answers: the shard manager, or a node while it is down.
pub const DEFAULT_ENDPOINTS: &str = "127.0.0.1:7100,127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103";
/// The playground's shard manager.
pub const DEFAULT_SHARD_MANAGER: &str = "127.0.0.1:7100";

#[derive(Parser)]
#[command(
    name = "shoal",
    about = "Shoal: a strongly consistent, sharded key-value store",
    version
)]
pub struct Cli {
    /// Comma-separated addresses to fetch the shard map from: the shard
    /// manager and/or kv-server client ports.
    #[arg(long, env = "SHOAL_ENDPOINTS", default_value = DEFAULT_ENDPOINTS, global = true)]
    endpoints: String,
    /// Shard manager address (admin commands).
    #[arg(long, env = "SHOAL_SHARD_MANAGER", default_value = DEFAULT_SHARD_MANAGER, global = true)]
    shard_manager: String,
    /// Keyspace to use.
    #[arg(long, env = "SHOAL_KEYSPACE", default_value = "default", global = true)]
    keyspace: String,
    /// Deadline of one operation, retries included, in seconds.
    #[arg(long, default_value_t = 10.0, global = true)]
    timeout: f64,
    /// This client's region: reads any replica may serve (bounded,
    /// read-your-writes) go to replicas there first, and primaries count
    /// this client's writes and strong reads by it, so that μshards of
    /// akkio keyspaces move towards their traffic (docs/moves.md).
    #[arg(long, env = "SHOAL_NEAR_REGION", global = true)]
    near_region: Option<String>,
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Start a local cluster (a shard manager and kv-server processes); Ctrl-C stops it.
    Playground {
        #[arg(long, default_value = "shoal-data")]
        data_dir: PathBuf,
        #[arg(long, default_value_t = 3)]
        nodes: u64,
        /// Shards of the `default` keyspace.
        #[arg(long, default_value_t = 4)]
        shards: u64,
        #[arg(long, default_value_t = 64)]
        ushards: u32,
        /// Comma-separated regions assigned to nodes in turn.
        #[arg(long, default_value = "local")]
        regions: String,
        /// Client port of node 1; node i uses base+i-1, base+100+i-1 for Raft,
        /// and the shard manager base-1.
        #[arg(long, default_value_t = 7101)]
        base_port: u16,
    },
    /// Write a value. Prints its version, the read-your-writes token.
    Put {
        key: String,
        value: String,
        /// Place the key in this routing key's micro-shard.
        #[arg(long)]
        routing_key: Option<String>,
        /// The key disappears after this long: 500ms, 30s, 5m, 1h.
        #[arg(long, value_parser = parse_ttl)]
        ttl: Option<Duration>,
        /// Acknowledge once the primary accepted the write, before a quorum
        /// has it: faster, lost if the primary dies first.
        #[arg(long)]
        fast_ack: bool,
        /// Only if the key does not exist (put-if-absent).
        #[arg(long, conflicts_with = "if_version")]
        if_absent: bool,
        /// Only if the key is at this version (put-if-version).
        #[arg(long)]
        if_version: Option<u64>,
    },
    /// Compare-and-set: write NEW only if the key now holds what one of
    /// --expect-value, --expect-version or --expect-absent says. Exits 1 and
    /// prints the current value if not.
    #[command(group(clap::ArgGroup::new("expectation").required(true).args(["expect_value", "expect_version", "expect_absent"])))]
    Cas {
        key: String,
        /// The value to write.
        new: String,
        /// The value the key must hold now.
        #[arg(long)]
        expect_value: Option<String>,
        /// The version the key must be at now.
        #[arg(long)]
        expect_version: Option<u64>,
        /// The key must not exist now.
        #[arg(long)]
        expect_absent: bool,
        #[arg(long)]
        routing_key: Option<String>,
    },
    /// Add DELTA (default 1, may be negative) to a counter; prints the new value.
    Incr {
        key: String,
        #[arg(default_value_t = 1, allow_hyphen_values = true)]
        delta: i64,
        #[arg(long)]
        routing_key: Option<String>,
    },
    /// Read a value. Exits 1 if the key does not exist.
    Get {
        key: String,
        #[arg(long)]
        routing_key: Option<String>,
        /// Also print the version.
        #[arg(long)]
        versions: bool,
        /// strong (primary, linearizable), bounded:DURATION (any replica
        /// provably at most that stale, e.g. bounded:500ms), or ryw:VERSION
        /// (any replica that has applied the version a put printed).
        #[arg(long, default_value = "strong", value_parser = parse::consistency)]
        consistency: ReadConsistency,
    },
    /// Delete a key.
    Del {
        key: String,
        #[arg(long)]
        routing_key: Option<String>,
        /// Only if the key exists (delete-if-present).
        #[arg(long, conflicts_with = "if_version")]
        if_present: bool,
        /// Only if the key is at this version (delete-if-version).
        #[arg(long)]
        if_version: Option<u64>,
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
    /// Run one transaction, its commands read from standard input one a
    /// line: get KEY, put KEY VALUE, del KEY, incr KEY N, scan PREFIX,
    /// commit, abort. Prints each read as it goes and `COMMITTED
    /// version=N`; a conflict exits 1 and applies nothing.
    Txn {
        /// Put every key under this routing key (one μshard); needed by `scan`.
        #[arg(long)]
        routing: Option<String>,
        /// Read from the primary instead of any replica able to prove its
        /// freshness: fewer conflicts, more load on the primary.
        #[arg(long)]
        strong: bool,
        /// Refuse writes; `commit` still checks the reads were consistent.
        #[arg(long)]
        read_only: bool,
        /// Entries one `scan` prints at most.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=1000))]
        scan_limit: u64,
    },
    /// Show every node's replicas: role, term, leader, progress (asks the nodes).
    Status,
    /// Exit 0 when the node or shard manager at ADDR answers (health checks).
    Health { addr: String },
    /// Cluster administration through the shard manager.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Node administration through the shard manager.
    Node {
        #[command(subcommand)]
        command: NodeCommand,
    },
    /// Shard administration through the shard manager.
    Shard {
        #[command(subcommand)]
        command: ShardCommand,
    },
    /// Keyspace administration through the shard manager.
    Keyspace {
        #[command(subcommand)]
        command: KeyspaceCommand,
    },
    /// μshards: where a key lives, the map, moves (docs/moves.md).
    Ushard {
        #[command(subcommand)]
        command: UshardCommand,
    },
    /// Run the load generator and print ops/s and latency percentiles.
    Bench {
        /// Start a fresh local 3-node cluster in a temporary folder and run
        /// ping, put and get at 1 and 64 clients against it.
        #[arg(long)]
        local: bool,
        /// Instead: on a fresh local cluster with a shard manager, kill -9 the
        /// node of a primary this many times and time the failovers.
        #[arg(long)]
        failover_kills: Option<usize>,
        /// Instead: on a fresh 5-node cluster loaded with --keys values of
        /// --value-bytes, kill -9 the node with the most replicas this many
        /// times and time how long until full replication is back.
        #[arg(long)]
        repair_kills: Option<usize>,
        /// Instead: on a fresh local 3-node cluster, kill -9 a primary this
        /// many times under fast-ack and then quorum writes, and count the
        /// acknowledged writes each mode lost.
        #[arg(long)]
        fast_ack_kills: Option<usize>,
        /// Instead: on a fresh local cluster with a shard manager, move a
        /// μshard holding --move-mb MiB back and forth this many times under
        /// writes, and print time to activation, write pauses and the other
        /// μshards' throughput during moves against before.
        #[arg(long)]
        move_rounds: Option<usize>,
        /// MiB loaded into the moved μshard for --move-rounds.
        #[arg(long, default_value_t = 10)]
        move_mb: u64,
        /// The shard manager's move copy budget for --move-rounds, in KiB/s
        /// (default: the shard manager's own).
        #[arg(long)]
        move_kib_per_sec: Option<u64>,
        /// Instead: on a fresh local two-region cluster, show a μshard
        /// following its traffic to the other region, then count the moves
        /// of μshards with even and alternating traffic over this many
        /// minutes (docs/moves.md, "Locality").
        #[arg(long)]
        locality_minutes: Option<u64>,
        /// Instead: on a fresh local 3-node cluster, the commit latency of a
        /// transaction that read 10 keys and writes 2 against a single put
        /// (1 and 64 clients), and the abort rate of bank transfers on 10
        /// accounts (1, 8 and 64 clients), --seconds each.
        #[arg(long)]
        txn: bool,
        /// Repair grace period for --repair-kills, in seconds.
        #[arg(long, default_value_t = 5)]
        grace_seconds: u64,
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

#[derive(Subcommand)]
enum ClusterCommand {
    /// Nodes with liveness, keyspaces, shards with voters, primary and epoch.
    Status,
}

#[derive(Subcommand)]
enum NodeCommand {
    /// Move every primary and replica off node ID (it gets no new ones).
    /// Returns at once; `shoal cluster status` shows the progress.
    Drain { id: u64 },
    /// End a drain: node ID may receive replicas and primaries again.
    Activate { id: u64 },
    /// Forget node ID for good. Refused while it is alive and holds
    /// replicas; a dead node's replicas are rebuilt elsewhere at once.
    Remove { id: u64 },
}

#[derive(Subcommand)]
enum UshardCommand {
    /// The μshard, shard, primary and map version of KEY (in --keyspace).
    Show {
        key: String,
        #[arg(long)]
        routing_key: Option<String>,
    },
    /// Every keyspace's μshards per shard, and the moves under way.
    List,
    /// Move USHARD of KEYSPACE to SHARD, live; shows the progress until it
    /// is done (an aborted move exits non-zero). Akkio keyspaces only.
    Move {
        keyspace: String,
        ushard: u32,
        shard: u64,
        /// Return once the move is recorded; `shoal ushard list` shows it.
        #[arg(long)]
        no_wait: bool,
    },
    /// Abort move MOVE while it copies (after activation it finishes).
    Abort { id: u64 },
    /// Pin USHARD of KEYSPACE (akkio) to REGION: it moves to a shard whose
    /// primary is there and locality never moves it away.
    Pin {
        keyspace: String,
        ushard: u32,
        #[arg(value_parser = parse::non_empty)]
        region: String,
    },
    /// Remove the pin of USHARD of KEYSPACE.
    Unpin { keyspace: String, ushard: u32 },
}

#[derive(Subcommand)]
enum ShardCommand {
    /// Make NODE the primary of SHARD (epoch + 1); leadership follows.
    MovePrimary { shard: u64, node: u64 },
    /// Split SHARD: a new shard (placed like any other) takes an upper
    /// range of its μshards carrying about half its recent load (half of
    /// them when no load was counted), one live move each; shows them to
    /// the end.
    Split {
        shard: u64,
        /// Return once the moves are recorded.
        #[arg(long)]
        no_wait: bool,
    },
    /// Merge SHARD into INTO (same keyspace): every μshard of SHARD moves
    /// to INTO, then SHARD retires and nodes delete its replicas.
    Merge {
        shard: u64,
        into: u64,
        /// Return once the moves are recorded.
        #[arg(long)]
        no_wait: bool,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum MappingArg {
    Compact,
    Akkio,
}

impl MappingArg {
    fn to_proto(self) -> i32 {
        use shoal_proto::admin::UshardMapping;
        match self {
            MappingArg::Compact => UshardMapping::Compact as i32,
            MappingArg::Akkio => UshardMapping::Akkio as i32,
        }
    }
}

#[derive(Subcommand)]
enum KeyspaceCommand {
    /// Create a keyspace: its shards are placed and served at once.
    Create {
        name: String,
        #[arg(long, default_value_t = 3)]
        replicas: u32,
        #[arg(long, default_value_t = 4)]
        shards: u32,
        #[arg(long, default_value_t = 64)]
        ushards: u32,
        /// Regions voters may live in (repeat the flag); default any.
        #[arg(long = "region")]
        regions: Vec<String>,
        /// Region primaries should sit in when possible.
        #[arg(long, default_value = "")]
        preferred_region: String,
        /// Put one learner (non-voting replica) in this region (repeat the flag).
        #[arg(long = "learner-region")]
        learner_regions: Vec<String>,
        /// How μshards sit in shards: compact (ranges, changed by split and
        /// merge) or akkio (any μshard in any shard, moved toward its traffic).
        #[arg(long, value_enum, default_value_t = MappingArg::Compact)]
        mapping: MappingArg,
        /// Succeed without changing anything when the keyspace exists.
        #[arg(long)]
        if_not_exists: bool,
    },
}

pub fn client_config(cli: &Cli) -> anyhow::Result<ClientConfig> {
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
    if let Some(bad) = endpoints.iter().find(|e| !e.contains(':')) {
        bail!("--endpoints: {bad:?} is not HOST:PORT");
    }
    Ok(ClientConfig {
        endpoints,
        keyspace: cli.keyspace.clone(),
        timeout: Duration::from_secs_f64(cli.timeout),
        region: cli.near_region.clone(),
        ..ClientConfig::default()
    })
}

#[tokio::main]
async fn main() {
    // Like any Unix tool, end quietly when the reader goes away
    // (`shoal cluster status | head`) instead of panicking on EPIPE.
    // SAFETY: restoring the default disposition of SIGPIPE, before any
    // other thread of ours is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
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
            regions,
            base_port,
        } => {
            let options = playground::Options {
                data_dir: data_dir.clone(),
                nodes: *nodes,
                shards: *shards,
                ushards: *ushards,
                regions: regions
                    .split(',')
                    .map(str::trim)
                    .filter(|r| !r.is_empty())
                    .map(String::from)
                    .collect(),
                base_port: *base_port,
            };
            playground::run(options).await
        }
        Commands::Put {
            key,
            value,
            routing_key,
            ttl,
            fast_ack,
            if_absent,
            if_version,
        } => {
            let options = PutOptions {
                condition: flag_or_version(*if_absent, Condition::Absent, *if_version),
                ttl: *ttl,
                fast_ack: *fast_ack,
            };
            data::put(&cli, key, value, routing_key.as_deref(), &options).await
        }
        Commands::Cas {
            key,
            new,
            expect_value,
            expect_version,
            expect_absent,
            routing_key,
        } => {
            let condition = match (expect_value, expect_version, expect_absent) {
                (_, _, true) => Condition::Absent,
                (_, Some(v), _) => Condition::Version(*v),
                (Some(value), _, _) => Condition::Value(value.as_bytes().to_vec()),
                (None, None, false) => bail!("give --expect-value, --expect-version or --expect-absent"),
            };
            let options = PutOptions {
                condition: Some(condition),
                ..PutOptions::default()
            };
            data::put(&cli, key, new, routing_key.as_deref(), &options).await
        }
        Commands::Incr {
            key,
            delta,
            routing_key,
        } => data::incr(&cli, key, *delta, routing_key.as_deref()).await,
        Commands::Get {
            key,
            routing_key,
            versions,
            consistency,
        } => data::get(&cli, key, routing_key.as_deref(), *versions, *consistency).await,
        Commands::Del {
            key,
            routing_key,
            if_present,
            if_version,
        } => {
            let condition = flag_or_version(*if_present, Condition::Present, *if_version);
            data::del(&cli, key, routing_key.as_deref(), condition).await
        }
        Commands::Scan {
            prefix,
            start,
            end,
            reverse,
            limit,
        } => data::scan(&cli, prefix, start, end, *reverse, *limit).await,
        Commands::Txn {
            routing,
            strong,
            read_only,
            scan_limit,
        } => {
            let options = txn::Options {
                routing: routing.as_deref(),
                strong: *strong,
                read_only: *read_only,
                scan_limit: *scan_limit as usize,
            };
            txn::run(&cli, options).await
        }
        Commands::Status => admin::node_status(&cli).await,
        Commands::Health { addr } => admin::health(addr).await,
        Commands::Cluster {
            command: ClusterCommand::Status,
        } => admin::cluster_status(&cli).await,
        Commands::Node {
            command: NodeCommand::Drain { id },
        } => admin::node_action(&cli, *id, admin::NodeAction::Drain).await,
        Commands::Node {
            command: NodeCommand::Remove { id },
        } => admin::node_action(&cli, *id, admin::NodeAction::Remove).await,
        Commands::Node {
            command: NodeCommand::Activate { id },
        } => admin::node_action(&cli, *id, admin::NodeAction::Activate).await,
        Commands::Shard { command } => match command {
            ShardCommand::MovePrimary { shard, node } => admin::move_primary(&cli, *shard, *node).await,
            ShardCommand::Split { shard, no_wait } => resharding::split(&cli, *shard, *no_wait).await,
            ShardCommand::Merge { shard, into, no_wait } => resharding::merge(&cli, *shard, *into, *no_wait).await,
        },
        Commands::Ushard { command } => match command {
            UshardCommand::Show { key, routing_key } => ushard::show(&cli, key, routing_key.as_deref()).await,
            UshardCommand::List => ushard::list(&cli).await,
            UshardCommand::Move {
                keyspace,
                ushard: u,
                shard,
                no_wait,
            } => ushard::start_move(&cli, keyspace, *u, *shard, *no_wait).await,
            UshardCommand::Abort { id } => ushard::abort(&cli, *id).await,
            UshardCommand::Pin {
                keyspace,
                ushard: u,
                region,
            } => ushard::pin(&cli, keyspace, *u, region).await,
            UshardCommand::Unpin { keyspace, ushard: u } => ushard::pin(&cli, keyspace, *u, "").await,
        },
        Commands::Keyspace {
            command:
                KeyspaceCommand::Create {
                    name,
                    replicas,
                    shards,
                    ushards,
                    regions,
                    preferred_region,
                    learner_regions,
                    mapping,
                    if_not_exists,
                },
        } => {
            let request = shoal_proto::sm::CreateKeyspaceRequest {
                name: name.clone(),
                replicas: *replicas,
                shards: *shards,
                ushards: *ushards,
                regions: regions.clone(),
                preferred_region: preferred_region.clone(),
                learner_regions: learner_regions.clone(),
                mapping: mapping.to_proto(),
            };
            admin::create_keyspace(&cli, request, *if_not_exists).await
        }
        Commands::Bench {
            local,
            failover_kills,
            repair_kills,
            fast_ack_kills,
            move_rounds,
            move_mb,
            move_kib_per_sec,
            locality_minutes,
            txn,
            grace_seconds,
            op,
            concurrency,
            seconds,
            value_bytes,
            keys,
        } => {
            if let Some(kills) = fast_ack_kills {
                return bench_cmd::fast_ack_loss((*kills).max(1)).await;
            }
            if *txn {
                return bench_txn::run(Duration::from_secs((*seconds).max(1))).await;
            }
            if let Some(minutes) = locality_minutes {
                return bench_locality::locality(*minutes).await;
            }
            if let Some(rounds) = move_rounds {
                return bench_move::moves((*rounds).max(1), *move_mb, move_kib_per_sec.map(|k| k.max(1) * 1024)).await;
            }
            if let Some(kills) = failover_kills {
                return bench_cmd::failover((*kills).max(1)).await;
            }
            if let Some(kills) = repair_kills {
                let grace = Duration::from_secs((*grace_seconds).max(2));
                return bench_cmd::repair((*kills).max(1), *keys, *value_bytes, grace).await;
            }
            let duration = Duration::from_secs(*seconds);
            if *local {
                return bench_cmd::local(duration, *value_bytes, *keys).await;
            }
            bench_cmd::remote(&cli, *op, *concurrency, duration, *value_bytes, *keys).await
        }
    }
}

/// The condition a put's or delete's flags ask for: `flagged` when the
/// flag (`--if-absent`, `--if-present`) is set, else `--if-version`.
fn flag_or_version(flag: bool, flagged: Condition, if_version: Option<u64>) -> Option<Condition> {
    if flag {
        Some(flagged)
    } else {
        if_version.map(Condition::Version)
    }
}

/// A TTL: a positive duration with its unit.
fn parse_ttl(text: &str) -> Result<Duration, String> {
    match parse::duration(text)? {
        ttl if ttl.is_zero() => Err("a TTL must be longer than 0".into()),
        ttl => Ok(ttl),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        // Catches clashing flag names (a global flag shadowing a
        // subcommand's) that clap only reports when that subcommand runs.
        Cli::command().debug_assert();
    }

    #[test]
    fn bad_values_are_usage_errors() {
        for args in [
            ["shoal", "get", "k", "--consistency", "ryw"].as_slice(),
            &["shoal", "get", "k", "--consistency", "bounded:5q"],
            &["shoal", "put", "k", "v", "--ttl", "30"],
            &["shoal", "put", "k", "v", "--ttl", "0s"],
            &["shoal", "put", "k", "v", "--ttl", "307445734561825861m"],
            &["shoal", "cas", "k", "v"],
            &["shoal", "ushard", "pin", "default", "3", ""],
        ] {
            let error = Cli::try_parse_from(args)
                .err()
                .unwrap_or_else(|| panic!("{args:?} parsed"));
            assert_eq!(error.exit_code(), 2, "{args:?}: {error}");
        }
        let create = ["shoal", "keyspace", "create", "users", "--region", "east"];
        assert!(Cli::try_parse_from(create).is_ok());
    }
}
