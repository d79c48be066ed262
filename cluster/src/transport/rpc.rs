//! Wire types of the cluster port (node-to-node), one place for the whole protocol.
//!
//! Owns request/response shapes and paths. Raft RPCs, forwarded writes and membership requests
//! are bincode (compact, on the hot path); `status` is JSON so an operator can `curl` it.
//! Paths carry a protocol version (`/raft/v1/...`); a new incompatible shape gets a new path so
//! old and new nodes coexist during a rolling upgrade.

use bincode::Options;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::command::{Command, Response};
use crate::types::{NodeId, NodeInfo};

pub const PATH_APPEND: &str = "/raft/v1/append";
pub const PATH_VOTE: &str = "/raft/v1/vote";
pub const PATH_SNAPSHOT: &str = "/raft/v1/snapshot";
pub const PATH_FORWARD: &str = "/raft/v1/forward";
pub const PATH_MEMBERSHIP: &str = "/raft/v1/membership";
pub const PATH_STATUS: &str = "/raft/v1/status";
pub const PATH_REMOVED: &str = "/raft/v1/removed";
/// Ephemeral, non-replicated notices between nodes (typing, presence): an opaque body the
/// web layer defines, fire and forget.
/// The command-set version this binary understands (JSON `VersionWire`).
pub const PATH_VERSION: &str = "/raft/v1/version";
pub const PATH_EPHEMERAL: &str = "/raft/v1/ephemeral";
/// Blobs of file attachments (`blobs`): `PUT /raft/v1/blobs/<sha256>` stores the raw body
/// durably (the receiver checks the hash; 204 once it is on disk), `GET` answers the raw bytes
/// or 404. Raw bodies, not bincode: a chunk is up to `blobs::CHUNK_MAX` bytes of opaque data.
pub const PATH_BLOBS: &str = "/raft/v1/blobs";

/// The path of blob `sha` on a peer's cluster port.
pub fn blob_path(sha: &str) -> String {
    format!("{PATH_BLOBS}/{sha}")
}

/// The bincode options of every body on the cluster port: exactly those of `bincode::serialize`
/// and `bincode::deserialize` (fixed-width integers, little endian, trailing bytes allowed),
/// which older nodes use, so the bytes on the wire are the same.
fn wire_options() -> impl Options {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .allow_trailing_bytes()
}

/// Encodes a cluster-port body (byte-identical to `bincode::serialize`).
pub fn encode<T: Serialize + ?Sized>(value: &T) -> bincode::Result<Vec<u8>> {
    wire_options().serialize(value)
}

/// Decodes a cluster-port body with a limit of `bytes.len()`: a valid encoding never reads more
/// than it holds, so the limit refuses nothing an honest peer sends, while a length prefix that
/// claims more (a `Vec<u8>` or `String` of 1 GiB in a 40-byte body) fails at once with
/// "the size limit has been reached", before anything of the claimed size is reserved.
/// Sequences of larger items are only pre-reserved up to serde's cautious bound (1 MiB) and then
/// fail at the end of the body.
///
/// Decoded through `deserialize_from` (an `io::Read`) on purpose: bincode 1.3 drops the limit
/// when it decodes from a slice (`internal::deserialize_seed` swaps in `Infinite`, relying on
/// the slice's bounds), so `with_limit(..).deserialize(bytes)` would check nothing.
pub fn decode_limited<T: DeserializeOwned>(bytes: &[u8]) -> bincode::Result<T> {
    wire_options()
        .with_limit(u64::try_from(bytes.len()).unwrap_or(u64::MAX))
        .deserialize_from(bytes)
}

/// A group of client commands a follower hands to the leader to propose as one entry.
#[derive(Debug, Serialize, Deserialize)]
pub struct ForwardRequest {
    pub commands: std::sync::Arc<[Command]>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ForwardOk {
    pub index: u64,
    pub response: Response,
}

#[derive(Debug, Clone, Serialize, Deserialize, thiserror::Error)]
pub enum ForwardError {
    /// The receiver is not the leader; nothing was proposed.
    #[error("not the leader (leader is {leader:?})")]
    NotLeader { leader: Option<NodeId> },
    /// Proposed but the outcome is unknown, or the leader could not propose.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

pub type ForwardReply = Result<ForwardOk, ForwardError>;

#[derive(Debug, Serialize, Deserialize)]
pub enum MembershipRequest {
    Add { id: NodeId, info: NodeInfo },
    Remove { id: NodeId },
}

#[derive(Debug, Clone, Serialize, Deserialize, thiserror::Error)]
pub enum MembershipError {
    #[error("not the leader (leader is {leader:?})")]
    NotLeader { leader: Option<NodeId> },
    #[error("another membership change is in progress; retry when it has finished")]
    InProgress,
    #[error("{0}")]
    Unsafe(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Unavailable(String),
}

pub type MembershipReply = Result<(), MembershipError>;

/// One node's own view, served on `GET /raft/v1/status` (JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeStatusWire {
    pub id: NodeId,
    /// `leader`, `follower`, `candidate`, `learner`, `shutdown`.
    pub state: String,
    pub term: u64,
    pub leader_id: Option<NodeId>,
    pub last_log_index: Option<u64>,
    pub last_applied: Option<u64>,
    pub voter: bool,
    /// For a leader: a quorum acknowledged it within the election timeout.
    pub quorum_ok: bool,
    pub ready: bool,
    pub reason: Option<String>,
    /// Not ready only for want of a leader (an election). Absent from older nodes.
    #[serde(default)]
    pub electing: bool,
    /// Ids in this node's current membership (voters and learners). Lets a node told it was
    /// removed check the claim with the leader. Absent from older nodes.
    #[serde(default)]
    pub members: Vec<NodeId>,
    /// The HTTPS address this node advertises to clients (`[tls] https_addr`), `None` when it
    /// serves plain HTTP only. Lets the health view, `/api/v1/cluster` and DNS learn it without
    /// a Raft command. Absent from older nodes.
    #[serde(default)]
    pub https_addr: Option<String>,
    /// The node runs with `insecure_plaintext = true` (a non-loopback address without TLS).
    /// Absent from older nodes (false: they predate the flag, and a node of theirs on a LAN
    /// address without TLS is shown by its plain `https_addr: None`).
    #[serde(default)]
    pub insecure_plaintext: bool,
    /// The data directory's free space and watermark, and whether storage works. Absent from
    /// older nodes.
    #[serde(default)]
    pub storage: Option<StorageStatusWire>,
    /// Milliseconds since this node last heard from a leader it accepted (0 on a leader): the
    /// answer to a pre-vote (`election_gate`). A node whose value is under the election timeout
    /// still honours that leader's lease and would refuse a vote. `None` from older nodes
    /// ("don't know"): such a peer neither grants nor vetoes a pre-vote.
    #[serde(default)]
    pub leader_contact_ms: Option<u64>,
}

/// The storage part of a node's status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageStatusWire {
    /// Free bytes at the last sample; `None` if the filesystem could not say.
    pub free_bytes: Option<u64>,
    /// The watermark (`[storage] min_free_bytes`); 0 = off.
    pub min_free_bytes: u64,
    /// `ok`, `low_space` (below the watermark: writes refused, not ready, no leadership) or
    /// `failed` (a write or fsync failed: the node is restarting from what is on disk).
    pub state: String,
    pub reason: Option<String>,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn forward() -> ForwardRequest {
        ForwardRequest {
            commands: vec![Command::CreateSession {
                token_hash: "ab".repeat(32),
                username: "alice".into(),
                ttl_ms: 1000,
            }]
            .into(),
        }
    }

    /// The wire format is byte-for-byte that of `bincode::serialize` (older nodes' format).
    #[test]
    fn encoding_is_unchanged() {
        let req = forward();
        assert_eq!(encode(&req).unwrap(), bincode::serialize(&req).unwrap());
        let back: ForwardRequest = decode_limited(&bincode::serialize(&req).unwrap()).unwrap();
        assert_eq!(back.commands.len(), 1);
    }

    /// A length prefix that claims 1 GiB in a short body hits the size limit, not the end.
    #[test]
    fn a_lying_length_prefix_hits_the_limit() {
        let honest = encode(&forward()).unwrap();
        let mut body = honest[..12].to_vec();
        body.extend_from_slice(&(1u64 << 30).to_le_bytes());
        body.extend_from_slice(b"not really");
        let err = decode_limited::<ForwardRequest>(&body).unwrap_err();
        assert!(matches!(*err, bincode::ErrorKind::SizeLimit), "{err}");
        // And a sequence that claims 2^30 commands ends at the body's end.
        let mut body = (1u64 << 30).to_le_bytes().to_vec();
        body.extend_from_slice(&honest[8..]);
        assert!(decode_limited::<ForwardRequest>(&body).is_err());
    }

    /// Every RPC type an honest peer sends decodes under the limit (the limit is exact).
    #[test]
    fn honest_bodies_fit_the_limit() {
        let status: NodeId = 7;
        let back: NodeId = decode_limited(&encode(&status).unwrap()).unwrap();
        assert_eq!(back, 7);
        let req = MembershipRequest::Add {
            id: 4,
            info: NodeInfo {
                api_addr: "10.0.0.4:8080".into(),
                cluster_addr: "10.0.0.4:9080".into(),
            },
        };
        let back: MembershipRequest = decode_limited(&encode(&req).unwrap()).unwrap();
        assert!(matches!(back, MembershipRequest::Add { id: 4, .. }));
    }
}
