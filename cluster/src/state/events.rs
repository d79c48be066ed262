//! The applied-event bus: what a node tells its own subscribers (WebSocket fan-out, tests)
//! after an entry is applied locally.
//!
//! Owns `Event` and the broadcast channel wrapper. Must never block `apply`: a slow subscriber
//! lags (and must resume from storage), it never stalls the state machine.

use tokio::sync::broadcast;

use crate::command::{ChannelEvent, ChannelRecord, MessageRecord, SessionEnd};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Log index of the entry that produced the event.
    pub index: u64,
    pub kind: EventKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    MessagePosted(MessageRecord),
    ChannelCreated(ChannelRecord),
    MemberJoined {
        channel: String,
        username: String,
    },
    UserCreated {
        username: String,
    },
    SessionRevoked {
        token_hash: String,
    },
    // ---- version 2 ----
    /// A change to a channel, numbered by the channel's event sequence (the resume cursor).
    Channel {
        channel: String,
        ev: u64,
        event: ChannelEvent,
    },
    /// A channel was created: visible to everyone when `public`, else to `members`.
    ChannelAdded {
        channel: String,
        public: bool,
        members: Vec<String>,
    },
    ReadMarker {
        user: String,
        channel: String,
        seq: u64,
    },
    Mention {
        user: String,
        channel: String,
        seq: u64,
        by: String,
    },
    /// Display name, role or disabled flag changed.
    UserUpdated {
        username: String,
        disabled: bool,
    },
    // ---- version 6 ----
    /// The state machine purged a session at its absolute or idle deadline.
    SessionExpired {
        token_hash: String,
        username: String,
        reason: SessionEnd,
    },
    // ---- version 7 ----
    /// `user` muted or unmuted `channel` (their other connections update their badges).
    MuteChanged {
        user: String,
        channel: String,
        muted: bool,
    },
}

/// Bounded broadcast of applied events. Subscribers that fall more than `capacity` events behind
/// get `RecvError::Lagged` and must re-read from the state machine.
#[derive(Clone)]
pub struct EventBus {
    tx: broadcast::Sender<Event>,
}

impl EventBus {
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        Self { tx }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }

    pub(crate) fn publish(&self, events: Vec<Event>) {
        for e in events {
            // No receivers is fine: nobody is listening on this node.
            let _ = self.tx.send(e);
        }
    }
}
