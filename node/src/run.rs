//! `conclave run` and `conclave init`: start one node from its config, serve the client API and
//! the cluster port, stop cleanly on a signal.
//!
//! Owns the wiring of `cluster` and `web` into a process. `serve` takes already-bound listeners
//! and a cancellation token so tests can run a node in-process on port 0.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use axum::serve::ListenerExt;
use cluster::{ClusterNode, Command, Role};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::signals;

/// Runs a node until a signal arrives or the cluster removes it.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let api = TcpListener::bind(config.api_addr)
        .await
        .with_context(|| format!("cannot listen on api_addr {}", config.api_addr))?;
    let peers = TcpListener::bind(config.cluster_addr)
        .await
        .with_context(|| format!("cannot listen on cluster_addr {}", config.cluster_addr))?;
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    tokio::spawn(async move {
        signals::shutdown_requested().await;
        tracing::info!("shutdown requested");
        stop.cancel();
    });
    serve(config, api, peers, cancel).await
}

pub async fn serve(
    config: Config,
    api: TcpListener,
    peers: TcpListener,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let node = ClusterNode::start(config.cluster_config(), cancel.child_token())
        .await
        .context("cannot start the cluster node")?;
    tracing::info!(
        node_id = config.node_id,
        api = %config.api_addr,
        cluster = %config.cluster_addr,
        initialized = node.is_initialized().await.unwrap_or(false),
        "node listening"
    );
    let rpc = axum::serve(peers, node.rpc_router())
        .with_graceful_shutdown(cancel.clone().cancelled_owned());
    // The CA service: the replicated CA behind `/api/v1/ca`, and its maintenance task.
    let ca = crate::ca_service::CaSettings::from_config(&config)
        .map(|settings| Arc::new(crate::ca_service::CaService::open(node.clone(), settings)));
    let ca_task = ca
        .clone()
        .map(|ca| ca.spawn_maintenance(cancel.child_token()));
    let mut api_config = config.api_config();
    api_config.ca = ca.map(|ca| ca as web::ca_api::SharedCa);
    let app = web::router(node.clone(), api_config, cancel.child_token());
    // Small frames (acks, typing notices) must not wait for Nagle's algorithm.
    let api = api.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY on a client connection");
        }
    });
    let http = axum::serve(api, app).with_graceful_shutdown(cancel.clone().cancelled_owned());
    let dns_task = crate::dns::start(&config.dns, node.clone(), cancel.child_token())
        .await
        .context("cannot start the DNS server")?;
    let rpc_task = tokio::spawn(async move { rpc.await });
    let http_task = tokio::spawn(async move { http.await });
    let removed = node.removed();
    let fatal = node.fatal();
    tokio::select! {
        _ = cancel.cancelled() => {}
        _ = removed.cancelled() => {
            tracing::warn!(node_id = config.node_id, "this node was removed from the cluster; stopping. Wipe its data_dir before it joins again.");
            cancel.cancel();
        }
        _ = fatal.cancelled() => {
            tracing::error!(node_id = config.node_id, "stopping after a fatal storage error; see the log above");
            cancel.cancel();
        }
    }
    // Stop taking requests first, then stop Raft, so no handler is left waiting on a dead core.
    let _ = tokio::time::timeout(Duration::from_secs(5), http_task).await;
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
        anyhow::bail!("raft stopped on a fatal error");
    }
    Ok(())
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
    web::validate::password(&password).map_err(|e| anyhow::anyhow!("admin password: {e}"))?;
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
    let Some(settings) = crate::ca_service::CaSettings::from_config(config) else {
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
    let service = crate::ca_service::CaService::new(node.clone(), Some(kek), settings);
    let (_, fingerprint) = service
        .ensure_initialized(false)
        .await
        .context("create the certificate authority")?;
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
