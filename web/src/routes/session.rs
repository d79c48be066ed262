//! Log in and log out (`/api/v1/login`, `/api/v1/logout`).
//!
//! The password check and the throttle in front of it are `login_check`'s (429 with
//! `Retry-After`, see docs/security.md). Must never say whether a username exists: a wrong name
//! and a wrong password get the same answer.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
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
        (status = 200, description = "a session token; `must_change_password` when an admin set the password", body = api::rest::LoginResponse),
        (status = 401, description = "`invalid_credentials`: unknown user, wrong password or disabled user", body = api::error::ErrorBody),
        (status = 429, description = "`too_many_attempts`: this source, or this name from this source, is in its login delay (docs/security.md); see `Retry-After`", body = api::error::ErrorBody),
        (status = 503, description = "`unavailable`: no leader or quorum right now, or `disk_full`: free space below the watermark here or on a majority of voters; nothing was written, retrying is safe", body = api::error::ErrorBody),
        (status = 500, description = "`internal`: a bug or a storage failure", body = api::error::ErrorBody)
    )
)]
pub async fn login(
    State(s): State<AppState>,
    Extension(meta): Extension<RequestMeta>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<LoginRequest>,
) -> Result<Response, ApiError> {
    let result = attempt_login(s, meta, headers, req).await;
    crate::metrics::login(&result);
    result
}

async fn attempt_login(
    s: AppState,
    meta: RequestMeta,
    headers: HeaderMap,
    req: LoginRequest,
) -> Result<Response, ApiError> {
    // The throttle comes first: a throttled attempt reads nothing and hashes nothing, alike
    // for every name.
    let attempt = login_check::begin(&s, &meta, &req.username, During::Login)?;
    let user = s.read_fresh(|r| r.user(&req.username)).await?;
    let user = login_check::verify(&s, &meta, attempt, user, req.password, During::Login).await?;
    let secret = auth::new_secret();
    let (applied, index) = s
        .node
        .write(
            new_session(
                &s,
                &auth::token_hash(&secret),
                &user.username,
                &meta,
                &headers,
            )
            .await,
        )
        .await?;
    let Applied::Session(session) = applied else {
        return Err(ApiError::Internal(
            "unexpected outcome of CreateSession".into(),
        ));
    };
    let body_user = user.username.clone();
    let body = LoginResponse {
        token: auth::make_token(&secret, index),
        username: user.username,
        role: wire::role(user.role),
        expires_at_ms: session.expires_at_ms,
        must_change_password: s.node.reader().must_change_password(&body_user)?,
    };
    meta.set_user(&body.username);
    crate::security_event!(
        meta,
        "login.success",
        must_change_password = body.must_change_password
    );
    Ok(([(INDEX_HEADER, index.to_string())], Json(body)).into_response())
}

/// The command that opens a session: with its idle window and origin once every member knows
/// version 6 (a rolling upgrade still gets a plain, absolute-only session).
async fn new_session(
    s: &AppState,
    token_hash: &str,
    username: &str,
    meta: &RequestMeta,
    headers: &HeaderMap,
) -> Command {
    if !s.node.cluster_supports(6).await {
        return Command::CreateSession {
            token_hash: token_hash.to_owned(),
            username: username.to_owned(),
            ttl_ms: s.config.session_ttl_ms,
        };
    }
    let user_agent: String = headers
        .get(axum::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect();
    let idle_ms = match s.config.session_idle_ms {
        0 => 0,
        idle => idle.saturating_add(s.config.session_touch_interval_ms),
    };
    Command::CreateSessionV2 {
        token_hash: token_hash.to_owned(),
        username: username.to_owned(),
        ttl_ms: s.config.session_ttl_ms,
        idle_ms,
        user_agent,
        source: meta.source.map(|a| a.to_string()).unwrap_or_default(),
    }
}

#[utoipa::path(
    post,
    path = "/api/v1/logout",
    tag = "session",
    security(("bearer" = [])),
    responses(
        (status = 204, description = "the presented token is revoked everywhere"),
        (status = 503, description = "`unavailable`: no leader or quorum right now, or `disk_full`: free space below the watermark here or on a majority of voters; nothing was written, retrying is safe", body = api::error::ErrorBody)
    )
)]
pub async fn logout(
    State(s): State<AppState>,
    Extension(meta): Extension<RequestMeta>,
    auth: Auth,
) -> Result<Response, ApiError> {
    let (_, index) = s
        .node
        .write(Command::RevokeSession {
            token_hash: auth.token_hash,
        })
        .await?;
    crate::security_event!(meta, "logout");
    Ok((StatusCode::NO_CONTENT, [(INDEX_HEADER, index.to_string())]).into_response())
}
