//! What a shard's log means, decided at apply time and nowhere else: the
//! replicated command format (`command`), how every replica applies a
//! command alike (`applier`: conditions, counters, expiry by the apply
//! clock), exactly-once records (`exactly_once`), μshard moves (`moves`:
//! each moving μshard's state, the steps, the source's change log), what
//! the state was for conditions and transaction reads alike (`reads`),
//! transaction commits (`txn`: the window, the epoch rule), and the
//! state a batch is applied against, each entry seeing the ones before it
//! (`staged`).
//! **Nothing here knows openraft**: `raft::state_machine` hands entries in
//! and writes the batch out.

pub mod applier;
pub mod command;
pub mod exactly_once;
pub mod moves;
pub mod reads;
pub mod staged;
pub mod txn;
