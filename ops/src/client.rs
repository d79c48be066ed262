//! [`Client`]: one typed method per endpoint of the Conclave HTTP API (docs/api.md).
//!
//! This module maps endpoints to paths, bodies and retry classes and decodes the answers; how a
//! request travels (failover, backoff, timeouts) belongs to `request`. It must never print and
//! never panic on anything a server sends.

pub(crate) mod backup;
pub(crate) mod ca;
mod channels;
pub(crate) mod files;
pub(crate) mod join;
mod messages;
pub(crate) mod search;

use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::backoff::Backoff;
use crate::error::ClientError;
use crate::request::{ApiRequest, Reply, Retry, Timing, send_to_current, send_with_failover};
use crate::servers::{Failovers, ServerRing};
use crate::tls::TrustRoot;
use api::rest::{
    AddNodeRequest, ChangePasswordRequest, ClusterStatus, CreateUserRequest, DnsRecord,
    DnsRecordsEnvelope, LoginRequest, LoginResponse, NewDnsRecordRequest, NewUser, ProfilePatch,
    Readyz, RemovedEnvelope, Role, SetPasswordRequest, User, UserPatch, UsersEnvelope,
};

const DEFAULT_FAILOVER_DEADLINE: Duration = Duration::from_secs(10);
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// A client for a Conclave cluster. Cheap to clone; clones share the connection pool and the
/// notion of which server is current, but each has its own token and timeouts.
///
/// See the `request` module documentation (repeated in the crate docs) for exactly when a
/// request is retried on another server.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    ring: Arc<ServerRing>,
    token: Option<String>,
    timing: Timing,
    /// The root `https://` servers are checked against; kept so WebSocket sessions started
    /// from this client trust the same root.
    trust: Option<TrustRoot>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never show the token: Debug output ends up in logs and test failure messages.
        f.debug_struct("Client")
            .field("servers", &self.ring.names())
            .field("current_server", &self.current_server())
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("request_timeout", &self.timing.request_timeout)
            .field("failover_deadline", &self.timing.failover_deadline)
            .finish()
    }
}

impl Client {
    /// `servers` are base URLs like `http://127.0.0.1:8080`; a bare `127.0.0.1:8080` gets
    /// `http://` prepended. Fails if the list is empty or an entry is not a usable http URL.
    pub fn new(servers: Vec<String>) -> Result<Client, ClientError> {
        Client::new_trusting(servers, None)
    }

    /// Like [`Client::new`], checking `https://` servers against `root` (the cluster's root
    /// CA). Without a root no `https://` server is trusted: the system's certificate store is
    /// never consulted, since nothing in it can vouch for an air-gapped cluster.
    pub fn new_trusting(
        servers: Vec<String>,
        root: Option<TrustRoot>,
    ) -> Result<Client, ClientError> {
        let ring = ServerRing::new(&servers)?;
        let mut builder = reqwest::Client::builder();
        if let Some(root) = &root {
            builder = builder.use_preconfigured_tls(root.rest_config());
        }
        let http = builder
            // Nodes are addressed directly on the LAN; an inherited HTTP_PROXY would send
            // cluster traffic elsewhere and make failover decisions about the proxy instead.
            .no_proxy()
            .user_agent(concat!("conclave-ops/", env!("CARGO_PKG_VERSION")))
            // Pooled connections to a node that died are found broken only on reuse; keeping
            // idle ones briefly limits how often a write hits such a connection.
            .pool_idle_timeout(Duration::from_secs(15))
            // A TLS node's plain port redirects the API to HTTPS. Following would re-send the
            // token or password that just crossed the network in the clear and hide the
            // mistake; `ClientError::Redirected` names the HTTPS address instead.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ClientError::InvalidServer {
                url: servers.join(","),
                reason: format!("cannot build HTTP client: {e}"),
            })?;
        Ok(Client {
            http,
            ring: Arc::new(ring),
            token: None,
            timing: Timing {
                request_timeout: DEFAULT_REQUEST_TIMEOUT,
                failover_deadline: DEFAULT_FAILOVER_DEADLINE,
                backoff: Backoff::default(),
            },
            trust: root,
        })
    }

    /// The root `https://` servers are checked against, if one was given.
    pub fn trust_root(&self) -> Option<&TrustRoot> {
        self.trust.as_ref()
    }

    pub fn with_token(mut self, token: impl Into<String>) -> Client {
        self.token = Some(token.into());
        self
    }

    pub fn set_token(&mut self, token: Option<String>) {
        self.token = token;
    }

    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// Total time a call may spend failing over between servers before giving up (default
    /// 10 s).
    pub fn with_failover_deadline(mut self, d: Duration) -> Client {
        self.timing.failover_deadline = d;
        self
    }

    /// Per-HTTP-request timeout (default 5 s).
    pub fn with_request_timeout(mut self, d: Duration) -> Client {
        self.timing.request_timeout = d;
        self
    }

    /// The normalized server base URLs, in failover order.
    pub fn servers(&self) -> &[String] {
        self.ring.names()
    }

    /// The server the last successful request went to (the first server before any request).
    pub fn current_server(&self) -> String {
        self.ring.name(self.ring.current()).to_owned()
    }

    /// Failed attempts this client (and its clones) retried on another server so far: the
    /// errors the cluster produced that callers never saw.
    pub fn failovers(&self) -> Failovers {
        self.ring.failovers()
    }

    // ---- probes: one node, no failover ----

    /// `GET /healthz` on the current server only.
    pub async fn healthz(&self) -> Result<serde_json::Value, ClientError> {
        let req = ApiRequest::new(Method::GET, &["healthz"], Retry::Always);
        let reply = send_to_current(&self.http, &self.ring, self.timing, &req).await?;
        if !reply.is_success() {
            return Err(reply.error());
        }
        decode(&reply)
    }

    /// `GET /readyz` on the current server only. A 503 carrying the readiness body is a
    /// verdict, not an error: it returns `Ok(Readyz { ready: false, .. })`.
    pub async fn readyz(&self) -> Result<Readyz, ClientError> {
        let req = ApiRequest::new(Method::GET, &["readyz"], Retry::Always);
        let reply = send_to_current(&self.http, &self.ring, self.timing, &req).await?;
        if reply.is_success() {
            return decode(&reply);
        }
        if reply.status == 503
            && let Ok(verdict) = serde_json::from_slice::<Readyz>(&reply.body)
        {
            return Ok(verdict);
        }
        Err(reply.error())
    }

    // ---- sessions ----

    /// Logs in and stores the token in this client.
    pub async fn login(
        &mut self,
        username: &str,
        password: &str,
    ) -> Result<LoginResponse, ClientError> {
        let mut req = ApiRequest::new(Method::POST, &["api", "v1", "login"], Retry::Always);
        req.json_body = Some(json(&LoginRequest {
            username: username.to_owned(),
            password: password.to_owned(),
        })?);
        let login: LoginResponse = decode(&self.send(&req).await?)?;
        self.token = Some(login.token.clone());
        Ok(login)
    }

    /// Revokes the token on every node and clears it from this client.
    ///
    /// A 401 `unauthorized` also counts as success: the token is already unusable (expired,
    /// or revoked by an earlier logout whose answer was lost), which is what logout is for.
    pub async fn logout(&mut self) -> Result<(), ClientError> {
        let token = self.require_token()?;
        let mut req = ApiRequest::new(Method::POST, &["api", "v1", "logout"], Retry::IfNotSent);
        req.bearer = Some(token);
        match self.send(&req).await {
            Ok(_) => {}
            Err(ClientError::Api {
                status: 401, code, ..
            }) if code == "unauthorized" => {}
            Err(e) => return Err(e),
        }
        self.token = None;
        Ok(())
    }

    /// `GET /api/v1/me`.
    pub async fn me(&self) -> Result<User, ClientError> {
        self.get(&["api", "v1", "me"]).await
    }

    /// `GET /api/v1/me/sessions`: the caller's sessions, newest first.
    pub async fn my_sessions(&self) -> Result<Vec<api::rest::SessionEntry>, ClientError> {
        let envelope: api::rest::SessionsEnvelope =
            self.get(&["api", "v1", "me", "sessions"]).await?;
        Ok(envelope.sessions)
    }

    /// `DELETE /api/v1/me/sessions/{id}`: ends one of the caller's sessions.
    pub async fn end_my_session(&self, id: &str) -> Result<(), ClientError> {
        self.write::<()>(&["api", "v1", "me", "sessions", id], Method::DELETE, None)
            .await
            .map(drop)
    }

    /// `DELETE /api/v1/users/{name}/sessions` (admin): ends every session of a user.
    pub async fn end_user_sessions(&self, username: &str) -> Result<u32, ClientError> {
        let reply = self
            .write::<()>(
                &["api", "v1", "users", username, "sessions"],
                Method::DELETE,
                None,
            )
            .await?;
        let ended: api::rest::SessionsEnded = decode(&reply)?;
        Ok(ended.ended)
    }

    // ---- users ----

    /// Creates a user (admin only).
    pub async fn create_user(
        &self,
        username: &str,
        password: &str,
        role: Role,
    ) -> Result<User, ClientError> {
        let body = CreateUserRequest {
            username: username.to_owned(),
            password: password.to_owned(),
            role,
        };
        self.write(&["api", "v1", "users"], Method::POST, Some(&body))
            .await
            .and_then(|reply| decode(&reply))
    }

    /// Lists users (every user since the v1 additions; admins only before).
    pub async fn list_users(&self) -> Result<Vec<User>, ClientError> {
        let envelope: UsersEnvelope = self.get(&["api", "v1", "users"]).await?;
        Ok(envelope.users)
    }

    /// Creates a user with the optional fields of the v1 additions (admin only).
    pub async fn create_user_with(&self, user: &NewUser) -> Result<User, ClientError> {
        self.write(&["api", "v1", "users"], Method::POST, Some(user))
            .await
            .and_then(|reply| decode(&reply))
    }

    /// Disables or enables a user, changes their role or display name (admin only). Disabling
    /// revokes every session of the user. Retried only if never sent, like every other
    /// account administration write.
    pub async fn update_user(
        &self,
        username: &str,
        patch: &UserPatch,
    ) -> Result<User, ClientError> {
        self.write(
            &["api", "v1", "users", username],
            Method::PATCH,
            Some(patch),
        )
        .await
        .and_then(|reply| decode(&reply))
    }

    /// Sets another user's password (admin only); revokes all their sessions, and the user
    /// must change it at next login. A step-up operation: `current_password` is the admin's
    /// own, and the server refuses it over plain HTTP (403 `https_required`). A password on
    /// the common-passwords list is refused with 400 `weak_password`.
    pub async fn set_user_password(
        &self,
        username: &str,
        password: &str,
        current_password: &str,
    ) -> Result<(), ClientError> {
        self.write(
            &["api", "v1", "users", username, "password"],
            Method::POST,
            Some(&SetPasswordRequest {
                password: password.to_owned(),
                current_password: Some(current_password.to_owned()),
            }),
        )
        .await
        .map(drop)
    }

    /// Changes the caller's display name (empty means the username). Retried like a read: it
    /// sets an absolute value.
    pub async fn update_me(&self, display_name: &str) -> Result<User, ClientError> {
        self.call(
            &["api", "v1", "me"],
            Method::PATCH,
            Some(&ProfilePatch {
                display_name: display_name.to_owned(),
            }),
            Retry::Always,
        )
        .await
    }

    /// Changes the caller's own password; revokes the caller's other sessions (this token
    /// stays valid). Retried only if never sent: a repeat after success would present a
    /// current password that is no longer current.
    pub async fn change_password(&self, current: &str, new: &str) -> Result<(), ClientError> {
        self.change_password_indexed(current, new).await.map(drop)
    }

    /// [`Client::change_password`], returning the log index of the change (`X-Conclave-Index`)
    /// so a caller can wait until other nodes have applied it before logging in there.
    pub async fn change_password_indexed(
        &self,
        current: &str,
        new: &str,
    ) -> Result<Option<u64>, ClientError> {
        self.write(
            &["api", "v1", "me", "password"],
            Method::POST,
            Some(&ChangePasswordRequest {
                current_password: current.to_owned(),
                new_password: new.to_owned(),
            }),
        )
        .await
        .map(|reply| reply.index)
    }

    // ---- cluster ----

    /// `GET /api/v1/cluster` (no authentication needed).
    pub async fn cluster(&self) -> Result<ClusterStatus, ClientError> {
        let req = ApiRequest::new(Method::GET, &["api", "v1", "cluster"], Retry::Always);
        decode(&self.send(&req).await?)
    }

    /// Adds a running, uninitialized node (admin only). The server answers only once the node
    /// has caught up and become a voter, which can take longer than the default request timeout
    /// on a large log: raise it with [`Client::with_request_timeout`] if needed.
    pub async fn add_node(
        &self,
        id: u64,
        api_addr: &str,
        cluster_addr: &str,
    ) -> Result<ClusterStatus, ClientError> {
        let body = AddNodeRequest {
            id,
            api_addr: api_addr.to_owned(),
            cluster_addr: cluster_addr.to_owned(),
        };
        self.write(
            &["api", "v1", "cluster", "nodes"],
            Method::POST,
            Some(&body),
        )
        .await
        .and_then(|reply| decode(&reply))
    }

    /// Removes a node from the cluster (admin only).
    pub async fn remove_node(&self, id: u64) -> Result<ClusterStatus, ClientError> {
        let id = id.to_string();
        self.write::<()>(
            &["api", "v1", "cluster", "nodes", &id],
            Method::DELETE,
            None,
        )
        .await
        .and_then(|reply| decode(&reply))
    }

    /// Marks a member as draining (admin only): it leaves `/readyz` and DNS answers but keeps
    /// serving its clients. Retried like a read: it sets a flag.
    pub async fn drain_node(&self, id: u64) -> Result<ClusterStatus, ClientError> {
        self.drain_method(Method::POST, id).await
    }

    /// Clears a member's draining flag (admin only).
    pub async fn undrain_node(&self, id: u64) -> Result<ClusterStatus, ClientError> {
        self.drain_method(Method::DELETE, id).await
    }

    async fn drain_method(&self, method: Method, id: u64) -> Result<ClusterStatus, ClientError> {
        let id = id.to_string();
        let path = ["api", "v1", "cluster", "nodes", &id, "drain"];
        self.call::<(), _>(&path, method, None, Retry::Always).await
    }

    // ---- static DNS records (admin only) ----

    /// Every static record of the workspace zone, sorted by name and type.
    pub async fn list_dns_records(&self) -> Result<Vec<DnsRecord>, ClientError> {
        let envelope: DnsRecordsEnvelope = self.get(&["api", "v1", "dns", "records"]).await?;
        Ok(envelope.records)
    }

    /// Adds a record (`rtype` is `A`, `AAAA`, `CNAME`, `SRV` or `TXT`, `value` in zone-file
    /// form); adding one that exists only sets its TTL, so it is retried like a read. A name
    /// the cluster answers itself is refused with 400 `reserved_name`, a CNAME beside other
    /// records with 409 `conflict`.
    pub async fn add_dns_record(
        &self,
        name: &str,
        rtype: &str,
        value: &str,
        ttl: Option<u32>,
    ) -> Result<DnsRecord, ClientError> {
        let body = NewDnsRecordRequest {
            name: name.to_owned(),
            rtype: rtype.to_owned(),
            value: value.to_owned(),
            ttl,
        };
        self.call(
            &["api", "v1", "dns", "records"],
            Method::POST,
            Some(&body),
            Retry::Always,
        )
        .await
    }

    /// Removes the records of `rtype` at `name` with `value`, or all of that type when `value`
    /// is `None`; returns how many were removed (404 `not_found` when none matched). Retried
    /// only if never sent: a repeat after success would answer 404.
    pub async fn remove_dns_records(
        &self,
        name: &str,
        rtype: &str,
        value: Option<&str>,
    ) -> Result<u64, ClientError> {
        let path = ["api", "v1", "dns", "records"];
        let mut req = ApiRequest::new(Method::DELETE, &path, Retry::IfNotSent);
        req.bearer = Some(self.require_token()?);
        req.query = vec![("name", name.to_owned()), ("type", rtype.to_owned())];
        if let Some(value) = value {
            req.query.push(("value", value.to_owned()));
        }
        let removed: RemovedEnvelope = decode(&self.send(&req).await?)?;
        Ok(removed.removed)
    }

    // ---- helpers ----

    fn require_token(&self) -> Result<&str, ClientError> {
        self.token.as_deref().ok_or(ClientError::NotLoggedIn)
    }

    async fn send(&self, req: &ApiRequest<'_>) -> Result<Reply, ClientError> {
        send_with_failover(&self.http, &self.ring, self.timing, req).await
    }

    /// An authenticated GET, always retryable.
    async fn get<T: DeserializeOwned>(&self, path: &[&str]) -> Result<T, ClientError> {
        let mut req = ApiRequest::new(Method::GET, path, Retry::Always);
        req.bearer = Some(self.require_token()?);
        decode(&self.send(&req).await?)
    }

    /// An authenticated request with a JSON body (if any) and the given retry class, decoding
    /// the answer.
    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &[&str],
        method: Method,
        body: Option<&B>,
        retry: Retry,
    ) -> Result<T, ClientError> {
        let mut req = ApiRequest::new(method, path, retry);
        req.bearer = Some(self.require_token()?);
        if let Some(body) = body {
            req.json_body = Some(json(body)?);
        }
        decode(&self.send(&req).await?)
    }

    /// An authenticated write that is not idempotent: retried only if never sent.
    async fn write<B: Serialize>(
        &self,
        path: &[&str],
        method: Method,
        body: Option<&B>,
    ) -> Result<Reply, ClientError> {
        let mut req = ApiRequest::new(method, path, Retry::IfNotSent);
        req.bearer = Some(self.require_token()?);
        if let Some(body) = body {
            req.json_body = Some(json(body)?);
        }
        self.send(&req).await
    }
}

fn json<T: Serialize>(value: &T) -> Result<Vec<u8>, ClientError> {
    // Serializing these plain structs cannot fail in practice; map it anyway rather than panic.
    serde_json::to_vec(value).map_err(|e| ClientError::Decode {
        message: format!("cannot encode request: {e}"),
    })
}

fn decode<T: DeserializeOwned>(reply: &Reply) -> Result<T, ClientError> {
    serde_json::from_slice(&reply.body).map_err(|e| ClientError::Decode {
        message: format!(
            "{} answered HTTP {} with a body that does not match the API: {e}",
            reply.server, reply.status
        ),
    })
}
