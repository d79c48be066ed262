//! Log in and log out (`/api/v1/login`, `/api/v1/logout`).
//!
//! The password check and the throttle in front of it are `login_check`'s (429 with
//! `Retry-After`, see docs/security.md). Must never say whether a username exists: a wrong name
//! and a wrong password get the same answer.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use cluster::{Applied, Command};

use crate::auth::{self, Auth};
use crate::error::ApiError;
use crate::extract::{INDEX_HEADER, JsonBody};
use crate::login_check::{self, During};
use crate::security_log::RequestMeta;
use crate::state::AppState;
use crate::wire;
use api::rest::LoginRequest;
use api::rest::LoginResponse;

#[utoipa::path(
    post,
    path = "/api/v1/login",
    tag = "session",
    request_body = crate::routes::session::LoginRequest,
    responses(
        (status = 200, description = "a session token", body = api::rest::LoginResponse),
        (status = 401, description = "`invalid_credentials`: unknown user, wrong password or disabled user", body = api::error::ErrorBody),
        (status = 429, description = "`too_many_attempts`: this source, or this name from this source, is in its login delay (docs/security.md); see `Retry-After`", body = api::error::ErrorBody),
        (status = 503, description = "`unavailable`: no leader or quorum right now; nothing was written, retrying is safe", body = api::error::ErrorBody),
        (status = 500, description = "`internal`: a bug or a storage failure", body = api::error::ErrorBody)
    )
)]
pub async fn login(
    State(s): State<AppState>,
    Extension(meta): Extension<RequestMeta>,
    JsonBody(req): JsonBody<LoginRequest>,
) -> Result<Response, ApiError> {
    // The throttle comes first: a throttled attempt reads nothing and hashes nothing, alike
    // for every name.
    let attempt = login_check::begin(&s, &meta, &req.username, During::Login)?;
    let user = s.read_fresh(|r| r.user(&req.username)).await?;
    let user = login_check::verify(&s, &meta, attempt, user, req.password, During::Login).await?;
    let secret = auth::new_secret();
    let (applied, index) = s
        .node
        .write(Command::CreateSession {
            token_hash: auth::token_hash(&secret),
            username: user.username.clone(),
            ttl_ms: s.config.session_ttl_ms,
        })
        .await?;
    let Applied::Session(session) = applied else {
        return Err(ApiError::Internal(
            "unexpected outcome of CreateSession".into(),
        ));
    };
    let body = LoginResponse {
        token: auth::make_token(&secret, index),
        username: user.username,
        role: wire::role(user.role),
        expires_at_ms: session.expires_at_ms,
    };
    Ok(([(INDEX_HEADER, index.to_string())], Json(body)).into_response())
}

#[utoipa::path(
    post,
    path = "/api/v1/logout",
    tag = "session",
    security(("bearer" = [])),
    responses(
        (status = 204, description = "the presented token is revoked everywhere"),
        (status = 503, description = "`unavailable`: no leader or quorum right now; nothing was written, retrying is safe", body = api::error::ErrorBody)
    )
)]
pub async fn logout(State(s): State<AppState>, auth: Auth) -> Result<Response, ApiError> {
    let (_, index) = s
        .node
        .write(Command::RevokeSession {
            token_hash: auth.token_hash,
        })
        .await?;
    Ok((StatusCode::NO_CONTENT, [(INDEX_HEADER, index.to_string())]).into_response())
}
