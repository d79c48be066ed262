//! WebSocket guarantees across nodes and node failures: a re-send with the same
//! `client_msg_id` on any node gets the original ack and writes nothing; sends whose socket's
//! node is SIGKILLed before the ack (a follower, then the leader) end up stored exactly once
//! after re-sending elsewhere; disabling a user or revoking a session closes the sockets on
//! every node (4003), and the token is refused afterwards.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use chaos_tests::TestCluster;
use chaos_tests::checks::{self, Msg};
use ops::{Ack, ChannelEvent, ChatSession, SessionEvent, UserPatch, WsConn, WsError};

use crate::util::{create_channel, post_ok};
use crate::ws_util::{
    FRAME_WAIT, USER_PASSWORD, WsClient, check_complete, create_user, login, send_frame,
};

const CH: &str = "dedupe";

/// What a sender was told, as the harness's checks want it.
fn acked_msg(ack: &Ack, body: &str) -> Msg {
    Msg {
        seq: ack.seq,
        author: chaos_tests::ADMIN_USER.to_owned(),
        body: body.to_owned(),
        ts_ms: ack.ts_ms,
        client_msg_id: ack.client_msg_id.clone(),
    }
}

/// A message sent on node 1 and acknowledged, re-sent with the same id on nodes 2 and 3 (once
/// with another body), on node 1 again and over REST: every re-send gets the original seq and
/// timestamp with `duplicate: true`. The same new id sent on two nodes at once is written
/// once. Every node's history holds each id exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_resend_on_another_node_gets_the_original_ack() {
    let cluster = TestCluster::start(3).await;
    create_channel(&cluster, CH).await;
    let admin = cluster.admin_token().to_owned();
    let mut c1 = WsClient::open(&cluster, 1, &admin).await;
    let mut c2 = WsClient::open(&cluster, 2, &admin).await;
    let mut c3 = WsClient::open(&cluster, 3, &admin).await;

    let id = "resend-1";
    let body = "sent once, re-sent everywhere";
    let first = c1.send_msg(&cluster, CH, body, id).await;
    assert!(
        !first.duplicate,
        "first send acked as a duplicate: {first:?}"
    );
    for (c, b) in [
        (&mut c2, body),
        (&mut c3, "another body, same id"),
        (&mut c1, body),
    ] {
        let again = c.send_msg(&cluster, CH, b, id).await;
        assert_eq!(
            (
                again.seq,
                again.ts_ms,
                again.duplicate,
                again.channel.as_str()
            ),
            (first.seq, first.ts_ms, true, CH),
            "re-send on node {}: {again:?}, original {first:?}",
            c.node
        );
    }
    let over_rest = post_ok(&cluster, &cluster.client(3), CH, body, id).await;
    assert!(
        over_rest.duplicate && over_rest.message.seq == first.seq,
        "re-send over REST: {over_rest:?}"
    );

    // The same new id on two nodes at once.
    let raced = "resend-2";
    c2.send(&cluster, &send_frame(CH, "raced", raced)).await;
    c3.send(&cluster, &send_frame(CH, "raced", raced)).await;
    let a2 = c2.wait_ack(&cluster, raced).await;
    let a3 = c3.wait_ack(&cluster, raced).await;
    assert_eq!(a2.seq, a3.seq, "one id, two seqs: {a2:?} {a3:?}");
    assert_eq!(
        [a2.duplicate, a3.duplicate].iter().filter(|d| !**d).count(),
        1,
        "exactly one of two racing sends is the original: {a2:?} {a3:?}"
    );

    // Nothing else was written: the next message gets the next seq; every node agrees.
    let sentinel = c1.send_msg(&cluster, CH, "sentinel", "resend-3").await;
    assert_eq!(sentinel.seq, a2.seq + 1, "a re-send wrote a message");
    let views = cluster
        .wait_converged(CH, &[1, 2, 3], None, sentinel.seq)
        .await;
    let acked = [
        acked_msg(&first, body),
        acked_msg(&a2, "raced"),
        acked_msg(&sentinel, "sentinel"),
    ];
    cluster.check(checks::all_core(&acked, &views));
    for v in &views {
        let ids: Vec<&str> = v
            .messages
            .iter()
            .map(|m| m.client_msg_id.as_str())
            .collect();
        assert_eq!(
            ids,
            ["resend-1", "resend-2", "resend-3"],
            "node {}",
            v.node_id
        );
    }
}

/// Sends in flight when their node dies are re-sent elsewhere with the same ids and stored
/// exactly once.
///
/// 1. A follower: a `ChatSession` sends 60 messages (40 go out at once, the rest paced) and
///    the follower is SIGKILLed at the first ack. The session fails over, re-sends what was
///    not acknowledged, and every send resolves with an ack; the session's event stream (a
///    replay from 0, resumed on the new node) holds every event once and every message seq
///    in order.
/// 2. The leader, by hand: 40 sends on the leader's socket, SIGKILL at the first ack, then
///    every id re-sent on a survivor. What the leader acknowledged before dying comes back as
///    a duplicate with the same seq.
///
/// Every node (the killed ones restarted) ends with each id once, at its acknowledged seq.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_sends_in_flight_survive_a_node_kill() {
    let cluster = TestCluster::start(3).await;
    create_channel(&cluster, CH).await;
    let admin = cluster.admin_token().to_owned();
    let body = |id: &str| format!("{id} in flight");
    let mut acked: Vec<Msg> = Vec::new();

    // 1. The follower, through the library's failover.
    let follower = cluster.a_follower().await;
    let mut servers = vec![cluster.url(follower)];
    servers.extend(
        cluster
            .ids()
            .into_iter()
            .filter(|i| *i != follower)
            .map(|i| cluster.url(i)),
    );
    let mut session = ChatSession::builder(servers, admin.clone())
        .subscribe_after(CH, 0)
        .backoff(Duration::from_millis(50), Duration::from_millis(500))
        .connect()
        .await
        .unwrap_or_else(|e| cluster.fail(&format!("session: {e}")));
    let on = session.current_node().map(|n| n.node_id);
    assert_eq!(on, Some(follower), "the session starts on its first server");
    let ids: Vec<String> = (0..60).map(|i| format!("fk-{i}")).collect();
    let handles: Vec<_> = ids
        .iter()
        .map(|id| session.send_with_id(CH, &body(id), None, id.clone()))
        .collect();
    session
        .wait_for(FRAME_WAIT, |e| {
            matches!(e, SessionEvent::Acked(_)).then_some(())
        })
        .await
        .unwrap_or_else(|e| cluster.fail(&format!("first ack: {e}")));
    cluster.kill(follower);
    let pending_at_kill = session.pending().len();
    let mut follower_acks = Vec::new();
    for h in handles {
        let id = h.client_msg_id().to_owned();
        match h.wait_timeout(Duration::from_secs(30)).await {
            Ok(ack) => follower_acks.push(ack),
            Err(e) => cluster.fail(&format!(
                "send {id} after the follower's death: {e}; session {session:?}"
            )),
        }
    }
    let now_on = session.current_node().map(|n| n.node_id);
    assert!(
        now_on.is_some() && now_on != Some(follower),
        "the session should be on a survivor, is on {now_on:?}"
    );
    let dups = follower_acks.iter().filter(|a| a.duplicate).count();
    eprintln!(
        "follower {follower} killed with {pending_at_kill} of 60 sends unacknowledged; the session \
         moved to node {now_on:?}; {dups} re-sends were answered as duplicates"
    );
    let seqs: BTreeSet<u64> = follower_acks.iter().map(|a| a.seq).collect();
    assert_eq!(seqs.len(), 60, "60 sends, {} distinct seqs", seqs.len());
    for a in &follower_acks {
        acked.push(acked_msg(a, &body(&a.client_msg_id)));
    }
    // The session's stream: every event once, every seq in order, no gap reported.
    let last_seq = *seqs.iter().max().expect("seqs");
    let mut events: Vec<ChannelEvent> = Vec::new();
    let mut gaps = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !events
        .iter()
        .any(|e| e.message().is_some_and(|m| m.seq == last_seq))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        match session.next_event_timeout(left).await {
            Ok(SessionEvent::Event(e)) => events.push(e),
            Ok(SessionEvent::Gap { .. }) => gaps.push(format!("{:?}", events.last())),
            Ok(_) => {}
            Err(e) => cluster.fail(&format!(
                "session events up to seq {last_seq}: {e}; got {} events",
                events.len()
            )),
        }
    }
    assert!(gaps.is_empty(), "the session reported gaps: {gaps:?}");
    let last_ev = events.last().expect("events").ev;
    check_complete(&events, last_ev, last_seq)
        .unwrap_or_else(|e| cluster.fail(&format!("the session's events: {e}")));
    eprintln!(
        "session: {} events, {} dropped as duplicates",
        events.len(),
        session.duplicates_dropped()
    );
    session.close().await;
    cluster.restart(follower).await;

    // 2. The leader, by hand.
    let leader = cluster.wait_for_leader(&[]).await;
    let mut c = WsClient::open(&cluster, leader, &admin).await;
    let ids: Vec<String> = (0..40).map(|i| format!("lk-{i}")).collect();
    for id in &ids {
        c.send(&cluster, &send_frame(CH, &body(id), id)).await;
    }
    c.wait(&cluster, "the first ack", FRAME_WAIT, |c| {
        (!c.acks.is_empty()).then_some(())
    })
    .await;
    cluster.kill(leader);
    // What the leader sent before it died may still be in our socket buffer.
    while c.pump(Duration::from_secs(5)).await.is_ok() {}
    let before_kill: BTreeMap<String, Ack> = c
        .acks
        .iter()
        .map(|a| (a.client_msg_id.clone(), a.clone()))
        .collect();
    assert!(
        c.nacks.iter().all(|n| n.code == "unavailable"),
        "refused by the dying leader: {:?}",
        c.nacks
    );
    let new_leader = cluster.wait_for_leader(&[leader]).await;
    let survivor = cluster
        .live_ids()
        .into_iter()
        .find(|i| *i != new_leader)
        .expect("a survivor besides the new leader");
    let mut after: BTreeMap<String, Ack> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while after.len() < ids.len() {
        if Instant::now() > deadline {
            cluster.fail(&format!("re-sends not acknowledged: {after:?}"));
        }
        // A fresh connection per round: its rate budget is whole again.
        let mut r = WsClient::open(&cluster, survivor, &admin).await;
        let pending: Vec<&String> = ids.iter().filter(|i| !after.contains_key(*i)).collect();
        for id in &pending {
            r.send(&cluster, &send_frame(CH, &body(id), id)).await;
        }
        r.wait(
            &cluster,
            "an answer to every re-send",
            FRAME_WAIT * 2,
            |c| {
                pending
                    .iter()
                    .all(|id| {
                        c.acks.iter().any(|a| &a.client_msg_id == *id)
                            || c.nacks.iter().any(|n| &n.client_msg_id == *id)
                    })
                    .then_some(())
            },
        )
        .await;
        for n in &r.nacks {
            assert_eq!(n.code, "unavailable", "re-send refused: {n:?}");
        }
        for a in r.acks {
            after.insert(a.client_msg_id.clone(), a);
        }
    }
    for (id, a) in &before_kill {
        let b = &after[id];
        assert!(
            b.duplicate && b.seq == a.seq,
            "{id} was acknowledged by the leader as {a:?}, re-sent as {b:?}"
        );
    }
    let seqs: BTreeSet<u64> = after.values().map(|a| a.seq).collect();
    assert_eq!(seqs.len(), 40, "40 sends, {} distinct seqs", seqs.len());
    eprintln!(
        "leader {leader} killed after acknowledging {} of 40; re-sent on node {survivor}: {} duplicates",
        before_kill.len(),
        after.values().filter(|a| a.duplicate).count()
    );
    for a in after.values() {
        acked.push(acked_msg(a, &body(&a.client_msg_id)));
    }

    // Every node, the killed leader restarted, holds each id once at its acknowledged seq.
    cluster.restart(leader).await;
    let max_seq = acked.iter().map(|m| m.seq).max().unwrap_or(0);
    let views = cluster.wait_converged(CH, &[1, 2, 3], None, max_seq).await;
    cluster.check(checks::all_core(&acked, &views));
    let sent: std::collections::HashSet<String> =
        acked.iter().map(|m| m.client_msg_id.clone()).collect();
    cluster.check(checks::nothing_unsent_written(&sent, &views));
    assert_eq!(views[0].messages.len(), 100, "100 ids, stored once each");
}

/// Disabling a user closes every socket they have, on every node, with 4003, within the
/// requirement's second (asserted under 2 s for loaded machines; the latencies are printed).
/// Other users' sockets stay open and learn of it (`user_updated`). The user's tokens are
/// refused afterwards (WebSocket 4001, REST 401), also after the account is enabled again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_disabling_a_user_closes_their_sockets_on_every_node() {
    let cluster = TestCluster::start(3).await;
    create_channel(&cluster, CH).await;
    create_user(&cluster, "bob").await;
    create_user(&cluster, "carol").await;
    let bob_a = login(&cluster, 1, "bob").await;
    let bob_b = login(&cluster, 2, "bob").await;
    let carol = login(&cluster, 3, "carol").await;
    let mut bobs = Vec::new();
    for (node, token) in [(1u64, &bob_a), (2, &bob_b), (3, &bob_a)] {
        let mut c = WsClient::open(&cluster, node, token).await;
        c.subscribe(&cluster, CH, None).await;
        bobs.push(c);
    }
    let mut carols = Vec::new();
    for node in 1..=3 {
        carols.push(WsClient::open(&cluster, node, &carol).await);
    }

    // Every socket is read from before the request goes out.
    let follower = cluster.a_follower().await;
    let started = Instant::now();
    let readers: Vec<_> = bobs
        .into_iter()
        .map(|mut c| {
            tokio::spawn(async move {
                let r = c.conn.expect_close(Duration::from_secs(10)).await;
                (c.node, r, Instant::now())
            })
        })
        .collect();
    let patch = UserPatch {
        disabled: Some(true),
        // Step-up: the admin's own password (the test cluster's API is loopback-only).
        current_password: Some(chaos_tests::ADMIN_PASSWORD.to_owned()),
        ..UserPatch::default()
    };
    let user = cluster
        .client(follower)
        .update_user("bob", &patch)
        .await
        .unwrap_or_else(|e| cluster.fail(&format!("disable bob via node {follower}: {e}")));
    let answered = started.elapsed();
    assert!(user.disabled, "PATCH answered {user:?}");
    let mut latencies = Vec::new();
    for r in readers {
        let (node, closed, at) = r.await.expect("reader task");
        let latency = at.duration_since(started);
        match closed {
            Ok(info) if info.code == Some(4003) => {}
            other => cluster.fail(&format!(
                "bob's socket on node {node}: expected close 4003, got {other:?}"
            )),
        }
        latencies.push((node, latency));
    }
    eprintln!(
        "disable via node {follower}: PATCH answered after {answered:?}; sockets closed (4003) after {}",
        latencies
            .iter()
            .map(|(n, l)| format!("node {n}: {:.1} ms", l.as_secs_f64() * 1000.0))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for (node, latency) in &latencies {
        assert!(
            *latency < Duration::from_secs(2),
            "bob's socket on node {node} closed {latency:?} after the PATCH was sent"
        );
    }

    // Carol's sockets are untouched and were told.
    for c in &mut carols {
        c.wait(&cluster, "user_updated for bob", FRAME_WAIT, |c| {
            c.user_updates
                .contains(&("bob".to_owned(), true))
                .then_some(())
        })
        .await;
        c.ping_pong(&cluster, 1).await;
    }

    // Bob's tokens are dead everywhere, and stay dead when the account is enabled again.
    let refused = |when: &'static str| {
        let cluster = &cluster;
        let tokens = [bob_a.clone(), bob_b.clone()];
        async move {
            for node in 1..=3 {
                for token in &tokens {
                    let mut conn = WsConn::connect(&cluster.url(node))
                        .await
                        .unwrap_or_else(|e| cluster.fail(&format!("connect: {e}")));
                    match conn.auth(token).await {
                        Err(WsError::AuthLost(info)) if info.code == Some(4001) => {}
                        other => cluster.fail(&format!(
                            "{when}: bob's token on node {node}: expected close 4001, got {other:?}"
                        )),
                    }
                    let rest = cluster
                        .try_client_without_token(&[node])
                        .expect("client")
                        .with_token(token.clone());
                    match rest.me().await {
                        Err(e) if e.status() == Some(401) => {}
                        other => cluster.fail(&format!(
                            "{when}: bob's token over REST on node {node}: {other:?}"
                        )),
                    }
                }
            }
        }
    };
    refused("disabled").await;
    let mut c = cluster.try_client_without_token(&[2]).expect("client");
    match c.login("bob", USER_PASSWORD).await {
        Err(e) if e.status() == Some(401) || e.status() == Some(403) => {}
        other => cluster.fail(&format!("a disabled user logged in: {other:?}")),
    }
    let patch = UserPatch {
        disabled: Some(false),
        // Step-up: the admin's own password (the test cluster's API is loopback-only).
        current_password: Some(chaos_tests::ADMIN_PASSWORD.to_owned()),
        ..UserPatch::default()
    };
    cluster
        .client(1)
        .update_user("bob", &patch)
        .await
        .unwrap_or_else(|e| cluster.fail(&format!("enable bob: {e}")));
    refused("enabled again").await;
    let fresh = login(&cluster, 3, "bob").await;
    let mut c = WsClient::open(&cluster, 1, &fresh).await;
    c.subscribe(&cluster, CH, None).await;
}
