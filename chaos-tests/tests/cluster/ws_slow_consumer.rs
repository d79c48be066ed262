//! The slow-consumer limit (docs/protocol.md, "Limits and close codes"): a connection that
//! stops reading while more than 1,024 frames are generated for it is closed with 4008, other
//! connections on the same node keep up untouched, and the cut-off client resumes from the
//! last event it actually processed and gets everything exactly once. A slow consumer that
//! never reads again must be let go all the same.

use std::net::SocketAddrV4;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chaos_tests::TestCluster;
use chaos_tests::load::post_until_acked;
use ops::{ChannelEvent, CloseInfo, PresenceStatus, WsConn, WsError};

use crate::util::{POST_DEADLINE, create_channel, post_ok};
use crate::ws_util::{
    FRAME_WAIT, WsClient, check_complete, create_user, held_bytes, login, open_located,
    tcp_sockets, wait_channel_ev,
};

const CH: &str = "firehose";
/// The server's per-connection outbound queue.
const QUEUE_FRAMES: u64 = 1024;
/// Message bodies (under the 16 KiB limit): every event frame naming one is this big at least.
const BODY_LEN: usize = 16_000;
/// Events beyond what must overflow the queue.
const MARGIN: u64 = 50;
/// Concurrent writers: a write costs a commit round (an fsync on a majority), and group
/// commit puts every write waiting at the time into the next round, so throughput grows with
/// the number of writers.
const WORKERS: u64 = 64;

fn sysctl_max(path: &str) -> Option<u64> {
    std::fs::read_to_string(path)
        .ok()?
        .split_whitespace()
        .last()?
        .parse()
        .ok()
}

/// The most bytes the kernel may hold on one loopback TCP connection whose reader stopped:
/// the server's send buffer plus the client's receive buffer, each at its ceiling (autotuning
/// or setsockopt). Frames that fit in there never reach the server's queue.
fn kernel_buffer_bound() -> u64 {
    const FALLBACK: u64 = 64 << 20;
    let rmem = sysctl_max("/proc/sys/net/ipv4/tcp_rmem")
        .unwrap_or(FALLBACK)
        .max(sysctl_max("/proc/sys/net/core/rmem_max").unwrap_or(0));
    let wmem = sysctl_max("/proc/sys/net/ipv4/tcp_wmem")
        .unwrap_or(FALLBACK)
        .max(sysctl_max("/proc/sys/net/core/wmem_max").unwrap_or(0));
    rmem + wmem
}

/// Writes events for a slow connection through the nodes `via`, each naming a 16 KB message
/// (one message per writer, then reactions on them): in rounds until the kernel's buffers for
/// the connection `slow` -> `server` stop growing (full), then enough for the server's queue
/// to overflow: 1,024 frames plus what the buffers hold, plus a margin. Without the socket in
/// /proc/net/tcp, enough for both socket buffers at their ceilings. Waits until node `node`
/// applied them all; returns how many events were written and the bytes the buffers held.
async fn overflow(
    cluster: &TestCluster,
    via: &[u64],
    node: u64,
    slow: Option<SocketAddrV4>,
    server: SocketAddrV4,
    stopped_at: u64,
) -> (u64, Option<u64>) {
    let writers: Vec<ops::Client> = (0..WORKERS as usize)
        .map(|w| cluster.client(via[w % via.len()]))
        .collect();
    let posts: Vec<_> = writers
        .iter()
        .cloned()
        .enumerate()
        .map(|(w, client)| {
            tokio::spawn(async move {
                let id = format!("big-{w}");
                let mut body = format!("{id} ");
                body.extend(std::iter::repeat_n('m', BODY_LEN - body.len()));
                let deadline = Instant::now() + POST_DEADLINE;
                post_until_acked(&client, CH, &body, &id, deadline)
                    .await
                    .map(|(out, _)| out.message.seq)
                    .map_err(|(e, n)| format!("post {id} ({n} attempts): {e}"))
            })
        })
        .collect();
    let mut msgs = Vec::new();
    for p in posts {
        msgs.push(
            p.await
                .expect("poster")
                .unwrap_or_else(|e| cluster.fail(&e)),
        );
    }
    let mut on = vec![false; msgs.len()];
    let mut generated = WORKERS;
    let ceiling = QUEUE_FRAMES + kernel_buffer_bound().div_ceil(BODY_LEN as u64) + MARGIN;
    let mut held = None;
    if let Some(client) = slow {
        let (mut most, mut still) = (0u64, 0);
        while still < 2 && generated < ceiling {
            react(cluster, &writers, &msgs, &mut on, 2).await;
            generated += 2 * WORKERS;
            wait_channel_ev(cluster, node, CH, stopped_at + generated).await;
            let Some(now) = held_bytes(client, server) else {
                break;
            };
            still = if now <= most { still + 1 } else { 0 };
            most = most.max(now);
            held = Some(now);
        }
    }
    let needed = match held {
        Some(bytes) => QUEUE_FRAMES + 1 + bytes.div_ceil(BODY_LEN as u64) + MARGIN,
        None => ceiling,
    };
    let per_writer = needed.saturating_sub(generated).div_ceil(WORKERS);
    react(cluster, &writers, &msgs, &mut on, per_writer).await;
    generated += per_writer * WORKERS;
    let (_, last_ev) = wait_channel_ev(cluster, node, CH, stopped_at + generated).await;
    assert_eq!(
        last_ev,
        stopped_at + generated,
        "events the writers did not make"
    );
    (generated, held)
}

/// Toggles the admin's reaction on each writer's message `per_writer` times, all writers at
/// once: one event each.
async fn react(
    cluster: &TestCluster,
    writers: &[ops::Client],
    msgs: &[u64],
    on: &mut [bool],
    per_writer: u64,
) {
    let tasks: Vec<_> = writers
        .iter()
        .zip(msgs)
        .zip(on.iter())
        .map(|((client, seq), on)| {
            let (client, seq, mut on) = (client.clone(), *seq, *on);
            tokio::spawn(async move {
                for k in 0..per_writer {
                    let r = if on {
                        client.remove_reaction(CH, seq, "🔥").await
                    } else {
                        client.add_reaction(CH, seq, "🔥").await
                    };
                    r.map_err(|e| format!("reaction {k} on seq {seq}: {e}"))?;
                    on = !on;
                }
                Ok::<bool, String>(on)
            })
        })
        .collect();
    for (w, t) in tasks.into_iter().enumerate() {
        match t.await.expect("reaction task") {
            Ok(state) => on[w] = state,
            Err(e) => cluster.fail(&e),
        }
    }
}

/// The `ev` of an event frame, read from its head (frames here are 16 KB; decoding them all
/// in a debug build would make this reader the slow one).
fn event_ev(text: &str) -> Option<u64> {
    let head = text.get(..200).unwrap_or(text);
    if !head.starts_with(r#"{"type":"event""#) {
        return None;
    }
    const KEY: &str = r#","ev":"#;
    let rest = &head[head.find(KEY)? + KEY.len()..];
    let end = rest.find(|c: char| !c.is_ascii_digit())?;
    rest[..end].parse().ok()
}

/// Reads everything a healthy client on the same node gets, until `target` (once set) is
/// reached: the events' `ev`s, and how the connection ended if it did.
async fn quick_reader(
    mut conn: WsConn,
    target: Arc<AtomicU64>,
) -> (Vec<u64>, Option<CloseInfo>, usize) {
    let mut evs = Vec::new();
    let mut frames = 0usize;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if evs.last().copied().unwrap_or(0) >= target.load(Ordering::SeqCst) {
            return (evs, None, frames);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match conn.next_text(left.min(Duration::from_secs(1))).await {
            Ok(text) => {
                frames += 1;
                if let Some(ev) = event_ev(&text) {
                    evs.push(ev);
                }
            }
            Err(WsError::Timeout(_)) if !left.is_zero() => {}
            Err(WsError::Closed(info)) => return (evs, Some(info), frames),
            Err(e) => {
                return (
                    evs,
                    Some(CloseInfo {
                        code: None,
                        reason: e.to_string(),
                    }),
                    frames,
                );
            }
        }
    }
}

/// A client on node 3 follows a channel, processes a few live events, then stops reading
/// while far more than 1,024 big event frames are generated for it (16 KB messages, then
/// reactions on them, each event carrying its 16 KB message): enough to fill the kernel's
/// socket buffers at their largest and then the server's queue. It must be closed with 4008
/// (seen once it reads again, after what the buffers held), while a client on the same node
/// that keeps reading gets every event and stays open. Resuming on node 1 from the last
/// event it processed, it gets the rest: every `ev` once, every message seq in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_slow_consumer_is_cut_off_and_resumes() {
    let cluster = TestCluster::start(3).await;
    create_channel(&cluster, CH).await;
    create_user(&cluster, "slow").await;
    create_user(&cluster, "quick").await;
    let slow = login(&cluster, 3, "slow").await;
    let quick = login(&cluster, 3, "quick").await;

    // The slow client: everything from the start, then 3 live messages, processed.
    let (mut s, api3, slow_addr) = open_located(&cluster, 3, &slow).await;
    s.subscribe(&cluster, CH, Some(0)).await;
    let admin1 = cluster.client(1);
    for i in 0..3 {
        let id = format!("warm-{i}");
        post_ok(&cluster, &admin1, CH, &id, &id).await;
    }
    s.wait(&cluster, "3 live messages", Duration::from_secs(10), |c| {
        c.events
            .iter()
            .any(|e| e.message().is_some_and(|m| m.seq == 3))
            .then_some(())
    })
    .await;
    let mut processed: Vec<ChannelEvent> = std::mem::take(&mut s.events);
    let stopped_at = processed.last().expect("events").ev;

    // The quick client on the same node, reading all along.
    let mut q = WsClient::open(&cluster, 3, &quick).await;
    let quick_from = q.subscribe(&cluster, CH, None).await;
    assert_eq!(quick_from, stopped_at);
    let target = Arc::new(AtomicU64::new(u64::MAX));
    let quick_task = tokio::spawn(quick_reader(q.conn, target.clone()));

    // The slow client stops reading; writes through nodes 1 and 2 overflow its queue.
    let started = Instant::now();
    let (generated, held) = overflow(&cluster, &[1, 2], 3, slow_addr, api3, stopped_at).await;
    let final_ev = stopped_at + generated;
    let (final_seq, _) = wait_channel_ev(&cluster, 3, CH, final_ev).await;
    eprintln!(
        "slow socket {slow_addr:?}: kernel buffers full at {held:?} bytes; {generated} events \
         (> {BODY_LEN} bytes each) written in {:?} for a queue of {QUEUE_FRAMES}",
        started.elapsed()
    );

    // The quick client got them all, live, and is still open.
    target.store(final_ev, Ordering::SeqCst);
    let (quick_evs, quick_end, quick_frames) = quick_task.await.expect("quick reader");
    assert!(
        quick_end.is_none(),
        "the client that kept reading was closed: {quick_end:?} after {} events",
        quick_evs.len()
    );
    let want: Vec<u64> = (stopped_at + 1..=final_ev).collect();
    assert!(
        quick_evs == want,
        "the quick client got {} events ({:?}..{:?}) in {quick_frames} frames, expected {}..={final_ev}",
        quick_evs.len(),
        quick_evs.first(),
        quick_evs.last(),
        stopped_at + 1
    );

    // The slow client reads again: what the buffers held, then 4008, or the end of the
    // connection when it started reading after the server's close grace (docs/protocol.md).
    let read_from = Instant::now();
    let closed = loop {
        match s.pump(Duration::from_secs(10)).await {
            Ok(()) => {}
            Err(WsError::Closed(info)) => break info,
            Err(e) => cluster.fail(&format!(
                "the slow client, reading again after {} events: {e}",
                s.events.len()
            )),
        }
    };
    let got = std::mem::take(&mut s.events);
    eprintln!(
        "slow client: {} events buffered, then {closed} (read in {:?})",
        got.len(),
        read_from.elapsed()
    );
    assert!(
        closed.code.is_none() || closed.code == Some(4008),
        "the slow client: {closed}"
    );
    let evs: Vec<u64> = got.iter().map(|e| e.ev).collect();
    let want: Vec<u64> = (stopped_at + 1..=stopped_at + got.len() as u64).collect();
    assert_eq!(evs, want, "what the slow client got before the close");
    assert!(
        (got.len() as u64) < generated,
        "the slow client got all {generated} events: nothing was cut off"
    );
    processed.extend(got);
    let cursor = processed.last().expect("events").ev;
    // Node 3 counted the cut-off and what it delivered (docs/operations.md, "Monitoring").
    let cut = crate::util::metric(&cluster, 3, "conclave_ws_slow_consumer_disconnects_total").await;
    assert!(cut >= 1.0, "slow-consumer disconnects on node 3: {cut}");
    let delivered = crate::util::metric(&cluster, 3, "conclave_ws_delivered_frames_total").await;
    assert!(
        delivered >= generated as f64,
        "frames delivered on node 3: {delivered}, the quick client alone got {generated}"
    );

    // It resumes on node 1 from what it processed.
    let resumed_at = Instant::now();
    let mut r = WsClient::open(&cluster, 1, &slow).await;
    let sub = r.subscribe(&cluster, CH, Some(cursor)).await;
    assert_eq!(sub, final_ev, "nothing was written since");
    assert_eq!(r.events.len() as u64, final_ev - cursor, "the replay");
    eprintln!(
        "resume after ev {cursor} on node 1: {} events replayed in {:?}",
        r.events.len(),
        resumed_at.elapsed()
    );
    processed.append(&mut r.events);
    check_complete(&processed, final_ev, final_seq)
        .unwrap_or_else(|e| cluster.fail(&format!("what the slow client applied: {e}")));
    r.ping_pong(&cluster, 1).await;
}

/// How long after its queue overflowed a slow consumer may still hold its connection.
const LET_GO: Duration = Duration::from_secs(10);

/// A slow consumer whose queue overflowed is let go even if it never reads again (a frozen
/// app, a client that stopped reading on purpose): docs/protocol.md says the overflow closes
/// the connection (4008). Within 10 s of the overflow the server must drop it: the user goes
/// offline for everyone else (it has no other connection). A close frame cannot be delivered
/// through full buffers, so when the client does read again, it finds what the buffers held
/// and then either the 4008 close or the end of the connection. One node is enough.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_slow_consumer_that_never_reads_again_is_let_go() {
    let cluster = TestCluster::start(1).await;
    create_channel(&cluster, CH).await;
    create_user(&cluster, "stuck").await;
    create_user(&cluster, "watcher").await;
    let stuck = login(&cluster, 1, "stuck").await;
    let watcher = login(&cluster, 1, "watcher").await;
    let (mut s, server, slow_addr) = open_located(&cluster, 1, &stuck).await;
    let stopped_at = s.subscribe(&cluster, CH, None).await;
    let mut w = WsClient::open(&cluster, 1, &watcher).await;
    w.wait(&cluster, "stuck online", FRAME_WAIT, |c| {
        c.presence
            .contains(&("stuck".to_owned(), PresenceStatus::Online))
            .then_some(())
    })
    .await;

    let (generated, held) = overflow(&cluster, &[1], 1, slow_addr, server, stopped_at).await;
    let overflowed = Instant::now();
    eprintln!("{generated} events for a slow consumer whose buffers held {held:?} bytes");
    let offline = ("stuck".to_owned(), PresenceStatus::Offline);
    while !w.presence.contains(&offline) {
        let left = LET_GO.saturating_sub(overflowed.elapsed());
        if left.is_zero() {
            let socket = slow_addr.and_then(|a| {
                tcp_sockets()
                    .into_iter()
                    .find(|x| x.local == server && x.remote == a)
            });
            cluster.fail(&format!(
                "{LET_GO:?} after its queue overflowed, the slow consumer is still connected: \
                 no `presence stuck offline` (presence frames seen: {:?}); the server's socket \
                 for it: {socket:?}",
                w.presence
            ));
        }
        match w.pump(left).await {
            Ok(()) | Err(WsError::Timeout(_)) => {}
            Err(e) => cluster.fail(&format!("the watcher: {e}")),
        }
    }
    eprintln!("let go {:?} after the overflow", overflowed.elapsed());
    let end = loop {
        match s.pump(FRAME_WAIT).await {
            Ok(()) => {}
            Err(WsError::Closed(info)) => break info,
            Err(e) => cluster.fail(&format!("the slow client reading again: {e}")),
        }
    };
    eprintln!("the slow client read {} events, then {end}", s.events.len());
    assert!(
        end.code.is_none() || end.code == Some(4008),
        "the slow client: {end}"
    );
}

#[test]
fn event_ev_reads_the_frame_head() {
    let frame = r#"{"type":"event","channel":"firehose","ev":1234,"kind":"message","message":{}}"#;
    assert_eq!(event_ev(frame), Some(1234));
    assert_eq!(event_ev(r#"{"type":"pong","id":1}"#), None);
}
