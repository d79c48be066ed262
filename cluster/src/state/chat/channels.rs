//! Apply rules of channels and their membership: creating public, private and direct
//! channels, changing title, topic and archive flag, joining and leaving, and each member's own
//! mute setting of a channel (version 7).
//!
//! Owns who may create, change, join or leave what (a direct message's participants are its
//! identity: nobody joins or leaves one), and the version 1 commands' answers (the full channel
//! record). Must never read the clock or touch messages.

use std::collections::BTreeSet;

use super::{MAX_DM_MEMBERS, channel_view, dm_name, extra, forbidden, is_admin, is_member, user};
use crate::command::{
    Applied, ApplyError, ChannelEvent, ChannelExtra, ChannelKind, ChannelMeta, Outcome,
};
use crate::state::StateError;
use crate::state::context::Ctx;
use crate::state::events::EventKind;
use crate::state::keys;

/// Version 1 `CreateChannel`: a public channel, answered with the full channel record.
pub fn create_channel_v1(
    cx: &mut Ctx<'_, '_>,
    name: &str,
    creator: &str,
) -> Result<Outcome, StateError> {
    match create_channel(cx, name, creator, ChannelKind::Public, "", "", &[])? {
        Ok(_) => channel_record(cx, name),
        Err(e) => Ok(Err(e)),
    }
}

/// Version 1 `JoinChannel`: one joins oneself, answered with the full channel record.
pub fn join_channel_v1(
    cx: &mut Ctx<'_, '_>,
    name: &str,
    username: &str,
) -> Result<Outcome, StateError> {
    match add_member(cx, name, username, username)? {
        Ok(_) => channel_record(cx, name),
        Err(e) => Ok(Err(e)),
    }
}

fn channel_record(cx: &Ctx<'_, '_>, name: &str) -> Result<Outcome, StateError> {
    match channel_view(cx.kv, name)? {
        Some(ch) => Ok(Ok(Applied::Channel(ch))),
        None => Ok(Err(ApplyError::ChannelNotFound(name.to_string()))),
    }
}

pub fn create_channel(
    cx: &mut Ctx<'_, '_>,
    name: &str,
    creator: &str,
    kind: ChannelKind,
    title: &str,
    topic: &str,
    members: &[String],
) -> Result<Outcome, StateError> {
    let Some(creator_rec) = user(cx.kv, creator)? else {
        return Ok(Err(ApplyError::UnknownUser(creator.to_string())));
    };
    let mut all: BTreeSet<String> = members.iter().cloned().collect();
    all.insert(creator.to_string());
    if let Some(outcome) = check_name(cx, name, kind, &all)? {
        return Ok(outcome);
    }
    for m in &all {
        match user(cx.kv, m)? {
            None => return Ok(Err(ApplyError::UnknownUser(m.clone()))),
            Some(u) if u.disabled && *m != creator_rec.username => {
                return Ok(Err(ApplyError::UserDisabled(m.clone())));
            }
            Some(_) => {}
        }
    }
    let meta = ChannelMeta {
        name: name.to_string(),
        created_by: creator.to_string(),
        created_at_ms: cx.ts,
    };
    cx.kv.put(keys::channel(name), &meta)?;
    cx.kv.put(keys::channel_seq(name), &0u64)?;
    let extra = ChannelExtra {
        kind,
        title: if title.is_empty() {
            name.to_string()
        } else {
            title.to_string()
        },
        topic: topic.to_string(),
        archived: false,
    };
    cx.kv.put(keys::channel_extra(name), &extra)?;
    for m in &all {
        cx.kv.put(keys::member(name, m), &())?;
    }
    cx.emit(EventKind::ChannelAdded {
        channel: name.to_string(),
        public: kind == ChannelKind::Public,
        members: all.iter().cloned().collect(),
    });
    for m in &all {
        cx.channel_event(
            name,
            ChannelEvent::MemberJoined {
                user: m.clone(),
                by: creator.to_string(),
            },
        )?;
    }
    Ok(Ok(Applied::ChannelChanged {
        name: name.to_string(),
    }))
}

/// The outcome when `name` cannot be created as a new channel of `kind` with `all` in it: a
/// taken name, or a direct message whose name is not its participants' canonical one. A direct
/// message that already exists is a success (its participants are its identity).
fn check_name(
    cx: &Ctx<'_, '_>,
    name: &str,
    kind: ChannelKind,
    all: &BTreeSet<String>,
) -> Result<Option<Outcome>, StateError> {
    if kind == ChannelKind::Direct {
        if all.len() < 2 || all.len() > MAX_DM_MEMBERS {
            return Ok(Some(Err(ApplyError::Invalid(format!(
                "a direct message has 2 to {MAX_DM_MEMBERS} participants"
            )))));
        }
        let members: Vec<String> = all.iter().cloned().collect();
        if name != dm_name(&members) {
            return Ok(Some(Err(ApplyError::Invalid(
                "a direct message channel's name must be its canonical dm: name".into(),
            ))));
        }
        if cx.kv.exists(&keys::channel(name))? {
            // Idempotent: the DM already exists with exactly these participants.
            return Ok(Some(Ok(Applied::ChannelChanged {
                name: name.to_string(),
            })));
        }
    } else if cx.kv.exists(&keys::channel(name))? {
        return Ok(Some(Err(ApplyError::ChannelExists(name.to_string()))));
    }
    Ok(None)
}

pub fn update_channel(
    cx: &mut Ctx<'_, '_>,
    channel: &str,
    by: &str,
    title: Option<&str>,
    topic: Option<&str>,
    archived: Option<bool>,
) -> Result<Outcome, StateError> {
    if !cx.kv.exists(&keys::channel(channel))? {
        return Ok(Err(ApplyError::ChannelNotFound(channel.to_string())));
    }
    let admin = is_admin(cx.kv, by)?;
    if !admin && !is_member(cx.kv, channel, by)? {
        return Ok(forbidden(format!(
            "only members of '{channel}' or admins can change it"
        )));
    }
    let mut ex = extra(cx.kv, channel)?;
    if ex.kind == ChannelKind::Direct && title.is_some() {
        return Ok(Err(ApplyError::Invalid(
            "a direct message cannot be renamed".into(),
        )));
    }
    if let Some(t) = title {
        ex.title = t.to_string();
    }
    if let Some(t) = topic {
        ex.topic = t.to_string();
    }
    if let Some(a) = archived {
        ex.archived = a;
    }
    cx.kv.put(keys::channel_extra(channel), &ex)?;
    cx.channel_event(channel, ChannelEvent::ChannelUpdated)?;
    Ok(Ok(Applied::ChannelChanged {
        name: channel.to_string(),
    }))
}

pub fn add_member(
    cx: &mut Ctx<'_, '_>,
    channel: &str,
    username: &str,
    by: &str,
) -> Result<Outcome, StateError> {
    if !cx.kv.exists(&keys::channel(channel))? {
        return Ok(Err(ApplyError::ChannelNotFound(channel.to_string())));
    }
    match user(cx.kv, username)? {
        None => return Ok(Err(ApplyError::UnknownUser(username.to_string()))),
        Some(u) if u.disabled => return Ok(Err(ApplyError::UserDisabled(username.to_string()))),
        Some(_) => {}
    }
    let ex = extra(cx.kv, channel)?;
    if is_member(cx.kv, channel, username)? {
        return Ok(Ok(Applied::ChannelChanged {
            name: channel.to_string(),
        }));
    }
    let allowed = match ex.kind {
        ChannelKind::Public => {
            by == username || is_member(cx.kv, channel, by)? || is_admin(cx.kv, by)?
        }
        ChannelKind::Private => is_member(cx.kv, channel, by)? || is_admin(cx.kv, by)?,
        // A DM's participants are its identity: a different set of people is a different DM.
        ChannelKind::Direct => false,
    };
    if !allowed {
        return Ok(forbidden(format!(
            "'{by}' may not add members to channel '{channel}'"
        )));
    }
    if ex.archived {
        return Ok(Err(ApplyError::Archived(channel.to_string())));
    }
    cx.kv.put(keys::member(channel, username), &())?;
    cx.emit(EventKind::MemberJoined {
        channel: channel.to_string(),
        username: username.to_string(),
    });
    cx.channel_event(
        channel,
        ChannelEvent::MemberJoined {
            user: username.to_string(),
            by: by.to_string(),
        },
    )?;
    Ok(Ok(Applied::ChannelChanged {
        name: channel.to_string(),
    }))
}

pub fn remove_member(
    cx: &mut Ctx<'_, '_>,
    channel: &str,
    username: &str,
    by: &str,
) -> Result<Outcome, StateError> {
    if !cx.kv.exists(&keys::channel(channel))? {
        return Ok(Err(ApplyError::ChannelNotFound(channel.to_string())));
    }
    if by != username && !is_admin(cx.kv, by)? {
        return Ok(forbidden(
            "only admins can remove other members from a channel".into(),
        ));
    }
    if extra(cx.kv, channel)?.kind == ChannelKind::Direct {
        return Ok(Err(ApplyError::Invalid(
            "nobody can leave a direct message; hide it in the client instead".into(),
        )));
    }
    let key = keys::member(channel, username);
    if cx.kv.exists(&key)? {
        cx.kv.remove(key);
        cx.channel_event(
            channel,
            ChannelEvent::MemberLeft {
                user: username.to_string(),
                by: by.to_string(),
            },
        )?;
    }
    Ok(Ok(Applied::ChannelChanged {
        name: channel.to_string(),
    }))
}

/// Version 7: `username` mutes or unmutes `channel` for themselves. A per-user setting, not a
/// channel change: no channel event (other members must not learn it), only an event for the
/// user's own connections.
pub fn set_muted(
    cx: &mut Ctx<'_, '_>,
    channel: &str,
    username: &str,
    muted: bool,
) -> Result<Outcome, StateError> {
    if !cx.kv.exists(&keys::channel(channel))? {
        return Ok(Err(ApplyError::ChannelNotFound(channel.to_string())));
    }
    if !is_member(cx.kv, channel, username)? {
        return Ok(Err(ApplyError::NotMember {
            user: username.to_string(),
            channel: channel.to_string(),
        }));
    }
    let key = keys::channel_muted(username, channel);
    if cx.kv.exists(&key)? != muted {
        if muted {
            cx.kv.put(key, &())?;
        } else {
            cx.kv.remove(key);
        }
        cx.emit(EventKind::MuteChanged {
            user: username.to_string(),
            channel: channel.to_string(),
            muted,
        });
    }
    Ok(Ok(Applied::MuteSet {
        channel: channel.to_string(),
        username: username.to_string(),
        muted,
    }))
}
