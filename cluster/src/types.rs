//! The Raft type configuration of Conclave and the node identity that every member advertises.
//!
//! Owns: `TypeConfig` (what openraft is instantiated with) and `NodeInfo`. Must never grow
//! logic: these are the shapes that travel in the Raft log and in membership configs, so
//! changing them is a wire-format change (see `docs/architecture.md`, "Versioning").

use serde::{Deserialize, Serialize};
use std::fmt;

use crate::command::{Request, Response};

/// Node ids are small integers chosen by the operator (`node_id` in the config file).
pub type NodeId = u64;

/// What a member advertises: where peers reach its Raft port and where clients reach its API.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// `host:port` of the client API (HTTP).
    pub api_addr: String,
    /// `host:port` of the cluster (Raft RPC) port.
    pub cluster_addr: String,
}

impl fmt::Display for NodeInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "api={} cluster={}", self.api_addr, self.cluster_addr)
    }
}

openraft::declare_raft_types!(
    /// Conclave's openraft instantiation. A snapshot is a file (`snapshot.bin`, or the temp
    /// file a transfer is received in), read and written in chunks, never held in memory whole;
    /// see `storage::sm_store` and `storage::snapshot_file`.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = NodeId,
        Node = NodeInfo,
        SnapshotData = tokio::fs::File,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, NodeInfo>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, NodeInfo>;
pub type Snapshot = openraft::Snapshot<TypeConfig>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type RaftMetrics = openraft::RaftMetrics<NodeId, NodeInfo>;
