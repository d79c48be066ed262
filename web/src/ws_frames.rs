//! Wire types of the WebSocket protocol (`docs/protocol.md`): every frame a client may send and
//! every frame the server sends, in one place.
//!
//! Owns the JSON shape and the protocol version. Must never hold connection state or talk to
//! the cluster; `ws.rs` and `hub.rs` decide what to send, this module only says how it looks.

use axum::extract::ws::Utf8Bytes;
use cluster::{ChannelSummary, ChannelView, MessageView, UserView};
use serde::{Deserialize, Serialize};

/// The highest protocol version this server speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// Close codes (documented in `docs/protocol.md`).
pub mod close {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const TOO_BIG: u16 = 1009;
    pub const PROTOCOL: u16 = 4000;
    pub const UNAUTHENTICATED: u16 = 4001;
    pub const FORBIDDEN: u16 = 4003;
    pub const SLOW_CONSUMER: u16 = 4008;
    pub const LAGGED: u16 = 4010;
    pub const RATE_LIMITED: u16 = 4029;
}

/// Frames a client sends. Unknown fields are ignored so that newer clients can add optional
/// fields; an unknown `type` is a protocol error.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    Auth {
        #[serde(default = "one")]
        v: u32,
        token: String,
    },
    Subscribe {
        channel: String,
        #[serde(default)]
        after: Option<u64>,
    },
    Unsubscribe {
        channel: String,
    },
    Send {
        channel: String,
        body: String,
        client_msg_id: String,
        #[serde(default)]
        thread_root: Option<u64>,
    },
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
        #[serde(default)]
        id: serde_json::Value,
    },
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PresenceStatus {
    Offline,
    Away,
    Online,
}

#[derive(Debug, Clone, Serialize)]
pub struct NodeAddr {
    pub id: u64,
    pub api_addr: String,
    /// The member's HTTPS address when it serves TLS (from its last status report); clients
    /// that speak HTTPS fail over to it rather than to `api_addr`, the plain port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub https_addr: Option<String>,
}

/// Frames the server sends.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame<'a> {
    Hello {
        v: u32,
        node_id: u64,
        user: &'a UserView,
        nodes: Vec<NodeAddr>,
        heartbeat_ms: u64,
    },
    Event {
        channel: &'a str,
        ev: u64,
        #[serde(flatten)]
        body: EventBody<'a>,
    },
    Subscribed {
        channel: &'a str,
        ev: u64,
    },
    Unsubscribed {
        channel: &'a str,
    },
    Ack {
        client_msg_id: &'a str,
        channel: &'a str,
        seq: u64,
        ts_ms: u64,
        duplicate: bool,
    },
    Nack {
        client_msg_id: &'a str,
        code: &'a str,
        message: &'a str,
    },
    ReadMarker {
        channel: &'a str,
        seq: u64,
        unread: u64,
        mentions: u64,
    },
    ChannelAdded {
        channel: &'a ChannelSummary,
    },
    ChannelRemoved {
        channel: &'a str,
    },
    Mention {
        channel: &'a str,
        seq: u64,
        by: &'a str,
    },
    UserUpdated {
        user: &'a UserView,
    },
    Typing {
        channel: &'a str,
        user: &'a str,
    },
    Presence {
        user: &'a str,
        status: PresenceStatus,
    },
    Pong {
        id: &'a serde_json::Value,
    },
    Error {
        code: &'a str,
        message: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        channel: Option<&'a str>,
    },
}

/// The `kind`-specific part of an event frame.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventBody<'a> {
    Message {
        message: &'a MessageView,
    },
    Edited {
        message: &'a MessageView,
    },
    Deleted {
        message: &'a MessageView,
    },
    Reaction {
        message: &'a MessageView,
        user: &'a str,
        emoji: &'a str,
        added: bool,
    },
    Pinned {
        message: &'a MessageView,
        user: &'a str,
    },
    MemberJoined {
        user: &'a str,
        by: &'a str,
    },
    MemberLeft {
        user: &'a str,
        by: &'a str,
    },
    ChannelUpdated {
        /// Not `channel`: that key is the frame's channel name.
        info: &'a ChannelView,
    },
}

impl ServerFrame<'_> {
    /// Encodes once; the bytes are shared by every connection that receives the frame.
    pub fn encode(&self) -> Utf8Bytes {
        // Serializing these types cannot fail (string keys, no non-finite floats); an empty
        // object is a harmless fallback that clients ignore.
        Utf8Bytes::from(serde_json::to_string(self).unwrap_or_else(|_| "{}".to_string()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn client_frames_parse_as_documented() {
        let f: ClientFrame =
            serde_json::from_str(r#"{"type":"auth","v":1,"token":"cv1.x.1"}"#).unwrap();
        assert_eq!(
            f,
            ClientFrame::Auth {
                v: 1,
                token: "cv1.x.1".into()
            }
        );
        let f: ClientFrame =
            serde_json::from_str(r#"{"type":"subscribe","channel":"general","after":41}"#).unwrap();
        assert_eq!(
            f,
            ClientFrame::Subscribe {
                channel: "general".into(),
                after: Some(41)
            }
        );
        let f: ClientFrame = serde_json::from_str(
            r#"{"type":"send","channel":"general","body":"hello","client_msg_id":"web-1","thread_root":null}"#,
        )
        .unwrap();
        assert!(matches!(
            f,
            ClientFrame::Send {
                thread_root: None,
                ..
            }
        ));
        assert!(serde_json::from_str::<ClientFrame>(r#"{"type":"nope"}"#).is_err());
        assert!(serde_json::from_str::<ClientFrame>(r#"{"type":"send","channel":"x"}"#).is_err());
    }

    #[test]
    fn server_frames_have_type_and_kind() {
        let f = ServerFrame::Event {
            channel: "general",
            ev: 3,
            body: EventBody::MemberJoined {
                user: "bob",
                by: "bob",
            },
        };
        let v: serde_json::Value = serde_json::from_str(f.encode().as_str()).unwrap();
        assert_eq!(v["type"], "event");
        assert_eq!(v["kind"], "member_joined");
        assert_eq!(v["ev"], 3);
        assert_eq!(v["channel"], "general");
    }
}
