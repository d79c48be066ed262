//! The fixture: a single-node cluster in a temporary directory, initialized like
//! `conclave init` does (this node leads, an admin user exists), behind `web::router` with
//! `ApiConfig::default()` (no CA). Requests go through `tower::ServiceExt::oneshot`, without
//! sockets, except where a test serves the router on 127.0.0.1 itself (the WebSocket tests).
//! The node's cluster port is served on 127.0.0.1 (member-health probes, and the tests that
//! add a second node with `start_node`).
//!
//! Every test starts its own node: tests share nothing and may run in any order. Waits are on
//! conditions with deadlines, never fixed sleeps.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use axum::response::Response;
use cluster::{ClusterConfig, ClusterNode, Command, NodeInfo, Role};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

pub const ADMIN: &str = "admin";
pub const ADMIN_PW: &str = "admin pass phrase 1";
/// The password every user made by [`Harness::member`] gets.
pub const MEMBER_PW: &str = "member pass phrase 1";
/// An address nothing listens on (the client API is not served in these tests).
pub const API_ADDR: &str = "127.0.0.1:9";
const DEADLINE: Duration = Duration::from_secs(10);

/// A response as the tests look at it.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// The body parsed as JSON; `Value::Null` when empty, `Value::String` when not JSON.
    pub json: Value,
    pub bytes: Vec<u8>,
}

pub struct Harness {
    pub node: Arc<ClusterNode>,
    /// Where this node's cluster port (Raft RPC, status probes) listens, on 127.0.0.1.
    pub cluster_addr: String,
    app: Router,
    cancel: CancellationToken,
    dir: Option<TempDir>,
    member_hash: tokio::sync::OnceCell<String>,
    /// Whether [`Harness::send`] marks requests as HTTPS ([`Harness::over_https`]).
    https: std::sync::atomic::AtomicBool,
}

impl Harness {
    /// A fresh single-node cluster with the admin user, serving `ApiConfig::default()`.
    pub async fn start() -> Self {
        Self::start_with(web::ApiConfig::default()).await
    }

    pub async fn start_with(config: web::ApiConfig) -> Self {
        let cancel = CancellationToken::new();
        let (node, cluster_addr, dir) = start_node(1, &cancel).await;
        node.initialize().await.expect("initialize");
        node.raft()
            .wait(Some(DEADLINE))
            .state(openraft::ServerState::Leader, "single node becomes leader")
            .await
            .expect("leader");
        let hash = web::auth::hash_password(ADMIN_PW.into())
            .await
            .expect("hash");
        node.write(Command::CreateUser {
            username: ADMIN.into(),
            password_hash: hash,
            role: Role::Admin,
        })
        .await
        .expect("create the admin");
        // The leader commits a version-activation marker soon after it starts
        // (`version_activation`): waited for here, so that no test sees it as a write of its own.
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while node.reader().active_version().unwrap_or(1) < cluster::command::COMMAND_VERSION {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for the command version to be active"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let app = web::router(node.clone(), config, cancel.child_token());
        Harness {
            node,
            cluster_addr,
            app,
            cancel,
            dir: Some(dir),
            member_hash: tokio::sync::OnceCell::new(),
            https: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// From now on, requests are sent as if they came over HTTPS (the node's HTTPS server
    /// marks its requests with `ViaHttps`): what step-up operations (password resets, role
    /// changes, disabling, the CA's root-key operations) need on a production node.
    pub fn over_https(&self) {
        self.https.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Sends a prepared request: plain HTTP, or as over HTTPS after [`Harness::over_https`].
    pub async fn send(&self, mut request: Request<Body>) -> Reply {
        if self.https.load(std::sync::atomic::Ordering::Relaxed) {
            request.extensions_mut().insert(web::security_log::ViaHttps);
        }
        self.send_plain(request).await
    }

    /// Sends a prepared request as plain HTTP (no `ViaHttps`, no source address).
    pub async fn send_plain(&self, request: Request<Body>) -> Reply {
        let response: Response = self
            .app
            .clone()
            .oneshot(request)
            .await
            .expect("the router is infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), 16 * 1024 * 1024)
            .await
            .expect("read body")
            .to_vec();
        let json = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Reply {
            status,
            headers,
            json,
            bytes,
        }
    }

    /// A request with an optional bearer token and an optional raw body of `content_type`.
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<(&str, Vec<u8>)>,
    ) -> Reply {
        let mut b = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).expect("method"))
            .uri(path);
        if let Some(t) = token {
            b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let body = match body {
            Some((content_type, bytes)) => {
                b = b.header(header::CONTENT_TYPE, content_type);
                Body::from(bytes)
            }
            None => Body::empty(),
        };
        self.send(b.body(body).expect("request")).await
    }

    /// A JSON request, the whole reply.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let body = body.map(|v| ("application/json", serde_json::to_vec(&v).expect("json")));
        self.raw(method, path, token, body).await
    }

    /// A JSON request: `(status, body)`.
    pub async fn req(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let body = body.map(|v| ("application/json", serde_json::to_vec(&v).expect("json")));
        let r = self.raw(method, path, token, body).await;
        (r.status, r.json)
    }

    /// Logs in and returns the token.
    pub async fn login(&self, user: &str, password: &str) -> String {
        let (status, body) = self
            .req(
                "POST",
                "/api/v1/login",
                None,
                Some(json!({"username": user, "password": password})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "login {user}: {body}");
        body["token"].as_str().expect("token").to_string()
    }

    /// The admin's token.
    pub async fn admin(&self) -> String {
        self.login(ADMIN, ADMIN_PW).await
    }

    /// Creates member `name` (password [`MEMBER_PW`]) and returns its token. The user is
    /// written straight through Raft with a cheap argon2id hash (verification follows the
    /// hash's own parameters), so fixtures do not spend a full password hash per user; the
    /// account routes themselves are tested with real hashes (`session_users`).
    pub async fn member(&self, name: &str) -> String {
        self.user_with_role(name, Role::Member).await
    }

    /// [`Harness::member`] with a chosen role (an admin made the cheap way).
    pub async fn user_with_role(&self, name: &str, role: Role) -> String {
        let hash = self
            .member_hash
            .get_or_init(|| async { cheap_hash(MEMBER_PW) })
            .await
            .clone();
        self.node
            .write(Command::CreateUser {
                username: name.into(),
                password_hash: hash,
                role,
            })
            .await
            .unwrap_or_else(|e| panic!("create {name}: {e}"));
        self.login(name, MEMBER_PW).await
    }

    /// Creates a channel as `token`'s user; returns its view.
    pub async fn channel(&self, token: &str, name: &str, kind: &str) -> Value {
        let (status, body) = self
            .req(
                "POST",
                "/api/v1/channels",
                Some(token),
                Some(json!({"name": name, "kind": kind})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "create channel {name}: {body}");
        body
    }

    /// Posts `text` to `channel`; returns the message.
    pub async fn post(&self, token: &str, channel: &str, text: &str, id: &str) -> Value {
        let (status, body) = self
            .req(
                "POST",
                &format!("/api/v1/channels/{channel}/messages"),
                Some(token),
                Some(json!({"body": text, "client_msg_id": id})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "post to {channel}: {body}");
        body
    }

    /// The messages of `channel` as `token`'s user sees them.
    pub async fn messages(&self, token: &str, channel: &str) -> Vec<Value> {
        let (status, body) = self
            .req(
                "GET",
                &format!("/api/v1/channels/{channel}/messages"),
                Some(token),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "list {channel}: {body}");
        body["messages"].as_array().expect("messages").clone()
    }

    /// Polls `f` until it is true, failing after the deadline.
    pub async fn eventually<F, Fut>(&self, what: &str, mut f: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        self.until(what, || {
            let fut = f();
            async move { fut.await.then_some(()) }
        })
        .await
    }

    /// Polls `f` until it returns `Some`, failing after the deadline.
    pub async fn until<T, F, Fut>(&self, what: &str, mut f: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            if let Some(v) = f().await {
                return v;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for: {what}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Polls `GET /readyz` until it answers 200; returns that answer's body.
    pub async fn ready(&self) -> Value {
        self.until("GET /readyz answers 200", || async {
            let (status, body) = self.req("GET", "/readyz", None, None).await;
            (status == StatusCode::OK).then_some(body)
        })
        .await
    }

    /// The router, for tests that serve it on a socket.
    pub fn app(&self) -> Router {
        self.app.clone()
    }

    /// Shuts the node down and removes its directory (dropping does the same without waiting
    /// for the node's tasks).
    pub async fn stop(mut self) {
        self.cancel.cancel();
        self.node.shutdown().await;
        if let Some(dir) = self.dir.take() {
            dir.close().expect("remove the temp dir");
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.cancel.cancel();
        // `TempDir`'s own drop removes the directory.
    }
}

/// Starts node `id` (not initialized) in a new temporary directory, its cluster port served
/// on 127.0.0.1 until `cancel`.
pub async fn start_node(
    id: u64,
    cancel: &CancellationToken,
) -> (Arc<ClusterNode>, String, TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the cluster port");
    let cluster_addr = listener.local_addr().expect("addr").to_string();
    let info = NodeInfo {
        api_addr: API_ADDR.into(),
        cluster_addr: cluster_addr.clone(),
    };
    // A fresh subdirectory: the node creates it 0700 and refuses a data directory others can
    // reach, which the temp dir itself (0755 under the usual umask) is.
    let config = ClusterConfig::with_defaults(id, dir.path().join("data"), info);
    let node = ClusterNode::start(config, cancel.child_token())
        .await
        .expect("start the node");
    let router = node.rpc_router();
    let stop = cancel.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
    });
    (node, cluster_addr, dir)
}

/// An argon2id hash of `password` with the smallest parameters (8 KiB, one pass).
fn cheap_hash(password: &str) -> String {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let params = argon2::Params::new(8, 1, 1, None).expect("params");
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    argon
        .hash_password(password.as_bytes(), &salt)
        .expect("hash")
        .to_string()
}

/// Asserts an error response: `status` and `{"error":{"code":code,"message":<non-empty>}}`
/// and nothing else.
#[track_caller]
pub fn assert_error(got: (StatusCode, &Value), status: StatusCode, code: &str) {
    let (got_status, body) = got;
    assert_eq!(got_status, status, "status; body: {body}");
    assert_eq!(body["error"]["code"], json!(code), "code; body: {body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(!message.trim().is_empty(), "empty message: {body}");
    let keys: Vec<&String> = body.as_object().expect("object").keys().collect();
    assert_eq!(keys, ["error"], "extra fields: {body}");
    let inner: Vec<&String> = body["error"].as_object().expect("object").keys().collect();
    assert_eq!(inner, ["code", "message"], "error fields: {body}");
}

/// `assert_error` for a `(status, body)` pair.
#[track_caller]
pub fn assert_err(r: &(StatusCode, Value), status: StatusCode, code: &str) {
    assert_error((r.0, &r.1), status, code);
}

/// The index of the last log entry this node applied (to show a refusal proposed nothing).
pub fn applied_index(h: &Harness) -> Option<u64> {
    h.node.metrics().last_applied.map(|l| l.index)
}

/// A syntactically valid token nobody was issued.
pub const FORGED_TOKEN: &str =
    "cv1.0000000000000000000000000000000000000000000000000000000000000000.1";

/// Asserts that `method path` refuses a missing, a malformed and an unknown token with 401
/// `unauthorized`.
pub async fn assert_needs_token(h: &Harness, method: &str, path: &str, body: Option<Value>) {
    for token in [None, Some("not-a-token"), Some(FORGED_TOKEN)] {
        let r = h.req(method, path, token, body.clone()).await;
        assert_err(&r, StatusCode::UNAUTHORIZED, "unauthorized");
    }
}
