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

use std::collections::BTreeSet;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// The command-set version this binary proposes and understands.
pub const COMMAND_VERSION: u16 = 1;

/// One Raft log entry's payload: a group of client commands proposed together (group commit).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub version: u16,
    /// Wall-clock time (ms since the Unix epoch) read by the leader when it proposed this entry.
    /// The state machine clamps it to be non-decreasing, so server timestamps never go back even
    /// when leadership moves to a node whose clock is behind.
    pub ts_ms: u64,
    /// Shared, because openraft and the log cache clone entries on every replication read; a
    /// batch of hundreds of messages must not be deep-copied each time.
    pub commands: Arc<[Command]>,
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

/// Replicated commands, version 1. Append new variants at the end only.
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
}

impl Command {
    /// Short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Command::CreateUser { .. } => "create_user",
            Command::CreateSession { .. } => "create_session",
            Command::RevokeSession { .. } => "revoke_session",
            Command::CreateChannel { .. } => "create_channel",
            Command::JoinChannel { .. } => "join_channel",
            Command::PostMessage { .. } => "post_message",
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
    #[error("command version {0} is not supported by this node")]
    UnsupportedVersion(u16),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    pub username: String,
    pub password_hash: String,
    pub role: Role,
    pub disabled: bool,
    pub created_at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub token_hash: String,
    pub username: String,
    pub created_at_ms: u64,
    pub expires_at_ms: u64,
}

/// What is stored under a channel's key; members and the sequence live under their own keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelMeta {
    pub name: String,
    pub created_by: String,
    pub created_at_ms: u64,
}

/// A channel as the API shows it: metadata, members and newest sequence, assembled from the
/// separate keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelRecord {
    pub name: String,
    pub created_by: String,
    pub created_at_ms: u64,
    pub members: BTreeSet<String>,
    /// Sequence of the newest message; 0 when empty. Sequences are 1, 2, 3, ... with no gaps.
    pub last_seq: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageRecord {
    pub channel: String,
    pub seq: u64,
    pub author: String,
    pub body: String,
    pub ts_ms: u64,
    pub client_msg_id: String,
}
