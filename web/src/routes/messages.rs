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

use super::access::Rule;
use super::channels::{authorize, require_member, require_reader};
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

#[utoipa::path(
    post,
    path = "/api/v1/channels/{name}/messages",
    tag = "messages",
    params(("name" = String, Path, description = "the channel name (`dm:alice:bob` for a direct message)")),
    request_body = api::rest::PostMessageRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "the new message", body = api::rest::PostedMessage),
        (status = 200, description = "a retry: the original message with this `client_msg_id`; nothing new was written", body = api::rest::PostedMessage),
        (status = 400, description = "`invalid_request`", body = api::error::ErrorBody),
        (status = 403, description = "`forbidden`", body = api::error::ErrorBody),
        (status = 404, description = "`channel_not_found` or `message_not_found`", body = api::error::ErrorBody),
        (status = 409, description = "`archived`", body = api::error::ErrorBody),
        (status = 503, description = "`unavailable`: no leader or quorum right now, or `disk_full`: free space below the watermark here or on a majority of voters; nothing was written, retrying is safe", body = api::error::ErrorBody)
    )
)]
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

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    after: Option<u64>,
    before: Option<u64>,
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

#[utoipa::path(
    get,
    path = "/api/v1/channels/{name}/messages",
    tag = "messages",
    params(("name" = String, Path, description = "the channel name (`dm:alice:bob` for a direct message)"), crate::routes::messages::ListQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "oldest first", body = api::rest::MessagePage),
        (status = 400, description = "`invalid_request`", body = api::error::ErrorBody),
        (status = 403, description = "`forbidden`: members only", body = api::error::ErrorBody),
        (status = 404, description = "`channel_not_found` or `message_not_found`", body = api::error::ErrorBody),
        (status = 503, description = "`unavailable`: no leader or quorum right now, or `disk_full`: free space below the watermark here or on a majority of voters; nothing was written, retrying is safe", body = api::error::ErrorBody)
    )
)]
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

#[utoipa::path(
    get,
    path = "/api/v1/channels/{name}/threads/{root}",
    tag = "messages",
    params(("name" = String, Path, description = "the channel name (`dm:alice:bob` for a direct message)"), ("root" = u64, Path, description = "the thread root's sequence number")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the root and its replies", body = api::rest::Thread),
        (status = 400, description = "`invalid_request`", body = api::error::ErrorBody),
        (status = 403, description = "`forbidden`: members only", body = api::error::ErrorBody),
        (status = 404, description = "`channel_not_found` or `message_not_found`", body = api::error::ErrorBody),
        (status = 503, description = "`unavailable`: no leader or quorum right now, or `disk_full`: free space below the watermark here or on a majority of voters; nothing was written, retrying is safe", body = api::error::ErrorBody)
    )
)]
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

#[utoipa::path(
    get,
    path = "/api/v1/channels/{name}/pins",
    tag = "messages",
    params(("name" = String, Path, description = "the channel name (`dm:alice:bob` for a direct message)")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the pinned messages", body = api::rest::PinsEnvelope),
        (status = 400, description = "`invalid_request`", body = api::error::ErrorBody),
        (status = 403, description = "`forbidden`: members only", body = api::error::ErrorBody),
        (status = 404, description = "`channel_not_found` or `message_not_found`", body = api::error::ErrorBody),
        (status = 503, description = "`unavailable`: no leader or quorum right now, or `disk_full`: free space below the watermark here or on a majority of voters; nothing was written, retrying is safe", body = api::error::ErrorBody)
    )
)]
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

#[utoipa::path(
    patch,
    path = "/api/v1/channels/{name}/messages/{seq}",
    tag = "messages",
    params(("name" = String, Path, description = "the channel name (`dm:alice:bob` for a direct message)"), ("seq" = u64, Path, description = "the message's sequence number in the channel")),
    request_body = api::rest::EditMessageRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the edited message", body = api::rest::Message),
        (status = 400, description = "`invalid_request`", body = api::error::ErrorBody),
        (status = 403, description = "`forbidden`", body = api::error::ErrorBody),
        (status = 404, description = "`channel_not_found` or `message_not_found`", body = api::error::ErrorBody),
        (status = 409, description = "`archived`", body = api::error::ErrorBody),
        (status = 503, description = "`unavailable`: no leader or quorum right now, or `disk_full`: free space below the watermark here or on a majority of voters; nothing was written, retrying is safe", body = api::error::ErrorBody)
    )
)]
pub async fn edit(
    State(s): State<AppState>,
    Path((channel, seq)): Path<(String, u64)>,
    auth: Auth,
    JsonBody(req): JsonBody<EditMessageRequest>,
) -> Result<Response, ApiError> {
    validate::message_body(&req.body)?;
    authorize(&s, Rule::AuthorMember, &channel, &auth, Some(seq), None).await?;
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

#[utoipa::path(
    delete,
    path = "/api/v1/channels/{name}/messages/{seq}",
    tag = "messages",
    params(("name" = String, Path, description = "the channel name (`dm:alice:bob` for a direct message)"), ("seq" = u64, Path, description = "the message's sequence number in the channel")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the tombstone (`deleted: true`, empty body)", body = api::rest::Message),
        (status = 400, description = "`invalid_request`", body = api::error::ErrorBody),
        (status = 403, description = "`forbidden`", body = api::error::ErrorBody),
        (status = 404, description = "`channel_not_found` or `message_not_found`", body = api::error::ErrorBody),
        (status = 409, description = "`archived`", body = api::error::ErrorBody),
        (status = 503, description = "`unavailable`: no leader or quorum right now, or `disk_full`: free space below the watermark here or on a majority of voters; nothing was written, retrying is safe", body = api::error::ErrorBody)
    )
)]
pub async fn delete(
    State(s): State<AppState>,
    Path((channel, seq)): Path<(String, u64)>,
    auth: Auth,
) -> Result<Response, ApiError> {
    authorize(
        &s,
        Rule::AuthorOrAdminMember,
        &channel,
        &auth,
        Some(seq),
        None,
    )
    .await?;
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
    // Reacting is taking part: members only (the state machine refuses others too). The answer
    // carries the whole message, so nobody else may get one.
    authorize(&s, Rule::ChannelMember, &channel, &auth, Some(seq), None).await?;
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

#[utoipa::path(
    put,
    path = "/api/v1/channels/{name}/messages/{seq}/reactions/{emoji}",
    tag = "messages",
    params(("name" = String, Path, description = "the channel name (`dm:alice:bob` for a direct message)"), ("seq" = u64, Path, description = "the message's sequence number in the channel"), ("emoji" = String, Path, min_length = 1, max_length = 32, description = "1 to 32 bytes, URL-encoded")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the message", body = api::rest::Message),
        (status = 400, description = "`invalid_request`", body = api::error::ErrorBody),
        (status = 403, description = "`forbidden`", body = api::error::ErrorBody),
        (status = 404, description = "`channel_not_found` or `message_not_found`", body = api::error::ErrorBody),
        (status = 409, description = "`archived`", body = api::error::ErrorBody),
        (status = 503, description = "`unavailable`: no leader or quorum right now, or `disk_full`: free space below the watermark here or on a majority of voters; nothing was written, retrying is safe", body = api::error::ErrorBody)
    )
)]
pub async fn react(
    State(s): State<AppState>,
    Path((channel, seq, emoji)): Path<(String, u64, String)>,
    auth: Auth,
) -> Result<Response, ApiError> {
    reaction(s, channel, seq, emoji, auth, true).await
}

#[utoipa::path(
    delete,
    path = "/api/v1/channels/{name}/messages/{seq}/reactions/{emoji}",
    tag = "messages",
    params(("name" = String, Path, description = "the channel name (`dm:alice:bob` for a direct message)"), ("seq" = u64, Path, description = "the message's sequence number in the channel"), ("emoji" = String, Path, min_length = 1, max_length = 32, description = "1 to 32 bytes, URL-encoded")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the message", body = api::rest::Message),
        (status = 400, description = "`invalid_request`", body = api::error::ErrorBody),
        (status = 403, description = "`forbidden`", body = api::error::ErrorBody),
        (status = 404, description = "`channel_not_found` or `message_not_found`", body = api::error::ErrorBody),
        (status = 409, description = "`archived`", body = api::error::ErrorBody),
        (status = 503, description = "`unavailable`: no leader or quorum right now, or `disk_full`: free space below the watermark here or on a majority of voters; nothing was written, retrying is safe", body = api::error::ErrorBody)
    )
)]
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
    // The answer is the message, so the caller must be able to read it: members, and admins
    // on channels they can read.
    authorize(&s, Rule::MemberOrAdmin, &channel, &auth, Some(seq), None).await?;
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

#[utoipa::path(
    put,
    path = "/api/v1/channels/{name}/messages/{seq}/pin",
    tag = "messages",
    params(("name" = String, Path, description = "the channel name (`dm:alice:bob` for a direct message)"), ("seq" = u64, Path, description = "the message's sequence number in the channel")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the message", body = api::rest::Message),
        (status = 400, description = "`invalid_request`", body = api::error::ErrorBody),
        (status = 403, description = "`forbidden`", body = api::error::ErrorBody),
        (status = 404, description = "`channel_not_found` or `message_not_found`", body = api::error::ErrorBody),
        (status = 409, description = "`archived`", body = api::error::ErrorBody),
        (status = 503, description = "`unavailable`: no leader or quorum right now, or `disk_full`: free space below the watermark here or on a majority of voters; nothing was written, retrying is safe", body = api::error::ErrorBody)
    )
)]
pub async fn pin(
    State(s): State<AppState>,
    Path((channel, seq)): Path<(String, u64)>,
    auth: Auth,
) -> Result<Response, ApiError> {
    pin_to(s, channel, seq, auth, true).await
}

#[utoipa::path(
    delete,
    path = "/api/v1/channels/{name}/messages/{seq}/pin",
    tag = "messages",
    params(("name" = String, Path, description = "the channel name (`dm:alice:bob` for a direct message)"), ("seq" = u64, Path, description = "the message's sequence number in the channel")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the message", body = api::rest::Message),
        (status = 400, description = "`invalid_request`", body = api::error::ErrorBody),
        (status = 403, description = "`forbidden`", body = api::error::ErrorBody),
        (status = 404, description = "`channel_not_found` or `message_not_found`", body = api::error::ErrorBody),
        (status = 409, description = "`archived`", body = api::error::ErrorBody),
        (status = 503, description = "`unavailable`: no leader or quorum right now, or `disk_full`: free space below the watermark here or on a majority of voters; nothing was written, retrying is safe", body = api::error::ErrorBody)
    )
)]
pub async fn unpin(
    State(s): State<AppState>,
    Path((channel, seq)): Path<(String, u64)>,
    auth: Auth,
) -> Result<Response, ApiError> {
    pin_to(s, channel, seq, auth, false).await
}
