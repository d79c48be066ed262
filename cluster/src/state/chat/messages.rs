//! Apply rules of messages: posting (with threads and mentions), edits, tombstones,
//! reactions, pins and read markers.
//!
//! Owns idempotent posting (a retried post returns the original and writes nothing), the
//! per-channel gap-free message sequence, and the mention index that unread counts read. Must
//! never read the clock (a message's time is its entry's) or change channels or membership.

use std::collections::BTreeSet;

use super::{extra, forbidden, is_admin, is_member};
use crate::command::{Applied, ApplyError, ChannelEvent, MessageExtra, MessageRecord, Outcome};
use crate::state::StateError;
use crate::state::context::Ctx;
use crate::state::events::EventKind;
use crate::state::keys;

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
        if let Err(e) = attach_to_thread(cx, channel, root, seq)? {
            return Ok((Err(e), None));
        }
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
    record_mentions(cx, channel, author, body, seq, &mut mx)?;
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

/// Counts reply `seq` on thread `root`: the root must exist and must not be a reply itself.
fn attach_to_thread(
    cx: &mut Ctx<'_, '_>,
    channel: &str,
    root: u64,
    seq: u64,
) -> Result<Result<(), ApplyError>, StateError> {
    let root_key = keys::message_extra(channel, root);
    let Some(_) = cx.kv.get::<MessageRecord>(&keys::message(channel, root))? else {
        return Ok(Err(ApplyError::MessageNotFound {
            channel: channel.to_string(),
            seq: root,
        }));
    };
    let mut root_extra = cx.kv.get::<MessageExtra>(&root_key)?.unwrap_or_default();
    if root_extra.thread_root.is_some() {
        return Ok(Err(ApplyError::Invalid(
            "replies go to the thread's root message, not to another reply".into(),
        )));
    }
    root_extra.reply_count += 1;
    cx.kv.put(root_key, &root_extra)?;
    cx.kv.put(keys::thread_reply(channel, root, seq), &())?;
    Ok(Ok(()))
}

/// Mentions: only members other than the author count; `@channel`/`@here`/`@all` mention
/// every member. Recorded in the per-user index that unread-mention counts read.
fn record_mentions(
    cx: &mut Ctx<'_, '_>,
    channel: &str,
    author: &str,
    body: &str,
    seq: u64,
    mx: &mut MessageExtra,
) -> Result<(), StateError> {
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
    Ok(())
}

/// Version 1 `PostMessage`: answered with the message record itself.
pub fn post_message_v1(
    cx: &mut Ctx<'_, '_>,
    channel: &str,
    author: &str,
    body: &str,
    client_msg_id: &str,
) -> Result<Outcome, StateError> {
    let (outcome, message) = post_message(cx, channel, author, body, client_msg_id, None)?;
    match (outcome, message) {
        (Ok(Applied::MessageChanged { duplicate, .. }), Some(message)) => {
            Ok(Ok(Applied::Message { message, duplicate }))
        }
        (Err(e), _) => Ok(Err(e)),
        (Ok(other), _) => Ok(Ok(other)),
    }
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
    // Its attachments become tombstones; their blobs go after the grace period.
    crate::state::files::on_message_deleted(cx, channel, seq)?;
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
