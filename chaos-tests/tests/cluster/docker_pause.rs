//! `docker pause` (cgroup freezer) of a follower under load: its processes stop without closing
//! a socket, so clients only notice by timeouts. The posters and the WebSocket session that was
//! on it fail over, the other nodes' DNS stop listing it, and after `docker unpause` it catches
//! up, is listed again and holds the same history.

use std::time::Instant;

use crate::docker_util::{DNS_CHANGE, Scenario};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_pause_of_a_follower_under_load() {
    let Some(mut s) = Scenario::start("docker_pause_of_a_follower_under_load").await else {
        return;
    };
    let c = &s.cluster;
    let leader = c.or_fail(c.wait_for_leader(&[1, 2, 3], &[]).await);
    let victim = if leader == 3 { 2 } else { 3 };
    s.open_ws(victim).await;
    s.ws_batch(10).await;

    let c = &s.cluster;
    c.or_fail(c.pause(victim).await);
    let paused_at = Instant::now();
    let others: Vec<u64> = c.ids().into_iter().filter(|id| *id != victim).collect();
    for id in &others {
        c.or_fail(c.wait_dns(*id, &others, DNS_CHANGE).await);
    }
    eprintln!(
        "DNS lists only {others:?} {:.1?} after the pause",
        paused_at.elapsed()
    );
    s.wait_progress(paused_at, "posts while a node is frozen")
        .await;
    s.ws_batch(20).await;
    let on = s.ws_node();
    assert!(
        on.is_some() && on != Some(victim),
        "the WebSocket session should have moved off the frozen node, is on {on:?}"
    );

    let c = &s.cluster;
    c.or_fail(c.unpause(victim).await);
    s.back(victim, Instant::now(), "posts after the unpause")
        .await;
    s.finish().await;
}
