//! Request validation: everything a request must satisfy before it touches
//! a replica. A request failing here has written nothing.

use crate::config::Limits;
use crate::error::{KvError, KvResult};
use crate::layout::{ClusterLayout, KeyspaceLayout};
use crate::raft::types::WriteOp;
use crate::types::{ShardId, UshardId};
use shoal_proto::kv::{batch_op, BatchOp, KeyRef, RequestHeader};

/// What a request header names, checked against this node's layout.
pub struct Resolved<'a> {
    pub keyspace: &'a KeyspaceLayout,
    pub shard: ShardId,
    /// The client named a newer epoch than this node's map has: the map is
    /// behind (the request is still served; Raft decides who leads).
    pub map_behind: bool,
}

/// The keyspace and shard a request header names, checked against the
/// layout, with the epoch check both ways.
pub fn resolve_header<'a>(layout: &'a ClusterLayout, header: Option<&RequestHeader>) -> KvResult<Resolved<'a>> {
    let header = header.ok_or_else(|| KvError::Malformed("missing header".into()))?;
    if header.keyspace.is_empty() {
        return Err(KvError::Malformed("header.keyspace is empty".into()));
    }
    let keyspace = layout
        .keyspace(&header.keyspace)
        .ok_or_else(|| KvError::UnknownKeyspace(header.keyspace.clone()))?;
    let shard = ShardId(header.shard_id);
    if !keyspace.shards.contains(&shard) {
        return Err(KvError::UnknownShard(shard));
    }
    let current = layout.shard(shard).map(|s| s.epoch).unwrap_or(0);
    if header.epoch != 0 && header.epoch < current {
        return Err(KvError::StaleEpoch {
            shard,
            requested: header.epoch,
            current,
        });
    }
    Ok(Resolved {
        keyspace,
        shard,
        map_behind: header.epoch > current,
    })
}

/// Checks a micro-shard number against the keyspace and the target shard.
pub fn check_ushard(keyspace: &KeyspaceLayout, shard: ShardId, ushard: u32) -> KvResult<UshardId> {
    match keyspace.shard_of(ushard) {
        None => Err(KvError::Malformed(format!(
            "ushard {ushard} out of range: keyspace {:?} has {} ushards",
            keyspace.name, keyspace.ushard_count
        ))),
        Some(owner) if owner != shard => Err(KvError::WrongShard {
            keyspace: keyspace.name.clone(),
            ushard,
            shard,
        }),
        Some(_) => Ok(UshardId(ushard)),
    }
}

/// Checks a key reference: present, non-empty, under the limit, in this shard.
pub fn check_key<'k>(
    limits: &Limits,
    keyspace: &KeyspaceLayout,
    shard: ShardId,
    key: Option<&'k KeyRef>,
) -> KvResult<(UshardId, &'k [u8])> {
    let key = key.ok_or_else(|| KvError::Malformed("missing key".into()))?;
    if key.key.is_empty() {
        return Err(KvError::EmptyKey);
    }
    if key.key.len() > limits.max_key_bytes {
        return Err(KvError::KeyTooLarge {
            len: key.key.len(),
            max: limits.max_key_bytes,
        });
    }
    let ushard = check_ushard(keyspace, shard, key.ushard)?;
    Ok((ushard, &key.key))
}

pub fn check_value(limits: &Limits, value: &[u8]) -> KvResult<()> {
    if value.len() > limits.max_value_bytes {
        return Err(KvError::ValueTooLarge {
            len: value.len(),
            max: limits.max_value_bytes,
        });
    }
    Ok(())
}

/// Validates every op of a batch and converts it; the first bad op fails the
/// whole batch.
pub fn check_batch(
    limits: &Limits,
    keyspace: &KeyspaceLayout,
    shard: ShardId,
    ops: &[BatchOp],
) -> KvResult<Vec<WriteOp>> {
    if ops.is_empty() {
        return Err(KvError::Malformed("batch has no operations".into()));
    }
    if ops.len() > limits.max_batch_ops {
        return Err(KvError::BatchTooLarge(format!(
            "{} operations; the limit is {}",
            ops.len(),
            limits.max_batch_ops
        )));
    }
    let mut total = 0usize;
    let mut out = Vec::with_capacity(ops.len());
    for (i, op) in ops.iter().enumerate() {
        let write = match &op.op {
            Some(batch_op::Op::Put(put)) => {
                let (ushard, key) = check_key(limits, keyspace, shard, put.key.as_ref())?;
                check_value(limits, &put.value)?;
                total += key.len() + put.value.len();
                WriteOp::Put {
                    ushard,
                    key: key.to_vec(),
                    value: put.value.clone(),
                }
            }
            Some(batch_op::Op::Delete(delete)) => {
                let (ushard, key) = check_key(limits, keyspace, shard, delete.key.as_ref())?;
                total += key.len();
                WriteOp::Delete {
                    ushard,
                    key: key.to_vec(),
                }
            }
            None => return Err(KvError::Malformed(format!("batch op {i} has no operation"))),
        };
        out.push(write);
    }
    if total > limits.max_batch_bytes {
        return Err(KvError::BatchTooLarge(format!(
            "{total} bytes; the limit is {}",
            limits.max_batch_bytes
        )));
    }
    Ok(out)
}
