//! Keeps a node that is installing a snapshot from the leader from answering clients.
//!
//! A received snapshot replaces the whole state tree, one pair at a time (sled 0.34 keeps the
//! memory of large batches, see `cluster::storage::sm_store`), so until the install ends the
//! tree is partly the old state and partly the new one. A request served from it could see a
//! session without its user and answer 401, which makes a client drop its session for good, or
//! list a channel's messages with a gap. So every `/api/` request (the WebSocket upgrade
//! included) is answered 503 `unavailable` meanwhile: clients retry or fail over to another
//! node, as they do for any 503. Health probes (`/healthz`, `/readyz`, `/metrics`) and the web
//! client's files stay served; `/readyz` itself reports the install.
//!
//! Owns that one rule. Must never hold a request until the install ends (an install of a large
//! history takes minutes): it answers at once.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::state::AppState;

/// The middleware: 503 for `/api/` while a snapshot install runs, else the route.
pub async fn gate(State(s): State<AppState>, req: Request, next: Next) -> Response {
    if s.node.installing_snapshot() && req.uri().path().starts_with("/api/") {
        return ApiError::Unavailable(
            "this node is installing a snapshot from the leader; retry, or use another node".into(),
        )
        .into_response();
    }
    next.run(req).await
}
