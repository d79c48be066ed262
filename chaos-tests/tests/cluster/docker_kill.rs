//! `docker kill` (SIGKILL) of the leader's container under load, on three containers of the
//! shipped image: a survivor takes over, posters (found through DNS) and the WebSocket session
//! that was on the leader fail over, both survivors' DNS stop listing the dead node, and after
//! `docker start` it is listed again and holds the same history as the others.

use std::time::Instant;

use crate::docker_util::{DNS_CHANGE, Scenario};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_kill_of_the_leader_under_load() {
    let Some(mut s) = Scenario::start("docker_kill_of_the_leader_under_load").await else {
        return;
    };
    let c = &s.cluster;
    let leader = c.or_fail(c.wait_for_leader(&[1, 2, 3], &[]).await);
    s.open_ws(leader).await;
    s.ws_batch(10).await;

    let c = &s.cluster;
    c.or_fail(c.kill(leader).await);
    let killed_at = Instant::now();
    let survivors: Vec<u64> = c.ids().into_iter().filter(|id| *id != leader).collect();
    let new = c.or_fail(c.wait_for_leader(&survivors, &[leader]).await);
    eprintln!(
        "leader {leader} killed; node {new} leads after {:.1?}",
        killed_at.elapsed()
    );
    for id in &survivors {
        c.or_fail(c.wait_dns(*id, &survivors, DNS_CHANGE).await);
    }
    eprintln!(
        "DNS lists only the survivors {:.1?} after the kill",
        killed_at.elapsed()
    );
    s.wait_progress(killed_at, "posts through the survivors")
        .await;
    s.ws_batch(20).await;
    let on = s.ws_node();
    assert!(
        on.is_some() && on != Some(leader),
        "the WebSocket session should have moved off the killed node, is on {on:?}"
    );

    let c = &s.cluster;
    c.or_fail(c.start_node(leader).await);
    let restarted = Instant::now();
    c.or_fail(c.wait_ready(leader).await);
    s.wait_progress(restarted, "posts after the restart").await;
    s.finish().await;
}
