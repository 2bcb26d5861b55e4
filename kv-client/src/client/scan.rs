//! Scans: one page across every shard in key order (or one routing key's
//! micro-shard), and a whole range page by page.

use super::ShoalClient;
use crate::error::ClientResult;
use crate::retry::read_kind;
use crate::types::{Entry, ScanOptions, ScanPage, DEFAULT_SCAN_PAGE};
use shoal_proto::kv::ScanRequest;

/// One gathering of a page: complete, or with μshards no single answer
/// read (they were moving).
enum Gathered {
    Page(ScanPage),
    Uncovered(Vec<u32>),
}

/// The resume cursor after `entry`, in the format servers use.
fn encode_cursor(entry: &Entry) -> Vec<u8> {
    shoal_proto::scan_cursor::encode(entry.ushard, &entry.key)
}

impl ShoalClient {
    /// One page of a scan over the keyspace (or one routing key's micro-shard),
    /// in key order across every shard.
    ///
    /// **Every μshard is read by exactly one shard's answer**: a μshard
    /// moving between shards while the page is gathered may be left out by
    /// both (each judged it elsewhere when asked) or read by both; the
    /// page is then gathered again on a fresh map, until the deadline.
    pub async fn scan_page(&self, options: &ScanOptions, cursor: Option<&[u8]>) -> ClientResult<ScanPage> {
        let deadline = tokio::time::Instant::now() + self.config.timeout;
        loop {
            match self.scan_page_once(options, cursor).await? {
                Gathered::Page(page) => return Ok(page),
                Gathered::Uncovered(missing) => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(crate::error::ClientError::Unavailable(format!(
                            "scan: ushards {missing:?} were read by no shard (moving) until the deadline"
                        )));
                    }
                    self.refresh().await?;
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
            }
        }
    }

    async fn scan_page_once(&self, options: &ScanOptions, cursor: Option<&[u8]>) -> ClientResult<Gathered> {
        let mut ushard_count = 0;
        let (shards, ushard) = match &options.routing {
            Some(routing) => {
                let placement =
                    self.routes_with_keyspace()
                        .await?
                        .place(&self.config.keyspace, routing, Some(routing))?;
                (vec![placement.shard], Some(placement.ushard))
            }
            None => {
                let routes = self.routes_with_keyspace().await?;
                let keyspace = routes.keyspace(&self.config.keyspace)?;
                ushard_count = keyspace.ushard_count;
                (keyspace.shards.clone(), None)
            }
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
        // μshard → the answer (index) that read it; read twice: dropped.
        let mut read_by: std::collections::HashMap<u32, Option<usize>> = std::collections::HashMap::new();
        for (answer, shard) in shards.into_iter().enumerate() {
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
            for u in &response.served_ushards {
                read_by.entry(*u).and_modify(|by| *by = None).or_insert(Some(answer));
            }
            let entries: Vec<(usize, Entry)> = response
                .entries
                .into_iter()
                .map(|e| {
                    (
                        answer,
                        Entry {
                            key: e.key,
                            value: e.value,
                            version: e.version,
                            ushard: e.ushard,
                        },
                    )
                })
                .collect();
            if response.more {
                if let Some(last) = entries.last().map(|(_, e)| order(e)) {
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
        if ushard_count > 0 {
            let missing: Vec<u32> = (0..ushard_count)
                .filter(|u| !matches!(read_by.get(u), Some(Some(_))))
                .collect();
            if !missing.is_empty() {
                return Ok(Gathered::Uncovered(missing));
            }
        }
        let mut merged: Vec<Entry> = merged.into_iter().map(|(_, e)| e).collect();
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
        Ok(Gathered::Page(ScanPage {
            entries: merged,
            cursor,
        }))
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
