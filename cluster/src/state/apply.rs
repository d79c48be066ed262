//! The state machine's entry point: `apply_request` turns one log entry into outcomes,
//! key-value writes and events, and `apply_command` hands each command to its domain.
//!
//! Owns what holds for a whole entry: the command-version gate (an entry newer than this binary,
//! or one it cannot decode, is refused whole with a fatal `StateError`: never half-applied,
//! never skipped), the permanent activation of a version,
//! and server time that never goes backwards. Holds no rule of any domain: each arm is one
//! call. Must never do I/O beyond the overlay it is given, read the clock, or use randomness:
//! every node must reach the same result from the same entry.

use crate::command::{COMMAND_VERSION, Command, Outcome, Request};
use crate::state::chat::{channels, messages};
use crate::state::context::Ctx;
use crate::state::events::Event;
use crate::state::overlay::Overlay;
use crate::state::{StateError, accounts, ca, dns_records, draining, files, join, keys, sessions};

/// Applies one normal entry. Returns one outcome per command. `index` is the entry's log index,
/// recorded in events so subscribers can resume.
pub fn apply_request(
    kv: &mut Overlay<'_>,
    req: &Request,
    index: u64,
    events: &mut Vec<Event>,
) -> Result<Vec<Outcome>, StateError> {
    // Checked before anything is written: the whole entry is refused, never half-applied,
    // and never skipped (a skipped entry would leave this node's state behind its peers').
    if req.version > COMMAND_VERSION {
        return Err(StateError::NeedsNewerVersion {
            index,
            needed: req.version,
            speaks: COMMAND_VERSION,
        });
    }
    if let Some(reason) = &req.undecodable {
        return Err(StateError::Undecodable {
            index,
            version: req.version,
            speaks: COMMAND_VERSION,
            reason: reason.to_string(),
        });
    }
    let active: u16 = kv.get(keys::ACTIVE_VERSION)?.unwrap_or(1);
    if req.version > active {
        kv.put(keys::ACTIVE_VERSION.to_vec(), &req.version)?;
        if active < 6 && req.version >= 6 {
            // Sessions stored by older binaries have no index entries yet.
            sessions::index_legacy(kv)?;
        }
    }
    // Server time never goes backwards, whatever the clock of the node that proposed.
    let last_ts: u64 = kv.get(keys::LAST_TS)?.unwrap_or(0);
    let ts = req.ts_ms.max(last_ts);
    if ts != last_ts {
        kv.put(keys::LAST_TS.to_vec(), &ts)?;
    }
    if active.max(req.version) >= 6 {
        // Expired sessions go as time passes, driven by the entries' own timestamps.
        sessions::purge_expired(kv, ts, index, events)?;
    }
    let mut outcomes = Vec::with_capacity(req.commands.len());
    for cmd in req.commands.iter() {
        outcomes.push(apply_command(kv, cmd, ts, index, events)?);
    }
    Ok(outcomes)
}

// One arm per `Command` variant (the exhaustive list of what the log can hold), each one call.
fn apply_command(
    kv: &mut Overlay<'_>,
    cmd: &Command,
    ts: u64,
    index: u64,
    events: &mut Vec<Event>,
) -> Result<Outcome, StateError> {
    let cx = &mut Ctx {
        kv,
        ts,
        index,
        events,
    };
    match cmd {
        // ---- version 1 ----
        Command::CreateUser {
            username,
            password_hash,
            role,
        } => accounts::create_user(cx, username, password_hash, *role, false),
        Command::CreateSession {
            token_hash,
            username,
            ttl_ms,
        } => accounts::create_session(cx, token_hash, username, *ttl_ms),
        Command::RevokeSession { token_hash } => accounts::revoke_session(cx, token_hash),
        Command::CreateChannel { name, creator } => channels::create_channel_v1(cx, name, creator),
        Command::JoinChannel { name, username } => channels::join_channel_v1(cx, name, username),
        Command::PostMessage {
            channel,
            author,
            body,
            client_msg_id,
        } => messages::post_message_v1(cx, channel, author, body, client_msg_id),
        // ---- version 2 ----
        Command::CreateChannelV2 {
            name,
            creator,
            kind,
            title,
            topic,
            members,
        } => channels::create_channel(cx, name, creator, *kind, title, topic, members),
        Command::UpdateChannel {
            channel,
            by,
            title,
            topic,
            archived,
        } => channels::update_channel(
            cx,
            channel,
            by,
            title.as_deref(),
            topic.as_deref(),
            *archived,
        ),
        Command::AddMember {
            channel,
            username,
            by,
        } => channels::add_member(cx, channel, username, by),
        Command::RemoveMember {
            channel,
            username,
            by,
        } => channels::remove_member(cx, channel, username, by),
        Command::PostMessageV2 {
            channel,
            author,
            body,
            client_msg_id,
            thread_root,
        } => Ok(messages::post_message(cx, channel, author, body, client_msg_id, *thread_root)?.0),
        Command::EditMessage {
            channel,
            seq,
            by,
            body,
        } => messages::edit_message(cx, channel, *seq, by, body),
        Command::DeleteMessage { channel, seq, by } => {
            messages::delete_message(cx, channel, *seq, by)
        }
        Command::SetReaction {
            channel,
            seq,
            user,
            emoji,
            add,
        } => messages::set_reaction(cx, channel, *seq, user, emoji, *add),
        Command::SetPinned {
            channel,
            seq,
            by,
            pinned,
        } => messages::set_pinned(cx, channel, *seq, by, *pinned),
        Command::MarkRead {
            channel,
            username,
            seq,
        } => messages::mark_read(cx, channel, username, *seq),
        Command::UpdateUser {
            username,
            by,
            disabled,
            role,
            display_name,
        } => accounts::update_user(cx, username, by, *disabled, *role, display_name.as_deref()),
        Command::SetPassword {
            username,
            password_hash,
            keep_session,
        } => accounts::set_password(cx, username, password_hash, keep_session.as_deref(), false),
        Command::LoginAttempt { username } => accounts::login_attempt(cx, username),
        // ---- version 3 ----
        Command::SetDraining { node_id, draining } => {
            draining::set_draining(cx, *node_id, *draining)
        }
        Command::PutDnsRecord { record } => dns_records::apply::put_dns_record(cx, record),
        Command::RemoveDnsRecords { name, rtype, data } => {
            dns_records::apply::remove_dns_records(cx, name, *rtype, data.as_ref())
        }
        // ---- version 4 ----
        Command::CaUpdate { expect, state } => ca::ca_update(cx, *expect, state),
        // ---- version 5 ----
        Command::CreateJoinToken {
            id,
            secret_hash,
            expires_ms,
            by,
        } => join::create(cx, id, secret_hash, *expires_ms, by),
        Command::UseJoinToken {
            id,
            secret_hash,
            node_id,
            api_addr,
            cluster_addr,
        } => join::use_token(
            cx,
            id,
            secret_hash,
            *node_id,
            (api_addr.as_str(), cluster_addr.as_str()),
        ),
        // ---- version 6 ----
        Command::CreateSessionV2 {
            token_hash,
            username,
            ttl_ms,
            idle_ms,
            user_agent,
            source,
        } => sessions::create_session(
            cx, token_hash, username, *ttl_ms, *idle_ms, user_agent, source,
        ),
        Command::TouchSessions { touches } => sessions::touch(cx, touches),
        Command::EndUserSessions { username, by } => sessions::end_user_sessions(cx, username, by),
        Command::CreateUserV2 {
            username,
            password_hash,
            role,
            must_change_password,
        } => accounts::create_user(cx, username, password_hash, *role, *must_change_password),
        Command::SetPasswordV2 {
            username,
            password_hash,
            keep_session,
            must_change_password,
        } => accounts::set_password(
            cx,
            username,
            password_hash,
            keep_session.as_deref(),
            *must_change_password,
        ),
        // ---- version 7 ----
        Command::PostMessageWithFiles {
            channel,
            author,
            body,
            client_msg_id,
            thread_root,
            files,
        } => files::post_with_files(
            cx,
            channel,
            author,
            body,
            client_msg_id,
            *thread_root,
            files,
        ),
        Command::SetChannelMuted {
            channel,
            username,
            muted,
        } => channels::set_muted(cx, channel, username, *muted),
    }
}
