//! Conclave's client-facing HTTP API (`/api/v1`, `/healthz`, `/readyz`).
//!
//! Owns request validation, authentication and the mapping of cluster outcomes to HTTP (see
//! `docs/api.md`). Every write goes through `ClusterNode::write`, which forwards to the leader
//! and returns only once a quorum has the entry on disk. Must never talk to peers directly or
//! read the clock into replicated state.

pub mod auth;
pub mod error;
pub mod extract;
pub mod routes_channels;
pub mod routes_cluster;
pub mod routes_session;
pub mod routes_users;
pub mod state;
pub mod validate;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post};
use cluster::ClusterNode;

pub use error::ApiError;
pub use state::{ApiConfig, AppState};

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The client API router for one node.
pub fn router(node: Arc<ClusterNode>, config: ApiConfig) -> Router {
    let limit = config.max_request_bytes;
    let state = AppState {
        node,
        config: Arc::new(config),
    };
    let api = Router::new()
        .route("/login", post(routes_session::login))
        .route("/logout", post(routes_session::logout))
        .route("/me", get(routes_session::me))
        .route("/users", post(routes_users::create).get(routes_users::list))
        .route(
            "/channels",
            post(routes_channels::create).get(routes_channels::list),
        )
        .route("/channels/{name}", get(routes_channels::get))
        .route("/channels/{name}/join", post(routes_channels::join))
        .route(
            "/channels/{name}/messages",
            post(routes_channels::post).get(routes_channels::messages),
        )
        .route("/cluster", get(routes_cluster::status))
        .route("/cluster/nodes", post(routes_cluster::add_node))
        .route("/cluster/nodes/{id}", delete(routes_cluster::remove_node));
    Router::new()
        .nest("/api/v1", api)
        .route("/healthz", get(routes_cluster::healthz))
        .route("/readyz", get(routes_cluster::readyz))
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async {
            ApiError::MethodNotAllowed("method not allowed on this route".into())
        })
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}
