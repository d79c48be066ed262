//! Messages: post (idempotent retries, threads), history (`after`, `before`, `limit`),
//! `threads/{root}`, edit, delete (tombstones), reactions, pins and `pins`; who may do each,
//! and that refused requests leave the history as it was.

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::harness::*;

/// alice (member of `general`, public, and `secret`, private), bob (member of `general`),
/// carol (member of nothing), and the admin (member of nothing).
struct Chat {
    h: Harness,
    admin: String,
    alice: String,
    bob: String,
    carol: String,
}

async fn chat() -> Chat {
    let h = Harness::start().await;
    let admin = h.admin().await;
    let alice = h.member("alice").await;
    let bob = h.member("bob").await;
    let carol = h.member("carol").await;
    h.channel(&alice, "general", "public").await;
    h.channel(&alice, "secret", "private").await;
    let (s, b) = h
        .req("POST", "/api/v1/channels/general/join", Some(&bob), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    Chat {
        h,
        admin,
        alice,
        bob,
        carol,
    }
}

fn msg(body: &str, id: &str) -> Option<Value> {
    Some(json!({"body": body, "client_msg_id": id}))
}

async fn get(h: &Harness, token: &str, path: &str) -> (StatusCode, Value) {
    h.req("GET", path, Some(token), None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posting_messages() {
    let Chat {
        h,
        alice,
        bob,
        carol,
        ..
    } = chat().await;
    let path = "/api/v1/channels/general/messages";
    let r = h
        .raw(
            "POST",
            path,
            Some(&alice),
            Some((
                "application/json",
                serde_json::to_vec(&json!({"body": "hello @bob", "client_msg_id": "c-1:a.b_c"}))
                    .unwrap(),
            )),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    assert!(r.headers.contains_key("x-conclave-index"));
    let m = &r.json;
    assert_eq!(m["channel"], "general");
    assert_eq!(m["seq"], 1);
    assert_eq!(m["author"], "alice");
    assert_eq!(m["body"], "hello @bob");
    assert_eq!(m["client_msg_id"], "c-1:a.b_c");
    assert_eq!(m["duplicate"], false);
    assert_eq!(m["deleted"], false);
    assert_eq!(m["mentions"], json!(["bob"]));
    assert!(m["ts_ms"].as_u64().unwrap() > 0);

    // A retry with the same client_msg_id returns the original, writes nothing new.
    let (s, b) = h
        .req(
            "POST",
            path,
            Some(&alice),
            msg("different body", "c-1:a.b_c"),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["duplicate"], true);
    assert_eq!(b["seq"], 1);
    assert_eq!(b["body"], "hello @bob");
    // Another author may use the same id.
    let (s, b) = h
        .req("POST", path, Some(&bob), msg("hi", "c-1:a.b_c"))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(b["seq"], 2);
    // The body limit is 16384 bytes, inclusive.
    let (s, b) = h
        .req("POST", path, Some(&alice), msg(&"x".repeat(16384), "big"))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(b["seq"], 3);

    let refusals: Vec<(&str, Option<Value>, StatusCode, &str)> = vec![
        (
            "empty",
            msg("", "e1"),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "blank",
            msg(" \n\t", "e2"),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "oversize",
            msg(&"x".repeat(16385), "e3"),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "bad id",
            msg("hi", "a b"),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "empty id",
            msg("hi", ""),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "long id",
            msg("hi", &"i".repeat(65)),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "no id",
            Some(json!({"body": "hi"})),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "body not a string",
            Some(json!({"body": 5, "client_msg_id": "e4"})),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "missing root",
            Some(json!({"body": "re", "client_msg_id": "e5", "thread_root": 99})),
            StatusCode::NOT_FOUND,
            "message_not_found",
        ),
    ];
    for (what, body, status, code) in refusals {
        let r = h.req("POST", path, Some(&alice), body).await;
        assert_eq!(r.0, status, "{what}: {}", r.1);
        assert_err(&r, status, code);
    }
    // carol is no member of the public channel: 403; unknown channel: 404.
    let r = h.req("POST", path, Some(&carol), msg("hi", "c1")).await;
    assert_err(&r, StatusCode::FORBIDDEN, "forbidden");
    let r = h
        .req(
            "POST",
            "/api/v1/channels/nothing/messages",
            Some(&alice),
            msg("hi", "n1"),
        )
        .await;
    assert_err(&r, StatusCode::NOT_FOUND, "channel_not_found");
    assert_needs_token(&h, "POST", path, msg("hi", "t1")).await;

    // Exactly the three accepted messages, in order.
    let all = h.messages(&alice, "general").await;
    let seqs: Vec<u64> = all.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [1, 2, 3]);
    assert_eq!(all[0]["body"], "hello @bob");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_history() {
    let Chat {
        h,
        admin,
        alice,
        carol,
        ..
    } = chat().await;
    for i in 1..=5 {
        h.post(&alice, "general", &format!("m{i}"), &format!("id{i}"))
            .await;
    }
    h.post(&alice, "secret", "hidden", "s1").await;
    let seqs = |b: &Value| -> Vec<u64> {
        b["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["seq"].as_u64().unwrap())
            .collect()
    };
    let base = "/api/v1/channels/general/messages";

    // carol reads the public channel without being a member.
    let (s, b) = get(&h, &carol, base).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(seqs(&b), [1, 2, 3, 4, 5]);
    assert_eq!(b["last_seq"], 5);
    assert!(b["last_ev"].as_u64().is_some(), "{b}");
    assert!(b.get("has_more").is_none(), "{b}");
    let (_, b) = get(&h, &carol, &format!("{base}?after=2&limit=2")).await;
    assert_eq!(seqs(&b), [3, 4]);
    let (_, b) = get(
        &h,
        &carol,
        &format!("{base}?before=9007199254740991&limit=2"),
    )
    .await;
    assert_eq!(seqs(&b), [4, 5]);
    assert_eq!(b["has_more"], true);
    let (_, b) = get(&h, &carol, &format!("{base}?before=3&limit=10")).await;
    assert_eq!(seqs(&b), [1, 2]);
    assert_eq!(b["has_more"], false);
    let (_, b) = get(&h, &carol, &format!("{base}?limit=1000")).await;
    assert_eq!(seqs(&b).len(), 5);

    for q in [
        "limit=0",
        "limit=1001",
        "after=1&before=3",
        "after=abc",
        "limit=-1",
        "around=3",
    ] {
        let r = get(&h, &carol, &format!("{base}?{q}")).await;
        assert_eq!(r.0, StatusCode::BAD_REQUEST, "{q}: {}", r.1);
        assert_err(&r, StatusCode::BAD_REQUEST, "invalid_request");
    }
    // Private channels: members only, admins included.
    let (s, b) = get(&h, &alice, "/api/v1/channels/secret/messages").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(seqs(&b), [1]);
    for outsider in [&carol, &admin] {
        let r = get(&h, outsider, "/api/v1/channels/secret/messages").await;
        assert_err(&r, StatusCode::FORBIDDEN, "forbidden");
    }
    let r = get(&h, &carol, "/api/v1/channels/nothing/messages").await;
    assert_err(&r, StatusCode::NOT_FOUND, "channel_not_found");
    assert_needs_token(&h, "GET", base, None).await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn threads() {
    let Chat {
        h,
        alice,
        bob,
        carol,
        ..
    } = chat().await;
    let root = h.post(&alice, "general", "root", "r").await;
    assert_eq!(root["seq"], 1);
    let path = "/api/v1/channels/general/messages";
    let (s, reply) = h
        .req(
            "POST",
            path,
            Some(&bob),
            Some(json!({"body": "reply", "client_msg_id": "r1", "thread_root": 1})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{reply}");
    assert_eq!(reply["thread_root"], 1);
    assert_eq!(reply["seq"], 2);
    // Replies go to the root, not to another reply.
    let r = h
        .req(
            "POST",
            path,
            Some(&bob),
            Some(json!({"body": "nested", "client_msg_id": "r2", "thread_root": 2})),
        )
        .await;
    assert_err(&r, StatusCode::BAD_REQUEST, "invalid_request");

    let (s, b) = get(&h, &carol, "/api/v1/channels/general/threads/1").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["root"]["seq"], 1);
    assert_eq!(b["root"]["reply_count"], 1);
    let replies = b["replies"].as_array().unwrap();
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0]["body"], "reply");

    let r = get(&h, &carol, "/api/v1/channels/general/threads/99").await;
    assert_err(&r, StatusCode::NOT_FOUND, "message_not_found");
    let r = get(&h, &carol, "/api/v1/channels/nothing/threads/1").await;
    assert_err(&r, StatusCode::NOT_FOUND, "channel_not_found");
    h.post(&alice, "secret", "s", "s1").await;
    let r = get(&h, &carol, "/api/v1/channels/secret/threads/1").await;
    assert_err(&r, StatusCode::FORBIDDEN, "forbidden");
    assert_needs_token(&h, "GET", "/api/v1/channels/general/threads/1", None).await;
    // A root that is not a number is refused by axum's path extractor: 400, plain text (not
    // the documented JSON error body).
    let r = h
        .raw(
            "GET",
            "/api/v1/channels/general/threads/one",
            Some(&carol),
            None,
        )
        .await;
    // A path part that is not a number gets the API's JSON error like every other bad input.
    assert_error(
        (r.status, &r.json),
        StatusCode::BAD_REQUEST,
        "invalid_request",
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editing_messages() {
    let Chat {
        h,
        alice,
        bob,
        admin,
        ..
    } = chat().await;
    h.post(&alice, "general", "first", "e1").await;
    let path = "/api/v1/channels/general/messages/1";
    let edit = |t: String, p: &'static str, body: Value| {
        let h = &h;
        async move { h.req("PATCH", p, Some(&t), Some(body)).await }
    };

    let r = h
        .raw(
            "PATCH",
            path,
            Some(&alice),
            Some((
                "application/json",
                serde_json::to_vec(&json!({"body": "first, edited"})).unwrap(),
            )),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert!(r.headers.contains_key("x-conclave-index"));
    let b = r.json;
    assert_eq!(b["body"], "first, edited");
    assert!(b["edited_at_ms"].as_u64().is_some(), "{b}");
    // A seq that is not a number is refused by axum's path extractor: 400 in plain text, not
    // the documented JSON error body.
    let r = h
        .raw(
            "PATCH",
            "/api/v1/channels/general/messages/first",
            Some(&alice),
            Some(("application/json", br#"{"body":"x"}"#.to_vec())),
        )
        .await;
    // A path part that is not a number gets the API's JSON error like every other bad input.
    assert_error(
        (r.status, &r.json),
        StatusCode::BAD_REQUEST,
        "invalid_request",
    );

    for other in [&bob, &admin] {
        let r = edit(other.clone(), path, json!({"body": "hijack"})).await;
        assert_err(&r, StatusCode::FORBIDDEN, "forbidden");
    }
    let r = edit(alice.clone(), path, json!({"body": "  "})).await;
    assert_err(&r, StatusCode::BAD_REQUEST, "invalid_request");
    let r = edit(alice.clone(), path, json!({"body": "x".repeat(16385)})).await;
    assert_err(&r, StatusCode::BAD_REQUEST, "invalid_request");
    let r = edit(alice.clone(), path, json!({"text": "x"})).await;
    assert_err(&r, StatusCode::BAD_REQUEST, "invalid_json");
    let r = edit(
        alice.clone(),
        "/api/v1/channels/general/messages/9",
        json!({"body": "x"}),
    )
    .await;
    assert_err(&r, StatusCode::NOT_FOUND, "message_not_found");
    let r = edit(
        alice.clone(),
        "/api/v1/channels/nothing/messages/1",
        json!({"body": "x"}),
    )
    .await;
    assert_err(&r, StatusCode::NOT_FOUND, "channel_not_found");
    assert_needs_token(&h, "PATCH", path, Some(json!({"body": "x"}))).await;
    let all = h.messages(&alice, "general").await;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0]["body"], "first, edited");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_messages_leaves_tombstones() {
    let Chat {
        h,
        alice,
        bob,
        admin,
        carol,
    } = chat().await;
    h.post(&alice, "general", "one", "d1").await;
    h.post(&bob, "general", "two", "d2").await;
    let del = |t: String, p: &'static str| {
        let h = &h;
        async move { h.req("DELETE", p, Some(&t), None).await }
    };
    let one = "/api/v1/channels/general/messages/1";
    let two = "/api/v1/channels/general/messages/2";

    for other in [&bob, &carol] {
        let r = del(other.clone(), one).await;
        assert_err(&r, StatusCode::FORBIDDEN, "forbidden");
    }
    let r = del(alice.clone(), "/api/v1/channels/general/messages/7").await;
    assert_err(&r, StatusCode::NOT_FOUND, "message_not_found");
    let r = del(alice.clone(), "/api/v1/channels/nothing/messages/1").await;
    assert_err(&r, StatusCode::NOT_FOUND, "channel_not_found");
    assert_needs_token(&h, "DELETE", one, None).await;
    assert_eq!(h.messages(&alice, "general").await[0]["body"], "one");

    let (s, b) = del(alice.clone(), one).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        (b["seq"].as_u64(), &b["deleted"], &b["body"]),
        (Some(1), &json!(true), &json!(""))
    );
    // An admin outside the channel may not delete (deleting needs membership); once a
    // member, an admin deletes another user's message.
    let r = del(admin.clone(), two).await;
    assert_err(&r, StatusCode::FORBIDDEN, "forbidden");
    let (s, b) = h
        .req("POST", "/api/v1/channels/general/join", Some(&admin), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = del(admin.clone(), two).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["deleted"], true);
    // The history keeps both seqs as tombstones; deleting again is "not found".
    let all = h.messages(&bob, "general").await;
    assert_eq!(all.len(), 2);
    assert!(all.iter().all(|m| m["deleted"] == true && m["body"] == ""));
    let r = del(alice.clone(), one).await;
    assert_err(&r, StatusCode::NOT_FOUND, "message_not_found");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reactions() {
    let Chat {
        h,
        alice,
        bob,
        carol,
        ..
    } = chat().await;
    h.post(&alice, "general", "react to me", "x1").await;
    // 👍, URL-encoded.
    let thumbs = "/api/v1/channels/general/messages/1/reactions/%F0%9F%91%8D";
    let (s, b) = h.req("PUT", thumbs, Some(&bob), None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["reactions"], json!({"👍": ["bob"]}));
    let (s, b) = h.req("PUT", thumbs, Some(&alice), None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["reactions"], json!({"👍": ["alice", "bob"]}));
    let (s, b) = h.req("DELETE", thumbs, Some(&bob), None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["reactions"], json!({"👍": ["alice"]}));

    // carol may read the public channel but is no member.
    for m in ["PUT", "DELETE"] {
        let r = h.req(m, thumbs, Some(&carol), None).await;
        assert_err(&r, StatusCode::FORBIDDEN, "forbidden");
        assert_needs_token(&h, m, thumbs, None).await;
    }
    let long = format!(
        "/api/v1/channels/general/messages/1/reactions/{}",
        "x".repeat(33)
    );
    let r = h.req("PUT", &long, Some(&alice), None).await;
    assert_err(&r, StatusCode::BAD_REQUEST, "invalid_request");
    let r = h
        .req(
            "PUT",
            "/api/v1/channels/general/messages/1/reactions/a%20b",
            Some(&alice),
            None,
        )
        .await;
    assert_err(&r, StatusCode::BAD_REQUEST, "invalid_request");
    let r = h
        .req(
            "PUT",
            "/api/v1/channels/general/messages/5/reactions/ok",
            Some(&alice),
            None,
        )
        .await;
    assert_err(&r, StatusCode::NOT_FOUND, "message_not_found");
    let r = h
        .req(
            "PUT",
            "/api/v1/channels/nothing/messages/1/reactions/ok",
            Some(&alice),
            None,
        )
        .await;
    assert_err(&r, StatusCode::NOT_FOUND, "channel_not_found");
    let all = h.messages(&alice, "general").await;
    assert_eq!(all[0]["reactions"], json!({"👍": ["alice"]}));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pins() {
    let Chat {
        h,
        alice,
        bob,
        carol,
        admin,
    } = chat().await;
    h.post(&alice, "general", "pin me", "p1").await;
    h.post(&alice, "general", "not me", "p2").await;
    let pin = "/api/v1/channels/general/messages/1/pin";
    let pins = |t: String, ch: &'static str| {
        let h = &h;
        async move {
            h.req(
                "GET",
                &format!("/api/v1/channels/{ch}/pins"),
                Some(&t),
                None,
            )
            .await
        }
    };

    let (s, b) = h.req("PUT", pin, Some(&bob), None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["pinned"], true);
    // carol, no member, reads the pins of the public channel but may not change them.
    let (s, b) = pins(carol.clone(), "general").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let pinned: Vec<u64> = b["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(pinned, [1]);
    for m in ["PUT", "DELETE"] {
        let r = h.req(m, pin, Some(&carol), None).await;
        assert_err(&r, StatusCode::FORBIDDEN, "forbidden");
        assert_needs_token(&h, m, pin, None).await;
        let r = h
            .req(
                m,
                "/api/v1/channels/general/messages/9/pin",
                Some(&alice),
                None,
            )
            .await;
        assert_err(&r, StatusCode::NOT_FOUND, "message_not_found");
        let r = h
            .req(
                m,
                "/api/v1/channels/nothing/messages/1/pin",
                Some(&alice),
                None,
            )
            .await;
        assert_err(&r, StatusCode::NOT_FOUND, "channel_not_found");
    }
    let (_, b) = pins(alice.clone(), "general").await;
    assert_eq!(b["messages"].as_array().unwrap().len(), 1);
    // Admins may unpin without being members.
    let (s, b) = h.req("DELETE", pin, Some(&admin), None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["pinned"], false);
    let (_, b) = pins(alice.clone(), "general").await;
    assert_eq!(b["messages"], json!([]));

    h.post(&alice, "secret", "s", "s1").await;
    let r = pins(carol.clone(), "secret").await;
    assert_err(&r, StatusCode::FORBIDDEN, "forbidden");
    let r = pins(carol.clone(), "nothing").await;
    assert_err(&r, StatusCode::NOT_FOUND, "channel_not_found");
    assert_needs_token(&h, "GET", "/api/v1/channels/general/pins", None).await;
    h.stop().await;
}

/// `X-Conclave-Index` (docs/api.md, "Read-your-writes"): every successful channel and message
/// write names the log index that holds it, and a read with `X-Conclave-Min-Index` set to it
/// sees the write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_report_their_index() {
    let Chat { h, alice, bob, .. } = chat().await;
    h.post(&alice, "general", "one", "i1").await;
    let writes: Vec<(&str, &str, Option<Value>)> = vec![
        ("POST", "/api/v1/channels", Some(json!({"name": "more"}))),
        (
            "PATCH",
            "/api/v1/channels/general",
            Some(json!({"topic": "t"})),
        ),
        (
            "POST",
            "/api/v1/channels/more/members",
            Some(json!({"username": "bob"})),
        ),
        ("DELETE", "/api/v1/channels/more/members/alice", None),
        ("POST", "/api/v1/channels/more/join", None),
        ("POST", "/api/v1/channels/more/leave", None),
        ("POST", "/api/v1/dms", Some(json!({"users": ["bob"]}))),
        (
            "POST",
            "/api/v1/channels/general/messages",
            msg("two", "i2"),
        ),
        (
            "PATCH",
            "/api/v1/channels/general/messages/1",
            Some(json!({"body": "uno"})),
        ),
        (
            "PUT",
            "/api/v1/channels/general/messages/1/reactions/ok",
            None,
        ),
        (
            "DELETE",
            "/api/v1/channels/general/messages/1/reactions/ok",
            None,
        ),
        ("PUT", "/api/v1/channels/general/messages/1/pin", None),
        ("DELETE", "/api/v1/channels/general/messages/1/pin", None),
        (
            "POST",
            "/api/v1/channels/general/read",
            Some(json!({"seq": 2})),
        ),
        ("DELETE", "/api/v1/channels/general/messages/2", None),
        ("PATCH", "/api/v1/me", Some(json!({"display_name": "A"}))),
    ];
    let mut last = 0;
    for (method, path, body) in writes {
        let r = h.call(method, path, Some(&alice), body).await;
        assert!(
            r.status.is_success(),
            "{method} {path}: {} {}",
            r.status,
            r.json
        );
        let index: u64 = r
            .headers
            .get("x-conclave-index")
            .unwrap_or_else(|| panic!("{method} {path}: no X-Conclave-Index"))
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(index > last, "{method} {path}: index {index} after {last}");
        last = index;
    }
    let req = axum::http::Request::builder()
        .uri("/api/v1/channels/general/messages")
        .header("authorization", format!("Bearer {bob}"))
        .header("x-conclave-min-index", last.to_string())
        .body(axum::body::Body::empty())
        .unwrap();
    let r = h.send(req).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    let m = &r.json["messages"];
    assert_eq!(m[0]["body"], "uno");
    assert_eq!(m[1]["deleted"], true);
    h.stop().await;
}

/// Pins and reactions answer with the whole message, so a caller who may not read the channel
/// (here an admin outside a DM) is refused before anything is written or shown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outsiders_cannot_pin_or_react_in_a_direct_message() {
    let Chat {
        h,
        alice,
        carol,
        admin,
        ..
    } = chat().await;
    let (s, b) = h
        .req(
            "POST",
            "/api/v1/dms",
            Some(&alice),
            Some(json!({"users": ["bob"]})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    h.post(&alice, "dm:alice:bob", "between us", "d1").await;
    for token in [&admin, &carol] {
        for (m, path) in [
            ("PUT", "/api/v1/channels/dm:alice:bob/messages/1/pin"),
            ("DELETE", "/api/v1/channels/dm:alice:bob/messages/1/pin"),
            (
                "PUT",
                "/api/v1/channels/dm:alice:bob/messages/1/reactions/ok",
            ),
            (
                "DELETE",
                "/api/v1/channels/dm:alice:bob/messages/1/reactions/ok",
            ),
        ] {
            let r = h.req(m, path, Some(token), None).await;
            assert_err(&r, StatusCode::FORBIDDEN, "forbidden");
            assert!(
                !r.1.to_string().contains("between us"),
                "{m} {path}: {}",
                r.1
            );
        }
    }
    // Nothing changed: the message is neither pinned nor reacted to.
    let (s, b) = get(&h, &alice, "/api/v1/channels/dm:alice:bob/messages?after=0").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["messages"][0]["pinned"], false, "{b}");
    assert_eq!(b["messages"][0]["reactions"], json!({}), "{b}");
    // A participant still can.
    let (s, b) = h
        .req(
            "PUT",
            "/api/v1/channels/dm:alice:bob/messages/1/pin",
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["pinned"], true);
    h.stop().await;
}
