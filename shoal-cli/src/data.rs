//! Data commands: put (and cas), incr, get, del, scan.

use crate::{client_config, Cli};
use anyhow::bail;
use kv_client::{Condition, Key, PutOptions, ReadConsistency, ScanOptions, ShoalClient, Versioned, WriteResult};

fn key_of(key: &str, routing_key: Option<&str>) -> Key {
    match routing_key {
        Some(r) => Key::routed(r, key),
        None => Key::from(key),
    }
}

async fn connect(cli: &Cli) -> anyhow::Result<ShoalClient> {
    Ok(ShoalClient::connect(client_config(cli)?).await?)
}

/// Prints an applied write, or fails with the key's current state.
fn report(result: WriteResult) -> anyhow::Result<()> {
    match result {
        WriteResult::Applied(ack) if ack.version == 0 => {
            println!(
                "OK (fast-ack: accepted by the primary, version not known yet) shard={}",
                ack.shard
            )
        }
        WriteResult::Applied(ack) => println!("OK version={} shard={}", ack.version, ack.shard),
        WriteResult::ConditionFailed { current: None } => bail!("condition failed: the key does not exist"),
        WriteResult::ConditionFailed { current: Some(v) } => bail!(
            "condition failed: the key holds {:?} at version {}",
            String::from_utf8_lossy(&v.value),
            v.version
        ),
    }
    Ok(())
}

pub async fn put(
    cli: &Cli,
    key: &str,
    value: &str,
    routing_key: Option<&str>,
    options: &PutOptions,
) -> anyhow::Result<()> {
    report(
        connect(cli)
            .await?
            .put_with(key_of(key, routing_key), value, options)
            .await?,
    )
}

pub async fn incr(cli: &Cli, key: &str, delta: i64, routing_key: Option<&str>) -> anyhow::Result<()> {
    let (value, _) = connect(cli).await?.increment(key_of(key, routing_key), delta).await?;
    println!("{value}");
    Ok(())
}

fn describe(v: &Versioned) -> String {
    let mut out = format!("version={}", v.version);
    if v.expires_at_ms != 0 {
        out.push_str(&format!(" expires_at_ms={}", v.expires_at_ms));
    }
    out
}

pub async fn get(
    cli: &Cli,
    key: &str,
    routing_key: Option<&str>,
    versions: bool,
    consistency: ReadConsistency,
) -> anyhow::Result<()> {
    match connect(cli)
        .await?
        .get_with(key_of(key, routing_key), consistency)
        .await?
    {
        Some(v) if versions => println!("{}\t{}", String::from_utf8_lossy(&v.value), describe(&v)),
        Some(v) => println!("{}", String::from_utf8_lossy(&v.value)),
        None => bail!("key not found: {key}"),
    }
    Ok(())
}

pub async fn del(cli: &Cli, key: &str, routing_key: Option<&str>, condition: Option<Condition>) -> anyhow::Result<()> {
    report(
        connect(cli)
            .await?
            .delete_with(key_of(key, routing_key), condition)
            .await?,
    )
}

pub async fn scan(cli: &Cli, prefix: &str, start: &str, end: &str, reverse: bool, limit: usize) -> anyhow::Result<()> {
    let options = ScanOptions {
        prefix: prefix.as_bytes().to_vec(),
        start: start.as_bytes().to_vec(),
        end: end.as_bytes().to_vec(),
        reverse,
        limit: limit.clamp(1, 1000) as u32,
        ..ScanOptions::default()
    };
    for entry in connect(cli).await?.scan_all(&options, limit).await? {
        println!(
            "{}\t{}",
            String::from_utf8_lossy(&entry.key),
            String::from_utf8_lossy(&entry.value)
        );
    }
    Ok(())
}
