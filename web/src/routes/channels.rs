//! Channels: create (public, private), direct messages, list with unread counts, read, update
//! (title, topic, archive), join, leave, members, read markers.
//!
//! Owns the HTTP shape of channel management; the state machine owns the rules and checks them
//! again at apply. Must never answer "not found" or "forbidden" from a stale view (`read_fresh`).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cluster::{Applied, ChannelKind, ChannelView, Command, Role};
use serde::Deserialize;

use super::access::{ChannelAccess, Rule};
use crate::auth::Auth;
use crate::error::ApiError;
use crate::extract::{INDEX_HEADER, JsonBody, MinIndex};
use crate::state::AppState;
use crate::validate;
use crate::wire;
use api::rest::{Channel, ChannelMute, ChannelsEnvelope, ReadMarker};
use api::rest::{ChannelPatch, DmRequest, MemberRequest, ReadRequest};

/// Refuses unless `user` may read `channel` (public, or a member), never on a stale view.
pub async fn require_reader(s: &AppState, channel: &str, user: &str) -> Result<(), ApiError> {
    match s.can_read_fresh(channel, user).await? {
        Some(true) => Ok(()),
        Some(false) => Err(ApiError::Forbidden(format!(
            "only members can read channel '{channel}'"
        ))),
        None => Err(ApiError::ChannelNotFound(channel.to_string())),
    }
}

/// Refuses unless `user` is a member of `channel`, never on a stale view.
pub async fn require_member(s: &AppState, channel: &str, user: &str) -> Result<(), ApiError> {
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

/// Refuses unless `auth`'s user passes `rule` on `channel` (for message routes, towards message
/// `seq`; for member routes, `subject` is the member the path names). Decided from this node's
/// state before anything is proposed; a refusal is only given after catching up with the
/// leader, so a membership granted a moment ago through another node is not refused. 404
/// `channel_not_found` for no such channel; 404 `message_not_found` only to callers who may
/// read the channel (others get 403 and learn nothing about its messages).
pub async fn authorize(
    s: &AppState,
    rule: Rule,
    channel: &str,
    auth: &Auth,
    seq: Option<u64>,
    subject: Option<&str>,
) -> Result<(), ApiError> {
    let user = auth.user.username.as_str();
    let admin = auth.user.role == Role::Admin && !auth.user.disabled;
    let read =
        |r: &cluster::StateReader| -> Result<Option<(ChannelAccess, bool)>, cluster::StateError> {
            let Some(ch) = r.channel_view(channel)? else {
                return Ok(None);
            };
            let message = match seq {
                Some(seq) => r.message_view(channel, seq)?.filter(|m| !m.deleted),
                None => None,
            };
            let own = match (&message, subject) {
                (Some(m), _) => m.author == user,
                (None, Some(subject)) => subject == user,
                (None, None) => false,
            };
            let access = ChannelAccess {
                kind: ch.kind,
                member: ch.members.contains(user),
                admin,
                creator: ch.created_by == user,
                own,
            };
            Ok(Some((access, seq.is_none() || message.is_some())))
        };
    let passes = |(a, found): &(ChannelAccess, bool)| rule.allows(a) && *found;
    let fresh = s.read_fresh(|r| Ok(read(r)?.filter(passes))).await?;
    if fresh.is_some() {
        return Ok(());
    }
    let Some((access, found)) = read(s.node.reader())? else {
        return Err(ApiError::ChannelNotFound(channel.to_string()));
    };
    let reader = access.kind == ChannelKind::Public || access.member;
    if !found && reader {
        return Err(ApiError::MessageNotFound(format!(
            "message {} does not exist in '{channel}'",
            seq.unwrap_or_default()
        )));
    }
    rule.check(channel, &access)?;
    // Allowed, but no such message (hidden above from non-readers).
    Err(ApiError::MessageNotFound(format!(
        "message {} does not exist in '{channel}'",
        seq.unwrap_or_default()
    )))
}

fn channel_response(status: StatusCode, index: u64, ch: &ChannelView) -> Response {
    (
        status,
        [(INDEX_HEADER, index.to_string())],
        Json(wire::channel(ch)),
    )
        .into_response()
}

/// Writes a channel command and answers with the channel as this node has applied it.
async fn write_channel(
    s: &AppState,
    status: StatusCode,
    cmd: Command,
) -> Result<Response, ApiError> {
    let (applied, index) = s.write_applied(cmd).await?;
    let name = match applied {
        Applied::ChannelChanged { name } => name,
        Applied::Channel(ch) => ch.name,
        _ => {
            return Err(ApiError::Internal(
                "unexpected outcome of a channel command".into(),
            ));
        }
    };
    let view = s
        .node
        .reader()
        .channel_view(&name)?
        .ok_or(ApiError::ChannelNotFound(name))?;
    Ok(channel_response(status, index, &view))
}

/// The server's reading of `api::rest::NewChannel`, more lenient (`kind`, `title` and `topic`
/// may be left out: a public channel titled by its name) and stricter (only the kinds the
/// cluster stores; not `api`'s `dm` alias or its catch-all for kinds added later).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateChannel {
    #[schema(pattern = "^[a-z0-9][a-z0-9_-]{0,63}$")]
    name: String,
    #[serde(default)]
    #[schema(value_type = Option<api::rest::ChannelKind>)]
    kind: Option<ChannelKind>,
    #[serde(default)]
    #[schema(max_length = 64)]
    title: Option<String>,
    #[serde(default)]
    #[schema(max_length = 250)]
    topic: Option<String>,
}

#[utoipa::path(
    post,
    path = "/api/v1/channels",
    tag = "channels",
    request_body = crate::routes::channels::CreateChannel,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "the new channel", body = api::rest::Channel),
        (status = 400, description = "`invalid_request`", body = api::error::ErrorBody),
        (status = 403, description = "`forbidden`: not allowed in this channel", body = api::error::ErrorBody),
        (status = 404, description = "`channel_not_found`, or `not_found` for a user", body = api::error::ErrorBody),
        (status = 409, description = "`archived` or `channel_exists`", body = api::error::ErrorBody),
        (status = 503, description = "`unavailable`: no leader or quorum right now, or `disk_full`: free space below the watermark here or on a majority of voters; nothing was written, retrying is safe", body = api::error::ErrorBody)
    )
)]
pub async fn create(
    State(s): State<AppState>,
    auth: Auth,
    JsonBody(req): JsonBody<CreateChannel>,
) -> Result<Response, ApiError> {
    validate::channel_name(&req.name)?;
    let kind = req.kind.unwrap_or(ChannelKind::Public);
    if kind == ChannelKind::Direct {
        return Err(ApiError::InvalidRequest(
            "direct messages are started with POST /api/v1/dms".into(),
        ));
    }
    let title = req.title.unwrap_or_default();
    let topic = req.topic.unwrap_or_default();
    validate::title(&title)?;
    validate::topic(&topic)?;
    if s.node.reader().channel_exists(&req.name)? {
        return Err(ApiError::ChannelExists(req.name));
    }
    tracing::info!(channel = %req.name, by = %auth.user.username, "channel created");
    write_channel(
        &s,
        StatusCode::CREATED,
        Command::CreateChannelV2 {
            name: req.name,
            creator: auth.user.username.clone(),
            kind,
            title,
            topic,
            members: Vec::new(),
        },
    )
    .await
}

#[utoipa::path(
    get,
    path = "/api/v1/channels",
    tag = "channels",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "public channels and the caller's, each with the caller's read state", body = api::rest::ChannelsEnvelope)
    )
)]
pub async fn list(
    State(s): State<AppState>,
    _min: MinIndex,
    auth: Auth,
) -> Result<Json<serde_json::Value>, ApiError> {
    let channels = s.node.reader().channels_for(&auth.user.username)?;
    wire::as_value(&ChannelsEnvelope {
        channels: channels.iter().map(wire::channel_summary).collect(),
    })
}

#[utoipa::path(
    get,
    path = "/api/v1/channels/{name}",
    tag = "channels",
    params(("name" = String, Path, description = "the channel name (`dm:alice:bob` for a direct message)")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the channel", body = api::rest::Channel),
        (status = 403, description = "`forbidden`: members only", body = api::error::ErrorBody),
        (status = 404, description = "`channel_not_found`", body = api::error::ErrorBody),
        (status = 503, description = "`unavailable`: no leader or quorum right now, or `disk_full`: free space below the watermark here or on a majority of voters; nothing was written, retrying is safe", body = api::error::ErrorBody)
    )
)]
pub async fn get(
    State(s): State<AppState>,
    Path(name): Path<String>,
    _min: MinIndex,
    auth: Auth,
) -> Result<Json<Channel>, ApiError> {
    require_reader(&s, &name, &auth.user.username).await?;
    let ch = s
        .node
        .reader()
        .channel_view(&name)?
        .ok_or(ApiError::ChannelNotFound(name))?;
    Ok(Json(wire::channel(&ch)))
}

#[utoipa::path(
    patch,
    path = "/api/v1/channels/{name}",
    tag = "channels",
    params(("name" = String, Path, description = "the channel name (`dm:alice:bob` for a direct message)")),
    request_body = api::rest::ChannelPatch,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the channel after the change", body = api::rest::Channel),
        (status = 400, description = "`invalid_request`", body = api::error::ErrorBody),
        (status = 403, description = "`forbidden`: not allowed in this channel", body = api::error::ErrorBody),
        (status = 404, description = "`channel_not_found`, or `not_found` for a user", body = api::error::ErrorBody),
        (status = 409, description = "`archived` or `channel_exists`", body = api::error::ErrorBody),
        (status = 503, description = "`unavailable`: no leader or quorum right now, or `disk_full`: free space below the watermark here or on a majority of voters; nothing was written, retrying is safe", body = api::error::ErrorBody)
    )
)]
pub async fn update(
    State(s): State<AppState>,
    Path(name): Path<String>,
    auth: Auth,
    JsonBody(req): JsonBody<ChannelPatch>,
) -> Result<Response, ApiError> {
    if let Some(t) = &req.title {
        validate::title(t)?;
    }
    if let Some(t) = &req.topic {
        validate::topic(t)?;
    }
    // Archiving and retitling belong to the creator and admins; members may set the topic.
    let rule = if req.title.is_some() || req.archived.is_some() {
        Rule::CreatorOrAdmin
    } else {
        Rule::MemberOrAdmin
    };
    authorize(&s, rule, &name, &auth, None, None).await?;
    write_channel(
        &s,
        StatusCode::OK,
        Command::UpdateChannel {
            channel: name,
            by: auth.user.username.clone(),
            title: req.title,
            topic: req.topic,
            archived: req.archived,
        },
    )
    .await
}

#[utoipa::path(
    post,
    path = "/api/v1/channels/{name}/join",
    tag = "channels",
    params(("name" = String, Path, description = "the channel name (`dm:alice:bob` for a direct message)")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the channel (joining twice is not an error)", body = api::rest::Channel),
        (status = 400, description = "`invalid_request`", body = api::error::ErrorBody),
        (status = 403, description = "`forbidden`: not allowed in this channel", body = api::error::ErrorBody),
        (status = 404, description = "`channel_not_found`, or `not_found` for a user", body = api::error::ErrorBody),
        (status = 409, description = "`archived` or `channel_exists`", body = api::error::ErrorBody),
        (status = 503, description = "`unavailable`: no leader or quorum right now, or `disk_full`: free space below the watermark here or on a majority of voters; nothing was written, retrying is safe", body = api::error::ErrorBody)
    )
)]
pub async fn join(
    State(s): State<AppState>,
    Path(name): Path<String>,
    auth: Auth,
) -> Result<Response, ApiError> {
    // The state machine is the authority (it refuses unknown channels at apply); this only
    // spares the log an entry for a name that cannot exist.
    if !name.starts_with("dm:") && validate::channel_name(&name).is_err() {
        return Err(ApiError::ChannelNotFound(name));
    }
    require_reader(&s, &name, &auth.user.username).await?;
    write_channel(
        &s,
        StatusCode::OK,
        Command::AddMember {
            channel: name,
            username: auth.user.username.clone(),
            by: auth.user.username.clone(),
        },
    )
    .await
}

#[utoipa::path(
    post,
    path = "/api/v1/channels/{name}/leave",
    tag = "channels",
    params(("name" = String, Path, description = "the channel name (`dm:alice:bob` for a direct message)")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the channel", body = api::rest::Channel),
        (status = 400, description = "`invalid_request`", body = api::error::ErrorBody),
        (status = 403, description = "`forbidden`: not allowed in this channel", body = api::error::ErrorBody),
        (status = 404, description = "`channel_not_found`, or `not_found` for a user", body = api::error::ErrorBody),
        (status = 409, description = "`archived` or `channel_exists`", body = api::error::ErrorBody),
        (status = 503, description = "`unavailable`: no leader or quorum right now, or `disk_full`: free space below the watermark here or on a majority of voters; nothing was written, retrying is safe", body = api::error::ErrorBody)
    )
)]
pub async fn leave(
    State(s): State<AppState>,
    Path(name): Path<String>,
    auth: Auth,
) -> Result<Response, ApiError> {
    require_member(&s, &name, &auth.user.username).await?;
    write_channel(
        &s,
        StatusCode::OK,
        Command::RemoveMember {
            channel: name,
            username: auth.user.username.clone(),
            by: auth.user.username.clone(),
        },
    )
    .await
}

#[utoipa::path(
    post,
    path = "/api/v1/channels/{name}/members",
    tag = "channels",
    params(("name" = String, Path, description = "the channel name (`dm:alice:bob` for a direct message)")),
    request_body = api::rest::MemberRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the channel", body = api::rest::Channel),
        (status = 400, description = "`invalid_request`", body = api::error::ErrorBody),
        (status = 403, description = "`forbidden`: not allowed in this channel", body = api::error::ErrorBody),
        (status = 404, description = "`channel_not_found`, or `not_found` for a user", body = api::error::ErrorBody),
        (status = 409, description = "`archived` or `channel_exists`", body = api::error::ErrorBody),
        (status = 503, description = "`unavailable`: no leader or quorum right now, or `disk_full`: free space below the watermark here or on a majority of voters; nothing was written, retrying is safe", body = api::error::ErrorBody)
    )
)]
pub async fn add_member(
    State(s): State<AppState>,
    Path(name): Path<String>,
    auth: Auth,
    JsonBody(req): JsonBody<MemberRequest>,
) -> Result<Response, ApiError> {
    validate::username(&req.username)?;
    if s.read_fresh(|r| r.user(&req.username)).await?.is_none() {
        return Err(ApiError::NotFound(format!(
            "user '{}' does not exist",
            req.username
        )));
    }
    // Adding yourself is joining (any reader); adding someone else is managing members.
    let rule = if req.username == auth.user.username {
        Rule::ChannelReader
    } else {
        Rule::ManageMembers
    };
    authorize(&s, rule, &name, &auth, None, None).await?;
    write_channel(
        &s,
        StatusCode::OK,
        Command::AddMember {
            channel: name,
            username: req.username,
            by: auth.user.username.clone(),
        },
    )
    .await
}

#[utoipa::path(
    delete,
    path = "/api/v1/channels/{name}/members/{user}",
    tag = "channels",
    params(("name" = String, Path, description = "the channel name (`dm:alice:bob` for a direct message)"), ("user" = String, Path, description = "the member to remove")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the channel", body = api::rest::Channel),
        (status = 400, description = "`invalid_request`", body = api::error::ErrorBody),
        (status = 403, description = "`forbidden`: not allowed in this channel", body = api::error::ErrorBody),
        (status = 404, description = "`channel_not_found`, or `not_found` for a user", body = api::error::ErrorBody),
        (status = 409, description = "`archived` or `channel_exists`", body = api::error::ErrorBody),
        (status = 503, description = "`unavailable`: no leader or quorum right now, or `disk_full`: free space below the watermark here or on a majority of voters; nothing was written, retrying is safe", body = api::error::ErrorBody)
    )
)]
pub async fn remove_member(
    State(s): State<AppState>,
    Path((name, user)): Path<(String, String)>,
    auth: Auth,
) -> Result<Response, ApiError> {
    // Refused here, without a log entry, when the channel does not exist (found by the API
    // fuzz test: a refused request must write nothing).
    authorize(&s, Rule::SelfOrAdmin, &name, &auth, None, Some(&user)).await?;
    write_channel(
        &s,
        StatusCode::OK,
        Command::RemoveMember {
            channel: name,
            username: user,
            by: auth.user.username.clone(),
        },
    )
    .await
}

#[utoipa::path(
    post,
    path = "/api/v1/dms",
    tag = "channels",
    request_body = api::rest::DmRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the direct-message channel (the same one when asked again)", body = api::rest::Channel),
        (status = 400, description = "`invalid_request`", body = api::error::ErrorBody),
        (status = 403, description = "`forbidden`: not allowed in this channel", body = api::error::ErrorBody),
        (status = 404, description = "`channel_not_found`, or `not_found` for a user", body = api::error::ErrorBody),
        (status = 409, description = "`archived` or `channel_exists`", body = api::error::ErrorBody),
        (status = 503, description = "`unavailable`: no leader or quorum right now, or `disk_full`: free space below the watermark here or on a majority of voters; nothing was written, retrying is safe", body = api::error::ErrorBody)
    )
)]
pub async fn start_dm(
    State(s): State<AppState>,
    auth: Auth,
    JsonBody(req): JsonBody<DmRequest>,
) -> Result<Response, ApiError> {
    let me = auth.user.username.clone();
    let mut all: Vec<String> = req.users.clone();
    all.push(me.clone());
    all.sort();
    all.dedup();
    if all.len() < 2 || all.len() > cluster::state::chat::MAX_DM_MEMBERS {
        return Err(ApiError::InvalidRequest(format!(
            "a direct message has 1 to {} other participants",
            cluster::state::chat::MAX_DM_MEMBERS - 1
        )));
    }
    for u in &all {
        validate::username(u)?;
        if s.read_fresh(|r| r.user(u)).await?.is_none() {
            return Err(ApiError::NotFound(format!("user '{u}' does not exist")));
        }
    }
    let name = cluster::state::chat::dm_name(&all);
    write_channel(
        &s,
        StatusCode::OK,
        Command::CreateChannelV2 {
            name,
            creator: me,
            kind: ChannelKind::Direct,
            title: String::new(),
            topic: String::new(),
            members: all,
        },
    )
    .await
}

#[utoipa::path(
    post,
    path = "/api/v1/channels/{name}/read",
    tag = "channels",
    params(("name" = String, Path, description = "the channel name (`dm:alice:bob` for a direct message)")),
    request_body = api::rest::ReadRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the caller's read marker (never moves back)", body = api::rest::ReadMarker),
        (status = 400, description = "`invalid_request`", body = api::error::ErrorBody),
        (status = 403, description = "`forbidden`: not allowed in this channel", body = api::error::ErrorBody),
        (status = 404, description = "`channel_not_found`, or `not_found` for a user", body = api::error::ErrorBody),
        (status = 409, description = "`archived` or `channel_exists`", body = api::error::ErrorBody),
        (status = 503, description = "`unavailable`: no leader or quorum right now, or `disk_full`: free space below the watermark here or on a majority of voters; nothing was written, retrying is safe", body = api::error::ErrorBody)
    )
)]
pub async fn mark_read(
    State(s): State<AppState>,
    Path(name): Path<String>,
    auth: Auth,
    JsonBody(req): JsonBody<ReadRequest>,
) -> Result<Response, ApiError> {
    authorize(&s, Rule::ChannelMember, &name, &auth, None, None).await?;
    let user = auth.user.username.clone();
    let (_, index) = s
        .write_applied(Command::MarkRead {
            channel: name.clone(),
            username: user.clone(),
            seq: req.seq,
        })
        .await?;
    let rs = s.node.reader().read_state(&user, &name)?;
    Ok((
        [(INDEX_HEADER, index.to_string())],
        wire::as_value(&ReadMarker {
            channel: name,
            last_read: rs.last_read,
            mentions: rs.mentions,
            unread: rs.unread,
        })?,
    )
        .into_response())
}

#[utoipa::path(
    put,
    path = "/api/v1/channels/{name}/mute",
    tag = "channels",
    params(("name" = String, Path, description = "the channel name (`dm:alice:bob` for a direct message)")),
    request_body = crate::routes::channels::MuteRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the caller's mute setting of the channel after the change (setting the same value again is not an error); the caller's other connections get a `channel_muted` frame", body = api::rest::ChannelMute),
        (status = 400, description = "`invalid_request`", body = api::error::ErrorBody),
        (status = 403, description = "`forbidden`: only members can mute a channel", body = api::error::ErrorBody),
        (status = 404, description = "`channel_not_found`", body = api::error::ErrorBody),
        (status = 503, description = "`unavailable`: no leader or quorum right now (or a member still runs a binary that predates muting), or `disk_full`: free space below the watermark here or on a majority of voters; nothing was written, retrying is safe", body = api::error::ErrorBody)
    )
)]
pub async fn mute(
    State(s): State<AppState>,
    Path(name): Path<String>,
    auth: Auth,
    JsonBody(req): JsonBody<MuteRequest>,
) -> Result<Response, ApiError> {
    authorize(&s, Rule::ChannelMember, &name, &auth, None, None).await?;
    let user = auth.user.username.clone();
    let (applied, index) = s
        .write_applied(Command::SetChannelMuted {
            channel: name.clone(),
            username: user,
            muted: req.muted,
        })
        .await?;
    let Applied::MuteSet { muted, .. } = applied else {
        return Err(ApiError::Internal(
            "unexpected outcome of a mute command".into(),
        ));
    };
    Ok((
        [(INDEX_HEADER, index.to_string())],
        wire::as_value(&ChannelMute {
            channel: Some(name),
            muted,
        })?,
    )
        .into_response())
}

/// The server's reading of `api::rest::ChannelMute` in a request: only `muted`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MuteRequest {
    muted: bool,
}
