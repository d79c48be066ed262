//! Rolling restart under load, the way an operator upgrades: SIGTERM one node at a time
//! (followers first, the leader last), start it again, wait until it is ready, move on. Posters
//! keep writing through failover clients the whole time. Nothing acknowledged is lost or
//! doubled, every node ends with the same history, and posting never stops for long: each
//! restart is followed by fresh acknowledgements.

use std::time::{Duration, Instant};

use chaos_tests::checks;
use chaos_tests::{Load, LoadConfig, TestCluster};

use crate::util::{create_channel, max_index, max_seq, settle};

const POSTERS: u64 = 3;
const ACKS_BETWEEN_STEPS: usize = 15;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_keeps_serving() {
    let cluster = TestCluster::start(3).await;
    let ch = "rolling";
    create_channel(&cluster, ch).await;
    let orders = [[1, 2, 3], [2, 3, 1], [3, 1, 2]];
    let clients = (0..POSTERS)
        .map(|i| cluster.client_over(&orders[(i % 3) as usize]))
        .collect();
    let load = Load::start(clients, LoadConfig::new(ch, "rr"));

    let leader = cluster.wait_for_leader(&[]).await;
    let mut order: Vec<u64> = cluster
        .ids()
        .into_iter()
        .filter(|id| *id != leader)
        .collect();
    order.push(leader);
    for id in order {
        let since = Instant::now();
        cluster
            .wait_until(
                "acknowledgements before the next step",
                Duration::from_secs(60),
                || async {
                    let n = load.acks_after(since).len();
                    if n >= ACKS_BETWEEN_STEPS {
                        Ok(())
                    } else {
                        Err(format!("{n} acked since the last step"))
                    }
                },
            )
            .await;
        // Graceful stop (must exit 0), start again, wait until ready.
        cluster.restart(id).await;
        cluster.wait_all_ready().await;
    }
    let since = Instant::now();
    cluster
        .wait_until(
            "posting after the last restart",
            Duration::from_secs(60),
            || async {
                let n = load.acks_after(since).len();
                if n >= ACKS_BETWEEN_STEPS {
                    Ok(())
                } else {
                    Err(format!("{n} acked since the last restart"))
                }
            },
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
