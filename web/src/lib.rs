//! Conclave's client-facing HTTP API (`/api/v1`, `/healthz`, `/readyz`).
//!
//! Owns request validation, authentication and the mapping of cluster outcomes to HTTP (see
//! `docs/api.md`). Every write goes through `ClusterNode::write`, which forwards to the leader
//! and returns only once a quorum has the entry on disk. Must never talk to peers directly or
//! read the clock into replicated state.

pub mod auth;
pub mod ca_api;
pub mod error;
pub mod extract;
pub mod hub;
pub mod join_api;
pub mod json_object;
pub mod openapi;
pub mod origin;
pub mod password_policy;
pub mod plain_errors;
pub mod routes_ca;
pub mod routes_channels;
pub mod routes_cluster;
pub mod routes_dns;
pub mod routes_join;
pub mod routes_messages;
pub mod routes_session;
pub mod routes_users;
pub mod state;
pub mod static_files;
pub mod validate;
pub mod ws;
pub mod ws_frames;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, patch, post, put};
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
    let hub = hub::Hub::start(node.clone(), config.ws.clone(), cancel);
    let state = AppState {
        node,
        config: Arc::new(config),
        hub,
    };
    let api = Router::new()
        .route("/login", post(routes_session::login))
        .route("/logout", post(routes_session::logout))
        .route("/me", get(routes_users::me).patch(routes_users::update_me))
        .route("/me/password", post(routes_users::change_password))
        .route("/users", post(routes_users::create).get(routes_users::list))
        .route("/users/{name}", patch(routes_users::update))
        .route("/users/{name}/password", post(routes_users::reset_password))
        .route("/dms", post(routes_channels::start_dm))
        .route(
            "/channels",
            post(routes_channels::create).get(routes_channels::list),
        )
        .route(
            "/channels/{name}",
            get(routes_channels::get).patch(routes_channels::update),
        )
        .route("/channels/{name}/join", post(routes_channels::join))
        .route("/channels/{name}/leave", post(routes_channels::leave))
        .route("/channels/{name}/read", post(routes_channels::mark_read))
        .route(
            "/channels/{name}/members",
            post(routes_channels::add_member),
        )
        .route(
            "/channels/{name}/members/{user}",
            delete(routes_channels::remove_member),
        )
        .route(
            "/channels/{name}/messages",
            post(routes_messages::post).get(routes_messages::list),
        )
        .route(
            "/channels/{name}/messages/{seq}",
            patch(routes_messages::edit).delete(routes_messages::delete),
        )
        .route(
            "/channels/{name}/messages/{seq}/reactions/{emoji}",
            put(routes_messages::react).delete(routes_messages::unreact),
        )
        .route(
            "/channels/{name}/messages/{seq}/pin",
            put(routes_messages::pin).delete(routes_messages::unpin),
        )
        .route("/channels/{name}/pins", get(routes_messages::pins))
        .route(
            "/channels/{name}/threads/{root}",
            get(routes_messages::thread),
        )
        .route("/ws", get(ws::upgrade))
        .route("/cluster", get(routes_cluster::status))
        .route("/cluster/nodes", post(routes_cluster::add_node))
        .route("/cluster/nodes/{id}", delete(routes_cluster::remove_node))
        .route(
            "/cluster/nodes/{id}/drain",
            post(routes_cluster::drain).delete(routes_cluster::undrain),
        )
        .route(
            "/dns/records",
            get(routes_dns::list)
                .post(routes_dns::create)
                .delete(routes_dns::remove),
        )
        .merge(routes_ca::routes())
        .merge(routes_join::routes())
        .route("/openapi.json", get(openapi::openapi_json))
        .layer(axum::middleware::map_response(plain_errors::as_json));
    Router::new()
        .nest("/api/v1", api)
        .route("/healthz", get(routes_cluster::healthz))
        .route("/readyz", get(routes_cluster::readyz))
        .merge(static_files::routes())
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async {
            ApiError::MethodNotAllowed("method not allowed on this route".into())
        })
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            origin::cors,
        ))
        .with_state(state)
}
