//! One WebSocket connection (`GET /api/v1/ws`, `docs/protocol.md`): origin check, auth, the
//! subscribe replay/live seam, sends with quorum acks, limits and heartbeats.
//!
//! Owns the per-connection state machine; `commands.rs` adds the frames that touch the
//! cluster's state. Sends go through `ClusterNode::write` in spawned tasks so a slow commit
//! never stalls the connection's other traffic. Must never buffer
//! without bound: everything outbound goes through the hub's bounded queue or is awaited.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use cluster::Command;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};

use super::frames::{
    self, ClientFrame, Hello, Inbound, NodeAddr, PROTOCOL_VERSION, ServerFrame, close, encode,
    read_client_frame,
};
use super::hub::{ConnHandle, Hub, Out};
use crate::auth::{self, Auth};
use crate::error::ApiError;
use crate::security_log::RequestMeta;
use crate::state::AppState;

/// Transport-level cap: anything above our own frame limit but below this gets a clean 1009
/// from us; above it the WebSocket library refuses the frame itself.
const TRANSPORT_MAX_BYTES: usize = 64 * 1024;
/// A client that takes longer than this to accept one frame is a slow consumer.
const WRITE_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a closing connection may take to deliver its close frame and hear the answer.
const CLOSE_GRACE: Duration = Duration::from_secs(3);
/// Most frames written before one flush.
const WRITE_BATCH: usize = 64;

type Sink = SplitSink<WebSocket, Message>;
type Stream = SplitStream<WebSocket>;

#[utoipa::path(
    get,
    path = "/api/v1/ws",
    tag = "websocket",
    responses(
        (status = 101, description = "Switching Protocols: the WebSocket of docs/protocol.md (the bearer token is sent in the first `auth` frame)"),
        (status = 400, description = "`invalid_request`: not a WebSocket upgrade request (missing or wrong `Connection`, `Upgrade`, `Sec-WebSocket-Version` or `Sec-WebSocket-Key`)", body = api::error::ErrorBody),
        (status = 403, description = "`forbidden_origin`: the `Origin` is not one of this workspace's origins", body = api::error::ErrorBody),
        (status = 426, description = "`upgrade_required`: the connection cannot be upgraded (e.g. HTTP/2)", body = api::error::ErrorBody),
        (status = 503, description = "`unavailable`: this node holds its maximum of WebSocket connections; connect to another node", body = api::error::ErrorBody)
    )
)]
pub async fn upgrade(
    State(s): State<AppState>,
    axum::Extension(meta): axum::Extension<RequestMeta>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if crate::origin::check(&s, &headers).is_err() {
        let origin = headers
            .get(axum::http::header::ORIGIN)
            .and_then(|o| o.to_str().ok())
            .unwrap_or("?")
            .to_string();
        tracing::info!(%origin, "websocket upgrade refused: foreign origin");
        return ApiError::ForbiddenOrigin(origin).into_response();
    }
    let Some(slot) = s.hub.open_slot() else {
        tracing::warn!(
            max_per_node = s.hub.limits.max_per_node,
            "websocket upgrade refused: this node holds its maximum"
        );
        return ApiError::Unavailable(
            "this node holds its maximum of WebSocket connections; connect to another node".into(),
        )
        .into_response();
    };
    // Small buffers: most connections are idle most of the time, and the per-connection cost
    // is what bounds how many clients a node holds (the library's defaults are 128 KiB each).
    // The read buffer is allocated (and zero-filled on each read) per connection; client
    // frames are small, and a larger one is read across several fills. 4 KiB instead of 8
    // took an idle connection from 20 to 16 KiB (docs/benchmarks.md, 2,000 clients).
    ws.max_message_size(TRANSPORT_MAX_BYTES)
        .max_frame_size(TRANSPORT_MAX_BYTES)
        .read_buffer_size(4 * 1024)
        .write_buffer_size(8 * 1024)
        .on_upgrade(move |socket| async move {
            let (sink, stream) = socket.split();
            Conn::run(s, meta, sink, stream).await;
            drop(slot);
        })
}

/// Sends a close frame and lets the client answer before the socket is dropped. Dropping a
/// socket with unread client data makes the kernel reset the connection and discard what was
/// not yet sent, close frame included; so what the client still sends is read and discarded
/// until it answers the close or goes away. A client that reads nothing (a slow consumer) is
/// let go after `CLOSE_GRACE`, so it cannot hold the connection's memory.
async fn send_close(sink: &mut Sink, stream: &mut Stream, code: u16, reason: &str) {
    let deadline = tokio::time::Instant::now() + CLOSE_GRACE;
    let frame = Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from(reason.to_string()),
    }));
    let _ = tokio::time::timeout_at(deadline, sink.send(frame)).await;
    let _ = tokio::time::timeout_at(deadline, async {
        while let Some(Ok(msg)) = stream.next().await {
            if matches!(msg, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
    let _ = tokio::time::timeout(Duration::from_millis(200), sink.close()).await;
}

/// Whether a read error is the library refusing an oversized frame.
fn is_too_big(e: &axum::Error) -> bool {
    let text = e.to_string().to_ascii_lowercase();
    text.contains("too long") || text.contains("too big") || text.contains("capacity")
}

/// Token bucket for the per-connection frame rate.
struct Rate {
    tokens: f64,
    last: Instant,
    per_sec: f64,
    burst: f64,
}

impl Rate {
    fn allow(&mut self) -> bool {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * self.per_sec)
            .min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Ends the registration when the connection ends, however it ends.
struct Registration {
    hub: Arc<Hub>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.hub.unregister(self.id);
    }
}

pub(super) struct Conn {
    pub(super) s: AppState,
    pub(super) auth: Auth,
    pub(super) id: u64,
    pub(super) handle: Arc<ConnHandle>,
    sink: Sink,
    /// Highest event delivered per followed channel: the seam filter.
    pub(super) subs: HashMap<String, u64>,
}

/// Why the loop ended: a close code to send, or nothing (the peer is gone).
pub(super) enum End {
    Close(u16, &'static str),
    Gone,
}

impl Conn {
    async fn run(s: AppState, meta: RequestMeta, mut sink: Sink, mut stream: Stream) {
        let hub = s.hub.clone();
        let limits = hub.limits.clone();
        let first = tokio::time::timeout(limits.auth_timeout, stream.next()).await;
        let token = match first {
            Ok(Some(Ok(Message::Text(t)))) => match read_client_frame(&t) {
                Ok(Inbound::Frame(ClientFrame::Auth { token, .. })) => {
                    Some(token.expose().to_owned())
                }
                _ => None,
            },
            Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Ok(Some(Err(_))) => return,
            Ok(Some(Ok(_))) => None,
            Err(_) => {
                let reason = "no auth frame in time";
                send_close(&mut sink, &mut stream, close::UNAUTHENTICATED, reason).await;
                return;
            }
        };
        let Some(token) = token else {
            let reason = "first frame must be auth";
            send_close(&mut sink, &mut stream, close::UNAUTHENTICATED, reason).await;
            return;
        };
        let auth = match auth::authenticate(&s, &token).await {
            Ok(a) => a,
            Err(ApiError::SessionExpired(_)) => {
                send_close(
                    &mut sink,
                    &mut stream,
                    close::SESSION_ENDED,
                    "session expired",
                )
                .await;
                return;
            }
            Err(e) => {
                let reason = match e {
                    ApiError::Unauthorized(_) => "invalid token",
                    _ => "cannot check the token now",
                };
                let code = match e {
                    ApiError::Unauthorized(_) => close::UNAUTHENTICATED,
                    _ => close::GOING_AWAY,
                };
                send_close(&mut sink, &mut stream, code, reason).await;
                return;
            }
        };
        meta.set_user(&auth.user.username);
        if auth.must_change_password {
            let reason = "change your password first";
            send_close(
                &mut sink,
                &mut stream,
                close::PASSWORD_CHANGE_REQUIRED,
                reason,
            )
            .await;
            return;
        }
        let Some((id, handle, rx)) = hub.register(&auth.user.username, &auth.token_hash) else {
            tracing::info!(
                user = %auth.user.username,
                max_per_user = limits.max_per_user,
                "websocket refused: the user holds the most connections allowed on this node"
            );
            let reason = "too many connections for this user on this node";
            send_close(&mut sink, &mut stream, close::TOO_MANY_CONNECTIONS, reason).await;
            return;
        };
        let _registration = Registration {
            hub: hub.clone(),
            id,
        };
        tracing::debug!(user = %auth.user.username, conn = id, "websocket authenticated");
        let mut conn = Conn {
            s,
            auth,
            id,
            handle,
            sink,
            subs: HashMap::new(),
        };
        let end = match conn.hello().await {
            Ok(()) => conn.serve(&mut stream, rx).await,
            Err(end) => end,
        };
        if let End::Close(code, reason) = end {
            if code == close::SLOW_CONSUMER {
                crate::metrics::ws_slow_consumer();
            }
            send_close(&mut conn.sink, &mut stream, code, reason).await;
        }
    }

    /// Writes one frame. Gives up when the hub asks this connection to close (the write may
    /// be stuck behind a client that stopped reading) or when the client has not accepted the
    /// frame within `WRITE_TIMEOUT`.
    pub(super) async fn send(&mut self, frame: Utf8Bytes) -> Result<(), End> {
        self.write_all(vec![frame]).await
    }

    /// Writes frames with one flush at the end, so a burst of events becomes few TCP segments
    /// (with TCP_NODELAY, one flush per frame would send one segment per frame). Gives up when
    /// the hub asks this connection to close (the write may be stuck behind a client that
    /// stopped reading) or when the client has not accepted the frames within `WRITE_TIMEOUT`.
    async fn write_all(&mut self, frames: Vec<Utf8Bytes>) -> Result<(), End> {
        if frames.is_empty() {
            return Ok(());
        }
        let handle = self.handle.clone();
        let sink = &mut self.sink;
        let write = async move {
            for f in frames {
                sink.feed(Message::Text(f)).await?;
            }
            sink.flush().await
        };
        tokio::select! {
            r = write => r.map_err(|_| End::Gone),
            _ = handle.killed().cancelled() => {
                let code = handle.close_code();
                Err(End::Close(code, close_reason(code)))
            }
            _ = tokio::time::sleep(WRITE_TIMEOUT) => {
                Err(End::Close(close::SLOW_CONSUMER, close_reason(close::SLOW_CONSUMER)))
            }
        }
    }

    async fn hello(&mut self) -> Result<(), End> {
        let reader = self.s.node.reader();
        let user = match reader.user_view(&self.auth.user.username) {
            Ok(Some(u)) => u,
            _ => return Err(End::Close(close::UNAUTHENTICATED, "user not found")),
        };
        let health = self.s.node.health_view();
        let https_of = |id: u64| {
            health
                .members
                .iter()
                .find(|m| m.id == id)
                .and_then(|m| m.https_addr())
                .map(str::to_owned)
        };
        let nodes = self
            .s
            .node
            .members()
            .into_iter()
            .map(|(id, info)| NodeAddr {
                id,
                api_addr: info.api_addr,
                https_addr: https_of(id),
            })
            .collect();
        let hello = encode(&ServerFrame::Hello(Hello {
            v: PROTOCOL_VERSION,
            node_id: self.s.node.id(),
            user: crate::wire::user(&user),
            nodes,
            heartbeat_ms: Some(self.s.hub.limits.heartbeat.as_millis() as u64),
        }));
        self.send(hello).await?;
        let snapshot = self.s.hub.presence_snapshot();
        for (u, status) in snapshot {
            let f = encode(&ServerFrame::Presence { user: u, status });
            self.send(f).await?;
        }
        Ok(())
    }

    async fn serve(
        &mut self,
        stream: &mut Stream,
        mut rx: tokio::sync::mpsc::Receiver<Out>,
    ) -> End {
        let limits = self.s.hub.limits.clone();
        let mut rate = Rate {
            tokens: limits.rate_burst,
            last: Instant::now(),
            per_sec: limits.rate_per_sec,
            burst: limits.rate_burst,
        };
        let mut heartbeat = tokio::time::interval(limits.heartbeat);
        heartbeat.tick().await;
        let mut last_heard = Instant::now();
        let killed = self.handle.killed().clone();
        // One timer per connection, set to the session's deadline: when it fires the deadline
        // is read again (a use elsewhere may have moved it) and the connection closes only if
        // it has really passed. No polling in between.
        let session_timer = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(session_timer);
        loop {
            tokio::select! {
                biased;
                _ = killed.cancelled() => {
                    let code = self.handle.close_code();
                    return End::Close(code, close_reason(code));
                }
                _ = &mut session_timer => {
                    match self.session_wait() {
                        Ok(wait) => session_timer.as_mut().reset(tokio::time::Instant::now() + wait),
                        Err(end) => return end,
                    }
                }
                out = rx.recv() => {
                    let Some(out) = out else { return End::Close(close::GOING_AWAY, "shutting down") };
                    if let Err(end) = self.deliver(out, &mut rx).await {
                        return end;
                    }
                }
                msg = stream.next() => {
                    last_heard = Instant::now();
                    let text = match msg {
                        None | Some(Ok(Message::Close(_))) => return End::Gone,
                        Some(Err(e)) => {
                            if is_too_big(&e) {
                                return End::Close(close::TOO_BIG, "frame too large");
                            }
                            return End::Gone;
                        }
                        Some(Ok(Message::Ping(_))) | Some(Ok(Message::Pong(_))) => continue,
                        Some(Ok(Message::Binary(_))) => {
                            return End::Close(close::PROTOCOL, "binary frames are not part of the protocol");
                        }
                        Some(Ok(Message::Text(t))) => t,
                    };
                    if !rate.allow() {
                        return End::Close(close::RATE_LIMITED, "rate limit exceeded");
                    }
                    if text.len() > limits.max_frame_bytes {
                        return End::Close(close::TOO_BIG, "frame too large");
                    }
                    let frame = match read_client_frame(&text) {
                        Ok(f) => f,
                        Err(_) => return End::Close(close::PROTOCOL, "invalid frame"),
                    };
                    if let Err(end) = self.on_frame(frame).await {
                        return end;
                    }
                }
                _ = heartbeat.tick() => {
                    if last_heard.elapsed() > limits.idle_timeout {
                        return End::Close(close::GOING_AWAY, "heartbeat lost");
                    }
                    let ping = tokio::time::timeout(
                        WRITE_TIMEOUT,
                        self.sink.send(Message::Ping(Default::default())),
                    );
                    match ping.await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => return End::Gone,
                        Err(_) => return End::Close(close::SLOW_CONSUMER, close_reason(close::SLOW_CONSUMER)),
                    }
                }
            }
        }
    }

    /// Delivers `first` and whatever else is already queued (up to `WRITE_BATCH` frames) in one
    /// write.
    async fn deliver(
        &mut self,
        first: Out,
        rx: &mut tokio::sync::mpsc::Receiver<Out>,
    ) -> Result<(), End> {
        let mut frames = Vec::new();
        self.collect(first, &mut frames);
        while frames.len() < WRITE_BATCH {
            match rx.try_recv() {
                Ok(out) => self.collect(out, &mut frames),
                Err(_) => break,
            }
        }
        let n = frames.len();
        self.write_all(frames).await?;
        crate::metrics::ws_delivered(n);
        Ok(())
    }

    fn collect(&mut self, out: Out, frames: &mut Vec<Utf8Bytes>) {
        match out {
            Out::Frame(f) => frames.push(f),
            Out::Channel { channel, ev, frame } => {
                let Some(delivered) = self.subs.get_mut(&*channel) else {
                    return;
                };
                if ev <= *delivered {
                    // Already sent by the replay: the seam.
                    return;
                }
                *delivered = ev;
                frames.push(frame);
            }
            Out::Revoked { channel } => {
                if self.subs.remove(&channel).is_some() {
                    self.s.hub.unsubscribe(self.id, &channel);
                    frames.push(encode(&ServerFrame::Unsubscribed {
                        channel: channel.clone(),
                    }));
                }
            }
        }
    }

    pub(super) async fn error_frame(
        &mut self,
        code: &str,
        message: &str,
        channel: Option<&str>,
    ) -> Result<(), End> {
        let f = encode(&ServerFrame::Error {
            code: code.to_owned(),
            message: message.to_owned(),
            channel: channel.map(str::to_owned),
        });
        self.send(f).await
    }

    /// How long until the session's deadline, or the close if it has passed (or the session
    /// is gone: its revocation event closes the connection too, this only covers a race).
    fn session_wait(&self) -> Result<Duration, End> {
        let th = &self.auth.token_hash;
        let (deadline, end) = match auth::session_deadline(&self.s, th) {
            Ok(Some(d)) => d,
            Ok(None) => return Err(End::Close(close::SESSION_ENDED, "session ended")),
            // A storage error is not the session's fault: look again in a while.
            Err(_) => return Ok(Duration::from_secs(5)),
        };
        let now = crate::now_ms();
        if deadline <= now {
            // `session.expired` is logged once, when the state machine purges the session
            // (ws::hub); this is only this connection's end.
            tracing::debug!(
                user = %self.auth.user.username,
                reason = crate::session_use::end_text(end),
                "websocket session expired"
            );
            return Err(End::Close(close::SESSION_ENDED, "session expired"));
        }
        // A little past the deadline, so a wake-up that comes early does not spin.
        Ok(Duration::from_millis(deadline - now + 5))
    }

    async fn on_frame(&mut self, frame: Inbound) -> Result<(), End> {
        let frame = match frame {
            Inbound::Ping(id) => return self.send(frames::pong(&id)).await,
            Inbound::Frame(frame) => frame,
        };
        if !matches!(frame, ClientFrame::Ping { .. }) {
            // A frame from the user (not a keep-alive) is a use of the session: idle timeout.
            self.s
                .sessions
                .record(&self.auth.token_hash, crate::now_ms());
        }
        match frame {
            ClientFrame::Auth { .. } => {
                self.error_frame("invalid_request", "already authenticated", None)
                    .await
            }
            ClientFrame::Subscribe { channel, after } => self.subscribe(channel, after).await,
            ClientFrame::Unsubscribe { channel } => {
                if self.subs.remove(&channel).is_some() {
                    self.s.hub.unsubscribe(self.id, &channel);
                }
                let f = encode(&ServerFrame::Unsubscribed {
                    channel: channel.clone(),
                });
                self.send(f).await
            }
            ClientFrame::Send {
                channel,
                body,
                client_msg_id,
                thread_root,
            } => {
                self.send_message(channel, body, client_msg_id, thread_root)
                    .await
            }
            ClientFrame::Read { channel, seq } => {
                let node = self.s.node.clone();
                let handle = self.handle.clone();
                let username = self.auth.user.username.clone();
                tokio::spawn(async move {
                    let cmd = Command::MarkRead {
                        channel: channel.clone(),
                        username,
                        seq,
                    };
                    if let Err(e) = node.write(cmd).await {
                        let e = ApiError::from(e);
                        let f = encode(&ServerFrame::Error {
                            code: e.status_and_code().1.to_owned(),
                            message: e.to_string(),
                            channel: Some(channel),
                        });
                        handle.push(Out::Frame(f));
                    }
                });
                Ok(())
            }
            ClientFrame::Typing { channel } => {
                if self.subs.contains_key(&channel) {
                    self.s
                        .hub
                        .typing(self.id, &channel, &self.auth.user.username);
                }
                Ok(())
            }
            ClientFrame::Presence { status } => {
                self.s.hub.set_status(self.id, status);
                Ok(())
            }
            ClientFrame::Ping { id } => self.send(frames::pong(&id.into())).await,
        }
    }
}

fn close_reason(code: u16) -> &'static str {
    match code {
        close::FORBIDDEN => "account disabled",
        close::SESSION_ENDED => "session ended: log in again",
        close::SLOW_CONSUMER => "slow consumer: resume from your cursors",
        close::LAGGED => "node lagged: resume from your cursors",
        close::GOING_AWAY => "node shutting down",
        _ => "",
    }
}
