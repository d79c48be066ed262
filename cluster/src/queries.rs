//! Typed local reads of the applied state, for the API layer.
//!
//! Owns the read side of the key layout in `keys.rs`. Reads are served from this node's state
//! as applied so far; callers that need read-your-writes wait on an index first
//! (`ClusterNode::wait_applied`). Must never write.

use crate::command::{ChannelMeta, ChannelRecord, MessageRecord, SessionRecord, UserRecord};
use crate::keys;
use crate::sm_store::StateReader;
use crate::state::{self, Overlay, StateError};

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

    pub fn channel(&self, name: &str) -> Result<Option<ChannelRecord>, StateError> {
        state::channel_view(&Overlay::new(self.tree()), name)
    }

    pub fn channels(&self) -> Result<Vec<ChannelRecord>, StateError> {
        let metas: Vec<ChannelMeta> = self.scan(keys::CHANNEL_PREFIX, usize::MAX)?;
        let kv = Overlay::new(self.tree());
        metas
            .into_iter()
            .map(|m| state::channel_from_meta(&kv, m))
            .collect()
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
}
