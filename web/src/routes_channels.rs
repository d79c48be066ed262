//! Channels and messages: create, list, join, post (idempotent by `client_msg_id`), read.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cluster::{Applied, ChannelRecord, Command, MessageRecord};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::auth::Auth;
use crate::error::ApiError;
use crate::extract::{INDEX_HEADER, JsonBody, MinIndex};
use crate::state::AppState;
use crate::validate;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateChannel {
    name: String,
}

/// Refuses unless `user` is a member of `channel`, never on a stale view (see `read_fresh`).
async fn require_member(s: &AppState, channel: &str, user: &str) -> Result<(), ApiError> {
    let member = s
        .read_fresh(|r| Ok(r.is_member(channel, user)?.then_some(())))
        .await?;
    if member.is_some() {
        return Ok(());
    }
    // Member keys exist only for existing channels: tell the two refusals apart.
    if !s.node.reader().channel_exists(channel)? {
        return Err(ApiError::ChannelNotFound(channel.to_string()));
    }
    Err(ApiError::Forbidden(format!(
        "'{user}' is not a member of channel '{channel}'"
    )))
}

fn channel_response(status: StatusCode, index: u64, ch: &ChannelRecord) -> Response {
    (status, [(INDEX_HEADER, index.to_string())], Json(ch)).into_response()
}

pub async fn create(
    State(s): State<AppState>,
    auth: Auth,
    JsonBody(req): JsonBody<CreateChannel>,
) -> Result<Response, ApiError> {
    validate::channel_name(&req.name)?;
    if s.node.reader().channel(&req.name)?.is_some() {
        return Err(ApiError::ChannelExists(req.name));
    }
    let (applied, index) = s
        .node
        .write(Command::CreateChannel {
            name: req.name,
            creator: auth.user.username.clone(),
        })
        .await?;
    let Applied::Channel(ch) = applied else {
        return Err(ApiError::Internal(
            "unexpected outcome of CreateChannel".into(),
        ));
    };
    tracing::info!(channel = %ch.name, by = %auth.user.username, "channel created");
    Ok(channel_response(StatusCode::CREATED, index, &ch))
}

pub async fn list(
    State(s): State<AppState>,
    _min: MinIndex,
    _auth: Auth,
) -> Result<Json<serde_json::Value>, ApiError> {
    let channels = s.node.reader().channels()?;
    Ok(Json(json!({ "channels": channels })))
}

pub async fn get(
    State(s): State<AppState>,
    Path(name): Path<String>,
    _min: MinIndex,
    _auth: Auth,
) -> Result<Json<ChannelRecord>, ApiError> {
    let ch = s
        .read_fresh(|r| r.channel(&name))
        .await?
        .ok_or(ApiError::ChannelNotFound(name))?;
    Ok(Json(ch))
}

pub async fn join(
    State(s): State<AppState>,
    Path(name): Path<String>,
    auth: Auth,
) -> Result<Response, ApiError> {
    // The state machine is the authority (it refuses unknown channels at apply); this only
    // spares the log an entry for a name that cannot exist.
    if validate::channel_name(&name).is_err() {
        return Err(ApiError::ChannelNotFound(name));
    }
    let (applied, index) = s
        .node
        .write(Command::JoinChannel {
            name,
            username: auth.user.username.clone(),
        })
        .await?;
    let Applied::Channel(ch) = applied else {
        return Err(ApiError::Internal(
            "unexpected outcome of JoinChannel".into(),
        ));
    };
    Ok(channel_response(StatusCode::OK, index, &ch))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostMessage {
    body: String,
    client_msg_id: String,
}

#[derive(Serialize)]
struct MessageView<'a> {
    #[serde(flatten)]
    message: &'a MessageRecord,
    duplicate: bool,
}

pub async fn post(
    State(s): State<AppState>,
    Path(channel): Path<String>,
    _min: MinIndex,
    auth: Auth,
    JsonBody(req): JsonBody<PostMessage>,
) -> Result<Response, ApiError> {
    validate::message_body(&req.body)?;
    validate::client_msg_id(&req.client_msg_id)?;
    // Refusals are decided before anything reaches the log; the state machine checks again at
    // apply (membership may change in between).
    require_member(&s, &channel, &auth.user.username).await?;
    let (applied, index) = s
        .node
        .write(Command::PostMessage {
            channel,
            author: auth.user.username.clone(),
            body: req.body,
            client_msg_id: req.client_msg_id,
        })
        .await?;
    let Applied::Message { message, duplicate } = applied else {
        return Err(ApiError::Internal(
            "unexpected outcome of PostMessage".into(),
        ));
    };
    let status = if duplicate {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((
        status,
        [(INDEX_HEADER, index.to_string())],
        Json(MessageView {
            message: &message,
            duplicate,
        }),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    after: Option<u64>,
    limit: Option<u32>,
}

pub async fn messages(
    State(s): State<AppState>,
    Path(channel): Path<String>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
    _min: MinIndex,
    auth: Auth,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::InvalidRequest(e.body_text()))?;
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > validate::MAX_MESSAGES_LIMIT {
        return Err(ApiError::InvalidRequest(format!(
            "limit must be 1 to {}",
            validate::MAX_MESSAGES_LIMIT
        )));
    }
    let reader = s.node.reader();
    let ch = reader
        .channel(&channel)?
        .ok_or_else(|| ApiError::ChannelNotFound(channel.clone()))?;
    if !ch.members.contains(&auth.user.username) {
        return Err(ApiError::Forbidden(format!(
            "'{}' is not a member of channel '{channel}'",
            auth.user.username
        )));
    }
    let messages = reader.messages_after(&channel, q.after.unwrap_or(0), limit as usize)?;
    Ok(Json(
        json!({ "messages": messages, "last_seq": ch.last_seq }),
    ))
}
