//! The API's error type and its one conversion to HTTP: a status and
//! `{"error":{"code":"...","message":"..."}}`.
//!
//! Owns the mapping from cluster-layer errors to codes documented in `docs/api.md`. Must never
//! leak internals a client cannot act on beyond a one-line message.

use api::error::ErrorBody;
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cluster::transport::rpc::MembershipError;
use cluster::{ApplyError, ClusterError};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidJson(String),
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("wrong username or password")]
    InvalidCredentials,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("channel '{0}' does not exist")]
    ChannelNotFound(String),
    #[error("user '{0}' already exists")]
    UserExists(String),
    #[error("channel '{0}' already exists")]
    ChannelExists(String),
    #[error("another membership change is in progress; retry when it has finished")]
    MembershipInProgress,
    #[error("{0}")]
    UnsafeMembership(String),
    #[error("request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    Unavailable(String),
    /// Free space below the watermark (503 `disk_full`); nothing was written.
    #[error("{0}")]
    DiskFull(String),
    #[error("{0}")]
    Internal(String),
    #[error("{0}")]
    WeakPassword(String),
    #[error("origin '{0}' is not one of this workspace's origins")]
    ForbiddenOrigin(String),
    #[error("channel '{0}' is archived")]
    Archived(String),
    #[error("too many login attempts; retry in {} s", .0.div_ceil(1000))]
    TooManyAttempts(u64),
    #[error("{0}")]
    MessageNotFound(String),
    /// The request contradicts existing state (a CNAME beside other DNS records).
    #[error("{0}")]
    Conflict(String),
    /// A DNS name the cluster answers itself; nothing may be added there.
    #[error("{0}")]
    ReservedName(String),
    /// A join token was refused (its own codes, see `routes::join`).
    #[error("{0}")]
    JoinToken(cluster::command::JoinTokenRefusal),
    /// The session reached its absolute or idle deadline (401 `session_expired`).
    #[error("session expired ({}); log in again", crate::session_use::end_text(*.0))]
    SessionExpired(cluster::SessionEnd),
    /// The account's password was set by an admin and must be changed first (403).
    #[error("your password was set by an admin: change it first (POST /api/v1/me/password)")]
    PasswordChangeRequired,
    /// A step-up operation over plain HTTP (403 `https_required`).
    #[error("{0}")]
    HttpsRequired(String),
    /// A step-up operation without the caller's correct current password (403).
    #[error("{0}")]
    StepUpFailed(String),
    /// A certificate-authority operation failed (its own codes, see `ca_api`).
    #[error(transparent)]
    Ca(#[from] crate::ca_api::CaApiError),
    /// A file route's refusal (its own codes, see `routes::files`).
    #[error(transparent)]
    Files(#[from] crate::routes::files::FileApiError),
    /// A search query that cannot be run (400 `bad_query`).
    #[error("{0}")]
    BadQuery(String),
}

impl ApiError {
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::InvalidJson(_) => (StatusCode::BAD_REQUEST, "invalid_json"),
            ApiError::InvalidRequest(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::InvalidCredentials => (StatusCode::UNAUTHORIZED, "invalid_credentials"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::ChannelNotFound(_) => (StatusCode::NOT_FOUND, "channel_not_found"),
            ApiError::UserExists(_) => (StatusCode::CONFLICT, "user_exists"),
            ApiError::ChannelExists(_) => (StatusCode::CONFLICT, "channel_exists"),
            ApiError::MembershipInProgress => {
                (StatusCode::CONFLICT, "membership_change_in_progress")
            }
            ApiError::UnsafeMembership(_) => (StatusCode::CONFLICT, "unsafe_membership_change"),
            ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::DiskFull(_) => (StatusCode::SERVICE_UNAVAILABLE, api::error::code::DISK_FULL),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            ApiError::WeakPassword(_) => (StatusCode::BAD_REQUEST, "weak_password"),
            ApiError::ForbiddenOrigin(_) => (StatusCode::FORBIDDEN, "forbidden_origin"),
            ApiError::Archived(_) => (StatusCode::CONFLICT, "archived"),
            ApiError::TooManyAttempts(_) => (StatusCode::TOO_MANY_REQUESTS, "too_many_attempts"),
            ApiError::MessageNotFound(_) => (StatusCode::NOT_FOUND, "message_not_found"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::ReservedName(_) => (StatusCode::BAD_REQUEST, "reserved_name"),
            ApiError::SessionExpired(_) => (StatusCode::UNAUTHORIZED, "session_expired"),
            ApiError::PasswordChangeRequired => (StatusCode::FORBIDDEN, "password_change_required"),
            ApiError::HttpsRequired(_) => (StatusCode::FORBIDDEN, "https_required"),
            ApiError::StepUpFailed(_) => (StatusCode::FORBIDDEN, "step_up_failed"),
            ApiError::JoinToken(r) => crate::routes::join::refusal_status(r),
            ApiError::Ca(e) => e.status_and_code(),
            ApiError::Files(e) => e.status_and_code(),
            ApiError::BadQuery(_) => (StatusCode::BAD_REQUEST, "bad_query"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
            tracing::error!(code, error = %self, "request failed");
        }
        let body = Json(ErrorBody::new(code, self.to_string()));
        if let ApiError::TooManyAttempts(ms) = self {
            let secs = ms.div_ceil(1000).max(1).to_string();
            return (status, [(axum::http::header::RETRY_AFTER, secs)], body).into_response();
        }
        (status, body).into_response()
    }
}

impl From<ApplyError> for ApiError {
    fn from(e: ApplyError) -> Self {
        match e {
            ApplyError::UserExists(u) => ApiError::UserExists(u),
            ApplyError::UnknownUser(u) => ApiError::NotFound(format!("user '{u}' does not exist")),
            ApplyError::UserDisabled(_) => ApiError::InvalidCredentials,
            ApplyError::ChannelExists(c) => ApiError::ChannelExists(c),
            ApplyError::ChannelNotFound(c) => ApiError::ChannelNotFound(c),
            e @ ApplyError::NotMember { .. } => ApiError::Forbidden(e.to_string()),
            e @ ApplyError::UnsupportedVersion(_) => ApiError::Unavailable(e.to_string()),
            e @ ApplyError::MessageNotFound { .. } => ApiError::MessageNotFound(e.to_string()),
            ApplyError::Forbidden(m) => ApiError::Forbidden(m),
            ApplyError::Archived(c) => ApiError::Archived(c),
            ApplyError::Invalid(m) => ApiError::InvalidRequest(m),
            ApplyError::NotFound(m) => ApiError::NotFound(m),
            ApplyError::Conflict(m) => ApiError::Conflict(m),
            ApplyError::ReservedName(m) => ApiError::ReservedName(m),
            ApplyError::JoinToken(r) => ApiError::JoinToken(r),
        }
    }
}

impl From<ClusterError> for ApiError {
    fn from(e: ClusterError) -> Self {
        match e {
            ClusterError::Rejected(a) => a.into(),
            ClusterError::Membership(MembershipError::InProgress) => ApiError::MembershipInProgress,
            ClusterError::Membership(MembershipError::Unsafe(m)) => ApiError::UnsafeMembership(m),
            ClusterError::Membership(MembershipError::Invalid(m)) => ApiError::InvalidRequest(m),
            ClusterError::Membership(MembershipError::NotFound(m)) => ApiError::NotFound(m),
            ClusterError::Membership(m) => ApiError::Unavailable(m.to_string()),
            ClusterError::DiskFull(why) => ApiError::DiskFull(why),
            e @ (ClusterError::Unavailable(_)
            | ClusterError::NotCaughtUp { .. }
            | ClusterError::ShuttingDown) => ApiError::Unavailable(e.to_string()),
            e @ (ClusterError::Storage(_)
            | ClusterError::AlreadyInitialized
            | ClusterError::Internal(_)) => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<cluster::state::dns_records::DnsRecordError> for ApiError {
    fn from(e: cluster::state::dns_records::DnsRecordError) -> Self {
        use cluster::state::dns_records::DnsRecordError;
        match e {
            DnsRecordError::Shadows(_) => ApiError::ReservedName(e.to_string()),
            _ => ApiError::InvalidRequest(e.to_string()),
        }
    }
}

impl From<cluster::StateError> for ApiError {
    fn from(e: cluster::StateError) -> Self {
        ApiError::Internal(format!("reading state: {e}"))
    }
}
