//! One point-in-time state of a replica, through which a request does all
//! its reading: a multi-get or a scan across micro-shards sees one applied
//! index, never half of an atomic batch, and learns exactly which index
//! that is (the read-your-writes token it returns).
//!
//! **One clock judges expiry: the apply clock of the state being read.**
//! Conditions, counters and compaction judge a record by the shard's apply
//! clock (the largest proposal time applied, the same on every replica);
//! reads judge it by the apply clock stored in the very view they read, not
//! by the serving node's wall clock. So a read and a condition at the same
//! index always agree whether a key is there, and a later state never shows
//! a key an earlier one hid (the apply clock never goes back). The apply
//! clock lags real time on a shard nobody writes to; two things bring it up:
//! a strong read that touches a record expired by the leader's clock but
//! not yet by the apply clock has the leader propose a
//! [`Command::Tick`](crate::apply::command::Command::Tick) and reads again, and
//! each leader ticks a shard whose clock has not moved for `clock_tick_ms`.

use crate::apply::moves::{Access, UshardState};
use crate::engine::{Direction, ReadView, Visit};
use crate::error::{KvError, KvResult};
use crate::keys::{self, SmMetaTag, ValueRecord, CF_DATA};
use crate::raft::state_machine::{applied_index_of, applied_version};
use shoal_types::{KeyspaceId, ShardId, UshardId};
use std::cell::Cell;

/// How much one micro-shard's scan may collect.
#[derive(Clone, Copy, Debug)]
pub struct ScanBudget {
    pub limit: usize,
    pub max_bytes: u64,
}

/// What one micro-shard's scan collected.
#[derive(Clone, Debug, Default)]
pub struct UshardScan {
    pub items: Vec<ScanItem>,
    /// True when no entry in range remains past `items`.
    pub exhausted: bool,
}

/// One entry returned by a scan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanItem {
    pub ushard: UshardId,
    pub key: Vec<u8>,
    pub record: ValueRecord,
}

/// A shard's data at one applied index (see [`crate::shard::replica::ShardReplica::read`]).
pub struct ReplicaView<'a> {
    shard: ShardId,
    view: &'a dyn ReadView,
    /// The apply clock this view holds (records expired at it are hidden),
    /// read at the first record with an expiry: most reads touch none, and
    /// then pay no extra engine read.
    clock_ms: std::cell::OnceCell<u64>,
    /// For strong reads on the leader, its wall clock: a visible record
    /// already expired by it sets `lags_wall`.
    wall_ms: Option<u64>,
    lags_wall: Cell<bool>,
}

impl<'a> ReplicaView<'a> {
    /// A view of `shard` in `view`, judging expiry by the apply clock the
    /// view holds. `wall_ms`: see [`Self::lags_wall`].
    pub fn new(shard: ShardId, view: &'a dyn ReadView, wall_ms: Option<u64>) -> ReplicaView<'a> {
        ReplicaView {
            shard,
            view,
            clock_ms: std::cell::OnceCell::new(),
            wall_ms,
            lags_wall: Cell::new(false),
        }
    }

    /// The apply clock stored in this view (0 before the first timed write).
    fn clock_ms(&self) -> std::io::Result<u64> {
        if let Some(clock) = self.clock_ms.get() {
            return Ok(*clock);
        }
        let clock = self
            .view
            .get(CF_DATA, &keys::clock_key(self.shard))?
            .map(|bytes| keys::decode_u64(&bytes))
            .unwrap_or(0);
        // A deliberate bug for proving the ttl checker can fail: reads judge
        // expiry on a clock ahead of the one conditions use (the two-clock
        // hole of issue 10; docs/failpoints.md).
        let clock = clock + crate::failpoints::number("read-clock-ahead").unwrap_or(0);
        Ok(*self.clock_ms.get_or_init(|| clock))
    }

    /// Whether something this view returned as live had already expired
    /// by the `wall_ms` it was given: the apply clock lags that clock, and
    /// a later condition stamped with it would find the record gone.
    pub fn lags_wall(&self) -> bool {
        self.lags_wall.get()
    }

    /// Whether `record` is visible in this view.
    fn visible(&self, record: &ValueRecord) -> std::io::Result<bool> {
        if record.expires_at_ms == 0 {
            return Ok(true);
        }
        let live = record.is_live_at(self.clock_ms()?);
        if live && self.wall_ms.is_some_and(|wall| !record.is_live_at(wall)) {
            self.lags_wall.set(true);
        }
        Ok(live)
    }

    /// The version of the last entry applied in this view: the state
    /// machine writes the applied index and the version base in the same
    /// batch as the data they produced.
    pub fn applied(&self) -> KvResult<u64> {
        let index = match self
            .view
            .get(CF_DATA, &keys::sm_meta_key(self.shard, SmMetaTag::AppliedState))?
        {
            Some(bytes) => applied_index_of(&bytes)?,
            None => 0,
        };
        let base = self
            .view
            .get(CF_DATA, &keys::version_base_key(self.shard))?
            .map(|bytes| keys::decode_u64(&bytes))
            .unwrap_or(0);
        Ok(applied_version(index, base))
    }

    /// The shard this view belongs to.
    pub fn shard(&self) -> ShardId {
        self.shard
    }

    /// The engine view underneath, for readers that need stored bytes as
    /// they are (a move's export: `shard::export`).
    pub fn raw(&self) -> &dyn ReadView {
        self.view
    }

    /// Refuses a μshard this state does not serve (see
    /// [`crate::apply::moves`]): moved away (`WRONG_SHARD` naming the
    /// owner), or not taken in yet (`STALE_REPLICA`: another replica may
    /// have it). Request validation judged the μshard on an earlier state;
    /// this view's is the one the read returns.
    pub fn check_served(&self, keyspace: KeyspaceId, ushard: UshardId) -> KvResult<()> {
        let Some(bytes) = self
            .view
            .get(CF_DATA, &keys::ushard_state_key(self.shard, keyspace, ushard))?
        else {
            return Ok(());
        };
        let state: UshardState = crate::codec::decode(&bytes)?;
        match UshardState::access(Some(&state)) {
            Access::ByLayout | Access::Served | Access::ReadOnly => Ok(()),
            Access::NotYet => Err(KvError::StaleReplica(format!(
                "shard {}: this replica has not taken in ushard {ushard} yet",
                self.shard
            ))),
            Access::Elsewhere(owner) => Err(KvError::UshardMoved {
                shard: self.shard,
                ushard: ushard.0,
                owner,
            }),
        }
    }

    /// One key; an expired key is absent.
    pub fn get(&self, keyspace: KeyspaceId, ushard: UshardId, key: &[u8]) -> KvResult<Option<ValueRecord>> {
        self.check_served(keyspace, ushard)?;
        let raw = self
            .view
            .get(CF_DATA, &keys::data_key(self.shard, keyspace, ushard, key))?;
        let record = raw
            .map(|bytes| ValueRecord::decode(&bytes).ok_or_else(|| KvError::Internal("corrupt value record".into())))
            .transpose()?;
        match record {
            Some(record) if self.visible(&record)? => Ok(Some(record)),
            _ => Ok(None),
        }
    }

    /// Collects entries of one micro-shard whose user keys lie in
    /// `[lower, upper)` (`upper = None`: no bound), in `direction` order,
    /// stopping once it holds `budget.limit` entries or `budget.max_bytes`
    /// bytes of keys and values. Expired entries are skipped.
    pub fn scan_ushard(
        &self,
        keyspace: KeyspaceId,
        ushard: UshardId,
        lower: &[u8],
        upper: Option<&[u8]>,
        direction: Direction,
        budget: ScanBudget,
    ) -> KvResult<UshardScan> {
        self.check_served(keyspace, ushard)?;
        let (start, end) = keys::ushard_range(self.shard, keyspace, ushard, lower, upper);
        let mut scan = UshardScan {
            items: Vec::new(),
            exhausted: true,
        };
        if start >= end {
            return Ok(scan);
        }
        let mut bytes = 0u64;
        self.view.scan(CF_DATA, &start, &end, direction, &mut |key, value| {
            if scan.items.len() >= budget.limit || bytes >= budget.max_bytes {
                // There is at least one more entry past what we hold.
                scan.exhausted = false;
                return Ok(Visit::Stop);
            }
            let record = ValueRecord::decode(value)
                .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "corrupt value record"))?;
            if !self.visible(&record)? {
                return Ok(Visit::Continue);
            }
            let user_key = keys::user_key_of(key).to_vec();
            bytes += (user_key.len() + record.value.len()) as u64;
            scan.items.push(ScanItem {
                ushard,
                key: user_key,
                record,
            });
            Ok(Visit::Continue)
        })?;
        Ok(scan)
    }
}
