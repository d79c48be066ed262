//! Apply rules of the messaging model: channels (public, private, direct), membership,
//! messages with threads, edits, tombstones, reactions, pins, mentions and read markers.
//!
//! Owns the invariants of channel event sequences (`ev`: gap-free per channel, one per change,
//! the clients' resume cursor) and of the side records added in command version 2. Every
//! permission check here is authoritative; the API layer only checks earlier for nicer errors.
//! Must never read the clock, do I/O beyond the overlay, or depend on anything but the entry.

use std::collections::BTreeSet;

use crate::command::{
    Applied, ApplyError, ChannelEvent, ChannelExtra, ChannelKind, ChannelMeta, MessageExtra,
    MessageRecord, Outcome, Role, UserRecord,
};
use crate::state::events::{Event, EventKind};
use crate::state::keys;
use crate::state::{Overlay, StateError};

/// Largest group DM (participants, including the creator).
pub const MAX_DM_MEMBERS: usize = 8;

/// Everything an apply function needs besides the command.
pub struct Ctx<'k, 'a> {
    pub kv: &'k mut Overlay<'a>,
    pub ts: u64,
    pub index: u64,
    pub events: &'k mut Vec<Event>,
}

impl Ctx<'_, '_> {
    fn emit(&mut self, kind: EventKind) {
        self.events.push(Event {
            index: self.index,
            kind,
        });
    }

    /// Appends `event` to the channel's event log and publishes it with its `ev`.
    fn channel_event(&mut self, channel: &str, event: ChannelEvent) -> Result<u64, StateError> {
        let ev_key = keys::channel_ev(channel);
        let ev = self.kv.get::<u64>(&ev_key)?.unwrap_or(0) + 1;
        self.kv.put(ev_key, &ev)?;
        self.kv.put(keys::event(channel, ev), &event)?;
        self.emit(EventKind::Channel {
            channel: channel.to_string(),
            ev,
            event,
        });
        Ok(ev)
    }
}

fn user(kv: &Overlay<'_>, name: &str) -> Result<Option<UserRecord>, StateError> {
    kv.get::<UserRecord>(&keys::user(name))
}

fn is_admin(kv: &Overlay<'_>, name: &str) -> Result<bool, StateError> {
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

fn is_member(kv: &Overlay<'_>, channel: &str, user: &str) -> Result<bool, StateError> {
    kv.exists(&keys::member(channel, user))
}

fn forbidden(msg: String) -> Outcome {
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
    if kind == ChannelKind::Direct {
        if all.len() < 2 || all.len() > MAX_DM_MEMBERS {
            return Ok(Err(ApplyError::Invalid(format!(
                "a direct message has 2 to {MAX_DM_MEMBERS} participants"
            ))));
        }
        let members: Vec<String> = all.iter().cloned().collect();
        if name != dm_name(&members) {
            return Ok(Err(ApplyError::Invalid(
                "a direct message channel's name must be its canonical dm: name".into(),
            )));
        }
        if cx.kv.exists(&keys::channel(name))? {
            // Idempotent: the DM already exists with exactly these participants.
            return Ok(Ok(Applied::ChannelChanged {
                name: name.to_string(),
            }));
        }
    } else if cx.kv.exists(&keys::channel(name))? {
        return Ok(Err(ApplyError::ChannelExists(name.to_string())));
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

/// `@name` tokens of a body: lowercase names of `[a-z0-9_.-]`, not preceded by a word
/// character (so e-mail addresses are not mentions). Trailing '.' or '-' is punctuation.
pub fn parse_mentions(body: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = body.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'@'
            && (i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_'))
        {
            let start = i + 1;
            let mut end = start;
            while end < bytes.len()
                && (bytes[end].is_ascii_lowercase()
                    || bytes[end].is_ascii_digit()
                    || matches!(bytes[end], b'_' | b'.' | b'-'))
            {
                end += 1;
            }
            while end > start && matches!(bytes[end - 1], b'.' | b'-') {
                end -= 1;
            }
            if end > start {
                // The scanned range is ASCII, so it is a valid str slice.
                out.insert(body[start..end].to_string());
            }
            i = end.max(i + 1);
        } else {
            i += 1;
        }
    }
    out
}

pub fn post_message(
    cx: &mut Ctx<'_, '_>,
    channel: &str,
    author: &str,
    body: &str,
    client_msg_id: &str,
    thread_root: Option<u64>,
) -> Result<(Outcome, Option<MessageRecord>), StateError> {
    // Idempotency first: a retry of an already applied post returns the original even if the
    // author has since left the channel.
    let dedup_key = keys::dedup(author, client_msg_id);
    if let Some((orig_channel, seq)) = cx.kv.get::<(String, u64)>(&dedup_key)?
        && let Some(message) = cx
            .kv
            .get::<MessageRecord>(&keys::message(&orig_channel, seq))?
    {
        return Ok((
            Ok(Applied::MessageChanged {
                channel: orig_channel,
                seq,
                duplicate: true,
            }),
            Some(message),
        ));
    }
    let seq_key = keys::channel_seq(channel);
    let Some(last_seq) = cx.kv.get::<u64>(&seq_key)? else {
        return Ok((Err(ApplyError::ChannelNotFound(channel.to_string())), None));
    };
    if !is_member(cx.kv, channel, author)? {
        return Ok((
            Err(ApplyError::NotMember {
                user: author.to_string(),
                channel: channel.to_string(),
            }),
            None,
        ));
    }
    if extra(cx.kv, channel)?.archived {
        return Ok((Err(ApplyError::Archived(channel.to_string())), None));
    }
    let seq = last_seq + 1;
    let mut mx = MessageExtra::default();
    if let Some(root) = thread_root {
        let root_key = keys::message_extra(channel, root);
        let Some(_) = cx.kv.get::<MessageRecord>(&keys::message(channel, root))? else {
            return Ok((
                Err(ApplyError::MessageNotFound {
                    channel: channel.to_string(),
                    seq: root,
                }),
                None,
            ));
        };
        let mut root_extra = cx.kv.get::<MessageExtra>(&root_key)?.unwrap_or_default();
        if root_extra.thread_root.is_some() {
            return Ok((
                Err(ApplyError::Invalid(
                    "replies go to the thread's root message, not to another reply".into(),
                )),
                None,
            ));
        }
        root_extra.reply_count += 1;
        cx.kv.put(root_key, &root_extra)?;
        cx.kv.put(keys::thread_reply(channel, root, seq), &())?;
        mx.thread_root = Some(root);
    }
    let message = MessageRecord {
        channel: channel.to_string(),
        seq,
        author: author.to_string(),
        body: body.to_string(),
        ts_ms: cx.ts,
        client_msg_id: client_msg_id.to_string(),
    };
    // Mentions: only members other than the author count; `@channel`/`@here`/`@all` mention
    // every member. Recorded in the per-user index that unread-mention counts read.
    let names = parse_mentions(body);
    let everyone = names.contains("channel") || names.contains("here") || names.contains("all");
    let mut mentioned: BTreeSet<String> = BTreeSet::new();
    for n in &names {
        if n != author && is_member(cx.kv, channel, n)? {
            mx.mentions.push(n.clone());
            mentioned.insert(n.clone());
        }
    }
    if everyone {
        mx.channel_mention = true;
        let prefix = keys::member_prefix(channel);
        for k in cx.kv.keys_with_prefix(&prefix)? {
            let m = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            if m != author {
                mentioned.insert(m);
            }
        }
    }
    for m in &mentioned {
        cx.kv.put(keys::mention(m, channel, seq), &())?;
        cx.emit(EventKind::Mention {
            user: m.clone(),
            channel: channel.to_string(),
            seq,
            by: author.to_string(),
        });
    }
    if mx != MessageExtra::default() {
        cx.kv.put(keys::message_extra(channel, seq), &mx)?;
    }
    cx.kv.put(keys::message(channel, seq), &message)?;
    cx.kv.put(dedup_key, &(channel.to_string(), seq))?;
    // Within one entry the overlay coalesces these into a single write per channel.
    cx.kv.put(seq_key, &seq)?;
    // Posting marks the channel read up to one's own message.
    cx.kv.put(keys::read_marker(author, channel), &seq)?;
    cx.emit(EventKind::MessagePosted(message.clone()));
    cx.channel_event(channel, ChannelEvent::Message { seq })?;
    Ok((
        Ok(Applied::MessageChanged {
            channel: channel.to_string(),
            seq,
            duplicate: false,
        }),
        Some(message),
    ))
}

/// Loads a message for a change by `by`; refuses unless `check` allows it.
fn load_for_change(
    cx: &Ctx<'_, '_>,
    channel: &str,
    seq: u64,
) -> Result<Result<(MessageRecord, MessageExtra), ApplyError>, StateError> {
    if !cx.kv.exists(&keys::channel(channel))? {
        return Ok(Err(ApplyError::ChannelNotFound(channel.to_string())));
    }
    let Some(msg) = cx.kv.get::<MessageRecord>(&keys::message(channel, seq))? else {
        return Ok(Err(ApplyError::MessageNotFound {
            channel: channel.to_string(),
            seq,
        }));
    };
    let mx = cx
        .kv
        .get::<MessageExtra>(&keys::message_extra(channel, seq))?
        .unwrap_or_default();
    if mx.deleted {
        return Ok(Err(ApplyError::MessageNotFound {
            channel: channel.to_string(),
            seq,
        }));
    }
    Ok(Ok((msg, mx)))
}

fn changed(channel: &str, seq: u64) -> Outcome {
    Ok(Applied::MessageChanged {
        channel: channel.to_string(),
        seq,
        duplicate: false,
    })
}

pub fn edit_message(
    cx: &mut Ctx<'_, '_>,
    channel: &str,
    seq: u64,
    by: &str,
    body: &str,
) -> Result<Outcome, StateError> {
    let (mut msg, mut mx) = match load_for_change(cx, channel, seq)? {
        Ok(v) => v,
        Err(e) => return Ok(Err(e)),
    };
    if msg.author != by {
        return Ok(forbidden("only the author can edit a message".into()));
    }
    if extra(cx.kv, channel)?.archived {
        return Ok(Err(ApplyError::Archived(channel.to_string())));
    }
    if msg.body == body {
        return Ok(changed(channel, seq));
    }
    msg.body = body.to_string();
    mx.edited_at_ms = Some(cx.ts);
    cx.kv.put(keys::message(channel, seq), &msg)?;
    cx.kv.put(keys::message_extra(channel, seq), &mx)?;
    cx.channel_event(channel, ChannelEvent::Edited { seq })?;
    Ok(changed(channel, seq))
}

pub fn delete_message(
    cx: &mut Ctx<'_, '_>,
    channel: &str,
    seq: u64,
    by: &str,
) -> Result<Outcome, StateError> {
    let (mut msg, mut mx) = match load_for_change(cx, channel, seq)? {
        Ok(v) => v,
        Err(e) => return Ok(Err(e)),
    };
    if msg.author != by && !is_admin(cx.kv, by)? {
        return Ok(forbidden(
            "only the author or an admin can delete a message".into(),
        ));
    }
    // A tombstone keeps the seq (history stays gap-free) but drops the content.
    msg.body = String::new();
    mx.deleted = true;
    mx.reactions.clear();
    mx.mentions.clear();
    if mx.pinned {
        mx.pinned = false;
        cx.kv.remove(keys::pin(channel, seq));
    }
    cx.kv.put(keys::message(channel, seq), &msg)?;
    cx.kv.put(keys::message_extra(channel, seq), &mx)?;
    cx.channel_event(channel, ChannelEvent::Deleted { seq })?;
    Ok(changed(channel, seq))
}

pub fn set_reaction(
    cx: &mut Ctx<'_, '_>,
    channel: &str,
    seq: u64,
    user_name: &str,
    emoji: &str,
    add: bool,
) -> Result<Outcome, StateError> {
    let (_, mut mx) = match load_for_change(cx, channel, seq)? {
        Ok(v) => v,
        Err(e) => return Ok(Err(e)),
    };
    if !is_member(cx.kv, channel, user_name)? {
        return Ok(Err(ApplyError::NotMember {
            user: user_name.to_string(),
            channel: channel.to_string(),
        }));
    }
    let present = mx
        .reactions
        .get(emoji)
        .is_some_and(|s| s.contains(user_name));
    if present == add {
        return Ok(changed(channel, seq));
    }
    if add {
        mx.reactions
            .entry(emoji.to_string())
            .or_default()
            .insert(user_name.to_string());
    } else if let Some(set) = mx.reactions.get_mut(emoji) {
        set.remove(user_name);
        if set.is_empty() {
            mx.reactions.remove(emoji);
        }
    }
    cx.kv.put(keys::message_extra(channel, seq), &mx)?;
    cx.channel_event(
        channel,
        ChannelEvent::Reaction {
            seq,
            user: user_name.to_string(),
            emoji: emoji.to_string(),
            added: add,
        },
    )?;
    Ok(changed(channel, seq))
}

pub fn set_pinned(
    cx: &mut Ctx<'_, '_>,
    channel: &str,
    seq: u64,
    by: &str,
    pinned: bool,
) -> Result<Outcome, StateError> {
    let (_, mut mx) = match load_for_change(cx, channel, seq)? {
        Ok(v) => v,
        Err(e) => return Ok(Err(e)),
    };
    if !is_member(cx.kv, channel, by)? && !is_admin(cx.kv, by)? {
        return Ok(forbidden("only members can pin messages".into()));
    }
    if mx.pinned == pinned {
        return Ok(changed(channel, seq));
    }
    mx.pinned = pinned;
    if pinned {
        cx.kv.put(keys::pin(channel, seq), &())?;
    } else {
        cx.kv.remove(keys::pin(channel, seq));
    }
    cx.kv.put(keys::message_extra(channel, seq), &mx)?;
    cx.channel_event(
        channel,
        ChannelEvent::Pinned {
            seq,
            user: by.to_string(),
            pinned,
        },
    )?;
    Ok(changed(channel, seq))
}

pub fn mark_read(
    cx: &mut Ctx<'_, '_>,
    channel: &str,
    username: &str,
    seq: u64,
) -> Result<Outcome, StateError> {
    let Some(last_seq) = cx.kv.get::<u64>(&keys::channel_seq(channel))? else {
        return Ok(Err(ApplyError::ChannelNotFound(channel.to_string())));
    };
    if !is_member(cx.kv, channel, username)? {
        return Ok(Err(ApplyError::NotMember {
            user: username.to_string(),
            channel: channel.to_string(),
        }));
    }
    let key = keys::read_marker(username, channel);
    let current = cx.kv.get::<u64>(&key)?.unwrap_or(0);
    let target = seq.min(last_seq);
    if target > current {
        cx.kv.put(key, &target)?;
        // Mentions at or below the marker are read: drop them from the index.
        let prefix = keys::mention_prefix(username, channel);
        for k in cx.kv.keys_with_prefix(&prefix)? {
            let mut be = [0u8; 8];
            if k.len() == prefix.len() + 8 {
                be.copy_from_slice(&k[prefix.len()..]);
                if u64::from_be_bytes(be) <= target {
                    cx.kv.remove(k);
                }
            }
        }
        cx.emit(EventKind::ReadMarker {
            user: username.to_string(),
            channel: channel.to_string(),
            seq: target,
        });
    }
    Ok(Ok(Applied::ReadMarker {
        channel: channel.to_string(),
        seq: target.max(current),
    }))
}
