//! Rolling restart under load, the way an operator upgrades: SIGTERM one node at a time
//! (followers first, the leader last), start it again, wait until it is ready, move on. Posters
//! keep writing through failover clients the whole time. Nothing acknowledged is lost or
//! doubled, every node ends with the same history, and posting never stops for long: each
//! restart is followed by fresh acknowledgements.

use std::time::Instant;

use chaos_tests::checks;
use chaos_tests::{Load, LoadConfig, TestCluster};

use crate::util::{create_channel, max_index, max_seq, settle, spread_clients, wait_acks};

const POSTERS: u64 = 3;
const ACKS_BETWEEN_STEPS: usize = 15;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_keeps_serving() {
    let cluster = TestCluster::start(3).await;
    let ch = "rolling";
    create_channel(&cluster, ch).await;
    let load = Load::start(spread_clients(&cluster, POSTERS), LoadConfig::new(ch, "rr"));

    let leader = cluster.wait_for_leader(&[]).await;
    let mut order: Vec<u64> = cluster
        .ids()
        .into_iter()
        .filter(|id| *id != leader)
        .collect();
    order.push(leader);
    for id in order {
        let since = Instant::now();
        wait_acks(
            &cluster,
            &load,
            since,
            ACKS_BETWEEN_STEPS,
            "acknowledgements before the next step",
        )
        .await;
        // Graceful stop (must exit 0), start again, wait until ready.
        cluster.restart(id).await;
        cluster.wait_all_ready().await;
    }
    let since = Instant::now();
    wait_acks(
        &cluster,
        &load,
        since,
        ACKS_BETWEEN_STEPS,
        "posting after the last restart",
    )
    .await;
    let report = load.stop().await;
    let refused: Vec<_> = report.failed.iter().filter(|f| f.refused).collect();
    assert!(
        refused.is_empty(),
        "valid posts were refused during the rolling restart: {refused:?}"
    );
    let acked = settle(&cluster, ch, &report).await;
    let views = cluster
        .wait_converged(ch, &[1, 2, 3], max_index(&report), max_seq(&acked))
        .await;
    cluster.check(checks::all_core(&acked, &views));
    cluster.check(checks::nothing_unsent_written(&report.sent_ids(), &views));
    cluster.check(checks::acknowledged_in_send_order(&report.per_poster()));
}
