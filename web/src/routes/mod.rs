//! The HTTP routes: one module per resource, and the route table of the whole client port
//! (`/api/v1/...`, `/healthz`, `/readyz`, the web client's files).
//!
//! Owns which handler answers which method and path (docs/api.md lists the same table). Must
//! never hold handler logic: each resource's module does the work, `lib.rs::router` adds the
//! state and the layers (body limit, CORS).

pub mod ca;
pub mod channels;
pub mod cluster;
pub mod dns;
pub mod join;
pub mod messages;
pub mod session;
pub mod sessions;
pub mod users;

use axum::Router;
use axum::routing::{delete, get, patch, post, put};

use crate::error::ApiError;
use crate::state::AppState;

/// Every route of the client port, with the 404 and 405 answers for the rest.
pub(crate) fn table() -> Router<AppState> {
    let api = Router::new()
        .route("/login", post(session::login))
        .route("/logout", post(session::logout))
        .route("/me", get(users::me).patch(users::update_me))
        .route("/me/password", post(users::change_password))
        .route("/me/sessions", get(sessions::list))
        .route("/me/sessions/{id}", delete(sessions::end_own))
        .route("/users", post(users::create).get(users::list))
        .route("/users/{name}", patch(users::update))
        .route("/users/{name}/password", post(users::reset_password))
        .route("/users/{name}/sessions", delete(sessions::end_all_of_user))
        .route("/dms", post(channels::start_dm))
        .route("/channels", post(channels::create).get(channels::list))
        .route(
            "/channels/{name}",
            get(channels::get).patch(channels::update),
        )
        .route("/channels/{name}/join", post(channels::join))
        .route("/channels/{name}/leave", post(channels::leave))
        .route("/channels/{name}/read", post(channels::mark_read))
        .route("/channels/{name}/members", post(channels::add_member))
        .route(
            "/channels/{name}/members/{user}",
            delete(channels::remove_member),
        )
        .route(
            "/channels/{name}/messages",
            post(messages::post).get(messages::list),
        )
        .route(
            "/channels/{name}/messages/{seq}",
            patch(messages::edit).delete(messages::delete),
        )
        .route(
            "/channels/{name}/messages/{seq}/reactions/{emoji}",
            put(messages::react).delete(messages::unreact),
        )
        .route(
            "/channels/{name}/messages/{seq}/pin",
            put(messages::pin).delete(messages::unpin),
        )
        .route("/channels/{name}/pins", get(messages::pins))
        .route("/channels/{name}/threads/{root}", get(messages::thread))
        .route("/ws", get(crate::ws::upgrade))
        .route("/cluster", get(cluster::status))
        .route("/cluster/nodes", post(cluster::add_node))
        .route("/cluster/nodes/{id}", delete(cluster::remove_node))
        .route(
            "/cluster/nodes/{id}/drain",
            post(cluster::drain).delete(cluster::undrain),
        )
        .route(
            "/dns/records",
            get(dns::list).post(dns::create).delete(dns::remove),
        )
        .merge(ca::routes())
        .merge(join::routes())
        .route("/openapi.json", get(crate::openapi::openapi_json))
        .layer(axum::middleware::map_response(crate::plain_errors::as_json));
    Router::new()
        .nest("/api/v1", api)
        .route("/healthz", get(cluster::healthz))
        .route("/readyz", get(cluster::readyz))
        .merge(crate::static_files::routes())
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async {
            ApiError::MethodNotAllowed("method not allowed on this route".into())
        })
        // After the fallbacks, so unknown routes get the headers too.
        .layer(axum::middleware::map_response(crate::api_headers::add))
}
