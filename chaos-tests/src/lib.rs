//! Chaos-test harness for Conclave: starts real `conclave` processes as a cluster on a private
//! loopback block ([`cluster::TestCluster`]), injects faults (SIGKILL, SIGTERM, restarts),
//! drives client load that records what every client was told ([`load`]), and checks the
//! cluster's invariants against that record ([`checks`]).
//!
//! [`docker`] runs the shipped container image as a 3-host cluster on a Docker network.
//!
//! [`history_gen`] writes a large history into a stopped node through the state machine.
//!
//! Used by the acceptance suite in `tests/cluster/` and by the `conclave-bench` and
//! `snapshot-bench` binaries.

pub mod addr;
pub mod bench_main;
mod channel;
pub mod checks;
pub mod cluster;
mod diagnostics;
pub mod docker;
pub mod duration_arg;
pub mod faultfs;
pub mod history_gen;
pub mod load;
pub mod netns;
pub mod node;
pub mod partition;
pub mod require;
pub mod snapshot_catchup;
pub mod wait;

pub use checks::{Msg, NodeView};
pub use cluster::{ADMIN_PASSWORD, ADMIN_USER, ClusterOptions, TestCluster};
pub use load::{Ack, Load, LoadConfig, LoadReport};
pub use node::RaftOptions;

/// The first login of an account whose password an admin set (`must_change_password`): the
/// server accepts nothing but a password change until then. Tests keep using the password
/// they chose, so it is changed away and back (the server refuses reusing an admin-set
/// password in the forced change, not in a later one). `client` holds the new session's token.
/// Returns the log index of the last change (wait for it before logging in on another node:
/// a follower that has not applied it yet still holds the interim password).
pub async fn settle_admin_set_password(
    client: &ops::Client,
    password: &str,
) -> Result<Option<u64>, ops::ClientError> {
    let interim = format!("{password} (interim)");
    client.change_password(password, &interim).await?;
    client.change_password_indexed(&interim, password).await
}
