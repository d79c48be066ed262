//! Wire-shape tests of the REST types: what the server sends decodes, what clients send encodes
//! as documented.

#![allow(clippy::unwrap_used)]

use super::*;

#[test]
fn role_is_lowercase_on_the_wire() {
    assert_eq!(serde_json::to_string(&Role::Admin).unwrap(), "\"admin\"");
    assert_eq!(
        serde_json::from_str::<Role>("\"member\"").unwrap(),
        Role::Member
    );
}

#[test]
fn cluster_status_accepts_documented_example_and_unknown_fields() {
    let body = r#"{
      "node_id": 2, "leader_id": 1, "term": 3, "future_field": [1,2],
      "nodes": [
        {"id":1,"api_addr":"127.0.0.1:8080","cluster_addr":"127.0.0.1:9080","voter":true,
         "role":"leader","term":3,"leader_id":1,"last_log_index":120,"last_applied":120,
         "healthy":true,"ready":true,"error":null},
        {"id":3,"api_addr":"127.0.0.1:8082","cluster_addr":"127.0.0.1:9082","voter":true,
         "role":"unknown","healthy":false,"ready":false,"error":"timed out","zone":"b"}
      ]
    }"#;
    let status: ClusterStatus = serde_json::from_str(body).unwrap();
    assert_eq!(status.leader_id, Some(1));
    assert_eq!(status.nodes.len(), 2);
    assert_eq!(status.nodes[0].last_applied, Some(120));
    assert_eq!(status.nodes[1].term, None);
    assert_eq!(status.nodes[1].error.as_deref(), Some("timed out"));
}

#[test]
fn posted_message_flattens_duplicate_flag() {
    let body = r#"{"channel":"general","seq":42,"author":"alice","body":"hello",
        "ts_ms":1767225600123,"client_msg_id":"c-5f1e-0001","duplicate":true}"#;
    let posted: PostedMessage = serde_json::from_str(body).unwrap();
    assert_eq!(posted.message.seq, 42);
    assert_eq!(posted.duplicate, Some(true));
}

#[test]
fn old_server_objects_decode_with_defaults() {
    let m: Message = serde_json::from_str(
        r#"{"channel":"general","seq":42,"author":"alice","body":"hello",
            "ts_ms":1767225600123,"client_msg_id":"c-5f1e-0001"}"#,
    )
    .unwrap();
    assert_eq!(m.thread_root, None);
    assert!(!m.deleted && !m.pinned && m.reactions.is_empty() && m.mentions.is_empty());
    let c: Channel = serde_json::from_str(
        r#"{"name":"general","created_by":"alice","created_at_ms":1,"members":["alice"],"last_seq":0}"#,
    )
    .unwrap();
    assert_eq!(c.kind, ChannelKind::Public);
    assert_eq!((c.last_ev, c.unread, c.archived), (0, None, false));
    let u: User =
        serde_json::from_str(r#"{"username":"a","role":"admin","disabled":false}"#).unwrap();
    assert_eq!(u.display_name, "");
}

#[test]
fn documented_v1_objects_decode() {
    let m: Message = serde_json::from_str(
        r#"{"channel":"general","seq":12,"author":"alice","body":"hi @bob","ts_ms":1764450000000,
         "client_msg_id":"web-3f2a","thread_root":null,"reply_count":0,"edited_at_ms":null,
         "deleted":false,"pinned":false,"reactions":{"👍":["bob"]},"mentions":["bob"]}"#,
    )
    .unwrap();
    assert_eq!(m.reactions["👍"], vec!["bob"]);
    assert_eq!(m.mentions, vec!["bob"]);
    let c: Channel = serde_json::from_str(
        r#"{"name":"dm:alice:bob","title":"general","topic":"","kind":"direct","archived":false,
         "created_by":"alice","created_at_ms":5,"members":["alice","bob"],"last_seq":12,
         "last_ev":58,"member":true,"last_read":10,"unread":2,"mentions":1}"#,
    )
    .unwrap();
    assert_eq!(c.kind, ChannelKind::Direct);
    assert_eq!((c.last_ev, c.unread, c.mentions), (58, Some(2), Some(1)));
    let k: ChannelKind = serde_json::from_str(r#""dm""#).unwrap();
    assert_eq!(k, ChannelKind::Direct);
    let k: ChannelKind = serde_json::from_str(r#""broadcast""#).unwrap();
    assert_eq!(k, ChannelKind::Unknown);
}

#[test]
fn patches_send_only_what_changes() {
    let p = UserPatch {
        disabled: Some(true),
        ..UserPatch::default()
    };
    assert_eq!(serde_json::to_string(&p).unwrap(), r#"{"disabled":true}"#);
    let p = ChannelPatch {
        topic: Some("t".into()),
        ..ChannelPatch::default()
    };
    assert_eq!(serde_json::to_string(&p).unwrap(), r#"{"topic":"t"}"#);
    let c = NewChannel::private("ops").with_topic("x");
    assert_eq!(
        serde_json::to_string(&c).unwrap(),
        r#"{"name":"ops","kind":"private","topic":"x"}"#
    );
}

#[test]
fn readyz_without_optional_fields() {
    let r: Readyz = serde_json::from_str(r#"{"ready":false}"#).unwrap();
    assert_eq!(
        r,
        Readyz {
            ready: false,
            node_id: None,
            reason: None,
            draining: false,
        }
    );
}
