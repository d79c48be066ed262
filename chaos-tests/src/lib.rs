//! Chaos-test harness for Conclave: starts real `conclave` processes as a cluster on a private
//! loopback block ([`cluster::TestCluster`]), injects faults (SIGKILL, SIGTERM, restarts),
//! drives client load that records what every client was told ([`load`]), and checks the
//! cluster's invariants against that record ([`checks`]).
//!
//! Used by the acceptance suite in `tests/cluster/` and by the `conclave-bench` binary.

pub mod addr;
mod channel;
pub mod checks;
pub mod cluster;
mod diagnostics;
pub mod duration_arg;
pub mod load;
pub mod node;
pub mod partition;
pub mod wait;

pub use checks::{Msg, NodeView};
pub use cluster::{ADMIN_PASSWORD, ADMIN_USER, ClusterOptions, TestCluster};
pub use load::{Ack, Load, LoadConfig, LoadReport};
pub use node::RaftOptions;
