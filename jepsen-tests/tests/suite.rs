//! The CI slice of the fault-injection suite: short runs on a fresh local
//! cluster (5 kv-server processes and a shard manager) that must be valid,
//! some under one fault at a time, some under every nemesis composed,
//! and a run with a deliberate bug that must be invalid — proof that the
//! checker can fail. Longer runs: `make jepsen`.

use jepsen_tests::checker::Verdict;
use jepsen_tests::nemesis::Nemesis;
use jepsen_tests::run::{run, RunConfig, RunReport};
use jepsen_tests::target::{LocalTarget, Target};
use jepsen_tests::workload::Workload;
use std::time::Duration;

async fn must_run(mut config: RunConfig) -> RunReport {
    let out = tempfile::tempdir().unwrap();
    config.out_dir = out.path().to_path_buf();
    let mut target = LocalTarget::start(Nemesis::needs_power_loss(&config.nemeses))
        .await
        .expect("start a local cluster");
    let report = run(&mut target, &config).await;
    target.stop().await;
    let report = report.expect("run");
    println!("{report}");
    report
}

/// The bug must be caught: the verdict is invalid, and some reason
/// mentions `needle`.
fn must_be_invalid(report: &RunReport, needle: &str, what: &str) {
    match &report.verdict {
        Verdict::Invalid(why) => assert!(why.iter().any(|w| w.contains(needle)), "{report}"),
        other => panic!("{what}: {other:?} {report}"),
    }
}

fn config(workload: Workload, nemeses: &[Nemesis], seconds: u64, seed: u64, bug: bool) -> RunConfig {
    RunConfig {
        workload,
        nemeses: nemeses.to_vec(),
        composed: nemeses == Nemesis::ALL,
        duration: Duration::from_secs(seconds),
        seed,
        clients: 5,
        out_dir: std::path::PathBuf::new(), // set by must_run
        bug,
        check_budget: Duration::from_secs(60),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_is_linearizable_under_kill_partition_and_pause() {
    let nemeses = [Nemesis::Kill, Nemesis::Partition, Nemesis::Pause];
    let report = must_run(config(Workload::Register, &nemeses, 45, 11, false)).await;
    assert_eq!(report.verdict, Verdict::Valid, "{report}");
    assert!(report.nemesis_events >= 4, "faults were injected: {report}");
    assert!(report.counts.ok > 1000, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_loses_nothing_under_kill_partition_shard_manager_kill_drain_and_clock() {
    let nemeses = [
        Nemesis::Kill,
        Nemesis::Partition,
        Nemesis::ShardManagerKill,
        Nemesis::Drain,
        Nemesis::Clock,
    ];
    let report = must_run(config(Workload::Set, &nemeses, 40, 12, false)).await;
    assert_eq!(report.verdict, Verdict::Valid, "{report}");
    assert!(report.nemesis_events >= 2, "faults were injected: {report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_and_set_register_is_linearizable_under_kill_partition_and_move_primary() {
    let nemeses = [Nemesis::Kill, Nemesis::Partition, Nemesis::MovePrimary];
    let report = must_run(config(Workload::CasRegister, &nemeses, 30, 14, false)).await;
    assert_eq!(report.verdict, Verdict::Valid, "{report}");
    assert!(report.nemesis_events >= 2, "faults were injected: {report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounded_and_ryw_reads_keep_their_promises_under_partition_pause_and_clock() {
    let nemeses = [Nemesis::Partition, Nemesis::Pause, Nemesis::Clock];
    for (workload, seed) in [(Workload::Bounded, 15), (Workload::Ryw, 16)] {
        let report = must_run(config(workload, &nemeses, 25, seed, false)).await;
        assert_eq!(report.verdict, Verdict::Valid, "{report}");
        assert!(report.counts.ok > 500, "{report}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_is_linearizable_under_composed_faults() {
    let report = must_run(config(Workload::Register, &Nemesis::ALL, 45, 17, false)).await;
    assert_eq!(report.verdict, Verdict::Valid, "{report}");
    assert!(report.nemesis_events >= 6, "faults were injected: {report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ryw_and_bounded_keep_their_promises_under_composed_faults() {
    for (workload, seed) in [(Workload::Ryw, 18), (Workload::Bounded, 19)] {
        let report = must_run(config(workload, &Nemesis::ALL, 30, seed, false)).await;
        assert_eq!(report.verdict, Verdict::Valid, "{report}");
        assert!(report.nemesis_events >= 4, "faults were injected: {report}");
    }
}

/// Multi-gets and scans never see half a batch (pairs); no key comes back
/// once it was seen gone (ttl).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pairs_and_ttl_keep_their_promises_under_composed_faults() {
    for (workload, seed) in [(Workload::Pairs, 20), (Workload::Ttl, 21)] {
        let report = must_run(config(workload, &Nemesis::ALL, 30, seed, false)).await;
        assert_eq!(report.verdict, Verdict::Valid, "{report}");
        assert!(report.nemesis_events >= 4, "faults were injected: {report}");
        assert!(report.counts.ok > 500, "{report}");
    }
}

/// Moving primaries and draining nodes lose no fast-ack write: one is
/// acknowledged only once it is in the primary's log, and a new primary
/// takes over only with the old one's whole log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_ack_writes_survive_moves_of_the_primary_and_drains() {
    let nemeses = [Nemesis::MovePrimary, Nemesis::Drain];
    let report = must_run(config(Workload::FastAck, &nemeses, 30, 23, false)).await;
    assert_eq!(report.verdict, Verdict::Valid, "{report}");
    assert_eq!(report.lost_acknowledged, Some(0), "{report}");
    assert!(report.nemesis_events >= 2, "faults were injected: {report}");
    assert!(report.counts.ok > 500, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_ack_writes_acknowledged_before_the_append_are_reported_lost_to_primary_moves() {
    let report = must_run(config(Workload::FastAck, &[Nemesis::MovePrimary], 20, 24, true)).await;
    must_be_invalid(&report, "lost", "fast-ack writes lost to a move must be caught");
}

/// Reads that judge expiry on a clock ahead of the conditions' show a key
/// gone, then a put-if-absent finds it: a resurrection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_reads_judged_on_another_clock_are_reported_resurrected() {
    let report = must_run(config(Workload::Ttl, &[], 15, 25, true)).await;
    must_be_invalid(&report, "again", "two clocks for expiry must be caught");
}

/// Session reads served without waiting for the session's version miss
/// the process's own writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_reads_that_ignore_their_version_are_reported_stale() {
    let report = must_run(config(Workload::Ryw, &[], 10, 26, true)).await;
    must_be_invalid(&report, "OwnWrites", "reads that miss their own writes must be caught");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acking_writes_before_commit_is_reported_invalid() {
    let report = must_run(config(Workload::Register, &[], 10, 13, true)).await;
    assert!(matches!(report.verdict, Verdict::Invalid(_)), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_gets_reading_each_key_apart_are_reported_torn() {
    let report = must_run(config(Workload::Pairs, &[], 10, 22, true)).await;
    must_be_invalid(&report, "multi-get", "a torn multi-get must be caught");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_and_register_stay_valid_while_ushards_move_split_and_merge_under_kills_and_shard_manager_kills() {
    let nemeses = [
        Nemesis::MoveUshard,
        Nemesis::Kill,
        Nemesis::ShardManagerKill,
        Nemesis::Split,
        Nemesis::Merge,
    ];
    let report = must_run(config(Workload::Set, &nemeses, 40, 31, false)).await;
    assert_eq!(report.verdict, Verdict::Valid, "{report}");
    assert!(report.nemesis_events >= 4, "faults were injected: {report}");
    assert!(report.ushard_moves_done >= Some(1), "μshards moved: {report}");
    let report = must_run(config(
        Workload::Register,
        &[Nemesis::Split, Nemesis::Merge, Nemesis::Pause],
        30,
        32,
        false,
    ))
    .await;
    assert_eq!(report.verdict, Verdict::Valid, "{report}");
    assert!(report.ushard_moves_done >= Some(1), "μshards moved: {report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_that_activates_before_catching_up_is_reported_losing_writes() {
    let report = must_run(config(Workload::Set, &[Nemesis::MoveUshard], 30, 33, true)).await;
    must_be_invalid(&report, "lost", "activation before catch-up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_that_keeps_its_version_base_is_reported_with_versions_going_down() {
    let report = must_run(config(Workload::Bounded, &[Nemesis::MoveUshard], 30, 34, true)).await;
    must_be_invalid(&report, "version went down", "a version base kept across a move");
}

/// Transfers never change the bank's total and no committed read sees half
/// a transfer; list-append transactions show no Adya anomaly (Elle-style
/// cycle search), while every nemesis overlaps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bank_and_list_append_transactions_are_serializable_under_composed_faults() {
    for (workload, seed) in [(Workload::Bank, 41), (Workload::ListAppend, 42)] {
        let report = must_run(config(workload, &Nemesis::ALL, 30, seed, false)).await;
        assert_eq!(report.verdict, Verdict::Valid, "{report}");
        assert!(report.nemesis_events >= 4, "faults were injected: {report}");
        assert!(report.counts.ok > 200, "{report}");
    }
}

/// Commits that skip read validation let transfers lose money and
/// transactions overwrite what they did not see: both checkers must say so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_that_skip_read_validation_are_reported_invalid() {
    let report = must_run(config(Workload::Bank, &[], 15, 43, true)).await;
    must_be_invalid(&report, "total", "a bank without validation must lose money");
    let report = must_run(config(Workload::ListAppend, &[], 15, 44, true)).await;
    match &report.verdict {
        Verdict::Invalid(why) => assert!(
            why.iter()
                .any(|w| ["G0", "G1c", "G-single", "G2", "lost", "incompatible-order"]
                    .iter()
                    .any(|kind| w.starts_with(kind))),
            "{report}"
        ),
        other => panic!("list-append without validation: {other:?} {report}"),
    }
}
