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
