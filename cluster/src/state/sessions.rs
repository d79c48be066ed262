//! Apply rules of session lifetimes (version 6): creating a session with its idle window and
//! origin, replicating coarse last-use times, ending a user's sessions, and purging expired
//! sessions as entries are applied.
//!
//! Owns the two session indexes (`se/` by deadline, `su/` by user) and the rule that every way
//! a session ends removes all of its keys. Expiry is judged against the entry's `ts` only, so
//! every node purges the same sessions at the same index. Must never read the clock, and never
//! scan all sessions except once, when version 6 activates (to index older sessions).

use crate::command::{Applied, ApplyError, Outcome, Role, SessionEnd, SessionInfo, SessionRecord};
use crate::state::StateError;
use crate::state::context::Ctx;
use crate::state::events::{Event, EventKind};
use crate::state::keys;
use crate::state::overlay::Overlay;

/// At most this many expired sessions are purged per entry, so one entry after a long quiet
/// period does not become a huge batch; the rest go with the next entries (each node still
/// refuses an expired token by its deadline, purged or not).
pub const PURGE_PER_ENTRY: usize = 256;

fn deadline(rec: &SessionRecord, info: Option<&SessionInfo>) -> u64 {
    info.map_or(rec.expires_at_ms, |i| i.deadline_ms(rec.expires_at_ms))
}

/// Writes the indexes of a session.
fn index(
    kv: &mut Overlay<'_>,
    rec: &SessionRecord,
    info: Option<&SessionInfo>,
) -> Result<(), StateError> {
    kv.put(keys::user_session(&rec.username, &rec.token_hash), &())?;
    kv.put(
        keys::session_expiry(deadline(rec, info), &rec.token_hash),
        &(),
    )?;
    Ok(())
}

/// Removes a session and everything stored about it. Returns the record if it existed.
pub fn remove(kv: &mut Overlay<'_>, token_hash: &str) -> Result<Option<SessionRecord>, StateError> {
    let Some(rec) = kv.get::<SessionRecord>(&keys::session(token_hash))? else {
        return Ok(None);
    };
    let info = kv.get::<SessionInfo>(&keys::session_info(token_hash))?;
    kv.remove(keys::session(token_hash));
    kv.remove(keys::session_info(token_hash));
    kv.remove(keys::user_session(&rec.username, token_hash));
    kv.remove(keys::session_expiry(
        deadline(&rec, info.as_ref()),
        token_hash,
    ));
    Ok(Some(rec))
}

/// Indexes a session created by a version 1 `CreateSession` (no idle limit).
pub fn index_v1(kv: &mut Overlay<'_>, rec: &SessionRecord) -> Result<(), StateError> {
    index(kv, rec, None)
}

#[allow(clippy::too_many_arguments)]
pub fn create_session(
    cx: &mut Ctx<'_, '_>,
    token_hash: &str,
    username: &str,
    ttl_ms: u64,
    idle_ms: u64,
    user_agent: &str,
    source: &str,
) -> Result<Outcome, StateError> {
    let Some(user) = cx
        .kv
        .get::<crate::command::UserRecord>(&keys::user(username))?
    else {
        return Ok(Err(ApplyError::UnknownUser(username.to_string())));
    };
    if user.disabled {
        return Ok(Err(ApplyError::UserDisabled(username.to_string())));
    }
    // A retried proposal must not leave the first one's index keys behind.
    remove(cx.kv, token_hash)?;
    let rec = SessionRecord {
        token_hash: token_hash.to_string(),
        username: username.to_string(),
        created_at_ms: cx.ts,
        expires_at_ms: cx.ts.saturating_add(ttl_ms),
    };
    let info = SessionInfo {
        idle_ms,
        last_used_ms: cx.ts,
        user_agent: user_agent.to_string(),
        source: source.to_string(),
    };
    cx.kv.put(keys::session(token_hash), &rec)?;
    cx.kv.put(keys::session_info(token_hash), &info)?;
    index(cx.kv, &rec, Some(&info))?;
    cx.kv.remove(keys::login_throttle(username));
    Ok(Ok(Applied::Session(rec)))
}

pub fn touch(cx: &mut Ctx<'_, '_>, touches: &[(String, u64)]) -> Result<Outcome, StateError> {
    let mut touched = 0u32;
    for (token_hash, used_ms) in touches {
        let Some(rec) = cx.kv.get::<SessionRecord>(&keys::session(token_hash))? else {
            continue;
        };
        let Some(mut info) = cx.kv.get::<SessionInfo>(&keys::session_info(token_hash))? else {
            continue; // a version 1 session has no idle limit to move
        };
        // A proposer's clock ahead of the entry's time must not stretch the idle window.
        let used = (*used_ms).min(cx.ts);
        if used <= info.last_used_ms {
            continue;
        }
        let before = info.deadline_ms(rec.expires_at_ms);
        info.last_used_ms = used;
        let after = info.deadline_ms(rec.expires_at_ms);
        cx.kv.put(keys::session_info(token_hash), &info)?;
        if before != after {
            cx.kv.remove(keys::session_expiry(before, token_hash));
            cx.kv.put(keys::session_expiry(after, token_hash), &())?;
        }
        touched += 1;
    }
    Ok(Ok(Applied::SessionsTouched { touched }))
}

/// Removes every session of `username` except `keep`, announcing each as revoked.
pub fn revoke_all(
    cx: &mut Ctx<'_, '_>,
    username: &str,
    keep: Option<&str>,
) -> Result<u32, StateError> {
    let mut hashes: Vec<String> = Vec::new();
    let prefix = keys::user_sessions_prefix(username);
    for k in cx.kv.keys_with_prefix(&prefix)? {
        if let Some(th) = k
            .get(prefix.len()..)
            .and_then(|t| std::str::from_utf8(t).ok())
        {
            hashes.push(th.to_owned());
        }
    }
    // Before version 6 activated there is no user index: a session may only be under `s/`.
    // This scan happens only on a disable, a password change or an admin ending sessions.
    for k in cx.kv.keys_with_prefix(b"s/")? {
        if let Some(sess) = cx.kv.get::<SessionRecord>(&k)?
            && sess.username == username
            && !hashes.contains(&sess.token_hash)
        {
            hashes.push(sess.token_hash);
        }
    }
    let mut ended = 0;
    for th in hashes {
        if keep == Some(th.as_str()) {
            continue;
        }
        if remove(cx.kv, &th)?.is_some() {
            ended += 1;
            cx.events.push(Event {
                index: cx.index,
                kind: EventKind::SessionRevoked { token_hash: th },
            });
        }
    }
    Ok(ended)
}

pub fn end_user_sessions(
    cx: &mut Ctx<'_, '_>,
    username: &str,
    by: &str,
) -> Result<Outcome, StateError> {
    let actor = cx.kv.get::<crate::command::UserRecord>(&keys::user(by))?;
    if !actor.is_some_and(|a| a.role == Role::Admin && !a.disabled) {
        return Ok(Err(ApplyError::Forbidden(
            "only admins can end another user's sessions".into(),
        )));
    }
    if !cx.kv.exists(&keys::user(username))? {
        return Ok(Err(ApplyError::UnknownUser(username.to_string())));
    }
    let ended = revoke_all(cx, username, None)?;
    Ok(Ok(Applied::SessionsEnded {
        username: username.to_string(),
        ended,
    }))
}

/// Purges sessions whose deadline is at or before `ts`, oldest first, at most
/// `PURGE_PER_ENTRY`. Runs at the start of every entry once version 6 is active.
pub fn purge_expired(
    kv: &mut Overlay<'_>,
    ts: u64,
    index: u64,
    events: &mut Vec<Event>,
) -> Result<(), StateError> {
    // One key at a time from the front: an entry with nothing due reads a single key.
    // (Keys removed earlier in this entry are skipped by the overlay.)
    for _ in 0..PURGE_PER_ENTRY {
        let Some(k) = kv
            .first_keys_with_prefix(keys::SESSION_EXPIRY_PREFIX, 1)?
            .into_iter()
            .next()
        else {
            break;
        };
        let Some((deadline, token_hash)) = keys::parse_session_expiry(&k) else {
            kv.remove(k);
            continue;
        };
        if deadline > ts {
            break;
        }
        let Some(rec) = kv.get::<SessionRecord>(&keys::session(&token_hash))? else {
            kv.remove(k);
            continue;
        };
        let reason = if rec.expires_at_ms <= ts {
            SessionEnd::Absolute
        } else {
            SessionEnd::Idle
        };
        remove(kv, &token_hash)?;
        // A stale index key (should not exist) must not stay at the front forever.
        kv.remove(k);
        events.push(Event {
            index,
            kind: EventKind::SessionExpired {
                token_hash,
                username: rec.username,
                reason,
            },
        });
    }
    Ok(())
}

/// Indexes every session stored before version 6 activated (once, in the entry that activates
/// it): they get no idle limit and are purged at their absolute expiry.
pub fn index_legacy(kv: &mut Overlay<'_>) -> Result<(), StateError> {
    for k in kv.keys_with_prefix(b"s/")? {
        if let Some(rec) = kv.get::<SessionRecord>(&k)? {
            let info = kv.get::<SessionInfo>(&keys::session_info(&rec.token_hash))?;
            index(kv, &rec, info.as_ref())?;
        }
    }
    Ok(())
}

/// Sets or clears a user's must-change-password flag.
pub fn set_must_change(kv: &mut Overlay<'_>, username: &str, on: bool) -> Result<(), StateError> {
    let key = keys::must_change_password(username);
    if on {
        kv.put(key, &())
    } else {
        kv.remove(key);
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::command::Command;
    use crate::state::test_apply::{apply_entry, run, tree};
    use crate::storage::sm_store::StateReader;

    fn reader(t: &sled::Tree) -> StateReader {
        StateReader::for_tree(t.clone())
    }

    /// Applies one entry of `version` and returns its events.
    fn run_v(t: &sled::Tree, version: u16, ts_ms: u64, commands: Vec<Command>) -> Vec<Event> {
        apply_entry(t, version, ts_ms, 1, commands).1
    }

    fn users(t: &sled::Tree) {
        run(
            t,
            1,
            vec![
                Command::CreateUser {
                    username: "alice".into(),
                    password_hash: "h".into(),
                    role: Role::Admin,
                },
                Command::CreateUserV2 {
                    username: "bob".into(),
                    password_hash: "h".into(),
                    role: Role::Member,
                    must_change_password: true,
                },
            ],
        );
    }

    fn session(th: &str, user: &str, ttl_ms: u64, idle_ms: u64) -> Command {
        Command::CreateSessionV2 {
            token_hash: th.into(),
            username: user.into(),
            ttl_ms,
            idle_ms,
            user_agent: "test-agent".into(),
            source: "127.0.0.1".into(),
        }
    }

    fn expired(events: &[Event]) -> Vec<(String, SessionEnd)> {
        events
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::SessionExpired {
                    token_hash, reason, ..
                } => Some((token_hash.clone(), *reason)),
                _ => None,
            })
            .collect()
    }

    fn keys_of(t: &sled::Tree, th: &str) -> usize {
        t.iter()
            .keys()
            .filter(|k| {
                let k = k.as_ref().unwrap();
                k.windows(th.len()).any(|w| w == th.as_bytes())
            })
            .count()
    }

    /// Idle deadline: a touch moves it, no touch lets the next entry past it purge the
    /// session; the absolute deadline ends it whatever the touches (issue 11, item 3).
    #[test]
    fn idle_and_absolute_expiry_purge_at_apply() {
        let t = tree();
        users(&t);
        run(&t, 1_000, vec![session("idle", "bob", 100_000, 10_000)]);
        run(&t, 1_000, vec![session("abs", "bob", 20_000, 10_000)]);
        // Touched at 9_000: idle deadline moves to 19_000.
        let out = run(
            &t,
            9_500,
            vec![Command::TouchSessions {
                touches: vec![
                    ("idle".into(), 9_000),
                    ("abs".into(), 9_000),
                    ("ghost".into(), 1),
                ],
            }],
        );
        assert_eq!(out[0], Ok(Applied::SessionsTouched { touched: 2 }));
        // A touch from the past does not move it back; one from the future is clamped.
        run(
            &t,
            12_000,
            vec![Command::TouchSessions {
                touches: vec![("idle".into(), 5_000), ("abs".into(), 99_000)],
            }],
        );
        let info = reader(&t).session_info("idle").unwrap().unwrap();
        assert_eq!(info.last_used_ms, 9_000);
        assert_eq!(
            reader(&t)
                .session_info("abs")
                .unwrap()
                .unwrap()
                .last_used_ms,
            12_000
        );
        // At 18_999 nothing is due.
        assert!(expired(&run_v(&t, 6, 18_999, vec![])).is_empty());
        // At 19_000 the untouched-since-9_000 session is idle.
        assert_eq!(
            expired(&run_v(&t, 6, 19_000, vec![])),
            vec![("idle".to_string(), SessionEnd::Idle)]
        );
        assert!(reader(&t).session("idle").unwrap().is_none());
        assert_eq!(keys_of(&t, "idle"), 0, "every key of the session is gone");
        // Keep "abs" used: it still ends at its absolute deadline (21_000).
        run(
            &t,
            20_000,
            vec![Command::TouchSessions {
                touches: vec![("abs".into(), 20_000)],
            }],
        );
        assert_eq!(
            expired(&run_v(&t, 6, 21_000, vec![])),
            vec![("abs".to_string(), SessionEnd::Absolute)]
        );
        assert_eq!(keys_of(&t, "abs"), 0);
    }

    /// A backlog of expired sessions goes in bounded steps, oldest first, and live ones stay.
    #[test]
    fn purging_is_bounded_per_entry() {
        let t = tree();
        users(&t);
        let n = PURGE_PER_ENTRY + 10;
        let many: Vec<Command> = (0..n)
            .map(|i| session(&format!("s{i:04}"), "bob", 1_000 + i as u64, 0))
            .collect();
        run(&t, 10, many);
        run(&t, 10, vec![session("live", "bob", 1_000_000, 0)]);
        let first = expired(&run_v(&t, 6, 100_000, vec![]));
        assert_eq!(first.len(), PURGE_PER_ENTRY);
        assert_eq!(first[0].0, "s0000", "oldest first");
        let second = expired(&run_v(&t, 6, 100_001, vec![]));
        assert_eq!(second.len(), 10);
        assert!(expired(&run_v(&t, 6, 100_002, vec![])).is_empty());
        let left = reader(&t).user_sessions("bob").unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].0.token_hash, "live");
    }

    /// Sessions stored before version 6 are indexed when it activates, keep no idle limit and
    /// go at their absolute expiry.
    #[test]
    fn legacy_sessions_are_indexed_on_activation_and_purged() {
        let t = tree();
        run_v(
            &t,
            5,
            1,
            vec![
                Command::CreateUser {
                    username: "carol".into(),
                    password_hash: "h".into(),
                    role: Role::Member,
                },
                Command::CreateSession {
                    token_hash: "old".into(),
                    username: "carol".into(),
                    ttl_ms: 50_000,
                },
            ],
        );
        // An older binary wrote no index: simulate by dropping what this one wrote.
        for k in t
            .scan_prefix(b"se/")
            .keys()
            .chain(t.scan_prefix(b"su/").keys())
        {
            t.remove(k.unwrap()).unwrap();
        }
        assert!(expired(&run_v(&t, 6, 40_000, vec![])).is_empty());
        assert_eq!(reader(&t).user_sessions("carol").unwrap().len(), 1);
        assert_eq!(
            expired(&run_v(&t, 6, 50_001, vec![])),
            vec![("old".to_string(), SessionEnd::Absolute)]
        );
        assert!(reader(&t).user_sessions("carol").unwrap().is_empty());
    }

    /// Only an admin ends all of someone's sessions; every key goes and each is announced.
    #[test]
    fn admin_ends_all_sessions_of_a_user() {
        let t = tree();
        users(&t);
        run(
            &t,
            2,
            vec![
                session("b1", "bob", 100_000, 0),
                session("b2", "bob", 100_000, 0),
                session("a1", "alice", 100_000, 0),
            ],
        );
        let out = run(
            &t,
            3,
            vec![Command::EndUserSessions {
                username: "alice".into(),
                by: "bob".into(),
            }],
        );
        assert!(matches!(out[0], Err(ApplyError::Forbidden(_))));
        let events = run_v(
            &t,
            6,
            4,
            vec![Command::EndUserSessions {
                username: "bob".into(),
                by: "alice".into(),
            }],
        );
        let revoked = events
            .iter()
            .filter(|e| matches!(e.kind, EventKind::SessionRevoked { .. }))
            .count();
        assert_eq!(revoked, 2);
        assert!(reader(&t).user_sessions("bob").unwrap().is_empty());
        assert_eq!(keys_of(&t, "b1") + keys_of(&t, "b2"), 0);
        assert_eq!(reader(&t).user_sessions("alice").unwrap().len(), 1);
    }

    /// The must-change flag: set by an admin's create or reset, cleared by the user's change
    /// (and by a version 1 `SetPassword`).
    #[test]
    fn must_change_flag_follows_password_commands() {
        let t = tree();
        users(&t);
        let r = reader(&t);
        assert!(r.must_change_password("bob").unwrap());
        assert!(!r.must_change_password("alice").unwrap());
        let set = |must: bool| Command::SetPasswordV2 {
            username: "bob".into(),
            password_hash: "h2".into(),
            keep_session: None,
            must_change_password: must,
        };
        run(&t, 2, vec![set(false)]);
        assert!(!r.must_change_password("bob").unwrap());
        run(&t, 3, vec![set(true)]);
        assert!(r.must_change_password("bob").unwrap());
        run(
            &t,
            4,
            vec![Command::SetPassword {
                username: "bob".into(),
                password_hash: "h3".into(),
                keep_session: None,
            }],
        );
        assert!(!r.must_change_password("bob").unwrap());
    }
}
