//! The password check of a login and of `POST /me/password`, behind the login throttle.
//!
//! Owns the order that keeps answers alike for every name: the throttle first (a throttled
//! attempt costs no hashing and no state read), then one argon2 verification, against a dummy
//! hash when the user does not exist. Owns the `login.failure` and `login.throttled` security
//! events. Must never log the password, nor a username that is not a user (it may be a password
//! typed into the wrong field).

use cluster::UserRecord;

use crate::auth;
use crate::error::ApiError;
use crate::login_throttle::Attempt;
use crate::security_log::RequestMeta;
use crate::state::AppState;

/// Where a password is checked (the `during` field of the events).
#[derive(Debug, Clone, Copy)]
pub enum During {
    Login,
    PasswordChange,
    /// The current password that a sensitive operation asks for (`auth::step_up`).
    StepUp,
}

impl During {
    fn as_str(self) -> &'static str {
        match self {
            During::Login => "login",
            During::PasswordChange => "password_change",
            During::StepUp => "step_up",
        }
    }
}

/// Asks the throttle whether `username` may be tried from this request's source now; a
/// refusal is 429 `too_many_attempts` with `Retry-After`.
pub fn begin(
    s: &AppState,
    meta: &RequestMeta,
    username: &str,
    during: During,
) -> Result<Attempt, ApiError> {
    match s
        .login_throttle
        .begin(username, meta.source, crate::now_ms())
    {
        Ok(attempt) => Ok(attempt),
        Err(t) if !t.first => {
            // The same delay refused before and was logged then: a flood of refused attempts
            // writes one line per delay, not one per attempt.
            tracing::debug!(
                reason = t.rule.as_str(),
                retry_after_ms = t.retry_after_ms,
                "login throttled again"
            );
            Err(ApiError::TooManyAttempts(t.retry_after_ms))
        }
        Err(t) => {
            // A local read only decides whether the name may be logged; the answer is the
            // same either way.
            let exists = matches!(s.node.reader().user(username), Ok(Some(_)));
            if exists {
                crate::security_event!(
                    meta,
                    "login.throttled",
                    reason = t.rule.as_str(),
                    retry_after_ms = t.retry_after_ms,
                    during = during.as_str(),
                    username = %username,
                    "security event"
                );
            } else {
                crate::security_event!(
                    meta,
                    "login.throttled",
                    reason = t.rule.as_str(),
                    retry_after_ms = t.retry_after_ms,
                    during = during.as_str(),
                    "security event"
                );
            }
            Err(ApiError::TooManyAttempts(t.retry_after_ms))
        }
    }
}

/// Verifies `password` for `user` (`None`: no such user, checked against a dummy hash so the
/// time spent is the same). A wrong password, an unknown user and a disabled user all answer
/// 401 `invalid_credentials`; only a success hands the attempt back to the throttle.
pub async fn verify(
    s: &AppState,
    meta: &RequestMeta,
    attempt: Attempt,
    user: Option<UserRecord>,
    password: String,
    during: During,
) -> Result<UserRecord, ApiError> {
    let hash = match &user {
        Some(u) => u.password_hash.clone(),
        None => auth::dummy_hash().await?,
    };
    // A source this account logged in from before goes first at the hashing threads: a flood
    // of strangers' attempts cannot keep a user's usual device waiting.
    let priority = if attempt.known_source() {
        auth::Priority::KnownSource
    } else {
        auth::Priority::Normal
    };
    let ok = auth::verify_password_with(password, hash, priority).await?;
    match user {
        Some(u) if ok && !u.disabled => {
            s.login_throttle.succeeded(attempt, crate::now_ms());
            Ok(u)
        }
        Some(u) => {
            let reason = if ok { "disabled" } else { "wrong_password" };
            crate::security_event!(
                meta,
                "login.failure",
                reason = reason,
                during = during.as_str(),
                username = %u.username,
                "security event"
            );
            Err(ApiError::InvalidCredentials)
        }
        None => {
            crate::security_event!(
                meta,
                "login.failure",
                reason = "unknown_user",
                during = during.as_str(),
                "security event"
            );
            Err(ApiError::InvalidCredentials)
        }
    }
}
