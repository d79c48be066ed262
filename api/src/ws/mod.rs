//! The frames of the WebSocket protocol (docs/protocol.md) as serde types: [`ClientFrame`]
//! (client to server) and [`ServerFrame`] (server to client), both JSON objects tagged by
//! `type`, the channel events they carry ([`ChannelEvent`], tagged by `kind`), and the close
//! codes.
//!
//! One set of types for both ends: the server builds these frames and encodes them, the client
//! decodes them. Encoding gives exactly the JSON the server has always sent (field order
//! included); decoding is lenient for the client's sake: unknown fields are ignored, an
//! unknown frame `type` or event `kind` decodes to an `Unknown` variant instead of failing,
//! so that a newer server does not break an older client. What the server accepts beyond
//! these types (a `ping` with any JSON id, an `auth` without `v`) is the server's own wrapper
//! in `web`. Data only: this module must never perform I/O or keep state.

mod event;
#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

pub use crate::PROTOCOL_VERSION;
use crate::rest::{Channel, User};
pub use event::{ChannelEvent, EventKind, event_header};

/// Close codes of the WebSocket (documented in docs/protocol.md).
pub mod close {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const TOO_BIG: u16 = 1009;
    pub const PROTOCOL: u16 = 4000;
    pub const UNAUTHENTICATED: u16 = 4001;
    pub const FORBIDDEN: u16 = 4003;
    pub const SLOW_CONSUMER: u16 = 4008;
    pub const LAGGED: u16 = 4010;
    /// The session ended: absolute or idle expiry, logout elsewhere, ended by the user or an
    /// admin, or a password change. Ask for the password again, then reconnect with the new
    /// token (keep the outbox: `client_msg_id` makes resending safe).
    pub const SESSION_ENDED: u16 = 4011;
    /// The account must change its admin-set password (`POST /api/v1/me/password`) first.
    pub const PASSWORD_CHANGE_REQUIRED: u16 = 4012;
    pub const RATE_LIMITED: u16 = 4029;
    /// The user already has the most WebSocket connections one node allows per user.
    pub const TOO_MANY_CONNECTIONS: u16 = 4030;
}

/// A bearer token inside a frame. Its `Debug` output is redacted because frames end up in
/// logs and test failure messages; the JSON form is the plain string.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretToken(String);

impl SecretToken {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl From<String> for SecretToken {
    fn from(s: String) -> Self {
        SecretToken(s)
    }
}

impl From<&str> for SecretToken {
    fn from(s: &str) -> Self {
        SecretToken(s.to_owned())
    }
}

/// A connection's presence status. Ordered from least to most present: the server merges a
/// user's connections by taking the highest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PresenceStatus {
    /// Only ever sent by the server (a user with no connection anywhere).
    Offline,
    Away,
    Online,
    /// A status added by a newer server. The server refuses it from clients.
    #[serde(other)]
    Unknown,
}

/// A frame the client sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    /// Must be the first frame, within 10 s of the upgrade.
    Auth {
        v: u32,
        token: SecretToken,
    },
    /// Replays every event with `ev > after`, then `subscribed`, then live events. Without
    /// `after`: live events only ("from now").
    Subscribe {
        channel: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<u64>,
    },
    Unsubscribe {
        channel: String,
    },
    /// Posts a message; answered by `ack` or `nack` with the same `client_msg_id`.
    Send {
        channel: String,
        body: String,
        client_msg_id: String,
        #[serde(default)]
        thread_root: Option<u64>,
    },
    /// Moves the caller's read marker forward.
    Read {
        channel: String,
        seq: u64,
    },
    Typing {
        channel: String,
    },
    Presence {
        status: PresenceStatus,
    },
    Ping {
        id: u64,
    },
}

impl ClientFrame {
    /// `auth` with this client's protocol version.
    pub fn auth(token: impl Into<SecretToken>) -> ClientFrame {
        ClientFrame::Auth {
            v: PROTOCOL_VERSION,
            token: token.into(),
        }
    }

    /// The JSON text of the frame.
    pub fn to_json(&self) -> String {
        // Every field is a string, a number, an option or a unit enum: serializing cannot
        // fail, and there is no error path worth forcing on every caller for it.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// One member of the cluster as listed in `hello`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAddr {
    pub id: u64,
    /// `host:port` of the node's client API (its plain-HTTP port when it serves TLS).
    pub api_addr: String,
    /// `host:port` of the node's HTTPS port, when it serves TLS. Absent from servers that do
    /// not send it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub https_addr: Option<String>,
}

/// The server's answer to a valid `auth`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The protocol version the server will speak.
    pub v: u32,
    pub node_id: u64,
    pub user: User,
    /// Every member's API address, for failover.
    #[serde(default)]
    pub nodes: Vec<NodeAddr>,
    #[serde(default)]
    pub heartbeat_ms: Option<u64>,
}

/// `ack`: the message is committed by a quorum and applied on the answering node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub client_msg_id: String,
    #[serde(default)]
    pub channel: String,
    pub seq: u64,
    #[serde(default)]
    pub ts_ms: u64,
    /// True when the server already had this `client_msg_id` (a re-send) and answered with
    /// the original message's `seq`.
    #[serde(default)]
    pub duplicate: bool,
}

/// `nack`: the send was refused. `code` is a REST error code; `unavailable` means the
/// outcome is unknown and the send must be repeated with the same id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nack {
    pub client_msg_id: String,
    pub code: String,
    #[serde(default)]
    pub message: String,
}

/// `read_marker`: the caller's read marker in `channel` moved (from any of their
/// connections).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadMarkerUpdate {
    pub channel: String,
    pub seq: u64,
    #[serde(default)]
    pub unread: u64,
    #[serde(default)]
    pub mentions: u64,
}

/// A frame the server sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    Hello(Hello),
    /// The replay for `channel` is complete up to `ev`; live events follow.
    Subscribed {
        channel: String,
        ev: u64,
    },
    /// The server stopped streaming `channel` (the caller lost access).
    Unsubscribed {
        channel: String,
    },
    Event(ChannelEvent),
    Ack(Ack),
    Nack(Nack),
    Typing {
        channel: String,
        user: String,
    },
    Presence {
        user: String,
        status: PresenceStatus,
    },
    ReadMarker(ReadMarkerUpdate),
    ChannelAdded {
        channel: Channel,
    },
    ChannelRemoved {
        channel: String,
    },
    Mention {
        channel: String,
        seq: u64,
        by: String,
    },
    UserUpdated {
        user: User,
    },
    /// The caller muted or unmuted `channel` (from any of their connections; command
    /// version 7). Sent to the caller's own connections only.
    ChannelMuted {
        channel: String,
        muted: bool,
    },
    /// A non-fatal problem with one frame (`channel` is set for subscription errors).
    Error {
        code: String,
        #[serde(default)]
        message: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        channel: Option<String>,
    },
    Pong {
        id: u64,
    },
    /// A frame type added by a newer server.
    #[serde(other)]
    Unknown,
}

impl ServerFrame {
    /// Decodes one text frame.
    pub fn decode(text: &str) -> Result<ServerFrame, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The JSON text of the frame (what the server sends).
    pub fn to_json(&self) -> String {
        // String keys, integers and strings only: serializing cannot fail. An empty object is
        // a harmless fallback that clients ignore.
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_owned())
    }
}
