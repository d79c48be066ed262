//! Typed local reads of the applied state, for the API layer.
//!
//! Owns the read side of the key layout in `keys.rs`. Reads are served from this node's state
//! as applied so far; callers that need read-your-writes wait on an index first
//! (`ClusterNode::wait_applied`). Must never write.

use std::collections::BTreeSet;

use crate::command::{
    ChannelEvent, ChannelKind, ChannelMeta, FileRecord, LoginThrottle, MessageExtra, MessageRecord,
    SessionInfo, SessionRecord, UserExtra, UserRecord,
};
use crate::state::chat;
use crate::state::dns_records::DnsRecord;
use crate::state::keys;
use crate::state::views::{
    ChannelSummary, ChannelView, FileView, MessageView, ReadState, UserView,
};
use crate::state::{Overlay, StateError};
use crate::storage::sm_store::StateReader;
use crate::types::NodeId;

fn decode<T: serde::de::DeserializeOwned>(key: &[u8], value: &[u8]) -> Result<T, StateError> {
    bincode::deserialize(value).map_err(|source| StateError::Decode {
        key: String::from_utf8_lossy(key).into_owned(),
        source,
    })
}

impl StateReader {
    fn get<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StateError> {
        Overlay::new(self.tree()).get(key)
    }

    fn scan<T: serde::de::DeserializeOwned>(
        &self,
        prefix: &[u8],
        limit: usize,
    ) -> Result<Vec<T>, StateError> {
        let mut out = Vec::new();
        for kv in self.tree().scan_prefix(prefix).take(limit) {
            let (k, v) = kv?;
            out.push(decode(&k, &v)?);
        }
        Ok(out)
    }

    pub fn user(&self, username: &str) -> Result<Option<UserRecord>, StateError> {
        self.get(&keys::user(username))
    }

    pub fn users(&self) -> Result<Vec<UserRecord>, StateError> {
        self.scan(keys::USER_PREFIX, usize::MAX)
    }

    pub fn session(&self, token_hash: &str) -> Result<Option<SessionRecord>, StateError> {
        self.get(&keys::session(token_hash))
    }

    /// What version 6 stores about a session (`None` for older sessions).
    pub fn session_info(&self, token_hash: &str) -> Result<Option<SessionInfo>, StateError> {
        self.get(&keys::session_info(token_hash))
    }

    /// The sessions of `username` (from the per-user index, complete once version 6 is active),
    /// in token-hash order.
    pub fn user_sessions(
        &self,
        username: &str,
    ) -> Result<Vec<(SessionRecord, Option<SessionInfo>)>, StateError> {
        let prefix = keys::user_sessions_prefix(username);
        let mut out = Vec::new();
        for k in self.tree().scan_prefix(&prefix).keys() {
            let k = k?;
            let Some(th) = k
                .get(prefix.len()..)
                .and_then(|t| std::str::from_utf8(t).ok())
            else {
                continue;
            };
            if let Some(rec) = self.session(th)? {
                let info = self.session_info(th)?;
                out.push((rec, info));
            }
        }
        Ok(out)
    }

    /// Whether `username` must change their password before doing anything else.
    pub fn must_change_password(&self, username: &str) -> Result<bool, StateError> {
        Ok(self
            .tree()
            .contains_key(keys::must_change_password(username))?)
    }

    /// Whether `username` is a member of `channel` (one key lookup, no member list decoded).
    pub fn is_member(&self, channel: &str, username: &str) -> Result<bool, StateError> {
        Ok(self.tree().contains_key(keys::member(channel, username))?)
    }

    pub fn channel_exists(&self, channel: &str) -> Result<bool, StateError> {
        Ok(self.tree().contains_key(keys::channel(channel))?)
    }

    pub fn last_seq(&self, channel: &str) -> Result<Option<u64>, StateError> {
        self.get(&keys::channel_seq(channel))
    }

    /// Messages of `channel` with `seq > after`, ascending, at most `limit`.
    pub fn messages_after(
        &self,
        channel: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<MessageRecord>, StateError> {
        let start = keys::message(channel, after.saturating_add(1));
        let prefix = keys::message_prefix(channel);
        let mut out = Vec::new();
        for kv in self.tree().range(start..).take(limit) {
            let (k, v) = kv?;
            if !k.starts_with(&prefix) {
                break;
            }
            out.push(decode(&k, &v)?);
        }
        Ok(out)
    }

    // ---- version 2 read models ----

    fn seq_from_key(prefix_len: usize, k: &[u8]) -> Option<u64> {
        let tail: [u8; 8] = k.get(prefix_len..prefix_len + 8)?.try_into().ok()?;
        Some(u64::from_be_bytes(tail))
    }

    fn view_of(&self, msg: MessageRecord) -> Result<MessageView, StateError> {
        let mx: MessageExtra = self
            .get(&keys::message_extra(&msg.channel, msg.seq))?
            .unwrap_or_default();
        let attachments = if mx.deleted {
            Vec::new()
        } else {
            self.message_files(&msg.channel, msg.seq)?
                .iter()
                .filter(|f| f.deleted_ms.is_none())
                .map(FileView::of)
                .collect()
        };
        Ok(MessageView {
            channel: msg.channel,
            seq: msg.seq,
            author: msg.author,
            body: msg.body,
            ts_ms: msg.ts_ms,
            client_msg_id: msg.client_msg_id,
            thread_root: mx.thread_root,
            reply_count: mx.reply_count,
            edited_at_ms: mx.edited_at_ms,
            deleted: mx.deleted,
            pinned: mx.pinned,
            reactions: mx.reactions,
            mentions: mx.mentions,
            channel_mention: mx.channel_mention,
            attachments,
        })
    }

    // ---- version 7: files ----

    /// A file record, tombstones included.
    pub fn file(&self, id: &str) -> Result<Option<FileRecord>, StateError> {
        if !crate::state::files::is_file_id(id) {
            return Ok(None);
        }
        self.get(&keys::file(id))
    }

    /// The file records message `seq` carries, in order.
    pub fn message_files(&self, channel: &str, seq: u64) -> Result<Vec<FileRecord>, StateError> {
        let ids: Vec<String> = self
            .get(&keys::message_files(channel, seq))?
            .unwrap_or_default();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(f) = self.get::<FileRecord>(&keys::file(&id))? {
                out.push(f);
            }
        }
        Ok(out)
    }

    /// Files added by entries at log index `from` or later, oldest first, at most `limit`,
    /// with the index that added each (the background fetcher's cursor).
    pub fn files_added_from(
        &self,
        from: u64,
        limit: usize,
    ) -> Result<Vec<(u64, FileRecord)>, StateError> {
        let start = keys::file_index(from, "");
        let mut out = Vec::new();
        for k in self.tree().range(start..).keys() {
            let k = k?;
            let Some((index, id)) = keys::parse_file_index(&k) else {
                break;
            };
            if let Some(f) = self.get::<FileRecord>(&keys::file(&id))? {
                out.push((index, f));
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Whether a live (not deleted) file references blob `sha`.
    pub fn blob_referenced(&self, sha: &str) -> Result<bool, StateError> {
        Ok(self
            .tree()
            .scan_prefix(keys::blob_ref_prefix(sha))
            .next()
            .transpose()?
            .is_some())
    }

    /// When blob `sha` lost its last reference (entry time, ms), if it ever had one.
    pub fn blob_released(&self, sha: &str) -> Result<Option<u64>, StateError> {
        self.get(&keys::blob_released(sha))
    }

    pub fn message_view(&self, channel: &str, seq: u64) -> Result<Option<MessageView>, StateError> {
        match self.get::<MessageRecord>(&keys::message(channel, seq))? {
            Some(m) => self.view_of(m).map(Some),
            None => Ok(None),
        }
    }

    /// Messages with `seq > after`, oldest first, at most `limit`.
    pub fn message_views_after(
        &self,
        channel: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<MessageView>, StateError> {
        self.messages_after(channel, after, limit)?
            .into_iter()
            .map(|m| self.view_of(m))
            .collect()
    }

    /// The `limit` messages just below `before` (all when `None`), oldest first, and whether
    /// older ones exist.
    pub fn message_views_before(
        &self,
        channel: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<(Vec<MessageView>, bool), StateError> {
        let prefix = keys::message_prefix(channel);
        let end = keys::message(channel, before.unwrap_or(u64::MAX));
        let mut out = Vec::new();
        let mut more = false;
        for kv in self.tree().range(prefix.clone()..end).rev() {
            let (k, v) = kv?;
            if out.len() == limit {
                more = true;
                break;
            }
            let m: MessageRecord = decode(&k, &v)?;
            out.push(self.view_of(m)?);
        }
        out.reverse();
        Ok((out, more))
    }

    /// Views of the messages whose seqs end the keys under `prefix` (an index such as pins or
    /// a thread's replies), in key order.
    fn views_indexed_by(
        &self,
        channel: &str,
        prefix: &[u8],
    ) -> Result<Vec<MessageView>, StateError> {
        let mut out = Vec::new();
        for k in self.tree().scan_prefix(prefix).keys() {
            let k = k?;
            if let Some(seq) = Self::seq_from_key(prefix.len(), &k)
                && let Some(v) = self.message_view(channel, seq)?
            {
                out.push(v);
            }
        }
        Ok(out)
    }

    pub fn thread(&self, channel: &str, root: u64) -> Result<Vec<MessageView>, StateError> {
        self.views_indexed_by(channel, &keys::thread_prefix(channel, root))
    }

    pub fn pins(&self, channel: &str) -> Result<Vec<MessageView>, StateError> {
        self.views_indexed_by(channel, &keys::pin_prefix(channel))
    }

    pub fn last_ev(&self, channel: &str) -> Result<u64, StateError> {
        Ok(self.get::<u64>(&keys::channel_ev(channel))?.unwrap_or(0))
    }

    /// Channel events with `ev > after`, in order, at most `limit`.
    pub fn events_after(
        &self,
        channel: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, ChannelEvent)>, StateError> {
        let prefix = keys::event_prefix(channel);
        let start = keys::event(channel, after.saturating_add(1));
        let mut out = Vec::new();
        for kv in self.tree().range(start..).take(limit) {
            let (k, v) = kv?;
            if !k.starts_with(&prefix) {
                break;
            }
            if let Some(ev) = Self::seq_from_key(prefix.len(), &k) {
                out.push((ev, decode(&k, &v)?));
            }
        }
        Ok(out)
    }

    fn view_from_meta(&self, meta: ChannelMeta) -> Result<ChannelView, StateError> {
        let extra = chat::extra(&Overlay::new(self.tree()), &meta.name)?;
        let last_ev = self.last_ev(&meta.name)?;
        let rec = chat::channel_from_meta(&Overlay::new(self.tree()), meta)?;
        Ok(ChannelView {
            name: rec.name,
            title: extra.title,
            topic: extra.topic,
            kind: extra.kind,
            archived: extra.archived,
            created_by: rec.created_by,
            created_at_ms: rec.created_at_ms,
            members: rec.members,
            last_seq: rec.last_seq,
            last_ev,
        })
    }

    pub fn channel_view(&self, name: &str) -> Result<Option<ChannelView>, StateError> {
        match self.get::<ChannelMeta>(&keys::channel(name))? {
            Some(meta) => self.view_from_meta(meta).map(Some),
            None => Ok(None),
        }
    }

    pub fn channel_kind(&self, name: &str) -> Result<Option<ChannelKind>, StateError> {
        if !self.channel_exists(name)? {
            return Ok(None);
        }
        Ok(Some(chat::extra(&Overlay::new(self.tree()), name)?.kind))
    }

    /// Whether `user` may read `channel`: anyone for public channels, members otherwise.
    /// `None` when the channel does not exist.
    pub fn can_read(&self, channel: &str, user: &str) -> Result<Option<bool>, StateError> {
        Ok(match self.channel_kind(channel)? {
            None => None,
            Some(ChannelKind::Public) => Some(true),
            Some(_) => Some(self.is_member(channel, user)?),
        })
    }

    /// Unread messages are counted up to this many; clients show "999+".
    pub const UNREAD_CAP: u64 = 999;

    pub fn read_state(&self, user: &str, channel: &str) -> Result<ReadState, StateError> {
        let last_read = self
            .get::<u64>(&keys::read_marker(user, channel))?
            .unwrap_or(0);
        let mut unread = 0;
        let prefix = keys::message_prefix(channel);
        for kv in self
            .tree()
            .range(keys::message(channel, last_read.saturating_add(1))..)
        {
            let (k, v) = kv?;
            if !k.starts_with(&prefix) || unread >= Self::UNREAD_CAP {
                break;
            }
            let m: MessageRecord = decode(&k, &v)?;
            if m.author != user {
                unread += 1;
            }
        }
        let mprefix = keys::mention_prefix(user, channel);
        let mut mentions = 0;
        for k in self.tree().scan_prefix(&mprefix).keys() {
            let k = k?;
            if Self::seq_from_key(mprefix.len(), &k).is_some_and(|s| s > last_read) {
                mentions += 1;
            }
        }
        Ok(ReadState {
            last_read,
            unread,
            mentions,
        })
    }

    /// Whether `user` muted `channel` (version 7).
    pub fn is_muted(&self, user: &str, channel: &str) -> Result<bool, StateError> {
        Ok(self
            .tree()
            .contains_key(keys::channel_muted(user, channel))?)
    }

    /// Public channels and every channel `user` is a member of, sorted by name.
    pub fn channels_for(&self, user: &str) -> Result<Vec<ChannelSummary>, StateError> {
        let metas: Vec<ChannelMeta> = self.scan(keys::CHANNEL_PREFIX, usize::MAX)?;
        let mut out = Vec::new();
        for meta in metas {
            // Decide visibility from two key lookups before assembling the view: the workspace
            // holds everyone's DMs and private channels, and the caller sees few of them.
            let member = self.is_member(&meta.name, user)?;
            if !member && self.channel_kind(&meta.name)? != Some(ChannelKind::Public) {
                continue;
            }
            let view = self.view_from_meta(meta)?;
            let rs = if member {
                self.read_state(user, &view.name)?
            } else {
                ReadState {
                    last_read: 0,
                    unread: 0,
                    mentions: 0,
                }
            };
            let muted = member && self.is_muted(user, &view.name)?;
            out.push(ChannelSummary {
                channel: view,
                member,
                last_read: rs.last_read,
                unread: rs.unread,
                mentions: rs.mentions,
                muted,
            });
        }
        Ok(out)
    }

    fn user_view_of(&self, u: UserRecord) -> Result<UserView, StateError> {
        let extra: Option<UserExtra> = self.get(&keys::user_extra(&u.username))?;
        let display_name = extra
            .map(|e| e.display_name)
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| u.username.clone());
        Ok(UserView {
            username: u.username,
            display_name,
            role: u.role,
            disabled: u.disabled,
        })
    }

    pub fn user_view(&self, username: &str) -> Result<Option<UserView>, StateError> {
        match self.user(username)? {
            Some(u) => self.user_view_of(u).map(Some),
            None => Ok(None),
        }
    }

    pub fn user_views(&self) -> Result<Vec<UserView>, StateError> {
        self.users()?
            .into_iter()
            .map(|u| self.user_view_of(u))
            .collect()
    }

    /// Highest command-set version the cluster has committed an entry of (1 before any).
    pub fn active_version(&self) -> Result<u16, StateError> {
        Ok(self.get::<u16>(keys::ACTIVE_VERSION)?.unwrap_or(1))
    }

    pub fn login_throttle(&self, username: &str) -> Result<LoginThrottle, StateError> {
        Ok(self
            .get::<LoginThrottle>(&keys::login_throttle(username))?
            .unwrap_or_default())
    }

    // ---- version 3 read models ----

    /// Every static DNS record, sorted by name, then type, then data. Key order is not that
    /// order ('.' sorts before the '/' that ends a name), so they are sorted here.
    pub fn dns_records(&self) -> Result<Vec<DnsRecord>, StateError> {
        let mut records: Vec<DnsRecord> = self.scan(keys::DNS_PREFIX, usize::MAX)?;
        records.sort_by(|a, b| (&a.name, a.rtype(), &a.data).cmp(&(&b.name, b.rtype(), &b.data)));
        Ok(records)
    }

    /// A join token by id (used or not), if stored.
    pub fn join_token(
        &self,
        id: &str,
    ) -> Result<Option<crate::command::JoinTokenRecord>, StateError> {
        self.get(&keys::join_token(id))
    }

    /// Every stored join token, by id.
    pub fn join_tokens(&self) -> Result<Vec<crate::command::JoinTokenRecord>, StateError> {
        self.scan(keys::JOIN_TOKEN_PREFIX, usize::MAX)
    }

    /// Ids of the members an admin marked as draining.
    pub fn draining_nodes(&self) -> Result<BTreeSet<NodeId>, StateError> {
        let mut out = BTreeSet::new();
        for k in self.tree().scan_prefix(keys::DRAIN_PREFIX).keys() {
            let k = k?;
            if let Some(id) = k
                .get(keys::DRAIN_PREFIX.len()..)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
            {
                out.insert(u64::from_be_bytes(id));
            }
        }
        Ok(out)
    }
}
