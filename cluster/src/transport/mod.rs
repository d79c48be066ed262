//! Node-to-node transport on the cluster port.
pub mod network;
pub mod peer_tls;
pub mod rpc;
pub mod rpc_server;
