//! Session management (`/api/v1/me/sessions`, `/api/v1/users/{name}/sessions`): users list
//! and end their own sessions; admins end all sessions of a user.
//!
//! Owns the public session id (a one-way function of the token hash, `session_use::public_id`)
//! and the rule that an id which is not one of the caller's sessions is "not found", whether
//! it exists or not: ids of other users' sessions are never confirmed. Must never return a
//! token or a token hash.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use cluster::{Applied, Command};

use crate::auth::Auth;
use crate::error::ApiError;
use crate::extract::INDEX_HEADER;
use crate::security_log::RequestMeta;
use crate::session_use;
use crate::state::AppState;
use api::rest::{SessionEntry, SessionsEnded, SessionsEnvelope};

#[utoipa::path(
    get,
    path = "/api/v1/me/sessions",
    tag = "session",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the caller's sessions, newest first", body = api::rest::SessionsEnvelope)
    )
)]
pub async fn list(
    State(s): State<AppState>,
    auth: Auth,
) -> Result<Json<SessionsEnvelope>, ApiError> {
    let mut sessions: Vec<SessionEntry> = s
        .node
        .reader()
        .user_sessions(&auth.user.username)?
        .into_iter()
        .map(|(rec, info)| {
            let local = s.sessions.local_last_use(&rec.token_hash);
            let replicated = info.as_ref().map_or(rec.created_at_ms, |i| i.last_used_ms);
            let idle_expires_at_ms = info
                .as_ref()
                .filter(|i| i.idle_ms > 0)
                .map(|i| session_use::deadline(&rec, Some(i), local).0);
            SessionEntry {
                id: session_use::public_id(&rec.token_hash),
                user_agent: info
                    .as_ref()
                    .map(|i| i.user_agent.clone())
                    .unwrap_or_default(),
                source: info.as_ref().map(|i| i.source.clone()).unwrap_or_default(),
                created_at_ms: rec.created_at_ms,
                last_used_ms: local.map_or(replicated, |l| l.max(replicated)),
                expires_at_ms: rec.expires_at_ms,
                idle_expires_at_ms,
                current: rec.token_hash == auth.token_hash,
            }
        })
        .collect();
    sessions.sort_by(|a, b| b.created_at_ms.cmp(&a.created_at_ms).then(a.id.cmp(&b.id)));
    Ok(Json(SessionsEnvelope { sessions }))
}

#[utoipa::path(
    delete,
    path = "/api/v1/me/sessions/{id}",
    tag = "session",
    params(("id" = String, Path, description = "a session id from `GET /api/v1/me/sessions`")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "the session is ended everywhere (its WebSockets close with 4011)"),
        (status = 404, description = "`not_found`: not one of your sessions", body = api::error::ErrorBody),
        (status = 503, description = "`unavailable`: no leader or quorum right now, or `disk_full`: free space below the watermark here or on a majority of voters; nothing was written, retrying is safe", body = api::error::ErrorBody)
    )
)]
pub async fn end_own(
    State(s): State<AppState>,
    Extension(meta): Extension<RequestMeta>,
    Path(id): Path<String>,
    auth: Auth,
) -> Result<Response, ApiError> {
    // Only the caller's own sessions are searched: another user's id is "not found" too.
    let found = s
        .node
        .reader()
        .user_sessions(&auth.user.username)?
        .into_iter()
        .find(|(rec, _)| session_use::public_id(&rec.token_hash) == id);
    let Some((rec, _)) = found else {
        return Err(ApiError::NotFound("no such session of yours".into()));
    };
    let (_, index) = s
        .write_applied(Command::RevokeSession {
            token_hash: rec.token_hash.clone(),
        })
        .await?;
    crate::security_event!(
        meta,
        "session.ended",
        by = "user",
        target = %auth.user.username,
        session_id = %id,
        current = rec.token_hash == auth.token_hash
    );
    Ok((StatusCode::NO_CONTENT, [(INDEX_HEADER, index.to_string())]).into_response())
}

#[utoipa::path(
    delete,
    path = "/api/v1/users/{name}/sessions",
    tag = "accounts",
    params(("name" = String, Path, description = "the username")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "every session of the user is ended (their WebSockets close with 4011)", body = api::rest::SessionsEnded),
        (status = 403, description = "`forbidden`: admins only", body = api::error::ErrorBody),
        (status = 404, description = "`not_found`: no such user", body = api::error::ErrorBody),
        (status = 503, description = "`unavailable`: no leader or quorum right now, or a rolling upgrade is in progress, or `disk_full`: free space below the watermark; nothing was written, retrying is safe", body = api::error::ErrorBody)
    )
)]
pub async fn end_all_of_user(
    State(s): State<AppState>,
    Extension(meta): Extension<RequestMeta>,
    Path(username): Path<String>,
    auth: Auth,
) -> Result<Response, ApiError> {
    auth.require_admin()?;
    if s.read_fresh(|r| r.user(&username)).await?.is_none() {
        return Err(ApiError::NotFound(format!(
            "user '{username}' does not exist"
        )));
    }
    let (applied, index) = s
        .write_applied(Command::EndUserSessions {
            username: username.clone(),
            by: auth.user.username.clone(),
        })
        .await?;
    let Applied::SessionsEnded { ended, .. } = applied else {
        return Err(ApiError::Internal(
            "unexpected outcome of EndUserSessions".into(),
        ));
    };
    crate::security_event!(meta, "session.ended", by = "admin", target = %username, ended);
    Ok((
        StatusCode::OK,
        [(INDEX_HEADER, index.to_string())],
        Json(SessionsEnded { ended }),
    )
        .into_response())
}
