//! `ops::ChatSession` and `ops::WsConn` against scripted fake nodes: a tiny server on a
//! loopback port that answers `GET /readyz` itself and hands WebSocket upgrades to a script
//! (tokio-tungstenite's server side). Each script plays one node's part of a scenario from
//! docs/protocol.md: failover with resume, replay overlap, re-sent pending messages, nacks,
//! 4001/4003, a foreign Origin.
//!
//! No Conclave server is needed; tests against real clusters live in `chaos-tests`.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// The upgrade callback's error type is tungstenite's, large or not.
#![allow(clippy::result_large_err)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt as _, StreamExt as _};
use ops::{
    ChatSession, ConnState, EventKind, SessionBuilder, SessionEvent, WsConn, WsError, WsMessage,
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

const TEST_DEADLINE: Duration = Duration::from_secs(20);
const STEP: Duration = Duration::from_secs(5);

async fn bounded<F: Future<Output = ()>>(f: F) {
    tokio::time::timeout(TEST_DEADLINE, f)
        .await
        .expect("test exceeded its deadline");
}

/// One side of a fake node's WebSocket.
struct Peer {
    ws: WebSocketStream<TcpStream>,
}

impl Peer {
    /// The next JSON text frame from the client.
    async fn recv(&mut self) -> Value {
        loop {
            let msg = tokio::time::timeout(STEP, self.ws.next())
                .await
                .expect("client frame in time")
                .expect("connection open")
                .expect("read ok");
            if let WsMessage::Text(text) = msg {
                return serde_json::from_str(&text).expect("client sends JSON");
            }
        }
    }

    async fn send(&mut self, v: Value) {
        self.ws
            .send(WsMessage::text(v.to_string()))
            .await
            .expect("write ok");
    }

    async fn close(&mut self, code: u16, reason: &str) {
        let _ = self
            .ws
            .close(Some(CloseFrame {
                code: code.into(),
                reason: reason.into(),
            }))
            .await;
        // Let the client's answering close arrive.
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await;
    }

    /// Reads (and ignores) until the client goes away.
    async fn drain(&mut self) {
        while let Some(Ok(_)) = self.ws.next().await {}
    }
}

/// A fake node: answers `/readyz` with 200 while `ready`, runs `script` for each WebSocket.
struct FakeNode {
    addr: SocketAddr,
    ready: Arc<AtomicBool>,
}

impl FakeNode {
    async fn bind() -> (TcpListener, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        (listener, addr)
    }

    fn serve<F, Fut>(listener: TcpListener, allowed_origin: Option<&str>, script: F) -> FakeNode
    where
        F: Fn(Peer) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let addr = listener.local_addr().unwrap();
        let ready = Arc::new(AtomicBool::new(true));
        let flag = Arc::clone(&ready);
        let script = Arc::new(script);
        let allowed_origin = allowed_origin.map(str::to_owned);
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let flag = Arc::clone(&flag);
                let script = Arc::clone(&script);
                let allowed_origin = allowed_origin.clone();
                tokio::spawn(async move {
                    if is_readyz(&stream).await {
                        answer_readyz(&mut stream, flag.load(Ordering::SeqCst)).await;
                        return;
                    }
                    let check = move |req: &Request, resp: Response| match (
                        req.headers().get("origin"),
                        &allowed_origin,
                    ) {
                        (Some(origin), Some(allowed)) if origin != allowed.as_str() => {
                            let body = r#"{"error":{"code":"forbidden_origin","message":"origin not allowed"}}"#;
                            let mut refusal = ErrorResponse::new(Some(body.to_owned()));
                            *refusal.status_mut() =
                                tokio_tungstenite::tungstenite::http::StatusCode::FORBIDDEN;
                            Err(refusal)
                        }
                        _ => Ok(resp),
                    };
                    if let Ok(ws) = tokio_tungstenite::accept_hdr_async(stream, check).await {
                        script(Peer { ws }).await;
                    }
                });
            }
        });
        FakeNode { addr, ready }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }
}

async fn is_readyz(stream: &TcpStream) -> bool {
    let mut buf = [0u8; 16];
    for _ in 0..100 {
        let n = stream.peek(&mut buf).await.unwrap_or(0);
        if n >= 11 || n == 0 {
            return buf[..n].starts_with(b"GET /readyz");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    false
}

async fn answer_readyz(stream: &mut TcpStream, ready: bool) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await.unwrap_or(0) == 0 {
            return;
        }
        head.push(byte[0]);
    }
    let (status, body) = if ready {
        ("200 OK", r#"{"ready":true,"node_id":1}"#)
    } else {
        (
            "503 Service Unavailable",
            r#"{"ready":false,"reason":"no leader"}"#,
        )
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

fn hello(node_id: u64, nodes: &[(u64, SocketAddr)]) -> Value {
    let nodes: Vec<Value> = nodes
        .iter()
        .map(|(id, addr)| json!({"id": id, "api_addr": addr.to_string()}))
        .collect();
    json!({"type":"hello","v":1,"node_id":node_id,
           "user":{"username":"alice","display_name":"Alice","role":"member"},
           "nodes":nodes,"heartbeat_ms":15000})
}

fn message_event(channel: &str, ev: u64, seq: u64, body: &str) -> Value {
    json!({"type":"event","channel":channel,"ev":ev,"kind":"message","message":{
        "channel":channel,"seq":seq,"author":"bob","body":body,"ts_ms":1_764_450_000_000u64,
        "client_msg_id":format!("b-{seq}"),"thread_root":null,"reply_count":0,
        "edited_at_ms":null,"deleted":false,"pinned":false,"reactions":{},"mentions":[]}})
}

fn record(log: &Arc<Mutex<Vec<Value>>>, v: &Value) {
    log.lock().unwrap().push(v.clone());
}

#[tokio::test]
async fn failover_resumes_from_cursor_and_resends_pending() {
    bounded(async {
        let (listener_a, addr_a) = FakeNode::bind().await;
        let (listener_b, addr_b) = FakeNode::bind().await;
        let nodes = [(1, addr_a), (2, addr_b)];
        let log_a = Arc::new(Mutex::new(Vec::new()));
        let log_b = Arc::new(Mutex::new(Vec::new()));

        let (la, lb) = (Arc::clone(&log_a), Arc::clone(&log_b));
        let ready_a = Arc::new(Mutex::new(None::<Arc<AtomicBool>>));
        let ready_a_script = Arc::clone(&ready_a);
        // Node 1: replays two events, takes the send without answering and shuts down.
        let node_a = FakeNode::serve(listener_a, None, move |mut peer| {
            let log = Arc::clone(&la);
            let ready = ready_a_script.lock().unwrap().clone();
            async move {
                let auth = peer.recv().await;
                record(&log, &auth);
                peer.send(hello(1, &nodes)).await;
                let sub = peer.recv().await;
                record(&log, &sub);
                peer.send(message_event("general", 1, 1, "one")).await;
                peer.send(message_event("general", 2, 2, "two")).await;
                peer.send(json!({"type":"subscribed","channel":"general","ev":2}))
                    .await;
                let send = peer.recv().await;
                record(&log, &send);
                if let Some(ready) = ready {
                    ready.store(false, Ordering::SeqCst);
                }
                peer.close(1001, "node shutting down").await;
            }
        });
        *ready_a.lock().unwrap() = Some(Arc::clone(&node_a.ready));

        // Node 2: replays one event too many (ev 2), then ev 3, and acks the re-sent message.
        let _node_b = FakeNode::serve(listener_b, None, move |mut peer| {
            let log = Arc::clone(&lb);
            async move {
                let auth = peer.recv().await;
                record(&log, &auth);
                peer.send(hello(2, &nodes)).await;
                let sub = peer.recv().await;
                record(&log, &sub);
                peer.send(message_event("general", 2, 2, "two")).await;
                peer.send(message_event("general", 3, 3, "three")).await;
                peer.send(json!({"type":"subscribed","channel":"general","ev":3}))
                    .await;
                let send = peer.recv().await;
                record(&log, &send);
                let id = send["client_msg_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                peer.send(json!({"type":"ack","client_msg_id":id,"channel":"general",
                                 "seq":4,"ts_ms":1}))
                    .await;
                peer.drain().await;
            }
        });

        let mut session = SessionBuilder::new(vec![node_a.url()], "cv1.token")
            .subscribe_after("general", 0)
            .backoff(Duration::from_millis(10), Duration::from_millis(50))
            .connect()
            .await
            .unwrap();
        assert_eq!(session.current_node().unwrap().node_id, 1);
        assert_eq!(
            session.user().map(|u| u.display_name),
            Some("Alice".to_owned())
        );
        let handle = session.send("general", "hello", None);
        let id = handle.client_msg_id().to_owned();

        let mut evs = Vec::new();
        let mut connected = Vec::new();
        let mut disconnected = 0;
        loop {
            let event = session.next_event_timeout(STEP).await.unwrap();
            match event {
                SessionEvent::Connected(node) => connected.push(node.node_id),
                SessionEvent::Disconnected { close, .. } => {
                    assert_eq!(close.and_then(|c| c.code), Some(1001));
                    disconnected += 1;
                }
                SessionEvent::Event(e) => {
                    assert!(matches!(e.kind, EventKind::Message { .. }));
                    evs.push(e.ev);
                }
                SessionEvent::Acked(ack) => {
                    assert_eq!(ack.client_msg_id, id);
                    break;
                }
                _ => {}
            }
        }
        assert_eq!(evs, vec![1, 2, 3], "each ev exactly once, in order");
        assert_eq!(connected, vec![1, 2]);
        assert_eq!(disconnected, 1);
        let ack = handle.await.unwrap();
        assert_eq!(ack.seq, 4);
        assert_eq!(session.cursor("general"), Some(3));
        assert_eq!(session.duplicates_dropped(), 1);
        assert!(session.pending().is_empty());
        assert_eq!(session.current_node().unwrap().node_id, 2);
        assert_eq!(session.nodes().len(), 2);

        let a = log_a.lock().unwrap().clone();
        let b = log_b.lock().unwrap().clone();
        assert_eq!(a[0], json!({"type":"auth","v":1,"token":"cv1.token"}));
        assert_eq!(
            a[1],
            json!({"type":"subscribe","channel":"general","after":0})
        );
        assert_eq!(b[0], a[0], "the same token on every node");
        assert_eq!(
            b[1],
            json!({"type":"subscribe","channel":"general","after":2}),
            "resumed from the cursor"
        );
        assert_eq!(a[2]["client_msg_id"], json!(id));
        assert_eq!(b[2], a[2], "the pending send is re-sent unchanged");
        session.close().await;
    })
    .await;
}

#[tokio::test]
async fn resends_keep_order_and_nacks_resolve_handles() {
    bounded(async {
        let (listener, addr) = FakeNode::bind().await;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        let node = FakeNode::serve(listener, None, move |mut peer| {
            let log = Arc::clone(&log);
            async move {
                let _auth = peer.recv().await;
                peer.send(hello(1, &[(1, addr)])).await;
                let mut unavailable_sent = false;
                loop {
                    let frame = peer.recv().await;
                    record(&log, &frame);
                    let id = frame["client_msg_id"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned();
                    let body = frame["body"].as_str().unwrap_or_default().to_owned();
                    match body.as_str() {
                        "refused" => {
                            peer.send(json!({"type":"nack","client_msg_id":id,
                                             "code":"archived","message":"channel is archived"}))
                                .await;
                        }
                        "flaky" if !unavailable_sent => {
                            unavailable_sent = true;
                            peer.send(json!({"type":"nack","client_msg_id":id,
                                             "code":"unavailable","message":"no leader"}))
                                .await;
                        }
                        "flaky" => {
                            peer.send(json!({"type":"ack","client_msg_id":id,
                                             "channel":"general","seq":9,"ts_ms":1}))
                                .await;
                            // Then the account is disabled.
                            peer.close(4003, "account disabled").await;
                            return;
                        }
                        _ => {}
                    }
                }
            }
        });
        let mut session = SessionBuilder::new(vec![node.url()], "cv1.token")
            .backoff(Duration::from_millis(10), Duration::from_millis(50))
            .connect()
            .await
            .unwrap();
        let refused = session.send("general", "refused", None);
        let flaky = session.send("general", "flaky", None);
        let never = session.send("general", "never answered", None);
        assert_eq!(session.pending().len(), 3);

        let err = refused.wait_timeout(STEP).await.unwrap_err();
        assert_eq!(
            err,
            WsError::Nacked {
                code: "archived".into(),
                message: "channel is archived".into()
            }
        );
        let flaky_id = flaky.client_msg_id().to_owned();
        assert_eq!(flaky.wait_timeout(STEP).await.unwrap().seq, 9);
        // 4003 is terminal: the last send fails with it, and so does everything after.
        let err = never.wait_timeout(STEP).await.unwrap_err();
        assert_eq!(err.close_code(), Some(4003));
        assert!(matches!(err, WsError::AuthLost(_)));
        let info = session
            .wait_for(STEP, |e| match e {
                SessionEvent::AuthLost(info) => Some(info.clone()),
                _ => None,
            })
            .await
            .unwrap();
        assert_eq!(info.reason, "account disabled");
        assert_eq!(session.state(), ConnState::Ended);
        assert!(matches!(
            session.send("general", "late", None).await,
            Err(WsError::SessionEnded)
        ));
        // Skipped events stayed queued, in order.
        let rest = session.drain_events();
        assert!(matches!(rest.first(), Some(SessionEvent::Connected(_))));
        assert!(
            rest.iter()
                .any(|e| matches!(e, SessionEvent::Nacked(n) if n.code == "archived"))
        );

        let frames = seen.lock().unwrap().clone();
        let bodies: Vec<&str> = frames.iter().filter_map(|f| f["body"].as_str()).collect();
        assert_eq!(
            bodies,
            vec!["refused", "flaky", "never answered", "flaky"],
            "the unavailable send is repeated, after the others"
        );
        assert_eq!(frames[3]["client_msg_id"], json!(flaky_id));
    })
    .await;
}

#[tokio::test]
async fn rejected_token_fails_connect_with_auth_lost() {
    bounded(async {
        let (listener, _) = FakeNode::bind().await;
        let node = FakeNode::serve(listener, None, |mut peer| async move {
            let _auth = peer.recv().await;
            peer.close(4001, "invalid token").await;
        });
        let err = SessionBuilder::new(vec![node.url()], "cv1.forged")
            .connect()
            .await
            .unwrap_err();
        assert_eq!(err.close_code(), Some(4001));
        assert!(matches!(err, WsError::AuthLost(_)), "{err:?}");
    })
    .await;
}

#[tokio::test]
async fn unready_and_dead_nodes_are_skipped() {
    bounded(async {
        let (listener, addr) = FakeNode::bind().await;
        let unready = FakeNode::serve(listener, None, |_peer| async {});
        unready.set_ready(false);
        let (listener, _) = FakeNode::bind().await;
        let good = FakeNode::serve(listener, None, move |mut peer| async move {
            let _auth = peer.recv().await;
            peer.send(hello(3, &[(3, addr)])).await;
            peer.drain().await;
        });
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}", l.local_addr().unwrap())
        };
        let session = ChatSession::builder(vec![dead, unready.url(), good.url()], "t")
            .connect()
            .await
            .unwrap();
        assert_eq!(session.current_node().unwrap().node_id, 3);
        session.close().await;

        // Nobody ready: Unreachable at the deadline, naming what was tried.
        let err = ChatSession::builder(vec![unready.url()], "t")
            .connect_deadline(Duration::from_millis(500))
            .connect()
            .await
            .unwrap_err();
        let WsError::Unreachable { tried, last_error } = err else {
            panic!("expected Unreachable, got {err:?}");
        };
        assert_eq!(tried, vec![unready.url()]);
        assert!(last_error.contains("503"), "{last_error}");
    })
    .await;
}

#[tokio::test]
async fn ws_conn_observes_origin_refusal_and_close_codes() {
    bounded(async {
        let (listener, _) = FakeNode::bind().await;
        let node = FakeNode::serve(
            listener,
            Some("http://127.0.0.1:8080"),
            |mut peer| async move {
                // A binary frame is a protocol error: close 4000.
                loop {
                    match peer.ws.next().await {
                        Some(Ok(WsMessage::Binary(_))) => {
                            peer.close(4000, "binary frame").await;
                            return;
                        }
                        Some(Ok(_)) => continue,
                        _ => return,
                    }
                }
            },
        );
        let err = WsConn::connect_with_origin(&node.url(), "http://evil.example")
            .await
            .unwrap_err();
        let WsError::Rejected { status, code, .. } = &err else {
            panic!("expected Rejected, got {err:?}");
        };
        assert_eq!((*status, code.as_str()), (403, "forbidden_origin"));

        let mut conn = WsConn::connect_with_origin(&node.url(), "http://127.0.0.1:8080")
            .await
            .unwrap();
        assert!(conn.url().ends_with("/api/v1/ws"));
        conn.send_binary(vec![1, 2, 3]).await.unwrap();
        let info = conn.expect_close(STEP).await.unwrap();
        assert_eq!(info.code, Some(4000));
        assert_eq!(conn.close_code(), Some(4000));
        assert!(matches!(
            conn.send_text("{}").await,
            Err(WsError::Closed(_))
        ));

        // No Origin at all is accepted; a read with nothing coming times out.
        let mut conn = WsConn::connect(&node.url()).await.unwrap();
        assert!(matches!(
            conn.next_frame(Duration::from_millis(100)).await,
            Err(WsError::Timeout(_))
        ));
        conn.close(1000, "bye").await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn silent_node_is_left_after_the_read_timeout() {
    bounded(async {
        let (listener_a, addr_a) = FakeNode::bind().await;
        let (listener_b, addr_b) = FakeNode::bind().await;
        let nodes = [(1, addr_a), (2, addr_b)];
        // Node 1 says hello and then nothing at all (no pings either), keeping the socket.
        let node_a = FakeNode::serve(listener_a, None, move |mut peer| async move {
            let _auth = peer.recv().await;
            peer.send(hello(1, &nodes)).await;
            tokio::time::sleep(Duration::from_secs(30)).await;
        });
        let _node_b = FakeNode::serve(listener_b, None, move |mut peer| async move {
            let _auth = peer.recv().await;
            peer.send(hello(2, &nodes)).await;
            peer.drain().await;
        });
        let mut session = SessionBuilder::new(vec![node_a.url()], "t")
            .read_timeout(Duration::from_millis(300))
            .backoff(Duration::from_millis(10), Duration::from_millis(50))
            .connect()
            .await
            .unwrap();
        let reason = session
            .wait_for(STEP, |e| match e {
                SessionEvent::Disconnected { reason, close, .. } => {
                    assert_eq!(close, &None);
                    Some(reason.clone())
                }
                _ => None,
            })
            .await
            .unwrap();
        assert!(reason.starts_with("no frame for"), "{reason}");
        let node = session.wait_connected(STEP).await.unwrap();
        assert_eq!(node.node_id, 2, "the silent node is tried last");
        session.close().await;
    })
    .await;
}
