//! A digest of one replica's data at one applied index, for checking that
//! replicas converge (tests, fault-injection runs, operators).

use crate::engine::SharedEngine;
use crate::error::{KvError, KvResult};
use crate::keys::{self, SmMetaTag, CF_DATA};
use crate::raft::state_machine::applied_index_of;
use crate::types::ShardId;

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
/// two always belong together.
pub async fn shard_digest(engine: &SharedEngine, shard: ShardId) -> KvResult<ShardDigest> {
    let (start, end) = keys::shard_range(shard);
    let meta_key = keys::sm_meta_key(shard, SmMetaTag::AppliedState);
    let (tx, rx) = tokio::sync::oneshot::channel();
    engine.export_frozen(
        CF_DATA,
        start,
        end,
        Box::new(move |entries| {
            let mut result = ShardDigest {
                applied_index: 0,
                key_count: 0,
                digest: 0xcbf2_9ce4_8422_2325,
            };
            let mut outcome = Ok(());
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
                    result.key_count += 1;
                    result.digest = fnv(fnv(result.digest, &key), &value);
                }
            }
            let _ = tx.send(outcome.map(|()| result));
        }),
    )?;
    let digest = rx.await.map_err(|_| KvError::Internal("digest thread died".into()))??;
    Ok(digest)
}
