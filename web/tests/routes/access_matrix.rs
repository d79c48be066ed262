//! The authorization matrix (issue 11, item 2): every route of `web::routes::access::ROUTES`
//! called by every kind of caller, the answer checked against the route's `Rule`.
//!
//! Channel routes run in public channels, private channels and DMs, each case in a fresh
//! channel, for six callers: anonymous, a user outside the channel, a member, the channel's
//! creator (who also wrote message 1), an admin outside the channel and an admin member. A
//! refusal must be 401 (anonymous) or 403 with nothing but the error object (no message body,
//! no member list) and must propose nothing to Raft (the applied log index does not move).
//! An allowed call must succeed (2xx; the few documented 400s of DMs aside). Other routes run
//! for anonymous, a member and an admin. A route without a case here fails `request_for`.

use axum::http::StatusCode;
use cluster::{ChannelKind, Role};
use serde_json::{Value, json};
use web::routes::access::{ChannelAccess, ROUTES, RouteSpec, Rule};

use crate::harness::*;

/// A message body that must never appear in a refusal.
const SECRET: &str = "SECRET-body-only-readers-see";
const NEW_PW: &str = "a fresh pass phrase 77";

/// The chunk the file routes use: the JSON body `{}` (what `Harness::call` sends for `{}`).
fn chunk_sha() -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b"{}"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    Anonymous,
    Outsider,
    Member,
    Creator,
    AdminOutside,
    AdminMember,
}

const CALLERS: [Caller; 6] = [
    Caller::Anonymous,
    Caller::Outsider,
    Caller::Member,
    Caller::Creator,
    Caller::AdminOutside,
    Caller::AdminMember,
];

/// The cast of one case: who is who, their tokens, and the channel.
struct Cast {
    channel: String,
    member: String,
    /// A user in no channel, to add as a member.
    target: String,
    tokens: Vec<(Caller, String, String)>,
}

impl Cast {
    fn token(&self, c: Caller) -> Option<&str> {
        self.tokens
            .iter()
            .find(|(k, _, _)| *k == c)
            .map(|(_, _, t)| t.as_str())
    }
    fn name(&self, c: Caller) -> &str {
        self.tokens
            .iter()
            .find(|(k, _, _)| *k == c)
            .map_or("-", |(_, n, _)| n.as_str())
    }
}

async fn user(h: &Harness, name: &str, role: Role) -> (String, String) {
    (name.to_owned(), h.user_with_role(name, role).await)
}

/// Fresh users and a fresh channel of `kind`: the creator made it and posted [`SECRET`] as
/// message 1; the member and the admin member are in it.
async fn cast(h: &Harness, n: usize, kind: ChannelKind) -> Cast {
    let (creator, ct) = user(h, &format!("cr{n}"), Role::Member).await;
    let (member, mt) = user(h, &format!("me{n}"), Role::Member).await;
    let (outsider, ot) = user(h, &format!("ou{n}"), Role::Member).await;
    let (admin_out, aot) = user(h, &format!("ao{n}"), Role::Admin).await;
    let (admin_in, ait) = user(h, &format!("ai{n}"), Role::Admin).await;
    let (target, _) = user(h, &format!("tg{n}"), Role::Member).await;
    let channel = match kind {
        ChannelKind::Direct => {
            let (s, b) = h
                .req(
                    "POST",
                    "/api/v1/dms",
                    Some(&ct),
                    Some(json!({"users": [member, admin_in]})),
                )
                .await;
            assert!(s.is_success(), "start DM: {b}");
            b["name"].as_str().expect("dm name").to_owned()
        }
        _ => {
            let name = format!("c{n}");
            let k = if kind == ChannelKind::Public {
                "public"
            } else {
                "private"
            };
            h.channel(&ct, &name, k).await;
            for who in [&member, &admin_in] {
                let (s, b) = h
                    .req(
                        "POST",
                        &format!("/api/v1/channels/{name}/members"),
                        Some(&ct),
                        Some(json!({"username": who})),
                    )
                    .await;
                assert_eq!(s, StatusCode::OK, "add {who}: {b}");
            }
            name
        }
    };
    h.post(&ct, &channel, SECRET, &format!("secret-{n}")).await;
    Cast {
        channel,
        member: member.clone(),
        target,
        tokens: vec![
            (Caller::Outsider, outsider, ot),
            (Caller::Member, member, mt),
            (Caller::Creator, creator, ct),
            (Caller::AdminOutside, admin_out, aot),
            (Caller::AdminMember, admin_in, ait),
        ],
    }
}

/// The concrete request for a channel route in `cast`: `(method, path, body)`.
fn channel_request(spec: &RouteSpec, cast: &Cast, n: usize) -> (String, Option<Value>) {
    let c = &cast.channel;
    let (path, body) = match spec.path {
        "/api/v1/channels/{name}" => (
            format!("/api/v1/channels/{c}"),
            (spec.verb.as_str() == "PATCH").then(|| json!({"archived": true})),
        ),
        "/api/v1/channels/{name}/join" => (format!("/api/v1/channels/{c}/join"), None),
        "/api/v1/channels/{name}/leave" => (format!("/api/v1/channels/{c}/leave"), None),
        "/api/v1/channels/{name}/read" => (
            format!("/api/v1/channels/{c}/read"),
            Some(json!({"seq": 1})),
        ),
        "/api/v1/channels/{name}/mute" => (
            format!("/api/v1/channels/{c}/mute"),
            Some(json!({"muted": true})),
        ),
        "/api/v1/channels/{name}/members" => (
            format!("/api/v1/channels/{c}/members"),
            Some(json!({"username": cast.target})),
        ),
        "/api/v1/channels/{name}/members/{user}" => (
            format!("/api/v1/channels/{c}/members/{}", cast.member),
            None,
        ),
        "/api/v1/channels/{name}/messages" => (
            format!("/api/v1/channels/{c}/messages"),
            (spec.verb.as_str() == "POST")
                .then(|| json!({"body": "hello", "client_msg_id": format!("m-{n}")})),
        ),
        "/api/v1/channels/{name}/messages/{seq}" => (
            format!("/api/v1/channels/{c}/messages/1"),
            (spec.verb.as_str() == "PATCH").then(|| json!({"body": "edited"})),
        ),
        "/api/v1/channels/{name}/messages/{seq}/reactions/{emoji}" => (
            format!("/api/v1/channels/{c}/messages/1/reactions/plus1"),
            None,
        ),
        "/api/v1/channels/{name}/messages/{seq}/pin" => {
            (format!("/api/v1/channels/{c}/messages/1/pin"), None)
        }
        "/api/v1/channels/{name}/pins" => (format!("/api/v1/channels/{c}/pins"), None),
        "/api/v1/channels/{name}/files" => (
            format!("/api/v1/channels/{c}/files"),
            Some(json!({
                "name": "m.txt", "size": 2, "sha256": chunk_sha(), "chunks": [chunk_sha()],
                "body": "", "client_msg_id": format!("f-{n}")
            })),
        ),
        "/api/v1/channels/{name}/threads/{root}" => {
            (format!("/api/v1/channels/{c}/threads/1"), None)
        }
        other => panic!(
            "no matrix case for channel route {} {other}",
            spec.verb.as_str()
        ),
    };
    (path, body)
}

/// Where `caller` stands in the case's channel, as the rule sees it.
fn access_of(spec: &RouteSpec, kind: ChannelKind, caller: Caller) -> ChannelAccess {
    let member = matches!(
        caller,
        Caller::Member | Caller::Creator | Caller::AdminMember
    );
    let own = if spec.path.ends_with("/members/{user}") {
        caller == Caller::Member
    } else {
        // The creator wrote message 1.
        spec.path.contains("{seq}") && caller == Caller::Creator
    };
    ChannelAccess {
        kind,
        member,
        admin: matches!(caller, Caller::AdminOutside | Caller::AdminMember),
        creator: caller == Caller::Creator,
        own,
    }
}

/// The status an allowed caller gets: 2xx, except where a DM's nature refuses the operation
/// itself (nobody leaves a DM).
fn allowed_ok(spec: &RouteSpec, kind: ChannelKind, status: StatusCode) -> bool {
    let dm_leave = kind == ChannelKind::Direct
        && (spec.path.ends_with("/leave") || spec.path.ends_with("/members/{user}"));
    if dm_leave {
        status == StatusCode::BAD_REQUEST
    } else {
        status.is_success()
    }
}

/// Checks a refusal: the status, the bare error object, no secret, nothing proposed. Posting a
/// file refuses a non-member with its own code (`not_member`, docs/api.md).
#[track_caller]
fn check_refusal(
    what: &str,
    r: &Reply,
    status: StatusCode,
    before: Option<u64>,
    after: Option<u64>,
) {
    let code = if status == StatusCode::UNAUTHORIZED {
        "unauthorized"
    } else if what.contains("/api/v1/channels/{name}/files ") {
        "not_member"
    } else {
        "forbidden"
    };
    assert_eq!(r.status, status, "{what}: {}", r.json);
    assert_error((r.status, &r.json), status, code);
    let text = String::from_utf8_lossy(&r.bytes);
    assert!(
        !text.contains(SECRET),
        "{what}: the refusal leaks the message: {text}"
    );
    assert_eq!(
        before, after,
        "{what}: a refused request proposed a log entry"
    );
}

async fn channel_matrix(kind: ChannelKind) {
    let h = Harness::start().await;
    // The chunk every file post names, uploaded once.
    let uploader = h.member("chunkup").await;
    let r = h
        .call(
            "PUT",
            &format!("/api/v1/blobs/{}", chunk_sha()),
            Some(&uploader),
            Some(json!({})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "chunk upload: {}", r.json);
    let mut n = 0;
    let mut checked = 0;
    for spec in ROUTES
        .iter()
        .filter(|r| r.path.starts_with("/api/v1/channels/{name}"))
    {
        for caller in CALLERS {
            n += 1;
            let cast = cast(&h, n, kind).await;
            let (path, body) = channel_request(spec, &cast, n);
            let what = format!(
                "{:?} {} as {caller:?} ({}) in a {kind:?} channel",
                spec.verb,
                spec.path,
                cast.name(caller)
            );
            let before = applied_index(&h);
            let r = h
                .call(spec.verb.as_str(), &path, cast.token(caller), body)
                .await;
            let after = applied_index(&h);
            if caller == Caller::Anonymous {
                check_refusal(&what, &r, StatusCode::UNAUTHORIZED, before, after);
            } else if spec.rule.allows(&access_of(spec, kind, caller)) {
                assert!(
                    allowed_ok(spec, kind, r.status),
                    "{what}: allowed, got {} {}",
                    r.status,
                    r.json
                );
            } else {
                check_refusal(&what, &r, StatusCode::FORBIDDEN, before, after);
            }
            checked += 1;
        }
    }
    // 17 channel routes when this was written; fewer means the filter above broke.
    assert!(checked >= 17 * CALLERS.len(), "only {checked} cases");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_channel_route_in_public_channels() {
    channel_matrix(ChannelKind::Public).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_channel_route_in_private_channels() {
    channel_matrix(ChannelKind::Private).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_channel_route_in_direct_messages() {
    channel_matrix(ChannelKind::Direct).await;
}

/// The concrete request for a route that is not about one channel.
fn other_request(spec: &RouteSpec, member: &str, i: usize) -> (String, Option<Value>) {
    let verb = spec.verb.as_str();
    let body = match (verb, spec.path) {
        ("POST", "/api/v1/login") => Some(json!({"username": member, "password": MEMBER_PW})),
        ("PATCH", "/api/v1/me") => Some(json!({"display_name": "Someone"})),
        ("POST", "/api/v1/me/password") => {
            Some(json!({"current_password": MEMBER_PW, "new_password": NEW_PW}))
        }
        ("POST", "/api/v1/users") => {
            Some(json!({"username": format!("new{i}"), "password": NEW_PW}))
        }
        ("PATCH", "/api/v1/users/{name}") => Some(json!({"display_name": "Renamed"})),
        // Step-up: the caller's own password (every fixture user has MEMBER_PW).
        ("POST", "/api/v1/users/{name}/password") => {
            Some(json!({"password": NEW_PW, "current_password": MEMBER_PW}))
        }
        ("POST", "/api/v1/dms") => Some(json!({"users": [ADMIN]})),
        ("POST", "/api/v1/channels") => Some(json!({"name": format!("nc{i}"), "kind": "public"})),
        ("POST", _) | ("PATCH", _) | ("PUT", _) => Some(json!({})),
        _ => None,
    };
    let mut path = spec
        .path
        .replace("{name}", member)
        .replace("{id}", "99")
        .replace("{serial}", "01")
        .replace("{sha256}", &chunk_sha())
        .replace("{file_id}", &"0".repeat(32));
    if spec.path == "/api/v1/search" {
        path.push_str("?q=hello");
    }
    assert!(
        !path.contains('{'),
        "no matrix case for route {verb} {}",
        spec.path
    );
    (path, body)
}

/// The scrape token of `/metrics` in [`every_other_route`]: no user's session token is it.
const SCRAPE_TOKEN: &str = "matrix-scrape-token-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_other_route() {
    let h = Harness::start_with(web::ApiConfig {
        metrics: Some(std::sync::Arc::new(web::metrics::MetricsEndpoint {
            registry: {
                let mut r = prometheus_client::registry::Registry::default();
                web::metrics::register(&mut r);
                r
            },
            token: Some(web::metrics::ScrapeToken::new(SCRAPE_TOKEN)),
        })),
        ..web::ApiConfig::default()
    })
    .await;
    // Step-up operations below need HTTPS.
    h.over_https();
    let mut checked = 0;
    for (i, spec) in ROUTES
        .iter()
        .filter(|r| !r.path.starts_with("/api/v1/channels/{name}"))
        .enumerate()
    {
        for caller in [Caller::Anonymous, Caller::Member, Caller::AdminOutside] {
            // Fresh users per call: some routes change the caller (logout, a new password).
            let member = format!("u{i}x{}", caller as u8);
            let member_token = h.member(&member).await;
            let admin_token = h
                .user_with_role(&format!("a{i}x{}", caller as u8), Role::Admin)
                .await;
            let token = match caller {
                Caller::Anonymous => None,
                Caller::Member => Some(member_token.as_str()),
                _ => Some(admin_token.as_str()),
            };
            let (path, body) = other_request(spec, &member, i * 10 + caller as usize);
            let what = format!("{:?} {} as {caller:?}", spec.verb, spec.path);
            let before = applied_index(&h);
            let r = h.call(spec.verb.as_str(), &path, token, body.clone()).await;
            let after = applied_index(&h);
            let refused = match (spec.rule, caller) {
                (Rule::Public | Rule::JoinToken, _) => None,
                // A session is not a scrape token, an admin's neither.
                (Rule::Scraper, _) => Some(StatusCode::UNAUTHORIZED),
                (_, Caller::Anonymous) => Some(StatusCode::UNAUTHORIZED),
                (Rule::Admin, Caller::Member) => Some(StatusCode::FORBIDDEN),
                _ => None,
            };
            // The node's own background writes (session touches, certificate upkeep) can land
            // while a call runs (seen once in CI: 478 -> 479 around an anonymous call). Then
            // the same refused call is made once more: a refusal that itself proposes an entry
            // moves the index both times, so the check still catches it.
            let (before, after) = if refused.is_some() && before != after {
                let again = applied_index(&h);
                let r2 = h.call(spec.verb.as_str(), &path, token, body).await;
                assert_eq!(
                    r2.status, r.status,
                    "{what}: a second try answered differently"
                );
                (again, applied_index(&h))
            } else {
                (before, after)
            };
            match refused {
                Some(status) => check_refusal(&what, &r, status, before, after),
                None => assert!(
                    r.status != StatusCode::UNAUTHORIZED && r.status != StatusCode::FORBIDDEN,
                    "{what}: allowed, got {} {}",
                    r.status,
                    r.json
                ),
            }
            checked += 1;
        }
    }
    assert!(checked > 0);
    let r = h.call("GET", "/metrics", Some(SCRAPE_TOKEN), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert!(
        String::from_utf8_lossy(&r.bytes).contains("conclave_logins_total"),
        "the scrape token opens /metrics"
    );
    h.stop().await;
}
