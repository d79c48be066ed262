//! `ClusterNode`: one running Raft member with its storage, network, group-commit batcher and
//! health tracker. This is the cluster crate's public face for the `web` and `node` crates.
//!
//! Owns: opening storage, starting openraft with LAN timeouts, the write path (`write`),
//! read-your-writes (`wait_applied`), membership changes with their safety checks, and shutdown.
//! Must never expose `ForwardToLeader` to callers: a follower forwards writes itself.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::{ChangeMembers, ServerState, SnapshotPolicy};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::command::{Applied, Command};
use crate::error::ClusterError;
use crate::node::batcher::{self, BatchLimits, Pending};
use crate::node::readiness::{self, Readiness};
use crate::state::events::EventBus;
use crate::storage::log_store::LogStore;
use crate::storage::sm_store::{StateMachineStore, StateReader};
use crate::transport::network::{NetworkFactory, PeerHttp, TransportError};
use crate::transport::rpc::{
    self, MembershipError, MembershipReply, MembershipRequest, NodeStatusWire,
};
use crate::types::{NodeId, NodeInfo, Raft, RaftMetrics};

const EPHEMERAL_TIMEOUT: Duration = Duration::from_millis(500);

/// Everything the cluster layer needs to start a member. Timeouts are in milliseconds; see
/// `docs/configuration.md` for the reasons behind the defaults.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub node_id: NodeId,
    pub data_dir: PathBuf,
    /// Advertised addresses (what peers and clients dial).
    pub info: NodeInfo,
    pub heartbeat_interval_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    pub install_snapshot_timeout_ms: u64,
    pub snapshot_logs_since_last: u64,
    pub max_in_snapshot_log_to_keep: u64,
    pub max_payload_entries: u64,
    pub batch_max_commands: usize,
    pub batch_max_bytes: usize,
    pub batch_max_in_flight: usize,
    pub write_timeout_ms: u64,
    pub ready_max_apply_lag: u64,
    pub sled_cache_bytes: u64,
    /// Source address for connections to peers (the cluster port's IP), if not unspecified.
    pub peer_source_ip: Option<std::net::IpAddr>,
    /// Mutual TLS for the cluster port and peer calls (`peer_tls`); `None` keeps plain HTTP.
    /// The same `Arc` must be handed to `rpc_server::serve_cluster_port`.
    pub peer_tls: Option<Arc<crate::transport::peer_tls::PeerTls>>,
    /// The advertised HTTPS client address, reported in this node's status (not replicated:
    /// it is a property of how the process runs, like readiness).
    pub https_addr: Option<String>,
}

impl ClusterConfig {
    pub fn with_defaults(node_id: NodeId, data_dir: PathBuf, info: NodeInfo) -> Self {
        Self {
            node_id,
            data_dir,
            info,
            heartbeat_interval_ms: 75,
            election_timeout_min_ms: 300,
            election_timeout_max_ms: 550,
            install_snapshot_timeout_ms: 2000,
            snapshot_logs_since_last: 20000,
            max_in_snapshot_log_to_keep: 1000,
            max_payload_entries: 64,
            batch_max_commands: 512,
            batch_max_bytes: 1024 * 1024,
            batch_max_in_flight: 1,
            write_timeout_ms: 5000,
            ready_max_apply_lag: 1000,
            sled_cache_bytes: 128 * 1024 * 1024,
            peer_source_ip: None,
            peer_tls: None,
            https_addr: None,
        }
    }
}

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
    pub fatal: CancellationToken,
    /// Queue of the group-commit batcher. Forwarded batches from followers join it too, so the
    /// leader proposes everything that arrived meanwhile, from every node, as one entry.
    pub batch_tx: mpsc::Sender<Pending>,
    /// Held for the whole of one membership operation (probe, catch-up, promotion), so a
    /// second change is refused instead of interleaving with the first.
    pub membership_lock: tokio::sync::Mutex<()>,
    /// When an AppendEntries (a leader's heartbeat or replication) last arrived.
    pub last_leader_contact: Mutex<std::time::Instant>,
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
}

impl Shared {
    /// Queues one command for group commit and waits for its outcome and log index.
    pub async fn submit(
        &self,
        cmd: Command,
    ) -> Result<(crate::command::Outcome, u64), ClusterError> {
        let (tx, rx) = oneshot::channel();
        self.batch_tx
            .send(Pending { cmd, reply: tx })
            .await
            .map_err(|_| ClusterError::ShuttingDown)?;
        rx.await.map_err(|_| ClusterError::ShuttingDown)?
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

/// A running cluster member.
pub struct ClusterNode {
    pub(crate) shared: Arc<Shared>,
    reader: StateReader,
    events: EventBus,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    _db: sled::Db,
}

const REMOVED_MARKER: &str = "REMOVED";

impl ClusterNode {
    /// Opens storage in `config.data_dir` and starts Raft. The caller serves `rpc_router()` on
    /// the cluster port. `cancel` stops every task of this node.
    pub async fn start(
        config: ClusterConfig,
        cancel: CancellationToken,
    ) -> Result<Arc<Self>, ClusterError> {
        let dir = config.data_dir.clone();
        if dir.join(REMOVED_MARKER).exists() {
            return Err(ClusterError::Storage(format!(
                "this node was removed from its cluster; wipe {} before it joins again",
                dir.display()
            )));
        }
        std::fs::create_dir_all(&dir)
            .map_err(|e| ClusterError::Storage(format!("create {}: {e}", dir.display())))?;
        let raft_config = openraft::Config {
            cluster_name: "conclave".into(),
            heartbeat_interval: config.heartbeat_interval_ms,
            election_timeout_min: config.election_timeout_min_ms,
            election_timeout_max: config.election_timeout_max_ms,
            install_snapshot_timeout: config.install_snapshot_timeout_ms,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_logs_since_last),
            max_in_snapshot_log_to_keep: config.max_in_snapshot_log_to_keep,
            max_payload_entries: config.max_payload_entries,
            ..Default::default()
        };
        let raft_config = Arc::new(
            raft_config
                .validate()
                .map_err(|e| ClusterError::Storage(format!("invalid raft timing: {e}")))?,
        );
        let (log, db, sm) = open_storage(&dir, config.sled_cache_bytes)?;
        let events = sm.1;
        let sm = sm.0;
        let reader = sm.reader();
        let http = PeerHttp::with_tls(config.peer_source_ip, config.peer_tls.clone())
            .map_err(|e| ClusterError::Internal(format!("http client: {e}")))?;
        let network = NetworkFactory {
            local_id: config.node_id,
            http: http.clone(),
        };
        let raft = Raft::new(config.node_id, raft_config, network, log, sm)
            .await
            .map_err(|e| ClusterError::Storage(format!("start raft: {e}")))?;
        let (batch_tx, batch_rx) = mpsc::channel(config.batch_max_commands * 8);
        let shared = Arc::new(Shared {
            id: config.node_id,
            raft,
            http,
            cancel: cancel.clone(),
            readiness: Mutex::new((Readiness::default(), std::time::Instant::now())),
            config: config.clone(),
            removed: CancellationToken::new(),
            fatal: CancellationToken::new(),
            batch_tx,
            membership_lock: tokio::sync::Mutex::new(()),
            last_leader_contact: Mutex::new(std::time::Instant::now()),
            ephemeral: tokio::sync::broadcast::channel(1024).0,
            versions: crate::node::versions::PeerVersions::default(),
            reader: reader.clone(),
            active_version: std::sync::atomic::AtomicU16::new(1),
            health_tick: Mutex::new(std::time::Instant::now()),
            health: tokio::sync::watch::Sender::new(Arc::new(
                crate::node::member_health::HealthView::empty(),
            )),
        });
        let limits = BatchLimits {
            max_commands: config.batch_max_commands,
            max_bytes: config.batch_max_bytes,
            max_in_flight: config.batch_max_in_flight,
            write_timeout: Duration::from_millis(config.write_timeout_ms),
        };
        let mut tasks = vec![
            spawn_named(
                "batcher",
                batcher::run(shared.clone(), batch_rx, limits, cancel.clone()),
            ),
            spawn_named("health", readiness::run(shared.clone(), cancel.clone())),
            spawn_named(
                "member-health",
                crate::node::member_health::run(shared.clone(), cancel.clone()),
            ),
            spawn_named(
                "failover",
                crate::node::election_trigger::run(shared.clone(), cancel.clone()),
            ),
        ];
        if let Some(tls) = &config.peer_tls {
            // Set the member set before returning, so the cluster port (served after `start`)
            // never admits anyone on an empty set a restarted member merely has not filled yet.
            tls.set_members(crate::transport::peer_tls::member_ids(
                &shared.raft.metrics().borrow(),
            ));
            tasks.push(spawn_named(
                "peer-tls-members",
                crate::transport::peer_tls::run_member_sync(
                    shared.raft.clone(),
                    tls.clone(),
                    cancel.clone(),
                ),
            ));
        }
        tracing::info!(node_id = config.node_id, dir = %dir.display(), "cluster node started");
        Ok(Arc::new(Self {
            shared,
            reader,
            events,
            tasks: Mutex::new(tasks),
            _db: db,
        }))
    }

    pub fn id(&self) -> NodeId {
        self.shared.id
    }

    pub fn raft(&self) -> &Raft {
        &self.shared.raft
    }

    pub fn reader(&self) -> &StateReader {
        &self.reader
    }

    /// Ephemeral notices from peers, as sent by `send_ephemeral` on another node.
    pub fn ephemeral_rx(&self) -> tokio::sync::broadcast::Receiver<bytes::Bytes> {
        self.shared.ephemeral.subscribe()
    }

    /// Sends an ephemeral notice to every other member, fire and forget: it is not durable,
    /// not retried, and a slow or dead peer only costs a short timeout in a spawned task.
    pub fn send_ephemeral(&self, body: bytes::Bytes) {
        for (id, info) in self.shared.members() {
            if id == self.shared.id {
                continue;
            }
            let http = self.shared.http.clone();
            let addr = info.cluster_addr.clone();
            let body = body.clone();
            tokio::spawn(async move {
                if let Err(e) = http
                    .post_raw(&addr, rpc::PATH_EPHEMERAL, body, EPHEMERAL_TIMEOUT)
                    .await
                {
                    tracing::debug!(peer = %addr, error = %e.short(), "ephemeral notice not delivered");
                }
            });
        }
    }

    pub fn events(&self) -> &EventBus {
        &self.events
    }

    pub fn metrics(&self) -> RaftMetrics {
        self.shared.raft.metrics().borrow().clone()
    }

    pub fn readiness(&self) -> Readiness {
        self.shared.current_readiness()
    }

    pub fn status(&self) -> NodeStatusWire {
        self.shared.status()
    }

    /// Fires when Raft stopped on a fatal (storage) error.
    pub fn fatal(&self) -> CancellationToken {
        self.shared.fatal.clone()
    }

    /// Fires when the leader told this node it was removed from the cluster.
    pub fn removed(&self) -> CancellationToken {
        self.shared.removed.clone()
    }

    /// Whether this node's storage already belongs to a cluster.
    pub async fn is_initialized(&self) -> Result<bool, ClusterError> {
        self.shared
            .raft
            .is_initialized()
            .await
            .map_err(|e| ClusterError::Storage(e.to_string()))
    }

    /// Creates a new cluster whose only voter is this node.
    pub async fn initialize(&self) -> Result<(), ClusterError> {
        let mut members = BTreeMap::new();
        members.insert(self.shared.id, self.shared.config.info.clone());
        match self.shared.raft.initialize(members).await {
            Ok(()) => Ok(()),
            Err(openraft::error::RaftError::APIError(
                openraft::error::InitializeError::NotAllowed(_),
            )) => Err(ClusterError::AlreadyInitialized),
            Err(e) => Err(ClusterError::Storage(e.to_string())),
        }
    }

    /// Replicates `cmd` through Raft (forwarding to the leader if needed, batching with
    /// concurrent writes) and returns the outcome with the log index that holds it. Returns only
    /// after a quorum has the entry on disk and this cluster's leader applied it.
    pub async fn write(&self, cmd: Command) -> Result<(Applied, u64), ClusterError> {
        self.check_version(&cmd).await?;
        let (outcome, index) = self.shared.submit(cmd).await?;
        Ok((outcome?, index))
    }

    /// Queues `cmd` for group commit and returns a future of its outcome. Commands queued one
    /// after another by one task are proposed in that order (one client's messages keep their
    /// order), while their outcomes can be awaited concurrently.
    pub async fn write_queued(
        &self,
        cmd: Command,
    ) -> Result<
        impl std::future::Future<Output = Result<(Applied, u64), ClusterError>> + use<>,
        ClusterError,
    > {
        self.check_version(&cmd).await?;
        let (tx, rx) = oneshot::channel();
        self.shared
            .batch_tx
            .send(Pending { cmd, reply: tx })
            .await
            .map_err(|_| ClusterError::ShuttingDown)?;
        Ok(async move {
            let (outcome, index) = rx.await.map_err(|_| ClusterError::ShuttingDown)??;
            Ok((outcome?, index))
        })
    }

    /// Refuses a command that some member's binary could not decode (a rolling upgrade is
    /// under way). Asks the members again before refusing, so the gate opens as soon as the
    /// last member has been upgraded.
    async fn check_version(&self, cmd: &Command) -> Result<(), ClusterError> {
        use std::sync::atomic::Ordering;
        let need = cmd.min_version();
        if need <= self.shared.active_version.load(Ordering::Relaxed) {
            return Ok(());
        }
        // Once an entry of this version is committed, every member had it: the gate stays open.
        let active = self.reader.active_version().unwrap_or(1);
        self.shared
            .active_version
            .fetch_max(active, Ordering::Relaxed);
        if active >= need {
            return Ok(());
        }
        let all = self.shared.members();
        let members = || all.iter().map(|(id, info)| (id, info));
        let v = &self.shared.versions;
        if v.cluster_min(self.shared.id, members()) >= need {
            return Ok(());
        }
        v.refresh(&self.shared.http, self.shared.id, members())
            .await;
        if v.cluster_min(self.shared.id, members()) >= need {
            return Ok(());
        }
        Err(ClusterError::Unavailable(format!(
            "a rolling upgrade is in progress: '{}' needs every node at command version {need}",
            cmd.kind()
        )))
    }

    /// Waits until this node has applied `index` (read-your-writes across nodes).
    pub async fn wait_applied(&self, index: u64, timeout: Duration) -> Result<(), ClusterError> {
        let applied = self.metrics().last_applied.map(|l| l.index).unwrap_or(0);
        if applied >= index {
            return Ok(());
        }
        self.shared
            .raft
            .wait(Some(timeout))
            .applied_index_at_least(Some(index), "read-your-writes")
            .await
            .map(|_| ())
            .map_err(|_| ClusterError::NotCaughtUp { index })
    }

    /// Brings this node's applied state up to what the leader has applied right now (a
    /// read-index round: one status call to the leader, then a wait). Used before answering
    /// "does not exist" from local state, so a follower that lags a little never refuses a name
    /// the cluster already knows.
    pub async fn sync_with_leader(&self, timeout: Duration) -> Result<(), ClusterError> {
        let m = self.metrics();
        let target = match m.current_leader {
            // The leader acknowledges a write only after applying it, so its local state already
            // holds every acknowledged write.
            Some(l) if l == self.shared.id => return Ok(()),
            Some(l) => {
                let info = self
                    .shared
                    .node_info(l)
                    .ok_or_else(|| ClusterError::Unavailable("leader address unknown".into()))?;
                let st = self
                    .shared
                    .http
                    .status(&info.cluster_addr, timeout)
                    .await
                    .map_err(|e| ClusterError::Unavailable(e.to_string()))?;
                st.last_applied.unwrap_or(0)
            }
            None => return Err(ClusterError::Unavailable("no leader".into())),
        };
        self.wait_applied(target, timeout).await
    }

    /// Adds a running, uninitialized node: learner first, caught up, then voter. Forwarded to the
    /// leader when called on a follower.
    pub async fn add_node(&self, id: NodeId, info: NodeInfo) -> Result<(), ClusterError> {
        self.membership(MembershipRequest::Add { id, info }).await
    }

    /// Removes a node from the voters and the membership, refusing unsafe removals.
    pub async fn remove_node(&self, id: NodeId) -> Result<(), ClusterError> {
        self.membership(MembershipRequest::Remove { id }).await
    }

    async fn membership(&self, req: MembershipRequest) -> Result<(), ClusterError> {
        let leader = self.metrics().current_leader;
        let reply = match leader {
            Some(l) if l == self.shared.id => membership_on_leader(&self.shared, req).await,
            Some(l) => {
                let info = self
                    .shared
                    .node_info(l)
                    .ok_or_else(|| ClusterError::Unavailable("leader address unknown".into()))?;
                self.shared
                    .http
                    .post_bin::<_, MembershipReply>(
                        &info.cluster_addr,
                        rpc::PATH_MEMBERSHIP,
                        &req,
                        Duration::from_secs(90),
                    )
                    .await
                    .map_err(|e| ClusterError::Unavailable(e.to_string()))?
            }
            None => return Err(ClusterError::Unavailable("no leader".into())),
        };
        reply.map_err(ClusterError::from)
    }

    /// The latest member-health view (refreshed about once a second).
    pub fn health_view(&self) -> Arc<crate::node::member_health::HealthView> {
        self.shared.health.borrow().clone()
    }

    /// How long ago the periodic member-health probe last started.
    pub fn periodic_probe_age(&self) -> Duration {
        self.shared
            .health_tick
            .lock()
            .map(|t| t.elapsed())
            .unwrap_or_default()
    }

    /// Notified whenever a new member-health view is published.
    pub fn health_watch(
        &self,
    ) -> tokio::sync::watch::Receiver<Arc<crate::node::member_health::HealthView>> {
        self.shared.health.subscribe()
    }

    /// Probes now and publishes the result: after a membership or drain change, so the caller's
    /// reply and every reader see it without waiting for the next period.
    pub async fn refresh_health(&self) -> Arc<crate::node::member_health::HealthView> {
        let view = crate::node::member_health::probe(&self.shared).await;
        crate::node::member_health::publish(&self.shared, view);
        self.health_view()
    }

    /// Stops Raft and the node's tasks. Idempotent.
    pub async fn shutdown(&self) {
        self.shared.cancel.cancel();
        if let Err(e) = self.shared.raft.shutdown().await {
            tracing::warn!(node_id = self.shared.id, error = %e, "raft shutdown");
        }
        let tasks = self
            .tasks
            .lock()
            .map(|mut t| std::mem::take(&mut *t))
            .unwrap_or_default();
        for t in tasks {
            let _ = t.await;
        }
        if let Err(e) = self._db.flush_async().await {
            tracing::warn!(node_id = self.shared.id, error = %e, "sled flush on shutdown");
        }
    }

    /// Marks the data dir so this node never rejoins with stale state, and signals the owner.
    pub(crate) fn mark_removed(shared: &Shared) {
        let path = shared.config.data_dir.join(REMOVED_MARKER);
        if let Err(e) = std::fs::write(&path, b"removed from the cluster\n") {
            tracing::error!(node_id = shared.id, error = %e, "cannot write removal marker");
        }
        shared.removed.cancel();
    }
}

type OpenedSm = (StateMachineStore, EventBus);

fn open_storage(
    dir: &Path,
    cache_bytes: u64,
) -> Result<(LogStore, sled::Db, OpenedSm), ClusterError> {
    let log = LogStore::open(dir).map_err(|e| ClusterError::Storage(format!("raft log: {e}")))?;
    let db = sled::Config::new()
        .path(dir.join("state"))
        .cache_capacity(cache_bytes)
        .mode(sled::Mode::HighThroughput)
        // The state machine needs no periodic sync of its own: after a crash it is rebuilt from
        // the snapshot file and the fsynced Raft log. sled still writes as its buffers fill, and
        // we flush on snapshot install and on shutdown.
        .flush_every_ms(None)
        .open()
        .map_err(|e| ClusterError::Storage(format!("sled: {e}")))?;
    let events = EventBus::new(4096);
    let sm = StateMachineStore::open(&db, dir, events.clone())
        .map_err(|e| ClusterError::Storage(format!("state machine: {e}")))?;
    Ok((log, db, (sm, events)))
}

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

/// Runs on the leader. Changes are applied one at a time; each is refused if unsafe.
pub(crate) async fn membership_on_leader(
    shared: &Arc<Shared>,
    req: MembershipRequest,
) -> MembershipReply {
    let Ok(_guard) = shared.membership_lock.try_lock() else {
        return Err(MembershipError::InProgress);
    };
    let m = shared.raft.metrics().borrow().clone();
    if m.current_leader != Some(shared.id) {
        return Err(MembershipError::NotLeader {
            leader: m.current_leader,
        });
    }
    let membership = m.membership_config.membership().clone();
    if membership.get_joint_config().len() > 1 {
        return Err(MembershipError::InProgress);
    }
    // Also refuse while the latest membership is not yet committed (another change in flight).
    if m.membership_config.log_id().map(|l| l.index) > m.last_applied.map(|l| l.index) {
        return Err(MembershipError::InProgress);
    }
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    // A learner left over from an add that did not finish is a pending change too.
    let learners: Vec<NodeId> = membership.learner_ids().collect();
    let finishes_pending = match &req {
        MembershipRequest::Add { id, .. } | MembershipRequest::Remove { id } => learners == [*id],
    };
    if !learners.is_empty() && !finishes_pending {
        return Err(MembershipError::InProgress);
    }
    match req {
        MembershipRequest::Add { id, info } => {
            if voters.contains(&id) {
                if membership.get_node(&id) == Some(&info) {
                    return Ok(());
                }
                return Err(MembershipError::Invalid(format!(
                    "node {id} is already a voter with other addresses"
                )));
            }
            // Check the newcomer answers before touching the membership: a typo in an address
            // would otherwise leave a learner that never catches up.
            let probe = shared
                .http
                .status(&info.cluster_addr, Duration::from_secs(2))
                .await;
            match probe {
                Err(e) => {
                    return Err(MembershipError::Invalid(format!(
                        "node {id} is not reachable at {}: {e}",
                        info.cluster_addr
                    )));
                }
                Ok(st) if st.id != id => {
                    return Err(MembershipError::Invalid(format!(
                        "the node at {} says it is node {}, not {id}",
                        info.cluster_addr, st.id
                    )));
                }
                Ok(_) => {}
            }
            // A binary older than what the cluster already committed could not decode the log.
            let active = shared.reader.active_version().unwrap_or(1);
            match shared
                .http
                .version(&info.cluster_addr, Duration::from_secs(2))
                .await
            {
                Ok(v) if v.command_version >= active => {}
                Ok(v) => {
                    return Err(MembershipError::Invalid(format!(
                        "node {id} runs command version {}, but the cluster is at {active}: upgrade it first",
                        v.command_version
                    )));
                }
                Err(e) => {
                    return Err(MembershipError::Invalid(format!(
                        "node {id} did not say which version it runs ({}); upgrade it first",
                        e.short()
                    )));
                }
            }
            tracing::info!(node_id = shared.id, new_node = id, %info, "adding learner");
            let info_addr = info.cluster_addr.clone();
            shared
                .raft
                .add_learner(id, info, false)
                .await
                .map_err(map_change_err)?;
            // openraft's own "blocking" add returns at once while the log is shorter than its
            // replication lag threshold; wait for real catch-up instead: the learner must have
            // every entry the leader had when it was added.
            let target = shared.raft.metrics().borrow().last_log_index.unwrap_or(0);
            let caught_up = shared
                .raft
                .wait(Some(Duration::from_secs(60)))
                .metrics(
                    |m| {
                        m.replication
                            .as_ref()
                            .and_then(|r| r.get(&id).copied().flatten())
                            .is_some_and(|l| l.index >= target)
                    },
                    "learner caught up",
                )
                .await;
            if caught_up.is_err() {
                return Err(MembershipError::Unavailable(format!(
                    "node {id} did not catch up within 60 s; it stays a learner (retry the add, or remove it)"
                )));
            }
            tracing::info!(
                node_id = shared.id,
                new_node = id,
                "promoting learner to voter"
            );
            shared
                .raft
                .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                .await
                .map_err(map_change_err)?;
            // Return once the new voter also calls itself ready (its health check runs every
            // 200 ms), so an operator's next `status` does not show a fresh member as degraded.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            while tokio::time::Instant::now() < deadline {
                let st = shared
                    .http
                    .status(&info_addr, Duration::from_millis(500))
                    .await;
                if st.is_ok_and(|st| st.ready) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok(())
        }
        MembershipRequest::Remove { id } => {
            if membership.get_node(&id).is_none() {
                return Err(MembershipError::NotFound(format!(
                    "node {id} is not a member"
                )));
            }
            let remaining: BTreeSet<NodeId> = voters.iter().copied().filter(|v| *v != id).collect();
            if voters.contains(&id) && remaining.is_empty() {
                return Err(MembershipError::Unsafe(
                    "refusing to remove the last voter".into(),
                ));
            }
            if voters.contains(&id) {
                // The new configuration must have a reachable majority right now, or the cluster
                // would stop accepting writes the moment the change commits.
                let mut reachable = 0usize;
                for v in &remaining {
                    if *v == shared.id {
                        reachable += 1;
                        continue;
                    }
                    if let Some(info) = membership.get_node(v) {
                        let ok = shared
                            .http
                            .status(&info.cluster_addr, Duration::from_millis(500))
                            .await
                            .is_ok();
                        if ok {
                            reachable += 1;
                        }
                    }
                }
                if reachable < remaining.len() / 2 + 1 {
                    return Err(MembershipError::Unsafe(format!(
                        "removing node {id} would leave {reachable} reachable of {} voters, not a majority",
                        remaining.len()
                    )));
                }
            }
            tracing::info!(node_id = shared.id, removed_node = id, "removing node");
            let change = if voters.contains(&id) {
                ChangeMembers::RemoveVoters(BTreeSet::from([id]))
            } else {
                ChangeMembers::RemoveNodes(BTreeSet::from([id]))
            };
            shared
                .raft
                .change_membership(change, false)
                .await
                .map_err(map_change_err)?;
            // A removed node never hears of its removal through Raft; tell it, best effort, so it
            // stops campaigning (0.9 has no pre-vote, its elections would disturb the cluster).
            if let Some(info) = membership.get_node(&id) {
                let r: Result<(), TransportError> = shared
                    .http
                    .post_bin(
                        &info.cluster_addr,
                        rpc::PATH_REMOVED,
                        &shared.id,
                        Duration::from_secs(1),
                    )
                    .await;
                if let Err(e) = r {
                    tracing::warn!(removed_node = id, error = %e, "could not tell the removed node to stop; stop it by hand");
                }
            }
            Ok(())
        }
    }
}

fn map_change_err(
    e: openraft::error::RaftError<NodeId, openraft::error::ClientWriteError<NodeId, NodeInfo>>,
) -> MembershipError {
    use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => MembershipError::NotLeader {
            leader: f.leader_id,
        },
        RaftError::APIError(ClientWriteError::ChangeMembershipError(
            ChangeMembershipError::InProgress(_),
        )) => MembershipError::InProgress,
        RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => {
            MembershipError::Invalid(c.to_string())
        }
        other => MembershipError::Unavailable(other.to_string()),
    }
}

impl ClusterNode {
    /// Every member (voters and learners) of the current membership, as this node knows it.
    pub fn members(&self) -> Vec<(NodeId, NodeInfo)> {
        self.shared.members()
    }

    /// The static DNS records as this node has applied them, sorted by name and type. A local
    /// read of at most `dns_records::MAX_RECORDS` small values: cheap enough once a second.
    pub fn dns_records(&self) -> Result<Vec<crate::state::dns_records::DnsRecord>, ClusterError> {
        self.reader
            .dns_records()
            .map_err(|e| ClusterError::Storage(format!("reading DNS records: {e}")))
    }

    /// Members an admin drained, as this node has applied it (a few keys; called on every
    /// `/readyz` and DNS refresh). A storage error is logged and reads as "none draining":
    /// a node that cannot read its own state fails its other checks anyway, and DNS must keep
    /// answering rather than drop every node.
    pub fn draining_nodes(&self) -> BTreeSet<NodeId> {
        crate::node::member_health::draining_nodes(&self.shared)
    }

    /// Whether this node is draining (see `draining_nodes`).
    pub fn is_draining(&self) -> bool {
        self.draining_nodes().contains(&self.shared.id)
    }
}
