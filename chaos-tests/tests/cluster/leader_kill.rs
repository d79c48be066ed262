//! Leader crash under load: posters keep writing through failover clients while the leader is
//! SIGKILLed. A survivor takes over, writes continue, nothing acknowledged is lost or doubled,
//! a resend of an acknowledged client_msg_id is answered as a duplicate with the original seq
//! and writes nothing, and the killed node, restarted, catches up to the same history.

use std::time::Instant;

use chaos_tests::checks;
use chaos_tests::{Load, LoadConfig, TestCluster};

use crate::util::{create_channel, max_index, max_seq, post_ok, settle, spread_clients, wait_acks};

const POSTERS: u64 = 4;
const ACKS_BEFORE_KILL: usize = 20;
const ACKS_AFTER_KILL: usize = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_kill_under_load() {
    let cluster = TestCluster::start(3).await;
    let ch = "load";
    create_channel(&cluster, ch).await;

    let started = Instant::now();
    let load = Load::start(spread_clients(&cluster, POSTERS), LoadConfig::new(ch, "lk"));
    wait_acks(
        &cluster,
        &load,
        started,
        ACKS_BEFORE_KILL,
        "acks before the kill",
    )
    .await;
    let old = cluster.wait_for_leader(&[]).await;
    let killed_url = cluster.url(old);
    cluster.kill(old);
    let killed_at = Instant::now();

    let new = cluster.wait_for_leader(&[old]).await;
    assert_ne!(new, old);
    wait_acks(
        &cluster,
        &load,
        killed_at,
        ACKS_AFTER_KILL,
        "posting to continue through the survivors",
    )
    .await;
    let report = load.stop().await;
    eprintln!(
        "leader {old} killed, node {new} took over; {} acks ({} after the kill), {} unknown, {} failed attempts retried",
        report.acks.len(),
        report
            .acks
            .iter()
            .filter(|a| a.acked_at > killed_at)
            .count(),
        report.failed.len(),
        report.failed_attempts
    );
    let after_kill: Vec<_> = report
        .acks
        .iter()
        .filter(|a| a.sent_at > killed_at)
        .collect();
    for a in &after_kill {
        assert_ne!(
            a.server, killed_url,
            "a post sent after the kill was acknowledged by the dead node"
        );
    }

    for f in &report.failed {
        eprintln!("outcome unknown for {}: {}", f.client_msg_id, f.error);
    }
    let acked = settle(&cluster, ch, &report).await;
    let survivors = cluster.live_ids();
    let views = cluster
        .wait_converged(ch, &survivors, max_index(&report), max_seq(&acked))
        .await;
    cluster.check(checks::all_core(&acked, &views));
    cluster.check(checks::nothing_unsent_written(&report.sent_ids(), &views));
    cluster.check(checks::acknowledged_in_send_order(&report.per_poster()));
    let count = views[0].messages.len() as u64;

    // Resending acknowledged ids: duplicate, original seq, nothing new written. Samples: the
    // first ack, the last ack before the kill, the first and the last ack after it.
    let before_kill: Vec<_> = report
        .acks
        .iter()
        .filter(|a| a.acked_at <= killed_at)
        .collect();
    let samples = [
        report.acks.first(),
        before_kill.last().copied(),
        after_kill.first().copied(),
        report.acks.last(),
    ];
    let client = cluster.client_all();
    for a in samples.into_iter().flatten() {
        let out = post_ok(&cluster, &client, ch, &a.msg.body, &a.msg.client_msg_id).await;
        assert!(
            out.duplicate,
            "resend of acknowledged {} was not a duplicate",
            a.msg
        );
        assert_eq!(
            out.message.seq, a.msg.seq,
            "resend of {} returned another seq",
            a.msg
        );
    }
    // Also through each survivor alone (a follower answers from the replicated dedupe table).
    for id in &survivors {
        let a = &report.acks[0];
        let out = post_ok(
            &cluster,
            &cluster.client(*id),
            ch,
            &a.msg.body,
            &a.msg.client_msg_id,
        )
        .await;
        assert!(
            out.duplicate && out.message.seq == a.msg.seq,
            "node {id}: resend of {} answered {:?}",
            a.msg,
            out.message.seq
        );
    }
    // Had any resend written, this message's seq would be higher.
    let sentinel_id = ops::new_client_msg_id();
    let sentinel = post_ok(&cluster, &client, ch, "after the resends", &sentinel_id).await;
    assert_eq!(
        sentinel.message.seq,
        count + 1,
        "resends of acknowledged messages grew the channel"
    );

    // The killed node comes back and converges on the same history.
    cluster.restart(old).await;
    let mut all_acked = acked.clone();
    all_acked.push(checks::Msg::from(&sentinel.message));
    let views = cluster
        .wait_converged(ch, &[1, 2, 3], sentinel.index, count + 1)
        .await;
    cluster.check(checks::all_core(&all_acked, &views));
    cluster.check(checks::no_duplicates(&views));
}
