//! The node's WebSocket hub: which connections exist, who they belong to and which channels
//! they follow; the fan-out task that turns applied events into frames; presence and typing.
//!
//! Owns the registry and the rule that each event is encoded once and its bytes shared by every
//! receiving connection. Pushing to a connection never waits: a full queue closes that
//! connection as a slow consumer (4008) and it resumes from its cursors elsewhere. Must never
//! block the event bus nor write to the Raft log.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use cluster::{ChannelEvent, ChannelKind, ClusterNode, Event, EventKind, StateReader};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use super::frames::{
    EventBody, EventFrame, PresenceStatus, ReadMarkerUpdate, ServerFrame, close, encode,
};
use super::presence::Presence;

/// Per-connection limits (documented in `docs/protocol.md`).
#[derive(Debug, Clone)]
pub struct WsLimits {
    pub queue_frames: usize,
    pub max_frame_bytes: usize,
    pub rate_per_sec: f64,
    pub rate_burst: f64,
    pub auth_timeout: Duration,
    pub heartbeat: Duration,
    pub idle_timeout: Duration,
    /// WebSocket connections one user may hold on this node; one more is closed with 4030.
    pub max_per_user: usize,
    /// WebSocket connections this node holds (authenticated or not yet); an upgrade beyond is
    /// answered 503 `unavailable` (clients go to another node).
    pub max_per_node: usize,
}

impl Default for WsLimits {
    fn default() -> Self {
        Self {
            queue_frames: 1024,
            max_frame_bytes: 20_000,
            rate_per_sec: 20.0,
            rate_burst: 60.0,
            auth_timeout: Duration::from_secs(10),
            heartbeat: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(45),
            // Tabs, phone and desktop of one person, with room to spare; far below what lets
            // one stolen token tie up a node.
            max_per_user: 16,
            // The client ports' connection cap: every connection may be a WebSocket.
            max_per_node: 4096,
        }
    }
}

/// What the hub pushes into a connection's queue.
#[derive(Debug, Clone)]
pub enum Out {
    /// Send as is.
    Frame(Utf8Bytes),
    /// A channel event: the connection sends it only if it is above what it already delivered
    /// for that channel (the replay/live seam).
    Channel {
        channel: Arc<str>,
        ev: u64,
        frame: Utf8Bytes,
    },
    /// The user may no longer read this channel: stop following it.
    Revoked { channel: String },
}

/// The hub's side of one connection.
pub struct ConnHandle {
    pub user: String,
    pub token_hash: String,
    tx: mpsc::Sender<Out>,
    kill: CancellationToken,
    close_code: AtomicU16,
}

impl ConnHandle {
    /// Asks the connection to close with `code` (the first code asked for wins).
    pub fn close(&self, code: u16) {
        let _ = self
            .close_code
            .compare_exchange(0, code, Ordering::SeqCst, Ordering::SeqCst);
        self.kill.cancel();
    }

    pub fn killed(&self) -> &CancellationToken {
        &self.kill
    }

    pub fn close_code(&self) -> u16 {
        match self.close_code.load(Ordering::SeqCst) {
            0 => close::NORMAL,
            c => c,
        }
    }

    /// Queues `out` without waiting; a full queue means a slow consumer.
    pub fn push(&self, out: Out) {
        match self.tx.try_send(out) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => self.close(close::SLOW_CONSUMER),
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

#[derive(Default)]
pub(super) struct Registry {
    next_id: u64,
    pub(super) conns: HashMap<u64, Arc<ConnHandle>>,
    pub(super) by_channel: HashMap<String, HashSet<u64>>,
    by_user: HashMap<String, HashSet<u64>>,
    pub(super) status: HashMap<u64, PresenceStatus>,
}

pub struct Hub {
    pub node: Arc<ClusterNode>,
    pub limits: WsLimits,
    pub cancel: CancellationToken,
    /// WebSockets open on this node, from upgrade to close (authenticated or not).
    open: std::sync::atomic::AtomicUsize,
    pub(super) reg: Mutex<Registry>,
    pub(super) presence: Mutex<Presence>,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave these maps inconsistent beyond one entry;
    // keep serving rather than cascade the panic into every connection.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One WebSocket's place under `max_per_node`, held from upgrade to close.
pub struct WsSlot {
    hub: Arc<Hub>,
}

impl Drop for WsSlot {
    fn drop(&mut self) {
        self.hub.open.fetch_sub(1, Ordering::SeqCst);
        crate::metrics::ws_closed();
    }
}

/// Renders one channel event with the current state of what it names. `None` when the
/// message it names is gone (cannot happen today: messages are tombstoned, never removed).
pub fn render_event(
    reader: &StateReader,
    channel: &str,
    ev: u64,
    event: &ChannelEvent,
) -> Option<Utf8Bytes> {
    let message = match event.seq() {
        Some(seq) => match reader.message_view(channel, seq) {
            Ok(Some(m)) => Some(m),
            Ok(None) => return None,
            Err(e) => {
                tracing::error!(%channel, seq, error = %e, "reading message for event");
                return None;
            }
        },
        None => None,
    };
    let view = match event {
        ChannelEvent::ChannelUpdated => match reader.channel_view(channel) {
            Ok(Some(v)) => Some(v),
            _ => return None,
        },
        _ => None,
    };
    let msg = message.as_ref().map(crate::wire::message);
    let body = match (event, msg, view.as_ref()) {
        (ChannelEvent::Message { .. }, Some(message), _) => EventBody::Message { message },
        (ChannelEvent::Edited { .. }, Some(message), _) => EventBody::Edited { message },
        (ChannelEvent::Deleted { .. }, Some(message), _) => EventBody::Deleted { message },
        (
            ChannelEvent::Reaction {
                user, emoji, added, ..
            },
            Some(message),
            _,
        ) => EventBody::Reaction {
            message,
            user: user.clone(),
            emoji: emoji.clone(),
            added: *added,
        },
        (ChannelEvent::Pinned { user, .. }, Some(message), _) => EventBody::Pinned {
            message,
            user: user.clone(),
        },
        (ChannelEvent::MemberJoined { user, by }, _, _) => EventBody::MemberJoined {
            user: user.clone(),
            by: Some(by.clone()),
        },
        (ChannelEvent::MemberLeft { user, by }, _, _) => EventBody::MemberLeft {
            user: user.clone(),
            by: Some(by.clone()),
        },
        (ChannelEvent::ChannelUpdated, _, Some(info)) => EventBody::ChannelUpdated {
            info: Some(crate::wire::channel(info)),
        },
        _ => return None,
    };
    Some(encode(&ServerFrame::Event(EventFrame {
        channel: channel.to_owned(),
        ev,
        kind: body,
    })))
}

impl Hub {
    /// Creates the hub and spawns its fan-out and presence tasks; both end on `cancel`.
    pub fn start(node: Arc<ClusterNode>, limits: WsLimits, cancel: CancellationToken) -> Arc<Hub> {
        let hub = Arc::new(Hub {
            node,
            limits,
            cancel,
            open: std::sync::atomic::AtomicUsize::new(0),
            reg: Mutex::new(Registry::default()),
            presence: Mutex::new(Presence::default()),
        });
        let events = hub.node.events().subscribe();
        let h = hub.clone();
        cluster::spawn_named("ws-fanout", async move { h.run_fanout(events).await });
        let h = hub.clone();
        let notices = hub.node.ephemeral_rx();
        cluster::spawn_named("ws-presence", async move { h.run_presence(notices).await });
        hub
    }

    // ---- registry ----

    /// Takes a place for one more WebSocket on this node, or `None` when it holds
    /// `max_per_node`. The place is given back when the returned guard drops.
    pub fn open_slot(self: &Arc<Self>) -> Option<WsSlot> {
        let taken = self
            .open
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < self.limits.max_per_node).then_some(n + 1)
            });
        taken.ok().map(|_| {
            crate::metrics::ws_opened();
            WsSlot { hub: self.clone() }
        })
    }

    /// Registers an authenticated connection; `None` when its user already holds
    /// `max_per_user` on this node (the caller closes with 4030).
    pub fn register(
        &self,
        user: &str,
        token_hash: &str,
    ) -> Option<(u64, Arc<ConnHandle>, mpsc::Receiver<Out>)> {
        if lock(&self.reg).by_user.get(user).map_or(0, HashSet::len) >= self.limits.max_per_user {
            return None;
        }
        let (tx, rx) = mpsc::channel(self.limits.queue_frames.max(1));
        let handle = Arc::new(ConnHandle {
            user: user.to_string(),
            token_hash: token_hash.to_string(),
            tx,
            kill: self.cancel.child_token(),
            close_code: AtomicU16::new(0),
        });
        let id = {
            let mut reg = lock(&self.reg);
            // Checked again under the same lock as the insert: two connections of one user
            // racing past the check above cannot both take the last place.
            if reg.by_user.get(user).map_or(0, HashSet::len) >= self.limits.max_per_user {
                return None;
            }
            reg.next_id += 1;
            let id = reg.next_id;
            reg.conns.insert(id, handle.clone());
            reg.by_user.entry(user.to_string()).or_default().insert(id);
            reg.status.insert(id, PresenceStatus::Online);
            id
        };
        self.local_presence_changed();
        Some((id, handle, rx))
    }

    pub fn unregister(&self, id: u64) {
        {
            let mut reg = lock(&self.reg);
            if let Some(h) = reg.conns.remove(&id)
                && let Some(set) = reg.by_user.get_mut(&h.user)
            {
                set.remove(&id);
                if set.is_empty() {
                    reg.by_user.remove(&h.user);
                }
            }
            reg.by_channel.retain(|_, set| {
                set.remove(&id);
                !set.is_empty()
            });
            reg.status.remove(&id);
        }
        self.local_presence_changed();
    }

    /// Registers `id` for `channel`'s events. Must happen before the replay reads storage,
    /// so nothing applied after the read can be missed.
    pub fn subscribe(&self, id: u64, channel: &str) {
        lock(&self.reg)
            .by_channel
            .entry(channel.to_string())
            .or_default()
            .insert(id);
    }

    pub fn unsubscribe(&self, id: u64, channel: &str) {
        let mut reg = lock(&self.reg);
        if let Some(set) = reg.by_channel.get_mut(channel) {
            set.remove(&id);
            if set.is_empty() {
                reg.by_channel.remove(channel);
            }
        }
    }

    pub fn connection_count(&self) -> usize {
        lock(&self.reg).conns.len()
    }

    /// The live connections among `ids` (an entry of one of the registry's indexes), except
    /// `except`; collected under the lock, pushed to after it is released.
    pub(super) fn conns_in(
        &self,
        ids: impl FnOnce(&Registry) -> Option<&HashSet<u64>>,
        except: Option<u64>,
    ) -> Vec<Arc<ConnHandle>> {
        let reg = lock(&self.reg);
        ids(&reg)
            .map(|ids| {
                ids.iter()
                    .filter(|i| Some(**i) != except)
                    .filter_map(|i| reg.conns.get(i).cloned())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn channel_conns(&self, channel: &str) -> Vec<Arc<ConnHandle>> {
        self.conns_in(|r| r.by_channel.get(channel), None)
    }

    fn user_conns(&self, user: &str) -> Vec<Arc<ConnHandle>> {
        self.conns_in(|r| r.by_user.get(user), None)
    }

    pub(super) fn all_conns(&self) -> Vec<Arc<ConnHandle>> {
        lock(&self.reg).conns.values().cloned().collect()
    }

    // ---- fan-out ----

    async fn run_fanout(self: Arc<Self>, mut events: broadcast::Receiver<Event>) {
        loop {
            tokio::select! {
                _ = self.cancel.cancelled() => break,
                r = events.recv() => match r {
                    Ok(ev) => self.dispatch(ev),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        // Events were lost for every connection: make them all resume from
                        // their cursors rather than silently skip.
                        tracing::warn!(missed = n, "ws fan-out lagged; closing connections for resume");
                        for c in self.all_conns() {
                            c.close(close::LAGGED);
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                },
            }
        }
        for c in self.all_conns() {
            c.close(close::GOING_AWAY);
        }
    }

    fn dispatch(&self, event: Event) {
        let reader = self.node.reader();
        match event.kind {
            EventKind::Channel { channel, ev, event } => {
                self.dispatch_channel_event(reader, &channel, ev, event);
            }
            EventKind::ChannelAdded {
                channel, public, ..
            } => {
                // Members get theirs through their MemberJoined events; a public channel is
                // announced to everyone else too.
                if public {
                    self.announce_public_channel(reader, &channel);
                }
            }
            EventKind::ReadMarker { user, channel, seq } => {
                let rs = reader.read_state(&user, &channel).ok();
                let frame = encode(&ServerFrame::ReadMarker(ReadMarkerUpdate {
                    channel: channel.clone(),
                    seq,
                    unread: rs.map(|r| r.unread).unwrap_or(0),
                    mentions: rs.map(|r| r.mentions).unwrap_or(0),
                }));
                for c in self.user_conns(&user) {
                    c.push(Out::Frame(frame.clone()));
                }
            }
            EventKind::MuteChanged {
                user,
                channel,
                muted,
            } => {
                // Only the user's own connections: a mute is nobody else's business.
                let frame = encode(&ServerFrame::ChannelMuted { channel, muted });
                for c in self.user_conns(&user) {
                    c.push(Out::Frame(frame.clone()));
                }
            }
            EventKind::Mention {
                user,
                channel,
                seq,
                by,
            } => {
                let frame = encode(&ServerFrame::Mention {
                    channel: channel.clone(),
                    seq,
                    by,
                });
                for c in self.user_conns(&user) {
                    c.push(Out::Frame(frame.clone()));
                }
            }
            EventKind::UserUpdated { username, disabled } => {
                if disabled {
                    for c in self.user_conns(&username) {
                        c.close(close::FORBIDDEN);
                    }
                }
                if let Ok(Some(view)) = reader.user_view(&username) {
                    let frame = encode(&ServerFrame::UserUpdated {
                        user: crate::wire::user(&view),
                    });
                    for c in self.all_conns() {
                        c.push(Out::Frame(frame.clone()));
                    }
                }
            }
            EventKind::UserCreated { username } => {
                if let Ok(Some(view)) = reader.user_view(&username) {
                    let frame = encode(&ServerFrame::UserUpdated {
                        user: crate::wire::user(&view),
                    });
                    for c in self.all_conns() {
                        c.push(Out::Frame(frame.clone()));
                    }
                }
            }
            EventKind::SessionExpired {
                token_hash,
                username,
                reason,
            } => {
                // Every node purges it at the same entry; the leader logs it, so the event is
                // in the security log once (ASVS V7), with no request behind it.
                if self.node.metrics().current_leader == Some(self.node.id()) {
                    tracing::info!(
                        target: crate::security_log::TARGET,
                        event = "session.expired",
                        user = %username,
                        session_id = %crate::session_use::public_id(&token_hash),
                        reason = crate::session_use::end_text(reason),
                        source = "-",
                        "security event"
                    );
                }
                for c in self.all_conns() {
                    if c.token_hash == token_hash {
                        c.close(close::SESSION_ENDED);
                    }
                }
            }
            EventKind::SessionRevoked { token_hash } => {
                // Its own code, so clients ask for the password again instead of giving up;
                // a disabled account keeps 4003 (asking for the password cannot help).
                for c in self.all_conns() {
                    if c.token_hash == token_hash {
                        let disabled = reader
                            .user(&c.user)
                            .ok()
                            .flatten()
                            .is_some_and(|u| u.disabled);
                        c.close(if disabled {
                            close::FORBIDDEN
                        } else {
                            close::SESSION_ENDED
                        });
                    }
                }
            }
            // Covered by the channel events above.
            EventKind::MessagePosted(_)
            | EventKind::ChannelCreated(_)
            | EventKind::MemberJoined { .. } => {}
        }
    }

    /// A numbered channel event: to the channel's followers (each connection filters by its
    /// cursor), and for membership changes the member's own channel list.
    fn dispatch_channel_event(
        &self,
        reader: &StateReader,
        channel: &str,
        ev: u64,
        event: ChannelEvent,
    ) {
        if let Some(frame) = render_event(reader, channel, ev, &event) {
            let name: Arc<str> = Arc::from(channel);
            for c in self.channel_conns(channel) {
                c.push(Out::Channel {
                    channel: name.clone(),
                    ev,
                    frame: frame.clone(),
                });
            }
        }
        match event {
            ChannelEvent::MemberJoined { user, .. } => {
                self.send_channel_added(reader, channel, &user);
            }
            ChannelEvent::MemberLeft { user, .. } => {
                let frame = encode(&ServerFrame::ChannelRemoved {
                    channel: channel.to_owned(),
                });
                let private =
                    !matches!(reader.channel_kind(channel), Ok(Some(ChannelKind::Public)));
                for c in self.user_conns(&user) {
                    if private {
                        c.push(Out::Revoked {
                            channel: channel.to_owned(),
                        });
                    }
                    c.push(Out::Frame(frame.clone()));
                }
            }
            _ => {}
        }
    }

    /// A new public channel, to everyone who is not a member (members hear of it through
    /// their own `member_joined`).
    fn announce_public_channel(&self, reader: &StateReader, channel: &str) {
        let Ok(Some(view)) = reader.channel_view(channel) else {
            return;
        };
        let summary = cluster::ChannelSummary {
            member: false,
            last_read: 0,
            unread: 0,
            mentions: 0,
            muted: false,
            channel: view,
        };
        let frame = encode(&ServerFrame::ChannelAdded {
            channel: crate::wire::channel_summary(&summary),
        });
        for c in self.all_conns() {
            if !summary.channel.members.contains(&c.user) {
                c.push(Out::Frame(frame.clone()));
            }
        }
    }

    fn send_channel_added(&self, reader: &StateReader, channel: &str, user: &str) {
        let conns = self.user_conns(user);
        if conns.is_empty() {
            return;
        }
        let Ok(Some(view)) = reader.channel_view(channel) else {
            return;
        };
        let rs = reader.read_state(user, channel).ok();
        let summary = cluster::ChannelSummary {
            member: true,
            last_read: rs.map(|r| r.last_read).unwrap_or(0),
            unread: rs.map(|r| r.unread).unwrap_or(0),
            mentions: rs.map(|r| r.mentions).unwrap_or(0),
            // A member's mute survives leaving and coming back.
            muted: reader.is_muted(user, channel).unwrap_or(false),
            channel: view,
        };
        let frame = encode(&ServerFrame::ChannelAdded {
            channel: crate::wire::channel_summary(&summary),
        });
        for c in conns {
            c.push(Out::Frame(frame.clone()));
        }
    }
}
