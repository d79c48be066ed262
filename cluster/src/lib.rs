//! Conclave's cluster layer: the replicated log (openraft 0.9), its storage (own segment log +
//! sled state machine), node-to-node transport, group commit and the replicated chat state.
//!
//! Layering: this crate knows nothing about HTTP clients of the chat API; `web` builds on
//! `ClusterNode`, and `node` wires both into the `conclave` binary.

// openraft's `StorageError` and axum's `Response` are large by design; boxing them at every
// internal return would only add allocations on the storage path.
#![allow(clippy::result_large_err)]

pub mod apply_accounts;
pub mod apply_ca;
pub mod apply_chat;
pub mod apply_join;
pub mod apply_ops;
pub mod batcher;
pub mod ca_store;
pub mod command;
pub mod dns_records;
pub mod error;
pub mod event;
pub mod failover;
pub mod fsutil;
pub mod health;
pub mod keys;
pub mod log_store;
pub mod member_health;
pub mod network;
pub mod peer_tls;
pub mod queries;
pub mod raft_node;
pub mod rpc;
pub mod rpc_server;
pub mod sm_store;
pub mod snapshot_cow;
pub mod state;
pub mod types;
pub mod versions;
pub mod views;

pub use command::{
    Applied, ApplyError, ChannelEvent, ChannelKind, ChannelRecord, Command, MessageRecord, Role,
    SessionRecord, UserRecord,
};
pub use error::ClusterError;
pub use event::{Event, EventBus, EventKind};
pub use health::Readiness;
pub use member_health::{HealthView, MemberHealth};
pub use peer_tls::{PeerIdentity, PeerTls, PeerTlsError, PeerTlsMaterial};
pub use raft_node::{ClusterConfig, ClusterNode, spawn_named};
pub use sm_store::StateReader;
pub use state::StateError;
pub use types::{NodeId, NodeInfo};
pub use views::{ChannelSummary, ChannelView, MessageView, ReadState, UserView};
