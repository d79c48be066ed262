//! A full-cluster restart of the three containers (all stopped with SIGTERM, all started):
//! the history written before is intact on every node, the posters and the WebSocket session
//! wait the outage out and go on, and DNS lists all three again.

use std::time::Instant;

use crate::docker_util::Scenario;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_full_cluster_restart_keeps_history() {
    let Some(mut s) = Scenario::start("docker_full_cluster_restart_keeps_history").await else {
        return;
    };
    let c = &s.cluster;
    let leader = c.or_fail(c.wait_for_leader(&[1, 2, 3], &[]).await);
    s.open_ws(leader).await;
    s.ws_batch(10).await;
    let c = &s.cluster;
    let before = c.or_fail(c.messages(leader, &s.channel, None).await);

    let stopped_at = Instant::now();
    c.or_fail(c.restart_all(10).await);
    c.or_fail(c.wait_all_ready(&[1, 2, 3]).await);
    let leader = c.or_fail(c.wait_for_leader(&[1, 2, 3], &[]).await);
    eprintln!(
        "all three stopped and started; ready again with leader {leader} {:.1?} after the stop",
        stopped_at.elapsed()
    );
    for id in c.ids() {
        let after = c.or_fail(c.messages(id, &s.channel, None).await);
        assert!(
            after.len() >= before.len() && after[..before.len()] == before[..],
            "node {id}: the {} messages from before the restart are not intact",
            before.len()
        );
    }
    s.wait_progress(stopped_at, "posts after the restart").await;
    s.ws_batch(20).await;
    s.finish().await;
}
