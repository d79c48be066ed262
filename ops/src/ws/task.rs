//! The background task of a [`crate::ChatSession`]: it owns the WebSocket, runs the failover
//! loop of docs/protocol.md (backoff, `/readyz` probe, `auth`, resume from cursors, re-send
//! of pending messages), decodes frames into [`SessionEvent`]s and keeps the shared view the
//! caller's side reads (`Shared`).
//!
//! The rules themselves (cursors, pending queue, backoff, rate limit, node order) live in
//! `ws::state`; this module applies them to a socket. It must never print, never panic on what
//! a server sends, and never put the token anywhere but the `auth` frame.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::{SinkExt as _, StreamExt as _};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::{CloseInfo, WsError};
use crate::servers::{display_server, endpoint, normalize_server};
use crate::ws::conn::{
    WsConnectOptions, WsMessage, WsStream, close_frame, close_info, close_info_from_error,
    describe, host_port, open, ws_url,
};
use crate::ws::session::{ConnState, ConnectedNode, SessionEvent};
use crate::ws::state::{
    Accept, PendingSend, PendingSends, ReconnectBackoff, Subscriptions, TokenBucket, failover_order,
};
use api::rest::User;
use api::ws::{
    Ack, ChannelEvent, ClientFrame, EventKind, Hello, Nack, NodeAddr, PresenceStatus, ServerFrame,
    event_header,
};

/// How long a closing session waits for the server's answering close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// A poisoned lock only means another thread panicked while holding it; the data (plain
/// copies for the caller) is still the best there is.
pub(crate) fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the caller's side can read without asking the task.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub cursors: BTreeMap<String, u64>,
    pub subscribed: Vec<String>,
    pub pending: Vec<String>,
    pub nodes: Vec<NodeAddr>,
    pub user: Option<User>,
    pub duplicates_dropped: u64,
    /// Connections established so far (numbers them for `reconnect`).
    pub connections: u64,
    /// Servers tried without success since the last good connection.
    pub tried: Vec<String>,
    pub last_error: Option<String>,
    pub ended: Option<WsError>,
}

pub(crate) type Responder = oneshot::Sender<Result<Ack, WsError>>;

/// What the caller's side asks the task to do.
pub(crate) enum Command {
    Send(PendingSend<Responder>),
    Subscribe {
        channel: String,
        after: Option<u64>,
    },
    Unsubscribe {
        channel: String,
    },
    Read {
        channel: String,
        seq: u64,
    },
    Presence(PresenceStatus),
    /// Sent only if connected.
    Volatile(ClientFrame),
    /// Drop connection number `connection` (and not a later one: the request may arrive
    /// after the session already moved by itself).
    Reconnect {
        connection: u64,
    },
}

/// How the task connects; fixed for the session's life.
pub(crate) struct Config {
    /// Normalized base URLs given by the caller.
    pub seeds: Vec<String>,
    pub token: String,
    pub http: reqwest::Client,
    /// The root `wss://` servers are checked against.
    pub tls: Option<crate::tls::TrustRoot>,
    /// Some seed is `https://`: the cluster serves TLS, so a member from `hello` is only a
    /// candidate through its `https_addr` (its `api_addr` is then the plain port, which
    /// redirects instead of upgrading).
    pub secure: bool,
    pub read_timeout: Duration,
    pub connect_timeout: Duration,
    pub auth_timeout: Duration,
    pub probe_timeout: Duration,
    pub stable_after: Duration,
    pub rate: Option<(f64, u32)>,
    pub backoff: ReconnectBackoff,
}

/// The task's ends of the channels to the caller's side.
pub(crate) struct Links {
    pub commands: mpsc::UnboundedReceiver<Command>,
    pub events: mpsc::UnboundedSender<SessionEvent>,
    pub shared: Arc<Mutex<Shared>>,
    pub state: Arc<watch::Sender<ConnState>>,
    pub cancel: CancellationToken,
}

/// A node to try: its base URL (`http://host:port`, as `servers` normalizes it).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Candidate {
    base: String,
}

/// An authenticated connection.
struct Live {
    stream: WsStream,
    hello: Hello,
    base: String,
    url: String,
}

enum Established {
    Live(Box<Live>),
    AuthLost(CloseInfo),
    Stop,
}

enum TryFailure {
    AuthLost(CloseInfo),
    Failed(String),
}

enum Outcome {
    Stop,
    AuthLost(CloseInfo),
    Lost {
        node: ConnectedNode,
        close: Option<CloseInfo>,
        reason: String,
        lived: Duration,
    },
}

/// The background task that owns the connection.
pub(crate) struct Task {
    cfg: Config,
    commands: mpsc::UnboundedReceiver<Command>,
    events: mpsc::UnboundedSender<SessionEvent>,
    shared: Arc<Mutex<Shared>>,
    state: Arc<watch::Sender<ConnState>>,
    cancel: CancellationToken,
    subs: Subscriptions,
    pending: PendingSends<Responder>,
    presence: Option<PresenceStatus>,
    /// Read markers asked for while disconnected (highest per channel).
    unsent_reads: BTreeMap<String, u64>,
    /// Members from the last `hello`.
    known_nodes: Vec<NodeAddr>,
    /// Base URL of the node whose connection ended last.
    last_node: Option<String>,
    /// Failed rounds and short-lived connections since the last stable connection.
    failures: u32,
}

impl Task {
    pub(crate) fn new(
        cfg: Config,
        links: Links,
        subs: Subscriptions,
        presence: Option<PresenceStatus>,
    ) -> Task {
        Task {
            cfg,
            commands: links.commands,
            events: links.events,
            shared: links.shared,
            state: links.state,
            cancel: links.cancel,
            subs,
            pending: PendingSends::default(),
            presence,
            unsent_reads: BTreeMap::new(),
            known_nodes: Vec::new(),
            last_node: None,
            failures: 0,
        }
    }

    /// Connects, serves, reconnects, until cancelled or a terminal error.
    pub(crate) async fn run(mut self) {
        let mut after_failure = false;
        let end = loop {
            let live = match self.establish(after_failure).await {
                Established::Live(live) => live,
                Established::Stop => break None,
                Established::AuthLost(info) => break Some(WsError::AuthLost(info)),
            };
            match self.serve(*live).await {
                Outcome::Stop => break None,
                Outcome::AuthLost(info) => break Some(WsError::AuthLost(info)),
                Outcome::Lost {
                    node,
                    close,
                    reason,
                    lived,
                } => {
                    if lived >= self.cfg.stable_after {
                        self.failures = 0;
                    }
                    self.set_last_error(format!("{}: {reason}", node.addr));
                    // Before the event: whoever reads it must not still see the old node.
                    let _ = self.state.send(ConnState::Reconnecting {
                        attempt: self.failures + 1,
                    });
                    self.emit(SessionEvent::Disconnected {
                        node,
                        close,
                        reason,
                    });
                    after_failure = true;
                }
            }
        };
        self.finish(end);
    }

    /// Connects and authenticates somewhere, waiting between rounds.
    async fn establish(&mut self, mut after_failure: bool) -> Established {
        let cancel = self.cancel.clone();
        loop {
            if after_failure {
                let attempt = self.failures;
                self.failures = self.failures.saturating_add(1);
                let delay = self.cfg.backoff.delay(attempt, rand::random::<f64>());
                let _ = self.state.send(ConnState::Reconnecting {
                    attempt: attempt + 1,
                });
                let last_error = lock(&self.shared).last_error.clone().unwrap_or_default();
                self.emit(SessionEvent::Reconnecting {
                    attempt: attempt + 1,
                    delay,
                    last_error,
                });
                if !self.wait_offline(delay).await {
                    return Established::Stop;
                }
            }
            after_failure = true;
            for candidate in self.candidates() {
                let result = tokio::select! {
                    () = cancel.cancelled() => return Established::Stop,
                    result = self.try_node(&candidate) => result,
                };
                match result {
                    Ok(live) => return Established::Live(Box::new(live)),
                    Err(TryFailure::AuthLost(info)) => return Established::AuthLost(info),
                    Err(TryFailure::Failed(error)) => {
                        let mut shared = lock(&self.shared);
                        if !shared.tried.contains(&candidate.base) {
                            shared.tried.push(candidate.base.clone());
                        }
                        shared.last_error = Some(format!("{}: {error}", candidate.base));
                    }
                }
            }
        }
    }

    /// Sleeps `delay` while still taking commands (sends made while disconnected are queued
    /// in order). False if the session is to stop.
    async fn wait_offline(&mut self, delay: Duration) -> bool {
        let until = Instant::now() + delay;
        loop {
            tokio::select! {
                () = self.cancel.cancelled() => return false,
                () = tokio::time::sleep_until(until) => return true,
                cmd = self.commands.recv() => match cmd {
                    None => return false,
                    Some(cmd) => self.handle_command(cmd, None),
                },
            }
        }
    }

    /// The nodes to try, in order: the members from `hello` (by id) and the configured
    /// servers, the one that failed last at the end.
    fn candidates(&self) -> Vec<Candidate> {
        let mut nodes = self.known_nodes.clone();
        nodes.sort_by_key(|n| n.id);
        let mut list: Vec<Candidate> = Vec::new();
        let secure = self.cfg.secure;
        let bases = nodes
            .iter()
            .filter_map(|n| match (&n.https_addr, secure) {
                (Some(https), _) => Some(format!("https://{https}")),
                (None, false) => Some(n.api_addr.clone()),
                (None, true) => None,
            })
            .filter_map(|addr| normalize_server(&addr).ok())
            .map(|u| display_server(&u))
            .chain(self.cfg.seeds.iter().cloned());
        for base in bases {
            if !list.iter().any(|c| c.base == base) {
                list.push(Candidate { base });
            }
        }
        let failed = self
            .last_node
            .as_ref()
            .and_then(|last| list.iter().position(|c| &c.base == last));
        failover_order(&list, failed)
    }

    /// Probe, upgrade, `auth`, `hello` on one node.
    async fn try_node(&self, candidate: &Candidate) -> Result<Live, TryFailure> {
        let base =
            normalize_server(&candidate.base).map_err(|e| TryFailure::Failed(e.to_string()))?;
        let readyz = endpoint(&base, &["readyz"]);
        match self
            .cfg
            .http
            .get(readyz)
            .timeout(self.cfg.probe_timeout)
            .send()
            .await
        {
            Ok(r) if r.status().as_u16() == 200 => {}
            Ok(r) => {
                return Err(TryFailure::Failed(format!(
                    "not ready (GET /readyz: HTTP {})",
                    r.status().as_u16()
                )));
            }
            Err(e) => {
                if let Some(reason) = crate::tls::certificate_problem(&e) {
                    return Err(TryFailure::Failed(format!(
                        "certificate not trusted: {reason}"
                    )));
                }
                let mut root: &dyn std::error::Error = &e;
                while let Some(source) = root.source() {
                    root = source;
                }
                return Err(TryFailure::Failed(format!("GET /readyz failed: {root}")));
            }
        }

        let url = ws_url(&candidate.base).map_err(|e| TryFailure::Failed(e.to_string()))?;
        let opts = WsConnectOptions {
            connect_timeout: self.cfg.connect_timeout,
            tls: self.cfg.tls.clone(),
            ..WsConnectOptions::default()
        };
        let mut stream = open(&url, &opts)
            .await
            .map_err(|e| TryFailure::Failed(e.to_string()))?;
        let auth = ClientFrame::auth(self.cfg.token.as_str()).to_json();
        stream
            .send(WsMessage::text(auth))
            .await
            .map_err(|e| TryFailure::Failed(format!("sending auth: {}", describe(&e))))?;

        let deadline = Instant::now() + self.cfg.auth_timeout;
        loop {
            let next = match tokio::time::timeout_at(deadline, stream.next()).await {
                Err(_) => {
                    return Err(TryFailure::Failed(format!(
                        "no hello within {} ms",
                        self.cfg.auth_timeout.as_millis()
                    )));
                }
                Ok(next) => next,
            };
            let info = match next {
                Some(Ok(WsMessage::Text(text))) => match ServerFrame::decode(&text) {
                    Ok(ServerFrame::Hello(hello)) => {
                        return Ok(Live {
                            stream,
                            hello,
                            base: candidate.base.clone(),
                            url,
                        });
                    }
                    _ => {
                        return Err(TryFailure::Failed(format!(
                            "expected hello, got: {}",
                            text.chars().take(200).collect::<String>()
                        )));
                    }
                },
                Some(Ok(WsMessage::Close(frame))) => close_info(frame.as_ref()),
                Some(Ok(_)) => continue,
                Some(Err(e)) => close_info_from_error(&e),
                None => CloseInfo {
                    code: None,
                    reason: "connection ended before hello".to_owned(),
                },
            };
            return Err(if info.is_auth_loss() {
                TryFailure::AuthLost(info)
            } else {
                TryFailure::Failed(info.to_string())
            });
        }
    }

    /// Runs one authenticated connection until it ends.
    async fn serve(&mut self, live: Live) -> Outcome {
        let Live {
            mut stream,
            hello,
            base,
            url,
        } = live;
        let started = Instant::now();
        let connection;
        let node = ConnectedNode {
            node_id: hello.node_id,
            addr: host_port(&base),
            url,
        };
        if !hello.nodes.is_empty() {
            self.known_nodes = hello.nodes.clone();
        }
        {
            let mut shared = lock(&self.shared);
            shared.nodes = self.known_nodes.clone();
            shared.user = Some(hello.user.clone());
            shared.tried.clear();
            shared.connections += 1;
            connection = shared.connections;
            shared.subscribed.clear();
        }
        let _ = self.state.send(ConnState::Connected(node.clone()));
        self.emit(SessionEvent::Connected(node.clone()));

        // docs/protocol.md, failover steps 3 to 5: (auth done) subscribe from the cursors,
        // then re-send every unacknowledged message in the original order.
        let mut outbox: VecDeque<ClientFrame> = VecDeque::new();
        if let Some(status) = self.presence {
            outbox.push_back(ClientFrame::Presence { status });
        }
        outbox.extend(self.subs.resume_frames());
        outbox.extend(self.pending.resend_all());
        for (channel, seq) in std::mem::take(&mut self.unsent_reads) {
            outbox.push_back(ClientFrame::Read { channel, seq });
        }

        let mut bucket = self.cfg.rate.map(|(per_sec, burst)| {
            let mut b = TokenBucket::new(per_sec, burst, started.into_std());
            // The auth frame counted against the server's budget too.
            let _ = b.try_take(started.into_std());
            b
        });
        let cancel = self.cancel.clone();
        let mut last_rx = Instant::now();

        let lost = |close: Option<CloseInfo>, reason: String| Outcome::Lost {
            node: node.clone(),
            close,
            reason,
            lived: started.elapsed(),
        };
        let outcome = loop {
            let now = Instant::now();
            let send_at = (!outbox.is_empty()).then(|| match bucket.as_mut() {
                Some(b) => Instant::from_std(b.ready_at(now.into_std())),
                None => now,
            });
            let retry_at = self.pending.next_retry().map(Instant::from_std);
            let read_deadline = last_rx + self.cfg.read_timeout;
            tokio::select! {
                () = cancel.cancelled() => {
                    close_quietly(&mut stream, 1000, "client closed").await;
                    break Outcome::Stop;
                }
                cmd = self.commands.recv() => match cmd {
                    None => {
                        close_quietly(&mut stream, 1000, "client closed").await;
                        break Outcome::Stop;
                    }
                    Some(Command::Reconnect { connection: n }) => {
                        if n == connection {
                            close_quietly(&mut stream, 1000, "reconnecting").await;
                            break lost(None, "reconnect requested".to_owned());
                        }
                    }
                    Some(cmd) => self.handle_command(cmd, Some(&mut outbox)),
                },
                msg = stream.next() => {
                    last_rx = Instant::now();
                    match msg {
                        Some(Ok(WsMessage::Text(text))) => self.handle_text(&text),
                        Some(Ok(WsMessage::Close(frame))) => {
                            let info = close_info(frame.as_ref());
                            if info.is_auth_loss() {
                                break Outcome::AuthLost(info);
                            }
                            let reason = info.to_string();
                            break lost(Some(info), reason);
                        }
                        // Pings are answered by tungstenite; binary frames are not part of
                        // the protocol and carry nothing for us.
                        Some(Ok(_)) => {}
                        Some(Err(e)) => break lost(None, describe(&e)),
                        None => break lost(None, "connection ended".to_owned()),
                    }
                }
                () = tokio::time::sleep_until(read_deadline) => {
                    break lost(None, format!(
                        "no frame for {} s",
                        self.cfg.read_timeout.as_secs_f64()
                    ));
                }
                () = tokio::time::sleep_until(send_at.unwrap_or(now)), if send_at.is_some() => {
                    let now = Instant::now();
                    if bucket.as_mut().is_none_or(|b| b.try_take(now.into_std()))
                        && let Some(frame) = outbox.pop_front()
                        && let Err(e) = stream.send(WsMessage::text(frame.to_json())).await
                    {
                        // Not sent: a read marker is kept for the next connection.
                        outbox.push_front(frame);
                        break lost(None, format!("send failed: {}", describe(&e)));
                    }
                }
                () = tokio::time::sleep_until(retry_at.unwrap_or(now)), if retry_at.is_some() => {
                    outbox.extend(self.pending.take_due(Instant::now().into_std()));
                }
            }
        };

        // Sends are in `pending` and subscriptions in `subs`; only read markers in the outbox
        // would be lost with it.
        for frame in outbox {
            if let ClientFrame::Read { channel, seq } = frame {
                self.remember_read(channel, seq);
            }
        }
        self.subs.connection_lost();
        lock(&self.shared).subscribed.clear();
        self.last_node = Some(base);
        outcome
    }

    fn handle_command(&mut self, cmd: Command, outbox: Option<&mut VecDeque<ClientFrame>>) {
        match cmd {
            Command::Send(send) => {
                let frame = send.frame();
                self.pending.push(send);
                if let Some(outbox) = outbox {
                    outbox.push_back(frame);
                }
            }
            Command::Subscribe { channel, after } => {
                let already = self.subs.is_wanted(&channel);
                self.subs.want(&channel, after);
                self.sync_cursors();
                lock(&self.shared).subscribed.retain(|c| c != &channel);
                if let Some(outbox) = outbox {
                    if already && after.is_some() {
                        outbox.push_back(ClientFrame::Unsubscribe {
                            channel: channel.clone(),
                        });
                    }
                    let after = self.subs.cursor(&channel);
                    outbox.push_back(ClientFrame::Subscribe { channel, after });
                }
            }
            Command::Unsubscribe { channel } => {
                self.subs.unwant(&channel);
                lock(&self.shared).subscribed.retain(|c| c != &channel);
                if let Some(outbox) = outbox {
                    outbox.push_back(ClientFrame::Unsubscribe { channel });
                }
            }
            Command::Read { channel, seq } => match outbox {
                Some(outbox) => outbox.push_back(ClientFrame::Read { channel, seq }),
                None => self.remember_read(channel, seq),
            },
            Command::Presence(status) => {
                self.presence = Some(status);
                if let Some(outbox) = outbox {
                    outbox.push_back(ClientFrame::Presence { status });
                }
            }
            Command::Volatile(frame) => {
                if let Some(outbox) = outbox {
                    outbox.push_back(frame);
                }
            }
            // Not connected: there is nothing to drop.
            Command::Reconnect { .. } => {}
        }
    }

    fn remember_read(&mut self, channel: String, seq: u64) {
        let entry = self.unsent_reads.entry(channel).or_insert(seq);
        *entry = (*entry).max(seq);
    }

    fn handle_text(&mut self, text: &str) {
        let frame = match ServerFrame::decode(text) {
            Ok(frame) => frame,
            Err(e) => {
                self.emit(SessionEvent::Malformed {
                    text: text.to_owned(),
                    error: e.to_string(),
                });
                // Keep the cursor moving, or every resume would replay this frame again.
                if let Some((channel, ev)) = event_header(text) {
                    self.apply_event(ChannelEvent {
                        channel,
                        ev,
                        kind: EventKind::Unknown,
                    });
                }
                return;
            }
        };
        match frame {
            ServerFrame::Hello(hello) => {
                // Only expected once per connection; a later one can only refresh the list.
                if !hello.nodes.is_empty() {
                    self.known_nodes = hello.nodes.clone();
                    lock(&self.shared).nodes = hello.nodes;
                }
            }
            ServerFrame::Subscribed { channel, ev } => {
                self.subs.subscribed(&channel, ev);
                self.sync_cursors();
                {
                    let mut shared = lock(&self.shared);
                    if !shared.subscribed.contains(&channel) {
                        shared.subscribed.push(channel.clone());
                    }
                }
                self.emit(SessionEvent::Subscribed { channel, ev });
            }
            ServerFrame::Unsubscribed { channel } => {
                self.subs.unwant(&channel);
                lock(&self.shared).subscribed.retain(|c| c != &channel);
                self.emit(SessionEvent::Unsubscribed { channel });
            }
            ServerFrame::Event(event) => self.apply_event(event),
            ServerFrame::Ack(ack) => {
                if let Some(send) = self.pending.remove(&ack.client_msg_id) {
                    self.forget_pending(&ack.client_msg_id);
                    let _ = send.responder.send(Ok(ack.clone()));
                    self.emit(SessionEvent::Acked(ack));
                }
            }
            ServerFrame::Nack(nack) => self.handle_nack(nack),
            ServerFrame::Typing { channel, user } => {
                self.emit(SessionEvent::Typing { channel, user });
            }
            ServerFrame::Presence { user, status } => {
                self.emit(SessionEvent::Presence { user, status });
            }
            ServerFrame::ReadMarker(marker) => self.emit(SessionEvent::ReadMarker(marker)),
            ServerFrame::ChannelAdded { channel } => {
                self.emit(SessionEvent::ChannelAdded(channel));
            }
            ServerFrame::ChannelRemoved { channel } => {
                self.emit(SessionEvent::ChannelRemoved { channel });
            }
            ServerFrame::Mention { channel, seq, by } => {
                self.emit(SessionEvent::Mention { channel, seq, by });
            }
            ServerFrame::UserUpdated { user } => self.emit(SessionEvent::UserUpdated(user)),
            ServerFrame::Error {
                code,
                message,
                channel,
            } => {
                // A refused subscription is not retried on every reconnect. Only one that is
                // still awaiting `subscribed`: the same codes for e.g. a `read` frame must not
                // cancel a working subscription.
                if let Some(ch) = &channel
                    && matches!(code.as_str(), "forbidden" | "channel_not_found")
                    && self.subs.is_awaiting_confirmation(ch)
                {
                    self.subs.unwant(ch);
                }
                self.emit(SessionEvent::ServerError {
                    code,
                    message,
                    channel,
                });
            }
            ServerFrame::Pong { id } => self.emit(SessionEvent::Pong { id }),
            ServerFrame::Unknown => self.emit(SessionEvent::UnknownFrame {
                text: text.to_owned(),
            }),
        }
    }

    fn handle_nack(&mut self, nack: Nack) {
        if nack.code == "unavailable" {
            // The outcome is unknown: the protocol says re-send with the same id.
            let backoff = self.cfg.backoff;
            self.pending
                .retry_later(&nack.client_msg_id, Instant::now().into_std(), |n| {
                    backoff.delay(n, rand::random::<f64>())
                });
            return;
        }
        if let Some(send) = self.pending.remove(&nack.client_msg_id) {
            self.forget_pending(&nack.client_msg_id);
            let _ = send.responder.send(Err(WsError::Nacked {
                code: nack.code.clone(),
                message: nack.message.clone(),
            }));
            self.emit(SessionEvent::Nacked(nack));
        }
    }

    fn apply_event(&mut self, event: ChannelEvent) {
        match self.subs.accept(&event.channel, event.ev) {
            Accept::Duplicate => {
                lock(&self.shared).duplicates_dropped += 1;
            }
            Accept::Gap { expected } => {
                self.sync_cursor(&event.channel, event.ev);
                self.emit(SessionEvent::Gap {
                    channel: event.channel.clone(),
                    expected,
                    got: event.ev,
                });
                self.emit(SessionEvent::Event(event));
            }
            Accept::New => {
                self.sync_cursor(&event.channel, event.ev);
                self.emit(SessionEvent::Event(event));
            }
        }
    }

    fn sync_cursor(&self, channel: &str, ev: u64) {
        lock(&self.shared).cursors.insert(channel.to_owned(), ev);
    }

    fn sync_cursors(&self) {
        lock(&self.shared).cursors = self.subs.cursors();
    }

    fn forget_pending(&self, client_msg_id: &str) {
        lock(&self.shared).pending.retain(|id| id != client_msg_id);
    }

    fn set_last_error(&self, error: String) {
        lock(&self.shared).last_error = Some(error);
    }

    fn emit(&self, event: SessionEvent) {
        // The receiver is gone only when the session was dropped; the task is being
        // cancelled then.
        let _ = self.events.send(event);
    }

    /// The session is over: answer every pending send and say why.
    fn finish(mut self, end: Option<WsError>) {
        let error = end.clone().unwrap_or(WsError::SessionEnded);
        for send in self.pending.drain() {
            let _ = send.responder.send(Err(error.clone()));
        }
        // Commands that arrived too late: their sends are answered the same way.
        self.commands.close();
        while let Ok(cmd) = self.commands.try_recv() {
            if let Command::Send(send) = cmd {
                let _ = send.responder.send(Err(error.clone()));
            }
        }
        {
            let mut shared = lock(&self.shared);
            shared.pending.clear();
            shared.subscribed.clear();
            shared.ended = end.clone();
        }
        if let Some(WsError::AuthLost(info)) = end {
            self.emit(SessionEvent::AuthLost(info));
        }
        let _ = self.state.send(ConnState::Ended);
    }
}

/// Sends a close frame and waits briefly for the server's answer; errors do not matter any
/// more at this point.
async fn close_quietly(stream: &mut WsStream, code: u16, reason: &str) {
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        if stream.close(Some(close_frame(code, reason))).await.is_ok() {
            while let Some(Ok(_)) = stream.next().await {}
        }
    })
    .await;
}
