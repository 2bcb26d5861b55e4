//! Data commands: put, get, del, scan.

use crate::{client_config, Cli};
use anyhow::bail;
use kv_client::{Key, ScanOptions, ShoalClient};

fn key_of(key: &str, routing_key: Option<&str>) -> Key {
    match routing_key {
        Some(r) => Key::routed(r, key),
        None => Key::from(key),
    }
}

async fn connect(cli: &Cli) -> anyhow::Result<ShoalClient> {
    Ok(ShoalClient::connect(client_config(cli)?).await?)
}

pub async fn put(cli: &Cli, key: &str, value: &str, routing_key: Option<&str>) -> anyhow::Result<()> {
    let ack = connect(cli).await?.put(key_of(key, routing_key), value).await?;
    println!("OK version={} shard={}", ack.version, ack.shard);
    Ok(())
}

pub async fn get(cli: &Cli, key: &str, routing_key: Option<&str>, versions: bool) -> anyhow::Result<()> {
    match connect(cli).await?.get(key_of(key, routing_key)).await? {
        Some(v) if versions => println!("{}\tversion={}", String::from_utf8_lossy(&v.value), v.version),
        Some(v) => println!("{}", String::from_utf8_lossy(&v.value)),
        None => bail!("key not found: {key}"),
    }
    Ok(())
}

pub async fn del(cli: &Cli, key: &str, routing_key: Option<&str>) -> anyhow::Result<()> {
    let ack = connect(cli).await?.delete(key_of(key, routing_key)).await?;
    println!("OK version={} shard={}", ack.version, ack.shard);
    Ok(())
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
