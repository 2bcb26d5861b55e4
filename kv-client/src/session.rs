//! A client session: read-your-writes without handling tokens. Every write
//! through the session records its (shard, version); every read carries the
//! session's version for that shard, so whichever replica answers has
//! applied the session's own writes. Reads also advance the token, so a
//! session never sees a shard go back in time (monotonic reads).

use crate::client::ShoalClient;
use crate::consistency::{Condition, PutOptions, ReadConsistency};
use crate::error::ClientResult;
use crate::types::{Key, Versioned, WriteAck, WriteResult};
use shoal_types::{ShardId, Version};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub struct Session {
    client: Arc<ShoalClient>,
    /// Per shard, the highest version this session wrote or read.
    tokens: Mutex<HashMap<ShardId, Version>>,
}

impl Session {
    pub fn new(client: Arc<ShoalClient>) -> Session {
        Session {
            client,
            tokens: Mutex::new(HashMap::new()),
        }
    }

    /// The session's token for a shard (0 = nothing seen yet).
    pub fn token(&self, shard: u64) -> u64 {
        self.token_of(ShardId(shard)).0
    }

    fn token_of(&self, shard: ShardId) -> Version {
        self.tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&shard)
            .copied()
            .unwrap_or_default()
    }

    fn advance(&self, shard: ShardId, version: Version) {
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        let token = tokens.entry(shard).or_default();
        *token = (*token).max(version);
    }

    fn record(&self, ack: &WriteAck) {
        self.advance(ShardId(ack.shard), Version(ack.version));
    }

    /// Reads from any replica that has applied this session's writes to
    /// the key's shard (followers first, in the client's region).
    pub async fn get(&self, key: impl Into<Key>) -> ClientResult<Option<Versioned>> {
        let answer = self
            .client
            .get_traced(key.into(), |shard| ReadConsistency::AtLeast(self.token_of(shard).0))
            .await?;
        let seen = answer.value.as_ref().map(|v| v.version).unwrap_or(0);
        self.advance(answer.shard, Version(answer.applied_version.max(seen)));
        Ok(answer.value)
    }

    pub async fn put(&self, key: impl Into<Key>, value: impl Into<Vec<u8>>) -> ClientResult<WriteAck> {
        let ack = self.client.put(key, value).await?;
        self.record(&ack);
        Ok(ack)
    }

    pub async fn put_with(
        &self,
        key: impl Into<Key>,
        value: impl Into<Vec<u8>>,
        options: &PutOptions,
    ) -> ClientResult<WriteResult> {
        let result = self.client.put_with(key, value, options).await?;
        if let WriteResult::Applied(ack) = &result {
            self.record(ack);
        }
        Ok(result)
    }

    pub async fn delete_with(&self, key: impl Into<Key>, condition: Option<Condition>) -> ClientResult<WriteResult> {
        let result = self.client.delete_with(key, condition).await?;
        if let WriteResult::Applied(ack) = &result {
            self.record(ack);
        }
        Ok(result)
    }

    pub async fn increment(&self, key: impl Into<Key>, delta: i64) -> ClientResult<i64> {
        let (value, ack) = self.client.increment(key, delta).await?;
        self.record(&ack);
        Ok(value)
    }
}
