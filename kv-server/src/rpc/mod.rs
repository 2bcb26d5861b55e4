//! All gRPC (tonic) code of the server: the client Kv and Admin services, the
//! peer Raft transport, the shard-manager agent, request validation, and the
//! one error → status map.

pub mod admin_service;
pub mod kv_service;
pub mod mover_service;
pub mod raft_service;
pub mod sm_agent;
pub mod status;
pub mod ushard_map_wire;
pub mod validate;
