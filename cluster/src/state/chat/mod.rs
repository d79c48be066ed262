//! Apply rules of the messaging model: channels (public, private, direct), membership,
//! messages with threads, edits, tombstones, reactions, pins, mentions and read markers.
//!
//! `channels` changes channels and their members, `messages` the messages in them; this file
//! holds what both check (who is a member, who is an admin, a channel's side record) and the
//! assembly of a channel record from its keys. Owns the invariants of channel event sequences
//! (`ev`: gap-free per channel, one per change, the clients' resume cursor) and of the side
//! records added in command version 2. Every permission check here is authoritative; the API
//! layer only checks earlier for nicer errors. Must never read the clock, do I/O beyond the
//! overlay, or depend on anything but the entry.

pub mod channels;
pub mod messages;

use std::collections::BTreeSet;

use crate::command::{
    ApplyError, ChannelExtra, ChannelMeta, ChannelRecord, Outcome, Role, UserRecord,
};
use crate::state::StateError;
use crate::state::keys;
use crate::state::overlay::Overlay;

/// Largest group DM (participants, including the creator).
pub const MAX_DM_MEMBERS: usize = 8;

pub(super) fn user(kv: &Overlay<'_>, name: &str) -> Result<Option<UserRecord>, StateError> {
    kv.get::<UserRecord>(&keys::user(name))
}

pub(super) fn is_admin(kv: &Overlay<'_>, name: &str) -> Result<bool, StateError> {
    Ok(user(kv, name)?.is_some_and(|u| u.role == Role::Admin && !u.disabled))
}

pub fn extra(kv: &Overlay<'_>, channel: &str) -> Result<ChannelExtra, StateError> {
    Ok(kv
        .get::<ChannelExtra>(&keys::channel_extra(channel))?
        .unwrap_or_else(|| ChannelExtra {
            title: channel.to_string(),
            ..ChannelExtra::default()
        }))
}

pub(super) fn is_member(kv: &Overlay<'_>, channel: &str, user: &str) -> Result<bool, StateError> {
    kv.exists(&keys::member(channel, user))
}

pub(super) fn forbidden(msg: String) -> Outcome {
    Err(ApplyError::Forbidden(msg))
}

/// The canonical name of the direct-message channel between `users` (any order, duplicates
/// ignored).
pub fn dm_name(users: &[String]) -> String {
    let set: BTreeSet<&str> = users.iter().map(String::as_str).collect();
    let mut name = String::from("dm");
    for u in set {
        name.push(':');
        name.push_str(u);
    }
    name
}

/// Assembles the API view of a channel from its separate keys.
pub fn channel_view(kv: &Overlay<'_>, name: &str) -> Result<Option<ChannelRecord>, StateError> {
    match kv.get::<ChannelMeta>(&keys::channel(name))? {
        Some(meta) => channel_from_meta(kv, meta).map(Some),
        None => Ok(None),
    }
}

/// Completes a channel's metadata with its members and newest sequence.
pub fn channel_from_meta(kv: &Overlay<'_>, meta: ChannelMeta) -> Result<ChannelRecord, StateError> {
    let name = meta.name.as_str();
    let prefix = keys::member_prefix(name);
    let members = kv
        .keys_with_prefix(&prefix)?
        .into_iter()
        .map(|k| String::from_utf8_lossy(&k[prefix.len()..]).into_owned())
        .collect();
    let last_seq = kv.get::<u64>(&keys::channel_seq(name))?.unwrap_or(0);
    Ok(ChannelRecord {
        name: meta.name,
        created_by: meta.created_by,
        created_at_ms: meta.created_at_ms,
        members,
        last_seq,
    })
}
