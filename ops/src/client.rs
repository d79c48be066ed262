//! [`Client`]: one typed method per endpoint of the Conclave HTTP API (docs/api.md).
//!
//! This module maps endpoints to paths, bodies and retry classes and decodes the answers; how a
//! request travels (failover, backoff, timeouts) belongs to `request`. It must never print and
//! never panic on anything a server sends.

pub(crate) mod ca;
pub(crate) mod join;

use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::backoff::Backoff;
use crate::error::ClientError;
use crate::request::{
    ApiRequest, MIN_INDEX_HEADER, Reply, Retry, Timing, send_to_current, send_with_failover,
};
use crate::servers::ServerRing;
use crate::tls::TrustRoot;
use api::rest::{
    AddNodeRequest, ChangePasswordRequest, Channel, ChannelPatch, ChannelsEnvelope, ClusterStatus,
    CreateChannelRequest, CreateUserRequest, DmRequest, DnsRecord, DnsRecordsEnvelope,
    EditMessageRequest, LoginRequest, LoginResponse, MemberRequest, Message, MessagePage,
    NewChannel, NewDnsRecordRequest, NewUser, PinsEnvelope, PostMessageRequest, PostOutcome,
    PostedMessage, ProfilePatch, ReadMarker, ReadRequest, Readyz, RemovedEnvelope, Role,
    SetPasswordRequest, Thread, User, UserPatch, UsersEnvelope,
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

    /// Sets another user's password (admin only); revokes all their sessions. A password on
    /// the common-passwords list is refused with 400 `weak_password`.
    pub async fn set_user_password(
        &self,
        username: &str,
        password: &str,
    ) -> Result<(), ClientError> {
        self.write(
            &["api", "v1", "users", username, "password"],
            Method::POST,
            Some(&SetPasswordRequest {
                password: password.to_owned(),
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
        self.write(
            &["api", "v1", "me", "password"],
            Method::POST,
            Some(&ChangePasswordRequest {
                current_password: current.to_owned(),
                new_password: new.to_owned(),
            }),
        )
        .await
        .map(drop)
    }

    // ---- channels ----

    pub async fn create_channel(&self, name: &str) -> Result<Channel, ClientError> {
        let body = CreateChannelRequest {
            name: name.to_owned(),
        };
        self.write(&["api", "v1", "channels"], Method::POST, Some(&body))
            .await
            .and_then(|reply| decode(&reply))
    }

    /// Joins a channel; joining twice is not an error.
    pub async fn join_channel(&self, name: &str) -> Result<Channel, ClientError> {
        self.write::<()>(&["api", "v1", "channels", name, "join"], Method::POST, None)
            .await
            .and_then(|reply| decode(&reply))
    }

    pub async fn list_channels(&self) -> Result<Vec<Channel>, ClientError> {
        let envelope: ChannelsEnvelope = self.get(&["api", "v1", "channels"]).await?;
        Ok(envelope.channels)
    }

    pub async fn get_channel(&self, name: &str) -> Result<Channel, ClientError> {
        self.get(&["api", "v1", "channels", name]).await
    }

    /// Creates a channel with a kind, title and topic (the v1 form of
    /// [`Client::create_channel`]). Not idempotent: retried only if never sent.
    pub async fn create_channel_with(&self, channel: &NewChannel) -> Result<Channel, ClientError> {
        self.call(
            &["api", "v1", "channels"],
            Method::POST,
            Some(channel),
            Retry::IfNotSent,
        )
        .await
    }

    /// Changes a channel's title, topic or archive flag (members; admins for any channel).
    /// Retried like a read: the patch sets absolute values, so applying it twice is the same
    /// as once.
    pub async fn update_channel(
        &self,
        name: &str,
        patch: &ChannelPatch,
    ) -> Result<Channel, ClientError> {
        self.call(
            &["api", "v1", "channels", name],
            Method::PATCH,
            Some(patch),
            Retry::Always,
        )
        .await
    }

    /// Leaves a channel.
    pub async fn leave_channel(&self, name: &str) -> Result<Channel, ClientError> {
        self.write::<()>(
            &["api", "v1", "channels", name, "leave"],
            Method::POST,
            None,
        )
        .await
        .and_then(|reply| decode(&reply))
    }

    /// Adds `username` to a private channel (its members, or admins).
    pub async fn add_member(&self, channel: &str, username: &str) -> Result<Channel, ClientError> {
        self.write(
            &["api", "v1", "channels", channel, "members"],
            Method::POST,
            Some(&MemberRequest {
                username: username.to_owned(),
            }),
        )
        .await
        .and_then(|reply| decode(&reply))
    }

    /// Removes `username` from a channel (admins, or the user themself).
    pub async fn remove_member(
        &self,
        channel: &str,
        username: &str,
    ) -> Result<Channel, ClientError> {
        self.write::<()>(
            &["api", "v1", "channels", channel, "members", username],
            Method::DELETE,
            None,
        )
        .await
        .and_then(|reply| decode(&reply))
    }

    /// Opens (or finds) the direct-message channel between the caller and `users` (1 to 7
    /// others). Retried like a read: asking again returns the same channel.
    pub async fn open_dm(&self, users: &[&str]) -> Result<Channel, ClientError> {
        self.call(
            &["api", "v1", "dms"],
            Method::POST,
            Some(&DmRequest {
                users: users.iter().map(|u| (*u).to_owned()).collect(),
            }),
            Retry::Always,
        )
        .await
    }

    // ---- messages ----

    /// Posts a message. Safe to retry with the same `client_msg_id` (see
    /// [`crate::new_client_msg_id`]): a retry returns the original with `duplicate = true`.
    pub async fn post_message(
        &self,
        channel: &str,
        body: &str,
        client_msg_id: &str,
    ) -> Result<PostOutcome, ClientError> {
        self.post(channel, body, client_msg_id, None).await
    }

    /// Posts a reply in the thread of message `root` (same retry rules as
    /// [`Client::post_message`]).
    pub async fn post_reply(
        &self,
        channel: &str,
        root: u64,
        body: &str,
        client_msg_id: &str,
    ) -> Result<PostOutcome, ClientError> {
        self.post(channel, body, client_msg_id, Some(root)).await
    }

    async fn post(
        &self,
        channel: &str,
        body: &str,
        client_msg_id: &str,
        thread_root: Option<u64>,
    ) -> Result<PostOutcome, ClientError> {
        let path = ["api", "v1", "channels", channel, "messages"];
        // Always retryable: the server deduplicates by (author, client_msg_id).
        let mut req = ApiRequest::new(Method::POST, &path, Retry::Always);
        req.bearer = Some(self.require_token()?);
        req.json_body = Some(json(&PostMessageRequest {
            body: body.to_owned(),
            client_msg_id: client_msg_id.to_owned(),
            thread_root,
        })?);
        let reply = self.send(&req).await?;
        let posted: PostedMessage = decode(&reply)?;
        Ok(PostOutcome {
            message: posted.message,
            // The body flag is authoritative; the status (200 = original returned, 201 =
            // created) is the documented fallback.
            duplicate: posted.duplicate.unwrap_or(reply.status == 200),
            index: reply.index,
        })
    }

    /// Lists messages with `seq > after`, at most `limit`. With `min_index`, the answering node
    /// first waits until it has applied that index (read-your-writes across nodes).
    pub async fn list_messages(
        &self,
        channel: &str,
        after: u64,
        limit: u32,
        min_index: Option<u64>,
    ) -> Result<MessagePage, ClientError> {
        let path = ["api", "v1", "channels", channel, "messages"];
        let mut req = ApiRequest::new(Method::GET, &path, Retry::Always);
        req.bearer = Some(self.require_token()?);
        req.query = vec![("after", after.to_string()), ("limit", limit.to_string())];
        if let Some(index) = min_index {
            req.headers.push((MIN_INDEX_HEADER, index.to_string()));
        }
        decode(&self.send(&req).await?)
    }

    /// The `limit` messages just below `before` (default: the newest), oldest first;
    /// `has_more` in the page says whether older ones exist.
    pub async fn messages_before(
        &self,
        channel: &str,
        before: Option<u64>,
        limit: u32,
    ) -> Result<MessagePage, ClientError> {
        let path = ["api", "v1", "channels", channel, "messages"];
        let mut req = ApiRequest::new(Method::GET, &path, Retry::Always);
        req.bearer = Some(self.require_token()?);
        // Without `before` the server lists from the oldest message (the v1 `after` form), so
        // "the newest" is asked for as "below the largest possible seq".
        let before = before.unwrap_or(u64::MAX);
        req.query.push(("before", before.to_string()));
        req.query.push(("limit", limit.to_string()));
        decode(&self.send(&req).await?)
    }

    /// A thread: its root message and every reply.
    pub async fn thread(&self, channel: &str, root: u64) -> Result<Thread, ClientError> {
        let root = root.to_string();
        self.get(&["api", "v1", "channels", channel, "threads", &root])
            .await
    }

    /// Replaces the body of one of the caller's messages. Retried like a read: setting the
    /// same body twice has the effect of setting it once.
    pub async fn edit_message(
        &self,
        channel: &str,
        seq: u64,
        body: &str,
    ) -> Result<Message, ClientError> {
        let seq = seq.to_string();
        let path = ["api", "v1", "channels", channel, "messages", &seq];
        self.call(
            &path,
            Method::PATCH,
            Some(&EditMessageRequest {
                body: body.to_owned(),
            }),
            Retry::Always,
        )
        .await
    }

    /// Deletes a message (its author, or an admin) and returns the tombstone. Retried like a
    /// read: deleting is absolute, a second delete changes nothing.
    pub async fn delete_message(&self, channel: &str, seq: u64) -> Result<Message, ClientError> {
        let seq = seq.to_string();
        let path = ["api", "v1", "channels", channel, "messages", &seq];
        self.call::<(), _>(&path, Method::DELETE, None, Retry::Always)
            .await
    }

    /// Adds the caller's `emoji` reaction (PUT: idempotent, retried like a read).
    pub async fn add_reaction(
        &self,
        channel: &str,
        seq: u64,
        emoji: &str,
    ) -> Result<Message, ClientError> {
        self.reaction(Method::PUT, channel, seq, emoji).await
    }

    /// Removes the caller's `emoji` reaction (DELETE: idempotent, retried like a read).
    pub async fn remove_reaction(
        &self,
        channel: &str,
        seq: u64,
        emoji: &str,
    ) -> Result<Message, ClientError> {
        self.reaction(Method::DELETE, channel, seq, emoji).await
    }

    async fn reaction(
        &self,
        method: Method,
        channel: &str,
        seq: u64,
        emoji: &str,
    ) -> Result<Message, ClientError> {
        let seq = seq.to_string();
        // `endpoint` percent-encodes each segment, which is the URL encoding the API asks for.
        let path = [
            "api",
            "v1",
            "channels",
            channel,
            "messages",
            &seq,
            "reactions",
            emoji,
        ];
        self.call::<(), _>(&path, method, None, Retry::Always).await
    }

    /// Pins a message (PUT: idempotent, retried like a read).
    pub async fn pin(&self, channel: &str, seq: u64) -> Result<Message, ClientError> {
        self.pin_method(Method::PUT, channel, seq).await
    }

    /// Unpins a message (DELETE: idempotent, retried like a read).
    pub async fn unpin(&self, channel: &str, seq: u64) -> Result<Message, ClientError> {
        self.pin_method(Method::DELETE, channel, seq).await
    }

    async fn pin_method(
        &self,
        method: Method,
        channel: &str,
        seq: u64,
    ) -> Result<Message, ClientError> {
        let seq = seq.to_string();
        let path = ["api", "v1", "channels", channel, "messages", &seq, "pin"];
        self.call::<(), _>(&path, method, None, Retry::Always).await
    }

    /// The pinned messages of a channel.
    pub async fn pins(&self, channel: &str) -> Result<Vec<Message>, ClientError> {
        let envelope: PinsEnvelope = self
            .get(&["api", "v1", "channels", channel, "pins"])
            .await?;
        Ok(envelope.messages)
    }

    /// Moves the caller's read marker forward to `seq` (never back). Retried like a read: the
    /// marker only moves forward, so a repeat is a no-op.
    pub async fn mark_read(&self, channel: &str, seq: u64) -> Result<ReadMarker, ClientError> {
        let path = ["api", "v1", "channels", channel, "read"];
        self.call(
            &path,
            Method::POST,
            Some(&ReadRequest { seq }),
            Retry::Always,
        )
        .await
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
