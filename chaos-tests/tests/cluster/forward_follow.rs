//! Writes a follower forwarded to a leader that then froze (SIGSTOP) are re-sent to the new
//! leader as soon as the follower hears of it, not when the write deadline passes (issue 16).
//!
//! The posters stay on one follower with a client timeout and a server write deadline far
//! longer than the test waits, so only the server can settle the writes that were in flight
//! when the leader froze: before the fix they hung on the frozen leader until the deadline.
//! The test asserts, while the old leader is still frozen, that every poster got its in-flight
//! message acknowledged through the follower by the new leader, each in its first attempt;
//! after thawing, that every acknowledged message is on every node exactly once.

use std::time::{Duration, Instant};

use chaos_tests::checks;
use chaos_tests::{ClusterOptions, Load, LoadConfig, TestCluster};

use crate::util::{create_channel, max_index, max_seq, settle, wait_acks};

const POSTERS: usize = 3;
/// Longer than anything the test waits for: a write that waits for it fails the test.
const LONG: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_writes_follow_the_new_leader_when_the_old_one_freezes() {
    let opts = ClusterOptions::default()
        .top_level("write.timeout_ms", &LONG.as_millis().to_string())
        .request_timeout(LONG)
        .failover_deadline(LONG);
    let cluster = TestCluster::start_with(3, opts).await;
    let ch = "follow";
    create_channel(&cluster, ch).await;
    let old = cluster.wait_for_leader(&[]).await;
    let follower = cluster.a_follower().await;
    let clients = (0..POSTERS).map(|_| cluster.client(follower)).collect();
    let mut cfg = LoadConfig::new(ch, "ff");
    cfg.per_message_deadline = LONG;
    let load = Load::start(clients, cfg);
    wait_acks(
        &cluster,
        &load,
        Instant::now(),
        20,
        "acks before the freeze",
    )
    .await;

    cluster.freeze(old);
    let frozen_at = Instant::now();
    let new = cluster.wait_for_leader(&[old]).await;
    // Every poster had a message in flight at the freeze (each always has one outstanding);
    // each must be acknowledged, and the next ones too, with the old leader still frozen.
    let follower_url = cluster.url(follower);
    cluster
        .wait_until(
            "every poster's writes to resume through the follower while the old leader is frozen",
            Duration::from_secs(30),
            || async {
                let acks = load.acks_after(frozen_at);
                let posters: std::collections::HashSet<usize> =
                    acks.iter().map(|a| a.poster).collect();
                if posters.len() == POSTERS && acks.len() >= 2 * POSTERS {
                    Ok(())
                } else {
                    Err(format!(
                        "{} acks from posters {posters:?} since the freeze",
                        acks.len()
                    ))
                }
            },
        )
        .await;
    assert!(
        cluster.node(old).is_running(),
        "the old leader must still be there (frozen) while writes resume"
    );
    let resumed = load.acks_after(frozen_at);
    for a in &resumed {
        assert_eq!(a.server, follower_url, "posters are pinned to the follower");
        assert_eq!(
            a.attempts, 1,
            "{} needed {} client attempts: the server did not re-send it to leader {new}",
            a.msg.client_msg_id, a.attempts
        );
    }

    cluster.thaw(old);
    let thawed_at = Instant::now();
    cluster.wait_all_ready().await;
    wait_acks(&cluster, &load, thawed_at, 10, "acks after the thaw").await;
    let report = load.stop().await;
    assert!(
        report.failed.is_empty(),
        "posts failed: {:?}",
        report.failed
    );
    let acked = settle(&cluster, ch, &report).await;
    let views = cluster
        .wait_converged(ch, &[1, 2, 3], max_index(&report), max_seq(&acked))
        .await;
    cluster.check(checks::all_core(&acked, &views));
    cluster.check(checks::acknowledged_in_send_order(&report.per_poster()));
}
