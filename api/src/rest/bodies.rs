//! Request bodies and list envelopes of the HTTP API: written the way `ops` sends them and read
//! as they are by the server, which refuses unknown fields (400 invalid_json). Data only; must
//! never perform I/O, and never derive `Debug` on a body that carries a password.

use serde::{Deserialize, Serialize};

use super::{Channel, DnsRecord, Message, Role, User};

/// `POST /api/v1/login` body.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
}

/// `POST /api/v1/users` body as `create_user` sends it (see [`NewUser`] for the optional fields).
#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateUserRequest {
    pub username: String,
    pub password: String,
    pub role: Role,
}

/// `POST /api/v1/dns/records` body.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NewDnsRecordRequest {
    pub name: String,
    #[serde(rename = "type")]
    pub rtype: String,
    pub value: String,
    /// The server's default TTL when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 86400))]
    pub ttl: Option<u32>,
}

/// `GET /api/v1/dns/records` answer.
#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DnsRecordsEnvelope {
    pub records: Vec<DnsRecord>,
}

/// `DELETE /api/v1/dns/records` answer: how many records went.
#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RemovedEnvelope {
    pub removed: u64,
}

/// `POST /api/v1/channels` body with only a name (see [`NewChannel`] for the rest).
#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateChannelRequest {
    pub name: String,
}

/// `POST /api/v1/channels/{name}/messages` body.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PostMessageRequest {
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 16384))]
    pub body: String,
    #[cfg_attr(feature = "openapi", schema(pattern = "^[A-Za-z0-9._:-]{1,64}$"))]
    pub client_msg_id: String,
    // Left out rather than sent as null: a server before the v1 additions refuses unknown
    // fields (400 invalid_json), and plain posts must keep working there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_root: Option<u64>,
}

/// `POST /api/v1/channels/{name}/files` body: a file whose chunks were uploaded with
/// `PUT /api/v1/blobs/{sha256}`, posted as a message.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PostFileRequest {
    /// The file name (sanitised by the server: no path separators, control or bidi characters).
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 255))]
    pub name: String,
    pub size: u64,
    /// Lower-case hex SHA-256 of the whole file.
    #[cfg_attr(feature = "openapi", schema(pattern = "^[0-9a-f]{64}$"))]
    pub sha256: String,
    /// The chunks' SHA-256s, in order: the file is their concatenation.
    #[cfg_attr(feature = "openapi", schema(min_items = 1))]
    pub chunks: Vec<String>,
    /// Caption; may be empty.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_length = 16384))]
    pub body: String,
    #[cfg_attr(feature = "openapi", schema(pattern = "^[A-Za-z0-9._:-]{1,64}$"))]
    pub client_msg_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_root: Option<u64>,
}

/// `PUT /api/v1/blobs/{sha256}` response: the chunk is on a majority of voters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BlobStored {
    pub sha256: String,
    pub size: u64,
}

/// `PATCH /api/v1/channels/{name}/messages/{seq}` body.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EditMessageRequest {
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 16384))]
    pub body: String,
}

/// `POST /api/v1/dms` body: the other participants.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DmRequest {
    pub users: Vec<String>,
}

/// `POST /api/v1/channels/{name}/read` body.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReadRequest {
    pub seq: u64,
}

/// `POST /api/v1/channels/{name}/members` body.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MemberRequest {
    #[cfg_attr(feature = "openapi", schema(pattern = "^[a-z0-9][a-z0-9_.-]{0,31}$"))]
    pub username: String,
}

/// `PATCH /api/v1/me` body.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProfilePatch {
    #[cfg_attr(feature = "openapi", schema(max_length = 64))]
    pub display_name: String,
}

/// `POST /api/v1/me/password` body.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChangePasswordRequest {
    pub current_password: String,
    #[cfg_attr(feature = "openapi", schema(min_length = 8, max_length = 128))]
    pub new_password: String,
}

/// `POST /api/v1/users/{name}/password` body (admins).
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SetPasswordRequest {
    #[cfg_attr(feature = "openapi", schema(min_length = 8, max_length = 128))]
    pub password: String,
    /// The admin's own password (step-up); the request must come over HTTPS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_password: Option<String>,
}

/// Body of the step-up-only admin operations (`POST /api/v1/ca/export-root-key`): the caller's
/// own password.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StepUpRequest {
    pub current_password: String,
}

/// One session of the caller, as `GET /api/v1/me/sessions` lists it. The id is derived from
/// the token one way: it ends the session (`DELETE /api/v1/me/sessions/{id}`) but cannot be
/// used to authenticate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionEntry {
    pub id: String,
    /// The `User-Agent` that logged in; empty for sessions from before version 6.
    #[serde(default)]
    pub user_agent: String,
    /// The source address that logged in; empty for sessions from before version 6.
    #[serde(default)]
    pub source: String,
    pub created_at_ms: u64,
    /// Last use as this node knows it (replicated use from other nodes lags by up to the touch
    /// interval).
    pub last_used_ms: u64,
    /// When the session ends at the latest (absolute lifetime).
    pub expires_at_ms: u64,
    /// When it ends if unused from now on; absent when it has no idle limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_expires_at_ms: Option<u64>,
    /// The session that made this request.
    pub current: bool,
}

/// `GET /api/v1/me/sessions` answer, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionsEnvelope {
    pub sessions: Vec<SessionEntry>,
}

/// `DELETE /api/v1/users/{name}/sessions` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionsEnded {
    pub ended: u32,
}

/// `GET /api/v1/channels/{name}/pins` answer.
#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PinsEnvelope {
    pub messages: Vec<Message>,
}

/// `POST /api/v1/cluster/nodes` body.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AddNodeRequest {
    pub id: u64,
    pub api_addr: String,
    pub cluster_addr: String,
}

/// `GET /api/v1/users` answer.
#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UsersEnvelope {
    pub users: Vec<User>,
}

/// `GET /api/v1/channels` answer.
#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChannelsEnvelope {
    pub channels: Vec<Channel>,
}

/// The message object plus the `duplicate` flag the post endpoint adds to it.
#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PostedMessage {
    #[serde(flatten)]
    pub message: Message,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true, nullable = false))]
    pub duplicate: Option<bool>,
}
