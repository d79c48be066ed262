//! Channels: `POST`/`GET /channels`, `GET`/`PATCH /channels/{name}`, `join`, `leave`,
//! `members` (add, remove), `POST /dms` and who may read a direct message, `read` markers.

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::harness::*;

async fn get_channel(h: &Harness, token: &str, name: &str) -> (StatusCode, Value) {
    h.req(
        "GET",
        &format!("/api/v1/channels/{name}"),
        Some(token),
        None,
    )
    .await
}

async fn listed(h: &Harness, token: &str) -> Vec<Value> {
    let (s, b) = h.req("GET", "/api/v1/channels", Some(token), None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b["channels"].as_array().unwrap().clone()
}

fn names(channels: &[Value]) -> Vec<String> {
    channels
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect()
}

async fn members(h: &Harness, token: &str, name: &str) -> Vec<String> {
    let (s, b) = get_channel(h, token, name).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_channels() {
    let h = Harness::start().await;
    let alice = h.member("alice").await;
    let r = h
        .raw(
            "POST",
            "/api/v1/channels",
            Some(&alice),
            Some((
                "application/json",
                serde_json::to_vec(&json!({
                    "name": "general", "title": "General chat", "topic": "anything\ngoes"
                }))
                .unwrap(),
            )),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    assert!(r.headers.contains_key("x-conclave-index"));
    let ch = &r.json;
    assert_eq!(ch["name"], "general");
    assert_eq!(ch["title"], "General chat");
    assert_eq!(ch["topic"], "anything\ngoes");
    assert_eq!(ch["kind"], "public");
    assert_eq!(ch["archived"], false);
    assert_eq!(ch["created_by"], "alice");
    assert_eq!(ch["members"], json!(["alice"]));
    assert_eq!(ch["last_seq"], 0);
    assert!(ch["created_at_ms"].as_u64().unwrap() > 0);
    // Without a title, the title is the name.
    let ops = h.channel(&alice, "ops-2_x", "private").await;
    assert_eq!(ops["title"], "ops-2_x");
    assert_eq!(ops["kind"], "private");

    let (hr, al) = (&h, alice.as_str());
    let create =
        |v: Value| async move { hr.req("POST", "/api/v1/channels", Some(al), Some(v)).await };
    for bad in [
        "General",
        "a.b",
        "a/b",
        "-x",
        "",
        &"c".repeat(65),
        "dm:alice:bob",
    ] {
        let r = create(json!({"name": bad})).await;
        assert_err(&r, StatusCode::BAD_REQUEST, "invalid_request");
    }
    let r = create(json!({"name": "dm1", "kind": "direct"})).await;
    assert_err(&r, StatusCode::BAD_REQUEST, "invalid_request");
    let r = create(json!({"name": "x1", "kind": "secret"})).await;
    assert_err(&r, StatusCode::BAD_REQUEST, "invalid_json");
    let r = create(json!({"name": "x2", "title": "t".repeat(65)})).await;
    assert_err(&r, StatusCode::BAD_REQUEST, "invalid_request");
    let r = create(json!({"name": "x3", "topic": "t".repeat(251)})).await;
    assert_err(&r, StatusCode::BAD_REQUEST, "invalid_request");
    let r = create(json!({"name": 7})).await;
    assert_err(&r, StatusCode::BAD_REQUEST, "invalid_json");
    let r = create(json!({"name": "general", "kind": "private"})).await;
    assert_err(&r, StatusCode::CONFLICT, "channel_exists");
    assert_needs_token(&h, "POST", "/api/v1/channels", Some(json!({"name": "x4"}))).await;

    // Only the two good ones exist, and `general` kept its settings.
    assert_eq!(names(&listed(&h, &alice).await), ["general", "ops-2_x"]);
    let (_, g) = get_channel(&h, &alice, "general").await;
    assert_eq!(g["kind"], "public");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_and_reading_channels() {
    let h = Harness::start().await;
    let admin = h.admin().await;
    let alice = h.member("alice").await;
    let bob = h.member("bob").await;
    h.channel(&alice, "zeta", "public").await;
    h.channel(&alice, "alpha", "public").await;
    h.channel(&alice, "secret", "private").await;
    h.post(&alice, "zeta", "hello", "m1").await;

    let mine = listed(&h, &alice).await;
    assert_eq!(names(&mine), ["alpha", "secret", "zeta"]);
    let zeta = mine.iter().find(|c| c["name"] == "zeta").unwrap();
    assert_eq!(zeta["member"], true);
    assert_eq!(zeta["last_seq"], 1);
    assert_eq!(zeta["last_read"], 1);
    assert_eq!(zeta["unread"], 0);
    assert_eq!(zeta["mentions"], 0);
    // bob sees the public channels (not a member, one unread) but not the private one.
    let his = listed(&h, &bob).await;
    assert_eq!(names(&his), ["alpha", "zeta"]);
    let zeta = his.iter().find(|c| c["name"] == "zeta").unwrap();
    assert_eq!(zeta["member"], false);
    // The admin is no member of `secret` either.
    assert_eq!(names(&listed(&h, &admin).await), ["alpha", "zeta"]);
    assert_needs_token(&h, "GET", "/api/v1/channels", None).await;

    let (s, b) = get_channel(&h, &bob, "zeta").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["members"], json!(["alice"]));
    assert_eq!(b["last_seq"], 1);
    let (s, b) = get_channel(&h, &alice, "secret").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let r = get_channel(&h, &bob, "secret").await;
    assert_err(&r, StatusCode::FORBIDDEN, "forbidden");
    let r = get_channel(&h, &admin, "secret").await;
    assert_err(&r, StatusCode::FORBIDDEN, "forbidden");
    let r = get_channel(&h, &bob, "nothing").await;
    assert_err(&r, StatusCode::NOT_FOUND, "channel_not_found");
    assert_needs_token(&h, "GET", "/api/v1/channels/zeta", None).await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updating_and_archiving_channels() {
    let h = Harness::start().await;
    let admin = h.admin().await;
    let alice = h.member("alice").await;
    let bob = h.member("bob").await;
    h.channel(&alice, "general", "public").await;
    h.channel(&alice, "secret", "private").await;
    let patch = |token: String, name: &'static str, v: Value| {
        let h = &h;
        async move {
            h.req(
                "PATCH",
                &format!("/api/v1/channels/{name}"),
                Some(&token),
                Some(v),
            )
            .await
        }
    };

    let (s, b) = patch(
        alice.clone(),
        "general",
        json!({"title": "General", "topic": "news"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        (b["title"].as_str(), b["topic"].as_str()),
        (Some("General"), Some("news"))
    );

    // bob reads `general` but is no member: refused by the state machine.
    let r = patch(bob.clone(), "general", json!({"topic": "bob's"})).await;
    assert_err(&r, StatusCode::FORBIDDEN, "forbidden");
    let r = patch(bob.clone(), "secret", json!({"topic": "bob's"})).await;
    assert_err(&r, StatusCode::FORBIDDEN, "forbidden");
    let r = patch(alice.clone(), "general", json!({"title": "t".repeat(65)})).await;
    assert_err(&r, StatusCode::BAD_REQUEST, "invalid_request");
    let r = patch(alice.clone(), "general", json!({"topic": "\u{1}"})).await;
    assert_err(&r, StatusCode::BAD_REQUEST, "invalid_request");
    let r = patch(alice.clone(), "general", json!({"archived": "yes"})).await;
    assert_err(&r, StatusCode::BAD_REQUEST, "invalid_json");
    let r = patch(alice.clone(), "nothing", json!({"topic": "x"})).await;
    assert_err(&r, StatusCode::NOT_FOUND, "channel_not_found");
    assert_needs_token(
        &h,
        "PATCH",
        "/api/v1/channels/general",
        Some(json!({"topic": "x"})),
    )
    .await;
    let (_, g) = get_channel(&h, &alice, "general").await;
    assert_eq!(
        (g["title"].as_str(), g["topic"].as_str()),
        (Some("General"), Some("news"))
    );

    // Admins change any public channel without being members...
    let (s, b) = patch(admin.clone(), "general", json!({"topic": "by admin"})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["topic"], "by admin");
    // ...but not a private one they are not in: the read check comes first (docs: "admins
    // for any").
    let r = patch(admin.clone(), "secret", json!({"topic": "by admin"})).await;
    assert_err(&r, StatusCode::FORBIDDEN, "forbidden");

    // Archiving: posts, edits and new members are refused with 409 `archived`; unarchiving
    // allows them again.
    h.post(&alice, "general", "before", "a0").await;
    let (s, b) = patch(alice.clone(), "general", json!({"archived": true})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["archived"], true);
    let r = h
        .req(
            "POST",
            "/api/v1/channels/general/messages",
            Some(&alice),
            Some(json!({"body": "hi", "client_msg_id": "a1"})),
        )
        .await;
    assert_err(&r, StatusCode::CONFLICT, "archived");
    let r = h
        .req(
            "PATCH",
            "/api/v1/channels/general/messages/1",
            Some(&alice),
            Some(json!({"body": "rewritten"})),
        )
        .await;
    assert_err(&r, StatusCode::CONFLICT, "archived");
    let r = h
        .req(
            "POST",
            "/api/v1/channels/general/members",
            Some(&alice),
            Some(json!({"username": "bob"})),
        )
        .await;
    assert_err(&r, StatusCode::CONFLICT, "archived");
    let msgs = h.messages(&alice, "general").await;
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0]["body"], "before");
    let (s, b) = patch(alice.clone(), "general", json!({"archived": false})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["members"], json!(["alice"]));
    let m = h.post(&alice, "general", "back", "a2").await;
    assert_eq!(m["seq"], 2);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_and_leaving() {
    let h = Harness::start().await;
    let admin = h.admin().await;
    let alice = h.member("alice").await;
    let bob = h.member("bob").await;
    h.channel(&alice, "general", "public").await;
    h.channel(&alice, "secret", "private").await;
    let post = |t: String, path: String| {
        let h = &h;
        async move { h.req("POST", &path, Some(&t), None).await }
    };

    let (s, b) = post(bob.clone(), "/api/v1/channels/general/join".into()).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["members"], json!(["alice", "bob"]));
    // Joining twice is no error.
    let (s, b) = post(bob.clone(), "/api/v1/channels/general/join".into()).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["members"], json!(["alice", "bob"]));

    let r = post(bob.clone(), "/api/v1/channels/secret/join".into()).await;
    assert_err(&r, StatusCode::FORBIDDEN, "forbidden");
    let r = post(admin.clone(), "/api/v1/channels/secret/join".into()).await;
    assert_err(&r, StatusCode::FORBIDDEN, "forbidden");
    assert_eq!(members(&h, &alice, "secret").await, ["alice"]);
    let r = post(bob.clone(), "/api/v1/channels/nothing/join".into()).await;
    assert_err(&r, StatusCode::NOT_FOUND, "channel_not_found");
    // A name that cannot exist is "not found" too, without a write.
    let r = post(bob.clone(), "/api/v1/channels/Not.Valid/join".into()).await;
    assert_err(&r, StatusCode::NOT_FOUND, "channel_not_found");
    assert_needs_token(&h, "POST", "/api/v1/channels/general/join", None).await;

    let (s, b) = post(bob.clone(), "/api/v1/channels/general/leave".into()).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["members"], json!(["alice"]));
    let r = post(bob.clone(), "/api/v1/channels/general/leave".into()).await;
    assert_err(&r, StatusCode::FORBIDDEN, "forbidden");
    let r = post(bob.clone(), "/api/v1/channels/secret/leave".into()).await;
    assert_err(&r, StatusCode::FORBIDDEN, "forbidden");
    let r = post(bob.clone(), "/api/v1/channels/nothing/leave".into()).await;
    assert_err(&r, StatusCode::NOT_FOUND, "channel_not_found");
    assert_needs_token(&h, "POST", "/api/v1/channels/general/leave", None).await;
    // bob, no longer a member, cannot post.
    let r = h
        .req(
            "POST",
            "/api/v1/channels/general/messages",
            Some(&bob),
            Some(json!({"body": "hi", "client_msg_id": "b1"})),
        )
        .await;
    assert_err(&r, StatusCode::FORBIDDEN, "forbidden");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adding_and_removing_members() {
    let h = Harness::start().await;
    let admin = h.admin().await;
    let alice = h.member("alice").await;
    let bob = h.member("bob").await;
    let carol = h.member("carol").await;
    h.channel(&alice, "secret", "private").await;
    let add = |t: String, ch: &'static str, v: Value| {
        let h = &h;
        async move {
            h.req(
                "POST",
                &format!("/api/v1/channels/{ch}/members"),
                Some(&t),
                Some(v),
            )
            .await
        }
    };
    let remove = |t: String, ch: &'static str, user: &'static str| {
        let h = &h;
        async move {
            h.req(
                "DELETE",
                &format!("/api/v1/channels/{ch}/members/{user}"),
                Some(&t),
                None,
            )
            .await
        }
    };

    // A non-member cannot add anyone (not even themself) to a private channel.
    let r = add(carol.clone(), "secret", json!({"username": "carol"})).await;
    assert_err(&r, StatusCode::FORBIDDEN, "forbidden");
    let r = add(alice.clone(), "secret", json!({"username": "nobody"})).await;
    assert_err(&r, StatusCode::NOT_FOUND, "not_found");
    let r = add(alice.clone(), "secret", json!({"username": "Bad Name"})).await;
    assert_err(&r, StatusCode::BAD_REQUEST, "invalid_request");
    let r = add(alice.clone(), "secret", json!({"user": "bob"})).await;
    assert_err(&r, StatusCode::BAD_REQUEST, "invalid_json");
    let r = add(alice.clone(), "nothing", json!({"username": "bob"})).await;
    assert_err(&r, StatusCode::NOT_FOUND, "channel_not_found");
    assert_needs_token(
        &h,
        "POST",
        "/api/v1/channels/secret/members",
        Some(json!({"username": "bob"})),
    )
    .await;
    assert_eq!(members(&h, &alice, "secret").await, ["alice"]);

    let (s, b) = add(alice.clone(), "secret", json!({"username": "bob"})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["members"], json!(["alice", "bob"]));
    // bob can read it now; an admin adds carol without being a member.
    assert_eq!(get_channel(&h, &bob, "secret").await.0, StatusCode::OK);
    let (s, b) = add(admin.clone(), "secret", json!({"username": "carol"})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["members"], json!(["alice", "bob", "carol"]));

    // Removing: members may not remove others, admins may, anyone may remove themself.
    let r = remove(bob.clone(), "secret", "carol").await;
    assert_err(&r, StatusCode::FORBIDDEN, "forbidden");
    let r = remove(admin.clone(), "nothing", "carol").await;
    assert_err(&r, StatusCode::NOT_FOUND, "channel_not_found");
    assert_needs_token(&h, "DELETE", "/api/v1/channels/secret/members/carol", None).await;
    assert_eq!(
        members(&h, &alice, "secret").await,
        ["alice", "bob", "carol"]
    );
    let (s, b) = remove(admin.clone(), "secret", "carol").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["members"], json!(["alice", "bob"]));
    let (s, b) = remove(bob.clone(), "secret", "bob").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["members"], json!(["alice"]));
    let r = get_channel(&h, &bob, "secret").await;
    assert_err(&r, StatusCode::FORBIDDEN, "forbidden");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_messages_are_private_to_their_participants() {
    let h = Harness::start().await;
    let admin = h.admin().await;
    let alice = h.member("alice").await;
    let bob = h.member("bob").await;
    let carol = h.member("carol").await;
    let dm = |t: String, v: Value| {
        let h = &h;
        async move { h.req("POST", "/api/v1/dms", Some(&t), Some(v)).await }
    };

    let r = h
        .raw(
            "POST",
            "/api/v1/dms",
            Some(&bob),
            Some((
                "application/json",
                serde_json::to_vec(&json!({"users": ["alice"]})).unwrap(),
            )),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert!(r.headers.contains_key("x-conclave-index"));
    assert_eq!(r.json["name"], "dm:alice:bob");
    assert_eq!(r.json["kind"], "direct");
    assert_eq!(r.json["members"], json!(["alice", "bob"]));
    // Asking again (from either side) returns the same channel.
    let (s, b) = dm(alice.clone(), json!({"users": ["bob", "alice"]})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["name"], "dm:alice:bob");
    h.post(&alice, "dm:alice:bob", "psst", "d1").await;

    // A third user and an admin who is not a participant can neither read nor write it.
    for outsider in [&carol, &admin] {
        let r = get_channel(&h, outsider, "dm:alice:bob").await;
        assert_err(&r, StatusCode::FORBIDDEN, "forbidden");
        let r = h
            .req(
                "GET",
                "/api/v1/channels/dm:alice:bob/messages",
                Some(outsider),
                None,
            )
            .await;
        assert_err(&r, StatusCode::FORBIDDEN, "forbidden");
        let r = h
            .req(
                "POST",
                "/api/v1/channels/dm:alice:bob/messages",
                Some(outsider),
                Some(json!({"body": "me too", "client_msg_id": "x1"})),
            )
            .await;
        assert_err(&r, StatusCode::FORBIDDEN, "forbidden");
        let r = h
            .req(
                "POST",
                "/api/v1/channels/dm:alice:bob/join",
                Some(outsider),
                None,
            )
            .await;
        assert_err(&r, StatusCode::FORBIDDEN, "forbidden");
        assert!(!names(&listed(&h, outsider).await).contains(&"dm:alice:bob".to_string()));
    }
    // Participants cannot change who is in it, nor leave, nor rename it.
    let r = h
        .req(
            "POST",
            "/api/v1/channels/dm:alice:bob/members",
            Some(&alice),
            Some(json!({"username": "carol"})),
        )
        .await;
    assert_err(&r, StatusCode::FORBIDDEN, "forbidden");
    let r = h
        .req(
            "POST",
            "/api/v1/channels/dm:alice:bob/leave",
            Some(&alice),
            None,
        )
        .await;
    assert_err(&r, StatusCode::BAD_REQUEST, "invalid_request");
    let r = h
        .req(
            "PATCH",
            "/api/v1/channels/dm:alice:bob",
            Some(&alice),
            Some(json!({"title": "ours"})),
        )
        .await;
    assert_err(&r, StatusCode::BAD_REQUEST, "invalid_request");
    assert_eq!(members(&h, &alice, "dm:alice:bob").await, ["alice", "bob"]);
    let msgs = h.messages(&bob, "dm:alice:bob").await;
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0]["body"], "psst");

    // Bad requests.
    let r = dm(alice.clone(), json!({"users": []})).await;
    assert_err(&r, StatusCode::BAD_REQUEST, "invalid_request");
    let r = dm(alice.clone(), json!({"users": ["alice"]})).await;
    assert_err(&r, StatusCode::BAD_REQUEST, "invalid_request");
    let eight: Vec<String> = (0..8).map(|i| format!("u{i}")).collect();
    let r = dm(alice.clone(), json!({"users": eight})).await;
    assert_err(&r, StatusCode::BAD_REQUEST, "invalid_request");
    let r = dm(alice.clone(), json!({"users": ["nobody"]})).await;
    assert_err(&r, StatusCode::NOT_FOUND, "not_found");
    let r = dm(alice.clone(), json!({"users": ["Bad Name"]})).await;
    assert_err(&r, StatusCode::BAD_REQUEST, "invalid_request");
    let r = dm(alice.clone(), json!({"users": "bob"})).await;
    assert_err(&r, StatusCode::BAD_REQUEST, "invalid_json");
    assert_needs_token(&h, "POST", "/api/v1/dms", Some(json!({"users": ["bob"]}))).await;
    assert_eq!(
        names(&listed(&h, &alice).await),
        ["dm:alice:bob"],
        "no other DM was created"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_markers() {
    let h = Harness::start().await;
    let alice = h.member("alice").await;
    let bob = h.member("bob").await;
    h.channel(&alice, "general", "public").await;
    h.req("POST", "/api/v1/channels/general/join", Some(&bob), None)
        .await;
    for i in 1..=3 {
        h.post(&alice, "general", &format!("hi @bob {i}"), &format!("m{i}"))
            .await;
    }
    let read = |t: String, ch: &'static str, v: Value| {
        let h = &h;
        async move {
            h.req(
                "POST",
                &format!("/api/v1/channels/{ch}/read"),
                Some(&t),
                Some(v),
            )
            .await
        }
    };
    let summary = |v: &[Value]| v.iter().find(|c| c["name"] == "general").unwrap().clone();
    let before = summary(&listed(&h, &bob).await);
    assert_eq!(
        (before["unread"].as_u64(), before["mentions"].as_u64()),
        (Some(3), Some(3))
    );

    let (s, b) = read(bob.clone(), "general", json!({"seq": 2})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        b,
        json!({"channel": "general", "last_read": 2, "unread": 1, "mentions": 1})
    );
    // Markers never move back; beyond the end they stop at the last message.
    let (_, b) = read(bob.clone(), "general", json!({"seq": 1})).await;
    assert_eq!(b["last_read"], 2);
    let (_, b) = read(bob.clone(), "general", json!({"seq": 99})).await;
    assert_eq!(b["last_read"], 3);
    assert_eq!(b["unread"], 0);
    let after = summary(&listed(&h, &bob).await);
    assert_eq!(
        (after["last_read"].as_u64(), after["unread"].as_u64()),
        (Some(3), Some(0))
    );

    let carol = h.member("carol").await;
    let r = read(carol.clone(), "general", json!({"seq": 1})).await;
    assert_err(&r, StatusCode::FORBIDDEN, "forbidden");
    let r = read(bob.clone(), "nothing", json!({"seq": 1})).await;
    assert_err(&r, StatusCode::NOT_FOUND, "channel_not_found");
    let r = read(bob.clone(), "general", json!({"seq": -1})).await;
    assert_err(&r, StatusCode::BAD_REQUEST, "invalid_json");
    let r = read(bob.clone(), "general", json!({})).await;
    assert_err(&r, StatusCode::BAD_REQUEST, "invalid_json");
    assert_needs_token(
        &h,
        "POST",
        "/api/v1/channels/general/read",
        Some(json!({"seq": 1})),
    )
    .await;
    h.stop().await;
}
