//! Everything outside the JSON resources: `/healthz`, `/readyz`, the embedded web client (`/`
//! and its files, caching and security headers, `If-None-Match`), the fallback 404 for unknown
//! routes, the 405 for known routes with another method, CORS (own origins, configured
//! `allowed_origins`, foreign origins, preflights), and `/metrics` open or turned off.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::json;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_readiness() {
    let h = Harness::start().await;
    let (s, b) = h.req("GET", "/healthz", None, None).await;
    assert_eq!(
        (s, b),
        (StatusCode::OK, json!({"status": "ok", "node_id": 1}))
    );
    let b = h.ready().await;
    assert_eq!(
        b,
        json!({"ready": true, "node_id": 1, "reason": null, "draining": false})
    );
    for path in ["/healthz", "/readyz"] {
        let r = h.req("POST", path, None, None).await;
        assert_err(&r, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    }
    h.stop().await;
}

/// `/metrics` without a token configured is open (the documented default); with `[metrics]
/// enabled = false` (no endpoint handed to the router) it is a JSON 404. The token case is in
/// the authorization matrix (`access_matrix::every_other_route`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_open_by_default_and_404_when_off() {
    let off = Harness::start().await;
    let r = off.req("GET", "/metrics", None, None).await;
    assert_err(&r, StatusCode::NOT_FOUND, "not_found");
    off.stop().await;

    let mut registry = prometheus_client::registry::Registry::default();
    web::metrics::register(&mut registry);
    let open = Harness::start_with(web::ApiConfig {
        metrics: Some(std::sync::Arc::new(web::metrics::MetricsEndpoint {
            registry,
            token: None,
        })),
        ..web::ApiConfig::default()
    })
    .await;
    // A failed login shows in the counters.
    let (s, _) = open
        .req(
            "POST",
            "/api/v1/login",
            None,
            Some(json!({"username": ADMIN, "password": "not the password at all"})),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let r = open.raw("GET", "/metrics", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.headers[header::CONTENT_TYPE],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = String::from_utf8(r.bytes).unwrap();
    assert!(
        text.contains("conclave_logins_total{outcome=\"invalid_credentials\"}"),
        "{text}"
    );
    open.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_client_is_served() {
    let h = Harness::start().await;
    let r = h.raw("GET", "/", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
    let html = String::from_utf8(r.bytes.clone()).unwrap();
    assert!(html.to_lowercase().contains("<html"), "{html:.200}");
    assert!(html.contains("app.js"), "the page loads the app");
    assert_eq!(r.headers[header::CACHE_CONTROL], "no-cache");
    assert_eq!(r.headers[header::X_FRAME_OPTIONS], "DENY");
    assert_eq!(r.headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    let csp = r.headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(csp.contains("default-src 'self'"), "{csp}");
    let etag = r.headers[header::ETAG].clone();
    // `/index.html` is the same file.
    let same = h.raw("GET", "/index.html", None, None).await;
    assert_eq!(same.bytes, r.bytes);
    assert_eq!(same.headers[header::ETAG], etag);

    // Revalidation: 304 without a body.
    let req = Request::builder()
        .uri("/")
        .header(header::IF_NONE_MATCH, etag.clone())
        .body(Body::empty())
        .unwrap();
    let r = h.send(req).await;
    assert_eq!(r.status, StatusCode::NOT_MODIFIED);
    assert!(r.bytes.is_empty());
    assert_eq!(r.headers[header::ETAG], etag);
    let req = Request::builder()
        .uri("/")
        .header(header::IF_NONE_MATCH, "\"something-else\"")
        .body(Body::empty())
        .unwrap();
    assert_eq!(h.send(req).await.status, StatusCode::OK);

    for (path, content_type, cache) in [
        ("/app.js", "text/javascript; charset=utf-8", "no-cache"),
        ("/style.css", "text/css; charset=utf-8", "no-cache"),
        (
            "/manifest.webmanifest",
            "application/manifest+json",
            "no-cache",
        ),
        ("/icon-192.png", "image/png", "public, max-age=86400"),
        ("/icon.svg", "image/svg+xml", "public, max-age=86400"),
    ] {
        let r = h.raw("GET", path, None, None).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert_eq!(r.headers[header::CONTENT_TYPE], content_type, "{path}");
        assert_eq!(r.headers[header::CACHE_CONTROL], cache, "{path}");
        assert!(!r.bytes.is_empty(), "{path}");
        assert!(
            !r.headers.contains_key(header::CONTENT_SECURITY_POLICY),
            "{path}"
        );
    }
    // The service worker's cache name carries the assets' hash, not the placeholder.
    let sw = h.raw("GET", "/sw.js", None, None).await;
    assert_eq!(sw.status, StatusCode::OK);
    let text = String::from_utf8(sw.bytes).unwrap();
    assert!(!text.contains("__CONCLAVE_ASSET_HASH__"));

    let r = h.req("POST", "/", None, None).await;
    assert_err(&r, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_and_wrong_methods() {
    let h = Harness::start().await;
    let admin = h.admin().await;
    for path in [
        "/nope",
        "/api/v1/nope",
        "/api/v2/login",
        "/api/v1/channels/general/nope",
        "/app.js/x",
        "/api/v1/",
    ] {
        for token in [None, Some(admin.as_str())] {
            let r = h.req("GET", path, token, None).await;
            assert_eq!(r.0, StatusCode::NOT_FOUND, "{path}: {}", r.1);
            assert_err(&r, StatusCode::NOT_FOUND, "not_found");
        }
    }
    // One wrong method for every route of the API.
    for (method, path) in [
        ("GET", "/api/v1/login"),
        ("GET", "/api/v1/logout"),
        ("DELETE", "/api/v1/me"),
        ("GET", "/api/v1/me/password"),
        ("DELETE", "/api/v1/users"),
        ("GET", "/api/v1/users/bob"),
        ("GET", "/api/v1/users/bob/password"),
        ("GET", "/api/v1/dms"),
        ("PUT", "/api/v1/channels"),
        ("DELETE", "/api/v1/channels/general"),
        ("GET", "/api/v1/channels/general/join"),
        ("GET", "/api/v1/channels/general/leave"),
        ("GET", "/api/v1/channels/general/read"),
        ("GET", "/api/v1/channels/general/members"),
        ("GET", "/api/v1/channels/general/members/bob"),
        ("PUT", "/api/v1/channels/general/messages"),
        ("GET", "/api/v1/channels/general/messages/1"),
        ("POST", "/api/v1/channels/general/messages/1/reactions/ok"),
        ("GET", "/api/v1/channels/general/messages/1/pin"),
        ("POST", "/api/v1/channels/general/pins"),
        ("POST", "/api/v1/channels/general/threads/1"),
        ("POST", "/api/v1/cluster"),
        ("GET", "/api/v1/cluster/nodes"),
        ("GET", "/api/v1/cluster/nodes/1"),
        ("GET", "/api/v1/cluster/nodes/1/drain"),
        ("PATCH", "/api/v1/dns/records"),
        ("GET", "/api/v1/cluster/join-tokens"),
        ("GET", "/api/v1/join"),
        ("GET", "/api/v1/join/complete"),
        ("GET", "/api/v1/ca/init"),
        ("GET", "/api/v1/ca/sign"),
        ("GET", "/api/v1/ca/node-certs"),
        ("POST", "/api/v1/ca/certs"),
        ("GET", "/api/v1/ca/certs/0a/revoke"),
        ("GET", "/api/v1/ca/export-root-key"),
        ("GET", "/api/v1/ca/renew-intermediate"),
        ("POST", "/api/v1/ws"),
    ] {
        let r = h.req(method, path, Some(&admin), None).await;
        assert_eq!(
            r.0,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}: {}",
            r.1
        );
        assert_err(&r, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    }
    h.stop().await;
}

/// `Origin` requests: CORS headers only for the cluster's own origins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_only_for_own_origins() {
    let config = web::ApiConfig {
        allowed_origins: vec!["https://proxy.example".into()],
        ..Default::default()
    };
    let h = Harness::start_with(config).await;
    let get = |origin: &str| {
        Request::builder()
            .uri("/healthz")
            .header(header::ORIGIN, origin)
            .body(Body::empty())
            .unwrap()
    };
    // A member's API address, the request's own host, the configured origin.
    for origin in [
        format!("http://{API_ADDR}"),
        "https://proxy.example".to_string(),
    ] {
        let r = h.send(get(&origin)).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(
            r.headers[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            origin.as_str()
        );
        assert!(
            r.headers[header::ACCESS_CONTROL_EXPOSE_HEADERS]
                .to_str()
                .unwrap()
                .contains("x-conclave-index")
        );
    }
    let req = Request::builder()
        .uri("/healthz")
        .header(header::HOST, "chat.local:8080")
        .header(header::ORIGIN, "http://chat.local:8080")
        .body(Body::empty())
        .unwrap();
    let r = h.send(req).await;
    assert_eq!(
        r.headers[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "http://chat.local:8080"
    );
    // A foreign origin is served (the browser withholds it) but gets no CORS headers.
    for origin in ["http://evil.example", "http://127.0.0.1:8", "null"] {
        let r = h.send(get(origin)).await;
        assert_eq!(r.status, StatusCode::OK, "{origin}");
        assert!(
            !r.headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN),
            "{origin}"
        );
        assert_eq!(r.headers[header::VARY], "Origin");
    }
    // Preflights: 204 for our own origin, 403 (empty body, not the JSON error) for others.
    let preflight = |origin: &str| {
        Request::builder()
            .method("OPTIONS")
            .uri("/api/v1/channels")
            .header(header::ORIGIN, origin)
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
            .body(Body::empty())
            .unwrap()
    };
    let r = h.send(preflight("https://proxy.example")).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(
        r.headers[header::ACCESS_CONTROL_ALLOW_HEADERS]
            .to_str()
            .unwrap()
            .contains("authorization")
    );
    let r = h.send(preflight("http://evil.example")).await;
    assert_error(
        (r.status, &r.json),
        StatusCode::FORBIDDEN,
        "forbidden_origin",
    );
    assert!(!r.headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
    h.stop().await;
}

/// Every `/api/v1` answer, success or refusal, is kept out of caches and is never sniffed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_answers_are_not_cached_or_sniffed() {
    let h = Harness::start().await;
    let admin = h.admin().await;
    let answers = [
        h.raw("GET", "/api/v1/me", Some(&admin), None).await,
        h.raw("GET", "/api/v1/me", None, None).await,
        h.raw("GET", "/api/v1/no/such/route", None, None).await,
        h.raw(
            "GET",
            "/api/v1/channels/x/messages/abc/pin",
            Some(&admin),
            None,
        )
        .await,
    ];
    for r in &answers {
        assert_eq!(
            r.headers.get(header::CACHE_CONTROL).unwrap(),
            "no-store",
            "{} {}",
            r.status,
            r.json
        );
        assert_eq!(
            r.headers.get(header::X_CONTENT_TYPE_OPTIONS).unwrap(),
            "nosniff",
            "{} {}",
            r.status,
            r.json
        );
    }
    assert_eq!(answers[0].status, StatusCode::OK);
    assert_eq!(answers[1].status, StatusCode::UNAUTHORIZED);
    h.stop().await;
}
