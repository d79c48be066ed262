//! One running member: `ClusterNode` (the crate's public face) and the tasks it runs.
//!
//! `raft_node` starts and stops a member and holds its public API; `shared` is the state its
//! tasks share; `batcher` is group commit; `membership` the safe membership changes;
//! `readiness` this node's own verdict, `member_health` its view of every member;
//! `election_gate` is the only campaigner (pre-vote, openraft's own timer off); `heal_gate` keeps a
//! node that lost durable state out of elections until it caught up; `disk_guard` makes a leader
//! below its free-space watermark hand over leadership; `handover` moves leadership to a follower
//! before a leader stops or while it drains; `versions` gates commands during rolling upgrades;
//! `ca` is the certificate authority's side of the node; `export` hands out a snapshot file
//! (for backups). Must never decide
//! what a command means: that is `state`'s, on every node alike.

pub mod batcher;
pub mod ca;
pub mod config;
pub mod disk_guard;
pub mod election_gate;
pub mod export;
pub mod handover;
pub(crate) mod heal_gate;
pub mod member_health;
pub mod membership;
pub mod raft_node;
pub mod readiness;
pub mod shared;
pub mod version_activation;
pub mod versions;

/// Spawns `fut` as a task whose start and end are logged under `name`.
pub fn spawn_named<F>(name: &'static str, fut: F) -> tokio::task::JoinHandle<()>
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    tracing::debug!(task = name, "spawning task");
    tokio::spawn(async move {
        fut.await;
        tracing::debug!(task = name, "task ended");
    })
}
