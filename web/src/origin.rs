//! Which browser origins may talk to this node: the workspace's own (this node as the browser
//! reached it, every cluster member's API address) plus `[api] allowed_origins`. Used by the
//! WebSocket upgrade (`403 forbidden_origin`) and by the CORS middleware.
//!
//! Owns the origin rule. Must never allow a wildcard: a page from any other site must not be
//! able to drive a logged-in user's session.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::state::AppState;

/// Whether `origin` (the `Origin` header's value) belongs to the workspace.
pub fn allowed(s: &AppState, origin: &str, host: Option<&str>) -> bool {
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false;
    };
    if scheme != "http" && scheme != "https" {
        return false;
    }
    if s.config.allowed_origins.iter().any(|o| o == origin) {
        return true;
    }
    // Same origin as the request itself: the page was loaded from this node under whatever
    // name the browser used (the workspace name, an IP).
    if host.is_some_and(|h| h.eq_ignore_ascii_case(authority)) {
        return true;
    }
    s.node
        .members()
        .iter()
        .any(|(_, info)| info.api_addr.eq_ignore_ascii_case(authority))
}

fn host(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::HOST).and_then(|h| h.to_str().ok())
}

/// An `Origin` header naming a site outside the workspace.
#[derive(Debug)]
pub struct ForeignOrigin;

/// The request's origin if it is one of ours; `Err` if it names a foreign origin; `Ok(None)`
/// when there is no `Origin` header (not a cross-origin browser request).
pub fn check(s: &AppState, headers: &HeaderMap) -> Result<Option<HeaderValue>, ForeignOrigin> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(None);
    };
    let Ok(text) = origin.to_str() else {
        return Err(ForeignOrigin);
    };
    if allowed(s, text, host(headers)) {
        Ok(Some(origin.clone()))
    } else {
        Err(ForeignOrigin)
    }
}

/// CORS for the cluster's own origins, and nothing else: other origins get no CORS headers (the
/// browser then refuses to hand the response to the page) and no preflight approval.
pub async fn cors(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let origin = check(&s, req.headers()).ok().flatten();
    let preflight = req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut resp = if preflight {
        if origin.is_some() {
            StatusCode::NO_CONTENT.into_response()
        } else {
            StatusCode::FORBIDDEN.into_response()
        }
    } else {
        next.run(req).await
    };
    let h = resp.headers_mut();
    h.append(header::VARY, HeaderValue::from_static("Origin"));
    if let Some(origin) = origin {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, PUT, PATCH, DELETE"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("authorization, content-type, x-conclave-min-index"),
        );
        h.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("x-conclave-index, retry-after"),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
    }
    resp
}
