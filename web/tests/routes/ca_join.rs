//! The certificate-authority routes (`/ca/...`) and token-based join (`/cluster/join-tokens`,
//! `/join`, `/join/complete`) on a node without a CA (`ApiConfig::default()`): every CA route
//! answers 503 `ca_unavailable` once authentication, the admin check and the body have passed;
//! the join routes check the token's form first. `/join/complete` does not need the CA: it is
//! driven here with join tokens written straight through Raft (`Command::CreateJoinToken`,
//! `Command::UseJoinToken`), up to adding a real second node. Issuing real certificates needs the node crate's CA and is left to
//! the node's and the chaos tests.

use axum::http::StatusCode;
use cluster::Command;
use serde_json::{Value, json};
use sha2::Digest;

use crate::harness::*;

const PUBLIC: [&str; 5] = [
    "/api/v1/ca/root.pem",
    "/api/v1/ca/root.crt",
    "/api/v1/ca/root.mobileconfig",
    "/api/v1/ca/crl.pem",
    "/api/v1/ca/fingerprint",
];

/// The admin-only CA routes with a body each accepts.
fn admin_routes() -> Vec<(&'static str, Option<Value>)> {
    vec![
        ("/api/v1/ca/init", None),
        (
            "/api/v1/ca/sign",
            Some(json!({"csr_pem": "-----BEGIN CERTIFICATE REQUEST-----", "days": 30})),
        ),
        (
            "/api/v1/ca/node-certs",
            Some(json!({"node_id": 2, "csr_pem": "-----BEGIN CERTIFICATE REQUEST-----"})),
        ),
        ("/api/v1/ca/certs", None),
        (
            "/api/v1/ca/certs/0a1b/revoke",
            Some(json!({"reason": "superseded"})),
        ),
        // Step-up: the admin's own password (the harness sends as over HTTPS).
        (
            "/api/v1/ca/export-root-key",
            Some(json!({"current_password": ADMIN_PW})),
        ),
        (
            "/api/v1/ca/renew-intermediate",
            Some(
                json!({"root_key_pem": "-----BEGIN PRIVATE KEY-----", "current_password": ADMIN_PW}),
            ),
        ),
    ]
}

fn method(path: &str) -> &'static str {
    if path == "/api/v1/ca/certs" {
        "GET"
    } else {
        "POST"
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_ca_routes_answer_ca_unavailable() {
    let h = Harness::start().await;
    for path in PUBLIC {
        let r = h.req("GET", path, None, None).await;
        assert_eq!(r.0, StatusCode::SERVICE_UNAVAILABLE, "{path}: {}", r.1);
        assert_err(&r, StatusCode::SERVICE_UNAVAILABLE, "ca_unavailable");
        let r = h.req("POST", path, None, None).await;
        assert_err(&r, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_ca_routes_check_the_caller_then_answer_ca_unavailable() {
    let h = Harness::start().await;
    // Step-up operations below need HTTPS.
    h.over_https();
    let admin = h.admin().await;
    let alice = h.member("alice").await;
    for (path, body) in admin_routes() {
        let m = method(path);
        assert_needs_token(&h, m, path, body.clone()).await;
        let r = h.req(m, path, Some(&alice), body.clone()).await;
        assert_eq!(r.0, StatusCode::FORBIDDEN, "{path}: {}", r.1);
        assert_err(&r, StatusCode::FORBIDDEN, "forbidden");
        let r = h.req(m, path, Some(&admin), body).await;
        assert_eq!(r.0, StatusCode::SERVICE_UNAVAILABLE, "{path}: {}", r.1);
        assert_err(&r, StatusCode::SERVICE_UNAVAILABLE, "ca_unavailable");
    }
    // Bodies are checked before the CA is asked.
    for (path, body) in [
        ("/api/v1/ca/sign", json!({"days": 30})),
        (
            "/api/v1/ca/node-certs",
            json!({"node_id": "two", "csr_pem": ""}),
        ),
        ("/api/v1/ca/renew-intermediate", json!({"key": "x"})),
    ] {
        let r = h.req("POST", path, Some(&admin), Some(body)).await;
        assert_eq!(r.0, StatusCode::BAD_REQUEST, "{path}: {}", r.1);
        assert_err(&r, StatusCode::BAD_REQUEST, "invalid_json");
    }
    let r = h
        .req(
            "POST",
            "/api/v1/ca/node-certs",
            Some(&admin),
            Some(json!({"node_id": 0, "csr_pem": "x"})),
        )
        .await;
    assert_err(&r, StatusCode::BAD_REQUEST, "invalid_request");
    // revoke: the body is optional (none at all is fine), but if present it must parse.
    let r = h
        .raw("POST", "/api/v1/ca/certs/0a1b/revoke", Some(&admin), None)
        .await;
    assert_error(
        (r.status, &r.json),
        StatusCode::SERVICE_UNAVAILABLE,
        "ca_unavailable",
    );
    let r = h
        .raw(
            "POST",
            "/api/v1/ca/certs/0a1b/revoke",
            Some(&admin),
            Some(("application/json", b"{not json".to_vec())),
        )
        .await;
    assert_error((r.status, &r.json), StatusCode::BAD_REQUEST, "invalid_json");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_tokens_need_a_ca() {
    let h = Harness::start().await;
    let admin = h.admin().await;
    let alice = h.member("alice").await;
    let path = "/api/v1/cluster/join-tokens";
    assert_needs_token(&h, "POST", path, Some(json!({}))).await;
    let r = h.req("POST", path, Some(&alice), Some(json!({}))).await;
    assert_err(&r, StatusCode::FORBIDDEN, "forbidden");
    for ttl in [0, 7 * 86_400 + 1] {
        let r = h
            .req("POST", path, Some(&admin), Some(json!({"ttl_secs": ttl})))
            .await;
        assert_err(&r, StatusCode::BAD_REQUEST, "invalid_request");
    }
    let r = h
        .req("POST", path, Some(&admin), Some(json!({"ttl": 60})))
        .await;
    assert_err(&r, StatusCode::BAD_REQUEST, "invalid_json");
    for body in [json!({}), json!({"ttl_secs": 3600})] {
        let r = h.req("POST", path, Some(&admin), Some(body)).await;
        assert_err(&r, StatusCode::SERVICE_UNAVAILABLE, "ca_unavailable");
    }
    h.stop().await;
}

/// A join token's text for `id` and `secret` (the fingerprint is not checked without a CA).
fn token_text(id: &str, secret: &str) -> String {
    format!("conclave-join:{}:{id}:{secret}", "ab".repeat(32))
}

fn sha256_hex(s: &str) -> String {
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_needs_a_well_formed_token_and_a_ca() {
    let h = Harness::start().await;
    let secret = "cd".repeat(32);
    let good = token_text("0123456789abcdef", &secret);
    let join = |token: &str| {
        Some(json!({
            "token": token, "node_id": 2,
            "api_addr": "127.0.0.1:1", "cluster_addr": "127.0.0.1:2"
        }))
    };
    for bad in [
        "garbage",
        "other-join:ab:cd:ef",
        &good.to_uppercase(),
        &good[..good.len() - 1],
    ] {
        let r = h.req("POST", "/api/v1/join", None, join(bad)).await;
        assert_err(&r, StatusCode::BAD_REQUEST, "invalid_join_token");
    }
    let r = h.req("POST", "/api/v1/join", None, join(&good)).await;
    assert_err(&r, StatusCode::SERVICE_UNAVAILABLE, "ca_unavailable");
    let r = h
        .req("POST", "/api/v1/join", None, Some(json!({"token": good})))
        .await;
    assert_err(&r, StatusCode::BAD_REQUEST, "invalid_json");
    assert_eq!(h.node.members().len(), 1);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completing_a_join() {
    let h = Harness::start().await;
    let path = "/api/v1/join/complete";
    let complete = |token: &str, node_id: u64| Some(json!({"token": token, "node_id": node_id}));
    let (id, secret) = ("00112233aabbccdd", "ef".repeat(32));
    let token = token_text(id, &secret);

    let r = h
        .req("POST", path, None, complete("conclave-join:x", 2))
        .await;
    assert_err(&r, StatusCode::BAD_REQUEST, "invalid_join_token");
    // Well-formed but unknown. (Without a CA this is answered from the state, not with
    // `ca_unavailable`.)
    let r = h.req("POST", path, None, complete(&token, 2)).await;
    assert_err(&r, StatusCode::FORBIDDEN, "join_token_unknown");
    let r = h
        .req("POST", path, None, Some(json!({"token": token})))
        .await;
    assert_err(&r, StatusCode::BAD_REQUEST, "invalid_json");

    let expires_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        + 3_600_000;
    h.node
        .write(Command::CreateJoinToken {
            id: id.into(),
            secret_hash: sha256_hex(&secret),
            expires_ms,
            by: ADMIN.into(),
        })
        .await
        .unwrap();
    let wrong = token_text(id, &"00".repeat(32));
    let r = h.req("POST", path, None, complete(&wrong, 2)).await;
    assert_err(&r, StatusCode::FORBIDDEN, "join_token_invalid");
    // Not used yet: `/join` must come first.
    let r = h.req("POST", path, None, complete(&token, 2)).await;
    assert_err(&r, StatusCode::FORBIDDEN, "forbidden");

    h.node
        .write(Command::UseJoinToken {
            id: id.into(),
            secret_hash: sha256_hex(&secret),
            node_id: 2,
            api_addr: "127.0.0.1:1".into(),
            cluster_addr: "127.0.0.1:2".into(),
        })
        .await
        .unwrap();
    // Used for node 2, not 3.
    let r = h.req("POST", path, None, complete(&token, 3)).await;
    assert_err(&r, StatusCode::FORBIDDEN, "forbidden");
    // Node 2 does not answer on its cluster port: the add is refused like
    // `POST /cluster/nodes`, and the membership stays as it was.
    let r = h.req("POST", path, None, complete(&token, 2)).await;
    assert_err(&r, StatusCode::BAD_REQUEST, "invalid_request");
    assert_eq!(h.node.members().len(), 1);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completing_a_join_adds_the_node() {
    let h = Harness::start().await;
    let cancel = tokio_util::sync::CancellationToken::new();
    let (node2, addr2, _dir2) = start_node(2, &cancel).await;
    let (id, secret) = ("a0a1a2a3a4a5a6a7", "12".repeat(32));
    let expires_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        + 3_600_000;
    h.node
        .write(Command::CreateJoinToken {
            id: id.into(),
            secret_hash: sha256_hex(&secret),
            expires_ms,
            by: ADMIN.into(),
        })
        .await
        .unwrap();
    h.node
        .write(Command::UseJoinToken {
            id: id.into(),
            secret_hash: sha256_hex(&secret),
            node_id: 2,
            api_addr: "127.0.0.1:8".into(),
            cluster_addr: addr2.clone(),
        })
        .await
        .unwrap();
    let body = Some(json!({"token": token_text(id, &secret), "node_id": 2}));
    let (s, b) = h
        .req("POST", "/api/v1/join/complete", None, body.clone())
        .await;
    assert_eq!(
        (s, &b),
        (StatusCode::OK, &json!({"node_id": 2, "voter": true}))
    );
    let members: Vec<(u64, String)> = h
        .node
        .members()
        .iter()
        .map(|(id, info)| (*id, info.cluster_addr.clone()))
        .collect();
    assert_eq!(members[1], (2, addr2));
    // Again: already a voter, answered at once.
    let (s, b) = h.req("POST", "/api/v1/join/complete", None, body).await;
    assert_eq!(
        (s, &b),
        (StatusCode::OK, &json!({"node_id": 2, "voter": true}))
    );
    assert_eq!(h.node.members().len(), 2);
    node2.shutdown().await;
    cancel.cancel();
    h.stop().await;
}
