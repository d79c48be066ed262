//! Conclave's cluster layer: the replicated log (openraft 0.9), its storage (own segment log +
//! sled state machine), node-to-node transport, group commit and the replicated chat state.
//!
//! Layering: this crate knows nothing about HTTP clients of the chat API; `web` builds on
//! `ClusterNode`, and `node` wires both into the `conclave` binary.

// openraft's `StorageError` and axum's `Response` are large by design; boxing them at every
// internal return would only add allocations on the storage path.
#![allow(clippy::result_large_err)]

pub mod command;
pub mod error;
pub mod node;
pub mod state;
pub mod storage;
pub mod transport;
pub mod types;

pub use command::{
    Applied, ApplyError, ChannelEvent, ChannelKind, ChannelRecord, Command, MessageRecord, Role,
    SessionRecord, UserRecord,
};
pub use error::ClusterError;
pub use node::member_health::{HealthView, MemberHealth};
pub use node::raft_node::{ClusterConfig, ClusterNode, spawn_named};
pub use node::readiness::Readiness;
pub use state::StateError;
pub use state::events::{Event, EventBus, EventKind};
pub use state::views::{ChannelSummary, ChannelView, MessageView, ReadState, UserView};
pub use storage::sm_store::StateReader;
pub use transport::peer_tls::{PeerIdentity, PeerTls, PeerTlsError, PeerTlsMaterial};
pub use types::{NodeId, NodeInfo};
