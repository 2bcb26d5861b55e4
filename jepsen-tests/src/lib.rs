//! jepsen-tests: a black-box fault-injection suite in the manner of Jepsen.
//!
//! A run starts a local cluster or attaches to the docker-compose one
//! ([`target`], [`compose`]), has concurrent
//! clients record a history ([`history`]) of a workload ([`workload`];
//! transactions in [`txn_workload`]) while nemeses inject faults on a
//! seeded schedule ([`nemesis`]), then checks the history ([`checker`];
//! transactions in [`txn_checker`]) and prints a verdict: valid, invalid,
//! or unknown when the checker ran out of time. `make jepsen` runs it; see
//! `jepsen-tests/README.md`.

pub mod checker;
pub mod compose;
pub mod history;
pub mod nemesis;
pub mod run;
pub mod target;
pub mod txn_checker;
pub mod txn_workload;
pub mod workload;
