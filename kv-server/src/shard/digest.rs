//! A digest of one replica's data at one applied index, for checking that
//! replicas converge (tests, fault-injection runs, operators).

use crate::engine::SharedEngine;
use crate::error::{KvError, KvResult};
use crate::keys::{self, SmMetaTag, ValueRecord, CF_DATA};
use crate::raft::state_machine::applied_index_of;
use crate::ttl::ExpiryHorizons;
use shoal_types::ShardId;
use std::sync::Arc;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardDigest {
    pub applied_index: u64,
    pub key_count: u64,
    pub digest: u64,
}

fn fnv(mut hash: u64, bytes: &[u8]) -> u64 {
    for byte in (bytes.len() as u64).to_be_bytes().iter().chain(bytes) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// Digests the shard's data and applied index from one frozen view, so the
/// two always belong together. Records expired at the shard's apply clock
/// are left out: compaction reclaims them on each replica at its own pace.
pub async fn shard_digest(
    engine: &SharedEngine,
    horizons: &Arc<ExpiryHorizons>,
    shard: ShardId,
) -> KvResult<ShardDigest> {
    // Compaction must not drop what the view holds while it is read.
    let horizon_pin = horizons.pin(shard);
    let (start, end) = keys::shard_range(shard);
    let meta_key = keys::sm_meta_key(shard, SmMetaTag::AppliedState);
    let clock_key = keys::clock_key(shard);
    let (tx, rx) = tokio::sync::oneshot::channel();
    engine.export_frozen(
        CF_DATA,
        start,
        end,
        Box::new(move |entries| {
            let _horizon_pin = horizon_pin;
            let mut result = ShardDigest {
                applied_index: 0,
                key_count: 0,
                digest: 0xcbf2_9ce4_8422_2325,
            };
            let mut outcome = Ok(());
            // (expiry, hash) of records with a TTL, judged once the clock
            // (which sorts after user data) is known.
            let mut expiring: Vec<(u64, u64)> = Vec::new();
            let mut clock = 0u64;
            for entry in entries {
                let (key, value) = match entry {
                    Ok(kv) => kv,
                    Err(e) => {
                        outcome = Err(e);
                        break;
                    }
                };
                if key == meta_key {
                    match applied_index_of(&value) {
                        Ok(index) => result.applied_index = index,
                        Err(e) => {
                            outcome = Err(e);
                            break;
                        }
                    }
                } else {
                    if key == clock_key {
                        clock = keys::decode_u64(&value);
                    }
                    let user_record = keys::shard_and_keyspace_of(&key)
                        .is_some_and(|(_, keyspace)| keyspace < keys::REPLICATED_META_KEYSPACE);
                    let expires = if user_record {
                        ValueRecord::expires_at_of(&value).unwrap_or(0)
                    } else {
                        0
                    };
                    if expires == keys::TOMBSTONE_EXPIRY_MS {
                        // Absent data: dropped by compaction at each
                        // replica's own pace.
                    } else if expires != 0 {
                        expiring.push((expires, fnv(fnv(0, &key), &value)));
                    } else {
                        result.key_count += 1;
                        result.digest = fnv(fnv(result.digest, &key), &value);
                    }
                }
            }
            for (expires, hash) in expiring {
                if expires > clock {
                    result.key_count += 1;
                    result.digest = fnv(result.digest, &hash.to_be_bytes());
                }
            }
            let _ = tx.send(outcome.map(|()| result));
        }),
    )?;
    let digest = rx.await.map_err(|_| KvError::Internal("digest thread died".into()))??;
    Ok(digest)
}
