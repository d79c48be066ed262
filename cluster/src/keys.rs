//! Key layout of the state machine's sled tree. One tree with prefixes, so one `apply_batch`
//! covers a whole log entry (sled batches are atomic within one tree only).
//!
//! Owns the byte layout; must never be reordered: changing a prefix is a data migration.

pub const APPLIED: &[u8] = b"meta/applied";
pub const MEMBERSHIP: &[u8] = b"meta/membership";
pub const LAST_TS: &[u8] = b"meta/last_ts";
/// Present while a snapshot is being installed into the tree; if it is found on open, the tree
/// is incomplete and the snapshot file is restored again.
pub const INSTALLING: &[u8] = b"meta/installing";

pub fn user(username: &str) -> Vec<u8> {
    [b"u/".as_slice(), username.as_bytes()].concat()
}
pub const USER_PREFIX: &[u8] = b"u/";

pub fn session(token_hash: &str) -> Vec<u8> {
    [b"s/".as_slice(), token_hash.as_bytes()].concat()
}

/// Channel metadata (`ChannelMeta`): name, creator, creation time. Members and the sequence
/// counter live under their own keys so posting a message never decodes or rewrites a member
/// list (a channel may have thousands of members).
pub fn channel(name: &str) -> Vec<u8> {
    [b"c/".as_slice(), name.as_bytes()].concat()
}
pub const CHANNEL_PREFIX: &[u8] = b"c/";

/// Newest message sequence of a channel (u64).
pub fn channel_seq(name: &str) -> Vec<u8> {
    [b"q/".as_slice(), name.as_bytes()].concat()
}

/// One key per member: `k/<channel>/<username>` -> ().
pub fn member_prefix(channel: &str) -> Vec<u8> {
    [b"k/".as_slice(), channel.as_bytes(), b"/"].concat()
}
pub fn member(channel: &str, username: &str) -> Vec<u8> {
    [member_prefix(channel).as_slice(), username.as_bytes()].concat()
}

/// Channel names never contain '/', so `m/<name>/` is an unambiguous prefix; the big-endian
/// sequence makes sled's byte order the message order.
pub fn message_prefix(channel: &str) -> Vec<u8> {
    [b"m/".as_slice(), channel.as_bytes(), b"/"].concat()
}
pub fn message(channel: &str, seq: u64) -> Vec<u8> {
    let mut k = message_prefix(channel);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// Idempotency index: (author, client_msg_id) -> (channel, seq). Usernames never contain '/'.
pub fn dedup(author: &str, client_msg_id: &str) -> Vec<u8> {
    [
        b"d/".as_slice(),
        author.as_bytes(),
        b"/",
        client_msg_id.as_bytes(),
    ]
    .concat()
}
