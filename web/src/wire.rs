//! The cluster's read models (`cluster::views`) as the API's wire types (`api::rest`): one
//! conversion per type, used by the REST routes and the WebSocket frames alike.
//!
//! The read models stay the state machine's query results; the wire types are the contract.
//! The test below pins that a read model and its wire type encode to the same JSON. Must never
//! add, drop or rename a field on the way: that would change the wire.

use std::collections::BTreeMap;

use api::rest::{Channel, ChannelKind, FileInfo, Message, Role, User};
use axum::Json;
use cluster::{ChannelSummary, ChannelView, FileView, MessageView, UserView};
use serde::Serialize;

use crate::error::ApiError;

/// A body as the routes that build it through `serde_json::Value` have always sent it: keys in
/// alphabetical order at every level. Typed on the way in, so the shape is still `api`'s.
pub fn as_value<T: Serialize>(body: &T) -> Result<Json<serde_json::Value>, ApiError> {
    serde_json::to_value(body)
        .map(Json)
        .map_err(|e| ApiError::Internal(format!("encoding a response: {e}")))
}

pub fn role(r: cluster::Role) -> Role {
    match r {
        cluster::Role::Admin => Role::Admin,
        cluster::Role::Member => Role::Member,
    }
}

/// A role a request names, as the cluster stores it.
pub fn cluster_role(r: Role) -> cluster::Role {
    match r {
        Role::Admin => cluster::Role::Admin,
        Role::Member => cluster::Role::Member,
    }
}

fn kind(k: cluster::ChannelKind) -> ChannelKind {
    match k {
        cluster::ChannelKind::Public => ChannelKind::Public,
        cluster::ChannelKind::Private => ChannelKind::Private,
        cluster::ChannelKind::Direct => ChannelKind::Direct,
    }
}

pub fn user(v: &UserView) -> User {
    User {
        username: v.username.clone(),
        display_name: v.display_name.clone(),
        role: role(v.role),
        disabled: v.disabled,
    }
}

pub fn message(v: &MessageView) -> Message {
    Message {
        channel: v.channel.clone(),
        seq: v.seq,
        author: v.author.clone(),
        body: v.body.clone(),
        ts_ms: v.ts_ms,
        client_msg_id: v.client_msg_id.clone(),
        thread_root: v.thread_root,
        reply_count: u64::from(v.reply_count),
        edited_at_ms: v.edited_at_ms,
        deleted: v.deleted,
        pinned: v.pinned,
        reactions: v
            .reactions
            .iter()
            .map(|(emoji, users)| (emoji.clone(), users.iter().cloned().collect()))
            .collect::<BTreeMap<_, _>>(),
        mentions: v.mentions.clone(),
        channel_mention: v.channel_mention,
        attachments: v.attachments.iter().map(file).collect(),
    }
}

pub fn file(v: &FileView) -> FileInfo {
    FileInfo {
        id: v.id.clone(),
        name: v.name.clone(),
        size: v.size,
        sha256: v.sha256.clone(),
        mime: v.mime.clone(),
        image: v.image,
        width: v.width,
        height: v.height,
        has_thumbnail: v.has_thumbnail,
        uploader: v.uploader.clone(),
        channel: v.channel.clone(),
    }
}

/// A channel without the caller's own state (`member`, `last_read`, ... left out).
pub fn channel(v: &ChannelView) -> Channel {
    Channel {
        name: v.name.clone(),
        title: v.title.clone(),
        topic: v.topic.clone(),
        kind: kind(v.kind),
        archived: v.archived,
        created_by: v.created_by.clone(),
        created_at_ms: v.created_at_ms,
        members: v.members.iter().cloned().collect(),
        last_seq: v.last_seq,
        last_ev: v.last_ev,
        member: None,
        last_read: None,
        unread: None,
        mentions: None,
        muted: None,
    }
}

/// A channel as one user sees it in their channel list.
pub fn channel_summary(s: &ChannelSummary) -> Channel {
    Channel {
        member: Some(s.member),
        last_read: Some(s.last_read),
        unread: Some(s.unread),
        mentions: Some(s.mentions),
        muted: Some(s.muted),
        ..channel(&s.channel)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    /// The wire types encode the cluster's read models exactly as the REST API does, which
    /// serialises the read models themselves.
    #[test]
    fn read_models_encode_the_same_through_the_wire_types() {
        let m = MessageView {
            channel: "general".into(),
            seq: 12,
            author: "alice".into(),
            body: "hi @bob @here".into(),
            ts_ms: 1_764_450_000_000,
            client_msg_id: "web-3f2a".into(),
            thread_root: Some(3),
            reply_count: 2,
            edited_at_ms: None,
            deleted: false,
            pinned: true,
            reactions: BTreeMap::from([("👍".into(), BTreeSet::from(["bob".into()]))]),
            mentions: vec!["bob".into()],
            channel_mention: true,
            attachments: vec![FileView {
                id: "0123456789abcdef0123456789abcdef".into(),
                name: "shot.png".into(),
                size: 1234,
                sha256: "ab".repeat(32),
                mime: "image/png".into(),
                image: true,
                width: Some(640),
                height: Some(480),
                has_thumbnail: true,
                uploader: "alice".into(),
                channel: "general".into(),
            }],
        };
        assert_eq!(
            serde_json::to_string(&message(&m)).unwrap(),
            serde_json::to_string(&m).unwrap()
        );
        let v = ChannelView {
            name: "ops".into(),
            title: "Ops".into(),
            topic: "pager".into(),
            kind: cluster::ChannelKind::Direct,
            archived: true,
            created_by: "alice".into(),
            created_at_ms: 5,
            members: BTreeSet::from(["alice".into(), "bob".into()]),
            last_seq: 12,
            last_ev: 58,
        };
        assert_eq!(
            serde_json::to_string(&channel(&v)).unwrap(),
            serde_json::to_string(&v).unwrap()
        );
        let s = ChannelSummary {
            channel: v,
            member: true,
            last_read: 10,
            unread: 2,
            mentions: 1,
            muted: true,
        };
        assert_eq!(
            serde_json::to_string(&channel_summary(&s)).unwrap(),
            serde_json::to_string(&s).unwrap()
        );
        let u = UserView {
            username: "bob".into(),
            display_name: "Bob".into(),
            role: cluster::Role::Member,
            disabled: true,
        };
        assert_eq!(
            serde_json::to_string(&user(&u)).unwrap(),
            serde_json::to_string(&u).unwrap()
        );
    }
}
