//! Conclave's cluster layer: the replicated log (openraft 0.9), its storage (own segment log +
//! sled state machine), node-to-node transport, group commit and the replicated chat state.
//!
//! Layout, one folder per concern: `command` is the wire format of the log (what an entry
//! carries, what applying it returns); `state` the deterministic rules that apply it, one module
//! per domain; `storage` what is on disk; `transport` the cluster port; `node` a running member
//! (`ClusterNode`) and its tasks; `metrics` the layer's Prometheus metrics. `types` is
//! openraft's instantiation, `error` the crate's error.
//!
//! Layering: this crate knows nothing about HTTP clients of the chat API; `web` builds on
//! `ClusterNode`, and `node` wires both into the `conclave` binary. The re-exports below are
//! the names those crates use.

// openraft's `StorageError` and axum's `Response` are large by design; boxing them at every
// internal return would only add allocations on the storage path.
#![allow(clippy::result_large_err)]

pub mod blobs;
pub mod command;
pub mod error;
pub mod metrics;
pub mod node;
pub mod state;
pub mod storage;
pub mod transport;
pub mod types;

pub use command::{
    Applied, ApplyError, BlobRef, ChannelEvent, ChannelKind, ChannelRecord, Command, FileRecord,
    MessageRecord, NewFile, Role, SessionEnd, SessionInfo, SessionRecord, UserRecord,
};
pub use error::ClusterError;
pub use node::config::ClusterConfig;
pub use node::export::SnapshotExport;
pub use node::member_health::{HealthView, MemberHealth};
pub use node::raft_node::ClusterNode;
pub use node::readiness::Readiness;
pub use node::spawn_named;
pub use state::StateError;
pub use state::events::{Event, EventBus, EventKind};
pub use state::views::{ChannelSummary, ChannelView, FileView, MessageView, ReadState, UserView};
pub use storage::sm_store::StateReader;
pub use transport::peer_tls::{PeerIdentity, PeerTls, PeerTlsError, PeerTlsMaterial};
pub use types::{NodeId, NodeInfo};
