//! [`ChatSession`]: a WebSocket session to a cluster that survives node failures. A
//! background task owns the connection; the caller gets typed [`SessionEvent`]s, each channel
//! event exactly once, and [`SendHandle`]s that resolve on `ack`.
//!
//! The failover rules are those of docs/protocol.md ("Failover"):
//! * On any close or error except 4001/4003, wait a jittered backoff (100 ms doubling to 5 s,
//!   ±50%; the count restarts after a connection that lived long enough), then try the nodes
//!   from the last `hello` (and the configured servers), the failed node last. A node is
//!   used only if `GET /readyz` answers 200.
//! * Send `auth`, then `subscribe` every wanted channel with `after` = its cursor (the last
//!   `ev` handed to the caller), then re-send every unacknowledged message with its original
//!   `client_msg_id` in the original order.
//! * Events at or below a channel's cursor are dropped, so a replay overlap or a lagging node
//!   never shows the caller an `ev` twice.
//! * 4001/4003 end the session: [`SessionEvent::AuthLost`], and every pending send resolves
//!   with [`WsError::AuthLost`].
//! * `nack` with `unavailable` is re-sent (same id) after a backoff; any other `nack`
//!   resolves the send's handle with [`WsError::Nacked`].
//! * No frame at all for the read timeout (45 s; the server pings every 15 s) counts as a
//!   dead connection.
//! * Outgoing frames go through a token bucket below the server's rate limit, so a long queue
//!   of re-sends cannot get the connection closed with 4029 over and over.
//!
//! This module is the caller's side: the handle ([`ChatSession`]) and what it reports
//! ([`SessionEvent`], [`SendHandle`]); `ws::builder` configures and starts it, `ws::task` runs
//! the connection. It must never print, never block on the network in a
//! non-async method, and never put the token anywhere but the `auth` frame.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::builder::SessionBuilder;
use crate::error::{CloseInfo, WsError};
use crate::ws::state::PendingSend;
use crate::ws::task::{Command, Shared, lock};
use api::rest::{Channel, Message, User};
use api::ws::{
    Ack, ChannelEvent, ClientFrame, EventKind, Nack, NodeAddr, PresenceStatus, ReadMarkerUpdate,
};

/// The node a session is connected to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectedNode {
    /// From `hello`.
    pub node_id: u64,
    /// `host:port` of the node's API.
    pub addr: String,
    /// The `ws://` URL the session connected to.
    pub url: String,
}

/// Where a session stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnState {
    /// Before the first connection.
    Connecting,
    Connected(ConnectedNode),
    /// Between connections; `attempt` counts the rounds since the last good connection.
    Reconnecting {
        attempt: u32,
    },
    /// Closed by the caller, or after a terminal error (see [`ChatSession::end_error`]).
    Ended,
}

/// What a session reports to its caller, in the order it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// Authenticated on a node (the first time and after every reconnect).
    Connected(ConnectedNode),
    /// The connection to `node` ended; a reconnect follows.
    Disconnected {
        node: ConnectedNode,
        close: Option<CloseInfo>,
        reason: String,
    },
    /// A reconnect round starts after `delay`; `last_error` says why the last try failed.
    Reconnecting {
        attempt: u32,
        delay: Duration,
        last_error: String,
    },
    /// Terminal: the server closed with 4001 or 4003. Log in again.
    AuthLost(CloseInfo),
    /// The replay of `channel` is complete up to `ev`; live events follow.
    Subscribed {
        channel: String,
        ev: u64,
    },
    /// The server stopped streaming `channel` (access lost); it is not re-subscribed.
    Unsubscribed {
        channel: String,
    },
    /// A channel event never delivered before.
    Event(ChannelEvent),
    /// Events `expected..got` of `channel` never arrived (the protocol promises this does not
    /// happen). The event `got` follows as an `Event`.
    Gap {
        channel: String,
        expected: u64,
        got: u64,
    },
    /// A send was acknowledged (its [`SendHandle`] resolves too).
    Acked(Ack),
    /// A send was refused for good (its [`SendHandle`] resolves too).
    Nacked(Nack),
    Typing {
        channel: String,
        user: String,
    },
    Presence {
        user: String,
        status: PresenceStatus,
    },
    ReadMarker(ReadMarkerUpdate),
    Mention {
        channel: String,
        seq: u64,
        by: String,
    },
    ChannelAdded(Channel),
    ChannelRemoved {
        channel: String,
    },
    UserUpdated(User),
    /// The server's `error` frame (a problem with one frame; the connection stays).
    ServerError {
        code: String,
        message: String,
        channel: Option<String>,
    },
    Pong {
        id: u64,
    },
    /// A text frame that does not decode. (An `event` frame's cursor still advances.)
    Malformed {
        text: String,
        error: String,
    },
    /// A frame type this client does not know (a newer server).
    UnknownFrame {
        text: String,
    },
}

impl SessionEvent {
    /// The new message of a `message` event in `channel`.
    pub fn new_message_in(&self, channel: &str) -> Option<&Message> {
        match self {
            SessionEvent::Event(ChannelEvent {
                channel: ch,
                kind: EventKind::Message { message },
                ..
            }) if ch == channel => Some(message),
            _ => None,
        }
    }
}

/// The outcome of one send: resolves with the `ack`, or with [`WsError::Nacked`],
/// [`WsError::AuthLost`] or [`WsError::SessionEnded`]. Await it (it is a `Future`) or call
/// [`SendHandle::wait_timeout`]; dropping it does not cancel the send.
#[derive(Debug)]
pub struct SendHandle {
    client_msg_id: String,
    rx: oneshot::Receiver<Result<Ack, WsError>>,
}

impl SendHandle {
    /// The idempotency key the message is sent (and re-sent) with.
    pub fn client_msg_id(&self) -> &str {
        &self.client_msg_id
    }

    /// Waits for the outcome at most `timeout` ([`WsError::Timeout`] then; the message stays
    /// pending in the session).
    pub async fn wait_timeout(self, timeout: Duration) -> Result<Ack, WsError> {
        tokio::time::timeout(timeout, self)
            .await
            .unwrap_or(Err(WsError::Timeout(timeout)))
    }
}

impl Future for SendHandle {
    type Output = Result<Ack, WsError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // A dropped responder means the session task ended without answering.
        Pin::new(&mut self.rx)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(WsError::SessionEnded)))
    }
}

/// A WebSocket chat session with failover and resume (see the module documentation).
///
/// Dropping it stops the background task (without waiting); [`ChatSession::close`] stops it
/// and waits. Events queue without bound until read: read them, or the memory grows.
pub struct ChatSession {
    pub(super) commands: mpsc::UnboundedSender<Command>,
    pub(super) events: mpsc::UnboundedReceiver<SessionEvent>,
    /// Events read by a `wait_*` call that did not match it, still to be handed out.
    pub(super) backlog: VecDeque<SessionEvent>,
    pub(super) shared: Arc<Mutex<Shared>>,
    /// Shared with the task, so that [`ChatSession::reconnect`] is visible at once.
    pub(super) state_tx: Arc<watch::Sender<ConnState>>,
    pub(super) state_rx: watch::Receiver<ConnState>,
    pub(super) cancel: CancellationToken,
    pub(super) task: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for ChatSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatSession")
            .field("state", &self.state())
            .field("cursors", &self.cursors())
            .field("pending", &self.pending())
            .finish_non_exhaustive()
    }
}

impl Drop for ChatSession {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl ChatSession {
    /// Shorthand for [`SessionBuilder::new`].
    pub fn builder(servers: Vec<String>, token: impl Into<String>) -> SessionBuilder {
        SessionBuilder::new(servers, token)
    }

    // ---- events ----

    /// The next event; `None` once the session has ended and every event was read.
    pub async fn next_event(&mut self) -> Option<SessionEvent> {
        if let Some(event) = self.backlog.pop_front() {
            return Some(event);
        }
        self.events.recv().await
    }

    /// The next event within `timeout`: [`WsError::Timeout`] if none came, the session's
    /// terminal error (or [`WsError::SessionEnded`]) once it has ended.
    pub async fn next_event_timeout(&mut self, timeout: Duration) -> Result<SessionEvent, WsError> {
        match tokio::time::timeout(timeout, self.next_event()).await {
            Ok(Some(event)) => Ok(event),
            Ok(None) => Err(self.end_error().unwrap_or(WsError::SessionEnded)),
            Err(_) => Err(WsError::Timeout(timeout)),
        }
    }

    /// An event if one is ready now.
    pub fn try_next_event(&mut self) -> Option<SessionEvent> {
        self.backlog
            .pop_front()
            .or_else(|| self.events.try_recv().ok())
    }

    /// Every event ready now (for tests that want to start from a clean slate).
    pub fn drain_events(&mut self) -> Vec<SessionEvent> {
        let mut out: Vec<SessionEvent> = self.backlog.drain(..).collect();
        while let Ok(event) = self.events.try_recv() {
            out.push(event);
        }
        out
    }

    /// Waits up to `timeout` for the first event for which `f` returns `Some`, and returns
    /// that. Events that do not match stay queued, in order, for the next call.
    pub async fn wait_for<T>(
        &mut self,
        timeout: Duration,
        mut f: impl FnMut(&SessionEvent) -> Option<T>,
    ) -> Result<T, WsError> {
        for i in 0..self.backlog.len() {
            if let Some(found) = f(&self.backlog[i]) {
                self.backlog.remove(i);
                return Ok(found);
            }
        }
        let deadline = Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Err(_) => return Err(WsError::Timeout(timeout)),
                Ok(None) => return Err(self.end_error().unwrap_or(WsError::SessionEnded)),
                Ok(Some(event)) => {
                    if let Some(found) = f(&event) {
                        return Ok(found);
                    }
                    self.backlog.push_back(event);
                }
            }
        }
    }

    /// Waits for a new message (a `message` event) in `channel` that satisfies `pred`.
    pub async fn wait_message(
        &mut self,
        channel: &str,
        mut pred: impl FnMut(&Message) -> bool,
        timeout: Duration,
    ) -> Result<Message, WsError> {
        self.wait_for(timeout, |event| {
            event.new_message_in(channel).filter(|m| pred(m)).cloned()
        })
        .await
    }

    /// Waits until the session is connected (now or after a reconnect) and returns the node.
    pub async fn wait_connected(&self, timeout: Duration) -> Result<ConnectedNode, WsError> {
        let mut state = self.state_rx.clone();
        let waited = tokio::time::timeout(
            timeout,
            state.wait_for(|s| matches!(s, ConnState::Connected(_) | ConnState::Ended)),
        )
        .await
        .map(|r| r.map(|s| s.clone()));
        match waited {
            Ok(Ok(ConnState::Connected(node))) => Ok(node),
            Ok(_) => Err(self.end_error().unwrap_or(WsError::SessionEnded)),
            Err(_) => Err(WsError::Timeout(timeout)),
        }
    }

    // ---- actions ----

    /// Sends a message (a thread reply when `thread_root` is set) with a fresh
    /// `client_msg_id`. It stays pending until acknowledged, across reconnects.
    pub fn send(&self, channel: &str, body: &str, thread_root: Option<u64>) -> SendHandle {
        self.send_with_id(channel, body, thread_root, crate::ids::new_client_msg_id())
    }

    /// Like [`ChatSession::send`] with a caller-chosen `client_msg_id` (re-sending an id the
    /// server already has returns the original ack).
    pub fn send_with_id(
        &self,
        channel: &str,
        body: &str,
        thread_root: Option<u64>,
        client_msg_id: String,
    ) -> SendHandle {
        let (tx, rx) = oneshot::channel();
        // Recorded before the task sees it, so that `pending()` never misses a send.
        self.lock().pending.push(client_msg_id.clone());
        let send = PendingSend::new(
            client_msg_id.clone(),
            channel.to_owned(),
            body.to_owned(),
            thread_root,
            tx,
        );
        if self.commands.send(Command::Send(send)).is_err() {
            // The task has ended: the responder was dropped with the command, so the handle
            // resolves with `SessionEnded`.
            self.lock().pending.retain(|id| id != &client_msg_id);
        }
        SendHandle { client_msg_id, rx }
    }

    /// Subscribes `channel`, resuming from its cursor if it had one, else "from now".
    pub fn subscribe(&self, channel: &str) {
        self.command(Command::Subscribe {
            channel: channel.to_owned(),
            after: None,
        });
    }

    /// Subscribes `channel` with a replay of every event after `after`; the cursor is reset
    /// to `after`. On a channel that is already subscribed this re-subscribes, and live
    /// events that cross the re-subscription may be delivered before the replay (and the
    /// replayed events below them then dropped): use it on quiet channels.
    pub fn subscribe_after(&self, channel: &str, after: u64) {
        self.command(Command::Subscribe {
            channel: channel.to_owned(),
            after: Some(after),
        });
    }

    pub fn unsubscribe(&self, channel: &str) {
        self.command(Command::Unsubscribe {
            channel: channel.to_owned(),
        });
    }

    /// Moves the read marker of `channel` forward to `seq` (kept and sent after a reconnect if
    /// the session is disconnected).
    pub fn mark_read(&self, channel: &str, seq: u64) {
        self.command(Command::Read {
            channel: channel.to_owned(),
            seq,
        });
    }

    /// A typing notice (dropped while disconnected: it would be stale).
    pub fn typing(&self, channel: &str) {
        self.command(Command::Volatile(ClientFrame::Typing {
            channel: channel.to_owned(),
        }));
    }

    /// Sets this connection's presence; it is announced again on every reconnect.
    pub fn set_presence(&self, status: PresenceStatus) {
        self.command(Command::Presence(status));
    }

    /// An application-level ping; the `pong` arrives as [`SessionEvent::Pong`].
    pub fn ping(&self, id: u64) {
        self.command(Command::Volatile(ClientFrame::Ping { id }));
    }

    /// Sends any frame as it is on the current connection (dropped while disconnected). The
    /// session's bookkeeping does not see it.
    pub fn send_raw(&self, frame: ClientFrame) {
        self.command(Command::Volatile(frame));
    }

    /// Drops the current connection (close 1000) and fails over as if the node had gone
    /// away: for tests of the resume logic. The state is `Reconnecting` from the moment this
    /// returns, so a following [`ChatSession::wait_connected`] waits for the new connection.
    pub fn reconnect(&self) {
        let connection = self.lock().connections;
        if self
            .commands
            .send(Command::Reconnect { connection })
            .is_ok()
        {
            self.state_tx.send_if_modified(|state| {
                let connected = matches!(state, ConnState::Connected(_));
                if connected {
                    *state = ConnState::Reconnecting { attempt: 0 };
                }
                connected
            });
        }
    }

    // ---- state ----

    pub fn state(&self) -> ConnState {
        self.state_rx.borrow().clone()
    }

    /// The node the session is connected to, `None` while (re)connecting.
    pub fn current_node(&self) -> Option<ConnectedNode> {
        match &*self.state_rx.borrow() {
            ConnState::Connected(node) => Some(node.clone()),
            _ => None,
        }
    }

    /// The last `ev` of `channel` handed to the caller (or confirmed by `subscribed`).
    pub fn cursor(&self, channel: &str) -> Option<u64> {
        self.lock().cursors.get(channel).copied()
    }

    pub fn cursors(&self) -> BTreeMap<String, u64> {
        self.lock().cursors.clone()
    }

    /// Channels confirmed by `subscribed` on the current connection.
    pub fn subscribed(&self) -> Vec<String> {
        self.lock().subscribed.clone()
    }

    /// `client_msg_id`s sent and not yet acknowledged or refused, in send order.
    pub fn pending(&self) -> Vec<String> {
        self.lock().pending.clone()
    }

    /// The cluster members from the last `hello`.
    pub fn nodes(&self) -> Vec<NodeAddr> {
        self.lock().nodes.clone()
    }

    /// The authenticated user, from the last `hello`.
    pub fn user(&self) -> Option<User> {
        self.lock().user.clone()
    }

    /// How many event frames were dropped as already delivered (replay overlaps).
    pub fn duplicates_dropped(&self) -> u64 {
        self.lock().duplicates_dropped
    }

    /// Why the session ended, if it ended with an error (e.g. [`WsError::AuthLost`]).
    pub fn end_error(&self) -> Option<WsError> {
        self.lock().ended.clone()
    }

    /// Stops the session: closes the connection (1000), resolves pending sends with
    /// [`WsError::SessionEnded`] and waits for the background task to finish.
    pub async fn close(mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    fn command(&self, cmd: Command) {
        // After the task ended there is nobody to tell; the caller learns it from the event
        // stream ending.
        let _ = self.commands.send(cmd);
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Shared> {
        lock(&self.shared)
    }
}
