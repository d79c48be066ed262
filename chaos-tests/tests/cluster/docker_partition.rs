//! Partitions of three containers of the shipped image under load:
//! - the leader leaves the network (`docker network disconnect`): the other two elect a leader
//!   and go on, the posters and the WebSocket session fail over, DNS on both stops listing the
//!   cut node; reconnected, it steps down, catches up and is listed again;
//! - a one-way cut (iptables in a follower's network namespace drops what comes from the
//!   leader): the leader and the third node go on, both stop listing the cut node (the leader
//!   cannot reach it, the third node sees it without a leader), and after the rule is removed
//!   it rejoins.
//!
//! Both end with the usual checks: nothing acknowledged lost or duplicated, one order.

use std::time::Instant;

use chaos_tests::docker;

use crate::docker_util::{DNS_CHANGE, Scenario};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_partition_of_the_leader_by_network_disconnect() {
    let Some(mut s) = Scenario::start("docker_partition_of_the_leader_by_network_disconnect").await
    else {
        return;
    };
    let c = &s.cluster;
    let leader = c.or_fail(c.wait_for_leader(&[1, 2, 3], &[]).await);
    s.open_ws(leader).await;
    s.ws_batch(10).await;

    let c = &s.cluster;
    c.or_fail(c.disconnect(leader).await);
    s.leader_lost(leader, Instant::now(), "disconnected").await;

    let c = &s.cluster;
    c.or_fail(c.connect(leader).await);
    s.back(leader, Instant::now(), "posts after the reconnect")
        .await;
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_partition_one_way_by_iptables_in_a_node_namespace() {
    const TEST: &str = "docker_partition_one_way_by_iptables_in_a_node_namespace";
    if let Err(why) = docker::iptables_available() {
        if std::env::var(docker::REQUIRE_ENV).is_ok_and(|v| v == "1") {
            panic!("{TEST}: {}=1 but {why:#}", docker::REQUIRE_ENV);
        }
        eprintln!("SKIP {TEST}: {why:#}");
        return;
    }
    let Some(mut s) = Scenario::start(TEST).await else {
        return;
    };
    let c = &s.cluster;
    let leader = c.or_fail(c.wait_for_leader(&[1, 2, 3], &[]).await);
    let victim = c.ids().into_iter().find(|id| *id != leader).unwrap_or(1);
    let third = c
        .ids()
        .into_iter()
        .find(|id| *id != leader && *id != victim)
        .unwrap_or(1);
    // The session sits on the third node: the cut node itself still talks to the host, where
    // it answers without a leader (503, which the REST clients fail over on).
    s.open_ws(third).await;
    s.ws_batch(10).await;

    let c = &s.cluster;
    c.or_fail(c.drop_from(victim, leader).await);
    let cut_at = Instant::now();
    for id in [leader, third] {
        c.or_fail(c.wait_dns(id, &[leader, third], DNS_CHANGE).await);
    }
    eprintln!(
        "node {victim} drops packets from leader {leader}; DNS on {leader} and {third} lists only them {:.1?} later",
        cut_at.elapsed()
    );
    s.wait_progress(cut_at, "posts while one link is cut one way")
        .await;
    s.ws_batch(20).await;

    let c = &s.cluster;
    c.or_fail(c.heal_iptables(victim).await);
    s.back(victim, Instant::now(), "posts after the cut healed")
        .await;
    s.finish().await;
}
