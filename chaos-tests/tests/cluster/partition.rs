//! A leader cut off from the majority by a real network partition (the test's own iptables
//! rules on loopback): the majority elects a new leader and keeps acknowledging posts; the
//! isolated node stops calling itself ready and never acknowledges a write it cannot commit;
//! after healing it steps down, drops what it could not commit, and converges.
//!
//! Needs root and iptables. Without them the test says so and returns, unless
//! `CHAOS_REQUIRE_PARTITION=1` (set by `.ci/run`) makes that a failure.

use std::time::{Duration, Instant};

use chaos_tests::checks;
use chaos_tests::partition::Partition;
use chaos_tests::{Load, LoadConfig, TestCluster};

use crate::util::{create_channel, max_index, max_seq, post_ok, settle, wait_acks};

const ACKS: usize = 15;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolated_leader_is_replaced_and_rejoins() {
    if let Err(why) = Partition::available() {
        assert!(
            std::env::var("CHAOS_REQUIRE_PARTITION").is_err(),
            "partition test required but iptables is unusable: {why}"
        );
        eprintln!("skipping the partition test: {why}");
        return;
    }
    let cluster = TestCluster::start(3).await;
    let ch = "split";
    create_channel(&cluster, ch).await;
    let old = cluster.wait_for_leader(&[]).await;
    let majority: Vec<u64> = cluster.ids().into_iter().filter(|id| *id != old).collect();
    let (f1, f2) = (majority[0], majority[1]);
    let load = Load::start(
        vec![
            cluster.client_over(&[f1, f2]),
            cluster.client_over(&[f2, f1]),
        ],
        LoadConfig::new(ch, "pt"),
    );
    wait_acks(
        &cluster,
        &load,
        Instant::now(),
        ACKS,
        "acks before the partition",
    )
    .await;

    let mut cut = Partition::isolate(cluster.ip(old), &[cluster.ip(f1), cluster.ip(f2)])
        .unwrap_or_else(|e| cluster.fail(&format!("cannot partition: {e:#}")));
    let cut_at = Instant::now();
    let new = cluster.wait_for_leader(&[old]).await;
    assert!(
        majority.contains(&new),
        "leader {new} is not on the majority side"
    );
    wait_acks(
        &cluster,
        &load,
        cut_at,
        ACKS,
        "acks through the majority during the partition",
    )
    .await;

    // The isolated node knows it has no quorum: not ready, and no acknowledgement.
    let lonely = cluster.client(old);
    cluster
        .wait_until(
            "the isolated node to report not ready",
            Duration::from_secs(30),
            || async {
                match lonely.readyz().await {
                    Ok(r) if !r.ready => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            },
        )
        .await;
    let stranded_id = ops::new_client_msg_id();
    let stranded = cluster
        .client(old)
        .with_request_timeout(Duration::from_secs(10))
        .with_failover_deadline(Duration::from_secs(10))
        .post_message(ch, "sent to the cut-off node", &stranded_id)
        .await;
    assert!(
        stranded.is_err(),
        "the isolated node acknowledged a write it cannot commit: {stranded:?}"
    );

    cut.heal();
    let healed_at = Instant::now();
    cluster.wait_all_ready().await;
    wait_acks(&cluster, &load, healed_at, ACKS, "acks after healing").await;
    let report = load.stop().await;
    let refused: Vec<_> = report.failed.iter().filter(|f| f.refused).collect();
    assert!(refused.is_empty(), "valid posts were refused: {refused:?}");

    // Settle the stranded post: a resend with its id writes it exactly once.
    let resent = post_ok(
        &cluster,
        &cluster.client_all(),
        ch,
        "sent to the cut-off node",
        &stranded_id,
    )
    .await;
    let mut acked = settle(&cluster, ch, &report).await;
    acked.push(checks::Msg::from(&resent.message));
    let views = cluster
        .wait_converged(
            ch,
            &[1, 2, 3],
            max_index(&report).max(resent.index).or(resent.index),
            max_seq(&acked),
        )
        .await;
    cluster.check(checks::all_core(&acked, &views));
    for v in &views {
        let copies = v
            .messages
            .iter()
            .filter(|m| m.client_msg_id == stranded_id)
            .count();
        assert_eq!(
            copies, 1,
            "node {}: the stranded post is there {copies} times",
            v.node_id
        );
    }
}
