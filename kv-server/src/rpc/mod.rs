//! All gRPC (tonic) code of the server: the client Kv and Admin services, the
//! peer Raft transport, request validation, and the one error → status map.

pub mod admin_service;
pub mod kv_service;
pub mod raft_service;
pub mod status;
pub mod validate;
