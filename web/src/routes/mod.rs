//! The HTTP routes: one module per resource, and the route table of the whole client port
//! (`/api/v1/...`, `/healthz`, `/readyz`, the web client's files).
//!
//! Owns which handler answers which method and path: `access::ROUTES` lists them with who may
//! call each (docs/api.md and docs/security.md show the same table). Must never hold handler
//! logic: each resource's module does the work, `lib.rs::router` adds the state and the layers
//! (body limit, CORS).

pub mod access;
pub mod backup;
pub mod ca;
pub mod channels;
pub mod cluster;
pub mod dns;
pub mod file_download;
pub mod file_range;
pub mod files;
pub mod join;
pub mod messages;
pub mod search;
pub mod session;
pub mod sessions;
pub mod users;

use axum::Router;

use crate::error::ApiError;
use crate::state::AppState;

/// Every route of the client port ([`access::ROUTES`], the web client's files), with the 404
/// and 405 answers for the rest.
pub(crate) fn table() -> Router<AppState> {
    let (api, top) = access::routers();
    let api = api.layer(axum::middleware::map_response(crate::plain_errors::as_json));
    Router::new()
        .nest(access::API_PREFIX, api)
        .merge(top)
        .merge(crate::static_files::routes())
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async {
            ApiError::MethodNotAllowed("method not allowed on this route".into())
        })
        // After the fallbacks, so unknown routes get the headers too.
        .layer(axum::middleware::from_fn(crate::api_headers::add))
}
