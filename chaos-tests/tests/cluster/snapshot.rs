//! Snapshot catch-up: with snapshots every 20 entries and the log purged up to each snapshot, a
//! follower that was down while hundreds of entries were committed cannot be sent the log it
//! misses; it must install a snapshot, then follow the log, and end with identical messages.

use std::time::Instant;

use chaos_tests::checks;
use chaos_tests::{ClusterOptions, Load, LoadConfig, TestCluster};

use crate::util::{create_channel, max_index, max_seq, post_ok, settle};

const SNAPSHOT_EVERY: u64 = 20;
const WHILE_DOWN: u64 = 300;

/// `last_applied` of node `id` in its own `/api/v1/cluster` view.
async fn last_applied(cluster: &TestCluster, id: u64) -> u64 {
    let v = cluster
        .cluster_json(id)
        .await
        .unwrap_or_else(|e| cluster.fail(&format!("{e:#}")));
    v["nodes"]
        .as_array()
        .and_then(|nodes| nodes.iter().find(|n| n["id"].as_u64() == Some(id)))
        .and_then(|n| n["last_applied"].as_u64())
        .unwrap_or_else(|| {
            cluster.fail(&format!(
                "node {id} reports no last_applied for itself: {v}"
            ))
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_catch_up() {
    let opts = ClusterOptions::default()
        .snapshot_logs_since_last(SNAPSHOT_EVERY)
        .max_in_snapshot_log_to_keep(0);
    let cluster = TestCluster::start_with(3, opts).await;
    let ch = "snap";
    create_channel(&cluster, ch).await;
    let before = post_ok(
        &cluster,
        &cluster.client_all(),
        ch,
        "before the crash",
        "snap-before",
    )
    .await;

    let leader = cluster.wait_for_leader(&[]).await;
    let down = cluster.a_follower().await;
    cluster.kill(down);
    let applied_at_kill = last_applied(&cluster, leader).await;

    // One sequential poster: each message is its own log entry (no group commit to merge them).
    let survivors = cluster.live_ids();
    let mut cfg = LoadConfig::new(ch, "snap");
    cfg.total = Some(WHILE_DOWN);
    let started = Instant::now();
    let report = Load::start(vec![cluster.client_over(&survivors)], cfg)
        .join()
        .await;
    let mut acked = settle(&cluster, ch, &report).await;
    acked.push(checks::Msg::from(&before.message));
    assert_eq!(acked.len() as u64, WHILE_DOWN + 1);
    eprintln!(
        "posted {WHILE_DOWN} messages with node {down} down in {:?}",
        started.elapsed()
    );

    let leader = cluster.wait_for_leader(&[down]).await;
    let applied_now = last_applied(&cluster, leader).await;
    assert!(
        applied_now >= applied_at_kill + 5 * SNAPSHOT_EVERY,
        "only {} entries were applied while node {down} was down (from {applied_at_kill} to {applied_now}); \
         need several snapshot periods of {SNAPSHOT_EVERY}",
        applied_now - applied_at_kill
    );

    cluster.restart(down).await;
    let views = cluster
        .wait_converged(ch, &[1, 2, 3], max_index(&report), max_seq(&acked))
        .await;
    cluster.check(checks::all_core(&acked, &views));
    // Catching up from the log would also converge; make sure this run took the snapshot path
    // it is meant to test (the node logs every snapshot it installs).
    let log = std::fs::read_to_string(&cluster.node(down).spec.log_path).unwrap_or_default();
    let since_restart = log.rsplit("chaos harness: node").next().unwrap_or_default();
    assert!(
        since_restart.contains("installing snapshot from leader"),
        "node {down} caught up without installing a snapshot; its log since the restart:\n{}",
        chaos_tests::node::tail(since_restart, 40)
    );
    cluster.check(checks::nothing_unsent_written(
        &report
            .sent_ids()
            .into_iter()
            .chain(["snap-before".to_string()])
            .collect(),
        &views,
    ));

    // The restored node keeps working from its snapshot: a write through it lands everywhere.
    let after = post_ok(
        &cluster,
        &cluster.client(down),
        ch,
        "after catch-up",
        "snap-after",
    )
    .await;
    assert_eq!(after.message.seq, max_seq(&acked) + 1);
    acked.push(checks::Msg::from(&after.message));
    let views = cluster
        .wait_converged(ch, &[1, 2, 3], after.index, after.message.seq)
        .await;
    cluster.check(checks::all_core(&acked, &views));
}
