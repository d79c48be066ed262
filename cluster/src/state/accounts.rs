//! Apply rules of accounts: users and sessions, admin changes, password changes with session revocation, and the
//! replicated login throttle.
//!
//! Owns the rule that a disabled user or a replaced password leaves no live session behind,
//! and the throttle arithmetic (the state machine is its only arbiter, so attempts spread over
//! several nodes count once each). Must never read the clock: the entry's timestamp is the time.

use crate::command::{
    Applied, ApplyError, LoginThrottle, Outcome, Role, SessionRecord, UserExtra, UserRecord,
};
use crate::state::StateError;
use crate::state::context::Ctx;
use crate::state::events::{Event, EventKind};
use crate::state::{keys, sessions};

pub fn create_user(
    cx: &mut Ctx<'_, '_>,
    username: &str,
    password_hash: &str,
    role: Role,
    must_change_password: bool,
) -> Result<Outcome, StateError> {
    let key = keys::user(username);
    if cx.kv.get_raw(&key)?.is_some() {
        return Ok(Err(ApplyError::UserExists(username.to_string())));
    }
    let user = UserRecord {
        username: username.to_string(),
        password_hash: password_hash.to_string(),
        role,
        disabled: false,
        created_at_ms: cx.ts,
    };
    cx.kv.put(key, &user)?;
    sessions::set_must_change(cx.kv, username, must_change_password)?;
    cx.events.push(Event {
        index: cx.index,
        kind: EventKind::UserCreated {
            username: username.to_string(),
        },
    });
    Ok(Ok(Applied::User(user)))
}

pub fn create_session(
    cx: &mut Ctx<'_, '_>,
    token_hash: &str,
    username: &str,
    ttl_ms: u64,
) -> Result<Outcome, StateError> {
    let Some(user) = cx.kv.get::<UserRecord>(&keys::user(username))? else {
        return Ok(Err(ApplyError::UnknownUser(username.to_string())));
    };
    if user.disabled {
        return Ok(Err(ApplyError::UserDisabled(username.to_string())));
    }
    let session = SessionRecord {
        token_hash: token_hash.to_string(),
        username: username.to_string(),
        created_at_ms: cx.ts,
        expires_at_ms: cx.ts.saturating_add(ttl_ms),
    };
    cx.kv.put(keys::session(token_hash), &session)?;
    sessions::index_v1(cx.kv, &session)?;
    // A session is only created after a correct password: the throttle starts over.
    cx.kv.remove(keys::login_throttle(username));
    Ok(Ok(Applied::Session(session)))
}

pub fn revoke_session(cx: &mut Ctx<'_, '_>, token_hash: &str) -> Result<Outcome, StateError> {
    let existed = sessions::remove(cx.kv, token_hash)?.is_some();
    if existed {
        cx.events.push(Event {
            index: cx.index,
            kind: EventKind::SessionRevoked {
                token_hash: token_hash.to_string(),
            },
        });
    }
    Ok(Ok(Applied::SessionRevoked { existed }))
}

pub fn update_user(
    cx: &mut Ctx<'_, '_>,
    username: &str,
    by: &str,
    disabled: Option<bool>,
    role: Option<Role>,
    display_name: Option<&str>,
) -> Result<Outcome, StateError> {
    let Some(actor) = cx.kv.get::<UserRecord>(&keys::user(by))? else {
        return Ok(Err(ApplyError::UnknownUser(by.to_string())));
    };
    let Some(mut target) = cx.kv.get::<UserRecord>(&keys::user(username))? else {
        return Ok(Err(ApplyError::UnknownUser(username.to_string())));
    };
    let actor_is_admin = actor.role == Role::Admin && !actor.disabled;
    let self_service = by == username && disabled.is_none() && role.is_none();
    if !actor_is_admin && !self_service {
        return Ok(Err(ApplyError::Forbidden(
            "only admins can change other accounts, roles or the disabled flag".into(),
        )));
    }
    if by == username && (disabled == Some(true) || role == Some(Role::Member)) {
        // An admin locking themself out could leave the workspace without any admin.
        return Ok(Err(ApplyError::Invalid(
            "admins cannot disable or demote themselves; ask another admin".into(),
        )));
    }
    if let Some(name) = display_name {
        cx.kv.put(
            keys::user_extra(username),
            &UserExtra {
                display_name: name.to_string(),
            },
        )?;
    }
    let mut record_changed = false;
    if let Some(r) = role
        && r != target.role
    {
        target.role = r;
        record_changed = true;
    }
    if let Some(d) = disabled
        && d != target.disabled
    {
        target.disabled = d;
        record_changed = true;
        if d {
            sessions::revoke_all(cx, username, None)?;
        }
    }
    if record_changed {
        cx.kv.put(keys::user(username), &target)?;
    }
    cx.events.push(Event {
        index: cx.index,
        kind: EventKind::UserUpdated {
            username: username.to_string(),
            disabled: target.disabled,
        },
    });
    Ok(Ok(Applied::UserChanged {
        username: username.to_string(),
    }))
}

pub fn set_password(
    cx: &mut Ctx<'_, '_>,
    username: &str,
    password_hash: &str,
    keep_session: Option<&str>,
    must_change_password: bool,
) -> Result<Outcome, StateError> {
    let Some(mut user) = cx.kv.get::<UserRecord>(&keys::user(username))? else {
        return Ok(Err(ApplyError::UnknownUser(username.to_string())));
    };
    user.password_hash = password_hash.to_string();
    cx.kv.put(keys::user(username), &user)?;
    sessions::revoke_all(cx, username, keep_session)?;
    sessions::set_must_change(cx.kv, username, must_change_password)?;
    // A new password is a fresh start for the throttle too.
    cx.kv.remove(keys::login_throttle(username));
    Ok(Ok(Applied::UserChanged {
        username: username.to_string(),
    }))
}

pub fn login_attempt(cx: &mut Ctx<'_, '_>, username: &str) -> Result<Outcome, StateError> {
    if !cx.kv.exists(&keys::user(username))? {
        // Nothing is stored for names that do not exist: an attacker must not be able to
        // fill the state with throttle records for made-up users.
        return Ok(Ok(Applied::LoginAttempt {
            allowed: true,
            retry_after_ms: 0,
        }));
    }
    let key = keys::login_throttle(username);
    let mut t = cx.kv.get::<LoginThrottle>(&key)?.unwrap_or_default();
    let next = t.next_allowed_ms();
    if cx.ts < next {
        // Refused attempts change nothing, so hammering does not extend the wait.
        return Ok(Ok(Applied::LoginAttempt {
            allowed: false,
            retry_after_ms: next - cx.ts,
        }));
    }
    t.attempts = t.attempts.saturating_add(1);
    t.last_ms = cx.ts;
    cx.kv.put(key, &t)?;
    Ok(Ok(Applied::LoginAttempt {
        allowed: true,
        retry_after_ms: 0,
    }))
}
