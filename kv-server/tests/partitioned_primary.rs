//! A primary cut off from its peers and from the shard manager — failpoints
//! `raft-send`, `raft-receive` and `sm-heartbeat` (docs/failpoints.md) —
//! can neither acknowledge a write nor serve a strong read, while the new
//! primary serves both; after the partition heals, what the cut-off primary
//! was asked to write is gone. Needs a kv-server built with the
//! `failpoints` feature (`make test` builds it so). The same schedule runs
//! in one process in `in_process.rs`.

mod common;

use common::must_start_two_region_cluster;
use common::schedules::{partitioned_primary_is_fenced, ProcessFaults};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolated_primary_cannot_ack_writes_or_serve_strong_reads() {
    // A long grace period: this test is about fencing, not repair.
    let tc = must_start_two_region_cluster(Duration::from_secs(60)).await;
    let mut faults = ProcessFaults::new(tc.cluster);
    partitioned_primary_is_fenced(&faults).await;
    faults.cluster.stop_all(Duration::from_secs(10));
}
