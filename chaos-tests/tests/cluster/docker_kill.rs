//! `docker kill` (SIGKILL) of the leader's container under load, on three containers of the
//! shipped image: a survivor takes over, posters (found through DNS) and the WebSocket session
//! that was on the leader fail over, both survivors' DNS stop listing the dead node, and after
//! `docker start` it is listed again and holds the same history as the others.

use std::time::Instant;

use crate::docker_util::Scenario;

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
    s.leader_lost(leader, Instant::now(), "killed").await;

    let c = &s.cluster;
    c.or_fail(c.start_node(leader).await);
    s.back(leader, Instant::now(), "posts after the restart")
        .await;
    s.finish().await;
}
