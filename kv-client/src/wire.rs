//! Conversions between the client's types and the wire (`shoal-proto`):
//! the one place that knows both.

use crate::consistency::{Condition, ReadConsistency};
use crate::request_ids::RequestTicket;
use crate::types::{Versioned, WriteAck, WriteResult};
use shoal_proto::kv::{condition, read_consistency, RequestHeader, VersionedValue, WriteOptions, WriteResponse};
use shoal_types::ShardId;

impl From<VersionedValue> for Versioned {
    fn from(v: VersionedValue) -> Versioned {
        Versioned {
            value: v.value,
            version: v.version,
            expires_at_ms: v.expires_at_ms,
        }
    }
}

pub(crate) fn ack(shard: ShardId, response: WriteResponse) -> WriteAck {
    WriteAck {
        shard: shard.0,
        version: response.version,
        epoch: response.header.map(|h| h.epoch).unwrap_or(0),
    }
}

pub(crate) fn write_result(shard: ShardId, response: WriteResponse) -> WriteResult {
    if response.condition_failed {
        WriteResult::ConditionFailed {
            current: response.current.map(Versioned::from),
        }
    } else {
        WriteResult::Applied(ack(shard, response))
    }
}

pub(crate) fn write_options(ticket: Option<&RequestTicket>, fast_ack: bool) -> Option<WriteOptions> {
    Some(WriteOptions {
        fast_ack,
        client_id: ticket.map(|t| t.client_id).unwrap_or(0),
        seq: ticket.map(|t| t.seq).unwrap_or(0),
        first_incomplete_seq: ticket.map(|t| t.first_incomplete).unwrap_or(0),
    })
}

impl ReadConsistency {
    pub(crate) fn to_wire(self) -> Option<shoal_proto::kv::ReadConsistency> {
        let mode = match self {
            ReadConsistency::Strong => return None,
            ReadConsistency::Bounded(bound) => read_consistency::Mode::MaxStalenessMs(bound.as_millis() as u64),
            ReadConsistency::AtLeast(version) => read_consistency::Mode::MinVersion(version),
        };
        Some(shoal_proto::kv::ReadConsistency { mode: Some(mode) })
    }
}

impl Condition {
    pub(crate) fn to_wire(&self) -> shoal_proto::kv::Condition {
        let check = match self {
            Condition::Absent => condition::Check::Absent(true),
            Condition::Present => condition::Check::Present(true),
            Condition::Version(v) => condition::Check::Version(*v),
            Condition::Value(bytes) => condition::Check::Value(bytes.clone()),
        };
        shoal_proto::kv::Condition { check: Some(check) }
    }
}

/// A request that carries a [`RequestHeader`]: the retry loop sets a fresh
/// one on each attempt (the epoch it knows by then).
pub(crate) trait Headed: Clone {
    fn with_header(&self, header: Option<RequestHeader>) -> Self;
}

macro_rules! headed {
    ($($request:ty),*) => {$(
        impl Headed for $request {
            fn with_header(&self, header: Option<RequestHeader>) -> Self {
                let mut request = self.clone();
                request.header = header;
                request
            }
        }
    )*};
}

/// An answer that names the shard that gave it (a move may make it other
/// than the one first asked).
pub(crate) trait Answered {
    fn answering_shard(&self) -> Option<ShardId>;
}

macro_rules! answered {
    ($($response:ty),*) => {$(
        impl Answered for $response {
            fn answering_shard(&self) -> Option<ShardId> {
                self.header.as_ref().map(|h| ShardId(h.shard_id))
            }
        }
    )*};
}

answered!(
    shoal_proto::kv::WriteResponse,
    shoal_proto::kv::IncrementResponse,
    shoal_proto::kv::GetResponse
);

headed!(
    shoal_proto::kv::GetRequest,
    shoal_proto::kv::MultiGetRequest,
    shoal_proto::kv::ScanRequest,
    shoal_proto::kv::PutRequest,
    shoal_proto::kv::DeleteRequest,
    shoal_proto::kv::IncrementRequest,
    shoal_proto::kv::BatchRequest,
    shoal_proto::kv::CommitRequest
);
