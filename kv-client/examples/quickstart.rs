//! Connect, write, read strongly, read with bounded staleness.
//!
//! Start a playground first (`shoal playground`), then:
//! `cargo run -p kv-client --example quickstart`.

use kv_client::{ClientConfig, ReadConsistency, ShoalClient};
use std::time::Duration;

#[tokio::main]
async fn main() -> Result<(), kv_client::ClientError> {
    let client = ShoalClient::connect(ClientConfig {
        // The playground's shard manager and first node.
        endpoints: vec!["127.0.0.1:7100".into(), "127.0.0.1:7101".into()],
        ..ClientConfig::default()
    })
    .await?;
    let ack = client.put("greeting", "hello").await?;
    println!("wrote version {}", ack.version);
    let strong = client.get("greeting").await?;
    println!(
        "strong read: {:?}",
        strong.map(|v| String::from_utf8_lossy(&v.value).into_owned())
    );
    let bounded = client
        .get_with("greeting", ReadConsistency::Bounded(Duration::from_millis(500)))
        .await?;
    println!("read at most 500 ms old: {:?}", bounded.map(|v| v.version));
    Ok(())
}
