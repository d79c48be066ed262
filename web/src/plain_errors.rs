//! Gives axum's own extractor rejections the API's error body.
//!
//! A path segment that is not a number (`/channels/x/messages/abc`), a request to `/api/v1/ws`
//! that is not a WebSocket upgrade, or an oversized body read as raw bytes is refused by axum
//! before a handler runs, with a plain-text body; docs/api.md promises
//! `{"error":{"code","message"}}` for every error, and the fuzz test's negative data sends such
//! requests (`chaos-tests/tests/cluster/api_schema.rs`). Owns only that
//! rewrite: a 4xx `text/plain` answer under `/api/v1` becomes the JSON body with the same
//! status and the text as its message. Must never touch successful answers (the CA serves PEM
//! as text) or server errors.

use api::error::ErrorBody;
use axum::Json;
use axum::body::to_bytes;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Longest rejection text kept (axum's are one line).
const MAX_TEXT: usize = 4096;

fn code(status: StatusCode) -> &'static str {
    match status {
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UPGRADE_REQUIRED => "upgrade_required",
        _ => "invalid_request",
    }
}

/// `map_response` layer of the `/api/v1` router.
pub async fn as_json(resp: Response) -> Response {
    let plain = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/plain"));
    let status = resp.status();
    if !status.is_client_error() || !plain {
        return resp;
    }
    let text = match to_bytes(resp.into_body(), MAX_TEXT).await {
        Ok(b) => String::from_utf8_lossy(&b).trim().to_owned(),
        Err(_) => String::new(),
    };
    (status, Json(ErrorBody::new(code(status), text))).into_response()
}
