//! Messages: post (idempotent by `client_msg_id`, optionally into a thread), history forwards
//! and backwards, threads, edit, delete (tombstone), reactions, pins.
//!
//! Owns the HTTP shape of message operations. Every answer is read from this node's state after
//! it has applied the write. Must never decide permissions alone: the state machine decides.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cluster::{Applied, Command, MessageView};
use serde::Deserialize;

use super::channels::{require_member, require_reader};
use crate::auth::Auth;
use crate::error::ApiError;
use crate::extract::{INDEX_HEADER, JsonBody, MinIndex};
use crate::state::AppState;
use crate::validate;
use crate::wire;
use api::rest::{EditMessageRequest, PostMessageRequest};
use api::rest::{MessagePage, PinsEnvelope, PostedMessage, Thread};

async fn write_message(s: &AppState, cmd: Command) -> Result<(MessageView, bool, u64), ApiError> {
    let (applied, index) = s.write_applied(cmd).await?;
    let (channel, seq, duplicate) = match applied {
        Applied::MessageChanged {
            channel,
            seq,
            duplicate,
        } => (channel, seq, duplicate),
        Applied::Message { message, duplicate } => (message.channel, message.seq, duplicate),
        _ => {
            return Err(ApiError::Internal(
                "unexpected outcome of a message command".into(),
            ));
        }
    };
    let view = s
        .node
        .reader()
        .message_view(&channel, seq)?
        .ok_or_else(|| ApiError::MessageNotFound(format!("message {seq} vanished")))?;
    Ok((view, duplicate, index))
}

fn message_response(index: u64, view: &MessageView) -> Response {
    (
        [(INDEX_HEADER, index.to_string())],
        Json(wire::message(view)),
    )
        .into_response()
}

pub async fn post(
    State(s): State<AppState>,
    Path(channel): Path<String>,
    _min: MinIndex,
    auth: Auth,
    JsonBody(req): JsonBody<PostMessageRequest>,
) -> Result<Response, ApiError> {
    validate::message_body(&req.body)?;
    validate::client_msg_id(&req.client_msg_id)?;
    // Refusals are decided before anything reaches the log; the state machine checks again at
    // apply (membership may change in between).
    require_member(&s, &channel, &auth.user.username).await?;
    let (view, duplicate, index) = write_message(
        &s,
        Command::PostMessageV2 {
            channel,
            author: auth.user.username.clone(),
            body: req.body,
            client_msg_id: req.client_msg_id,
            thread_root: req.thread_root,
        },
    )
    .await?;
    let status = if duplicate {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((
        status,
        [(INDEX_HEADER, index.to_string())],
        Json(PostedMessage {
            message: wire::message(&view),
            duplicate: Some(duplicate),
        }),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    after: Option<u64>,
    before: Option<u64>,
    limit: Option<u32>,
}

pub async fn list(
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
    if q.after.is_some() && q.before.is_some() {
        return Err(ApiError::InvalidRequest(
            "give either 'after' or 'before', not both".into(),
        ));
    }
    require_reader(&s, &channel, &auth.user.username).await?;
    let reader = s.node.reader();
    let last_seq = reader.last_seq(&channel)?.unwrap_or(0);
    let last_ev = reader.last_ev(&channel)?;
    match q.before {
        Some(before) => {
            let (messages, has_more) =
                reader.message_views_before(&channel, Some(before), limit as usize)?;
            wire::as_value(&MessagePage {
                has_more: Some(has_more),
                last_ev: Some(last_ev),
                last_seq,
                messages: messages.iter().map(wire::message).collect(),
            })
        }
        None => {
            // `after` defaults to 0: oldest first from the start, as version 1 did.
            let messages =
                reader.message_views_after(&channel, q.after.unwrap_or(0), limit as usize)?;
            wire::as_value(&MessagePage {
                has_more: None,
                last_ev: Some(last_ev),
                last_seq,
                messages: messages.iter().map(wire::message).collect(),
            })
        }
    }
}

pub async fn thread(
    State(s): State<AppState>,
    Path((channel, root)): Path<(String, u64)>,
    _min: MinIndex,
    auth: Auth,
) -> Result<Json<serde_json::Value>, ApiError> {
    require_reader(&s, &channel, &auth.user.username).await?;
    let reader = s.node.reader();
    let root_view = reader
        .message_view(&channel, root)?
        .ok_or_else(|| ApiError::MessageNotFound(format!("message {root} does not exist")))?;
    let replies = reader.thread(&channel, root)?;
    wire::as_value(&Thread {
        replies: replies.iter().map(wire::message).collect(),
        root: wire::message(&root_view),
    })
}

pub async fn pins(
    State(s): State<AppState>,
    Path(channel): Path<String>,
    _min: MinIndex,
    auth: Auth,
) -> Result<Json<serde_json::Value>, ApiError> {
    require_reader(&s, &channel, &auth.user.username).await?;
    let messages = s.node.reader().pins(&channel)?;
    wire::as_value(&PinsEnvelope {
        messages: messages.iter().map(wire::message).collect(),
    })
}

pub async fn edit(
    State(s): State<AppState>,
    Path((channel, seq)): Path<(String, u64)>,
    auth: Auth,
    JsonBody(req): JsonBody<EditMessageRequest>,
) -> Result<Response, ApiError> {
    validate::message_body(&req.body)?;
    let (view, _, index) = write_message(
        &s,
        Command::EditMessage {
            channel,
            seq,
            by: auth.user.username.clone(),
            body: req.body,
        },
    )
    .await?;
    Ok(message_response(index, &view))
}

pub async fn delete(
    State(s): State<AppState>,
    Path((channel, seq)): Path<(String, u64)>,
    auth: Auth,
) -> Result<Response, ApiError> {
    let (view, _, index) = write_message(
        &s,
        Command::DeleteMessage {
            channel,
            seq,
            by: auth.user.username.clone(),
        },
    )
    .await?;
    Ok(message_response(index, &view))
}

async fn reaction(
    s: AppState,
    channel: String,
    seq: u64,
    emoji: String,
    auth: Auth,
    add: bool,
) -> Result<Response, ApiError> {
    validate::emoji(&emoji)?;
    let (view, _, index) = write_message(
        &s,
        Command::SetReaction {
            channel,
            seq,
            user: auth.user.username.clone(),
            emoji,
            add,
        },
    )
    .await?;
    Ok(message_response(index, &view))
}

pub async fn react(
    State(s): State<AppState>,
    Path((channel, seq, emoji)): Path<(String, u64, String)>,
    auth: Auth,
) -> Result<Response, ApiError> {
    reaction(s, channel, seq, emoji, auth, true).await
}

pub async fn unreact(
    State(s): State<AppState>,
    Path((channel, seq, emoji)): Path<(String, u64, String)>,
    auth: Auth,
) -> Result<Response, ApiError> {
    reaction(s, channel, seq, emoji, auth, false).await
}

async fn pin_to(
    s: AppState,
    channel: String,
    seq: u64,
    auth: Auth,
    pinned: bool,
) -> Result<Response, ApiError> {
    let (view, _, index) = write_message(
        &s,
        Command::SetPinned {
            channel,
            seq,
            by: auth.user.username.clone(),
            pinned,
        },
    )
    .await?;
    Ok(message_response(index, &view))
}

pub async fn pin(
    State(s): State<AppState>,
    Path((channel, seq)): Path<(String, u64)>,
    auth: Auth,
) -> Result<Response, ApiError> {
    pin_to(s, channel, seq, auth, true).await
}

pub async fn unpin(
    State(s): State<AppState>,
    Path((channel, seq)): Path<(String, u64)>,
    auth: Auth,
) -> Result<Response, ApiError> {
    pin_to(s, channel, seq, auth, false).await
}
