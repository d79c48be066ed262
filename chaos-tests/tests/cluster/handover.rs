//! Planned handover: SIGTERM of the leader under load from posters pinned to the followers.
//! The leader hands leadership to a follower before it stops (its log says to whom, and that
//! node leads at the very next term), no client request fails or has to be retried, nothing
//! acknowledged is lost or doubled, and the old leader, started again, ends with the same
//! history. Timing is the bench's (`handover-bench`), not asserted here.

use std::time::Instant;

use chaos_tests::checks;
use chaos_tests::{Load, LoadConfig, TestCluster};

use crate::util::{create_channel, max_index, max_seq, settle, wait_acks};

const POSTERS: u64 = 4;
const ACKS_BEFORE: usize = 30;
const ACKS_AFTER: usize = 30;

async fn term_of(cluster: &TestCluster, id: u64) -> u64 {
    match cluster.cluster_json(id).await {
        Ok(v) => v["term"]
            .as_u64()
            .unwrap_or_else(|| cluster.fail(&format!("no term in node {id}'s status: {v}"))),
        Err(e) => cluster.fail(&format!("status of node {id}: {e:#}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_of_leader_hands_over_without_failed_requests() {
    let cluster = TestCluster::start(3).await;
    let ch = "handover";
    create_channel(&cluster, ch).await;
    let old = cluster.wait_for_leader(&[]).await;
    let followers: Vec<u64> = cluster.ids().into_iter().filter(|id| *id != old).collect();
    let clients = (0..POSTERS)
        .map(|i| cluster.client(followers[(i as usize) % followers.len()]))
        .collect();
    let load = Load::start(clients, LoadConfig::new(ch, "ho"));
    let started = Instant::now();
    wait_acks(&cluster, &load, started, ACKS_BEFORE, "acks before SIGTERM").await;
    let term = term_of(&cluster, old).await;

    cluster.terminate(old).await;
    let stopped = Instant::now();
    let new = cluster.wait_for_leader(&[old]).await;
    wait_acks(
        &cluster,
        &load,
        stopped,
        ACKS_AFTER,
        "acks after the handover",
    )
    .await;
    let report = load.stop().await;

    // The old leader chose the new one before it exited, and that node won the next term: an
    // election after the lease would not have been announced by the old leader.
    let log = cluster.node(old).log_text();
    let line = log
        .lines()
        .find(|l| l.contains("leadership handed over before stopping"))
        .unwrap_or_else(|| cluster.fail(&format!("node {old} stopped without a handover")));
    if !line.contains(&format!("new_leader={new}")) {
        cluster.fail(&format!(
            "node {old} handed over to another node than the leader {new}: {line}"
        ));
    }
    let new_term = term_of(&cluster, new).await;
    if new_term != term + 1 {
        cluster.fail(&format!(
            "node {new} leads term {new_term}, not {} right after the old leader's\nold leader's log:\n{}",
            term + 1,
            chaos_tests::node::tail(&log, 60)
        ));
    }
    if !report.failed.is_empty() || report.failed_attempts > 0 {
        cluster.fail(&format!(
            "clients saw errors during the handover: {} retried attempts, failed: {:?}",
            report.failed_attempts, report.failed
        ));
    }

    // The old leader comes back and ends with the same history as the others.
    cluster.spawn(old);
    cluster.wait_all_ready().await;
    let acked = settle(&cluster, ch, &report).await;
    let views = cluster
        .wait_converged(ch, &[1, 2, 3], max_index(&report), max_seq(&acked))
        .await;
    cluster.check(checks::all_core(&acked, &views));
    cluster.check(checks::nothing_unsent_written(&report.sent_ids(), &views));
    cluster.check(checks::acknowledged_in_send_order(&report.per_poster()));
}
