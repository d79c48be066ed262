//! The `security` log target (OWASP ASVS V7): one structured line per security-relevant event,
//! and the request id and source address every such line carries.
//!
//! Owns the target's name, the per-request [`RequestMeta`] (set by [`tag`], the client router's
//! outermost layer), the [`security_event!`](crate::security_event) macro and the one event
//! written here: every 401 and 403 answer (`access.denied`). `node_id` is added to every log
//! line by the node's formatter. Must never log a secret: no password, token, token hash,
//! private key or join-token secret, and a failed login whose username is not a user is logged
//! without that string (it may be a password typed in the wrong field). docs/security.md lists
//! every event.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

/// The `tracing` target of every security event (`RUST_LOG=security=info` keeps only them).
pub const TARGET: &str = "security";

/// The response header that names the request, so a user's report can be found in the log.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Marks a request that arrived over HTTPS (inserted by the node's HTTPS server). Its absence
/// means plain HTTP: operations that move credentials or keys refuse it (step-up rules), and
/// HSTS is sent only with it.
#[derive(Debug, Clone, Copy)]
pub struct ViaHttps;

/// Who made a request and under which id it is logged; an extension on every request of the
/// client router.
#[derive(Debug, Clone)]
pub struct RequestMeta {
    pub request_id: Arc<str>,
    /// The peer's address; `None` only when the server was started without connect info (an
    /// in-process test router).
    pub source: Option<IpAddr>,
    /// Whether the request came over HTTPS ([`ViaHttps`]).
    pub https: bool,
    /// The authenticated user, once the bearer token was checked, so the layer that logs the
    /// answer can name who was refused.
    user: Arc<OnceLock<String>>,
    /// Whether that user is an admin (for `admin.action`).
    admin: Arc<std::sync::atomic::AtomicBool>,
}

impl RequestMeta {
    /// A meta for work that did not come through the router (a WebSocket frame reuses the
    /// upgrade request's meta instead).
    pub fn new(source: Option<IpAddr>, https: bool) -> Self {
        Self {
            request_id: next_request_id().into(),
            source,
            https,
            user: Arc::new(OnceLock::new()),
            admin: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        }
    }

    /// The source address as logged: `-` when unknown.
    pub fn source_text(&self) -> String {
        self.source
            .map_or_else(|| "-".to_owned(), |a| a.to_string())
    }

    /// Records the authenticated user (the first call wins).
    pub fn set_user(&self, username: &str) {
        let _ = self.user.set(username.to_owned());
    }

    /// Records that the authenticated user is an admin.
    pub fn set_admin(&self) {
        self.admin.store(true, Ordering::Relaxed);
    }

    /// The authenticated user, or `-`.
    pub fn user_text(&self) -> &str {
        self.user.get().map_or("-", String::as_str)
    }
}

/// Logs one security event with the request's id, source and user. Fields after the event name
/// are `tracing` fields; never pass a secret.
///
/// ```ignore
/// security_event!(meta, "login.failure", reason = "wrong_password");
/// ```
#[macro_export]
macro_rules! security_event {
    ($meta:expr, $event:expr) => {
        ::tracing::info!(
            target: $crate::security_log::TARGET,
            event = $event,
            request_id = %$meta.request_id,
            source = %$meta.source_text(),
            user = %$meta.user_text(),
            "security event"
        )
    };
    ($meta:expr, $event:expr, $($field:tt)+) => {
        ::tracing::info!(
            target: $crate::security_log::TARGET,
            event = $event,
            request_id = %$meta.request_id,
            source = %$meta.source_text(),
            user = %$meta.user_text(),
            $($field)+
        )
    };
}

/// Ids are unique per process: a random prefix drawn at start (so two nodes, or one node before
/// and after a restart, never hand out the same id) and a counter.
fn next_request_id() -> String {
    static PREFIX: OnceLock<u32> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(1);
    let prefix = *PREFIX.get_or_init(rand::random::<u32>);
    format!("{prefix:08x}-{}", COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// The client router's outermost layer: gives the request its [`RequestMeta`], names the id in
/// the answer's `X-Request-Id`, and logs every 401 and 403 answer as `access.denied`.
pub async fn tag(mut req: Request, next: Next) -> Response {
    let source = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(a)| a.ip());
    let https = req.extensions().get::<ViaHttps>().is_some();
    let meta = RequestMeta::new(source, https);
    req.extensions_mut().insert(meta.clone());
    let method = req.method().clone();
    // The path only: a query string may carry a search term or, by mistake, a token.
    let path = req.uri().path().to_owned();
    let mut res = next.run(req).await;
    let status = res.status();
    if status.is_success() && method != axum::http::Method::GET {
        audit(&meta, method.as_str(), &path, status);
    }
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        crate::security_event!(
            meta,
            "access.denied",
            status = status.as_u16(),
            method = %method,
            path = %path,
            "security event"
        );
    }
    if let Ok(v) = HeaderValue::from_str(&meta.request_id) {
        res.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    res
}

/// The audit record of a successful change that needed a privilege: a CA operation
/// (`ca.operation`), a join token created (`join_token.created`) or used by a joining node
/// (`join_token.used`), and any other change an admin made through a route where being an
/// admin can be what allowed it (`admin.action`: node membership and draining, DNS records,
/// channel moderation; user administration also logs its own, more detailed `admin.*` event).
/// `route` is the route's pattern, so one operation is one value to search for.
fn audit(meta: &RequestMeta, method: &str, path: &str, status: StatusCode) {
    use crate::routes::access::{Rule, lookup};
    let admin = meta.admin.load(Ordering::Relaxed);
    // Every audited route is an admin's or a join route: a member's post (the hot path) stops
    // here without a table lookup.
    if !admin && !path.starts_with("/api/v1/join") {
        return;
    }
    let Some(spec) = lookup(method, path) else {
        return;
    };
    let event = match spec.rule {
        Rule::JoinToken => "join_token.used",
        Rule::Admin if spec.path == "/api/v1/cluster/join-tokens" => "join_token.created",
        Rule::Admin if spec.path.starts_with("/api/v1/ca/") => "ca.operation",
        rule if admin && rule.admin_power() => "admin.action",
        _ => return,
    };
    crate::security_event!(
        meta,
        event,
        route = spec.path,
        method = %method,
        path = %path,
        status = status.as_u16(),
        "security event"
    );
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_unique_and_share_the_process_prefix() {
        let a = next_request_id();
        let b = next_request_id();
        assert_ne!(a, b);
        assert_eq!(a.split('-').next(), b.split('-').next());
    }

    #[test]
    fn audit_lookup_matches_concrete_paths_to_their_route() {
        use crate::routes::access::lookup;
        let r = lookup("DELETE", "/api/v1/cluster/nodes/3").unwrap();
        assert_eq!(r.path, "/api/v1/cluster/nodes/{id}");
        let r = lookup("POST", "/api/v1/ca/certs/0a1b/revoke").unwrap();
        assert_eq!(r.path, "/api/v1/ca/certs/{serial}/revoke");
        assert!(lookup("GET", "/api/v1/cluster/nodes/3").is_none());
        assert!(lookup("DELETE", "/api/v1/cluster/nodes/3/extra").is_none());
    }

    #[test]
    fn the_first_user_set_wins_and_unknown_is_a_dash() {
        let meta = RequestMeta::new(None, false);
        assert_eq!(meta.user_text(), "-");
        assert_eq!(meta.source_text(), "-");
        meta.set_user("alice");
        meta.set_user("mallory");
        assert_eq!(meta.user_text(), "alice");
    }
}
