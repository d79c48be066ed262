//! Request extractors that turn axum's rejections into the API's JSON errors, and the
//! read-your-writes header.
//!
//! Owns `JsonBody<T>` (400 invalid_json / 413 / 415 instead of axum's plain-text rejections)
//! and `MinIndex` (`X-Conclave-Min-Index`, waited on before a read is served). Must never
//! answer a malformed request with anything but the API's error body.

use std::time::Duration;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::state::AppState;

pub const INDEX_HEADER: &str = "x-conclave-index";
pub const MIN_INDEX_HEADER: &str = "x-conclave-min-index";
const MIN_INDEX_WAIT: Duration = Duration::from_secs(5);

pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        match Json::<crate::json_object::ObjectOnly<T>>::from_request(req, state).await {
            Ok(Json(crate::json_object::ObjectOnly(v))) => Ok(JsonBody(v)),
            Err(rej) => Err(match rej.status() {
                StatusCode::PAYLOAD_TOO_LARGE => {
                    ApiError::PayloadTooLarge(state.config.max_request_bytes)
                }
                StatusCode::UNSUPPORTED_MEDIA_TYPE => {
                    ApiError::UnsupportedMediaType("expected Content-Type: application/json".into())
                }
                _ => match rej {
                    JsonRejection::JsonDataError(e) => ApiError::InvalidJson(e.body_text()),
                    JsonRejection::JsonSyntaxError(e) => ApiError::InvalidJson(e.body_text()),
                    other => ApiError::InvalidJson(other.body_text()),
                },
            }),
        }
    }
}

/// Waits, before the handler runs, until this node applied the index the client asked for.
pub struct MinIndex;

impl FromRequestParts<AppState> for MinIndex {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if let Some(v) = parts.headers.get(MIN_INDEX_HEADER) {
            let index: u64 = v
                .to_str()
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .ok_or_else(|| {
                    ApiError::InvalidRequest("X-Conclave-Min-Index must be an integer".into())
                })?;
            state.node.wait_applied(index, MIN_INDEX_WAIT).await?;
        }
        Ok(MinIndex)
    }
}
