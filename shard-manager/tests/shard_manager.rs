//! The shard manager over gRPC, in process on port 0: registration with ids
//! never reused, keyspace placement across nodes and regions, clear errors,
//! and no state lost across a restart.

use shard_manager::config::ManagerConfig;
use shoal_proto::sm::shard_manager_client::ShardManagerClient;
use shoal_proto::sm::*;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;
use tonic::transport::Channel;

struct Running {
    addr: std::net::SocketAddr,
    client: ShardManagerClient<Channel>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

async fn must_start(dir: &Path) -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = ManagerConfig {
        data_dir: dir.to_path_buf(),
        listen: addr.to_string(),
        suspect_after_ms: 2_000,
        dead_after_ms: 30_000,
        moves: Default::default(),
        splits: Default::default(),
        rebalance: Default::default(),
        locality: Default::default(),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(shard_manager::server::run(config, listener, async {
        let _ = stopped.await;
    }));
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy();
    Running {
        addr,
        client: ShardManagerClient::new(channel),
        stop,
        task,
    }
}

async fn must_stop(running: Running) {
    let _ = running.stop.send(());
    running.task.await.unwrap().unwrap();
}

async fn must_get_map(client: &mut ShardManagerClient<Channel>) -> ShardMap {
    client
        .get_shard_map(GetShardMapRequest {})
        .await
        .expect("shard map")
        .into_inner()
}

async fn must_register(client: &mut ShardManagerClient<Channel>, id: u64, port: u16, region: &str) -> u64 {
    client
        .register_node(RegisterNodeRequest {
            node_id: id,
            client_addr: format!("127.0.0.1:{port}"),
            raft_addr: format!("127.0.0.1:{}", port + 100),
            region: region.into(),
            labels: Default::default(),
        })
        .await
        .expect("register")
        .into_inner()
        .node_id
}

fn keyspace(name: &str, replicas: u32, shards: u32, preferred: &str) -> CreateKeyspaceRequest {
    CreateKeyspaceRequest {
        name: name.into(),
        replicas,
        shards,
        ushards: shards * 16,
        regions: vec![],
        preferred_region: preferred.into(),
        learner_regions: vec![],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyspace_creation_spreads_replicas_and_primaries_and_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = must_start(dir.path()).await;
    let regions = ["east", "east", "east", "west", "west"];
    let mut ids = Vec::new();
    for (i, region) in regions.iter().enumerate() {
        ids.push(must_register(&mut sm.client, 0, 7101 + i as u16, region).await);
    }
    assert_eq!(ids, vec![1, 2, 3, 4, 5], "ids are allocated in order");
    let region_of: HashMap<u64, &str> = ids.iter().copied().zip(regions).collect();

    let created = sm
        .client
        .create_keyspace(keyspace("users", 3, 10, ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.shard_ids.len(), 10);
    let map = must_get_map(&mut sm.client).await;
    let mut primaries: HashMap<u64, usize> = HashMap::new();
    for shard in &map.shards {
        let voters: HashSet<u64> = shard.voters.iter().copied().collect();
        assert_eq!(voters.len(), 3, "three distinct nodes: {shard:?}");
        let spanned: HashSet<&str> = shard.voters.iter().map(|v| region_of[v]).collect();
        assert_eq!(spanned.len(), 2, "both regions: {shard:?}");
        assert!(voters.contains(&shard.primary), "primary is a voter: {shard:?}");
        assert_eq!(shard.epoch, 1);
        *primaries.entry(shard.primary).or_default() += 1;
    }
    assert_eq!(primaries.values().sum::<usize>(), 10);
    assert!(
        primaries.values().all(|n| *n == 2),
        "primaries balanced over 5 nodes: {primaries:?}"
    );

    // A preferred region gets every primary it can.
    let west = sm
        .client
        .create_keyspace(keyspace("west-heavy", 3, 4, "west"))
        .await
        .unwrap()
        .into_inner();
    let map = must_get_map(&mut sm.client).await;
    for shard in map.shards.iter().filter(|s| west.shard_ids.contains(&s.shard_id)) {
        assert_eq!(region_of[&shard.primary], "west", "{shard:?}");
    }

    // Bad input: clear errors, nothing created.
    let dup = sm
        .client
        .create_keyspace(keyspace("users", 3, 2, ""))
        .await
        .unwrap_err();
    assert_eq!(dup.code(), tonic::Code::AlreadyExists);
    let too_many = sm.client.create_keyspace(keyspace("big", 6, 2, "")).await.unwrap_err();
    assert_eq!(too_many.code(), tonic::Code::FailedPrecondition);
    assert!(
        too_many.message().contains("need 6 eligible nodes"),
        "{}",
        too_many.message()
    );
    let bad_name = sm
        .client
        .create_keyspace(keyspace("no spaces", 3, 2, ""))
        .await
        .unwrap_err();
    assert_eq!(bad_name.code(), tonic::Code::InvalidArgument);
    let unknown = sm
        .client
        .heartbeat(HeartbeatRequest {
            node_id: 99,
            replicas: vec![],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    let before_restart = must_get_map(&mut sm.client).await;
    assert_eq!(
        before_restart.keyspaces.len(),
        2,
        "failed creations left nothing behind"
    );

    // Restart: every record is back; liveness is not durable, so nodes are
    // dead until they heartbeat again.
    must_stop(sm).await;
    let mut sm = must_start(dir.path()).await;
    let after = must_get_map(&mut sm.client).await;
    assert_eq!(after.version, before_restart.version);
    assert_eq!(after.keyspaces, before_restart.keyspaces);
    assert_eq!(after.shards, before_restart.shards);
    assert!(after.nodes.iter().all(|n| n.liveness == "dead"));
    // "Dead" here only means "not heard from since the restart": within the
    // grace period, a node holding replicas cannot be removed.
    let err = sm.client.remove_node(NodeRequest { node_id: 1 }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    // A known node keeps its id; a new node never gets an old one.
    assert_eq!(must_register(&mut sm.client, 2, 7102, "east").await, 2);
    assert_eq!(must_register(&mut sm.client, 0, 7106, "west").await, 6);
    let version = sm
        .client
        .heartbeat(HeartbeatRequest {
            node_id: 2,
            replicas: vec![],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(version.map_version > before_restart.version);
    tokio::time::sleep(Duration::from_millis(10)).await;
    let map = must_get_map(&mut sm.client).await;
    let live: Vec<u64> = map
        .nodes
        .iter()
        .filter(|n| n.liveness == "alive")
        .map(|n| n.node_id)
        .collect();
    assert_eq!(live, vec![2, 6]);
    must_stop(sm).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learners_drain_and_remove_and_the_client_layout() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = must_start(dir.path()).await;
    let regions = ["east", "east", "east", "west", "west"];
    for (i, region) in regions.iter().enumerate() {
        must_register(&mut sm.client, 0, 7101 + i as u16, region).await;
    }

    // Voters in east, one learner per shard in west.
    let mut request = keyspace("reads", 3, 4, "");
    request.regions = vec!["east".into()];
    request.learner_regions = vec!["west".into()];
    let created = sm.client.create_keyspace(request).await.unwrap().into_inner();
    assert_eq!(created.learner_regions, vec!["west".to_string()]);
    let map = must_get_map(&mut sm.client).await;
    let mut learner_load: HashMap<u64, usize> = HashMap::new();
    for shard in &map.shards {
        assert_eq!(
            shard.voters.iter().copied().collect::<HashSet<_>>(),
            HashSet::from([1, 2, 3])
        );
        assert_eq!(shard.learners.len(), 1, "{shard:?}");
        assert!(shard.learners[0] >= 4, "the learner is in west: {shard:?}");
        assert_eq!((shard.conf_ver, shard.change_phase.as_str()), (1, ""));
        *learner_load.entry(shard.learners[0]).or_default() += 1;
    }
    assert_eq!(learner_load, HashMap::from([(4, 2), (5, 2)]), "learners balanced");

    // Learner regions that cannot be honoured are refused, nothing created.
    let mut nowhere = keyspace("nowhere", 3, 1, "");
    nowhere.learner_regions = vec!["north".into()];
    let err = sm.client.create_keyspace(nowhere).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    let mut twice = keyspace("twice", 3, 1, "");
    twice.learner_regions = vec!["west".into(), "west".into()];
    let err = sm.client.create_keyspace(twice).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");

    // Clients can fetch the map here, in the shape nodes serve it.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", sm.addr))
        .unwrap()
        .connect_lazy();
    let layout = shoal_proto::admin::admin_client::AdminClient::new(channel)
        .get_layout(shoal_proto::admin::GetLayoutRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(layout.version, map.version);
    assert_eq!(layout.shards.len(), 4);
    for (info, shard) in layout.shards.iter().zip(&map.shards) {
        assert_eq!(
            (info.shard_id, &info.replicas, &info.learners, info.primary, info.epoch),
            (
                shard.shard_id,
                &shard.voters,
                &shard.learners,
                shard.primary,
                shard.epoch
            )
        );
    }

    // Drain and remove: unknown ids, and removing a live node that still
    // holds replicas, are refused.
    let err = sm.client.drain_node(NodeRequest { node_id: 42 }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let err = sm.client.remove_node(NodeRequest { node_id: 1 }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(err.message().contains("drain it first"), "{}", err.message());
    let drained = sm
        .client
        .drain_node(NodeRequest { node_id: 1 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((drained.intent.as_str(), drained.replica_count), ("draining", 4));
    // A draining node gets no new replicas.
    let later = sm
        .client
        .create_keyspace(keyspace("later", 3, 2, ""))
        .await
        .unwrap()
        .into_inner();
    let map = must_get_map(&mut sm.client).await;
    for shard in map.shards.iter().filter(|s| later.shard_ids.contains(&s.shard_id)) {
        assert!(!shard.voters.contains(&1), "{shard:?}");
    }
    // A node holding nothing may be removed; its id is then refused.
    let sixth = must_register(&mut sm.client, 0, 7106, "west").await;
    let removed = sm
        .client
        .remove_node(NodeRequest { node_id: sixth })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(removed.intent, "removed");
    let err = sm
        .client
        .register_node(RegisterNodeRequest {
            node_id: sixth,
            client_addr: "127.0.0.1:7106".into(),
            raft_addr: "127.0.0.1:7206".into(),
            region: "west".into(),
            labels: Default::default(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    must_stop(sm).await;
}
