//! Sessions and step-up (issue 11, items 1, 3, 4): the session list and ending sessions (own,
//! and all of a user's by an admin; another user's id is "not found"), idle expiry by request
//! and on a WebSocket (close 4011), the must-change rule after an admin reset, and the step-up
//! rules (HTTPS and the caller's current password) of resets, role changes and disabling.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::harness::*;

fn login_body(user: &str, pw: &str) -> Option<Value> {
    Some(json!({"username": user, "password": pw}))
}

/// Logs in with a `User-Agent`; returns the whole answer.
async fn login_as(h: &Harness, user: &str, pw: &str, agent: &str) -> Value {
    let req = Request::builder()
        .method(Method::POST)
        .uri("/api/v1/login")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::USER_AGENT, agent)
        .body(Body::from(
            serde_json::to_vec(&json!({"username": user, "password": pw})).unwrap(),
        ))
        .unwrap();
    let r = h.send(req).await;
    assert_eq!(r.status, StatusCode::OK, "login {user}: {}", r.json);
    r.json
}

async fn sessions(h: &Harness, token: &str) -> Vec<Value> {
    let (s, b) = h.req("GET", "/api/v1/me/sessions", Some(token), None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b["sessions"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_list_and_end_their_own_sessions_only() {
    let h = Harness::start().await;
    let admin = h.admin().await;
    let alice_laptop = h.member("alice").await;
    let alice_phone = login_as(&h, "alice", MEMBER_PW, "PhoneBrowser/1.0").await["token"]
        .as_str()
        .unwrap()
        .to_string();
    let bob = h.member("bob").await;

    let list = sessions(&h, &alice_phone).await;
    assert_eq!(list.len(), 2, "{list:?}");
    let current: Vec<&Value> = list.iter().filter(|s| s["current"] == true).collect();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0]["user_agent"], "PhoneBrowser/1.0");
    for s in &list {
        let id = s["id"].as_str().unwrap();
        assert_eq!(id.len(), 16, "{s}");
        // Nothing that authenticates: neither the token nor its hash.
        assert!(!alice_phone.contains(id) && !alice_laptop.contains(id));
        assert!(s["expires_at_ms"].as_u64().unwrap() > s["created_at_ms"].as_u64().unwrap());
        assert!(s["idle_expires_at_ms"].as_u64().is_some(), "{s}");
        assert!(s["last_used_ms"].as_u64().is_some(), "{s}");
    }
    let laptop_id = list.iter().find(|s| s["current"] == false).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();

    // Bob cannot end (or learn about) alice's session: 404, as for an id that does not exist.
    let path = format!("/api/v1/me/sessions/{laptop_id}");
    let r = h.req("DELETE", &path, Some(&bob), None).await;
    assert_err(&r, StatusCode::NOT_FOUND, "not_found");
    let r = h
        .req(
            "DELETE",
            "/api/v1/me/sessions/0123456789abcdef",
            Some(&alice_phone),
            None,
        )
        .await;
    assert_err(&r, StatusCode::NOT_FOUND, "not_found");
    assert_needs_token(&h, "DELETE", &path, None).await;
    assert_needs_token(&h, "GET", "/api/v1/me/sessions", None).await;
    let r = h.req("GET", "/api/v1/me", Some(&alice_laptop), None).await;
    assert_eq!(
        r.0,
        StatusCode::OK,
        "bob's attempt changed nothing: {}",
        r.1
    );

    let r = h.call("DELETE", &path, Some(&alice_phone), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.json);
    let r = h.req("GET", "/api/v1/me", Some(&alice_laptop), None).await;
    assert_err(&r, StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(sessions(&h, &alice_phone).await.len(), 1);

    // Admins end all sessions of a user; members may not.
    let r = h
        .req("DELETE", "/api/v1/users/alice/sessions", Some(&bob), None)
        .await;
    assert_err(&r, StatusCode::FORBIDDEN, "forbidden");
    let r = h
        .req(
            "DELETE",
            "/api/v1/users/nobody/sessions",
            Some(&admin),
            None,
        )
        .await;
    assert_err(&r, StatusCode::NOT_FOUND, "not_found");
    let (s, b) = h
        .req("DELETE", "/api/v1/users/alice/sessions", Some(&admin), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b, json!({"ended": 1}));
    let r = h.req("GET", "/api/v1/me", Some(&alice_phone), None).await;
    assert_err(&r, StatusCode::UNAUTHORIZED, "unauthorized");
    // Bob's session is untouched.
    assert_eq!(
        h.req("GET", "/api/v1/me", Some(&bob), None).await.0,
        StatusCode::OK
    );
    h.stop().await;
}

/// A session unused for its idle timeout ends (401 `session_expired`); use keeps it alive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_expire_and_use_keeps_them_alive() {
    let config = web::ApiConfig {
        session_idle_ms: 600,
        session_touch_interval_ms: 200,
        ..Default::default()
    };
    let h = Harness::start_with(config).await;
    let used = h.admin().await;
    let idle = h.admin().await;
    // Use `used` every 200 ms for 2.4 s: four times its idle window of at most 800 ms.
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_millis(2_400) {
        let r = h.req("GET", "/api/v1/me", Some(&used), None).await;
        assert_eq!(r.0, StatusCode::OK, "a used session ended: {}", r.1);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Refused: `session_expired` if this node still holds it, `unauthorized` once the state
    // machine has purged it (the touches of `used` are entries whose time passed its deadline).
    let r = h.req("GET", "/api/v1/me", Some(&idle), None).await;
    assert_eq!(r.0, StatusCode::UNAUTHORIZED, "{}", r.1);
    let code = r.1["error"]["code"].as_str().unwrap();
    assert!(
        code == "session_expired" || code == "unauthorized",
        "{}",
        r.1
    );
    // The state machine purges it (its entries' time passes the deadline): the list no longer
    // shows it.
    h.eventually("the idle session is purged", || async {
        sessions(&h, &used).await.len() == 1
    })
    .await;
    h.stop().await;
}

/// An open WebSocket whose session goes idle is closed with 4011 by its own timer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_session_closes_its_websocket_with_4011() {
    let config = web::ApiConfig {
        session_idle_ms: 500,
        session_touch_interval_ms: 100,
        ..Default::default()
    };
    let h = Harness::start_with(config).await;
    let token = h.admin().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = h.app();
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/api/v1/ws"))
        .await
        .expect("upgrade");
    ws.send(Message::text(
        json!({"type": "auth", "v": 1, "token": token}).to_string(),
    ))
    .await
    .unwrap();
    let opened = std::time::Instant::now();
    let code = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(Some(frame)))) => break u16::from(frame.code),
                Some(Ok(_)) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    })
    .await
    .expect("closed in time");
    assert_eq!(code, api::ws::close::SESSION_ENDED);
    // Not before the idle timeout (500 ms) has passed.
    assert!(
        opened.elapsed() >= Duration::from_millis(450),
        "{:?}",
        opened.elapsed()
    );
    server.abort();
    h.stop().await;
}

/// An admin reset needs HTTPS and the admin's own password; the user must then change the
/// password before anything else (REST 403 `password_change_required`, WebSocket 4012).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_reset_needs_step_up_and_forces_a_change() {
    let h = Harness::start().await;
    // Step-up operations below need HTTPS.
    h.over_https();
    let admin = h.admin().await;
    h.member("bob").await;
    let path = "/api/v1/users/bob/password";
    let body = |current: Option<&str>| {
        let mut b = json!({"password": "reset by admin 1"});
        if let Some(c) = current {
            b["current_password"] = json!(c);
        }
        b
    };
    // Plain HTTP is refused even with the right password.
    let plain = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(header::AUTHORIZATION, format!("Bearer {admin}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(
            serde_json::to_vec(&body(Some(ADMIN_PW))).unwrap(),
        ))
        .unwrap();
    let r = h.send_plain(plain).await;
    assert_error((r.status, &r.json), StatusCode::FORBIDDEN, "https_required");
    let r = h.req("POST", path, Some(&admin), Some(body(None))).await;
    assert_err(&r, StatusCode::FORBIDDEN, "step_up_failed");
    let r = h
        .req(
            "POST",
            path,
            Some(&admin),
            Some(body(Some("not my password"))),
        )
        .await;
    assert_err(&r, StatusCode::FORBIDDEN, "step_up_failed");
    // None of that changed bob's password.
    h.login("bob", MEMBER_PW).await;

    let r = h
        .req("POST", path, Some(&admin), Some(body(Some(ADMIN_PW))))
        .await;
    assert_eq!(r.0, StatusCode::NO_CONTENT, "{}", r.1);
    let (s, b) = h
        .req(
            "POST",
            "/api/v1/login",
            None,
            login_body("bob", "reset by admin 1"),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["must_change_password"], true);
    let bob = b["token"].as_str().unwrap().to_string();
    for (method, p) in [
        ("GET", "/api/v1/me"),
        ("GET", "/api/v1/channels"),
        ("GET", "/api/v1/me/sessions"),
    ] {
        let r = h.req(method, p, Some(&bob), None).await;
        assert_err(&r, StatusCode::FORBIDDEN, "password_change_required");
    }
    // The WebSocket refuses it too, with its own code.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = h.app();
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/api/v1/ws"))
        .await
        .expect("upgrade");
    ws.send(Message::text(
        json!({"type": "auth", "v": 1, "token": bob}).to_string(),
    ))
    .await
    .unwrap();
    let code = loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(Message::Close(Some(frame))))) => break u16::from(frame.code),
            Ok(Some(Ok(_))) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(code, api::ws::close::PASSWORD_CHANGE_REQUIRED);
    server.abort();

    let r = h
        .req(
            "POST",
            "/api/v1/me/password",
            Some(&bob),
            Some(json!({"current_password": "reset by admin 1", "new_password": "a fresh secret of his 2"})),
        )
        .await;
    assert_eq!(r.0, StatusCode::NO_CONTENT, "{}", r.1);
    let r = h.req("GET", "/api/v1/me", Some(&bob), None).await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);
    h.stop().await;
}

/// Role changes and disabling need step-up; a display-name change does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_changes_and_disabling_need_step_up() {
    let h = Harness::start().await;
    // Step-up operations below need HTTPS.
    h.over_https();
    let admin = h.admin().await;
    let bob = h.member("bob").await;
    for patch in [json!({"role": "admin"}), json!({"disabled": true})] {
        let r = h
            .req(
                "PATCH",
                "/api/v1/users/bob",
                Some(&admin),
                Some(patch.clone()),
            )
            .await;
        assert_err(&r, StatusCode::FORBIDDEN, "step_up_failed");
        let mut wrong = patch.clone();
        wrong["current_password"] = json!("nope nope nope");
        let r = h
            .req("PATCH", "/api/v1/users/bob", Some(&admin), Some(wrong))
            .await;
        assert_err(&r, StatusCode::FORBIDDEN, "step_up_failed");
    }
    let r = h.req("GET", "/api/v1/me", Some(&bob), None).await;
    assert_eq!(r.1["role"], "member");
    assert_eq!(r.1["disabled"], false);
    let r = h
        .req(
            "PATCH",
            "/api/v1/users/bob",
            Some(&admin),
            Some(json!({"display_name": "Bobby"})),
        )
        .await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);
    let r = h
        .req(
            "PATCH",
            "/api/v1/users/bob",
            Some(&admin),
            Some(json!({"role": "admin", "current_password": ADMIN_PW})),
        )
        .await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);
    assert_eq!(r.1["role"], "admin");
    h.stop().await;
}
