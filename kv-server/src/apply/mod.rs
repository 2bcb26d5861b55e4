//! What a shard's log means, decided at apply time and nowhere else: the
//! replicated command format (`command`) and how every replica applies a
//! command alike (`applier`: conditions, counters, expiry by the apply
//! clock, exactly-once records, each entry seeing the ones before it in the
//! same batch). **Nothing here knows openraft**: `raft::state_machine`
//! hands entries in and writes the batch out.

pub mod applier;
pub mod command;
