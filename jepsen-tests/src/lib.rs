//! jepsen-tests: the black-box fault-injection suite (not built yet).
//!
//! It will drive real clusters (docker-compose, or local processes through
//! `kv_client::local_cluster`), inject faults, record histories and check
//! them for linearizability. Today the process-level fault tests live in
//! `kv-server/tests/` (kill -9 of a leader, restart, snapshot catch-up).
