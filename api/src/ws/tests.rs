//! Round trips of the WebSocket frames against the examples in docs/protocol.md: what a
//! client sends and what the server sends must read back as the same frame.

#![allow(clippy::unwrap_used, clippy::panic)]

use super::*;
use crate::rest::{ChannelKind, Role};
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
    assert!(matches!(&ev.kind, EventKind::ChannelUpdated { info: Some(c) } if c.topic == "new"));
    // A server that sends only the name still decodes.
    let ServerFrame::Event(ev) =
        ServerFrame::decode(r#"{"type":"event","channel":"ops","ev":5,"kind":"channel_updated"}"#)
            .unwrap()
    else {
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
    let text =
        r#"{"type":"event","channel":"general","ev":61,"kind":"message","message":{"seq":"x"}}"#;
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
