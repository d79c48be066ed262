//! The server's side of the WebSocket frame format (`docs/protocol.md`): the frames themselves
//! are `api::ws`'s (their payloads come from `crate::wire`); this module encodes a frame once
//! for every connection that receives it, and reads client frames as leniently as this server
//! always has.
//!
//! Lenient beyond `api::ws::ClientFrame`: `ping` may carry any JSON `id` (echoed as it came),
//! and `auth` may leave out `v` (version 1). Strict beyond it: a presence status this server
//! does not know is a protocol error, not `unknown`. Must never hold connection state or talk
//! to the cluster; `conn.rs` and `hub.rs` decide what to send.

pub use api::ws::{
    Ack, ChannelEvent as EventFrame, ClientFrame, EventKind as EventBody, Hello, Nack, NodeAddr,
    PROTOCOL_VERSION, PresenceStatus, ReadMarkerUpdate, SecretToken, ServerFrame, close,
};
use axum::extract::ws::Utf8Bytes;
use serde::{Deserialize, Serialize};

/// Encodes once; the bytes are shared by every connection that receives the frame.
pub fn encode(frame: &ServerFrame) -> Utf8Bytes {
    Utf8Bytes::from(frame.to_json())
}

/// A client frame as this server reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    Frame(ClientFrame),
    /// A `ping`, with its `id` as the client sent it (`null` when absent).
    Ping(serde_json::Value),
}

/// The forms `api::ws::ClientFrame` does not take but this server always has.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Lenient {
    Auth {
        /// Still checked when present: only its absence is tolerated.
        #[serde(default = "version_one")]
        v: u32,
        token: SecretToken,
    },
    Ping {
        #[serde(default)]
        id: serde_json::Value,
    },
}

fn version_one() -> u32 {
    1
}

/// Reads one client text frame (see the module docs for what is accepted beyond the types).
pub fn read_client_frame(text: &str) -> Result<Inbound, serde_json::Error> {
    use serde::de::Error as _;
    match serde_json::from_str::<ClientFrame>(text) {
        Ok(ClientFrame::Ping { id }) => Ok(Inbound::Ping(id.into())),
        Ok(ClientFrame::Presence {
            status: PresenceStatus::Unknown,
        }) => Err(serde_json::Error::custom("unknown presence status")),
        Ok(frame) => Ok(Inbound::Frame(frame)),
        Err(e) => match serde_json::from_str::<Lenient>(text) {
            Ok(Lenient::Auth { v, token }) => Ok(Inbound::Frame(ClientFrame::Auth { v, token })),
            Ok(Lenient::Ping { id }) => Ok(Inbound::Ping(id)),
            Err(_) => Err(e),
        },
    }
}

/// `pong`, echoing the `id` of the `ping` whatever JSON it was.
pub fn pong(id: &serde_json::Value) -> Utf8Bytes {
    match id.as_u64() {
        Some(id) => encode(&ServerFrame::Pong { id }),
        None => {
            #[derive(Serialize)]
            #[serde(tag = "type", rename = "pong")]
            struct Pong<'a> {
                id: &'a serde_json::Value,
            }
            Utf8Bytes::from(serde_json::to_string(&Pong { id }).unwrap_or_else(|_| "{}".into()))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    #[test]
    fn client_frames_parse_as_documented() {
        let f = read_client_frame(r#"{"type":"auth","v":1,"token":"cv1.x.1"}"#).unwrap();
        assert_eq!(f, Inbound::Frame(ClientFrame::auth("cv1.x.1")));
        let f = read_client_frame(r#"{"type":"auth","token":"cv1.x.1"}"#).unwrap();
        assert_eq!(f, Inbound::Frame(ClientFrame::auth("cv1.x.1")));
        let f =
            read_client_frame(r#"{"type":"subscribe","channel":"general","after":41}"#).unwrap();
        assert_eq!(
            f,
            Inbound::Frame(ClientFrame::Subscribe {
                channel: "general".into(),
                after: Some(41)
            })
        );
        let f = read_client_frame(
            r#"{"type":"send","channel":"general","body":"hello","client_msg_id":"web-1","thread_root":null}"#,
        )
        .unwrap();
        assert!(matches!(
            f,
            Inbound::Frame(ClientFrame::Send {
                thread_root: None,
                ..
            })
        ));
        assert!(read_client_frame(r#"{"type":"nope"}"#).is_err());
        assert!(read_client_frame(r#"{"type":"send","channel":"x"}"#).is_err());
        assert!(read_client_frame(r#"{"type":"presence","status":"busy"}"#).is_err());
        assert!(read_client_frame(r#"{"type":"auth","v":"x","token":"t"}"#).is_err());
    }

    #[test]
    fn ping_echoes_any_id() {
        for (text, id) in [
            (r#"{"type":"ping","id":7}"#, json!(7)),
            (r#"{"type":"ping","id":"a"}"#, json!("a")),
            (r#"{"type":"ping"}"#, Value::Null),
        ] {
            let Inbound::Ping(got) = read_client_frame(text).unwrap() else {
                panic!("not a ping: {text}");
            };
            assert_eq!(got, id);
            let pong: Value = serde_json::from_str(pong(&got).as_str()).unwrap();
            assert_eq!(pong, json!({"type": "pong", "id": id}));
        }
    }

    #[test]
    fn server_frames_have_type_and_kind() {
        let f = ServerFrame::Event(EventFrame {
            channel: "general".into(),
            ev: 3,
            kind: EventBody::MemberJoined {
                user: "bob".into(),
                by: Some("bob".into()),
            },
        });
        let text = encode(&f);
        assert_eq!(
            text.as_str(),
            r#"{"type":"event","channel":"general","ev":3,"kind":"member_joined","user":"bob","by":"bob"}"#
        );
    }
}
