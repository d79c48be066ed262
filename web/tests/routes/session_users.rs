//! Sessions and accounts: `POST /login`, `POST /logout`, `GET`/`PATCH /me`,
//! `POST /me/password`, `POST`/`GET /users`, `PATCH /users/{name}`,
//! `POST /users/{name}/password`; the request-body errors every JSON route shares (415, 413,
//! malformed JSON, unknown field, wrong type), login throttling, and `X-Conclave-Min-Index`.

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::harness::*;

async fn user_names(h: &Harness, token: &str) -> Vec<String> {
    let (s, b) = h.req("GET", "/api/v1/users", Some(token), None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap().to_string())
        .collect()
}

async fn me(h: &Harness, token: &str) -> Value {
    let (s, b) = h.req("GET", "/api/v1/me", Some(token), None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b
}

fn login_body(user: &str, pw: &str) -> Option<Value> {
    Some(json!({"username": user, "password": pw}))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_issues_a_token_and_refuses_bad_credentials_alike() {
    let h = Harness::start().await;
    // Step-up operations below need HTTPS.
    h.over_https();
    let r = h
        .raw(
            "POST",
            "/api/v1/login",
            None,
            Some((
                "application/json",
                serde_json::to_vec(&json!({"username": ADMIN, "password": ADMIN_PW})).unwrap(),
            )),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    let token = r.json["token"].as_str().unwrap();
    assert!(token.starts_with("cv1."), "{token}");
    assert_eq!(r.json["username"], ADMIN);
    assert_eq!(r.json["role"], "admin");
    assert!(r.json["expires_at_ms"].as_u64().unwrap() > 0);
    let index: u64 = r.headers["x-conclave-index"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(token.ends_with(&format!(".{index}")), "{token} vs {index}");
    assert_eq!(me(&h, token).await["username"], ADMIN);

    // Wrong password, unknown user, disabled user: one answer for all three.
    let wrong = h
        .req(
            "POST",
            "/api/v1/login",
            None,
            login_body(ADMIN, "not the password"),
        )
        .await;
    assert_err(&wrong, StatusCode::UNAUTHORIZED, "invalid_credentials");
    let unknown = h
        .req(
            "POST",
            "/api/v1/login",
            None,
            login_body("nobody", ADMIN_PW),
        )
        .await;
    assert_err(&unknown, StatusCode::UNAUTHORIZED, "invalid_credentials");
    let bob = h.member("bob").await;
    let r = h
        .req(
            "PATCH",
            "/api/v1/users/bob",
            Some(token),
            Some(json!({"disabled": true, "current_password": ADMIN_PW})),
        )
        .await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);
    let disabled = h
        .req("POST", "/api/v1/login", None, login_body("bob", MEMBER_PW))
        .await;
    assert_err(&disabled, StatusCode::UNAUTHORIZED, "invalid_credentials");
    // Disabling revoked bob's session too.
    let r = h.req("GET", "/api/v1/me", Some(&bob), None).await;
    assert_err(&r, StatusCode::UNAUTHORIZED, "unauthorized");
    h.stop().await;
}

/// What is wrong, the Content-Type (none if `None`), the body, the expected status and code.
type BodyCase = (
    &'static str,
    Option<&'static str>,
    Vec<u8>,
    StatusCode,
    &'static str,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_bodies_are_checked_before_anything_happens() {
    let h = Harness::start().await;
    let cases: Vec<BodyCase> = vec![
        (
            "no content type",
            None,
            br#"{"username":"admin","password":"x"}"#.to_vec(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            "text/plain",
            Some("text/plain"),
            br#"{"username":"admin","password":"x"}"#.to_vec(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            "malformed",
            Some("application/json"),
            b"{\"username\": ".to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "empty",
            Some("application/json"),
            Vec::new(),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "unknown field",
            Some("application/json"),
            br#"{"username":"admin","password":"x","extra":1}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "missing field",
            Some("application/json"),
            br#"{"username":"admin"}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "wrong type",
            Some("application/json"),
            br#"{"username":"admin","password":12345678}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "over max_request_bytes",
            Some("application/json"),
            format!(
                r#"{{"username":"admin","password":"{}"}}"#,
                "x".repeat(70 * 1024)
            )
            .into_bytes(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
    ];
    let index_before = h.node.metrics().last_applied.map(|l| l.index);
    for (what, ct, body, status, code) in cases {
        let r = match ct {
            Some(ct) => h.raw("POST", "/api/v1/login", None, Some((ct, body))).await,
            None => {
                let req = axum::http::Request::builder()
                    .method("POST")
                    .uri("/api/v1/login")
                    .body(axum::body::Body::from(body))
                    .unwrap();
                h.send(req).await
            }
        };
        assert_eq!(r.status, status, "{what}: {}", r.json);
        assert_error((r.status, &r.json), status, code);
    }
    // None of them reached the log (not even a login attempt).
    assert_eq!(h.node.metrics().last_applied.map(|l| l.index), index_before);
    h.stop().await;
}

/// The throttle treats a name that is no user exactly like one that is (same count, same
/// answer, same `Retry-After`), and a failed login writes nothing to the Raft log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_names_are_throttled_alike_and_failures_write_nothing() {
    let h = Harness::start().await;
    h.member("alice").await;
    let index_before = h.node.metrics().last_applied.map(|l| l.index);
    for name in ["alice", "nobody"] {
        for _ in 0..5 {
            let r = h
                .req(
                    "POST",
                    "/api/v1/login",
                    None,
                    login_body(name, "wrong password"),
                )
                .await;
            assert_err(&r, StatusCode::UNAUTHORIZED, "invalid_credentials");
        }
        let r = h
            .call(
                "POST",
                "/api/v1/login",
                None,
                login_body(name, "wrong password"),
            )
            .await;
        assert_error(
            (r.status, &r.json),
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_attempts",
        );
        assert_eq!(r.headers["retry-after"].to_str().unwrap(), "1", "{name}");
    }
    assert_eq!(
        h.node.metrics().last_applied.map(|l| l.index),
        index_before,
        "a failed or throttled login appended a log entry"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_is_throttled_after_five_failures() {
    let h = Harness::start().await;
    // A fixture member (cheap hash): the attempts follow each other within milliseconds, well
    // inside the 1 s backoff.
    h.member("alice").await;
    for _ in 0..5 {
        let r = h
            .req(
                "POST",
                "/api/v1/login",
                None,
                login_body("alice", "wrong password"),
            )
            .await;
        assert_err(&r, StatusCode::UNAUTHORIZED, "invalid_credentials");
    }
    // The sixth comes within the 1 s backoff: refused before the password is checked, even
    // the right one.
    let r = h
        .call(
            "POST",
            "/api/v1/login",
            None,
            login_body("alice", MEMBER_PW),
        )
        .await;
    assert_error(
        (r.status, &r.json),
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_attempts",
    );
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert_eq!(retry, 1, "Retry-After");
    // Other users are not affected.
    h.admin().await;
    // After the backoff the right password works again.
    h.eventually("backoff over", || async {
        let (s, _) = h
            .req(
                "POST",
                "/api/v1/login",
                None,
                login_body("alice", MEMBER_PW),
            )
            .await;
        s == StatusCode::OK
    })
    .await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_are_required_and_checked() {
    let h = Harness::start().await;
    assert_needs_token(&h, "GET", "/api/v1/me", None).await;
    assert_needs_token(&h, "POST", "/api/v1/logout", None).await;
    // Not "Bearer": refused too.
    let req = axum::http::Request::builder()
        .uri("/api/v1/me")
        .header("authorization", "Basic YWRtaW46eA==")
        .body(axum::body::Body::empty())
        .unwrap();
    let r = h.send(req).await;
    assert_error(
        (r.status, &r.json),
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_revokes_only_the_presented_token() {
    let h = Harness::start().await;
    let t1 = h.admin().await;
    let t2 = h.admin().await;
    let r = h.raw("POST", "/api/v1/logout", Some(&t1), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.json);
    assert!(r.bytes.is_empty());
    assert!(r.headers.contains_key("x-conclave-index"));
    let r = h.req("GET", "/api/v1/me", Some(&t1), None).await;
    assert_err(&r, StatusCode::UNAUTHORIZED, "unauthorized");
    let r = h.req("POST", "/api/v1/logout", Some(&t1), None).await;
    assert_err(&r, StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(me(&h, &t2).await["username"], ADMIN);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn me_shows_and_updates_the_display_name() {
    let h = Harness::start().await;
    let alice = h.member("alice").await;
    let m = me(&h, &alice).await;
    assert_eq!(
        m,
        json!({"username": "alice", "display_name": "alice", "role": "member", "disabled": false})
    );
    let (s, b) = h
        .req(
            "PATCH",
            "/api/v1/me",
            Some(&alice),
            Some(json!({"display_name": "Alice Äpfel"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["display_name"], "Alice Äpfel");
    assert_eq!(me(&h, &alice).await["display_name"], "Alice Äpfel");

    for bad in ["x".repeat(65), "tab\there".to_string()] {
        let r = h
            .req(
                "PATCH",
                "/api/v1/me",
                Some(&alice),
                Some(json!({"display_name": bad})),
            )
            .await;
        assert_err(&r, StatusCode::BAD_REQUEST, "invalid_request");
    }
    // A member cannot make themself admin through /me.
    let r = h
        .req(
            "PATCH",
            "/api/v1/me",
            Some(&alice),
            Some(json!({"display_name": "x", "role": "admin"})),
        )
        .await;
    assert_err(&r, StatusCode::BAD_REQUEST, "invalid_json");
    let m = me(&h, &alice).await;
    assert_eq!(m["display_name"], "Alice Äpfel");
    assert_eq!(m["role"], "member");
    // Empty means the username.
    let (s, b) = h
        .req(
            "PATCH",
            "/api/v1/me",
            Some(&alice),
            Some(json!({"display_name": ""})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["display_name"], "alice");
    assert_needs_token(
        &h,
        "PATCH",
        "/api/v1/me",
        Some(json!({"display_name": "x"})),
    )
    .await;
    h.stop().await;
}

/// The current-password check of `/me/password` goes through the login throttle: a stolen
/// token is no unthrottled password oracle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_current_password_check_is_throttled_like_a_login() {
    let h = Harness::start().await;
    let alice = h.member("alice").await;
    let path = "/api/v1/me/password";
    let body =
        |cur: &str| Some(json!({"current_password": cur, "new_password": "brand new secret 9"}));
    for _ in 0..5 {
        let r = h
            .req("POST", path, Some(&alice), body("wrong current"))
            .await;
        assert_err(&r, StatusCode::UNAUTHORIZED, "invalid_credentials");
    }
    let r = h.call("POST", path, Some(&alice), body(MEMBER_PW)).await;
    assert_error(
        (r.status, &r.json),
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_attempts",
    );
    assert_eq!(r.headers["retry-after"].to_str().unwrap(), "1");
    // So is a login with that name from the same source.
    let r = h
        .req(
            "POST",
            "/api/v1/login",
            None,
            login_body("alice", MEMBER_PW),
        )
        .await;
    assert_err(&r, StatusCode::TOO_MANY_REQUESTS, "too_many_attempts");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_the_own_password() {
    let h = Harness::start().await;
    let alice = h.member("alice").await;
    let other_session = h.login("alice", MEMBER_PW).await;
    let path = "/api/v1/me/password";
    let body = |cur: &str, new: &str| Some(json!({"current_password": cur, "new_password": new}));

    let r = h
        .req(
            "POST",
            path,
            Some(&alice),
            body("wrong current", "brand new secret 9"),
        )
        .await;
    assert_err(&r, StatusCode::UNAUTHORIZED, "invalid_credentials");
    let r = h
        .req("POST", path, Some(&alice), body(MEMBER_PW, "password123"))
        .await;
    assert_err(&r, StatusCode::BAD_REQUEST, "weak_password");
    let r = h
        .req("POST", path, Some(&alice), body(MEMBER_PW, "ALICE"))
        .await;
    assert_err(&r, StatusCode::BAD_REQUEST, "weak_password");
    let r = h
        .req(
            "POST",
            path,
            Some(&alice),
            body(MEMBER_PW, &"y".repeat(129)),
        )
        .await;
    assert_err(&r, StatusCode::BAD_REQUEST, "weak_password");
    let r = h
        .req(
            "POST",
            path,
            Some(&alice),
            Some(json!({"new_password": "x"})),
        )
        .await;
    assert_err(&r, StatusCode::BAD_REQUEST, "invalid_json");
    // Nothing changed: the old password still logs in, the other session still works.
    h.login("alice", MEMBER_PW).await;
    me(&h, &other_session).await;

    let r = h
        .raw(
            "POST",
            path,
            Some(&alice),
            Some((
                "application/json",
                serde_json::to_vec(&json!({
                    "current_password": MEMBER_PW, "new_password": "brand new secret 9"
                }))
                .unwrap(),
            )),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.json);
    assert!(r.headers.contains_key("x-conclave-index"));
    // The caller's session stays, the others are revoked, the old password is gone.
    me(&h, &alice).await;
    let r = h.req("GET", "/api/v1/me", Some(&other_session), None).await;
    assert_err(&r, StatusCode::UNAUTHORIZED, "unauthorized");
    let r = h
        .req(
            "POST",
            "/api/v1/login",
            None,
            login_body("alice", MEMBER_PW),
        )
        .await;
    assert_err(&r, StatusCode::UNAUTHORIZED, "invalid_credentials");
    h.login("alice", "brand new secret 9").await;
    assert_needs_token(&h, "POST", path, body(MEMBER_PW, "brand new secret 9")).await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_create_users() {
    let h = Harness::start().await;
    let admin = h.admin().await;
    let r = h
        .raw(
            "POST",
            "/api/v1/users",
            Some(&admin),
            Some((
                "application/json",
                serde_json::to_vec(&json!({
                    "username": "carol", "password": "a long secret of hers",
                    "role": "admin", "display_name": "Carol C"
                }))
                .unwrap(),
            )),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    assert_eq!(
        r.json,
        json!({"username": "carol", "display_name": "Carol C", "role": "admin", "disabled": false})
    );
    assert!(r.headers.contains_key("x-conclave-index"));
    // An admin chose carol's password: she must change it before anything else.
    let (st, b) = h
        .req(
            "POST",
            "/api/v1/login",
            None,
            login_body("carol", "a long secret of hers"),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(b["must_change_password"], true, "{b}");
    let carol = b["token"].as_str().unwrap().to_string();
    let r = h.req("GET", "/api/v1/me", Some(&carol), None).await;
    assert_err(&r, StatusCode::FORBIDDEN, "password_change_required");
    let change =
        |new: &str| Some(json!({"current_password": "a long secret of hers", "new_password": new}));
    let r = h
        .req(
            "POST",
            "/api/v1/me/password",
            Some(&carol),
            change("a long secret of hers"),
        )
        .await;
    assert_err(&r, StatusCode::BAD_REQUEST, "weak_password");
    let r = h
        .req(
            "POST",
            "/api/v1/me/password",
            Some(&carol),
            change("a new secret of her own"),
        )
        .await;
    assert_eq!(r.0, StatusCode::NO_CONTENT, "{}", r.1);
    assert_eq!(me(&h, &carol).await["role"], "admin");
    let (_, b) = h
        .req(
            "POST",
            "/api/v1/login",
            None,
            login_body("carol", "a new secret of her own"),
        )
        .await;
    assert_eq!(b["must_change_password"], false, "{b}");

    let bob = h.member("bob").await;
    assert_eq!(me(&h, &bob).await["role"], "member");

    let create = |name: &str, pw: &str| Some(json!({"username": name, "password": pw}));
    let r = h
        .req(
            "POST",
            "/api/v1/users",
            Some(&bob),
            create("mallory", MEMBER_PW),
        )
        .await;
    assert_err(&r, StatusCode::FORBIDDEN, "forbidden");
    for bad in ["Mallory", "-x", "a b", "", &"m".repeat(33), "dm:x"] {
        let r = h
            .req(
                "POST",
                "/api/v1/users",
                Some(&admin),
                create(bad, MEMBER_PW),
            )
            .await;
        assert_err(&r, StatusCode::BAD_REQUEST, "invalid_request");
    }
    let r = h
        .req(
            "POST",
            "/api/v1/users",
            Some(&admin),
            create("mallory", "short"),
        )
        .await;
    assert_err(&r, StatusCode::BAD_REQUEST, "weak_password");
    for weak in ["qwertyuiop", "mallory123", "Password123"] {
        let r = h
            .req(
                "POST",
                "/api/v1/users",
                Some(&admin),
                create("mallory123", weak),
            )
            .await;
        assert_err(&r, StatusCode::BAD_REQUEST, "weak_password");
    }
    let r = h
        .req(
            "POST",
            "/api/v1/users",
            Some(&admin),
            Some(json!({"username": "mallory", "password": MEMBER_PW, "role": "root"})),
        )
        .await;
    assert_err(&r, StatusCode::BAD_REQUEST, "invalid_json");
    let r = h
        .req(
            "POST",
            "/api/v1/users",
            Some(&admin),
            Some(json!({"username": "mallory", "password": MEMBER_PW, "display_name": "x".repeat(65)})),
        )
        .await;
    assert_err(&r, StatusCode::BAD_REQUEST, "invalid_request");
    let r = h
        .req(
            "POST",
            "/api/v1/users",
            Some(&admin),
            create("bob", "another secret 12"),
        )
        .await;
    assert_err(&r, StatusCode::CONFLICT, "user_exists");
    // bob's password did not change.
    h.login("bob", MEMBER_PW).await;
    assert_needs_token(&h, "POST", "/api/v1/users", create("mallory", MEMBER_PW)).await;

    // Nothing refused was created.
    let mut names = user_names(&h, &admin).await;
    names.sort();
    assert_eq!(names, ["admin", "bob", "carol"]);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_user_lists_the_directory() {
    let h = Harness::start().await;
    let alice = h.member("alice").await;
    let (s, b) = h.req("GET", "/api/v1/users", Some(&alice), None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let users = b["users"].as_array().unwrap();
    assert_eq!(users.len(), 2, "{b}");
    let a = users.iter().find(|u| u["username"] == "alice").unwrap();
    assert_eq!(
        *a,
        json!({"username": "alice", "display_name": "alice", "role": "member", "disabled": false})
    );
    assert!(users.iter().all(|u| u.get("password_hash").is_none()));
    assert_needs_token(&h, "GET", "/api/v1/users", None).await;

    // X-Conclave-Min-Index: an applied index is served at once, garbage is refused.
    let applied = h.node.metrics().last_applied.unwrap().index;
    let req = axum::http::Request::builder()
        .uri("/api/v1/users")
        .header("authorization", format!("Bearer {alice}"))
        .header("x-conclave-min-index", applied.to_string())
        .body(axum::body::Body::empty())
        .unwrap();
    assert_eq!(h.send(req).await.status, StatusCode::OK);
    let req = axum::http::Request::builder()
        .uri("/api/v1/users")
        .header("authorization", format!("Bearer {alice}"))
        .header("x-conclave-min-index", "soon")
        .body(axum::body::Body::empty())
        .unwrap();
    let r = h.send(req).await;
    assert_error(
        (r.status, &r.json),
        StatusCode::BAD_REQUEST,
        "invalid_request",
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_update_users() {
    let h = Harness::start().await;
    // Step-up operations below need HTTPS.
    h.over_https();
    let admin = h.admin().await;
    let alice = h.member("alice").await;
    let bob = h.member("bob").await;

    let r = h
        .req(
            "PATCH",
            "/api/v1/users/bob",
            Some(&alice),
            Some(json!({"disabled": true})),
        )
        .await;
    assert_err(&r, StatusCode::FORBIDDEN, "forbidden");
    let r = h
        .req(
            "PATCH",
            "/api/v1/users/nobody",
            Some(&admin),
            Some(json!({"disabled": true, "current_password": ADMIN_PW})),
        )
        .await;
    assert_err(&r, StatusCode::NOT_FOUND, "not_found");
    let r = h
        .req(
            "PATCH",
            "/api/v1/users/bob",
            Some(&admin),
            Some(json!({"display_name": "b\u{7}"})),
        )
        .await;
    assert_err(&r, StatusCode::BAD_REQUEST, "invalid_request");
    let r = h
        .req(
            "PATCH",
            "/api/v1/users/bob",
            Some(&admin),
            Some(json!({"disabled": "yes"})),
        )
        .await;
    assert_err(&r, StatusCode::BAD_REQUEST, "invalid_json");
    assert_needs_token(
        &h,
        "PATCH",
        "/api/v1/users/bob",
        Some(json!({"disabled": true})),
    )
    .await;
    // Nothing refused changed bob.
    assert_eq!(
        me(&h, &bob).await,
        json!({"username": "bob", "display_name": "bob", "role": "member", "disabled": false})
    );

    let (s, b) = h
        .req(
            "PATCH",
            "/api/v1/users/bob",
            Some(&admin),
            Some(json!({"role": "admin", "display_name": "Bob B", "current_password": ADMIN_PW})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        b,
        json!({"username": "bob", "display_name": "Bob B", "role": "admin", "disabled": false})
    );
    // Now an admin: bob may create users.
    let (s, b) = h
        .req(
            "POST",
            "/api/v1/users",
            Some(&bob),
            Some(json!({"username": "dave", "password": MEMBER_PW})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");

    let (s, b) = h
        .req(
            "PATCH",
            "/api/v1/users/bob",
            Some(&admin),
            Some(json!({"disabled": true, "current_password": ADMIN_PW})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["disabled"], true);
    let r = h.req("GET", "/api/v1/me", Some(&bob), None).await;
    assert_err(&r, StatusCode::UNAUTHORIZED, "unauthorized");
    let (s, b) = h
        .req(
            "PATCH",
            "/api/v1/users/bob",
            Some(&admin),
            Some(json!({"disabled": false, "current_password": ADMIN_PW})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["disabled"], false);
    h.login("bob", MEMBER_PW).await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_reset_passwords() {
    let h = Harness::start().await;
    // Step-up operations below need HTTPS.
    h.over_https();
    let admin = h.admin().await;
    let alice = h.member("alice").await;
    let bob = h.member("bob").await;
    let pw = |p: &str| Some(json!({"password": p, "current_password": ADMIN_PW}));

    let r = h
        .req(
            "POST",
            "/api/v1/users/bob/password",
            Some(&alice),
            pw("new bob secret 1"),
        )
        .await;
    assert_err(&r, StatusCode::FORBIDDEN, "forbidden");
    let r = h
        .req(
            "POST",
            "/api/v1/users/nobody/password",
            Some(&admin),
            pw("new bob secret 1"),
        )
        .await;
    assert_err(&r, StatusCode::NOT_FOUND, "not_found");
    let r = h
        .req(
            "POST",
            "/api/v1/users/bob/password",
            Some(&admin),
            pw("12345678"),
        )
        .await;
    assert_err(&r, StatusCode::BAD_REQUEST, "weak_password");
    let r = h
        .req(
            "POST",
            "/api/v1/users/bob/password",
            Some(&admin),
            pw("short"),
        )
        .await;
    assert_err(&r, StatusCode::BAD_REQUEST, "weak_password");
    let r = h
        .req(
            "POST",
            "/api/v1/users/bob/password",
            Some(&admin),
            Some(json!({})),
        )
        .await;
    assert_err(&r, StatusCode::BAD_REQUEST, "invalid_json");
    assert_needs_token(
        &h,
        "POST",
        "/api/v1/users/bob/password",
        pw("new bob secret 1"),
    )
    .await;
    // Still bob's old password and session.
    me(&h, &bob).await;
    h.login("bob", MEMBER_PW).await;

    let r = h
        .raw(
            "POST",
            "/api/v1/users/bob/password",
            Some(&admin),
            Some((
                "application/json",
                serde_json::to_vec(
                    &json!({"password": "new bob secret 1", "current_password": ADMIN_PW}),
                )
                .unwrap(),
            )),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.json);
    assert!(r.bytes.is_empty());
    let r = h.req("GET", "/api/v1/me", Some(&bob), None).await;
    assert_err(&r, StatusCode::UNAUTHORIZED, "unauthorized");
    let r = h
        .req("POST", "/api/v1/login", None, login_body("bob", MEMBER_PW))
        .await;
    assert_err(&r, StatusCode::UNAUTHORIZED, "invalid_credentials");
    h.login("bob", "new bob secret 1").await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_is_refused() {
    let config = web::ApiConfig {
        session_ttl_ms: 1,
        ..Default::default()
    };
    let h = Harness::start_with(config).await;
    let (s, b) = h
        .req("POST", "/api/v1/login", None, login_body(ADMIN, ADMIN_PW))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let token = b["token"].as_str().unwrap().to_string();
    // The session expires 1 ms after the entry's time.
    h.eventually("the session expired", || async {
        let r = h.req("GET", "/api/v1/me", Some(&token), None).await;
        if r.0 == StatusCode::OK {
            return false;
        }
        assert_err(&r, StatusCode::UNAUTHORIZED, "session_expired");
        assert!(
            r.1["error"]["message"]
                .as_str()
                .unwrap()
                .contains("expired"),
            "{}",
            r.1
        );
        true
    })
    .await;
    h.stop().await;
}
