//! Scans: one page across every shard in key order (or one routing key's
//! micro-shard), and a whole range page by page.

use super::ShoalClient;
use crate::error::ClientResult;
use crate::retry::read_kind;
use crate::types::{Entry, ScanOptions, ScanPage, DEFAULT_SCAN_PAGE};
use shoal_proto::kv::ScanRequest;

/// The resume cursor after `entry`, in the format servers use.
fn encode_cursor(entry: &Entry) -> Vec<u8> {
    shoal_proto::scan_cursor::encode(entry.ushard, &entry.key)
}

impl ShoalClient {
    /// One page of a scan over the keyspace (or one routing key's micro-shard),
    /// in key order across every shard.
    pub async fn scan_page(&self, options: &ScanOptions, cursor: Option<&[u8]>) -> ClientResult<ScanPage> {
        let (shards, ushard) = match &options.routing {
            Some(routing) => {
                let placement =
                    self.routes_with_keyspace()
                        .await?
                        .place(&self.config.keyspace, routing, Some(routing))?;
                (vec![placement.shard], Some(placement.ushard))
            }
            None => (
                self.routes_with_keyspace()
                    .await?
                    .keyspace(&self.config.keyspace)?
                    .shards
                    .clone(),
                None,
            ),
        };
        let limit = if options.limit == 0 {
            DEFAULT_SCAN_PAGE
        } else {
            options.limit
        };
        let order = |e: &Entry| (e.key.clone(), e.ushard);
        let mut merged = Vec::new();
        // The smallest (in scan order) last entry among shards that have more:
        // past it, a shard may hold entries we have not seen, so the page must
        // stop there.
        let mut frontier: Option<(Vec<u8>, u32)> = None;
        for shard in shards {
            let request = ScanRequest {
                header: None, // set per attempt by `send`
                ushard,
                start: options.start.clone(),
                end: options.end.clone(),
                prefix: options.prefix.clone(),
                reverse: options.reverse,
                limit,
                max_bytes: options.max_bytes,
                resume_after: cursor.map(<[u8]>::to_vec).unwrap_or_default(),
                consistency: options.consistency.to_wire(),
            };
            let response = self
                .send(
                    shard,
                    read_kind(options.consistency),
                    &request,
                    |mut c, request| async move { c.scan(request).await },
                )
                .await?;
            let entries: Vec<Entry> = response
                .entries
                .into_iter()
                .map(|e| Entry {
                    key: e.key,
                    value: e.value,
                    version: e.version,
                    ushard: e.ushard,
                })
                .collect();
            if response.more {
                if let Some(last) = entries.last().map(order) {
                    let earlier = match &frontier {
                        None => true,
                        Some(f) => (last < *f) != options.reverse,
                    };
                    if earlier {
                        frontier = Some(last);
                    }
                }
            }
            merged.extend(entries);
        }
        merged.sort_by_key(order);
        if options.reverse {
            merged.reverse();
        }
        if let Some(f) = &frontier {
            merged.retain(|e| {
                if options.reverse {
                    order(e) >= *f
                } else {
                    order(e) <= *f
                }
            });
        }
        let truncated = merged.len() > limit as usize;
        merged.truncate(limit as usize);
        let cursor = match merged.last() {
            Some(last) if truncated || frontier.is_some() => Some(encode_cursor(last)),
            _ => None,
        };
        Ok(ScanPage {
            entries: merged,
            cursor,
        })
    }

    /// Scans to the end (or `max_entries`), following cursors.
    pub async fn scan_all(&self, options: &ScanOptions, max_entries: usize) -> ClientResult<Vec<Entry>> {
        let mut out = Vec::new();
        let mut cursor: Option<Vec<u8>> = None;
        loop {
            let page = self.scan_page(options, cursor.as_deref()).await?;
            out.extend(page.entries);
            if out.len() >= max_entries {
                out.truncate(max_entries);
                return Ok(out);
            }
            match page.cursor {
                Some(next) => cursor = Some(next),
                None => return Ok(out),
            }
        }
    }
}
