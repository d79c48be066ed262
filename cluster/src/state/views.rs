//! Read models: what clients see of a message, channel or user, assembled from the version 1
//! records and the version 2 side records.
//!
//! Owns the JSON shape shared by the REST API and the WebSocket protocol (`docs/protocol.md`).
//! Must never be stored or replicated: these are rebuilt from state on every read, so their
//! fields may grow freely.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::command::{ChannelKind, Role};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageView {
    pub channel: String,
    pub seq: u64,
    pub author: String,
    pub body: String,
    pub ts_ms: u64,
    pub client_msg_id: String,
    pub thread_root: Option<u64>,
    pub reply_count: u32,
    pub edited_at_ms: Option<u64>,
    pub deleted: bool,
    pub pinned: bool,
    pub reactions: BTreeMap<String, BTreeSet<String>>,
    pub mentions: Vec<String>,
    pub channel_mention: bool,
    /// Files the message carries (none once it is deleted).
    pub attachments: Vec<FileView>,
}

/// A file as clients see it (`api::rest::FileInfo`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileView {
    pub id: String,
    pub name: String,
    pub size: u64,
    pub sha256: String,
    pub mime: String,
    /// One of the image types served inline (png, jpeg, gif, webp).
    pub image: bool,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub has_thumbnail: bool,
    pub uploader: String,
    pub channel: String,
}

/// The image types a browser may render inline; everything else is served as an attachment.
pub const INLINE_IMAGE_TYPES: &[&str] = &["image/png", "image/jpeg", "image/gif", "image/webp"];

impl FileView {
    pub fn of(rec: &crate::command::FileRecord) -> Self {
        let f = &rec.file;
        Self {
            id: f.id.clone(),
            name: f.name.clone(),
            size: f.size,
            sha256: f.sha256.clone(),
            mime: f.mime.clone(),
            image: INLINE_IMAGE_TYPES.contains(&f.mime.as_str()),
            width: f.width,
            height: f.height,
            has_thumbnail: f.thumbnail.is_some(),
            uploader: rec.uploader.clone(),
            channel: rec.channel.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelView {
    pub name: String,
    pub title: String,
    pub topic: String,
    pub kind: ChannelKind,
    pub archived: bool,
    pub created_by: String,
    pub created_at_ms: u64,
    pub members: BTreeSet<String>,
    pub last_seq: u64,
    pub last_ev: u64,
}

/// A channel as one user sees it in their channel list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelSummary {
    #[serde(flatten)]
    pub channel: ChannelView,
    pub member: bool,
    pub last_read: u64,
    pub unread: u64,
    pub mentions: u64,
    /// The user muted this channel (version 7; absent from older encodings).
    #[serde(default)]
    pub muted: bool,
}

/// Unread state of one user in one channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadState {
    pub last_read: u64,
    pub unread: u64,
    pub mentions: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserView {
    pub username: String,
    pub display_name: String,
    pub role: Role,
    pub disabled: bool,
}
