//! The deterministic rules of the replicated state: `apply_request` turns one log entry into
//! outcomes, key-value writes and events.
//!
//! Owns the chat data model's invariants (unique names, per-channel gap-free sequences,
//! idempotent posts). Must never do I/O beyond reading the tree it is given, read the clock,
//! or use randomness: every node must reach the same result from the same entry.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::command::{
    Applied, ApplyError, COMMAND_VERSION, ChannelKind, ChannelMeta, ChannelRecord, Command,
    Outcome, Request, SessionRecord, UserRecord,
};
use crate::state::accounts;
use crate::state::ca;
use crate::state::chat::{self, Ctx};
use crate::state::dns_records::apply as dns_apply;
use crate::state::events::{Event, EventKind};
use crate::state::join;
use crate::state::keys;

/// A storage or decoding failure while applying: fatal for the node (it stops applying rather
/// than diverge from its peers).
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    #[error("corrupt value at key {key}: {source}")]
    Decode {
        key: String,
        #[source]
        source: bincode::Error,
    },
    #[error("encode: {0}")]
    Encode(#[source] bincode::Error),
}

/// Reads through to the tree, with the writes of the current batch layered on top so later
/// commands in one entry see earlier ones.
pub struct Overlay<'a> {
    tree: &'a sled::Tree,
    pending: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl<'a> Overlay<'a> {
    pub fn new(tree: &'a sled::Tree) -> Self {
        Self {
            tree,
            pending: BTreeMap::new(),
        }
    }

    pub fn get_raw(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        if let Some(v) = self.pending.get(key) {
            return Ok(v.clone());
        }
        Ok(self.tree.get(key)?.map(|v| v.to_vec()))
    }

    pub fn get<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StateError> {
        match self.get_raw(key)? {
            None => Ok(None),
            Some(bytes) => {
                bincode::deserialize(&bytes)
                    .map(Some)
                    .map_err(|source| StateError::Decode {
                        key: String::from_utf8_lossy(key).into_owned(),
                        source,
                    })
            }
        }
    }

    pub fn put<T: Serialize>(&mut self, key: Vec<u8>, value: &T) -> Result<(), StateError> {
        let bytes = bincode::serialize(value).map_err(StateError::Encode)?;
        self.pending.insert(key, Some(bytes));
        Ok(())
    }

    pub fn exists(&self, key: &[u8]) -> Result<bool, StateError> {
        if let Some(v) = self.pending.get(key) {
            return Ok(v.is_some());
        }
        Ok(self.tree.contains_key(key)?)
    }

    /// Keys under `prefix`, as the tree plus this batch's pending writes would have them.
    pub fn keys_with_prefix(&self, prefix: &[u8]) -> Result<BTreeSet<Vec<u8>>, StateError> {
        let mut out = BTreeSet::new();
        for k in self.tree.scan_prefix(prefix).keys() {
            out.insert(k?.to_vec());
        }
        for (k, v) in self.pending.range(prefix.to_vec()..) {
            if !k.starts_with(prefix) {
                break;
            }
            match v {
                Some(_) => out.insert(k.clone()),
                None => out.remove(k),
            };
        }
        Ok(out)
    }

    pub fn remove(&mut self, key: Vec<u8>) {
        self.pending.insert(key, None);
    }

    /// Keys this batch will write or delete.
    pub fn pending_keys(&self) -> impl Iterator<Item = &[u8]> {
        self.pending.keys().map(|k| k.as_slice())
    }

    /// Turns the pending writes into one sled batch (atomic within the tree).
    pub fn into_batch(self) -> sled::Batch {
        let mut batch = sled::Batch::default();
        for (k, v) in self.pending {
            match v {
                Some(v) => batch.insert(k, v),
                None => batch.remove(k),
            }
        }
        batch
    }
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

/// Applies one normal entry. Returns one outcome per command. `index` is the entry's log index,
/// recorded in events so subscribers can resume.
pub fn apply_request(
    kv: &mut Overlay<'_>,
    req: &Request,
    index: u64,
    events: &mut Vec<Event>,
) -> Result<Vec<Outcome>, StateError> {
    if req.version > COMMAND_VERSION {
        return Ok(req
            .commands
            .iter()
            .map(|_| Err(ApplyError::UnsupportedVersion(req.version)))
            .collect());
    }
    let active: u16 = kv.get(keys::ACTIVE_VERSION)?.unwrap_or(1);
    if req.version > active {
        kv.put(keys::ACTIVE_VERSION.to_vec(), &req.version)?;
    }
    // Server time never goes backwards, whatever the clock of the node that proposed.
    let last_ts: u64 = kv.get(keys::LAST_TS)?.unwrap_or(0);
    let ts = req.ts_ms.max(last_ts);
    if ts != last_ts {
        kv.put(keys::LAST_TS.to_vec(), &ts)?;
    }
    let mut outcomes = Vec::with_capacity(req.commands.len());
    for cmd in req.commands.iter() {
        outcomes.push(apply_command(kv, cmd, ts, index, events)?);
    }
    Ok(outcomes)
}

fn apply_command(
    kv: &mut Overlay<'_>,
    cmd: &Command,
    ts: u64,
    index: u64,
    events: &mut Vec<Event>,
) -> Result<Outcome, StateError> {
    let mut cx = Ctx {
        kv,
        ts,
        index,
        events,
    };
    match cmd {
        Command::CreateUser {
            username,
            password_hash,
            role,
        } => {
            let key = keys::user(username);
            if cx.kv.get_raw(&key)?.is_some() {
                return Ok(Err(ApplyError::UserExists(username.clone())));
            }
            let user = UserRecord {
                username: username.clone(),
                password_hash: password_hash.clone(),
                role: *role,
                disabled: false,
                created_at_ms: ts,
            };
            cx.kv.put(key, &user)?;
            cx.events.push(Event {
                index,
                kind: EventKind::UserCreated {
                    username: username.clone(),
                },
            });
            Ok(Ok(Applied::User(user)))
        }
        Command::CreateSession {
            token_hash,
            username,
            ttl_ms,
        } => {
            let Some(user) = cx.kv.get::<UserRecord>(&keys::user(username))? else {
                return Ok(Err(ApplyError::UnknownUser(username.clone())));
            };
            if user.disabled {
                return Ok(Err(ApplyError::UserDisabled(username.clone())));
            }
            let session = SessionRecord {
                token_hash: token_hash.clone(),
                username: username.clone(),
                created_at_ms: ts,
                expires_at_ms: ts.saturating_add(*ttl_ms),
            };
            cx.kv.put(keys::session(token_hash), &session)?;
            // A session is only created after a correct password: the throttle starts over.
            cx.kv.remove(keys::login_throttle(username));
            Ok(Ok(Applied::Session(session)))
        }
        Command::RevokeSession { token_hash } => {
            let key = keys::session(token_hash);
            let existed = cx.kv.get_raw(&key)?.is_some();
            if existed {
                cx.kv.remove(key);
                cx.events.push(Event {
                    index,
                    kind: EventKind::SessionRevoked {
                        token_hash: token_hash.clone(),
                    },
                });
            }
            Ok(Ok(Applied::SessionRevoked { existed }))
        }
        Command::CreateChannel { name, creator } => {
            // Version 1 wire result: the full channel record.
            match chat::create_channel(&mut cx, name, creator, ChannelKind::Public, "", "", &[])? {
                Ok(_) => match channel_view(cx.kv, name)? {
                    Some(ch) => Ok(Ok(Applied::Channel(ch))),
                    None => Ok(Err(ApplyError::ChannelNotFound(name.clone()))),
                },
                Err(e) => Ok(Err(e)),
            }
        }
        Command::JoinChannel { name, username } => {
            match chat::add_member(&mut cx, name, username, username)? {
                Ok(_) => match channel_view(cx.kv, name)? {
                    Some(ch) => Ok(Ok(Applied::Channel(ch))),
                    None => Ok(Err(ApplyError::ChannelNotFound(name.clone()))),
                },
                Err(e) => Ok(Err(e)),
            }
        }
        Command::PostMessage {
            channel,
            author,
            body,
            client_msg_id,
        } => {
            let (outcome, message) =
                chat::post_message(&mut cx, channel, author, body, client_msg_id, None)?;
            match (outcome, message) {
                (Ok(Applied::MessageChanged { duplicate, .. }), Some(message)) => {
                    Ok(Ok(Applied::Message { message, duplicate }))
                }
                (Err(e), _) => Ok(Err(e)),
                (Ok(other), _) => Ok(Ok(other)),
            }
        }
        Command::CreateChannelV2 {
            name,
            creator,
            kind,
            title,
            topic,
            members,
        } => chat::create_channel(&mut cx, name, creator, *kind, title, topic, members),
        Command::UpdateChannel {
            channel,
            by,
            title,
            topic,
            archived,
        } => chat::update_channel(
            &mut cx,
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
        } => chat::add_member(&mut cx, channel, username, by),
        Command::RemoveMember {
            channel,
            username,
            by,
        } => chat::remove_member(&mut cx, channel, username, by),
        Command::PostMessageV2 {
            channel,
            author,
            body,
            client_msg_id,
            thread_root,
        } => Ok(chat::post_message(&mut cx, channel, author, body, client_msg_id, *thread_root)?.0),
        Command::EditMessage {
            channel,
            seq,
            by,
            body,
        } => chat::edit_message(&mut cx, channel, *seq, by, body),
        Command::DeleteMessage { channel, seq, by } => {
            chat::delete_message(&mut cx, channel, *seq, by)
        }
        Command::SetReaction {
            channel,
            seq,
            user,
            emoji,
            add,
        } => chat::set_reaction(&mut cx, channel, *seq, user, emoji, *add),
        Command::SetPinned {
            channel,
            seq,
            by,
            pinned,
        } => chat::set_pinned(&mut cx, channel, *seq, by, *pinned),
        Command::MarkRead {
            channel,
            username,
            seq,
        } => chat::mark_read(&mut cx, channel, username, *seq),
        Command::UpdateUser {
            username,
            by,
            disabled,
            role,
            display_name,
        } => accounts::update_user(
            &mut cx,
            username,
            by,
            *disabled,
            *role,
            display_name.as_deref(),
        ),
        Command::SetPassword {
            username,
            password_hash,
            keep_session,
        } => accounts::set_password(&mut cx, username, password_hash, keep_session.as_deref()),
        Command::LoginAttempt { username } => accounts::login_attempt(&mut cx, username),
        Command::SetDraining { node_id, draining } => {
            dns_apply::set_draining(&mut cx, *node_id, *draining)
        }
        Command::PutDnsRecord { record } => dns_apply::put_dns_record(&mut cx, record),
        Command::RemoveDnsRecords { name, rtype, data } => {
            dns_apply::remove_dns_records(&mut cx, name, *rtype, data.as_ref())
        }
        Command::CaUpdate { expect, state } => ca::ca_update(&mut cx, *expect, state),
        Command::CreateJoinToken {
            id,
            secret_hash,
            expires_ms,
            by,
        } => join::create(&mut cx, id, secret_hash, *expires_ms, by),
        Command::UseJoinToken {
            id,
            secret_hash,
            node_id,
            api_addr,
            cluster_addr,
        } => join::use_token(
            &mut cx,
            id,
            secret_hash,
            *node_id,
            (api_addr.as_str(), cluster_addr.as_str()),
        ),
    }
}

/// What every apply test needs: a throwaway tree and "apply these commands as one entry".
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub(crate) mod test_apply {
    use super::*;

    pub(crate) fn tree() -> sled::Tree {
        let db = sled::Config::new().temporary(true).open().unwrap();
        db.open_tree("sm").unwrap()
    }

    /// Applies `commands` as one log entry proposed at `ts_ms` and commits the batch.
    pub(crate) fn run(tree: &sled::Tree, ts_ms: u64, commands: Vec<Command>) -> Vec<Outcome> {
        let mut kv = Overlay::new(tree);
        let mut events = Vec::new();
        let req = Request {
            version: COMMAND_VERSION,
            ts_ms,
            commands: commands.into(),
        };
        let out = apply_request(&mut kv, &req, 1, &mut events).unwrap();
        tree.apply_batch(kv.into_batch()).unwrap();
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::test_apply::{run, tree};
    use super::*;
    use crate::command::Role;

    fn setup(tree: &sled::Tree) {
        run(
            tree,
            10,
            vec![
                Command::CreateUser {
                    username: "alice".into(),
                    password_hash: "h".into(),
                    role: Role::Admin,
                },
                Command::CreateChannel {
                    name: "general".into(),
                    creator: "alice".into(),
                },
            ],
        );
    }

    fn post(id: &str, body: &str) -> Command {
        Command::PostMessage {
            channel: "general".into(),
            author: "alice".into(),
            body: body.into(),
            client_msg_id: id.into(),
        }
    }

    #[test]
    fn sequences_are_gap_free_within_one_batch_and_across_batches() {
        let t = tree();
        setup(&t);
        let out = run(&t, 20, vec![post("a", "1"), post("b", "2")]);
        let out2 = run(&t, 30, vec![post("c", "3")]);
        let seqs: Vec<u64> = out
            .iter()
            .chain(out2.iter())
            .map(|o| match o {
                Ok(Applied::Message { message, .. }) => message.seq,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(seqs, vec![1, 2, 3]);
    }

    #[test]
    fn retried_post_returns_original_and_writes_nothing() {
        let t = tree();
        setup(&t);
        run(&t, 20, vec![post("a", "first")]);
        let out = run(&t, 25, vec![post("a", "changed body"), post("a", "again")]);
        for o in out {
            match o {
                Ok(Applied::Message { message, duplicate }) => {
                    assert!(duplicate);
                    assert_eq!(message.seq, 1);
                    assert_eq!(message.body, "first");
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        let ch = channel_view(&Overlay::new(&t), "general").unwrap().unwrap();
        assert_eq!(ch.last_seq, 1);
    }

    #[test]
    fn timestamps_never_go_backwards() {
        let t = tree();
        setup(&t);
        let out = run(&t, 5, vec![post("a", "x")]);
        match &out[0] {
            Ok(Applied::Message { message, .. }) => assert_eq!(message.ts_ms, 10),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn rules_refuse_without_writing() {
        let t = tree();
        setup(&t);
        let before: Vec<_> = t.iter().collect();
        let out = run(
            &t,
            20,
            vec![
                Command::CreateUser {
                    username: "alice".into(),
                    password_hash: "h2".into(),
                    role: Role::Member,
                },
                Command::CreateChannel {
                    name: "general".into(),
                    creator: "alice".into(),
                },
                Command::PostMessage {
                    channel: "nope".into(),
                    author: "alice".into(),
                    body: "x".into(),
                    client_msg_id: "z".into(),
                },
                Command::JoinChannel {
                    name: "general".into(),
                    username: "ghost".into(),
                },
            ],
        );
        assert_eq!(out[0], Err(ApplyError::UserExists("alice".into())));
        assert_eq!(out[1], Err(ApplyError::ChannelExists("general".into())));
        assert_eq!(out[2], Err(ApplyError::ChannelNotFound("nope".into())));
        assert_eq!(out[3], Err(ApplyError::UnknownUser("ghost".into())));
        // Only the clock key may have moved.
        let after: Vec<_> = t
            .iter()
            .filter(|kv| {
                kv.as_ref()
                    .map(|(k, _)| &k[..] != keys::LAST_TS)
                    .unwrap_or(true)
            })
            .collect();
        let before: Vec<_> = before
            .into_iter()
            .filter(|kv| {
                kv.as_ref()
                    .map(|(k, _)| &k[..] != keys::LAST_TS)
                    .unwrap_or(true)
            })
            .collect();
        assert_eq!(before.len(), after.len());
    }

    #[test]
    fn non_member_cannot_post() {
        let t = tree();
        setup(&t);
        run(
            &t,
            20,
            vec![Command::CreateUser {
                username: "bob".into(),
                password_hash: "h".into(),
                role: Role::Member,
            }],
        );
        let out = run(
            &t,
            21,
            vec![Command::PostMessage {
                channel: "general".into(),
                author: "bob".into(),
                body: "hi".into(),
                client_msg_id: "1".into(),
            }],
        );
        assert!(matches!(out[0], Err(ApplyError::NotMember { .. })));
    }

    fn user(name: &str, role: Role) -> Command {
        Command::CreateUser {
            username: name.into(),
            password_hash: "h".into(),
            role,
        }
    }

    fn reader(t: &sled::Tree) -> crate::storage::sm_store::StateReader {
        crate::storage::sm_store::StateReader::for_tree(t.clone())
    }

    fn post2(author: &str, id: &str, body: &str, root: Option<u64>) -> Command {
        Command::PostMessageV2 {
            channel: "general".into(),
            author: author.into(),
            body: body.into(),
            client_msg_id: id.into(),
            thread_root: root,
        }
    }

    #[test]
    fn dm_is_idempotent_and_closed() {
        let t = tree();
        setup(&t);
        run(
            &t,
            11,
            vec![user("bob", Role::Member), user("carol", Role::Member)],
        );
        let name = chat::dm_name(&["bob".into(), "alice".into()]);
        assert_eq!(name, "dm:alice:bob");
        let dm = |creator: &str| Command::CreateChannelV2 {
            name: name.clone(),
            creator: creator.into(),
            kind: ChannelKind::Direct,
            title: String::new(),
            topic: String::new(),
            members: vec!["alice".into(), "bob".into()],
        };
        let out = run(&t, 12, vec![dm("alice"), dm("bob")]);
        assert!(out.iter().all(|o| o.is_ok()), "{out:?}");
        let out = run(
            &t,
            13,
            vec![Command::AddMember {
                channel: name.clone(),
                username: "carol".into(),
                by: "alice".into(),
            }],
        );
        assert!(matches!(out[0], Err(ApplyError::Forbidden(_))));
        let r = reader(&t);
        assert_eq!(r.can_read(&name, "carol").unwrap(), Some(false));
        assert_eq!(r.can_read(&name, "bob").unwrap(), Some(true));
        assert!(
            r.channels_for("carol")
                .unwrap()
                .iter()
                .all(|c| c.channel.name != name)
        );
    }

    #[test]
    fn edits_deletes_reactions_threads_and_events() {
        let t = tree();
        setup(&t);
        run(&t, 11, vec![user("bob", Role::Member)]);
        run(
            &t,
            12,
            vec![Command::AddMember {
                channel: "general".into(),
                username: "bob".into(),
                by: "bob".into(),
            }],
        );
        run(&t, 13, vec![post2("alice", "a1", "hi @bob", None)]);
        run(&t, 14, vec![post2("bob", "b1", "reply", Some(1))]);
        let out = run(
            &t,
            15,
            vec![
                Command::EditMessage {
                    channel: "general".into(),
                    seq: 1,
                    by: "bob".into(),
                    body: "hijack".into(),
                },
                Command::EditMessage {
                    channel: "general".into(),
                    seq: 1,
                    by: "alice".into(),
                    body: "hello @bob".into(),
                },
                Command::SetReaction {
                    channel: "general".into(),
                    seq: 1,
                    user: "bob".into(),
                    emoji: "👍".into(),
                    add: true,
                },
                Command::DeleteMessage {
                    channel: "general".into(),
                    seq: 2,
                    by: "alice".into(),
                },
            ],
        );
        assert!(matches!(out[0], Err(ApplyError::Forbidden(_))));
        assert!(out[1].is_ok() && out[2].is_ok());
        // alice is an admin: she may delete bob's reply.
        assert!(out[3].is_ok(), "{:?}", out[3]);
        let r = reader(&t);
        let m1 = r.message_view("general", 1).unwrap().unwrap();
        assert_eq!(m1.body, "hello @bob");
        assert!(m1.edited_at_ms.is_some());
        assert_eq!(m1.reply_count, 1);
        assert_eq!(m1.reactions["👍"].len(), 1);
        let m2 = r.message_view("general", 2).unwrap().unwrap();
        assert!(m2.deleted && m2.body.is_empty());
        assert_eq!(m2.thread_root, Some(1));
        // Every change got the next ev: members alice, bob, post, reply, edit, reaction, delete.
        let evs = r.events_after("general", 0, 100).unwrap();
        let numbers: Vec<u64> = evs.iter().map(|(e, _)| *e).collect();
        assert_eq!(numbers, (1..=7).collect::<Vec<_>>());
        // Bob was mentioned once; reading up to seq 1 clears it.
        assert_eq!(
            r.read_state("bob", "general").unwrap().mentions,
            0,
            "bob posted seq 2, which marks it read"
        );
        assert_eq!(r.read_state("alice", "general").unwrap().unread, 1);
    }

    #[test]
    fn read_markers_only_move_forward_and_clear_mentions() {
        let t = tree();
        setup(&t);
        run(&t, 11, vec![user("bob", Role::Member)]);
        run(
            &t,
            12,
            vec![Command::AddMember {
                channel: "general".into(),
                username: "bob".into(),
                by: "bob".into(),
            }],
        );
        run(
            &t,
            13,
            vec![
                post2("alice", "a1", "@bob one", None),
                post2("alice", "a2", "@channel two", None),
            ],
        );
        let r = reader(&t);
        let rs = r.read_state("bob", "general").unwrap();
        assert_eq!((rs.unread, rs.mentions), (2, 2));
        let mark = |seq| Command::MarkRead {
            channel: "general".into(),
            username: "bob".into(),
            seq,
        };
        run(&t, 14, vec![mark(1)]);
        let rs = r.read_state("bob", "general").unwrap();
        assert_eq!((rs.last_read, rs.unread, rs.mentions), (1, 1, 1));
        run(&t, 15, vec![mark(0)]);
        assert_eq!(r.read_state("bob", "general").unwrap().last_read, 1);
    }

    #[test]
    fn login_throttle_backs_off_and_resets() {
        let t = tree();
        setup(&t);
        let attempt = || Command::LoginAttempt {
            username: "alice".into(),
        };
        let allowed = |o: &Outcome| matches!(o, Ok(Applied::LoginAttempt { allowed: true, .. }));
        for i in 0..5 {
            assert!(allowed(&run(&t, 100 + i, vec![attempt()])[0]));
        }
        // Sixth at once: refused, retry after the 1 s base backoff.
        let out = run(&t, 105, vec![attempt()]);
        assert!(matches!(
            out[0],
            Ok(Applied::LoginAttempt { allowed: false, retry_after_ms }) if retry_after_ms == 999
        ));
        assert!(allowed(&run(&t, 1104, vec![attempt()])[0]));
        // Next one needs 2 s.
        assert!(!allowed(&run(&t, 2000, vec![attempt()])[0]));
        run(
            &t,
            3200,
            vec![Command::CreateSession {
                token_hash: "x".into(),
                username: "alice".into(),
                ttl_ms: 1000,
            }],
        );
        assert!(allowed(&run(&t, 3201, vec![attempt()])[0]));
        // Unknown users leave nothing behind.
        run(
            &t,
            3300,
            vec![Command::LoginAttempt {
                username: "ghost".into(),
            }],
        );
        assert!(t.get(keys::login_throttle("ghost")).unwrap().is_none());
    }

    #[test]
    fn disabling_revokes_sessions_and_only_admins_may() {
        let t = tree();
        setup(&t);
        run(&t, 11, vec![user("bob", Role::Member)]);
        run(
            &t,
            12,
            vec![Command::CreateSession {
                token_hash: "bobtoken".into(),
                username: "bob".into(),
                ttl_ms: 10_000,
            }],
        );
        let disable = |by: &str| Command::UpdateUser {
            username: "bob".into(),
            by: by.into(),
            disabled: Some(true),
            role: None,
            display_name: None,
        };
        let out = run(&t, 13, vec![disable("bob")]);
        assert!(matches!(out[0], Err(ApplyError::Forbidden(_))));
        let mut kv = Overlay::new(&t);
        let mut events = Vec::new();
        let req = Request {
            version: COMMAND_VERSION,
            ts_ms: 14,
            commands: vec![disable("alice")].into(),
        };
        apply_request(&mut kv, &req, 9, &mut events).unwrap();
        t.apply_batch(kv.into_batch()).unwrap();
        assert!(events.iter().any(|e| matches!(&e.kind, EventKind::SessionRevoked { token_hash } if token_hash == "bobtoken")));
        assert!(reader(&t).session("bobtoken").unwrap().is_none());
        assert_eq!(reader(&t).active_version().unwrap(), COMMAND_VERSION);
    }
}
