//! `conclave run` and `conclave init`: start one node from its config, serve the client API and
//! the cluster port, stop cleanly on a signal.
//!
//! Owns the wiring of `cluster` and `web` into a process. `serve_until` takes already-bound listeners
//! and a cancellation token so tests can run a node in-process on port 0. With `[tls]` it also
//! wires HTTPS (`tls`), the plain-HTTP port, mutual TLS on the cluster port (`cluster::transport::peer_tls`)
//! and the node certificate's renewal (`node_cert`); without, nothing of that runs and the node
//! behaves exactly as before TLS existed.
//!
//! `run` is also the node's supervisor: after a fatal storage error (a failed write or fsync,
//! ENOSPC) it stops everything cleanly, waits until storage works again (`storage_wait`) and
//! starts the node again from what is on disk, in the same process (signals, logging and the
//! systemd unit stay as they are). A removed node, a signal, or an error on the first start
//! still end the process.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use cluster::{ClusterNode, Command, Role};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::node_cert;
use crate::signals;
use crate::storage_wait::{self, Listeners, WaitEnd, WaitTls};

/// Binds the node's listeners (API, cluster port, HTTPS with `[tls]`).
async fn bind_all(config: &Config) -> anyhow::Result<Listeners> {
    let api = TcpListener::bind(config.api_addr)
        .await
        .with_context(|| format!("cannot listen on api_addr {}", config.api_addr))?;
    let peers = TcpListener::bind(config.cluster_addr)
        .await
        .with_context(|| format!("cannot listen on cluster_addr {}", config.cluster_addr))?;
    let https = match &config.tls {
        Some(t) => Some(
            TcpListener::bind(t.https_addr)
                .await
                .with_context(|| format!("cannot listen on tls.https_addr {}", t.https_addr))?,
        ),
        None => None,
    };
    Ok(Listeners { api, peers, https })
}

/// Binds again the listeners this process just released (a connection in its last drain may
/// hold a port for a moment); `None` when `cancel` fired first.
async fn rebind(config: &Config, cancel: &CancellationToken) -> anyhow::Result<Option<Listeners>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match bind_all(config).await {
            Ok(l) => return Ok(Some(l)),
            Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
            Err(e) => tracing::debug!(error = %e, "rebinding; retrying"),
        }
        tokio::select! {
            _ = cancel.cancelled() => return Ok(None),
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}

/// How long a stopping leader may hold writes to hand over leadership (plus the leader lease
/// if it was elected just now), and then again to let them go to the new leader.
const HANDOVER_BOUND: Duration = Duration::from_secs(2);

/// A storage failure this soon after a restart counts as the same fault going on.
const FAILED_AGAIN_WITHIN: Duration = Duration::from_secs(30);

/// How one run of the node ended.
enum Ended {
    /// A signal, or the owner's token.
    Stopped,
    /// The cluster removed this node.
    Removed,
    /// Raft stopped on a storage error (the reason), or the node could not start again after
    /// one: the supervisor waits for storage and starts it again.
    Fatal(String),
}

/// Runs a node until a signal arrives or the cluster removes it, restarting it in-process
/// after a fatal storage error once storage works again.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    tokio::spawn(async move {
        signals::shutdown_requested().await;
        tracing::info!("shutdown requested");
        stop.cancel();
    });
    run_until(config, cancel, crate::service_report::Manager::from_env()).await
}

/// `run` for a caller that owns the stop request (the Windows service's control handler) and
/// the service manager to tell about readiness: `stop` firing is a graceful stop, leadership
/// handed over first, exactly as SIGTERM is for `run`.
pub async fn run_until(
    config: Config,
    cancel: CancellationToken,
    manager: crate::service_report::Manager,
) -> anyhow::Result<()> {
    let mut listeners = bind_all(&config).await?;
    let mut restarts: u64 = 0;
    // The first wait after a failure. It doubles while the node fails again soon after each
    // restart: a fault the probe cannot see (only the log's fsync fails) must not make the
    // node flap. A node that was leader comes back as leader (openraft restores its committed
    // vote) and its heartbeats would keep the others from electing one of them; a longer
    // silence lets them.
    let mut first_wait = storage_wait::FIRST_BACKOFF;
    let mut started_at = tokio::time::Instant::now();
    loop {
        // Each run gets its own token: a fatal error stops this run, the signal stops all
        // (through `serve_until`, which first hands over leadership: not a child token).
        let round = CancellationToken::new();
        let serving = serve_until(config.clone(), listeners, &cancel, round, manager.clone());
        let ended = match serving.await {
            Ok(ended) => ended,
            // After a storage failure the disk may still fail while opening: wait again.
            Err(e) if restarts > 0 => Ended::Fatal(format!("{e:#}")),
            Err(e) => return Err(e),
        };
        let reason = match ended {
            Ended::Stopped | Ended::Removed => return Ok(()),
            Ended::Fatal(_) if cancel.is_cancelled() => return Ok(()),
            Ended::Fatal(reason) => reason,
        };
        restarts += 1;
        first_wait = if started_at.elapsed() < FAILED_AGAIN_WITHIN {
            (first_wait * 2).min(storage_wait::MAX_BACKOFF)
        } else {
            storage_wait::FIRST_BACKOFF
        };
        tracing::error!(node_id = config.node_id, %reason, restarts, path = %config.data_dir.display(), "storage failed: the node stopped and waits until storage works, then restarts from what is on disk");
        let Some(waiting) = rebind(&config, &cancel).await? else {
            return Ok(());
        };
        let tls = wait_tls(&config);
        match storage_wait::wait(&config, reason, first_wait, waiting, tls, &cancel, &manager).await
        {
            WaitEnd::Cancelled => {
                tracing::info!(
                    node_id = config.node_id,
                    "stopped while waiting for storage"
                );
                return Ok(());
            }
            WaitEnd::Usable => {}
        }
        listeners = match rebind(&config, &cancel).await? {
            Some(l) => l,
            None => return Ok(()),
        };
        tracing::info!(
            node_id = config.node_id,
            restarts,
            "restarting the node in-process"
        );
        started_at = tokio::time::Instant::now();
    }
}

/// The TLS pieces the stand-in servers use while waiting; each is left out (and logged) if
/// it cannot be loaded, so the wait itself never fails for TLS.
fn wait_tls(config: &Config) -> WaitTls {
    let parts = match load_tls(config) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(node_id = config.node_id, error = %e, "while waiting for storage: TLS material not usable; the cluster port and HTTPS stay silent");
            return WaitTls {
                peer: None,
                https: None,
            };
        }
    };
    let Some(parts) = parts else {
        return WaitTls {
            peer: None,
            https: None,
        };
    };
    let https = crate::tls::CertStore::new_at(
        crate::tls::ring_provider(),
        &parts.files.chain_pem,
        parts.files.key_pem.expose(),
        SystemTime::now(),
    )
    .ok()
    .and_then(|certs| {
        crate::tls::https_server_config(crate::tls::ring_provider(), Arc::new(certs)).ok()
    });
    WaitTls {
        peer: Some(parts.peer),
        https,
    }
}

/// The TLS pieces of a running node (`[tls]` on).
struct TlsParts {
    peer: Arc<cluster::PeerTls>,
    files: node_cert::NodeFiles,
}

/// Loads the node's key and certificate before the cluster starts: the cluster port's mutual
/// TLS needs them for its first connection.
fn load_tls(config: &Config) -> anyhow::Result<Option<TlsParts>> {
    if config.tls.is_none() {
        return Ok(None);
    }
    let workspace = config
        .workspace
        .clone()
        .context("[tls] needs `workspace`")?;
    let kek = crate::ca::Kek::load(&config.kek_path()).with_context(|| {
        format!(
            "TLS is on but the key-encryption key {} is not usable; it unseals this node's key",
            config.kek_path().display()
        )
    })?;
    let files = node_cert::load_node_files(&config.data_dir, config.node_id, &kek)?;
    // An expired certificate is loaded anyway (peers will refuse it until it is renewed from
    // local state right after the start; see `serve`), so the node can come up at all after
    // a long power-off.
    let peer = cluster::PeerTls::new(config.node_id, &files.peer_material(&workspace))
        .context("this node's TLS material")?;
    Ok(Some(TlsParts {
        peer: Arc::new(peer),
        files,
    }))
}

// Long on purpose: start-up and shutdown order in one place (TLS material before the cluster,
// HTTP stopped before Raft); split up, that order would no longer be visible.
/// Serves one node until `requested` (the signal) or `cancel` fires, the cluster removes it, or
/// Raft stops on a fatal storage error, and says which (`run` restarts it after the last). On
/// `requested` a leader first hands leadership to a follower, then everything stops.
async fn serve_until(
    config: Config,
    listeners: Listeners,
    requested: &CancellationToken,
    cancel: CancellationToken,
    manager: crate::service_report::Manager,
) -> anyhow::Result<Ended> {
    let Listeners { api, peers, https } = listeners;
    if config.insecure_plaintext {
        // At every start, so the log of any run in that mode says so.
        tracing::warn!(
            target: web::security_log::TARGET,
            event = "node.insecure_plaintext",
            node_id = config.node_id,
            api = %config.api_addr,
            cluster = %config.cluster_addr,
            "insecure_plaintext = true: serving plain HTTP without TLS on the cluster port and the client API (lab only)"
        );
    }
    let tls = load_tls(&config)?;
    // Read before the node starts, so a token file that went missing stops nothing half-way.
    let scrape_token = match config.metrics.enabled {
        true => config.metrics.token(&config.config_dir)?,
        false => None,
    }
    .map(|t| web::metrics::ScrapeToken::new(&t));
    let mut cluster_config = config.cluster_config();
    cluster_config.peer_tls = tls.as_ref().map(|t| t.peer.clone());
    cluster_config.https_addr = config.advertised_https();
    let node = ClusterNode::start(cluster_config, cancel.child_token())
        .await
        .context("cannot start the cluster node")?;
    tracing::info!(
        node_id = config.node_id,
        api = %config.api_addr,
        cluster = %config.cluster_addr,
        initialized = node.is_initialized().await.unwrap_or(false),
        "node listening"
    );
    let rpc = cluster::transport::rpc_server::serve_cluster_port(
        peers,
        node.rpc_router(),
        tls.as_ref().map(|t| t.peer.clone()),
        cancel.clone(),
    );
    // The CA service: the replicated CA behind `/api/v1/ca`, and its maintenance task.
    let ca = crate::ca_runtime::CaSettings::from_config(&config)
        .map(|settings| Arc::new(crate::ca_runtime::CaService::open(node.clone(), settings)));
    let ca_task = ca
        .clone()
        .map(|ca| ca.spawn_maintenance(cancel.child_token()));
    let mut api_config = config.api_config();
    api_config.ca = ca.clone().map(|ca| ca as web::ca_api::SharedCa);
    api_config.join = Some(Arc::new(crate::join::JoinService::new(&config)));
    if config.metrics.enabled {
        api_config.metrics = Some(Arc::new(web::metrics::MetricsEndpoint {
            registry: crate::metrics::registry(
                node.clone(),
                config.data_dir.clone(),
                config.tls.is_some(),
            ),
            token: scrape_token,
        }));
    }
    let app = web::router(node.clone(), api_config, cancel.child_token());
    // With TLS: the API goes to the HTTPS port and the plain port gets redirects, the trust
    // page and health; the certificate is renewed by its own task.
    let mut renewal_task = None;
    let mut https_task = None;
    let plain_app: anyhow::Result<axum::Router> = match (tls, https) {
        (Some(parts), Some(https)) => 'tls: {
            let Some(ca) = ca.clone() else {
                break 'tls Err(anyhow::anyhow!("[tls] needs `workspace` (the CA)"));
            };
            let (renewal, pending) = match start_renewal(&config, ca.clone(), parts).await {
                Ok(r) => r,
                Err(e) => break 'tls Err(e),
            };
            let server_config = match crate::tls::https_server_config(
                crate::tls::ring_provider(),
                renewal.certs.clone(),
            ) {
                Ok(c) => c,
                Err(e) => break 'tls Err(e.into()),
            };
            let https_port = config
                .advertised_https()
                .and_then(|a| a.rsplit_once(':').and_then(|(_, p)| p.parse().ok()))
                .unwrap_or(https.local_addr().map(|a| a.port()).unwrap_or(443));
            renewal_task = Some(node_cert::spawn_renewal(
                renewal,
                pending,
                cancel.child_token(),
            ));
            let serve = crate::tls::serve_https(
                https,
                app.clone(),
                server_config,
                config.serve_options(),
                cancel.clone(),
            );
            https_task = Some(cluster::spawn_named("https-server", serve));
            let trust = Arc::new(crate::ca_runtime::CaTrust(ca));
            Ok(crate::tls::plain_router(https_port, trust, app))
        }
        (None, _) => Ok(app),
        (Some(_), None) => Err(anyhow::anyhow!(
            "[tls] is set but no HTTPS listener was bound"
        )),
    };
    // A node that cannot serve TLS stops its Raft core cleanly before saying why.
    let plain_app = match plain_app {
        Ok(app) => app,
        Err(e) => {
            cancel.cancel();
            node.shutdown().await;
            return Err(e);
        }
    };
    // The plain port gets the same accept loop as HTTPS: connection caps per source and in
    // all, a header-read timeout, TCP_NODELAY, a bounded drain.
    let http = crate::tls::serve_plain(api, plain_app, config.serve_options(), cancel.clone());
    let dns_task = crate::dns::start(&config.dns, node.clone(), cancel.child_token())
        .await
        .context("cannot start the DNS server")?;
    let rpc_task = cluster::spawn_named("cluster-port", async move {
        if let Err(e) = rpc.await {
            tracing::error!(error = %e, "the cluster port stopped");
        }
    });
    let http_task = cluster::spawn_named("api-server", http);
    // Under systemd (Type=notify) or the Windows SCM: ready once the node serves, stopping
    // when it stops (not when it restarts in-process: the manager would take that for a stop).
    let restarting = CancellationToken::new();
    let watched = node.clone();
    let notify_task = cluster::spawn_named(
        "service-report",
        crate::service_report::report(
            manager,
            move || crate::service_report::Seen::of(&watched),
            cancel.child_token(),
            restarting.clone(),
        ),
    );
    let removed = node.removed();
    let fatal = node.fatal();
    tokio::select! {
        _ = cancel.cancelled() => {}
        _ = requested.cancelled() => {
            // Still serving while it hands over: the followers' writes it holds are forwarded
            // to the new leader, not failed (docs/operations.md, "Rolling upgrade").
            if let Some(target) = node.hand_over_leadership(HANDOVER_BOUND).await {
                tracing::info!(node_id = config.node_id, new_leader = target, "leadership handed over before stopping");
            }
            cancel.cancel();
        }
        _ = removed.cancelled() => {
            tracing::warn!(node_id = config.node_id, "this node was removed from the cluster; stopping. Wipe its data_dir before it joins again.");
            cancel.cancel();
        }
        _ = fatal.cancelled() => {
            tracing::error!(node_id = config.node_id, "stopping after a fatal storage error; see the log above");
            restarting.cancel();
            cancel.cancel();
        }
    }
    // Why Raft stopped, read before it is shut down (then it says only "stopped").
    let fatal_reason = match &node.metrics().running_state {
        Err(e) => e.to_string(),
        Ok(()) => "raft stopped on a fatal storage error".to_owned(),
    };
    // STOPPING=1 goes out first, so systemd shows the node as deactivating while it drains.
    let _ = tokio::time::timeout(Duration::from_secs(1), notify_task).await;
    // Stop taking requests first, then stop Raft, so no handler is left waiting on a dead core.
    // serve_plain drains for up to 5 s itself.
    let _ = tokio::time::timeout(Duration::from_secs(6), http_task).await;
    if let Some(task) = https_task {
        // serve_https drains for up to 5 s itself.
        let _ = tokio::time::timeout(Duration::from_secs(6), task).await;
    }
    if let Some(task) = renewal_task {
        let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
    }
    if let Some(dns) = dns_task {
        let _ = tokio::time::timeout(Duration::from_secs(2), dns).await;
    }
    if let Some(task) = ca_task {
        let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
    }
    node.shutdown().await;
    let _ = tokio::time::timeout(Duration::from_secs(2), rpc_task).await;
    tracing::info!(node_id = config.node_id, "node stopped");
    if fatal.is_cancelled() {
        return Ok(Ended::Fatal(fatal_reason));
    }
    if removed.is_cancelled() {
        return Ok(Ended::Removed);
    }
    Ok(Ended::Stopped)
}

/// Builds the renewal state; renews at once (from local CA state, no quorum needed) when the
/// certificate has expired, is due or was revoked, so the HTTPS port never starts with an
/// expired certificate and peers get a valid one as soon as possible.
async fn start_renewal(
    config: &Config,
    ca: Arc<crate::ca_runtime::CaService>,
    parts: TlsParts,
) -> anyhow::Result<(node_cert::Renewal, Option<crate::ca::IssuedCert>)> {
    let (dns, ips) = node_cert::requested_names(config);
    let workspace = ca.settings.workspace.clone();
    let lifetime = config.node_cert_lifetime();
    let provider = crate::tls::ring_provider();
    let info = crate::ca::x509::cert_info(&parts.files.chain_pem)
        .context("this node's certificate (tls/node-chain.pem)")?;
    let not_before = SystemTime::UNIX_EPOCH + Duration::from_secs(info.not_before.max(0) as u64);
    let not_after = SystemTime::UNIX_EPOCH + Duration::from_secs(info.not_after.max(0) as u64);
    let now = SystemTime::now();
    let revoked = ca.load().is_ok_and(|(_, s)| s.is_revoked(&info.serial));
    let due = now >= node_cert::renew_at(not_before, not_after, lifetime) || revoked;
    // A CertStore refuses an expired leaf: load it as of its own validity, and replace it
    // right below when due.
    let load_at = if now >= not_after { not_before } else { now };
    let certs = Arc::new(crate::tls::CertStore::new_at(
        provider,
        &parts.files.chain_pem,
        parts.files.key_pem.expose(),
        load_at,
    )?);
    let mut renewal = node_cert::Renewal {
        data_dir: config.data_dir.clone(),
        node_id: config.node_id,
        workspace,
        dns,
        ips,
        lifetime,
        service: ca,
        certs,
        peer: parts.peer,
        files: parts.files,
    };
    let mut pending = None;
    if due {
        tracing::info!(
            node_id = config.node_id,
            expired = now >= not_after,
            revoked,
            "node certificate due at start; renewing from local CA state"
        );
        match renewal.renew().await {
            Ok(record) => pending = Some(record),
            Err(e) if now >= not_after => {
                return Err(anyhow::anyhow!(e).context(
                    "this node's certificate has expired and cannot be renewed from local state",
                ));
            }
            Err(e) => {
                tracing::warn!(error = %e, "renewal at start failed; the renewal task retries")
            }
        }
    }
    Ok((renewal, pending))
}

/// What `conclave init` reports.
pub struct InitOutcome {
    /// The admin password (generated when not given).
    pub password: String,
    /// SHA-256 fingerprint of the new root CA; `None` when no workspace is configured.
    pub root_fingerprint: Option<String>,
}

/// Creates a new cluster with this node as its only voter, the first admin user, the
/// key-encryption key file and the certificate authority.
pub async fn init(
    config: Config,
    admin_user: &str,
    admin_password: Option<String>,
) -> anyhow::Result<InitOutcome> {
    web::validate::username(admin_user).map_err(|e| anyhow::anyhow!("admin user: {e}"))?;
    let password = match admin_password {
        Some(p) => p,
        None => generate_password(),
    };
    web::password_policy::check(admin_user, config.workspace.as_deref(), &password)
        .map_err(|e| anyhow::anyhow!("admin password: {e}"))?;
    let cancel = CancellationToken::new();
    let node: Arc<ClusterNode> = ClusterNode::start(config.cluster_config(), cancel.clone())
        .await
        .context("cannot open the data directory")?;
    if node.is_initialized().await.unwrap_or(true) {
        node.shutdown().await;
        bail!(
            "{} already holds a cluster; nothing to do",
            config.data_dir.display()
        );
    }
    node.initialize().await.context("initialize")?;
    node.raft()
        .wait(Some(Duration::from_secs(10)))
        .state(openraft::ServerState::Leader, "init: become leader")
        .await
        .context("this node did not become leader of its new cluster")?;
    let hash = web::auth::hash_password(password.clone())
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    node.write(Command::CreateUser {
        username: admin_user.to_string(),
        password_hash: hash,
        role: Role::Admin,
    })
    .await
    .context("create the admin user")?;
    let root_fingerprint = match init_ca(&config, &node).await {
        Ok(fp) => fp,
        Err(e) => {
            node.shutdown().await;
            return Err(e);
        }
    };
    node.shutdown().await;
    tracing::info!(
        node_id = config.node_id,
        admin = admin_user,
        root_fingerprint = root_fingerprint.as_deref().unwrap_or("none"),
        "cluster initialized"
    );
    Ok(InitOutcome {
        password,
        root_fingerprint,
    })
}

/// Creates the KEK file (unless it exists: nodes of one cluster share it) and the CA.
async fn init_ca(config: &Config, node: &Arc<ClusterNode>) -> anyhow::Result<Option<String>> {
    let Some(settings) = crate::ca_runtime::CaSettings::from_config(config) else {
        tracing::warn!(
            "no workspace configured: the cluster has no certificate authority; set `workspace` and use POST /api/v1/ca/init to create one later"
        );
        return Ok(None);
    };
    let path = settings.kek_path.clone();
    let kek = tokio::task::spawn_blocking(move || crate::ca::Kek::load_or_create(&path))
        .await
        .context("KEK task")?
        .context("create the key-encryption key file")?;
    let service = crate::ca_runtime::CaService::new(node.clone(), Some(kek), settings);
    let (_, fingerprint) = service
        .ensure_initialized(false)
        .await
        .context("create the certificate authority")?;
    if config.tls.is_some() {
        let kek = crate::ca::Kek::load(&config.kek_path()).context("reload the KEK")?;
        let serial = node_cert::issue_at_init(config, &service, &kek)
            .await
            .context("issue this node's certificate")?;
        tracing::info!(node_id = config.node_id, serial = %serial, "node certificate issued and written to data_dir/tls");
    }
    Ok(Some(fingerprint))
}

fn generate_password() -> String {
    use rand::Rng;
    const CHARS: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::thread_rng();
    (0..20)
        .map(|_| CHARS[rng.gen_range(0..CHARS.len())] as char)
        .collect()
}
