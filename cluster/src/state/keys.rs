//! Key layout of the state machine's sled tree. One tree with prefixes, so one apply gate
//! (`storage::state_tree`) covers a whole log entry.
//!
//! Owns the byte layout; must never be reordered: changing a prefix is a data migration.

pub const APPLIED: &[u8] = b"meta/applied";
pub const MEMBERSHIP: &[u8] = b"meta/membership";
pub const LAST_TS: &[u8] = b"meta/last_ts";
/// Highest command-set version of any applied entry (u16): once the cluster has committed an
/// entry of version N, every member understood N, and it stays activated.
pub const ACTIVE_VERSION: &[u8] = b"meta/active_version";
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

// ---- version 2 keys ----

/// `ChannelExtra` of a channel (absent for version 1 channels).
pub fn channel_extra(name: &str) -> Vec<u8> {
    [b"cx/".as_slice(), name.as_bytes()].concat()
}

/// `MessageExtra` of a message (absent for plain messages).
pub fn message_extra(channel: &str, seq: u64) -> Vec<u8> {
    let mut k = [b"mx/".as_slice(), channel.as_bytes(), b"/"].concat();
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// Newest channel event sequence (u64).
pub fn channel_ev(name: &str) -> Vec<u8> {
    [b"v/".as_slice(), name.as_bytes()].concat()
}

/// Channel event log: `e/<channel>/<ev be>` -> `ChannelEvent`.
pub fn event_prefix(channel: &str) -> Vec<u8> {
    [b"e/".as_slice(), channel.as_bytes(), b"/"].concat()
}
pub fn event(channel: &str, ev: u64) -> Vec<u8> {
    let mut k = event_prefix(channel);
    k.extend_from_slice(&ev.to_be_bytes());
    k
}

/// `UserExtra` of a user.
pub fn user_extra(username: &str) -> Vec<u8> {
    [b"ux/".as_slice(), username.as_bytes()].concat()
}

/// Login throttling state of a user.
pub fn login_throttle(username: &str) -> Vec<u8> {
    [b"lf/".as_slice(), username.as_bytes()].concat()
}

/// Read marker (message seq, u64) of a user in a channel.
pub fn read_marker(username: &str, channel: &str) -> Vec<u8> {
    [
        b"r/".as_slice(),
        username.as_bytes(),
        b"/",
        channel.as_bytes(),
    ]
    .concat()
}

/// Mention index: `x/<user>/<channel>/<seq be>` -> ().
pub fn mention_prefix(username: &str, channel: &str) -> Vec<u8> {
    [
        b"x/".as_slice(),
        username.as_bytes(),
        b"/",
        channel.as_bytes(),
        b"/",
    ]
    .concat()
}
pub fn mention(username: &str, channel: &str, seq: u64) -> Vec<u8> {
    let mut k = mention_prefix(username, channel);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// Pinned messages: `p/<channel>/<seq be>` -> ().
pub fn pin_prefix(channel: &str) -> Vec<u8> {
    [b"p/".as_slice(), channel.as_bytes(), b"/"].concat()
}
pub fn pin(channel: &str, seq: u64) -> Vec<u8> {
    let mut k = pin_prefix(channel);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// Thread replies: `t/<channel>/<root be>/<reply be>` -> ().
pub fn thread_prefix(channel: &str, root: u64) -> Vec<u8> {
    let mut k = [b"t/".as_slice(), channel.as_bytes(), b"/"].concat();
    k.extend_from_slice(&root.to_be_bytes());
    k
}
pub fn thread_reply(channel: &str, root: u64, reply: u64) -> Vec<u8> {
    let mut k = thread_prefix(channel, root);
    k.extend_from_slice(&reply.to_be_bytes());
    k
}

// ---- version 3 keys ----

/// Draining flag of a member: `nd/<node id be>` -> `true`. Absent means not draining.
pub const DRAIN_PREFIX: &[u8] = b"nd/";
pub fn draining(node_id: u64) -> Vec<u8> {
    let mut k = DRAIN_PREFIX.to_vec();
    k.extend_from_slice(&node_id.to_be_bytes());
    k
}

/// Static DNS records: `dr/<name>/<TYPE>/<bincode data>` -> `DnsRecord`. Record names never
/// contain '/' (see `dns_records::normalize_name`), so `dr/<name>/` holds exactly the records
/// at one name, which is what the CNAME rule needs to look at. The data's bincode encoding is
/// deterministic and distinct per value, so one key per (name, type, data).
pub const DNS_PREFIX: &[u8] = b"dr/";
pub fn dns_name_prefix(name: &str) -> Vec<u8> {
    [DNS_PREFIX, name.as_bytes(), b"/"].concat()
}
pub fn dns_type_prefix(name: &str, rtype: &str) -> Vec<u8> {
    [dns_name_prefix(name).as_slice(), rtype.as_bytes(), b"/"].concat()
}
pub fn dns_record(name: &str, rtype: &str, data: &[u8]) -> Vec<u8> {
    [dns_type_prefix(name, rtype).as_slice(), data].concat()
}

// ---- version 4 keys ----

/// The certificate authority's state: `(version u64, blob)`, see `state::ca`. One key: the CA
/// changes a few times a day, and one value keeps the compare-and-swap trivially atomic.
pub const CA_STATE: &[u8] = b"ca/state";
/// Log index of the entry that last changed `CA_STATE` (u64): a node that finds the root key
/// gone can tell whether its log may still hold entries written before (see `node::ca`).
pub const CA_INDEX: &[u8] = b"ca/index";

// ---- version 5 keys ----

/// Join tokens: `jt/<id>` -> `JoinTokenRecord`. Ids are lower-case hex, never '/'.
pub const JOIN_TOKEN_PREFIX: &[u8] = b"jt/";
pub fn join_token(id: &str) -> Vec<u8> {
    [JOIN_TOKEN_PREFIX, id.as_bytes()].concat()
}

// ---- version 6 keys: sessions and must-change passwords ----

/// `SessionInfo` of a session: `si/<token hash>`. Absent for sessions created before version 6.
pub fn session_info(token_hash: &str) -> Vec<u8> {
    [b"si/".as_slice(), token_hash.as_bytes()].concat()
}

/// Expiry index: `se/<deadline ms be>/<token hash>` -> (). The big-endian deadline makes sled's
/// order the expiry order, so purging reads from the front and stops at the first live one.
/// A session's key moves when a touch moves its idle deadline.
pub const SESSION_EXPIRY_PREFIX: &[u8] = b"se/";
pub fn session_expiry(deadline_ms: u64, token_hash: &str) -> Vec<u8> {
    let mut k = SESSION_EXPIRY_PREFIX.to_vec();
    k.extend_from_slice(&deadline_ms.to_be_bytes());
    k.push(b'/');
    k.extend_from_slice(token_hash.as_bytes());
    k
}
/// The deadline and token hash of an expiry index key.
pub fn parse_session_expiry(key: &[u8]) -> Option<(u64, String)> {
    let rest = key.strip_prefix(SESSION_EXPIRY_PREFIX)?;
    let deadline = u64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
    let th = std::str::from_utf8(rest.get(9..)?).ok()?;
    Some((deadline, th.to_owned()))
}

/// Sessions of a user: `su/<username>/<token hash>` -> (). Usernames never contain '/'.
pub fn user_sessions_prefix(username: &str) -> Vec<u8> {
    [b"su/".as_slice(), username.as_bytes(), b"/"].concat()
}
pub fn user_session(username: &str, token_hash: &str) -> Vec<u8> {
    [
        user_sessions_prefix(username).as_slice(),
        token_hash.as_bytes(),
    ]
    .concat()
}

/// Every prefix of a login session's keys (`s/`, `si/`, `se/`, `su/`): what a backup leaves out
/// unless asked to keep sessions. A new session key prefix must be added here.
pub const SESSION_PREFIXES: &[&[u8]] = &[b"s/", b"si/", SESSION_EXPIRY_PREFIX, b"su/"];

/// Must-change-password flag of a user: `mc/<username>` -> (). Absent: no change required.
pub fn must_change_password(username: &str) -> Vec<u8> {
    [b"mc/".as_slice(), username.as_bytes()].concat()
}

// ---- version 7 keys: file attachments (see `state::files`) ----

/// A file: `f/<id>` -> `FileRecord`. Ids are 32 lower-case hex characters.
pub const FILE_PREFIX: &[u8] = b"f/";
pub fn file(id: &str) -> Vec<u8> {
    [FILE_PREFIX, id.as_bytes()].concat()
}

/// The files a message carries: `mf/<channel>/<seq be>` -> `Vec<String>` (file ids, in order).
pub fn message_files(channel: &str, seq: u64) -> Vec<u8> {
    let mut k = [b"mf/".as_slice(), channel.as_bytes(), b"/"].concat();
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// Live references to a blob: `br/<sha256>/<file id>` -> (). A blob with none may be collected
/// once the grace period has passed (`blobs::gc`).
pub fn blob_ref_prefix(sha: &str) -> Vec<u8> {
    [b"br/".as_slice(), sha.as_bytes(), b"/"].concat()
}
pub fn blob_ref(sha: &str, file_id: &str) -> Vec<u8> {
    [blob_ref_prefix(sha).as_slice(), file_id.as_bytes()].concat()
}

/// When a blob lost its last live reference (entry time, ms): `bz/<sha256>` -> u64. Removed
/// when a new file references it again.
pub fn blob_released(sha: &str) -> Vec<u8> {
    [b"bz/".as_slice(), sha.as_bytes()].concat()
}

/// Files in the order they were added: `fi/<log index be>/<file id>` -> (). The background
/// fetcher reads it from where it last stopped instead of scanning every file.
pub const FILE_INDEX_PREFIX: &[u8] = b"fi/";
pub fn file_index(index: u64, id: &str) -> Vec<u8> {
    let mut k = FILE_INDEX_PREFIX.to_vec();
    k.extend_from_slice(&index.to_be_bytes());
    k.push(b'/');
    k.extend_from_slice(id.as_bytes());
    k
}
/// The log index and file id of a `file_index` key.
pub fn parse_file_index(key: &[u8]) -> Option<(u64, String)> {
    let rest = key.strip_prefix(FILE_INDEX_PREFIX)?;
    let index = u64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
    let id = std::str::from_utf8(rest.get(9..)?).ok()?;
    Some((index, id.to_owned()))
}

// ---- version 7 keys: per-user notification settings ----

/// A channel muted by a user: `cm/<username>/<channel>` -> (). Absent: not muted. Usernames
/// never contain '/', so `cm/<username>/` holds exactly one user's muted channels.
pub fn channel_muted(username: &str, channel: &str) -> Vec<u8> {
    [
        b"cm/".as_slice(),
        username.as_bytes(),
        b"/",
        channel.as_bytes(),
    ]
    .concat()
}
