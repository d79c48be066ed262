//! Node-to-node transport on the cluster port: the wire types and paths (`rpc`), the outgoing
//! side (`network`: openraft's `RaftNetwork` and every other call to a peer), the incoming side
//! (`rpc_server`), mutual TLS between members (`peer_tls`), and the connection caps every
//! listener of a node applies (`conn_limit`), and the follower's stand-in for its leader's
//! heartbeats while a snapshot streams in (`snapshot_keepalive`).
//!
//! Owns how bytes reach a peer and how a peer is authenticated. Must never be reachable from
//! the client port: these endpoints trust their caller, and `peer_tls` is what makes that true.

pub mod conn_limit;
pub mod network;
pub mod peer_tls;
pub mod rpc;
pub mod rpc_server;
pub mod snapshot_keepalive;
