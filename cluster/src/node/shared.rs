//! `Shared`: the state one running member's tasks share (batcher, readiness, member health,
//! the election trigger and the cluster port's handlers), and the status it reports.
//!
//! Lives apart from `ClusterNode` so the tasks and the RPC server depend on this, not on the
//! node's public face. Owns the staleness rule of the readiness verdict. Must never hold a
//! `std` mutex across `.await`: its mutexes guard a timestamp or a verdict for a copy.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::ServerState;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::command::Command;
use crate::error::ClusterError;
use crate::node::batcher::Pending;
use crate::node::config::ClusterConfig;
use crate::node::readiness::{self, Readiness};
use crate::storage::disk_space::StorageState;
use crate::storage::sm_store::StateReader;
use crate::transport::network::PeerHttp;
use crate::transport::rpc::{NodeStatusWire, StorageStatusWire};
use crate::types::{NodeId, NodeInfo, Raft, RaftMetrics};

/// State shared by the node's tasks (batcher, RPC handlers, health).
pub(crate) struct Shared {
    pub id: NodeId,
    pub raft: Raft,
    pub http: PeerHttp,
    pub cancel: CancellationToken,
    /// The last readiness verdict and when it was reached (see `current_readiness`).
    pub readiness: Mutex<(Readiness, std::time::Instant)>,
    pub config: ClusterConfig,
    pub removed: CancellationToken,
    /// Fires when Raft stopped on a fatal error (storage failure): the process should exit so
    /// its supervisor restarts it, rather than linger as a member that cannot apply anything.
    /// Not for a version stop (below), which a restart cannot cure.
    pub fatal: CancellationToken,
    /// Set when the state machine stopped at an entry of a newer binary: readiness reports it.
    pub version_stop: crate::storage::sm_store::VersionStop,
    /// Queue of the group-commit batcher. Forwarded batches from followers join it too, so the
    /// leader proposes everything that arrived meanwhile, from every node, as one entry.
    pub batch_tx: mpsc::Sender<Pending>,
    /// Held for the whole of one membership operation (probe, catch-up, promotion), so a
    /// second change is refused instead of interleaving with the first.
    pub membership_lock: tokio::sync::Mutex<()>,
    /// When an AppendEntries (a leader's heartbeat or replication) that Raft accepted or a
    /// snapshot chunk last arrived; refreshed while this node leads or installs a snapshot.
    /// The election gate's and the pre-vote's clock.
    pub last_leader_contact: Mutex<std::time::Instant>,
    /// Set while a received snapshot is installed (`StateMachineStore::installing_flag`).
    pub snapshot_installing: Arc<std::sync::atomic::AtomicBool>,
    /// Stands in for the leader's heartbeats while it streams a snapshot to this node.
    pub snapshot_keepalive: crate::transport::snapshot_keepalive::SnapshotKeepalive,
    /// Ephemeral notices received from peers (`rpc::PATH_EPHEMERAL`).
    pub ephemeral: tokio::sync::broadcast::Sender<bytes::Bytes>,
    pub versions: crate::node::versions::PeerVersions,
    pub reader: StateReader,
    /// Highest command version seen activated in the applied state. Activation is permanent,
    /// so once seen it is never read from storage again on the write path.
    pub active_version: std::sync::atomic::AtomicU16,
    /// The latest member-health view (`member_health`), read by DNS and the cluster API.
    pub health: crate::node::member_health::HealthTx,
    /// When the periodic member-health probe last started (its schedule, for status output).
    pub health_tick: Mutex<std::time::Instant>,
    /// Free space of the data directory against the watermark (`disk_guard` samples it).
    pub disk: std::sync::Arc<crate::storage::disk_space::DiskSpace>,
    /// Set while this node heals from quarantined storage (`heal_gate`): no votes, no campaign.
    pub heal: std::sync::Arc<crate::node::heal_gate::HealGate>,
    /// Planned leadership handover: its write hold and when this node became leader.
    pub handover: crate::node::handover::HandoverState,
    /// This node's blob store (file attachments, outside the log: `blobs`).
    pub blobs: Arc<crate::blobs::BlobStore>,
}

impl Shared {
    /// How long since this node last heard from a leader it accepted (`last_leader_contact`).
    pub fn leader_silence(&self) -> Duration {
        self.last_leader_contact
            .lock()
            .map(|t| t.elapsed())
            .unwrap_or_default()
    }

    /// Records contact with a leader at `at` (never moves the time backwards).
    pub fn note_leader_contact(&self, at: std::time::Instant) {
        if let Ok(mut t) = self.last_leader_contact.lock()
            && at > *t
        {
            *t = at;
        }
    }

    /// Queues one command for group commit and waits for its outcome and log index.
    pub async fn submit(
        &self,
        cmd: Command,
    ) -> Result<(crate::command::Outcome, u64), ClusterError> {
        self.write_gate()?;
        let (tx, rx) = oneshot::channel();
        self.batch_tx
            .send(Pending { cmd, reply: tx })
            .await
            .map_err(|_| ClusterError::ShuttingDown)?;
        rx.await.map_err(|_| ClusterError::ShuttingDown)?
    }

    /// Refuses a new write before anything is proposed when this node's free space is below
    /// the watermark, or when a majority of voters report theirs is (the entry could then be
    /// stored by too few nodes to commit, or would eat the followers' headroom). Forwarded
    /// writes pass this gate on the leader too (`rpc_server::forward` submits here).
    pub fn write_gate(&self) -> Result<(), ClusterError> {
        if let Some(why) = self.disk.low_space() {
            return Err(ClusterError::DiskFull(why));
        }
        let view = self.health.borrow().clone();
        let voters = view.members.iter().filter(|m| m.voter).count();
        let low = view
            .members
            .iter()
            .filter(|m| m.voter && m.id != self.id)
            .filter(|m| {
                m.status.as_ref().is_ok_and(|st| {
                    st.storage
                        .as_ref()
                        .is_some_and(|s| s.state == StorageState::LowSpace.as_str())
                })
            })
            .count();
        if voters > 0 && low * 2 > voters {
            return Err(ClusterError::DiskFull(format!(
                "disk space low on {low} of {voters} voters (below their watermark)"
            )));
        }
        Ok(())
    }

    /// The storage part of this node's status.
    pub fn storage_status(&self) -> StorageStatusWire {
        let (state, reason) = self.disk.state();
        StorageStatusWire {
            free_bytes: self.disk.free_bytes(),
            min_free_bytes: self.disk.min_free_bytes(),
            state: state.as_str().to_owned(),
            reason,
        }
    }

    /// The readiness verdict, unless it is older than [`readiness::MAX_VERDICT_AGE`]. A process
    /// that was frozen (SIGSTOP, a VM pause, a stalled runtime) wakes up holding the verdict it
    /// reached before the freeze; serving that would put a node back into DNS answers and
    /// `/readyz` before it has heard from the current leader.
    pub fn current_readiness(&self) -> Readiness {
        let Ok(g) = self.readiness.lock() else {
            return Readiness::default();
        };
        let (verdict, at) = &*g;
        if at.elapsed() > readiness::MAX_VERDICT_AGE {
            return Readiness {
                ready: false,
                reason: Some(
                    "readiness not re-evaluated recently (was the process paused?)".into(),
                ),
                electing: false,
            };
        }
        verdict.clone()
    }

    /// Status of every member as seen by probing it now (200 ms budget each, in parallel).
    pub async fn probe_members(
        &self,
    ) -> Vec<(NodeId, NodeInfo, bool, Result<NodeStatusWire, String>)> {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership().clone();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let probes = membership.nodes().map(|(id, info)| {
            let id = *id;
            let info = info.clone();
            let voter = voters.contains(&id);
            async move {
                let st = if id == self.id {
                    Ok(self.status())
                } else {
                    self.http
                        .status(&info.cluster_addr, Duration::from_millis(200))
                        .await
                        .map_err(|e| e.short())
                };
                (id, info, voter, st)
            }
        });
        futures::future::join_all(probes).await
    }

    pub fn node_info(&self, id: NodeId) -> Option<NodeInfo> {
        let m = self.raft.metrics().borrow().membership_config.clone();
        m.membership().get_node(&id).cloned()
    }

    /// Every member (voters and learners) of the current membership, as this node knows it.
    pub fn members(&self) -> Vec<(NodeId, NodeInfo)> {
        let m = self.raft.metrics().borrow().membership_config.clone();
        m.membership()
            .nodes()
            .map(|(id, info)| (*id, info.clone()))
            .collect()
    }

    pub fn status(&self) -> NodeStatusWire {
        let m = self.raft.metrics().borrow().clone();
        let voter = m
            .membership_config
            .membership()
            .voter_ids()
            .any(|v| v == self.id);
        let readiness = self.current_readiness();
        NodeStatusWire {
            id: self.id,
            state: state_name(&m, voter).to_string(),
            term: m.current_term,
            leader_id: m.current_leader,
            last_log_index: m.last_log_index,
            last_applied: m.last_applied.map(|l| l.index),
            voter,
            quorum_ok: readiness::leader_has_quorum(&m, self.config.election_timeout_max_ms),
            ready: readiness.ready,
            reason: readiness.reason,
            electing: readiness.electing,
            members: m
                .membership_config
                .membership()
                .nodes()
                .map(|(id, _)| *id)
                .collect(),
            https_addr: self.config.https_addr.clone(),
            insecure_plaintext: self.config.insecure_plaintext,
            storage: Some(self.storage_status()),
            leader_contact_ms: Some(if m.state == ServerState::Leader {
                0
            } else {
                self.leader_silence().as_millis() as u64
            }),
        }
    }
}

pub(crate) fn state_name(m: &RaftMetrics, voter: bool) -> &'static str {
    match m.state {
        ServerState::Leader => "leader",
        ServerState::Candidate => "candidate",
        ServerState::Follower if voter => "follower",
        ServerState::Follower | ServerState::Learner => "learner",
        ServerState::Shutdown => "shutdown",
    }
}
