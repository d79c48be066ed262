//! The cluster layer's error type, converted to HTTP by the `web` crate at its boundary.

use crate::command::ApplyError;
use crate::transport::rpc::MembershipError;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The state machine's rules refused the command (it is in the log, but changed nothing).
    #[error(transparent)]
    Rejected(#[from] ApplyError),
    /// No leader, no quorum, or the outcome of a write is unknown. Safe to retry idempotent writes.
    #[error("cluster unavailable: {0}")]
    Unavailable(String),
    /// Waiting for this node to apply an index took too long.
    #[error("this node has not applied index {index} yet")]
    NotCaughtUp { index: u64 },
    #[error(transparent)]
    Membership(#[from] MembershipError),
    #[error("storage: {0}")]
    Storage(String),
    /// Free space is below the watermark (here, or on a majority of voters): the write was
    /// refused before anything was proposed. Safe to retry once space returns.
    #[error("{0}")]
    DiskFull(String),
    #[error("already initialized")]
    AlreadyInitialized,
    #[error("shutting down")]
    ShuttingDown,
    #[error("internal: {0}")]
    Internal(String),
}
