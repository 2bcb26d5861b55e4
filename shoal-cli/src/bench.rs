//! The load generator behind `shoal bench`: N concurrent clients issue puts
//! or gets for a fixed time; latencies go into an HDR histogram.
//!
//! It reports figures, never judges them: compare runs made in the same
//! session on the same machine.

use hdrhistogram::Histogram;
use kv_client::{PutOptions, ReadConsistency, ShoalClient};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchOp {
    /// Quorum write (the default acknowledgement).
    Put,
    /// Fast-ack write: acknowledged once the primary accepted it.
    FastPut,
    /// Strong read (the primary, under its lease).
    Get,
    /// Bounded-staleness read (1 s), served by followers first.
    BoundedGet,
    /// A bare gRPC round trip to a node (the layout call): no Raft, no
    /// RocksDB. The baseline the other figures are compared against.
    Ping,
}

#[derive(Clone, Debug)]
pub struct BenchSpec {
    pub op: BenchOp,
    pub concurrency: usize,
    pub duration: Duration,
    pub value_bytes: usize,
    /// Key space the workers draw from; gets read keys that `preload` wrote.
    pub keys: u64,
}

#[derive(Clone, Debug)]
pub struct BenchReport {
    pub op: BenchOp,
    pub concurrency: usize,
    pub ok: u64,
    pub errors: u64,
    pub elapsed: Duration,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl BenchReport {
    pub fn ops_per_sec(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:?} concurrency={} ok={} errors={} ops/s={:.0} p50={:.2}ms p99={:.2}ms max={:.2}ms",
            self.op,
            self.concurrency,
            self.ok,
            self.errors,
            self.ops_per_sec(),
            self.p50.as_secs_f64() * 1e3,
            self.p99.as_secs_f64() * 1e3,
            self.max.as_secs_f64() * 1e3
        )
    }
}

fn bench_key(i: u64) -> Vec<u8> {
    format!("bench/{i:08}").into_bytes()
}

/// Writes every key of the key space once, so gets find values.
pub async fn preload(client: &Arc<ShoalClient>, keys: u64, value_bytes: usize) -> anyhow::Result<()> {
    let value = vec![b'v'; value_bytes];
    let mut tasks = Vec::new();
    for worker in 0..16u64 {
        let client = client.clone();
        let value = value.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = worker;
            while i < keys {
                client.put(bench_key(i), value.clone()).await?;
                i += 16;
            }
            Ok::<(), kv_client::ClientError>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// Runs the load and returns its figures. Stops by itself after `duration`.
pub async fn run(client: Arc<ShoalClient>, spec: BenchSpec) -> anyhow::Result<BenchReport> {
    let start = Instant::now();
    let stop_at = start + spec.duration;
    let mut tasks = Vec::new();
    for worker in 0..spec.concurrency {
        let client = client.clone();
        let spec = spec.clone();
        tasks.push(tokio::spawn(async move {
            let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds");
            let mut errors = 0u64;
            let value = vec![b'x'; spec.value_bytes];
            let fast = PutOptions {
                fast_ack: true,
                ..PutOptions::default()
            };
            let bounded = ReadConsistency::Bounded(Duration::from_secs(1));
            let mut i = worker as u64;
            while Instant::now() < stop_at {
                let key = bench_key(i % spec.keys.max(1));
                // Stride by a prime so workers spread over the key space.
                i = i.wrapping_add(7919);
                let began = Instant::now();
                let result = match spec.op {
                    BenchOp::Put => client.put(key, value.clone()).await.map(|_| ()),
                    BenchOp::FastPut => client.put_with(key, value.clone(), &fast).await.map(|_| ()),
                    BenchOp::Get => client.get(key).await.map(|_| ()),
                    BenchOp::BoundedGet => client.get_with(key, bounded).await.map(|_| ()),
                    BenchOp::Ping => client.ping().await,
                };
                match result {
                    Ok(()) => {
                        let micros = began.elapsed().as_micros().clamp(1, 60_000_000) as u64;
                        let _ = histogram.record(micros);
                    }
                    Err(_) => errors += 1,
                }
            }
            (histogram, errors)
        }));
    }
    let mut merged = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut errors = 0;
    for task in tasks {
        let (histogram, worker_errors) = task.await?;
        merged.add(&histogram)?;
        errors += worker_errors;
    }
    let elapsed = start.elapsed();
    let micros = |v: u64| Duration::from_micros(v);
    Ok(BenchReport {
        op: spec.op,
        concurrency: spec.concurrency,
        ok: merged.len(),
        errors,
        elapsed,
        p50: micros(merged.value_at_quantile(0.50)),
        p99: micros(merged.value_at_quantile(0.99)),
        max: micros(merged.max()),
    })
}
