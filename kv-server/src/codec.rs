//! The binary encoding of everything Shoal stores or sends besides
//! protobuf: log entries, votes, snapshots' metadata, command results.

use serde::Serialize;

/// bincode with a clear error: used for every stored or transported openraft value.
pub fn encode<T: Serialize>(value: &T) -> std::io::Result<Vec<u8>> {
    bincode::serialize(value).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

pub fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> std::io::Result<T> {
    bincode::deserialize(bytes).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}
