//! Whole-cluster restarts keep every acknowledged message: all three nodes stopped with SIGTERM
//! (graceful) and started again, then all three SIGKILLed (crash: only what reached disk before
//! the acknowledgement counts) and started again. After each, every node shows every
//! acknowledged message, in one order, and the cluster accepts writes.

use chaos_tests::checks::{self, Msg};
use chaos_tests::{Load, LoadConfig, TestCluster};

use crate::util::{create_channel, max_index, max_seq, post_ok, settle};

const PER_ROUND: u64 = 60;

/// Posts `PER_ROUND` messages from 3 concurrent posters; returns the acked messages and the
/// highest index acknowledged.
async fn post_round(
    cluster: &TestCluster,
    ch: &str,
    prefix: &str,
) -> (Vec<Msg>, Option<u64>, Vec<String>) {
    let mut cfg = LoadConfig::new(ch, prefix);
    cfg.total = Some(PER_ROUND);
    let clients = [[1, 2, 3], [2, 3, 1], [3, 1, 2]]
        .iter()
        .map(|o| cluster.client_over(o))
        .collect();
    let report = Load::start(clients, cfg).join().await;
    let acked = settle(cluster, ch, &report).await;
    assert_eq!(acked.len() as u64, PER_ROUND);
    (
        acked,
        max_index(&report),
        report.sent_ids().into_iter().collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_restart_keeps_acknowledged() {
    let cluster = TestCluster::start(3).await;
    let ch = "durable";
    create_channel(&cluster, ch).await;
    let mut acked = Vec::new();
    let mut sent = Vec::new();

    for (round, crash) in [("sigterm", false), ("sigkill", true)] {
        let (msgs, index, ids) = post_round(&cluster, ch, round).await;
        acked.extend(msgs);
        sent.extend(ids);
        if crash {
            cluster.kill_all();
        } else {
            cluster.stop_all().await;
        }
        assert!(
            cluster.live_ids().is_empty(),
            "{round}: nodes still running: {:?}",
            cluster.live_ids()
        );
        cluster.start_all().await;
        cluster.wait_for_leader(&[]).await;
        let views = cluster
            .wait_converged(ch, &[1, 2, 3], index, max_seq(&acked))
            .await;
        cluster.check(checks::all_core(&acked, &views));
        cluster.check(checks::nothing_unsent_written(
            &sent.iter().cloned().collect(),
            &views,
        ));

        // The restarted cluster takes writes, numbered right after what survived.
        let id = format!("{round}-after");
        let out = post_ok(
            &cluster,
            &cluster.client_all(),
            ch,
            &format!("after {round} restart"),
            &id,
        )
        .await;
        assert_eq!(
            out.message.seq,
            views[0].messages.len() as u64 + 1,
            "{round}: seq after restart"
        );
        acked.push(Msg::from(&out.message));
        sent.push(id);
    }
    let views = cluster
        .wait_converged(ch, &[1, 2, 3], None, max_seq(&acked))
        .await;
    cluster.check(checks::all_core(&acked, &views));
}
