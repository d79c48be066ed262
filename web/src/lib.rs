//! Conclave's client-facing HTTP API (`/api/v1`, `/healthz`, `/readyz`, `/metrics`).
//!
//! Owns request validation, authentication and the mapping of cluster outcomes to HTTP (see
//! `docs/api.md`). Every write goes through `ClusterNode::write`, which forwards to the leader
//! and returns only once a quorum has the entry on disk. Must never talk to peers directly or
//! read the clock into replicated state.

pub mod api_headers;
pub mod auth;
pub mod ca_api;
pub mod error;
pub mod extract;
pub mod file_checks;
pub mod files_config;
pub mod files_inspect;
pub mod install_gate;
pub mod join_api;
pub mod json_object;
pub mod login_check;
pub mod login_throttle;
pub mod metrics;
pub mod openapi;
pub mod origin;
pub mod password_policy;
pub mod plain_errors;
pub mod routes;
pub mod security_log;
pub mod session_use;
pub mod state;
pub mod static_files;
pub mod validate;
pub mod wire;
pub mod ws;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use cluster::ClusterNode;
use tokio_util::sync::CancellationToken;

pub use error::ApiError;
pub use state::{ApiConfig, AppState};

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The client API router for one node. Spawns the WebSocket hub's tasks, which end on
/// `cancel` (and then close every WebSocket with 1001).
pub fn router(node: Arc<ClusterNode>, config: ApiConfig, cancel: CancellationToken) -> Router {
    let limit = config.max_request_bytes;
    let sessions = Arc::new(session_use::SessionUse::default());
    sessions.spawn_flusher(
        node.clone(),
        std::time::Duration::from_millis(config.session_touch_interval_ms),
        cancel.clone(),
    );
    let search = start_search(&node, config.search_dir.as_deref(), cancel.clone());
    let hub = ws::hub::Hub::start(node.clone(), config.ws.clone(), cancel);
    let state = AppState {
        node,
        config: Arc::new(config),
        hub,
        login_throttle: Arc::new(login_throttle::LoginThrottle::new()),
        cluster_probe: Arc::default(),
        sessions,
        search,
    };
    routes::table()
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            install_gate::gate,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            static_files::cluster_csp,
        ))
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            origin::cors,
        ))
        // Outermost, so refusals by the layers above (CORS, body limit) are tagged and logged.
        .layer(axum::middleware::from_fn(security_log::tag))
        .with_state(state)
}

/// Opens this node's search index (on disk under `dir`, else in RAM) and starts its feeder,
/// which ends on `cancel`. `None` when the index cannot be opened at all: the node serves
/// everything else and search answers 503.
fn start_search(
    node: &Arc<ClusterNode>,
    dir: Option<&std::path::Path>,
    cancel: CancellationToken,
) -> Option<Arc<search::SearchIndex>> {
    let opened = match dir {
        Some(d) => search::SearchIndex::open(d),
        None => search::SearchIndex::in_ram(),
    };
    match opened {
        Ok(ix) => {
            let ix = Arc::new(ix);
            search::Feeder::start(
                node.clone(),
                ix.clone(),
                search::FeederOptions::default(),
                cancel,
            );
            Some(ix)
        }
        Err(e) => {
            tracing::error!(error = %e, "search index cannot be opened; search is unavailable on this node");
            None
        }
    }
}
