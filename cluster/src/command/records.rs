//! The records the state machine stores under `state::keys` and hands back in apply results:
//! users, sessions, channels, messages, their version 2 side records, join tokens, the login
//! throttle and the per-channel change log.
//!
//! Owns their bincode shape, which is both the on-disk format of the state tree and part of the
//! log's results: fields are never reordered or changed, enum variants only appended (a new
//! field goes into a new side record). Must never hold logic beyond pure arithmetic on a
//! record (the login throttle's backoff): rules live in `state`.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::Role;
use crate::types::NodeId;

/// A stored join token (`keys::join_token`). The secret itself is never stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinTokenRecord {
    pub id: String,
    pub secret_hash: String,
    pub created_ms: u64,
    pub expires_ms: u64,
    pub by: String,
    /// Set when the token was consumed.
    pub used: Option<JoinTokenUse>,
}

/// Who used a join token, when, and with which addresses (the seed adds exactly these).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinTokenUse {
    pub node_id: NodeId,
    pub at_ms: u64,
    pub api_addr: String,
    pub cluster_addr: String,
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

// ---- version 2 records. They live under keys of their own (see `keys.rs`) beside the
// version 1 records, whose encoding never changes. ----

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelKind {
    #[default]
    Public,
    Private,
    Direct,
}

/// Per-channel settings added in version 2; absent for channels created by version 1 (which
/// are public, titled by their name, with no topic).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelExtra {
    pub kind: ChannelKind,
    pub title: String,
    pub topic: String,
    pub archived: bool,
}

/// Per-message state added in version 2; absent means a plain, unedited top-level message.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageExtra {
    pub thread_root: Option<u64>,
    pub reply_count: u32,
    pub edited_at_ms: Option<u64>,
    pub deleted: bool,
    pub pinned: bool,
    /// emoji -> users, both sorted so every node renders the same order.
    pub reactions: std::collections::BTreeMap<String, BTreeSet<String>>,
    /// Users mentioned by name (`@channel` is recorded as the member list at post time in the
    /// mention index, not here).
    pub mentions: Vec<String>,
    pub channel_mention: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserExtra {
    pub display_name: String,
}

/// Login throttling state of one account.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginThrottle {
    /// Attempts since the last successful login.
    pub attempts: u32,
    pub last_ms: u64,
}

/// Attempts allowed without delay; after that one attempt per backoff interval.
pub const LOGIN_FREE_ATTEMPTS: u32 = 5;
pub const LOGIN_BACKOFF_BASE_MS: u64 = 1_000;
pub const LOGIN_BACKOFF_MAX_MS: u64 = 300_000;

impl LoginThrottle {
    /// Earliest time the next attempt is allowed.
    pub fn next_allowed_ms(&self) -> u64 {
        if self.attempts < LOGIN_FREE_ATTEMPTS {
            return 0;
        }
        let doublings = (self.attempts - LOGIN_FREE_ATTEMPTS).min(20);
        let backoff = LOGIN_BACKOFF_BASE_MS
            .saturating_mul(1u64 << doublings)
            .min(LOGIN_BACKOFF_MAX_MS);
        self.last_ms.saturating_add(backoff)
    }
}

/// One entry of a channel's event log (`e/<channel>/<ev>`): what changed, by reference.
/// Readers render it with the current state of the message it names, so a replay always shows
/// the latest body, reactions and tombstones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChannelEvent {
    Message {
        seq: u64,
    },
    Edited {
        seq: u64,
    },
    Deleted {
        seq: u64,
    },
    Reaction {
        seq: u64,
        user: String,
        emoji: String,
        added: bool,
    },
    Pinned {
        seq: u64,
        user: String,
        pinned: bool,
    },
    MemberJoined {
        user: String,
        by: String,
    },
    MemberLeft {
        user: String,
        by: String,
    },
    ChannelUpdated,
}

impl ChannelEvent {
    /// The message this event is about, if any.
    pub fn seq(&self) -> Option<u64> {
        match self {
            ChannelEvent::Message { seq }
            | ChannelEvent::Edited { seq }
            | ChannelEvent::Deleted { seq }
            | ChannelEvent::Reaction { seq, .. }
            | ChannelEvent::Pinned { seq, .. } => Some(*seq),
            _ => None,
        }
    }
}

// ---- version 6 records ----

/// What a session carries besides its `SessionRecord` (`keys::session_info`), added in version
/// 6. Sessions created earlier have none: they keep their absolute expiry and have no idle
/// limit, and are listed with an empty device and address.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    /// The idle window as the state machine applies it: the configured idle timeout plus the
    /// touch interval (last use is replicated at most once per interval), so a session used
    /// anywhere within its idle timeout is never purged. 0: no idle limit.
    pub idle_ms: u64,
    /// Last use as replicated by `TouchSessions` (creation time until the first touch).
    pub last_used_ms: u64,
    /// The client's `User-Agent`, truncated by the proposer.
    pub user_agent: String,
    /// The source address the session was created from (text form).
    pub source: String,
}

impl SessionInfo {
    /// When a session with this info and absolute expiry `expires_at_ms` ends, by the
    /// replicated last use.
    pub fn deadline_ms(&self, expires_at_ms: u64) -> u64 {
        if self.idle_ms == 0 {
            return expires_at_ms;
        }
        expires_at_ms.min(self.last_used_ms.saturating_add(self.idle_ms))
    }
}

/// Why a session ended without a logout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionEnd {
    /// Its absolute lifetime is over.
    Absolute,
    /// No use for longer than its idle window.
    Idle,
}

// ---- version 7: file attachments (see `state::files`) ----

/// A blob a file record points at besides its chunks (a thumbnail).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRef {
    /// Lower-case hex SHA-256 of the blob (its name in every node's blob store).
    pub sha256: String,
    pub size: u64,
    pub mime: String,
}

/// A file as the node that handled the upload describes it in the command. Everything here was
/// decided by that node (the id is random, the type sniffed from the content), so applying it
/// is deterministic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewFile {
    /// 32 lower-case hex characters.
    pub id: String,
    /// The sanitised file name.
    pub name: String,
    pub size: u64,
    /// SHA-256 of the whole file.
    pub sha256: String,
    /// The sniffed media type.
    pub mime: String,
    /// The file's content is these blobs concatenated, in order.
    pub chunks: Vec<String>,
    /// Pixel size of an image.
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub thumbnail: Option<BlobRef>,
}

impl NewFile {
    /// Every distinct blob the file needs (chunks and thumbnail), in first-use order.
    pub fn blobs(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for b in self
            .chunks
            .iter()
            .chain(self.thumbnail.iter().map(|t| &t.sha256))
        {
            if !out.contains(&b.as_str()) {
                out.push(b);
            }
        }
        out
    }
}

/// A stored file (`keys::file`): what was uploaded, where it was posted, and whether the
/// message carrying it was deleted (a tombstone: the metadata stays, the blobs go after the
/// grace period).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    pub file: NewFile,
    pub channel: String,
    /// The message that carries it.
    pub seq: u64,
    pub uploader: String,
    pub created_ms: u64,
    pub deleted_ms: Option<u64>,
}
