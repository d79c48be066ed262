//! The certificate authority as a node runs it: the service over the replicated CA state
//! (`service`), its periodic maintenance (`maintenance`), and its HTTP faces (`http`: the
//! `/api/v1/ca` routes and the plain port's trust page). The pure CA library is `crate::ca`;
//! the node's own certificate is `crate::node_cert`.
//!
//! Owns the layer's error type. Must never put key material into an error message.

use std::path::PathBuf;

use cluster::ClusterError;

use crate::ca::CaError;

mod http;
mod maintenance;
mod service;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod service_tests;

pub use http::CaTrust;
pub use service::{CaService, CaSettings};
// The node certificate's tests check their CSR with the CA's own reading of it.
#[cfg(test)]
pub use service::csr_names;

/// Errors of the CA service (the runtime layer above `ca::CaError`).
#[derive(Debug, thiserror::Error)]
pub enum CaServiceError {
    /// The replicated state holds no CA yet.
    #[error("the cluster has no certificate authority yet")]
    NotInitialized,
    /// `init` found one already.
    #[error("the cluster already has a certificate authority")]
    AlreadyInitialized,
    /// This node cannot sign: its KEK file is missing or unusable.
    #[error(
        "this node cannot use the CA's private keys: key-encryption key file {path}: {why}; copy it from a node that has it (mode 0600) or send the request to such a node"
    )]
    KekMissing { path: PathBuf, why: String },
    /// A rule of the CA refused the operation, or signing failed.
    #[error(transparent)]
    Ca(#[from] CaError),
    /// A requested address lies outside the permitted ranges (with the ranges, for the message).
    #[error("address {addr} is outside the site's permitted address ranges ({ranges})")]
    IpNotPermitted {
        addr: std::net::IpAddr,
        ranges: String,
    },
    /// Replicating the update failed.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// The state kept changing under us.
    #[error("the CA state changed {attempts} times while this update was prepared; retry")]
    Busy { attempts: u32 },
    /// The stored blob does not decode (a newer binary wrote it, or corruption).
    #[error("the replicated CA state does not decode: {0}")]
    Decode(String),
    #[error("encoding the CA state: {0}")]
    Encode(String),
    /// A blocking signing task panicked or was cancelled.
    #[error("signing task failed: {0}")]
    Task(String),
}
