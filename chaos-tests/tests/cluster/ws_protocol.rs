//! The WebSocket protocol (docs/protocol.md) on a real cluster: resuming from a cursor on
//! another node while writes continue (no gap, no duplicate at the replay/live seam), bad
//! input closed with the documented codes and writing nothing, the rate limit's 4029, expired
//! tokens, and per-frame permission errors that leave the connection open.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chaos_tests::{ClusterOptions, Load, LoadConfig, TestCluster};
use ops::{ChannelEvent, ChannelPatch, ClientFrame, EventKind, WsConn, WsConnectOptions, WsError};

use crate::util::{create_channel, post_ok, settle};
use crate::ws_util::{
    FRAME_WAIT, USER_PASSWORD, WsClient, WsPoster, channel_cursor, check_complete,
    create_private_channel, create_user, login, open_located, send_frame, summarize, tcp_sockets,
    wait_channel_ev,
};

fn has_seq(c: &WsClient, channel: &str, seq: u64) -> Option<()> {
    c.events
        .iter()
        .any(|e| {
            e.channel == channel
                && matches!(&e.kind, EventKind::Message { message } if message.seq >= seq)
        })
        .then_some(())
}

/// One resubscription: where the client resumed and what it got on each side of the seam.
#[derive(Debug)]
struct Seam {
    node: u64,
    after: u64,
    subscribed_ev: u64,
    replayed: usize,
    live: usize,
    replayed_from_posters: usize,
    live_from_posters: usize,
}

fn from_posters(events: &[ChannelEvent]) -> usize {
    events
        .iter()
        .filter(|e| {
            e.message()
                .is_some_and(|m| m.client_msg_id.starts_with("live-"))
        })
        .count()
}

/// A client follows a channel on node 1, leaves, and comes back on other nodes with
/// `subscribe after=<cursor>` six times while three posters (REST on nodes 1 and 2, WebSocket
/// on node 3) keep writing, so every resume crosses the replay/live seam under load. What it
/// applied, across all its connections, must be every `ev` exactly once and every message
/// seq in order; the replay carries the current state of messages edited while it was away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_resume_across_nodes_without_gap_or_duplicate() {
    const CH: &str = "resume";
    let cluster = TestCluster::start(3).await;
    create_channel(&cluster, CH).await;
    create_user(&cluster, "alice").await;
    let alice = login(&cluster, 1, "alice").await;
    let admin = cluster.admin_token().to_owned();
    // Everything alice applied, in order, and every acknowledged message (id -> seq).
    let mut applied: Vec<ChannelEvent> = Vec::new();
    let mut acked: BTreeMap<String, u64> = BTreeMap::new();

    // 1. On node 1 from the start (replay of the creation events), then live messages.
    let mut a = WsClient::open(&cluster, 1, &alice).await;
    let mut listed: Vec<(u64, String)> = a
        .hello
        .nodes
        .iter()
        .map(|n| (n.id, n.api_addr.clone()))
        .collect();
    listed.sort();
    let members: Vec<(u64, String)> = (1..=3)
        .map(|id| (id, cluster.api_addr(id).to_string()))
        .collect();
    assert_eq!(listed, members, "hello lists every member's API address");
    let first_sub = a.subscribe(&cluster, CH, Some(0)).await;
    assert!(first_sub >= 1, "a new channel has its member_joined event");
    let rest1 = cluster.client(1);
    for i in 0..5 {
        let id = format!("early-{i}");
        let out = post_ok(&cluster, &rest1, CH, &format!("{id} via REST"), &id).await;
        acked.insert(id, out.message.seq);
    }
    a.wait(&cluster, "the 5 early messages, live", FRAME_WAIT, |c| {
        has_seq(c, CH, 5)
    })
    .await;
    applied.append(&mut a.events);
    let mut cursor = applied.last().expect("events").ev;
    let _ = a.conn.close(1000, "going away").await;

    // 2. While alice is away: posts through node 2 over REST and over a WebSocket, an edit
    //    of one of them and a reaction.
    let rest2 = cluster.client(2);
    for i in 0..5 {
        let id = format!("away-rest-{i}");
        let out = post_ok(&cluster, &rest2, CH, &format!("{id} via REST"), &id).await;
        acked.insert(id, out.message.seq);
    }
    let mut w2 = WsClient::open(&cluster, 2, &admin).await;
    for i in 0..5 {
        let id = format!("away-ws-{i}");
        let ack = w2
            .send_msg(&cluster, CH, &format!("{id} via WS"), &id)
            .await;
        assert!(!ack.duplicate, "first send of {id} acked as a duplicate");
        acked.insert(id, ack.seq);
    }
    let edited_seq = acked["away-rest-1"];
    let edited_body = "away-rest-1, edited while alice was away";
    rest2
        .edit_message(CH, edited_seq, edited_body)
        .await
        .unwrap_or_else(|e| cluster.fail(&format!("edit: {e}")));
    let reacted_seq = acked["away-ws-2"];
    rest2
        .add_reaction(CH, reacted_seq, "👍")
        .await
        .unwrap_or_else(|e| cluster.fail(&format!("reaction: {e}")));

    // 3. Posters keep writing while alice resumes again and again on rotating nodes.
    let load = Load::start(
        vec![cluster.client(1), cluster.client(2)],
        LoadConfig::new(CH, "live-rest"),
    );
    let ws_poster = WsPoster::start(
        &cluster,
        3,
        &admin,
        CH,
        "live-ws",
        Duration::from_millis(60),
    );
    cluster
        .wait_until("posters under way", FRAME_WAIT, || async {
            let n = load.acked() + ws_poster.acked();
            if n >= 10 {
                Ok(())
            } else {
                Err(format!("{n} acked"))
            }
        })
        .await;
    let mut seams = Vec::new();
    for (round, node) in [3u64, 1, 2, 3, 1, 2].into_iter().enumerate() {
        // Away long enough for the posters to write a few messages (at most 3 of the acks
        // counted here can be for messages alice already has: one per poster in flight).
        let target = load.acked() + ws_poster.acked() + 6;
        cluster
            .wait_until(
                "posters to write while alice is away",
                FRAME_WAIT,
                || async {
                    let n = load.acked() + ws_poster.acked();
                    if n >= target {
                        Ok(())
                    } else {
                        Err(format!("{n} acked, waiting for {target}"))
                    }
                },
            )
            .await;
        let mut a = WsClient::open(&cluster, node, &alice).await;
        let sub = a.subscribe(&cluster, CH, Some(cursor)).await;
        let replayed = a.subscribed[0].2;
        a.wait(
            &cluster,
            "3 live events after subscribed",
            FRAME_WAIT,
            |c| (c.events.len() >= replayed + 3).then_some(()),
        )
        .await;
        let evs: Vec<u64> = a.events.iter().map(|e| e.ev).collect();
        let want: Vec<u64> = (cursor + 1..=sub).collect();
        assert_eq!(
            evs[..replayed],
            want[..],
            "round {round} on node {node}: the replay after {cursor} up to subscribed.ev {sub} is {}",
            summarize(&evs[..replayed])
        );
        assert!(
            a.events.iter().all(|e| e.channel == CH),
            "events of another channel"
        );
        seams.push(Seam {
            node,
            after: cursor,
            subscribed_ev: sub,
            replayed,
            live: a.events.len() - replayed,
            replayed_from_posters: from_posters(&a.events[..replayed]),
            live_from_posters: from_posters(&a.events[replayed..]),
        });
        cursor = a.events.last().expect("events").ev;
        applied.append(&mut a.events);
        if round % 2 == 0 {
            let _ = a.conn.close(1000, "going away").await;
        } else {
            // Gone without a close frame, like a client whose network dropped.
            drop(a);
        }
    }
    let report = load.stop().await;
    let ws_acks = ws_poster.stop().await.unwrap_or_else(|e| cluster.fail(&e));
    for m in settle(&cluster, CH, &report).await {
        acked.insert(m.client_msg_id, m.seq);
    }
    for a in &ws_acks {
        acked.insert(a.client_msg_id.clone(), a.seq);
    }
    for s in &seams {
        eprintln!("{s:?}");
    }
    for s in &seams {
        assert!(
            s.replayed_from_posters > 0 && s.live_from_posters > 0,
            "the posters' messages must arrive on both sides of every seam: {s:?}"
        );
        assert!(
            s.subscribed_ev - s.after == s.replayed as u64 && s.live >= 3,
            "seam on node {}: {s:?}",
            s.node
        );
    }

    // 4. Writes stopped: every node agrees on the channel; alice catches up on node 2.
    let (last_seq, last_ev) = cluster
        .wait_until(
            "nodes to agree on the channel",
            cluster.ready_timeout(),
            || async {
                let mut seen = Vec::new();
                for id in 1..=3 {
                    let ch = cluster
                        .client(id)
                        .get_channel(CH)
                        .await
                        .map_err(|e| e.to_string())?;
                    seen.push((ch.last_seq, ch.last_ev));
                }
                if seen.iter().all(|s| *s == seen[0]) && seen[0].0 >= acked.len() as u64 {
                    Ok(seen[0])
                } else {
                    Err(format!("(last_seq, last_ev) per node: {seen:?}"))
                }
            },
        )
        .await;
    let mut a = WsClient::open(&cluster, 2, &alice).await;
    a.subscribe(&cluster, CH, Some(cursor)).await;
    a.wait(&cluster, &format!("event {last_ev}"), FRAME_WAIT, |c| {
        (c.last_ev(CH).unwrap_or(cursor) >= last_ev).then_some(())
    })
    .await;
    applied.append(&mut a.events);

    let messages = check_complete(&applied, last_ev, last_seq)
        .unwrap_or_else(|e| cluster.fail(&format!("what alice applied: {e}")));
    assert_eq!(
        messages.len(),
        acked.len(),
        "the channel holds messages nobody was acknowledged for"
    );
    for (id, seq) in &acked {
        let m = &messages[seq];
        assert_eq!(&m.client_msg_id, id, "seq {seq} was acked for {id}");
    }
    // The REST history says the same.
    let history = cluster
        .try_messages(3, CH, None)
        .await
        .unwrap_or_else(|e| cluster.fail(&format!("{e:#}")));
    let from_rest: Vec<(u64, String)> = history
        .iter()
        .map(|m| (m.seq, m.client_msg_id.clone()))
        .collect();
    let from_ws: Vec<(u64, String)> = messages
        .values()
        .map(|m| (m.seq, m.client_msg_id.clone()))
        .collect();
    assert_eq!(from_rest, from_ws, "history and events disagree");
    // Replayed events carry the current state: the message posted and edited while alice
    // was away arrives edited, in its `message` and its `edited` event.
    assert_eq!(messages[&edited_seq].body, edited_body);
    let edited: Vec<&ChannelEvent> = applied
        .iter()
        .filter(|e| matches!(&e.kind, EventKind::Edited { message } if message.seq == edited_seq))
        .collect();
    assert_eq!(edited.len(), 1, "one edited event");
    assert_eq!(
        edited[0].message().map(|m| m.body.as_str()),
        Some(edited_body)
    );
    let reacted = applied
        .iter()
        .find(|e| matches!(&e.kind, EventKind::Reaction { message, .. } if message.seq == reacted_seq))
        .expect("the reaction event");
    assert_eq!(
        reacted.message().map(|m| m.reactions.clone()),
        Some(BTreeMap::from([(
            "👍".to_owned(),
            vec![chaos_tests::ADMIN_USER.to_owned()]
        )]))
    );
    eprintln!(
        "alice applied {} events (ev 1..={last_ev}), {} messages, over 8 connections",
        applied.len(),
        messages.len()
    );
}

const INPUTS: &str = "inputs";

/// The channel as it was after the last accepted write, and what proves a refused frame
/// wrote nothing.
struct Unchanged {
    seq: u64,
    ev: u64,
    sentinels: u64,
}

impl Unchanged {
    /// A sentinel sent over a healthy connection must get exactly the next seq and the next
    /// event on every node, and the watcher (subscribed all along) must see nothing else.
    async fn check(
        &mut self,
        cluster: &TestCluster,
        sender: &mut WsClient,
        watcher: &mut WsClient,
        what: &str,
    ) {
        self.sentinels += 1;
        let id = format!("sentinel-{}", self.sentinels);
        let ack = sender
            .send_msg(cluster, INPUTS, &format!("sentinel after {what}"), &id)
            .await;
        assert_eq!(
            ack.seq,
            self.seq + 1,
            "{what}: something was written (the sentinel got seq {}, expected {})",
            ack.seq,
            self.seq + 1
        );
        let ev = self.ev + 1;
        watcher
            .wait(
                cluster,
                &format!("the sentinel after {what}"),
                FRAME_WAIT,
                |c| c.last_ev(INPUTS).filter(|e| *e >= ev).map(|_| ()),
            )
            .await;
        let got: Vec<ChannelEvent> = std::mem::take(&mut watcher.events);
        assert!(
            got.len() == 1
                && got[0].ev == ev
                && got[0].message().is_some_and(|m| m.client_msg_id == id),
            "{what}: the watcher expected only the sentinel as event {ev}, got {got:?}"
        );
        for node in 1..=3 {
            let now = wait_channel_ev(cluster, node, INPUTS, ev).await;
            assert_eq!(
                now,
                (self.seq + 1, ev),
                "{what}: node {node} shows (last_seq, last_ev) {now:?}"
            );
        }
        self.seq += 1;
        self.ev = ev;
    }
}

async fn expect_close_code(cluster: &TestCluster, conn: &mut WsConn, what: &str, want: u16) {
    let started = Instant::now();
    match conn.expect_close(FRAME_WAIT).await {
        Ok(info) if info.code == Some(want) => {
            eprintln!("{what}: {info} after {:?}", started.elapsed());
        }
        Ok(info) => cluster.fail(&format!("{what}: expected close {want}, got {info}")),
        Err(e) => cluster.fail(&format!("{what}: expected close {want}, got {e}")),
    }
}

/// Every kind of bad input the protocol names is closed with its documented code (or, for a
/// foreign origin, refused at the upgrade) and writes nothing: after each case a sentinel gets
/// exactly the next seq and event on every node, and a connection subscribed all along sees
/// only the sentinels. The bad frames are `send`s of a member (or look like one), so a server
/// that half-processed them would write. (The rate limit has its own test.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_bad_input_is_closed_and_writes_nothing() {
    let cluster = TestCluster::start(3).await;
    create_channel(&cluster, INPUTS).await;
    create_user(&cluster, "mallory").await;
    let mallory_rest = cluster.login_client(2, "mallory", USER_PASSWORD).await;
    mallory_rest
        .join_channel(INPUTS)
        .await
        .unwrap_or_else(|e| cluster.fail(&format!("join: {e}")));
    let token = mallory_rest.token().expect("token").to_owned();
    let admin = cluster.admin_token().to_owned();

    // Opened first and never authenticated: the server must close it after 10 s.
    let idle_since = Instant::now();
    let mut idle = WsConn::connect(&cluster.url(3))
        .await
        .unwrap_or_else(|e| cluster.fail(&format!("connect: {e}")));

    let mut watcher = WsClient::open(&cluster, 1, &admin).await;
    watcher.subscribe(&cluster, INPUTS, None).await;
    let mut sender = WsClient::open(&cluster, 3, &token).await;
    let (seq, ev) = channel_cursor(&cluster, 1, INPUTS).await;
    let mut base = Unchanged {
        seq,
        ev,
        sentinels: 0,
    };
    base.check(&cluster, &mut sender, &mut watcher, "the start")
        .await;
    let bad = |id: &str| send_frame(INPUTS, "this must never be written", id).to_json();

    // Frames a parser must refuse: 4000.
    let truncated = bad("bad-json");
    let cases: Vec<(&str, String)> = vec![
        ("invalid JSON", truncated[..truncated.len() - 1].to_owned()),
        ("a JSON string", "\"send\"".to_owned()),
        (
            "an unknown type",
            bad("bad-type").replace("\"type\":\"send\"", "\"type\":\"post\""),
        ),
        (
            "a send without a body",
            format!(r#"{{"type":"send","channel":"{INPUTS}","client_msg_id":"bad-missing"}}"#),
        ),
    ];
    for (i, (what, text)) in cases.into_iter().enumerate() {
        let node = i as u64 % 3 + 1;
        let mut c = WsClient::open(&cluster, node, &token).await;
        c.conn
            .send_text(text)
            .await
            .unwrap_or_else(|e| cluster.fail(&format!("{what}: {e}")));
        expect_close_code(&cluster, &mut c.conn, what, 4000).await;
        base.check(&cluster, &mut sender, &mut watcher, what).await;
    }
    let mut c = WsClient::open(&cluster, 2, &token).await;
    c.conn
        .send_binary(bad("bad-binary").into_bytes())
        .await
        .unwrap_or_else(|e| cluster.fail(&format!("binary: {e}")));
    expect_close_code(&cluster, &mut c.conn, "a binary frame", 4000).await;
    base.check(&cluster, &mut sender, &mut watcher, "a binary frame")
        .await;

    // Frames over the 20,000-byte limit: 1009. Above the 64 KiB transport cap the WebSocket
    // library refuses the frame before the server sees it: 1009 or a dropped connection.
    for (what, len, node) in [
        ("a 30,000-byte frame", 30_000usize, 3u64),
        ("a 100,000-byte frame", 100_000, 1),
    ] {
        let mut c = WsClient::open(&cluster, node, &token).await;
        let text = send_frame(INPUTS, &"x".repeat(len), "bad-big").to_json();
        let sent = c.conn.send_text(text).await;
        let started = Instant::now();
        let closed = c.conn.expect_close(FRAME_WAIT).await;
        eprintln!(
            "{what}: send {sent:?}, then {closed:?} after {:?}",
            started.elapsed()
        );
        match closed {
            Ok(info) if info.code == Some(1009) => {}
            Ok(info) if len > 65_536 && info.code.is_none() => {}
            other => cluster.fail(&format!("{what}: expected close 1009, got {other:?}")),
        }
        base.check(&cluster, &mut sender, &mut watcher, what).await;
    }

    // No auth first: 4001, whatever the first frame is.
    for (what, first) in [
        ("a send before auth", bad("bad-noauth")),
        ("a ping before auth", ClientFrame::Ping { id: 1 }.to_json()),
    ] {
        let mut conn = WsConn::connect(&cluster.url(2))
            .await
            .unwrap_or_else(|e| cluster.fail(&format!("connect: {e}")));
        conn.send_text(first)
            .await
            .unwrap_or_else(|e| cluster.fail(&format!("{what}: {e}")));
        expect_close_code(&cluster, &mut conn, what, 4001).await;
        base.check(&cluster, &mut sender, &mut watcher, what).await;
    }

    // Forged tokens: 4001 (a malformed one, a well-formed unknown one, one pointing far ahead).
    let unknown = format!("cv1.{}.5", "ab".repeat(32));
    let far = format!("cv1.{}.999999999999", "cd".repeat(32));
    for (what, forged) in [
        ("a malformed token", "cv1.xxxx.5".to_owned()),
        ("an unknown token", unknown),
        ("a token claiming a far index", far),
    ] {
        let mut conn = WsConn::connect(&cluster.url(1))
            .await
            .unwrap_or_else(|e| cluster.fail(&format!("connect: {e}")));
        match conn.auth(&forged).await {
            Err(WsError::AuthLost(info)) if info.code == Some(4001) => {}
            other => cluster.fail(&format!("{what}: expected close 4001, got {other:?}")),
        }
        base.check(&cluster, &mut sender, &mut watcher, what).await;
    }

    // A revoked token: the socket it opened closes with 4011 (session ended: log in again), a
    // new one gets 4001, REST 401.
    let mut second = cluster.login_client(1, "mallory", USER_PASSWORD).await;
    let revoked = second.token().expect("token").to_owned();
    let mut open_before = WsClient::open(&cluster, 2, &revoked).await;
    second
        .logout()
        .await
        .unwrap_or_else(|e| cluster.fail(&format!("logout: {e}")));
    expect_close_code(
        &cluster,
        &mut open_before.conn,
        "the socket of a session logged out",
        4011,
    )
    .await;
    // Each node refuses it once it has applied the logout (a follower may lag a moment).
    for node in 1..=3 {
        cluster
            .wait_until(
                &format!("node {node} to refuse the revoked token"),
                FRAME_WAIT,
                || async {
                    let mut conn = WsConn::connect(&cluster.url(node))
                        .await
                        .map_err(|e| format!("connect: {e}"))?;
                    match conn.auth(&revoked).await {
                        Err(WsError::AuthLost(info)) if info.code == Some(4001) => Ok(()),
                        Ok(_) => Err("still accepted".to_owned()),
                        other => Err(format!("expected close 4001, got {other:?}")),
                    }
                },
            )
            .await;
    }
    let rest = cluster
        .try_client_without_token(&[3])
        .expect("client")
        .with_token(revoked.clone());
    match rest.me().await {
        Err(e) if e.status() == Some(401) => {}
        other => cluster.fail(&format!("a revoked token over REST: {other:?}")),
    }
    base.check(&cluster, &mut sender, &mut watcher, "a revoked token")
        .await;

    // Origins: foreign ones are refused at the upgrade with 403 forbidden_origin; a cluster
    // member's own origin is accepted.
    let other_port = format!("http://{}:1", cluster.ip(2));
    for origin in ["http://evil.example", "null", other_port.as_str()] {
        match WsConn::connect_with_origin(&cluster.url(2), origin).await {
            Err(WsError::Rejected { status, code, .. }) => {
                assert_eq!(
                    (status, code.as_str()),
                    (403, "forbidden_origin"),
                    "origin {origin}"
                );
            }
            other => cluster.fail(&format!("origin {origin}: expected 403, got {other:?}")),
        }
    }
    for (node, origin_node) in [(2u64, 1u64), (2, 2), (3, 1)] {
        let origin = format!("http://{}", cluster.api_addr(origin_node));
        let opts = WsConnectOptions {
            origin: Some(origin.clone()),
            ..WsConnectOptions::default()
        };
        let mut conn = WsConn::connect_with(&cluster.url(node), &opts)
            .await
            .unwrap_or_else(|e| cluster.fail(&format!("origin {origin} on node {node}: {e}")));
        let hello = conn
            .auth(&token)
            .await
            .unwrap_or_else(|e| cluster.fail(&format!("origin {origin} on node {node}: {e}")));
        assert_eq!(hello.node_id, node);
    }
    base.check(&cluster, &mut sender, &mut watcher, "origins")
        .await;

    // The idle connection: closed 4001 once its 10 s to authenticate ran out.
    let left = Duration::from_secs(15).saturating_sub(idle_since.elapsed());
    match idle.expect_close(left.max(Duration::from_secs(1))).await {
        Ok(info) if info.code == Some(4001) => {
            let after = idle_since.elapsed();
            eprintln!("no auth frame: {info} after {after:?}");
            assert!(
                after >= Duration::from_millis(9_500),
                "closed after {after:?}, before the 10 s auth deadline"
            );
        }
        other => cluster.fail(&format!(
            "no auth frame within 10 s: expected close 4001, got {other:?}"
        )),
    }

    // The cluster still serves, and nothing the bad frames carried exists anywhere.
    watcher.ping_pong(&cluster, 7).await;
    base.check(&cluster, &mut sender, &mut watcher, "everything")
        .await;
    for node in 1..=3 {
        let msgs = cluster
            .try_messages(node, INPUTS, None)
            .await
            .unwrap_or_else(|e| cluster.fail(&format!("{e:#}")));
        let ids: Vec<&str> = msgs.iter().map(|m| m.client_msg_id.as_str()).collect();
        assert_eq!(msgs.len() as u64, base.seq, "node {node}: {ids:?}");
        assert!(
            ids.iter().all(|id| id.starts_with("sentinel-")),
            "node {node} holds a message from a bad frame: {ids:?}"
        );
    }
}

/// The rate limit (20 frames/s, burst 60): 200 pings sent as fast as possible get the burst
/// answered, then close 4029, and nothing changes. The client must see that close although it
/// kept sending, so the server must not drop the connection with the client's frames unread:
/// the kernel then resets it and discards what the server had not transmitted yet (pongs, the
/// close frame), and the client sees `connection reset` instead of 4029. Whether anything is
/// still untransmitted is a matter of timing, so the scenario runs 40 times (half the clients
/// read while sending, half send everything first) and every run must see 4029. One node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_rate_limit_closes_with_4029() {
    const ROUNDS: u64 = 40;
    let cluster = TestCluster::start(1).await;
    create_channel(&cluster, INPUTS).await;
    let admin = cluster.admin_token().to_owned();
    let before = channel_cursor(&cluster, 1, INPUTS).await;
    let mut lost = Vec::new();
    for round in 0..ROUNDS {
        let interleave = round % 2 == 0;
        let (mut c, server, client) = open_located(&cluster, 1, &admin).await;
        let started = Instant::now();
        let mut sent = 0u64;
        let mut closed = None;
        'sending: for i in 0..200u64 {
            if c.conn
                .send_frame(&ClientFrame::Ping { id: i })
                .await
                .is_err()
            {
                break;
            }
            sent += 1;
            if interleave {
                loop {
                    match c.pump(Duration::ZERO).await {
                        Ok(()) => {}
                        Err(WsError::Timeout(_)) => break,
                        Err(WsError::Closed(info)) => {
                            closed = Some(info);
                            break 'sending;
                        }
                        Err(e) => cluster.fail(&format!("rate limit: {e}")),
                    }
                }
            }
        }
        // The client's socket right after sending (state 1 established, 8 close-wait after a
        // graceful close; None: already reset).
        let socket = client.and_then(|client| {
            tcp_sockets()
                .into_iter()
                .find(|s| s.local == client && s.remote == server)
        });
        let info = match closed {
            Some(info) => info,
            None => loop {
                match c.pump(FRAME_WAIT).await {
                    Ok(()) => {}
                    Err(WsError::Closed(info)) => break info,
                    Err(e) => cluster.fail(&format!("rate limit: expected close 4029, got {e}")),
                }
            },
        };
        let pongs = c.pongs.len() as u64;
        let what = format!(
            "round {round} (reading while sending: {interleave}): sent {sent} pings, read \
             {pongs} pongs, then {info}; the client's socket: {socket:?}"
        );
        if info.code != Some(4029) {
            lost.push(what);
            continue;
        }
        assert_eq!(
            c.pongs,
            (0..pongs).collect::<Vec<_>>(),
            "{what}: pongs in order"
        );
        let allowed = 60 + (20.0 * started.elapsed().as_secs_f64()).ceil() as u64;
        assert!((60..=allowed).contains(&pongs), "{what}: burst 60, 20/s");
    }
    if !lost.is_empty() {
        cluster.fail(&format!(
            "{} of {ROUNDS} rate-limited clients never saw close 4029 (connection reset after \
             some of the 60 pongs): the server dropped the connection with their later frames \
             unread, so the kernel reset it and discarded what the server had not transmitted \
             yet, the close frame included:\n{}",
            lost.len(),
            lost.join("\n")
        ));
    }
    // Nothing changed, and the node serves new connections.
    assert_eq!(channel_cursor(&cluster, 1, INPUTS).await, before);
    let mut again = WsClient::open(&cluster, 1, &admin).await;
    again.ping_pong(&cluster, 1).await;
}

/// A WebSocket session whose token expires is refused (4011, session ended) on a new
/// connection; REST agrees (401). One node whose sessions last 2 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_expired_token_is_refused() {
    let cluster = TestCluster::start_with(
        1,
        ClusterOptions::default().top_level("session_ttl_secs", "2"),
    )
    .await;
    let client = cluster
        .login_client(1, chaos_tests::ADMIN_USER, chaos_tests::ADMIN_PASSWORD)
        .await;
    let token = client.token().expect("token").to_owned();
    cluster
        .wait_until("the token to expire", Duration::from_secs(15), || async {
            match client.me().await {
                Err(e) if e.status() == Some(401) => Ok(()),
                other => Err(format!("GET /me: {other:?}")),
            }
        })
        .await;
    let mut conn = WsConn::connect(&cluster.url(1))
        .await
        .unwrap_or_else(|e| cluster.fail(&format!("connect: {e}")));
    match conn.auth(&token).await {
        // 4011 while the node still holds the expired session, 4001 once it is purged.
        Err(WsError::AuthLost(info)) if matches!(info.code, Some(4011 | 4001)) => {}
        other => cluster.fail(&format!(
            "an expired token: expected close 4011 (or 4001 once purged), got {other:?}"
        )),
    }
}

/// Permission problems are answered per frame and leave the connection open: a `send` to a
/// channel the user may not post in gets a `nack` with the REST code, a `subscribe` to a
/// channel the user may not read gets an `error` frame, and nothing of such a channel is ever
/// streamed to them. Losing membership of a private channel stops its stream
/// (`unsubscribed`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_permission_errors_are_per_frame() {
    let cluster = TestCluster::start(3).await;
    create_private_channel(&cluster, "secret").await;
    create_private_channel(&cluster, "club").await;
    create_channel(&cluster, "open").await;
    create_channel(&cluster, "old").await;
    create_user(&cluster, "eve").await;
    create_user(&cluster, "bob").await;
    let admin = cluster.client_all();
    let dm = admin
        .open_dm(&["bob"])
        .await
        .unwrap_or_else(|e| cluster.fail(&format!("open DM: {e}")))
        .name;
    let eve_rest = cluster.login_client(2, "eve", USER_PASSWORD).await;
    eve_rest
        .join_channel("old")
        .await
        .unwrap_or_else(|e| cluster.fail(&format!("join old: {e}")));
    admin
        .update_channel(
            "old",
            &ChannelPatch {
                archived: Some(true),
                ..ChannelPatch::default()
            },
        )
        .await
        .unwrap_or_else(|e| cluster.fail(&format!("archive old: {e}")));
    admin
        .add_member("club", "eve")
        .await
        .unwrap_or_else(|e| cluster.fail(&format!("add eve to club: {e}")));
    let token = eve_rest.token().expect("token").to_owned();
    let follower = cluster.a_follower().await;
    let before: Vec<(u64, u64)> = {
        let mut v = Vec::new();
        for ch in ["secret", dm.as_str(), "open", "old"] {
            v.push(channel_cursor(&cluster, 1, ch).await);
        }
        v
    };

    let mut eve = WsClient::open(&cluster, follower, &token).await;
    let long_body = "y".repeat(16 * 1024 + 1);
    let sends: Vec<(&str, &str, &str, &str)> = vec![
        ("secret", "x", "eve-1", "forbidden"),
        (dm.as_str(), "x", "eve-2", "forbidden"),
        ("open", "x", "eve-3", "forbidden"),
        ("nope", "x", "eve-4", "channel_not_found"),
        ("old", "x", "eve-5", "archived"),
        ("club", "", "eve-6", "invalid_request"),
        ("club", "x", "eve 7", "invalid_request"),
        ("club", &long_body, "eve-8", "invalid_request"),
    ];
    for (channel, body, id, code) in sends {
        eve.send(&cluster, &send_frame(channel, body, id)).await;
        let got = eve
            .wait(&cluster, &format!("the answer to {id}"), FRAME_WAIT, |c| {
                c.nacks
                    .iter()
                    .find(|n| n.client_msg_id == id)
                    .map(|n| n.code.clone())
                    .or_else(|| {
                        c.acks
                            .iter()
                            .any(|a| a.client_msg_id == id)
                            .then(|| "ack".to_owned())
                    })
            })
            .await;
        assert_eq!(got, code, "send {id:?} to {channel}");
    }
    eve.ping_pong(&cluster, 1).await;

    for (channel, code) in [
        ("secret", "forbidden"),
        (dm.as_str(), "forbidden"),
        ("nope", "channel_not_found"),
    ] {
        eve.send(
            &cluster,
            &ClientFrame::Subscribe {
                channel: channel.to_owned(),
                after: Some(0),
            },
        )
        .await;
        let got = eve
            .wait(
                &cluster,
                &format!("the answer to subscribe {channel}"),
                FRAME_WAIT,
                |c| {
                    c.errors
                        .iter()
                        .find(|(_, ch)| ch.as_deref() == Some(channel))
                        .map(|(code, _)| code.clone())
                        .or_else(|| {
                            c.subscribed
                                .iter()
                                .any(|(ch, _, _)| ch == channel)
                                .then(|| "subscribed".to_owned())
                        })
                },
            )
            .await;
        assert_eq!(got, code, "subscribe {channel}");
    }
    assert!(
        eve.events.is_empty(),
        "events of unreadable channels: {:?}",
        eve.events
    );
    eve.ping_pong(&cluster, 2).await;
    // A public channel may be read without joining; a private one by its members.
    eve.subscribe(&cluster, "open", None).await;
    let club_ev = eve.subscribe(&cluster, "club", Some(0)).await;
    assert!(
        club_ev >= 2,
        "club has at least its creation and eve's join"
    );
    eve.events.clear();

    // Nothing was written by the refused sends.
    let mut after = Vec::new();
    for ch in ["secret", dm.as_str(), "open", "old"] {
        after.push(channel_cursor(&cluster, 1, ch).await);
    }
    assert_eq!(before, after, "refused sends changed (last_seq, last_ev)");

    // Posts in the unreadable channels are never streamed to eve; the readable ones are.
    for ch in ["secret", dm.as_str(), "club", "open"] {
        post_ok(
            &cluster,
            &admin,
            ch,
            &format!("admin in {ch}"),
            &format!("admin-{}", ch.replace(':', "-")),
        )
        .await;
    }
    eve.wait(&cluster, "the post in open", FRAME_WAIT, |c| {
        has_seq(c, "open", 1)
    })
    .await;
    let channels: Vec<&str> = eve.events.iter().map(|e| e.channel.as_str()).collect();
    assert_eq!(channels, ["club", "open"], "streamed to eve");

    // Removed from club: `unsubscribed`, and club is no longer streamed.
    admin
        .remove_member("club", "eve")
        .await
        .unwrap_or_else(|e| cluster.fail(&format!("remove eve from club: {e}")));
    eve.wait(&cluster, "unsubscribed from club", FRAME_WAIT, |c| {
        (c.unsubscribed.iter().any(|ch| ch == "club")
            && c.channels_removed.iter().any(|ch| ch == "club"))
        .then_some(())
    })
    .await;
    eve.events.clear();
    post_ok(&cluster, &admin, "club", "after eve left", "admin-club-2").await;
    post_ok(
        &cluster,
        &admin,
        "open",
        "after eve left club",
        "admin-open-2",
    )
    .await;
    eve.wait(&cluster, "the second post in open", FRAME_WAIT, |c| {
        has_seq(c, "open", 2)
    })
    .await;
    let channels: Vec<&str> = eve.events.iter().map(|e| e.channel.as_str()).collect();
    assert_eq!(channels, ["open"], "streamed to eve after leaving club");
    eve.ping_pong(&cluster, 3).await;
    assert!(eve.conn.close_info().is_none(), "the connection was closed");
}
