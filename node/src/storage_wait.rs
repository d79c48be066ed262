//! The wait between a fatal storage error and the in-process restart (`run::run`'s supervisor).
//!
//! Owns: the storage probe (write and fsync a small file in `data_dir`, remove it, free space
//! at or above the watermark), its backoff, and the stand-in servers that answer on the node's
//! listeners while it waits: `/healthz` 200 (the process is alive), `/readyz` 503 with the
//! reason, every other route 503 `storage_unavailable`, and on the cluster port a status that
//! says `ready: false`, `storage.state: failed` and why, so peers' member-health view,
//! `GET /api/v1/cluster` and `conclavectl status` show it.
//!
//! Must never touch the Raft log, the vote or sled: what is on disk is trusted only through
//! the normal start (`ClusterNode::start`), after the wait. Never answers a Raft RPC, so a
//! waiting node cannot vote or accept entries.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use cluster::storage::disk_space;
use cluster::transport::rpc::{self, NodeStatusWire, StorageStatusWire};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// The probe's first pause, doubled after each failure up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_millis(200);
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// The probe file, in `data_dir`; removed after each probe.
const PROBE_FILE: &str = ".storage-probe";

/// How the wait ended.
#[derive(Debug, PartialEq, Eq)]
pub enum WaitEnd {
    /// Storage works again: start the node.
    Usable,
    /// A signal asked the process to stop.
    Cancelled,
}

/// What the stand-in servers report; the reason follows the latest probe.
#[derive(Clone)]
struct Waiting {
    node_id: u64,
    min_free_bytes: u64,
    reason: Arc<Mutex<String>>,
    free_bytes: Arc<Mutex<Option<u64>>>,
}

impl Waiting {
    fn reason(&self) -> String {
        self.reason
            .lock()
            .map(|r| r.clone())
            .unwrap_or_else(|_| "storage unavailable".into())
    }
}

/// Listeners the stand-in servers answer on (those `serve` will take over).
pub struct Listeners {
    pub api: TcpListener,
    pub peers: TcpListener,
    pub https: Option<TcpListener>,
}

/// TLS the stand-in servers need when `[tls]` is on: mutual TLS on the cluster port and the
/// HTTPS server configuration. `None` parts are served plain or not at all (see `wait`).
pub struct WaitTls {
    pub peer: Option<Arc<cluster::PeerTls>>,
    pub https: Option<Arc<rustls::ServerConfig>>,
}

/// Answers on `listeners` and probes storage with backoff (starting at `first_wait`) until it
/// works or `cancel` fires; then stops the stand-in servers (releasing the listeners) and says
/// which.
pub async fn wait(
    config: &Config,
    first_reason: String,
    first_wait: Duration,
    listeners: Listeners,
    tls: WaitTls,
    cancel: &CancellationToken,
    manager: &crate::service_report::Manager,
) -> WaitEnd {
    let state = Waiting {
        node_id: config.node_id,
        min_free_bytes: config.storage.min_free_bytes,
        reason: Arc::new(Mutex::new(first_reason.clone())),
        free_bytes: Arc::new(Mutex::new(None)),
    };
    let servers = CancellationToken::new();
    let mut tasks = Vec::new();
    let api = api_router(state.clone());
    tasks.push(cluster::spawn_named(
        "wait-api",
        crate::tls::serve_plain(
            listeners.api,
            api.clone(),
            config.serve_options(),
            servers.clone(),
        ),
    ));
    match (listeners.https, tls.https) {
        (Some(https), Some(server_config)) => tasks.push(cluster::spawn_named(
            "wait-https",
            crate::tls::serve_https(
                https,
                api,
                server_config,
                config.serve_options(),
                servers.clone(),
            ),
        )),
        // Without a usable certificate the HTTPS port stays bound but unanswered (clients see a
        // timeout or a failed handshake, as for a node that is down); the plain port still says why.
        (Some(https), None) => drop(https),
        (None, _) => {}
    }
    let peers = peer_router(state.clone());
    let peer_servers = servers.clone();
    tasks.push(cluster::spawn_named("wait-cluster-port", async move {
        if let Err(e) = cluster::transport::rpc_server::serve_cluster_port(
            listeners.peers,
            peers,
            tls.peer,
            peer_servers,
        )
        .await
        {
            tracing::warn!(error = %e, "the cluster port stopped while waiting for storage");
        }
    }));
    let mut backoff = first_wait.clamp(FIRST_BACKOFF, MAX_BACKOFF);
    let mut last_reason = first_reason;
    manager.status(&format!("waiting for storage: {last_reason}"));
    let end = loop {
        tokio::select! {
            _ = cancel.cancelled() => break WaitEnd::Cancelled,
            _ = tokio::time::sleep(backoff) => {}
        }
        let dir = config.data_dir.clone();
        let min_free = config.storage.min_free_bytes;
        let probed = tokio::task::spawn_blocking(move || probe(&dir, min_free))
            .await
            .unwrap_or_else(|e| Err(format!("probe task: {e}")));
        match probed {
            Ok(free) => {
                if let Ok(mut f) = state.free_bytes.lock() {
                    *f = free;
                }
                tracing::info!(node_id = config.node_id, path = %config.data_dir.display(), free_bytes = ?free, "storage works again; restarting the node from what is on disk");
                break WaitEnd::Usable;
            }
            Err(why) => {
                let dir = config.data_dir.clone();
                let free =
                    tokio::task::spawn_blocking(move || disk_space::available_space(&dir).ok())
                        .await
                        .ok()
                        .flatten();
                if let Ok(mut f) = state.free_bytes.lock() {
                    *f = free;
                }
                if why != last_reason {
                    tracing::warn!(node_id = config.node_id, path = %config.data_dir.display(), reason = %why, "storage still unusable; waiting");
                    manager.status(&format!("waiting for storage: {why}"));
                    if let Ok(mut r) = state.reason.lock() {
                        *r = why.clone();
                    }
                    last_reason = why;
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    };
    servers.cancel();
    for task in tasks {
        // serve_plain and serve_https drain for up to 5 s themselves.
        let _ = tokio::time::timeout(Duration::from_secs(6), task).await;
    }
    end
}

/// Whether storage works: a small file written, fsynced and removed in `dir` (and the
/// directory synced), and free space at or above the watermark. Returns the free space.
pub fn probe(dir: &Path, min_free_bytes: u64) -> Result<Option<u64>, String> {
    use std::io::Write;
    let path = dir.join(PROBE_FILE);
    let written = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&path)?;
        f.write_all(b"conclave storage probe\n")?;
        f.sync_all()?;
        drop(f);
        std::fs::remove_file(&path)?;
        cluster::storage::fsutil::sync_dir(dir)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&path);
        return Err(format!(
            "cannot write and fsync a file in {}: {e}",
            dir.display()
        ));
    }
    match disk_space::available_space(dir) {
        Ok(free) if disk_space::below_watermark(free, min_free_bytes) => {
            Err(disk_space::low_space_reason(free, min_free_bytes))
        }
        Ok(free) => Ok(Some(free)),
        // The write worked; a filesystem that cannot report space is not held against it.
        Err(_) => Ok(None),
    }
}

fn api_router(state: Waiting) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(unavailable)
        .with_state(state)
}

fn peer_router(state: Waiting) -> Router {
    Router::new()
        .route(rpc::PATH_STATUS, get(peer_status))
        .fallback(|| async {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "storage unavailable: this node is waiting to restart",
            )
        })
        .with_state(state)
}

async fn healthz(State(s): State<Waiting>) -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok", "node_id": s.node_id}))
}

/// The same body as the node's own `/readyz`, not ready, with the reason.
async fn readyz(State(s): State<Waiting>) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(api::rest::Readyz {
            draining: false,
            node_id: Some(s.node_id),
            ready: false,
            reason: Some(format!("storage unavailable: {}", s.reason())),
        }),
    )
        .into_response()
}

async fn unavailable(State(s): State<Waiting>) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(api::error::ErrorBody::new(
            api::error::code::STORAGE_UNAVAILABLE,
            format!(
                "node {}'s storage is unavailable; it restarts by itself when it works again: {}",
                s.node_id,
                s.reason()
            ),
        )),
    )
        .into_response()
}

/// A status peers read like a live node's: not a voter in any election, not ready, and why.
async fn peer_status(State(s): State<Waiting>) -> Json<NodeStatusWire> {
    let reason = s.reason();
    let free_bytes = s.free_bytes.lock().ok().and_then(|f| *f);
    Json(NodeStatusWire {
        id: s.node_id,
        state: "shutdown".into(),
        term: 0,
        leader_id: None,
        last_log_index: None,
        last_applied: None,
        voter: false,
        quorum_ok: false,
        ready: false,
        reason: Some(format!("storage unavailable: {reason}")),
        electing: false,
        members: Vec::new(),
        https_addr: None,
        insecure_plaintext: false,
        storage: Some(StorageStatusWire {
            free_bytes,
            min_free_bytes: s.min_free_bytes,
            state: disk_space::StorageState::Failed.as_str().into(),
            reason: Some(reason),
        }),
        // It follows no leader and votes for no one: it grants no pre-vote.
        leader_contact_ms: None,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn probe_passes_on_a_writable_dir_and_names_the_watermark() {
        let dir = tempfile::TempDir::new().unwrap();
        assert!(probe(dir.path(), 0).is_ok());
        assert!(!dir.path().join(PROBE_FILE).exists(), "probe file removed");
        let err = probe(dir.path(), u64::MAX).unwrap_err();
        assert!(err.starts_with("disk space low: "), "{err}");
        let missing = dir.path().join("gone");
        let err = probe(&missing, 0).unwrap_err();
        assert!(err.contains("cannot write and fsync"), "{err}");
    }
}
