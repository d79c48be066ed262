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
    Applied, ApplyError, COMMAND_VERSION, ChannelMeta, ChannelRecord, Command, MessageRecord,
    Outcome, Request, SessionRecord, UserRecord,
};
use crate::event::{Event, EventKind};
use crate::keys;

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
    match cmd {
        Command::CreateUser {
            username,
            password_hash,
            role,
        } => {
            let key = keys::user(username);
            if kv.get_raw(&key)?.is_some() {
                return Ok(Err(ApplyError::UserExists(username.clone())));
            }
            let user = UserRecord {
                username: username.clone(),
                password_hash: password_hash.clone(),
                role: *role,
                disabled: false,
                created_at_ms: ts,
            };
            kv.put(key, &user)?;
            events.push(Event {
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
            let Some(user) = kv.get::<UserRecord>(&keys::user(username))? else {
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
            kv.put(keys::session(token_hash), &session)?;
            Ok(Ok(Applied::Session(session)))
        }
        Command::RevokeSession { token_hash } => {
            let key = keys::session(token_hash);
            let existed = kv.get_raw(&key)?.is_some();
            if existed {
                kv.remove(key);
                events.push(Event {
                    index,
                    kind: EventKind::SessionRevoked {
                        token_hash: token_hash.clone(),
                    },
                });
            }
            Ok(Ok(Applied::SessionRevoked { existed }))
        }
        Command::CreateChannel { name, creator } => {
            let key = keys::channel(name);
            if kv.exists(&key)? {
                return Ok(Err(ApplyError::ChannelExists(name.clone())));
            }
            if !kv.exists(&keys::user(creator))? {
                return Ok(Err(ApplyError::UnknownUser(creator.clone())));
            }
            let meta = ChannelMeta {
                name: name.clone(),
                created_by: creator.clone(),
                created_at_ms: ts,
            };
            kv.put(key, &meta)?;
            kv.put(keys::member(name, creator), &())?;
            kv.put(keys::channel_seq(name), &0u64)?;
            let channel = ChannelRecord {
                name: name.clone(),
                created_by: creator.clone(),
                created_at_ms: ts,
                members: BTreeSet::from([creator.clone()]),
                last_seq: 0,
            };
            events.push(Event {
                index,
                kind: EventKind::ChannelCreated(channel.clone()),
            });
            Ok(Ok(Applied::Channel(channel)))
        }
        Command::JoinChannel { name, username } => {
            if !kv.exists(&keys::channel(name))? {
                return Ok(Err(ApplyError::ChannelNotFound(name.clone())));
            }
            if !kv.exists(&keys::user(username))? {
                return Ok(Err(ApplyError::UnknownUser(username.clone())));
            }
            let member_key = keys::member(name, username);
            if !kv.exists(&member_key)? {
                kv.put(member_key, &())?;
                events.push(Event {
                    index,
                    kind: EventKind::MemberJoined {
                        channel: name.clone(),
                        username: username.clone(),
                    },
                });
            }
            match channel_view(kv, name)? {
                Some(ch) => Ok(Ok(Applied::Channel(ch))),
                None => Ok(Err(ApplyError::ChannelNotFound(name.clone()))),
            }
        }
        Command::PostMessage {
            channel,
            author,
            body,
            client_msg_id,
        } => {
            // Idempotency first: a retry of an already applied post returns the original even if
            // the author has since left the channel.
            let dedup_key = keys::dedup(author, client_msg_id);
            if let Some((orig_channel, seq)) = kv.get::<(String, u64)>(&dedup_key)?
                && let Some(message) =
                    kv.get::<MessageRecord>(&keys::message(&orig_channel, seq))?
            {
                return Ok(Ok(Applied::Message {
                    message,
                    duplicate: true,
                }));
            }
            let seq_key = keys::channel_seq(channel);
            let Some(last_seq) = kv.get::<u64>(&seq_key)? else {
                return Ok(Err(ApplyError::ChannelNotFound(channel.clone())));
            };
            if !kv.exists(&keys::member(channel, author))? {
                return Ok(Err(ApplyError::NotMember {
                    user: author.clone(),
                    channel: channel.clone(),
                }));
            }
            let message = MessageRecord {
                channel: channel.clone(),
                seq: last_seq + 1,
                author: author.clone(),
                body: body.clone(),
                ts_ms: ts,
                client_msg_id: client_msg_id.clone(),
            };
            kv.put(keys::message(channel, message.seq), &message)?;
            kv.put(dedup_key, &(channel.clone(), message.seq))?;
            // Within one entry the overlay coalesces these into a single write per channel.
            kv.put(seq_key, &message.seq)?;
            events.push(Event {
                index,
                kind: EventKind::MessagePosted(message.clone()),
            });
            Ok(Ok(Applied::Message {
                message,
                duplicate: false,
            }))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::command::Role;

    fn tree() -> sled::Tree {
        let db = sled::Config::new().temporary(true).open().unwrap();
        db.open_tree("sm").unwrap()
    }

    fn run(tree: &sled::Tree, ts: u64, commands: Vec<Command>) -> Vec<Outcome> {
        let mut kv = Overlay::new(tree);
        let mut events = Vec::new();
        let req = Request {
            version: COMMAND_VERSION,
            ts_ms: ts,
            commands: commands.into(),
        };
        let out = apply_request(&mut kv, &req, 1, &mut events).unwrap();
        tree.apply_batch(kv.into_batch()).unwrap();
        out
    }

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
}
