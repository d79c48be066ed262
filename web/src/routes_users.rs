//! Admin user management: create and list users.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cluster::{Applied, Command, Role};
use serde::Deserialize;
use serde_json::json;

use crate::auth::{self, Auth};
use crate::error::ApiError;
use crate::extract::{INDEX_HEADER, JsonBody, MinIndex};
use crate::routes_session::UserView;
use crate::state::AppState;
use crate::validate;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    username: String,
    password: String,
    #[serde(default)]
    role: Option<Role>,
}

pub async fn create(
    State(s): State<AppState>,
    auth: Auth,
    JsonBody(req): JsonBody<CreateUser>,
) -> Result<Response, ApiError> {
    auth.require_admin()?;
    validate::username(&req.username)?;
    validate::password(&req.password)?;
    if s.node.reader().user(&req.username)?.is_some() {
        return Err(ApiError::UserExists(req.username));
    }
    let password_hash = auth::hash_password(req.password).await?;
    let (applied, index) = s
        .node
        .write(Command::CreateUser {
            username: req.username,
            password_hash,
            role: req.role.unwrap_or(Role::Member),
        })
        .await?;
    let Applied::User(user) = applied else {
        return Err(ApiError::Internal(
            "unexpected outcome of CreateUser".into(),
        ));
    };
    tracing::info!(username = %user.username, by = %auth.user.username, "user created");
    Ok((
        StatusCode::CREATED,
        [(INDEX_HEADER, index.to_string())],
        Json(UserView::from(&user)),
    )
        .into_response())
}

pub async fn list(
    State(s): State<AppState>,
    _min: MinIndex,
    auth: Auth,
) -> Result<Json<serde_json::Value>, ApiError> {
    auth.require_admin()?;
    let users: Vec<UserView> = s
        .node
        .reader()
        .users()?
        .iter()
        .map(UserView::from)
        .collect();
    Ok(Json(json!({ "users": users })))
}
