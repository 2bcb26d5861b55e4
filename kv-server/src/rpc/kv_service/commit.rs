//! The `Commit` RPC: a transaction's read set, scanned ranges and writes,
//! checked for shape and limits (`validate::check_commit`), then validated
//! and applied in one log entry (see [`crate::apply::txn`]).

use super::{expired, moving_outcome_error, KvService};
use crate::apply::command::{Command, MutateOp, Outcome};
use crate::error::{KvError, KvResult};
use crate::rpc::validate::check_commit;
use shoal_proto::kv::{CommitRequest, CommitResponse, KeyRef};
use shoal_types::UshardId;

impl KvService {
    pub(super) async fn commit_txn(&self, req: CommitRequest) -> KvResult<CommitResponse> {
        let layout = self.host.layout();
        let target = self.resolve(&layout, req.header.as_ref())?;
        let (keyspace, shard) = (target.keyspace, target.shard);
        let now_ms = crate::clock::wall_ms();
        let checked = check_commit(&self.host.limits, &target, &req, now_ms)?;
        // Refused before proposing when this node already knows the epoch
        // moved on; the applier refuses it too if a commit of the newer
        // epoch got into the log first.
        let current = layout.shard(shard).map(|s| s.epoch.0).unwrap_or(0);
        if let Some(snapshot) = checked.snapshot.filter(|s| s.epoch < current) {
            return Err(KvError::EpochChanged {
                shard,
                snapshot: snapshot.epoch,
                current,
            });
        }
        let ushards: Vec<UshardId> = checked
            .reads
            .iter()
            .map(|r| r.ushard)
            .chain(checked.ranges.iter().map(|r| r.ushard))
            .chain(checked.ops.iter().map(MutateOp::ushard))
            .collect();
        let replica = self.host.shard(shard)?;
        let result = replica
            .propose(Command::Txn {
                keyspace: keyspace.id,
                snapshot: checked.snapshot,
                reads: checked.reads,
                ranges: checked.ranges,
                ops: checked.ops,
                now_ms,
                request: checked.request,
                proposed_in: current,
            })
            .await?;
        replica.count_served();
        moving_outcome_error(&target, &result.outcome)?;
        self.count_heat(&target, req.header.as_ref(), ushards);
        // Fault injection for exactly-once retries: the commit is applied,
        // its answer is lost on the way back (docs/failpoints.md).
        if crate::failpoints::is_on("lose-write-answer") {
            return Err(KvError::LeadershipLost { shard, leader: None });
        }
        let mut response = CommitResponse {
            header: self.response_header(&layout, shard),
            version: result.version.0,
            ..Default::default()
        };
        match result.outcome {
            Outcome::Applied => {}
            Outcome::TxnConflict { keys } => {
                response.version = 0;
                response.conflict = true;
                response.conflicts = keys
                    .into_iter()
                    .map(|(ushard, key)| KeyRef { ushard: ushard.0, key })
                    .collect();
            }
            Outcome::TxnTooOld { snapshot, floor } => {
                return Err(KvError::TxnTooOld {
                    shard,
                    snapshot: snapshot.0,
                    floor: floor.0,
                })
            }
            Outcome::EpochChanged { snapshot, current } => {
                return Err(KvError::EpochChanged {
                    shard,
                    snapshot,
                    current,
                })
            }
            Outcome::Expired => return Err(expired(req.options.as_ref())),
            other => return Err(KvError::Internal(format!("a commit applied as {other:?}"))),
        }
        Ok(response)
    }
}
