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
use crate::ws::conn::{WsMessage, WsStream, close_frame, close_info, describe, host_port};
use crate::ws::session::{ConnState, ConnectedNode, SessionEvent};
use crate::ws::state::{PendingSend, PendingSends, ReconnectBackoff, Subscriptions, TokenBucket};
use api::rest::User;
use api::ws::{Ack, ClientFrame, Hello, NodeAddr, PresenceStatus};

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
pub(super) struct Candidate {
    pub(super) base: String,
}

/// An authenticated connection.
pub(super) struct Live {
    pub(super) stream: WsStream,
    pub(super) hello: Hello,
    pub(super) base: String,
    pub(super) url: String,
}

pub(super) enum Established {
    Live(Box<Live>),
    AuthLost(CloseInfo),
    Stop,
}

pub(super) enum TryFailure {
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
    pub(super) cfg: Config,
    pub(super) commands: mpsc::UnboundedReceiver<Command>,
    pub(super) events: mpsc::UnboundedSender<SessionEvent>,
    pub(super) shared: Arc<Mutex<Shared>>,
    pub(super) state: Arc<watch::Sender<ConnState>>,
    pub(super) cancel: CancellationToken,
    pub(super) subs: Subscriptions,
    pub(super) pending: PendingSends<Responder>,
    pub(super) presence: Option<PresenceStatus>,
    /// Read markers asked for while disconnected (highest per channel).
    pub(super) unsent_reads: BTreeMap<String, u64>,
    /// Members from the last `hello`.
    pub(super) known_nodes: Vec<NodeAddr>,
    /// Base URL of the node whose connection ended last.
    pub(super) last_node: Option<String>,
    /// Failed rounds and short-lived connections since the last stable connection.
    pub(super) failures: u32,
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

    /// Runs one authenticated connection until it ends.
    // Long on purpose: one select! loop over socket, commands, timers and cancellation.
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

    pub(super) fn handle_command(
        &mut self,
        cmd: Command,
        outbox: Option<&mut VecDeque<ClientFrame>>,
    ) {
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

    pub(super) fn remember_read(&mut self, channel: String, seq: u64) {
        let entry = self.unsent_reads.entry(channel).or_insert(seq);
        *entry = (*entry).max(seq);
    }

    pub(super) fn sync_cursor(&self, channel: &str, ev: u64) {
        lock(&self.shared).cursors.insert(channel.to_owned(), ev);
    }

    pub(super) fn sync_cursors(&self) {
        lock(&self.shared).cursors = self.subs.cursors();
    }

    pub(super) fn forget_pending(&self, client_msg_id: &str) {
        lock(&self.shared).pending.retain(|id| id != client_msg_id);
    }

    pub(super) fn set_last_error(&self, error: String) {
        lock(&self.shared).last_error = Some(error);
    }

    pub(super) fn emit(&self, event: SessionEvent) {
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
