//! The replicated command protocol: what a log entry carries and what applying it returns.
//!
//! Owns the wire types of the Raft log (`Request`, `Command`) and of apply results
//! (`Response`, `Outcome`, `ApplyError`), plus the records the state machine stores.
//! Must never contain I/O or time lookups: `apply` has to be deterministic on every node.
//!
//! Versioning rules (rolling upgrades mix old and new binaries):
//! - entries are bincode-encoded, so enum variants are identified by position: new variants are
//!   only ever appended, and an existing variant's fields never change (a changed command is a
//!   new variant);
//! - `Request::version` says which command set the proposer used; a node that reads a version
//!   newer than `COMMAND_VERSION` refuses to apply it (and stops) instead of guessing. A leader
//!   proposes new variants only once every member runs a binary that knows them.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::state::dns_records::{DnsRecord, DnsRecordData, DnsRecordType};
use crate::types::NodeId;

pub mod records;

pub use records::{BlobRef, FileRecord, NewFile};
pub use records::{
    ChannelEvent, ChannelExtra, ChannelKind, ChannelMeta, ChannelRecord, JoinTokenRecord,
    JoinTokenUse, LOGIN_BACKOFF_BASE_MS, LOGIN_BACKOFF_MAX_MS, LOGIN_FREE_ATTEMPTS, LoginThrottle,
    MessageExtra, MessageRecord, SessionEnd, SessionInfo, SessionRecord, UserExtra, UserRecord,
};

/// The command-set version this binary proposes and understands.
pub const COMMAND_VERSION: u16 = 7;

/// One Raft log entry's payload: a group of client commands proposed together (group commit).
///
/// Encoded as the three fields `version`, `ts_ms`, `commands`, in that order (bincode: by
/// position), which is what lets a binary that cannot decode `commands` still read the version
/// an entry needs (see `storage::log_store::decode_entry`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Request {
    pub version: u16,
    /// Wall-clock time (ms since the Unix epoch) read by the leader when it proposed this entry.
    /// The state machine clamps it to be non-decreasing, so server timestamps never go back even
    /// when leadership moves to a node whose clock is behind.
    pub ts_ms: u64,
    /// Shared, because openraft and the log cache clone entries on every replication read; a
    /// batch of hundreds of messages must not be deep-copied each time.
    pub commands: Arc<[Command]>,
    /// Set only on an entry read from this node's log that this binary could not decode (a
    /// command of a newer binary): why. `commands` is then empty. Such an entry is never
    /// applied (`state::apply_request` stops there) and never encoded again (`Serialize`
    /// fails), so it can neither be skipped here nor be sent on to a peer with its commands
    /// missing. Not part of the encoding.
    #[serde(skip_deserializing)]
    pub undecodable: Option<Arc<str>>,
}

impl Request {
    /// Whether this binary must not apply the entry (`state::apply_request` refuses it with
    /// a version stop): a newer command version, or commands it could not decode.
    pub fn needs_newer_binary(&self) -> bool {
        self.version > COMMAND_VERSION || self.undecodable.is_some()
    }

    pub fn new(version: u16, ts_ms: u64, commands: Arc<[Command]>) -> Self {
        Self {
            version,
            ts_ms,
            commands,
            undecodable: None,
        }
    }
}

impl Serialize for Request {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error, SerializeStruct};
        if let Some(why) = &self.undecodable {
            return Err(S::Error::custom(format!(
                "a log entry of command version {} that this binary could not decode ({why}) \
                 cannot be encoded again",
                self.version
            )));
        }
        // Exactly what `#[derive(Serialize)]` wrote before the `undecodable` field existed.
        let mut st = s.serialize_struct("Request", 3)?;
        st.serialize_field("version", &self.version)?;
        st.serialize_field("ts_ms", &self.ts_ms)?;
        st.serialize_field("commands", &self.commands)?;
        st.end()
    }
}

impl std::fmt::Display for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Request(v{}, {} commands)",
            self.version,
            self.commands.len()
        )
    }
}

/// A user's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Member,
}

/// Replicated commands. Variants up to `PostMessage` are version 1, up to `LoginAttempt`
/// version 2, up to `RemoveDnsRecords` version 3, `CaUpdate` version 4, the join tokens version
/// 5, the session and must-change-password commands version 6, file attachments and per-user
/// channel mute version 7.
/// Append new variants at the end only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// `password_hash` is an argon2id PHC string computed by the node that received the request;
    /// hashing never happens inside `apply` (slow, and salted randomly).
    CreateUser {
        username: String,
        password_hash: String,
        role: Role,
    },
    /// `token_hash` is the hex SHA-256 of the bearer token; the token itself is never replicated.
    CreateSession {
        token_hash: String,
        username: String,
        ttl_ms: u64,
    },
    RevokeSession {
        token_hash: String,
    },
    CreateChannel {
        name: String,
        creator: String,
    },
    JoinChannel {
        name: String,
        username: String,
    },
    PostMessage {
        channel: String,
        author: String,
        body: String,
        client_msg_id: String,
    },
    // ---- version 2 ----
    /// Creates a public, private or direct channel. For `Direct`, `name` is the canonical DM
    /// name (`dm:` + sorted participants) and asking for an existing DM returns it unchanged
    /// (idempotent), so two users starting the same DM at once end up in one channel.
    CreateChannelV2 {
        name: String,
        creator: String,
        kind: ChannelKind,
        title: String,
        topic: String,
        /// Initial members besides the creator (DM participants).
        members: Vec<String>,
    },
    UpdateChannel {
        channel: String,
        by: String,
        title: Option<String>,
        topic: Option<String>,
        archived: Option<bool>,
    },
    /// `by` adds `username`: self-join of a public channel, or a member inviting someone into
    /// a private channel, or an admin.
    AddMember {
        channel: String,
        username: String,
        by: String,
    },
    /// `by` removes `username`: leaving (by == username) or an admin removing someone.
    RemoveMember {
        channel: String,
        username: String,
        by: String,
    },
    PostMessageV2 {
        channel: String,
        author: String,
        body: String,
        client_msg_id: String,
        thread_root: Option<u64>,
    },
    EditMessage {
        channel: String,
        seq: u64,
        by: String,
        body: String,
    },
    DeleteMessage {
        channel: String,
        seq: u64,
        by: String,
    },
    SetReaction {
        channel: String,
        seq: u64,
        user: String,
        emoji: String,
        add: bool,
    },
    SetPinned {
        channel: String,
        seq: u64,
        by: String,
        pinned: bool,
    },
    /// Moves `username`'s read marker in `channel` forward to `seq` (never back).
    MarkRead {
        channel: String,
        username: String,
        seq: u64,
    },
    /// Admin changes to an account (or a user's own display name: `by == username` and only
    /// `display_name` set). Disabling revokes every session of the user.
    UpdateUser {
        username: String,
        by: String,
        disabled: Option<bool>,
        role: Option<Role>,
        display_name: Option<String>,
    },
    /// Replaces the password hash and revokes the user's sessions, except `keep_session` (the
    /// token hash of the session that changed its own password).
    SetPassword {
        username: String,
        password_hash: String,
        keep_session: Option<String>,
    },
    /// Counts one login attempt against `username` before the password is checked. The state
    /// machine is the single arbiter of throttling, so attempts spread over nodes add up.
    LoginAttempt {
        username: String,
    },
    // ---- version 3: operator state (draining, static DNS records) ----
    /// Marks a member as draining (out of `/readyz` and DNS answers, still serving) or clears
    /// the mark. Refused with `NotFound` when `node_id` is not in the applied membership.
    SetDraining {
        node_id: NodeId,
        draining: bool,
    },
    /// Adds a static DNS record, or updates the TTL of the record with the same name, type and
    /// data. Validated again at apply (`dns_records::validate`).
    PutDnsRecord {
        record: DnsRecord,
    },
    /// Removes the records of type `rtype` at `name` whose data is `data`, or all of them when
    /// `data` is `None`. Removing nothing is refused with `NotFound`.
    RemoveDnsRecords {
        name: String,
        rtype: DnsRecordType,
        data: Option<DnsRecordData>,
    },
    // ---- version 4: the built-in certificate authority ----
    /// Replaces the CA state blob (opaque here: the `node` crate's bincode-encoded `CaState`,
    /// private keys sealed under a key-encryption key that never enters the log) if the stored
    /// version is still `expect` (0: no CA yet). The new version is `expect + 1`. Signing is
    /// randomised, so one node signs and proposes the result; this compare-and-swap makes two
    /// nodes that signed from the same state conflict instead of one silently losing the
    /// other's certificate. Refused with `Conflict` when the version moved on.
    CaUpdate {
        expect: u64,
        state: Vec<u8>,
    },
    // ---- version 5: token-based join (see `state::join`) ----
    /// Stores a single-use join token. Only the SHA-256 of its secret is replicated; the
    /// expiry was computed by the proposer (its clock) and is compared at apply against the
    /// entry's `ts_ms`, never against a clock.
    CreateJoinToken {
        id: String,
        /// Lower-case hex SHA-256 of the token's secret.
        secret_hash: String,
        expires_ms: u64,
        /// The admin who asked for it.
        by: String,
    },
    /// Consumes a join token for `node_id` with these addresses. Refused (nothing changes)
    /// when the token is unknown, expired, already used, the secret is wrong, or `node_id` is
    /// already a member.
    UseJoinToken {
        id: String,
        secret_hash: String,
        node_id: NodeId,
        api_addr: String,
        cluster_addr: String,
    },
    // ---- version 6: session lifetimes, must-change passwords (see `state::sessions`) ----
    /// A session with an absolute lifetime (`ttl_ms`) and an idle window (`idle_ms`, the
    /// configured idle timeout plus the touch interval; 0: none), and where it was opened from.
    /// Both durations were chosen by the proposer's config; expiry is judged against entries'
    /// `ts_ms`.
    CreateSessionV2 {
        token_hash: String,
        username: String,
        ttl_ms: u64,
        idle_ms: u64,
        user_agent: String,
        source: String,
    },
    /// Replicates the last use of sessions, batched by each node at most once per touch
    /// interval per session: `(token_hash, last_used_ms)`. Uses in the future of the entry are
    /// clamped to its time; a last use never moves back; unknown sessions are skipped.
    TouchSessions {
        touches: Vec<(String, u64)>,
    },
    /// An admin (`by`) ends every session of `username`.
    EndUserSessions {
        username: String,
        by: String,
    },
    /// `CreateUser` plus the must-change-password flag (set for accounts an admin creates).
    CreateUserV2 {
        username: String,
        password_hash: String,
        role: Role,
        must_change_password: bool,
    },
    /// `SetPassword` plus the must-change-password flag: set by an admin reset, cleared when
    /// users change their own password. (A version 1 `SetPassword` clears it.)
    SetPasswordV2 {
        username: String,
        password_hash: String,
        keep_session: Option<String>,
        must_change_password: bool,
    },
    // ---- version 7: file attachments (see `state::files`) ----
    /// `PostMessageV2` carrying files: the message and the files' metadata commit together,
    /// idempotent by `(author, client_msg_id)` like any post (a retry writes nothing, even
    /// though its file ids are new). The blobs were stored on a majority of voters before this
    /// was proposed; they never enter the log.
    PostMessageWithFiles {
        channel: String,
        author: String,
        body: String,
        client_msg_id: String,
        thread_root: Option<u64>,
        files: Vec<NewFile>,
    },
    // ---- version 7: per-user notification settings ----
    /// Mutes (or unmutes) `channel` for `username`: a per-user setting that follows the user to
    /// every device (no notification and no badge count for a muted channel; the messages are
    /// still delivered and counted as unread). Only a member may mute; refused with `NotMember`
    /// otherwise. Setting the current value again changes nothing.
    SetChannelMuted {
        channel: String,
        username: String,
        muted: bool,
    },
}

impl Command {
    /// The command-set version that introduced this variant. A leader only proposes a
    /// variant once every member understands it.
    pub fn min_version(&self) -> u16 {
        match self {
            Command::CreateUser { .. }
            | Command::CreateSession { .. }
            | Command::RevokeSession { .. }
            | Command::CreateChannel { .. }
            | Command::JoinChannel { .. }
            | Command::PostMessage { .. } => 1,
            Command::SetDraining { .. }
            | Command::PutDnsRecord { .. }
            | Command::RemoveDnsRecords { .. } => 3,
            Command::CaUpdate { .. } => 4,
            Command::CreateJoinToken { .. } | Command::UseJoinToken { .. } => 5,
            Command::CreateSessionV2 { .. }
            | Command::TouchSessions { .. }
            | Command::EndUserSessions { .. }
            | Command::CreateUserV2 { .. }
            | Command::SetPasswordV2 { .. } => 6,
            Command::PostMessageWithFiles { .. } => 7,
            Command::SetChannelMuted { .. } => 7,
            _ => 2,
        }
    }

    /// Short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Command::CreateUser { .. } => "create_user",
            Command::CreateSession { .. } => "create_session",
            Command::RevokeSession { .. } => "revoke_session",
            Command::CreateChannel { .. } => "create_channel",
            Command::JoinChannel { .. } => "join_channel",
            Command::PostMessage { .. } => "post_message",
            Command::CreateChannelV2 { .. } => "create_channel",
            Command::UpdateChannel { .. } => "update_channel",
            Command::AddMember { .. } => "add_member",
            Command::RemoveMember { .. } => "remove_member",
            Command::PostMessageV2 { .. } => "post_message",
            Command::EditMessage { .. } => "edit_message",
            Command::DeleteMessage { .. } => "delete_message",
            Command::SetReaction { .. } => "set_reaction",
            Command::SetPinned { .. } => "set_pinned",
            Command::MarkRead { .. } => "mark_read",
            Command::UpdateUser { .. } => "update_user",
            Command::SetPassword { .. } => "set_password",
            Command::LoginAttempt { .. } => "login_attempt",
            Command::SetDraining { .. } => "set_draining",
            Command::PutDnsRecord { .. } => "put_dns_record",
            Command::RemoveDnsRecords { .. } => "remove_dns_records",
            Command::CaUpdate { .. } => "ca_update",
            Command::CreateJoinToken { .. } => "create_join_token",
            Command::UseJoinToken { .. } => "use_join_token",
            Command::CreateSessionV2 { .. } => "create_session",
            Command::TouchSessions { .. } => "touch_sessions",
            Command::EndUserSessions { .. } => "end_user_sessions",
            Command::CreateUserV2 { .. } => "create_user",
            Command::SetPasswordV2 { .. } => "set_password",
            Command::PostMessageWithFiles { .. } => "post_files",
            Command::SetChannelMuted { .. } => "set_channel_muted",
        }
    }
}

/// What applying one log entry produced: one outcome per command, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    pub outcomes: Vec<Outcome>,
}

pub type Outcome = Result<Applied, ApplyError>;

/// The successful result of one command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Applied {
    User(UserRecord),
    Session(SessionRecord),
    SessionRevoked {
        existed: bool,
    },
    Channel(ChannelRecord),
    /// `duplicate` is true when (author, client_msg_id) already existed: `message` is then the
    /// original and nothing was written.
    Message {
        message: MessageRecord,
        duplicate: bool,
    },
    // ---- version 2: results name what changed; callers read the current view locally ----
    ChannelChanged {
        name: String,
    },
    MessageChanged {
        channel: String,
        seq: u64,
        /// A post whose `(author, client_msg_id)` already existed: nothing was written.
        duplicate: bool,
    },
    UserChanged {
        username: String,
    },
    ReadMarker {
        channel: String,
        seq: u64,
    },
    LoginAttempt {
        allowed: bool,
        /// When refused: how long until the next attempt is allowed.
        retry_after_ms: u64,
    },
    // ---- version 3 ----
    DrainChanged {
        node_id: NodeId,
        draining: bool,
    },
    /// The record as stored (normalised name and data, the TTL now in force).
    DnsRecordPut {
        record: DnsRecord,
    },
    DnsRecordsRemoved {
        name: String,
        removed: u32,
    },
    // ---- version 4 ----
    /// The CA state blob now stored has this version.
    CaUpdated {
        version: u64,
    },
    // ---- version 5 ----
    JoinTokenCreated {
        id: String,
        expires_ms: u64,
    },
    /// The token is now used up by `node_id`.
    JoinTokenUsed {
        id: String,
        node_id: NodeId,
    },
    // ---- version 6 ----
    /// How many of the touched sessions still existed and moved their last use.
    SessionsTouched {
        touched: u32,
    },
    /// Every session of `username` ended; `ended` of them existed.
    SessionsEnded {
        username: String,
        ended: u32,
    },
    // ---- version 7 ----
    /// `username`'s mute setting of `channel` is now `muted`.
    MuteSet {
        channel: String,
        username: String,
        muted: bool,
    },
}

/// A command that was applied (it is in the log on every node) but was refused by the rules of
/// the state machine. Deterministic: every node reaches the same verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ApplyError {
    #[error("user '{0}' already exists")]
    UserExists(String),
    #[error("user '{0}' does not exist")]
    UnknownUser(String),
    #[error("user '{0}' is disabled")]
    UserDisabled(String),
    #[error("channel '{0}' already exists")]
    ChannelExists(String),
    #[error("channel '{0}' does not exist")]
    ChannelNotFound(String),
    #[error("'{user}' is not a member of channel '{channel}'")]
    NotMember { user: String, channel: String },
    /// No longer produced: a node now stops at an entry newer than itself instead of
    /// answering it with this (`state::StateError::NeedsNewerVersion`). Kept because outcomes
    /// are encoded by variant position.
    #[error("command version {0} is not supported by this node")]
    UnsupportedVersion(u16),
    // ---- version 2 ----
    #[error("message {seq} does not exist in channel '{channel}'")]
    MessageNotFound { channel: String, seq: u64 },
    #[error("{0}")]
    Forbidden(String),
    #[error("channel '{0}' is archived")]
    Archived(String),
    #[error("{0}")]
    Invalid(String),
    // ---- version 3 ----
    /// The thing the command names does not exist (a node that is not a member, a DNS record
    /// that is not there).
    #[error("{0}")]
    NotFound(String),
    /// The command contradicts existing state (a CNAME beside other records, a full zone).
    #[error("{0}")]
    Conflict(String),
    /// A DNS name the cluster answers itself (`nodeN`, `_conclave._tcp`, the apex).
    #[error("{0}")]
    ReservedName(String),
    // ---- version 5 ----
    /// A join token was refused; the reason says why (and maps to its own HTTP code).
    #[error("{0}")]
    JoinToken(JoinTokenRefusal),
}

/// Why a join token was refused. Every node reaches the same verdict from the same entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum JoinTokenRefusal {
    #[error("join token {id} does not exist (wrong token, or it was pruned long after expiry)")]
    Unknown { id: String },
    #[error("join token {id} has the wrong secret")]
    WrongSecret { id: String },
    #[error(
        "join token {id} expired (at {expires_ms} ms since the epoch); ask an admin for a new one"
    )]
    Expired { id: String, expires_ms: u64 },
    #[error("join token {id} was already used (by node {node_id}); join tokens are single-use")]
    Used { id: String, node_id: NodeId },
    #[error("node {node_id} is already a member of the cluster")]
    AlreadyMember { node_id: NodeId },
    #[error("join token {id} already exists")]
    Exists { id: String },
    #[error("{0}")]
    Invalid(String),
}
