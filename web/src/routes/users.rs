//! Accounts: the user directory, admin changes (create, disable, re-enable, role, reset
//! password) and self-service (display name, own password).
//!
//! Owns the HTTP shape of account management and the password policy's place in it. Disabling
//! and password changes revoke sessions inside the state machine, in the same entry, so no node
//! can accept a stale session afterwards. Must never return password hashes.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use cluster::{Applied, Command, Role, UserView};
use serde::Deserialize;

use crate::auth::{self, Auth};
use crate::error::ApiError;
use crate::extract::{INDEX_HEADER, JsonBody, MinIndex};
use crate::login_check::{self, During};
use crate::password_policy;
use crate::security_log::RequestMeta;
use crate::state::AppState;
use crate::validate;
use crate::wire;
use api::rest::{ChangePasswordRequest, ProfilePatch, SetPasswordRequest, UserPatch};
use api::rest::{User, UsersEnvelope};

fn user_response(status: StatusCode, index: u64, u: &UserView) -> Response {
    (
        status,
        [(INDEX_HEADER, index.to_string())],
        Json(wire::user(u)),
    )
        .into_response()
}

fn view(s: &AppState, username: &str) -> Result<UserView, ApiError> {
    s.node
        .reader()
        .user_view(username)?
        .ok_or_else(|| ApiError::NotFound(format!("user '{username}' does not exist")))
}

/// The server's reading of `api::rest::NewUser`, more lenient: `role` (member) and
/// `display_name` may be left out.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    #[schema(pattern = "^[a-z0-9][a-z0-9_.-]{0,31}$")]
    username: String,
    #[schema(min_length = 8, max_length = 128)]
    password: String,
    #[serde(default)]
    #[schema(value_type = Option<api::rest::Role>)]
    role: Option<Role>,
    #[serde(default)]
    #[schema(max_length = 64)]
    display_name: Option<String>,
}

#[utoipa::path(
    post,
    path = "/api/v1/users",
    tag = "accounts",
    request_body = crate::routes::users::CreateUser,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "the new user; they must change the password at first login", body = api::rest::User),
        (status = 400, description = "`invalid_request` (bad username or display name) or `weak_password`", body = api::error::ErrorBody),
        (status = 403, description = "`forbidden`: admins only", body = api::error::ErrorBody),
        (status = 404, description = "`not_found`", body = api::error::ErrorBody),
        (status = 409, description = "`user_exists`", body = api::error::ErrorBody),
        (status = 503, description = "`unavailable`: no leader or quorum right now, or `disk_full`: free space below the watermark here or on a majority of voters; nothing was written, retrying is safe", body = api::error::ErrorBody)
    )
)]
pub async fn create(
    State(s): State<AppState>,
    Extension(meta): Extension<RequestMeta>,
    auth: Auth,
    body: Result<JsonBody<CreateUser>, ApiError>,
) -> Result<Response, ApiError> {
    auth.require_admin()?;
    // Non-admins are refused before the body is read: they learn nothing of its shape.
    let JsonBody(req) = body?;
    validate::username(&req.username)?;
    password_policy::check(&req.username, s.config.workspace.as_deref(), &req.password)?;
    if let Some(d) = &req.display_name {
        validate::display_name(d)?;
    }
    if s.node.reader().user(&req.username)?.is_some() {
        return Err(ApiError::UserExists(req.username));
    }
    let password_hash = auth::hash_password(req.password).await?;
    let role = req.role.unwrap_or(Role::Member);
    // An admin chose this password: the user must replace it at first login (ASVS 2.1.x).
    // During a rolling upgrade (some node below version 6) the flag cannot be stored yet.
    let cmd = if s.node.cluster_supports(6).await {
        Command::CreateUserV2 {
            username: req.username.clone(),
            password_hash,
            role,
            must_change_password: true,
        }
    } else {
        Command::CreateUser {
            username: req.username.clone(),
            password_hash,
            role,
        }
    };
    let (applied, mut index) = s.write_applied(cmd).await?;
    let Applied::User(user) = applied else {
        return Err(ApiError::Internal(
            "unexpected outcome of CreateUser".into(),
        ));
    };
    if let Some(d) = req.display_name.filter(|d| !d.is_empty()) {
        index = s
            .write_applied(Command::UpdateUser {
                username: user.username.clone(),
                by: auth.user.username.clone(),
                disabled: None,
                role: None,
                display_name: Some(d),
            })
            .await?
            .1;
    }
    crate::security_event!(meta, "admin.user_created", target = %user.username, role = ?user.role);
    Ok(user_response(
        StatusCode::CREATED,
        index,
        &view(&s, &user.username)?,
    ))
}

/// The directory: every member sees it, so that they can start direct messages.
#[utoipa::path(
    get,
    path = "/api/v1/users",
    tag = "accounts",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the user directory", body = api::rest::UsersEnvelope)
    )
)]
pub async fn list(
    State(s): State<AppState>,
    _min: MinIndex,
    _auth: Auth,
) -> Result<Json<serde_json::Value>, ApiError> {
    let users = s.node.reader().user_views()?;
    wire::as_value(&UsersEnvelope {
        users: users.iter().map(wire::user).collect(),
    })
}

#[utoipa::path(
    patch,
    path = "/api/v1/users/{name}",
    tag = "accounts",
    params(("name" = String, Path, description = "the username")),
    request_body = api::rest::UserPatch,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the user after the change", body = api::rest::User),
        (status = 400, description = "`invalid_request`", body = api::error::ErrorBody),
        (status = 403, description = "`forbidden`: admins only, or the change would leave no enabled admin; `https_required` / `step_up_failed`: `role` and `disabled` need HTTPS and `current_password`", body = api::error::ErrorBody),
        (status = 404, description = "`not_found`: no such user", body = api::error::ErrorBody),
        (status = 503, description = "`unavailable`: no leader or quorum right now, or `disk_full`: free space below the watermark here or on a majority of voters; nothing was written, retrying is safe", body = api::error::ErrorBody)
    )
)]
pub async fn update(
    State(s): State<AppState>,
    Extension(meta): Extension<RequestMeta>,
    Path(username): Path<String>,
    auth: Auth,
    body: Result<JsonBody<UserPatch>, ApiError>,
) -> Result<Response, ApiError> {
    auth.require_admin()?;
    // Non-admins are refused before the body is read: they learn nothing of its shape.
    let JsonBody(req) = body?;
    if req.disabled.is_some() || req.role.is_some() {
        auth::step_up(
            &s,
            &meta,
            &auth,
            req.current_password.clone(),
            "changing a role or disabling a user",
        )
        .await?;
    }
    if let Some(d) = &req.display_name {
        validate::display_name(d)?;
    }
    if s.read_fresh(|r| r.user(&username)).await?.is_none() {
        return Err(ApiError::NotFound(format!(
            "user '{username}' does not exist"
        )));
    }
    let (_, index) = s
        .write_applied(Command::UpdateUser {
            username: username.clone(),
            by: auth.user.username.clone(),
            disabled: req.disabled,
            role: req.role.map(wire::cluster_role),
            display_name: req.display_name,
        })
        .await?;
    crate::security_event!(meta, "admin.user_updated", target = %username, disabled = ?req.disabled, role = ?req.role);
    Ok(user_response(StatusCode::OK, index, &view(&s, &username)?))
}

#[utoipa::path(
    post,
    path = "/api/v1/users/{name}/password",
    tag = "accounts",
    params(("name" = String, Path, description = "the username")),
    request_body = api::rest::SetPasswordRequest,
    security(("bearer" = [])),
    responses(
        (status = 204, description = "set; every session of the user is revoked and the user must change it at next login"),
        (status = 400, description = "`weak_password` or `invalid_request`", body = api::error::ErrorBody),
        (status = 403, description = "`forbidden`: admins only; `https_required`: step-up over plain HTTP; `step_up_failed`: `current_password` missing or wrong", body = api::error::ErrorBody),
        (status = 404, description = "`not_found`: no such user", body = api::error::ErrorBody),
        (status = 503, description = "`unavailable`: no leader or quorum right now, or `disk_full`: free space below the watermark here or on a majority of voters; nothing was written, retrying is safe", body = api::error::ErrorBody)
    )
)]
pub async fn reset_password(
    State(s): State<AppState>,
    Extension(meta): Extension<RequestMeta>,
    Path(username): Path<String>,
    auth: Auth,
    body: Result<JsonBody<SetPasswordRequest>, ApiError>,
) -> Result<Response, ApiError> {
    auth.require_admin()?;
    // Non-admins are refused before the body is read: they learn nothing of its shape.
    let JsonBody(req) = body?;
    auth::step_up(
        &s,
        &meta,
        &auth,
        req.current_password.clone(),
        "resetting a password",
    )
    .await?;
    if s.read_fresh(|r| r.user(&username)).await?.is_none() {
        return Err(ApiError::NotFound(format!(
            "user '{username}' does not exist"
        )));
    }
    password_policy::check(&username, s.config.workspace.as_deref(), &req.password)?;
    let password_hash = auth::hash_password(req.password).await?;
    let cmd = if s.node.cluster_supports(6).await {
        Command::SetPasswordV2 {
            username: username.clone(),
            password_hash,
            keep_session: None,
            must_change_password: true,
        }
    } else {
        Command::SetPassword {
            username: username.clone(),
            password_hash,
            keep_session: None,
        }
    };
    let (_, index) = s.write_applied(cmd).await?;
    crate::security_event!(meta, "admin.password_reset", target = %username);
    Ok((StatusCode::NO_CONTENT, [(INDEX_HEADER, index.to_string())]).into_response())
}

#[utoipa::path(
    get,
    path = "/api/v1/me",
    tag = "accounts",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the caller", body = api::rest::User),
        (status = 404, description = "`not_found`: the caller's user vanished", body = api::error::ErrorBody)
    )
)]
pub async fn me(State(s): State<AppState>, auth: Auth) -> Result<Json<User>, ApiError> {
    Ok(Json(wire::user(&view(&s, &auth.user.username)?)))
}

#[utoipa::path(
    patch,
    path = "/api/v1/me",
    tag = "accounts",
    request_body = api::rest::ProfilePatch,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the caller after the change", body = api::rest::User),
        (status = 400, description = "`invalid_request`: display name too long or not printable", body = api::error::ErrorBody),
        (status = 404, description = "`not_found`", body = api::error::ErrorBody),
        (status = 503, description = "`unavailable`: no leader or quorum right now, or `disk_full`: free space below the watermark here or on a majority of voters; nothing was written, retrying is safe", body = api::error::ErrorBody)
    )
)]
pub async fn update_me(
    State(s): State<AppState>,
    auth: Auth,
    JsonBody(req): JsonBody<ProfilePatch>,
) -> Result<Response, ApiError> {
    validate::display_name(&req.display_name)?;
    let (_, index) = s
        .write_applied(Command::UpdateUser {
            username: auth.user.username.clone(),
            by: auth.user.username.clone(),
            disabled: None,
            role: None,
            display_name: Some(req.display_name),
        })
        .await?;
    Ok(user_response(
        StatusCode::OK,
        index,
        &view(&s, &auth.user.username)?,
    ))
}

#[utoipa::path(
    post,
    path = "/api/v1/me/password",
    tag = "accounts",
    request_body = api::rest::ChangePasswordRequest,
    security(("bearer" = [])),
    responses(
        (status = 204, description = "changed; the caller's other sessions are revoked"),
        (status = 400, description = "`weak_password` or `invalid_request`", body = api::error::ErrorBody),
        (status = 401, description = "`invalid_credentials`: wrong current password", body = api::error::ErrorBody),
        (status = 429, description = "`too_many_attempts`: the login throttle's delay applies to the current-password check too; see `Retry-After`", body = api::error::ErrorBody),
        (status = 503, description = "`unavailable`: no leader or quorum right now, or `disk_full`: free space below the watermark here or on a majority of voters; nothing was written, retrying is safe", body = api::error::ErrorBody)
    )
)]
pub async fn change_password(
    State(s): State<AppState>,
    Extension(meta): Extension<RequestMeta>,
    auth: Auth,
    JsonBody(req): JsonBody<ChangePasswordRequest>,
) -> Result<Response, ApiError> {
    // A forced change must replace what the admin knows.
    let reused = auth.must_change_password && req.new_password == req.current_password;
    // The current password goes through the login throttle: a stolen token must not become
    // an unthrottled password oracle.
    let attempt = login_check::begin(&s, &meta, &auth.user.username, During::PasswordChange)?;
    login_check::verify(
        &s,
        &meta,
        attempt,
        Some(auth.user.clone()),
        req.current_password,
        During::PasswordChange,
    )
    .await?;
    if reused {
        return Err(ApiError::WeakPassword(
            "choose a new password, not the one an admin set".into(),
        ));
    }
    password_policy::check(
        &auth.user.username,
        s.config.workspace.as_deref(),
        &req.new_password,
    )?;
    let password_hash = auth::hash_password(req.new_password).await?;
    let (_, index) = s
        .write_applied(Command::SetPassword {
            username: auth.user.username.clone(),
            password_hash,
            keep_session: Some(auth.token_hash.clone()),
        })
        .await?;
    // A version 1 `SetPassword` also clears the must-change flag (state::accounts).
    crate::security_event!(
        meta,
        "password.changed",
        was_required = auth.must_change_password
    );
    Ok((StatusCode::NO_CONTENT, [(INDEX_HEADER, index.to_string())]).into_response())
}
