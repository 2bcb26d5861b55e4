//! Scans of one shard: bounds from start/end/prefix/cursor, a merge of the
//! shard's micro-shards into one key order, and page limits by count and bytes.
//!
//! Keys are identified by `(user key, ushard)`: two micro-shards may hold the
//! same user key when the application routes by its own key. Pages are
//! ordered by that pair, and the resume cursor names the last pair returned.

use crate::engine::Direction;
use crate::error::KvResult;
use crate::keys;
use crate::shard::view::{ReplicaView, ScanBudget, ScanItem};
use shoal_types::{KeyspaceId, UshardId};

/// A decoded scan request.
#[derive(Clone, Debug, Default)]
pub struct ScanSpec {
    pub start: Vec<u8>,
    /// Exclusive; empty = unbounded.
    pub end: Vec<u8>,
    pub prefix: Vec<u8>,
    pub reverse: bool,
    pub limit: usize,
    pub max_bytes: u64,
    pub resume_after: Option<Cursor>,
}

/// Position after which a page continues.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor {
    pub key: Vec<u8>,
    pub ushard: UshardId,
}

impl Cursor {
    pub fn encode(&self) -> Vec<u8> {
        shoal_proto::scan_cursor::encode(self.ushard.0, &self.key)
    }

    /// `None` unless `bytes` is a cursor [`Self::encode`] made; requests
    /// are checked by `rpc::validate::scan_cursor`.
    pub fn decode(bytes: &[u8]) -> Option<Cursor> {
        let (ushard, key) = shoal_proto::scan_cursor::decode(bytes)?;
        Some(Cursor {
            key,
            ushard: UshardId(ushard),
        })
    }
}

pub struct ScanPage {
    pub items: Vec<ScanItem>,
    pub more: bool,
}

/// `key` followed by a zero byte: the smallest key greater than `key`.
fn just_after(key: &[u8]) -> Vec<u8> {
    let mut next = key.to_vec();
    next.push(0);
    next
}

fn max_lower(a: Vec<u8>, b: Vec<u8>) -> Vec<u8> {
    a.max(b)
}

fn min_upper(a: Option<Vec<u8>>, b: Option<Vec<u8>>) -> Option<Vec<u8>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

/// User-key bounds `[lower, upper)` for one micro-shard, cursor included.
fn bounds_for(spec: &ScanSpec, ushard: UshardId) -> (Vec<u8>, Option<Vec<u8>>) {
    let mut lower = max_lower(spec.start.clone(), spec.prefix.clone());
    let mut upper = min_upper(
        (!spec.end.is_empty()).then(|| spec.end.clone()),
        if spec.prefix.is_empty() {
            None
        } else {
            keys::prefix_successor(&spec.prefix)
        },
    );
    if let Some(cursor) = &spec.resume_after {
        if spec.reverse {
            // Continue with keys before the cursor; the cursor's own key is
            // still due in micro-shards that sort before the cursor's.
            let bound = if ushard < cursor.ushard {
                just_after(&cursor.key)
            } else {
                cursor.key.clone()
            };
            upper = min_upper(upper, Some(bound));
        } else {
            let bound = if ushard > cursor.ushard {
                cursor.key.clone()
            } else {
                just_after(&cursor.key)
            };
            lower = max_lower(lower, bound);
        }
    }
    (lower, upper)
}

fn item_bytes(item: &ScanItem) -> u64 {
    (item.key.len() + item.record.value.len()) as u64
}

fn scan_order(item: &ScanItem) -> (&[u8], UshardId) {
    (&item.key, item.ushard)
}

/// One page of `keyspace` in `view`, merged across `ushards`.
///
/// Each micro-shard contributes at most `limit` entries and a share of
/// `max_bytes`, so a page never holds much more than its byte limit in
/// memory. A micro-shard that stopped early may hold more entries past its
/// last one, so the merged page is cut at the earliest such "frontier":
/// everything before it is complete and in order.
pub fn scan_shard(
    view: &ReplicaView<'_>,
    keyspace: KeyspaceId,
    ushards: &[u32],
    spec: &ScanSpec,
) -> KvResult<ScanPage> {
    let direction = if spec.reverse {
        Direction::Reverse
    } else {
        Direction::Forward
    };
    let budget = ScanBudget {
        limit: spec.limit,
        max_bytes: (spec.max_bytes / ushards.len().max(1) as u64).max(1),
    };
    let mut all = Vec::new();
    let mut frontier: Option<ScanItem> = None;
    for (i, ushard) in ushards.iter().enumerate() {
        if i > 0 {
            crate::failpoints::pause("read-between");
        }
        let ushard = UshardId(*ushard);
        let (lower, upper) = bounds_for(spec, ushard);
        let scan = view.scan_ushard(keyspace, ushard, &lower, upper.as_deref(), direction, budget)?;
        if !scan.exhausted {
            if let Some(last) = scan.items.last() {
                let earlier = match &frontier {
                    None => true,
                    Some(f) => (scan_order(last) < scan_order(f)) != spec.reverse,
                };
                if earlier {
                    frontier = Some(last.clone());
                }
            }
        }
        all.extend(scan.items);
    }
    all.sort_by(|a, b| scan_order(a).cmp(&scan_order(b)));
    if spec.reverse {
        all.reverse();
    }
    if let Some(f) = &frontier {
        all.retain(|item| {
            if spec.reverse {
                scan_order(item) >= scan_order(f)
            } else {
                scan_order(item) <= scan_order(f)
            }
        });
    }
    let mut items = Vec::new();
    let mut bytes = 0u64;
    for item in &all {
        // Always return at least one entry so a page larger than max_bytes
        // still makes progress.
        if items.len() >= spec.limit || (!items.is_empty() && bytes + item_bytes(item) > spec.max_bytes) {
            break;
        }
        bytes += item_bytes(item);
        items.push(item.clone());
    }
    let more = items.len() < all.len() || frontier.is_some();
    Ok(ScanPage { items, more })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips() {
        let cursor = Cursor {
            key: b"k1".to_vec(),
            ushard: UshardId(9),
        };
        assert_eq!(Cursor::decode(&cursor.encode()).unwrap(), cursor);
        assert!(Cursor::decode(b"ab").is_none());
    }

    #[test]
    fn prefix_and_cursor_narrow_the_bounds() {
        let spec = ScanSpec {
            prefix: b"user/".to_vec(),
            resume_after: Some(Cursor {
                key: b"user/5".to_vec(),
                ushard: UshardId(3),
            }),
            limit: 10,
            ..Default::default()
        };
        assert_eq!(
            bounds_for(&spec, UshardId(2)),
            (b"user/5\0".to_vec(), Some(b"user0".to_vec()))
        );
        assert_eq!(
            bounds_for(&spec, UshardId(4)),
            (b"user/5".to_vec(), Some(b"user0".to_vec()))
        );
    }
}
