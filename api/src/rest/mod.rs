//! The request and response shapes of the HTTP API (docs/api.md), as plain serde structs.
//!
//! Response types encode to exactly what the server sends and decode what clients have always
//! accepted: they never use `deny_unknown_fields` (a newer server may add fields and an older
//! client must keep working), and fields added with the v1 additions default when absent.
//! Request bodies are written the way `ops` sends them; how strictly the server reads them is
//! the server's business (`web`). This module holds data only; it must never perform I/O.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

/// Decodes `null` like a missing field: some servers write `null` where the API documents a
/// string that may be empty.
fn null_as_default<'de, D, T>(de: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(de)?.unwrap_or_default())
}

/// A user's role. Serialized as `"admin"` / `"member"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Member,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Admin => "admin",
            Role::Member => "member",
        })
    }
}

/// `POST /api/v1/login` response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LoginResponse {
    pub token: String,
    pub username: String,
    pub role: Role,
    /// The session's absolute expiry; it may end earlier when idle (see `docs/security.md`).
    pub expires_at_ms: u64,
    /// The password was set by an admin: every route but `POST /api/v1/me/password` and
    /// `POST /api/v1/logout` answers 403 `password_change_required` until it is changed.
    /// Absent from older servers.
    #[serde(default)]
    pub must_change_password: bool,
}

/// A user as returned by `/me`, `/users` and the WebSocket `hello` / `user_updated` frames.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct User {
    pub username: String,
    /// Empty from servers before the v1 additions (and in `hello`, which may omit it): show
    /// the username then.
    #[serde(default, deserialize_with = "null_as_default")]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub display_name: String,
    pub role: Role,
    /// Absent from the WebSocket `hello` user object (a disabled user cannot connect).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub disabled: bool,
}

/// What kind of channel: who may read it and how it is named.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum ChannelKind {
    /// Readable by every user; what servers before the v1 additions have exclusively.
    #[default]
    Public,
    /// Readable by members only.
    Private,
    /// A direct-message conversation (`dm:alice:bob`), members only.
    #[serde(alias = "dm")]
    Direct,
    /// A kind added by a newer server.
    #[serde(other)]
    Unknown,
}

impl std::fmt::Display for ChannelKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ChannelKind::Public => "public",
            ChannelKind::Private => "private",
            ChannelKind::Direct => "direct",
            ChannelKind::Unknown => "unknown",
        })
    }
}

/// The channel object (REST and WebSocket alike).
///
/// Every field added by the v1 additions has a default, so a server that predates them still
/// decodes. `member`, `last_read`, `unread` and `mentions` are set only in the REST channel
/// list (they describe the caller).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Channel {
    pub name: String,
    #[serde(default, deserialize_with = "null_as_default")]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub title: String,
    #[serde(default, deserialize_with = "null_as_default")]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub topic: String,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub kind: ChannelKind,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub archived: bool,
    pub created_by: String,
    pub created_at_ms: u64,
    pub members: Vec<String>,
    pub last_seq: u64,
    /// The channel's newest event sequence (`ev`): a WebSocket subscription cursor.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub last_ev: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub member: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub last_read: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub unread: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub mentions: Option<u64>,
    /// Whether the caller muted the channel (no notifications, no badge count). Set where
    /// `member` is; absent from servers before command version 7.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub muted: Option<bool>,
}

/// One chat message. `seq` is per channel, gapless and identical on every node.
///
/// Fields after `client_msg_id` came with the v1 additions and default when absent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Message {
    pub channel: String,
    pub seq: u64,
    pub author: String,
    pub body: String,
    pub ts_ms: u64,
    #[serde(default, deserialize_with = "null_as_default")]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub client_msg_id: String,
    /// The `seq` of the thread's root when this is a reply.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub thread_root: Option<u64>,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub reply_count: u64,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub edited_at_ms: Option<u64>,
    /// A tombstone: the body is empty.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub deleted: bool,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub pinned: bool,
    /// Emoji to the users who reacted with it.
    #[serde(default, deserialize_with = "null_as_default")]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub reactions: BTreeMap<String, Vec<String>>,
    /// Usernames this message mentions.
    #[serde(default, deserialize_with = "null_as_default")]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub mentions: Vec<String>,
    /// The body mentions `@channel`, `@here` or `@all` (docs/protocol.md).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub channel_mention: bool,
    /// Files the message carries; empty for plain messages and for tombstones. Absent from
    /// servers before file attachments.
    #[serde(default, deserialize_with = "null_as_default")]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub attachments: Vec<FileInfo>,
}

/// A file attached to a message (`GET /api/v1/files/{file_id}` serves its bytes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FileInfo {
    /// 32 lower-case hex characters.
    pub id: String,
    /// The sanitised file name.
    pub name: String,
    pub size: u64,
    /// Lower-case hex SHA-256 of the whole file.
    pub sha256: String,
    /// The type sniffed from the content by the server (never the client's word).
    pub mime: String,
    /// One of the image types served inline (png, jpeg, gif, webp).
    pub image: bool,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub width: Option<u32>,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub height: Option<u32>,
    /// `GET /api/v1/files/{file_id}/thumbnail` has one.
    pub has_thumbnail: bool,
    pub uploader: String,
    pub channel: String,
}

/// The result of posting a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PostOutcome {
    pub message: Message,
    /// True when the server already had a message with this `(author, client_msg_id)` and
    /// returned the original instead of writing a new one.
    pub duplicate: bool,
    /// The `X-Conclave-Index` header: the Raft index holding the write, usable as a
    /// `min_index` for read-your-writes on another node.
    pub index: Option<u64>,
}

/// `GET /api/v1/channels/{name}/messages` response (both the `after` and the `before` form).
/// Fields in the order the server writes them (alphabetical).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MessagePage {
    /// `before` form only: whether older messages exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub has_more: Option<bool>,
    /// The channel's newest event sequence on that node, when the server reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(required = true, nullable = false))]
    pub last_ev: Option<u64>,
    /// The channel's newest sequence number on the node that answered (0 if the server left
    /// it out, as the `before` form may).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub last_seq: u64,
    /// Oldest first.
    pub messages: Vec<Message>,
}

/// `GET /api/v1/channels/{name}/threads/{root}` response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Thread {
    // In the order the server writes them (alphabetical).
    pub replies: Vec<Message>,
    pub root: Message,
}

/// `POST /api/v1/channels/{name}/read` response: the caller's read marker after the move.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReadMarker {
    // In the order the server writes them (alphabetical).
    pub channel: String,
    pub last_read: u64,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub mentions: u64,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub unread: u64,
}

/// `PUT /api/v1/channels/{name}/mute` request and response: the caller's mute setting of a
/// channel (a per-user setting kept in the cluster, so it follows the user to every device).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChannelMute {
    /// Absent from the request (the path names the channel); set in the response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub channel: Option<String>,
    pub muted: bool,
}

/// `POST /api/v1/channels` request: a channel to create. [`NewChannel::public`] and
/// [`NewChannel::private`] fill in the defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NewChannel {
    pub name: String,
    pub kind: ChannelKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
}

impl NewChannel {
    pub fn public(name: impl Into<String>) -> NewChannel {
        NewChannel {
            name: name.into(),
            kind: ChannelKind::Public,
            title: None,
            topic: None,
        }
    }

    pub fn private(name: impl Into<String>) -> NewChannel {
        NewChannel {
            kind: ChannelKind::Private,
            ..NewChannel::public(name)
        }
    }

    pub fn with_topic(mut self, topic: impl Into<String>) -> NewChannel {
        self.topic = Some(topic.into());
        self
    }

    pub fn with_title(mut self, title: impl Into<String>) -> NewChannel {
        self.title = Some(title.into());
        self
    }
}

/// `PATCH /api/v1/channels/{name}` request: only the fields that are `Some` change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChannelPatch {
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(max_length = 64))]
    pub title: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(max_length = 250))]
    pub topic: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archived: Option<bool>,
}

/// `POST /api/v1/users` request with the optional fields of the v1 additions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NewUser {
    pub username: String,
    pub password: String,
    pub role: Role,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
}

/// `PATCH /api/v1/users/{name}` request (admins): only the fields that are `Some` change.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserPatch {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(max_length = 64))]
    pub display_name: Option<String>,
    /// The caller's own password (step-up): required, over HTTPS, when `disabled` or `role`
    /// is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_password: Option<String>,
}

impl std::fmt::Debug for UserPatch {
    // By hand, so the step-up password never reaches a log or a test failure message.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserPatch")
            .field("disabled", &self.disabled)
            .field("role", &self.role)
            .field("display_name", &self.display_name)
            .field(
                "current_password",
                &self.current_password.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// `GET /readyz` verdict of one node (200 and 503 both carry this body).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Readyz {
    // In the order the server writes them (alphabetical).
    /// An admin drained the node (servers before draining existed leave it out: false).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub draining: bool,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true, nullable = false))]
    pub node_id: Option<u64>,
    pub ready: bool,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub reason: Option<String>,
}

/// `GET /api/v1/cluster` response, as seen by node `node_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClusterStatus {
    pub node_id: u64,
    #[serde(default)]
    pub leader_id: Option<u64>,
    pub term: u64,
    /// When the answering node's periodic member-health probe last started: the most a DNS
    /// answer can lag behind this reply. Absent from servers before it was reported.
    #[serde(default)]
    pub periodic_probe_ms_ago: Option<u64>,
    pub nodes: Vec<NodeStatus>,
}

/// One member of the cluster, as probed by the answering node.
///
/// [`NodeStatus::base_url`] is where a client reaches it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NodeStatus {
    pub id: u64,
    pub api_addr: String,
    pub cluster_addr: String,
    /// The node's advertised HTTPS address (`host:port`) when it serves TLS; its client API
    /// is then `https://<https_addr>` and `api_addr` is the plain port (redirects, trust page).
    #[serde(default)]
    pub https_addr: Option<String>,
    pub voter: bool,
    /// `leader`, `follower`, `candidate`, `learner` or `unknown`; kept as a string so a new
    /// role in a later server version does not break decoding.
    pub role: String,
    #[serde(default)]
    pub term: Option<u64>,
    #[serde(default)]
    pub leader_id: Option<u64>,
    #[serde(default)]
    pub last_log_index: Option<u64>,
    #[serde(default)]
    pub last_applied: Option<u64>,
    pub healthy: bool,
    pub ready: bool,
    /// An admin drained the node: it is out of `/readyz` and DNS answers but still serves.
    #[serde(default)]
    pub draining: bool,
    /// Answered the probe, ready and not draining: what DNS and client failover list. Absent
    /// from servers before it was reported.
    #[serde(default)]
    pub serving: Option<bool>,
    #[serde(default)]
    pub error: Option<String>,
    /// The node runs with `insecure_plaintext = true`: it listens on a non-loopback address
    /// without TLS (lab only). Absent from older servers (false).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub insecure_plaintext: bool,
    /// The node's data directory: free space against its watermark and whether writes
    /// work. Absent when the node did not answer, and from older servers.
    #[serde(default)]
    pub storage: Option<StorageStatus>,
}

/// One node's storage as it reports it (`NodeStatus::storage`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StorageStatus {
    /// Free bytes in the data directory's filesystem; absent if it could not be read.
    #[serde(default)]
    pub free_bytes: Option<u64>,
    /// `[storage] min_free_bytes`; 0 = no watermark.
    pub min_free_bytes: u64,
    /// `ok`, `low_space` (below the watermark: refuses writes, not ready, does not lead) or
    /// `failed` (a write or fsync failed; the node restarts from what is on disk). A string so
    /// a new state in a later server does not break decoding.
    pub state: String,
    #[serde(default)]
    pub reason: Option<String>,
}

impl NodeStatus {
    /// The base URL of the node's client API: `https://<https_addr>` when it serves TLS,
    /// `http://<api_addr>` otherwise.
    pub fn base_url(&self) -> String {
        match &self.https_addr {
            Some(addr) => format!("https://{addr}"),
            None => format!("http://{}", self.api_addr),
        }
    }
}

/// A static DNS record of the workspace zone (`GET /api/v1/dns/records`). The name is relative
/// to the workspace; `value` is in zone-file form (`10.0.0.5`, `10 5 389 ldap`, `"v=1"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DnsRecord {
    pub name: String,
    /// `A`, `AAAA`, `CNAME`, `SRV` or `TXT`; a string so a later type does not break decoding.
    #[serde(rename = "type")]
    pub rtype: String,
    pub ttl: u32,
    pub value: String,
}

mod bodies;
pub use bodies::*;
mod search;
pub use search::*;

#[cfg(test)]
mod tests;
