//! Issue 11's hardening of answers and input: HSTS only over HTTPS, the web client's CSP
//! naming the cluster's nodes instead of any host, names/titles/topics without format or
//! control characters, the password policy (12 characters, common passwords, the username
//! inside), and the `access.denied` security event of a 403.

use std::io::Write;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::json;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hsts_only_on_answers_to_https_requests() {
    let h = Harness::start().await;
    for path in ["/api/v1/cluster", "/api/v1/nope", "/", "/healthz"] {
        let mut req = Request::builder().uri(path).body(Body::empty()).unwrap();
        req.extensions_mut().insert(web::security_log::ViaHttps);
        let r = h.send(req).await;
        assert_eq!(
            r.headers
                .get(header::STRICT_TRANSPORT_SECURITY)
                .map(|v| v.to_str().unwrap()),
            Some("max-age=31536000"),
            "{path} over HTTPS"
        );
        let r = h.raw("GET", path, None, None).await;
        assert!(
            !r.headers.contains_key(header::STRICT_TRANSPORT_SECURITY),
            "{path} over plain HTTP must not carry HSTS"
        );
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pages_csp_connects_only_to_the_clusters_nodes() {
    let h = Harness::start().await;
    let r = h.raw("GET", "/", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    let csp = r.headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    let connect = csp
        .split(';')
        .map(str::trim)
        .find(|d| d.starts_with("connect-src"))
        .unwrap();
    // The harness's one member advertises API_ADDR; the page came over plain HTTP.
    assert_eq!(
        connect,
        format!("connect-src 'self' http://{API_ADDR} ws://{API_ADDR}")
    );
    // Over HTTPS, no plain-HTTP source (this member has no HTTPS address: 'self' only).
    let mut req = Request::builder().uri("/").body(Body::empty()).unwrap();
    req.extensions_mut().insert(web::security_log::ViaHttps);
    let r = h.send(req).await;
    let csp = r.headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(csp.contains("connect-src 'self';"), "{csp}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_titles_and_topics_refuse_invisible_characters() {
    let h = Harness::start().await;
    let alice = h.member("alice").await;
    h.channel(&alice, "general", "public").await;
    for bad in [
        "ad\u{202E}nimda",
        "al\u{200B}ice",
        "\u{FEFF}x",
        "a\u{2066}b",
        "bell\u{7}",
    ] {
        let r = h
            .req(
                "PATCH",
                "/api/v1/me",
                Some(&alice),
                Some(json!({"display_name": bad})),
            )
            .await;
        assert_err(&r, StatusCode::BAD_REQUEST, "invalid_request");
        assert!(
            r.1["error"]["message"].as_str().unwrap().contains("U+"),
            "{}",
            r.1
        );
        for field in ["title", "topic"] {
            let r = h
                .req(
                    "PATCH",
                    "/api/v1/channels/general",
                    Some(&alice),
                    Some(json!({ field: bad })),
                )
                .await;
            assert_err(&r, StatusCode::BAD_REQUEST, "invalid_request");
        }
    }
    // Nothing was changed; ordinary Unicode and emoji sequences are fine.
    let (s, b) = h
        .req(
            "PATCH",
            "/api/v1/me",
            Some(&alice),
            Some(json!({"display_name": "Ålice 👩\u{200D}💻 עברית"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = h
        .req("GET", "/api/v1/channels/general", Some(&alice), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["title"], "general", "{b}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_need_twelve_characters_and_must_not_be_common() {
    let h = Harness::start().await;
    let admin = h.admin().await;
    let create = |name: &str, pw: &str| json!({"username": name, "password": pw});
    for (pw, why) in [
        ("elevenchars", "11 characters"),
        ("1qaz2wsx3edc4rfv", "on the common list"),
        ("QWERTYUIOPASDFGHJKL", "on the common list in another case"),
        ("i am mallory, ok", "contains the username"),
    ] {
        let r = h
            .req(
                "POST",
                "/api/v1/users",
                Some(&admin),
                Some(create("mallory", pw)),
            )
            .await;
        assert_err(&r, StatusCode::BAD_REQUEST, "weak_password");
        let text = r.1.to_string();
        assert!(
            !text.contains(pw),
            "{why}: the answer repeats the password: {text}"
        );
    }
    assert_eq!(
        h.req("GET", "/api/v1/users", Some(&admin), None).await.1["users"]
            .as_array()
            .unwrap()
            .len(),
        1,
        "no user was created"
    );
    let (s, b) = h
        .req(
            "POST",
            "/api/v1/users",
            Some(&admin),
            Some(create("mallory", "twelve chars")),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "12 characters are enough: {b}");
    h.login("mallory", "twelve chars").await;
    h.stop().await;
}

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

// One thread: the router runs on the test's thread, where the capturing subscriber is set.
#[tokio::test(flavor = "current_thread")]
async fn a_403_is_logged_once_as_access_denied() {
    let h = Harness::start().await;
    let bob = h.member("bob").await;
    let out = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(out.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    let r = {
        let _guard = tracing::subscriber::set_default(subscriber);
        h.call(
            "POST",
            "/api/v1/dns/records",
            Some(&bob),
            Some(json!({"name": "x", "type": "A", "value": "10.0.0.1"})),
        )
        .await
    };
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.json);
    let request_id = r.headers["x-request-id"].to_str().unwrap().to_owned();
    let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("access.denied"))
        .collect();
    assert_eq!(lines.len(), 1, "exactly one access.denied line:\n{text}");
    let line = lines[0];
    for field in [
        "security:".to_owned(),
        format!("request_id={request_id}"),
        "source=-".to_owned(),
        "user=bob".to_owned(),
        "status=403".to_owned(),
        "method=POST".to_owned(),
        "path=/api/v1/dns/records".to_owned(),
    ] {
        assert!(line.contains(&field), "{field} missing in: {line}");
    }
    assert!(!text.contains(&bob), "the token is in the log:\n{text}");
    h.stop().await;
}

/// `GET /users` as docs/api.md describes it: any signed-in user, the four directory fields and
/// nothing else (no hash, no sessions).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_user_directory_is_what_the_docs_say() {
    let h = Harness::start().await;
    let bob = h.member("bob").await;
    let (s, b) = h.req("GET", "/api/v1/users", Some(&bob), None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let users = b["users"].as_array().unwrap();
    assert_eq!(users.len(), 2, "{b}");
    for u in users {
        let mut keys: Vec<&String> = u.as_object().unwrap().keys().collect();
        keys.sort();
        assert_eq!(
            keys,
            ["disabled", "display_name", "role", "username"],
            "{u}"
        );
    }
    assert_needs_token(&h, "GET", "/api/v1/users", None).await;
    h.stop().await;
}

/// The topic is the members' (and readers' admins'); archiving and the title are the
/// creator's and admins'. The matrix covers archiving for every caller; this covers the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_set_the_topic_but_only_the_creator_and_admins_retitle_or_archive() {
    let h = Harness::start().await;
    let admin = h.admin().await;
    let alice = h.member("alice").await;
    let bob = h.member("bob").await;
    h.channel(&alice, "general", "public").await;
    let (s, b) = h
        .req("POST", "/api/v1/channels/general/join", Some(&bob), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let patch = |token: String, body: serde_json::Value| {
        let h = &h;
        async move {
            h.req(
                "PATCH",
                "/api/v1/channels/general",
                Some(&token),
                Some(body),
            )
            .await
        }
    };
    let (s, b) = patch(bob.clone(), json!({"topic": "lunch plans"})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["topic"], "lunch plans");
    let before = applied_index(&h);
    for body in [
        json!({"title": "bob's now"}),
        json!({"archived": true}),
        json!({"topic": "x", "title": "y"}),
    ] {
        let r = patch(bob.clone(), body).await;
        assert_err(&r, StatusCode::FORBIDDEN, "forbidden");
    }
    assert_eq!(applied_index(&h), before, "a refusal proposed a log entry");
    let (s, b) = patch(alice.clone(), json!({"title": "General"})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    // An admin outside a public channel may retitle and archive it.
    let (s, b) = patch(
        admin.clone(),
        json!({"title": "Town square", "archived": true}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        (&b["title"], &b["archived"]),
        (&json!("Town square"), &json!(true))
    );
    h.stop().await;
}

/// Successful changes that needed admin power are audited once as `admin.action` with the
/// route's pattern; a member's ordinary write is not an audit event.
#[tokio::test(flavor = "current_thread")]
async fn admin_changes_are_audited_once_and_member_writes_are_not() {
    let h = Harness::start().await;
    let admin = h.admin().await;
    let bob = h.member("bob").await;
    let (s, b) = h
        .req(
            "POST",
            "/api/v1/channels",
            Some(&bob),
            Some(json!({"name": "audited"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let out = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(out.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    let (dns, post) = {
        let _guard = tracing::subscriber::set_default(subscriber);
        let dns = h
            .call(
                "POST",
                "/api/v1/dns/records",
                Some(&admin),
                Some(json!({"name": "wiki", "type": "A", "value": "10.0.0.7"})),
            )
            .await;
        let post = h
            .call(
                "POST",
                "/api/v1/channels/audited/messages",
                Some(&bob),
                Some(json!({"body": "hello", "client_msg_id": "m1"})),
            )
            .await;
        (dns, post)
    };
    assert!(dns.status.is_success(), "{}", dns.json);
    assert!(post.status.is_success(), "{}", post.json);
    let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    let audits: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("admin.action"))
        .collect();
    assert_eq!(audits.len(), 1, "exactly one admin.action line:\n{text}");
    let line = audits[0];
    let request_id = dns.headers["x-request-id"].to_str().unwrap();
    for field in [
        "security:".to_owned(),
        format!("request_id={request_id}"),
        "user=admin".to_owned(),
        "route=\"/api/v1/dns/records\"".to_owned(),
        "method=POST".to_owned(),
        "status=201".to_owned(),
    ] {
        assert!(line.contains(&field), "{field} missing in: {line}");
    }
    assert!(!text.contains(&admin), "the token is in the log:\n{text}");
    assert!(!text.contains(&bob), "the token is in the log:\n{text}");
    h.stop().await;
}
