//! The request and response shapes of the HTTP API (docs/api.md), as plain serde structs.
//!
//! Response types never use `deny_unknown_fields`: a newer server may add fields and an older
//! client must keep working. This module holds data only; it must never perform I/O.

use serde::{Deserialize, Serialize};

/// A user's role. Serialized as `"admin"` / `"member"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Member,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Admin => "admin",
            Role::Member => "member",
        })
    }
}

/// `POST /api/v1/login` response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginResponse {
    pub token: String,
    pub username: String,
    pub role: Role,
    pub expires_at_ms: u64,
}

/// A user as returned by `/me` and `/users`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub username: String,
    pub role: Role,
    pub disabled: bool,
}

/// The channel object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Channel {
    pub name: String,
    pub created_by: String,
    pub created_at_ms: u64,
    pub members: Vec<String>,
    pub last_seq: u64,
}

/// One chat message. `seq` is per channel, gapless and identical on every node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub channel: String,
    pub seq: u64,
    pub author: String,
    pub body: String,
    pub ts_ms: u64,
    pub client_msg_id: String,
}

/// The result of posting a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostOutcome {
    pub message: Message,
    /// True when the server already had a message with this `(author, client_msg_id)` and
    /// returned the original instead of writing a new one.
    pub duplicate: bool,
    /// The `X-Conclave-Index` header: the Raft index holding the write, usable as a
    /// `min_index` for read-your-writes on another node.
    pub index: Option<u64>,
}

/// `GET /api/v1/channels/{name}/messages` response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessagePage {
    pub messages: Vec<Message>,
    /// The channel's newest sequence number on the node that answered.
    pub last_seq: u64,
}

/// `GET /readyz` verdict of one node (200 and 503 both carry this body).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Readyz {
    pub ready: bool,
    #[serde(default)]
    pub node_id: Option<u64>,
    #[serde(default)]
    pub reason: Option<String>,
}

/// `GET /api/v1/cluster` response, as seen by node `node_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub node_id: u64,
    #[serde(default)]
    pub leader_id: Option<u64>,
    pub term: u64,
    pub nodes: Vec<NodeStatus>,
}

/// One member of the cluster, as probed by the answering node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub id: u64,
    pub api_addr: String,
    pub cluster_addr: String,
    pub voter: bool,
    /// `leader`, `follower`, `candidate`, `learner` or `unknown`; kept as a string so a new
    /// role in a later server version does not break decoding.
    pub role: String,
    #[serde(default)]
    pub term: Option<u64>,
    #[serde(default)]
    pub leader_id: Option<u64>,
    #[serde(default)]
    pub last_log_index: Option<u64>,
    #[serde(default)]
    pub last_applied: Option<u64>,
    pub healthy: bool,
    pub ready: bool,
    #[serde(default)]
    pub error: Option<String>,
}

// ---- request bodies and list envelopes: wire details the public API does not expose ----

#[derive(Serialize)]
pub(crate) struct LoginRequest<'a> {
    pub username: &'a str,
    pub password: &'a str,
}

#[derive(Serialize)]
pub(crate) struct CreateUserRequest<'a> {
    pub username: &'a str,
    pub password: &'a str,
    pub role: Role,
}

#[derive(Serialize)]
pub(crate) struct CreateChannelRequest<'a> {
    pub name: &'a str,
}

#[derive(Serialize)]
pub(crate) struct PostMessageRequest<'a> {
    pub body: &'a str,
    pub client_msg_id: &'a str,
}

#[derive(Serialize)]
pub(crate) struct AddNodeRequest<'a> {
    pub id: u64,
    pub api_addr: &'a str,
    pub cluster_addr: &'a str,
}

#[derive(Deserialize)]
pub(crate) struct UsersEnvelope {
    pub users: Vec<User>,
}

#[derive(Deserialize)]
pub(crate) struct ChannelsEnvelope {
    pub channels: Vec<Channel>,
}

/// The message object plus the `duplicate` flag the post endpoint adds to it.
#[derive(Deserialize)]
pub(crate) struct PostedMessage {
    #[serde(flatten)]
    pub message: Message,
    #[serde(default)]
    pub duplicate: Option<bool>,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn role_is_lowercase_on_the_wire() {
        assert_eq!(serde_json::to_string(&Role::Admin).unwrap(), "\"admin\"");
        assert_eq!(
            serde_json::from_str::<Role>("\"member\"").unwrap(),
            Role::Member
        );
    }

    #[test]
    fn cluster_status_accepts_documented_example_and_unknown_fields() {
        let body = r#"{
          "node_id": 2, "leader_id": 1, "term": 3, "future_field": [1,2],
          "nodes": [
            {"id":1,"api_addr":"127.0.0.1:8080","cluster_addr":"127.0.0.1:9080","voter":true,
             "role":"leader","term":3,"leader_id":1,"last_log_index":120,"last_applied":120,
             "healthy":true,"ready":true,"error":null},
            {"id":3,"api_addr":"127.0.0.1:8082","cluster_addr":"127.0.0.1:9082","voter":true,
             "role":"unknown","healthy":false,"ready":false,"error":"timed out","zone":"b"}
          ]
        }"#;
        let status: ClusterStatus = serde_json::from_str(body).unwrap();
        assert_eq!(status.leader_id, Some(1));
        assert_eq!(status.nodes.len(), 2);
        assert_eq!(status.nodes[0].last_applied, Some(120));
        assert_eq!(status.nodes[1].term, None);
        assert_eq!(status.nodes[1].error.as_deref(), Some("timed out"));
    }

    #[test]
    fn posted_message_flattens_duplicate_flag() {
        let body = r#"{"channel":"general","seq":42,"author":"alice","body":"hello",
            "ts_ms":1767225600123,"client_msg_id":"c-5f1e-0001","duplicate":true}"#;
        let posted: PostedMessage = serde_json::from_str(body).unwrap();
        assert_eq!(posted.message.seq, 42);
        assert_eq!(posted.duplicate, Some(true));
    }

    #[test]
    fn readyz_without_optional_fields() {
        let r: Readyz = serde_json::from_str(r#"{"ready":false}"#).unwrap();
        assert_eq!(
            r,
            Readyz {
                ready: false,
                node_id: None,
                reason: None
            }
        );
    }
}
