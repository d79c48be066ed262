//! The frames of the WebSocket protocol (docs/protocol.md) as serde types: [`ClientFrame`]
//! (client to server) and [`ServerFrame`] (server to client), both JSON objects tagged by
//! `type`, and the channel events they carry ([`ChannelEvent`], tagged by `kind`).
//!
//! Data only: this module must never perform I/O or keep state. Decoding is lenient in the
//! same way as `types`: unknown fields are ignored, an unknown frame `type` or event `kind`
//! decodes to an `Unknown` variant instead of failing, so that a newer server does not break
//! an older client.

use serde::{Deserialize, Serialize};

use crate::types::{Channel, Message, User};

/// The protocol version this client speaks (sent in `auth`).
pub const PROTOCOL_VERSION: u32 = 1;

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

/// A connection's presence status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PresenceStatus {
    Online,
    Away,
    /// Only ever sent by the server (a user with no connection anywhere).
    Offline,
    /// A status added by a newer server.
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

/// One numbered change to a channel: `{"type":"event","channel","ev","kind",...}`.
///
/// The frame's `channel` is the channel's name, except that protocol.md gives
/// `channel_updated` a channel *object* under the same key; both forms decode (the name is
/// then taken from the object), see the `Deserialize` impl.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelEvent {
    pub channel: String,
    /// The channel's event sequence number: the resume cursor.
    pub ev: u64,
    pub kind: EventKind,
}

impl<'de> Deserialize<'de> for ChannelEvent {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        use serde_json::Value;

        let mut fields = serde_json::Map::<String, Value>::deserialize(de)?;
        let ev = fields
            .get("ev")
            .and_then(Value::as_u64)
            .ok_or_else(|| D::Error::custom("event frame without a numeric `ev`"))?;
        let channel = match fields.remove("channel") {
            Some(Value::String(name)) => name,
            Some(Value::Object(object)) => {
                let name = object
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| D::Error::custom("event `channel` object without a name"))?
                    .to_owned();
                // Left in place for `EventKind::ChannelUpdated`, which reads it.
                fields.insert("channel".to_owned(), Value::Object(object));
                name
            }
            _ => return Err(D::Error::custom("event frame without a `channel`")),
        };
        let kind = serde_json::from_value(Value::Object(fields)).map_err(D::Error::custom)?;
        Ok(ChannelEvent { channel, ev, kind })
    }
}

impl Serialize for ChannelEvent {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::Error as _;
        use serde_json::Value;

        let mut fields = match serde_json::to_value(&self.kind).map_err(S::Error::custom)? {
            Value::Object(fields) => fields,
            _ => return Err(S::Error::custom("event kind is not an object")),
        };
        // `channel_updated` already put the channel object (which names the channel) there.
        if !fields.contains_key("channel") {
            fields.insert("channel".to_owned(), Value::String(self.channel.clone()));
        }
        fields.insert("ev".to_owned(), Value::from(self.ev));
        fields.serialize(ser)
    }
}

impl ChannelEvent {
    /// The message this event carries (current state), if it is a message event.
    pub fn message(&self) -> Option<&Message> {
        match &self.kind {
            EventKind::Message { message }
            | EventKind::Edited { message }
            | EventKind::Deleted { message }
            | EventKind::Reaction { message, .. }
            | EventKind::Pinned { message, .. } => Some(message),
            _ => None,
        }
    }
}

/// What happened in a channel event, tagged by `kind`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventKind {
    /// A message or thread reply was posted.
    Message { message: Message },
    /// A message's body was edited.
    Edited { message: Message },
    /// A message was deleted (`message` is the tombstone).
    Deleted { message: Message },
    /// A reaction was added or removed; `message` has the new `reactions`.
    Reaction {
        message: Message,
        user: String,
        emoji: String,
        added: bool,
    },
    /// A message was pinned or unpinned; `message.pinned` is the new state.
    Pinned {
        message: Message,
        #[serde(default)]
        user: String,
    },
    MemberJoined {
        user: String,
        #[serde(default)]
        by: Option<String>,
    },
    MemberLeft {
        user: String,
        #[serde(default)]
        by: Option<String>,
    },
    /// Title, topic or archive flag changed. `None` when the server sent only the name.
    ChannelUpdated {
        /// Sent as `info`; servers before protocol.md fixed the key sent it as `channel`.
        #[serde(default, alias = "channel")]
        info: Option<Channel>,
    },
    /// A kind added by a newer server. Its `ev` still counts for the cursor.
    #[serde(other)]
    Unknown,
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
}

/// The channel and `ev` of an `event` frame whose body does not decode: enough to keep the
/// cursor moving past it (a replay would otherwise stop at it forever).
pub(crate) fn event_header(text: &str) -> Option<(String, u64)> {
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    if value.get("type")?.as_str()? != "event" {
        return None;
    }
    let ev = value.get("ev")?.as_u64()?;
    let channel = value.get("channel")?;
    let name = channel.as_str().or_else(|| channel.get("name")?.as_str())?;
    Some((name.to_owned(), ev))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::types::{ChannelKind, Role};
    use serde_json::{Value, json};

    fn same_json(frame: &ClientFrame, expected: Value) {
        let actual: Value = serde_json::from_str(&frame.to_json()).unwrap();
        assert_eq!(actual, expected);
        // And back: what the client sends, a server written with these types would read.
        let back: ClientFrame = serde_json::from_value(expected).unwrap();
        assert_eq!(&back, frame);
    }

    const MESSAGE: &str = r#"{"channel":"general","seq":12,"author":"alice","body":"hi @bob","ts_ms":1764450000000,
 "client_msg_id":"web-3f2a","thread_root":null,"reply_count":0,"edited_at_ms":null,
 "deleted":false,"pinned":false,"reactions":{"👍":["bob"]},"mentions":["bob"]}"#;

    #[test]
    fn client_frames_match_protocol_examples() {
        same_json(
            &ClientFrame::auth("cv1.abc"),
            json!({"type":"auth","v":1,"token":"cv1.abc"}),
        );
        same_json(
            &ClientFrame::Subscribe {
                channel: "general".into(),
                after: Some(41),
            },
            json!({"type":"subscribe","channel":"general","after":41}),
        );
        same_json(
            &ClientFrame::Subscribe {
                channel: "general".into(),
                after: None,
            },
            json!({"type":"subscribe","channel":"general"}),
        );
        same_json(
            &ClientFrame::Unsubscribe {
                channel: "general".into(),
            },
            json!({"type":"unsubscribe","channel":"general"}),
        );
        same_json(
            &ClientFrame::Send {
                channel: "general".into(),
                body: "hello".into(),
                client_msg_id: "web-5c1e".into(),
                thread_root: None,
            },
            json!({"type":"send","channel":"general","body":"hello","client_msg_id":"web-5c1e","thread_root":null}),
        );
        same_json(
            &ClientFrame::Read {
                channel: "general".into(),
                seq: 12,
            },
            json!({"type":"read","channel":"general","seq":12}),
        );
        same_json(
            &ClientFrame::Typing {
                channel: "general".into(),
            },
            json!({"type":"typing","channel":"general"}),
        );
        same_json(
            &ClientFrame::Presence {
                status: PresenceStatus::Away,
            },
            json!({"type":"presence","status":"away"}),
        );
        same_json(&ClientFrame::Ping { id: 7 }, json!({"type":"ping","id":7}));
    }

    #[test]
    fn auth_token_is_redacted_in_debug() {
        let text = format!("{:?}", ClientFrame::auth("cv1.secret"));
        assert!(!text.contains("secret"), "{text}");
        assert!(
            ClientFrame::auth("cv1.secret")
                .to_json()
                .contains("cv1.secret")
        );
    }

    #[test]
    fn hello_from_protocol_example() {
        let frame = ServerFrame::decode(
            r#"{"type":"hello","v":1,"node_id":2,"user":{"username":"alice","display_name":"Alice","role":"admin"},
    "nodes":[{"id":1,"api_addr":"127.0.0.1:8080"},{"id":2,"api_addr":"127.0.0.2:8080"}],"heartbeat_ms":15000}"#,
        )
        .unwrap();
        let ServerFrame::Hello(hello) = frame else {
            panic!("not a hello: {frame:?}");
        };
        assert_eq!(hello.node_id, 2);
        assert_eq!(hello.user.display_name, "Alice");
        assert_eq!(hello.user.role, Role::Admin);
        assert!(!hello.user.disabled);
        assert_eq!(hello.nodes[1].api_addr, "127.0.0.2:8080");
        assert_eq!(hello.heartbeat_ms, Some(15000));
    }

    #[test]
    fn event_frames_from_protocol_examples() {
        let text = format!(
            r#"{{"type":"event","channel":"general","ev":58,"kind":"message","message":{MESSAGE}}}"#
        );
        let ServerFrame::Event(ev) = ServerFrame::decode(&text).unwrap() else {
            panic!("not an event");
        };
        assert_eq!((ev.channel.as_str(), ev.ev), ("general", 58));
        let m = ev.message().unwrap();
        assert_eq!(m.seq, 12);
        assert_eq!(m.reactions["👍"], vec!["bob"]);
        assert!(matches!(ev.kind, EventKind::Message { .. }));

        let text = format!(
            r#"{{"type":"event","channel":"general","ev":59,"kind":"reaction","message":{MESSAGE},
                "user":"bob","emoji":"👍","added":true}}"#
        );
        let ServerFrame::Event(ev) = ServerFrame::decode(&text).unwrap() else {
            panic!("not an event");
        };
        assert!(
            matches!(&ev.kind, EventKind::Reaction { user, emoji, added: true, .. }
            if user == "bob" && emoji == "👍")
        );

        let ServerFrame::Event(ev) = ServerFrame::decode(
            r#"{"type":"event","channel":"ops","ev":3,"kind":"member_joined","user":"bob","by":"alice"}"#,
        )
        .unwrap() else {
            panic!("not an event");
        };
        assert_eq!(
            ev.kind,
            EventKind::MemberJoined {
                user: "bob".into(),
                by: Some("alice".into())
            }
        );
        assert_eq!(ev.message(), None);

        // protocol.md puts the channel object under the frame's `channel` key.
        let text = r#"{"type":"event","channel":
               {"name":"ops","title":"Ops","topic":"pager","kind":"private","archived":true,
                "created_by":"alice","created_at_ms":1,"members":["alice"],"last_seq":0,"last_ev":4},
               "ev":4,"kind":"channel_updated"}"#;
        let frame = ServerFrame::decode(text).unwrap();
        let ServerFrame::Event(ev) = &frame else {
            panic!("not an event");
        };
        assert_eq!((ev.channel.as_str(), ev.ev), ("ops", 4));
        let EventKind::ChannelUpdated {
            info: Some(channel),
        } = &ev.kind
        else {
            panic!("not channel_updated: {ev:?}");
        };
        assert!(channel.archived);
        assert_eq!(channel.topic, "pager");
        // Encoding gives the same frame back.
        let again = serde_json::to_string(&frame).unwrap();
        assert_eq!(ServerFrame::decode(&again).unwrap(), frame);
        // What a server gets by flattening a `channel` object next to the frame's `channel`
        // name: the key twice. JSON parsers keep the last one, and so does this decoder.
        let twice = r#"{"type":"event","channel":"ops","ev":6,"kind":"channel_updated","channel":
               {"name":"ops","title":"Ops","topic":"new","kind":"public","archived":false,
                "created_by":"alice","created_at_ms":1,"members":[],"last_seq":0,"last_ev":6}}"#;
        let ServerFrame::Event(ev) = ServerFrame::decode(twice).unwrap() else {
            panic!("not an event");
        };
        assert_eq!((ev.channel.as_str(), ev.ev), ("ops", 6));
        assert!(
            matches!(&ev.kind, EventKind::ChannelUpdated { info: Some(c) } if c.topic == "new")
        );
        // A server that sends only the name still decodes.
        let ServerFrame::Event(ev) = ServerFrame::decode(
            r#"{"type":"event","channel":"ops","ev":5,"kind":"channel_updated"}"#,
        )
        .unwrap() else {
            panic!("not an event");
        };
        assert_eq!(ev.kind, EventKind::ChannelUpdated { info: None });
        // The documented form: the name under `channel`, the object under `info`.
        let ServerFrame::Event(ev) = ServerFrame::decode(
            r#"{"type":"event","channel":"ops","ev":7,"kind":"channel_updated","info":
               {"name":"ops","title":"Ops","topic":"t7","kind":"public","archived":false,
                "created_by":"alice","created_at_ms":1,"members":[],"last_seq":0,"last_ev":7}}"#,
        )
        .unwrap() else {
            panic!("not an event");
        };
        assert_eq!((ev.channel.as_str(), ev.ev), ("ops", 7));
        assert!(matches!(&ev.kind, EventKind::ChannelUpdated { info: Some(c) } if c.topic == "t7"));
    }

    #[test]
    fn server_frames_encode_back_to_the_wire_form() {
        let text = format!(
            r#"{{"type":"event","channel":"general","ev":58,"kind":"message","message":{MESSAGE}}}"#
        );
        let frame = ServerFrame::decode(&text).unwrap();
        let expected: Value = serde_json::from_str(&text).unwrap();
        let actual = serde_json::to_value(&frame).unwrap();
        assert_eq!(actual["type"], "event");
        assert_eq!(actual["channel"], "general");
        assert_eq!(actual["ev"], 58);
        assert_eq!(actual["kind"], "message");
        assert_eq!(actual["message"]["seq"], expected["message"]["seq"]);
        assert_eq!(ServerFrame::decode(&actual.to_string()).unwrap(), frame);
    }

    #[test]
    fn unknown_kinds_and_types_are_tolerated() {
        let ServerFrame::Event(ev) = ServerFrame::decode(
            r#"{"type":"event","channel":"general","ev":60,"kind":"poll_created","poll":{}}"#,
        )
        .unwrap() else {
            panic!("not an event");
        };
        assert_eq!(ev.kind, EventKind::Unknown);
        assert_eq!(ev.ev, 60);
        assert_eq!(
            ServerFrame::decode(r#"{"type":"call_started","id":1}"#).unwrap(),
            ServerFrame::Unknown
        );
        assert!(ServerFrame::decode(r#"{"no_type":1}"#).is_err());
    }

    #[test]
    fn undecodable_event_still_yields_its_cursor() {
        let text = r#"{"type":"event","channel":"general","ev":61,"kind":"message","message":{"seq":"x"}}"#;
        assert!(ServerFrame::decode(text).is_err());
        assert_eq!(event_header(text), Some(("general".to_owned(), 61)));
        assert_eq!(
            event_header(r#"{"type":"ack","channel":"general","ev":1}"#),
            None
        );
    }

    #[test]
    fn other_server_frames_from_protocol_examples() {
        let cases: Vec<(&str, ServerFrame)> = vec![
            (
                r#"{"type":"subscribed","channel":"general","ev":57}"#,
                ServerFrame::Subscribed {
                    channel: "general".into(),
                    ev: 57,
                },
            ),
            (
                r#"{"type":"unsubscribed","channel":"ops"}"#,
                ServerFrame::Unsubscribed {
                    channel: "ops".into(),
                },
            ),
            (
                r#"{"type":"ack","client_msg_id":"web-5c1e","channel":"general","seq":12,"ts_ms":1764450000000}"#,
                ServerFrame::Ack(Ack {
                    client_msg_id: "web-5c1e".into(),
                    channel: "general".into(),
                    seq: 12,
                    ts_ms: 1_764_450_000_000,
                    duplicate: false,
                }),
            ),
            (
                r#"{"type":"nack","client_msg_id":"web-5c1e","code":"archived","message":"channel is archived"}"#,
                ServerFrame::Nack(Nack {
                    client_msg_id: "web-5c1e".into(),
                    code: "archived".into(),
                    message: "channel is archived".into(),
                }),
            ),
            (
                r#"{"type":"typing","channel":"general","user":"bob"}"#,
                ServerFrame::Typing {
                    channel: "general".into(),
                    user: "bob".into(),
                },
            ),
            (
                r#"{"type":"presence","user":"bob","status":"offline"}"#,
                ServerFrame::Presence {
                    user: "bob".into(),
                    status: PresenceStatus::Offline,
                },
            ),
            (
                r#"{"type":"read_marker","channel":"general","seq":12,"unread":0,"mentions":0}"#,
                ServerFrame::ReadMarker(ReadMarkerUpdate {
                    channel: "general".into(),
                    seq: 12,
                    unread: 0,
                    mentions: 0,
                }),
            ),
            (
                r#"{"type":"channel_removed","channel":"ops"}"#,
                ServerFrame::ChannelRemoved {
                    channel: "ops".into(),
                },
            ),
            (
                r#"{"type":"mention","channel":"general","seq":12,"by":"alice"}"#,
                ServerFrame::Mention {
                    channel: "general".into(),
                    seq: 12,
                    by: "alice".into(),
                },
            ),
            (
                r#"{"type":"error","code":"forbidden","channel":"secret"}"#,
                ServerFrame::Error {
                    code: "forbidden".into(),
                    message: String::new(),
                    channel: Some("secret".into()),
                },
            ),
            (
                r#"{"type":"error","code":"channel_not_found","message":"no such channel"}"#,
                ServerFrame::Error {
                    code: "channel_not_found".into(),
                    message: "no such channel".into(),
                    channel: None,
                },
            ),
            (r#"{"type":"pong","id":7}"#, ServerFrame::Pong { id: 7 }),
        ];
        for (text, expected) in cases {
            assert_eq!(ServerFrame::decode(text).unwrap(), expected, "{text}");
        }

        let ServerFrame::ChannelAdded { channel } = ServerFrame::decode(
            r#"{"type":"channel_added","channel":{"name":"general","title":"general","topic":"",
                "kind":"public","archived":false,"created_by":"alice","created_at_ms":5,
                "members":["alice","bob"],"last_seq":12,"last_ev":58}}"#,
        )
        .unwrap() else {
            panic!("not channel_added");
        };
        assert_eq!(channel.kind, ChannelKind::Public);
        assert_eq!(channel.last_ev, 58);

        let ServerFrame::UserUpdated { user } = ServerFrame::decode(
            r#"{"type":"user_updated","user":{"username":"bob","display_name":"Bob","role":"member","disabled":true}}"#,
        )
        .unwrap() else {
            panic!("not user_updated");
        };
        assert!(user.disabled);
    }
}
