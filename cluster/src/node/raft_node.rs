//! `ClusterNode`: one running Raft member with its storage, network, group-commit batcher and
//! health tracker. This is the cluster crate's public face for the `web` and `node` crates.
//!
//! Owns: opening storage, starting openraft with LAN timeouts and the member's tasks, the write
//! path (`write`) with its rolling-upgrade gate, read-your-writes (`wait_applied`), local reads
//! of members, DNS records and draining, and shutdown. Membership changes are `membership`'s.
//! Must never expose `ForwardToLeader` to callers: a follower forwards writes itself.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::SnapshotPolicy;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::command::{Applied, Command};
use crate::error::ClusterError;
use crate::node::batcher::{self, BatchLimits, Pending};
use crate::node::config::ClusterConfig;
use crate::node::readiness::{self, Readiness};
use crate::node::shared::Shared;
use crate::node::spawn_named;
use crate::state::events::EventBus;
use crate::storage::sm_store::StateReader;
use crate::transport::network::{NetworkFactory, PeerHttp};
use crate::transport::rpc::{self, NodeStatusWire};
use crate::types::{NodeId, NodeInfo, Raft, RaftMetrics};

const EPHEMERAL_TIMEOUT: Duration = Duration::from_millis(500);
/// See `raft_config`. The cluster port's body limit (`rpc_server`) admits far more.
pub const SNAPSHOT_CHUNK_BYTES: u64 = 2 << 20;

/// A running cluster member.
pub struct ClusterNode {
    pub(crate) shared: Arc<Shared>,
    reader: StateReader,
    events: EventBus,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// The log store's last committed index (the commit-index metric).
    commit_hint: Arc<crate::storage::commit_hint::CommitHint>,
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
        // Owner-only (0700): the log, the sled tree and the sealed TLS key all live here.
        crate::storage::private_dir::ensure_private_dir(&dir)
            .map_err(|e| ClusterError::Storage(e.to_string()))?;
        let raft_config = raft_config(&config)?;
        let opened = open_storage(
            &dir,
            crate::storage::recovery::StoreOptions {
                cache_bytes: config.sled_cache_bytes,
                segment_bytes: config.log_segment_bytes,
            },
        )
        .await?;
        let (log, db, sm, events) = (opened.log, opened.db, opened.sm, opened.events);
        let commit_hint = log.commit_hint();
        let heal = crate::node::heal_gate::HealGate::new(dir.clone(), opened.healing);
        let reader = sm.reader();
        let version_stop = sm.version_stop();
        let snapshot_installing = sm.installing_flag();
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
        let disk = Arc::new(crate::storage::disk_space::DiskSpace::new(
            config.min_free_bytes,
        ));
        // Sampled once before the first request, so the write gate and readiness are right
        // from the start; `disk_guard` samples it from then on.
        if let Err(e) = disk.sample(&dir) {
            tracing::warn!(node_id = config.node_id, path = %dir.display(), error = %e, "cannot read the data directory's free space");
        }
        let blobs = Arc::new(
            crate::blobs::BlobStore::open(&dir)
                .map_err(|e| ClusterError::Storage(format!("blob store: {e}")))?,
        );
        let shared = Arc::new(Shared {
            id: config.node_id,
            raft,
            http,
            cancel: cancel.clone(),
            readiness: Mutex::new((Readiness::default(), std::time::Instant::now())),
            config: config.clone(),
            removed: CancellationToken::new(),
            fatal: CancellationToken::new(),
            version_stop,
            batch_tx,
            membership_lock: tokio::sync::Mutex::new(()),
            last_leader_contact: Mutex::new(std::time::Instant::now()),
            snapshot_keepalive: Default::default(),
            snapshot_installing,
            ephemeral: tokio::sync::broadcast::channel(1024).0,
            versions: crate::node::versions::PeerVersions::default(),
            reader: reader.clone(),
            active_version: std::sync::atomic::AtomicU16::new(1),
            health_tick: Mutex::new(std::time::Instant::now()),
            health: tokio::sync::watch::Sender::new(Arc::new(
                crate::node::member_health::HealthView::empty(),
            )),
            disk,
            heal,
            handover: crate::node::handover::HandoverState::new(),
            blobs,
        });
        let tasks = spawn_tasks(&shared, batch_rx, &config, &cancel);
        tracing::info!(node_id = config.node_id, dir = %dir.display(), "cluster node started");
        Ok(Arc::new(Self {
            shared,
            reader,
            events,
            tasks: Mutex::new(tasks),
            commit_hint,
            _db: db,
        }))
    }

    pub fn id(&self) -> NodeId {
        self.shared.id
    }

    /// The data directory this node's storage lives in.
    pub fn data_dir(&self) -> &Path {
        &self.shared.config.data_dir
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

    /// Highest log index this node knows to be committed (0 before it learns one).
    pub fn commit_index(&self) -> u64 {
        self.commit_hint.last_index()
    }

    pub fn readiness(&self) -> Readiness {
        self.shared.current_readiness()
    }

    /// True while this node installs a snapshot received from the leader: its state is then
    /// partly old, partly new, and must not answer a client (see `web::install_gate`).
    pub fn installing_snapshot(&self) -> bool {
        self.shared
            .snapshot_installing
            .load(std::sync::atomic::Ordering::Acquire)
    }

    pub fn status(&self) -> NodeStatusWire {
        self.shared.status()
    }

    /// Fires when Raft stopped on a fatal (storage) error.
    pub fn fatal(&self) -> CancellationToken {
        self.shared.fatal.clone()
    }

    /// Why this node stopped applying, when it reached an entry that needs a newer binary
    /// (see `state::StateError::NeedsNewerVersion`); it then stays up, not ready.
    pub fn version_stop(&self) -> Option<String> {
        self.shared.version_stop.get().cloned()
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
        self.shared.write_gate()?;
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
        let need = cmd.min_version();
        if self.cluster_supports(need).await {
            return Ok(());
        }
        Err(ClusterError::Unavailable(format!(
            "a rolling upgrade is in progress: '{}' needs every node at command version {need}",
            cmd.kind()
        )))
    }

    /// Whether every member understands command version `need` (asks the members whose
    /// version is unknown or older before saying no). Callers with an older fallback command
    /// use this to choose which one to propose.
    pub async fn cluster_supports(&self, need: u16) -> bool {
        use std::sync::atomic::Ordering;
        if need <= self.shared.active_version.load(Ordering::Relaxed) {
            return true;
        }
        // Once an entry of this version is committed, every member had it: the gate stays open.
        let active = self.reader.active_version().unwrap_or(1);
        self.shared
            .active_version
            .fetch_max(active, Ordering::Relaxed);
        if active >= need {
            return true;
        }
        let all = self.shared.members();
        let members = || all.iter().map(|(id, info)| (id, info));
        let v = &self.shared.versions;
        if v.cluster_min(self.shared.id, members()) >= need {
            return true;
        }
        v.refresh(&self.shared.http, self.shared.id, members())
            .await;
        v.cluster_min(self.shared.id, members()) >= need
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

    /// Before a planned stop: when this node leads, hands leadership to an up-to-date follower
    /// (see `handover`) within `bound` plus the leader lease, then lets the writes it held and
    /// queued go to the new leader. Returns the new leader, or None when this node did not lead
    /// or the handover failed (the caller stops anyway; the followers then elect after the
    /// lease, as without a handover).
    pub async fn hand_over_leadership(&self, bound: Duration) -> Option<NodeId> {
        if self.metrics().state != openraft::ServerState::Leader {
            return None;
        }
        let lease = Duration::from_millis(self.shared.config.election_timeout_max_ms);
        let target = match crate::node::handover::hand_over(&self.shared, bound + lease).await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(node_id = self.shared.id, error = %e, "stopping without a leadership handover; the followers elect after the lease");
                return None;
            }
        };
        crate::node::handover::drain_writes(&self.shared, bound).await;
        Some(target)
    }

    /// Stops Raft and the node's tasks, then makes sled durable and writes its proof (see
    /// `storage::proof`) so the next start can trust it. Idempotent.
    pub async fn shutdown(&self) {
        // After a fatal storage error the state machine may have applied entries this node's
        // log no longer holds durably (a failed fsync is cut back): no proof then, the next
        // start rebuilds from what is durable.
        let fatal = self.shared.fatal.is_cancelled()
            || matches!(
                &self.shared.raft.metrics().borrow().running_state,
                Err(e) if !matches!(e, openraft::error::Fatal::Stopped)
            );
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
        if fatal {
            if let Err(e) = self._db.flush_async().await {
                tracing::warn!(node_id = self.shared.id, error = %e, "sled flush on shutdown");
            }
            tracing::warn!(
                node_id = self.shared.id,
                "raft stopped on a fatal error: no proof of the state machine written; the next start rebuilds it"
            );
            return;
        }
        let (dir, db, tree) = (
            self.shared.config.data_dir.clone(),
            self._db.clone(),
            self.reader.tree().raw().clone(),
        );
        let started = std::time::Instant::now();
        let written =
            tokio::task::spawn_blocking(move || crate::storage::proof::write(&dir, &db, &tree))
                .await;
        match written {
            Ok(Ok(p)) => tracing::info!(
                node_id = self.shared.id,
                applied = ?p.applied,
                pairs = p.pairs,
                ms = started.elapsed().as_millis() as u64,
                "state machine store synced and its proof written"
            ),
            Ok(Err(e)) => {
                tracing::warn!(node_id = self.shared.id, error = %e, "no proof of the state machine written; the next start rebuilds it")
            }
            Err(e) => {
                tracing::warn!(node_id = self.shared.id, error = %e, "proof task failed; the next start rebuilds the state machine")
            }
        }
    }

    /// Marks the data dir so this node never rejoins with stale state, and signals the owner.
    pub(crate) fn mark_removed(shared: &Shared) {
        let path = shared.config.data_dir.join(REMOVED_MARKER);
        // Durable (temp file, fsync, rename, directory fsync): a marker a power cut undoes
        // would let this node start again with stale state.
        if let Err(e) = crate::storage::fsutil::write_atomic(&path, b"removed from the cluster\n") {
            tracing::error!(node_id = shared.id, error = %e, "cannot write removal marker");
        }
        shared.removed.cancel();
    }

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

/// openraft's configuration from ours, validated (openraft knows which timings contradict).
fn raft_config(config: &ClusterConfig) -> Result<Arc<openraft::Config>, ClusterError> {
    let raft_config = openraft::Config {
        cluster_name: "conclave".into(),
        heartbeat_interval: config.heartbeat_interval_ms,
        election_timeout_min: config.election_timeout_min_ms,
        election_timeout_max: config.election_timeout_max_ms,
        install_snapshot_timeout: config.install_snapshot_timeout_ms,
        // A snapshot travels as a file read in chunks of this size (each chunk is one RPC, and
        // held about four times in memory along the way: read buffer, encoded request, body,
        // decoded request): 2 MiB is a few ms on a LAN and keeps that well under the memory
        // bound (docs/architecture.md, "Snapshots").
        snapshot_max_chunk_size: SNAPSHOT_CHUNK_BYTES,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_logs_since_last),
        max_in_snapshot_log_to_keep: config.max_in_snapshot_log_to_keep,
        max_payload_entries: config.max_payload_entries,
        // openraft's own election timer stays off for good: without a pre-vote it lets a node
        // that was cut off or is installing a snapshot raise its term and depose a healthy
        // leader. `election_gate` is the only campaigner.
        enable_elect: false,
        ..Default::default()
    };
    Ok(Arc::new(raft_config.validate().map_err(|e| {
        ClusterError::Storage(format!("invalid raft timing: {e}"))
    })?))
}

/// The member's long-lived tasks; `ClusterNode::shutdown` awaits them after cancelling.
fn spawn_tasks(
    shared: &Arc<Shared>,
    batch_rx: mpsc::Receiver<Pending>,
    config: &ClusterConfig,
    cancel: &CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
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
            "leader-watch",
            crate::metrics::watch_leader(shared.clone(), cancel.clone()),
        ),
        spawn_named(
            "member-health",
            crate::node::member_health::run(shared.clone(), cancel.clone()),
        ),
        spawn_named(
            "election-gate",
            crate::node::election_gate::run(shared.clone(), cancel.clone()),
        ),
        spawn_named(
            "disk-guard",
            crate::node::disk_guard::run(shared.clone(), cancel.clone()),
        ),
        spawn_named(
            "heal-gate",
            crate::node::heal_gate::run(shared.clone(), cancel.clone()),
        ),
        spawn_named(
            "handover",
            crate::node::handover::run(shared.clone(), cancel.clone()),
        ),
        spawn_named(
            "blob-fetch",
            crate::blobs::fetch::run(shared.clone(), cancel.clone()),
        ),
        spawn_named(
            "blob-gc",
            crate::blobs::gc::run(shared.clone(), cancel.clone()),
        ),
        spawn_named(
            "version-activation",
            crate::node::version_activation::run(shared.clone(), cancel.clone()),
        ),
    ];
    if let Some(tls) = &config.peer_tls {
        // Set the member set before returning, so the cluster port (served after `start`)
        // never admits anyone on an empty set a restarted member merely has not filled yet.
        // A healing node's log is empty until the leader's snapshot arrives: it admits the
        // members its heal marker remembers meanwhile, not anyone.
        let fallback = shared.heal.members_hint();
        let ids = crate::transport::peer_tls::member_ids(&shared.raft.metrics().borrow());
        tls.set_members(if ids.is_empty() {
            fallback.clone()
        } else {
            ids
        });
        tasks.push(spawn_named(
            "peer-tls-members",
            crate::transport::peer_tls::run_member_sync(
                shared.raft.clone(),
                tls.clone(),
                fallback,
                cancel.clone(),
            ),
        ));
    }
    tasks
}

/// Opens and checks the log, snapshot and sled (`storage::recovery`: quarantine and heal on
/// corruption, rebuild sled when nothing proves it), off the async runtime.
async fn open_storage(
    dir: &Path,
    opts: crate::storage::recovery::StoreOptions,
) -> Result<crate::storage::recovery::Opened, ClusterError> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || crate::storage::recovery::open(&dir, opts))
        .await
        .map_err(|e| ClusterError::Internal(format!("open storage: {e}")))?
        .map_err(|e| ClusterError::Storage(e.to_string()))
}
