//! Passwords, bearer tokens and the `Auth` extractor.
//!
//! Owns: argon2id hashing (always on a blocking thread, never inside Raft apply), token
//! generation (`cv1.<64 hex random>.<log index>`; only the SHA-256 of the random part is
//! replicated), and authenticating a request against the replicated sessions. The index suffix
//! lets a node that has not yet applied the session wait for it instead of refusing a token that
//! another node just issued. Must never log or store a token or a password.

use std::time::Duration;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use cluster::{Role, UserRecord};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::state::AppState;

/// How far ahead of this node's applied index a token's hint may point before it is refused
/// outright (bounds the wait a forged token can cause).
const MAX_INDEX_AHEAD: u64 = 100_000;
const SESSION_WAIT: Duration = Duration::from_secs(5);

/// At most this long a password check waits for a hashing thread; one still waiting then is
/// answered 503 (retry elsewhere or later) without being hashed. Long enough to ride out a
/// burst of real logins; it is also the longest a login waits during a flood.
const HASH_QUEUE_WAIT: Duration = Duration::from_secs(10);
/// Password checks that may wait for a hashing thread; more are refused at once with 503.
const HASH_QUEUE: usize = 1024;

type HashJob = Box<dyn FnOnce() + Send>;

/// Which queue a password check joins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// A login from a source that logged in to this account before (the login throttle knows
    /// it): served before everything else, so a flood cannot keep a user's usual device out.
    KnownSource,
    /// Everything else, first come first served.
    Normal,
}

/// The two queues the hashing threads take jobs from: `first` before `rest`.
#[derive(Default)]
struct Queues {
    first: std::collections::VecDeque<HashJob>,
    rest: std::collections::VecDeque<HashJob>,
}

/// Bounds argon2 work on this node: a fixed set of threads, one per core but one, does all
/// hashing.
/// Each hash uses about 19 MiB (argon2id's default memory cost). Unbounded, a flood of wrong
/// passwords from one LAN host ran hundreds at once and took gigabytes; a semaphore over tokio's
/// blocking pool still spread the work over many threads and left about 800 MB behind, fixed
/// threads about 330 MB, and fixed threads with glibc's mmap threshold fixed (node's
/// `malloc.rs`) about 5 MB (numbers in docs/architecture.md, "Login throttling"). The threads
/// live as long as the process and only ever wait on the queues, so there is nothing to shut
/// down.
struct HashPool {
    /// A std mutex and condvar: the hashing threads are plain threads, and the lock is held
    /// only to push or pop one job, never while hashing.
    queues: std::sync::Mutex<Queues>,
    ready: std::sync::Condvar,
    /// Free places in the queues (`HASH_QUEUE` in all): a check that finds none is refused.
    places: tokio::sync::Semaphore,
    /// Hashing threads that started; with none, every check fails at once instead of waiting.
    threads: usize,
    in_flight: std::sync::atomic::AtomicUsize,
    /// Highest `in_flight` seen; read by tests (and later by metrics).
    peak: std::sync::atomic::AtomicUsize,
}

fn hash_pool() -> &'static HashPool {
    static POOL: std::sync::OnceLock<HashPool> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        let threads = hash_thread_count();
        let mut started = 0;
        for i in 0..threads {
            let spawned = std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(hashing_thread);
            match spawned {
                Ok(_) => started += 1,
                Err(e) => tracing::error!(error = %e, "cannot start a password hashing thread"),
            }
        }
        HashPool {
            queues: std::sync::Mutex::new(Queues::default()),
            ready: std::sync::Condvar::new(),
            places: tokio::sync::Semaphore::new(HASH_QUEUE),
            threads: started,
            in_flight: std::sync::atomic::AtomicUsize::new(0),
            peak: std::sync::atomic::AtomicUsize::new(0),
        }
    })
}

/// One hashing thread: takes the next job (known sources first) and runs it (a job whose
/// request stopped waiting skips itself).
fn hashing_thread() {
    let pool = hash_pool();
    loop {
        let job = {
            let mut q = pool
                .queues
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            loop {
                if let Some(j) = q.first.pop_front().or_else(|| q.rest.pop_front()) {
                    break j;
                }
                q = pool
                    .ready
                    .wait(q)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            }
        };
        job();
    }
}

/// One hashing thread per core the process may use, but one (at least one). A flood of wrong
/// passwords keeps every hashing thread busy for as long as it lasts; with a thread on every
/// core, Raft's heartbeats and appends queued behind argon2 on the OS scheduler and real
/// logins failed with "no quorum acknowledged the write in time" (the `login_flood` test on a
/// loaded 2-core machine). The core left over keeps the node's writes moving during a flood.
pub fn hash_thread_count() -> usize {
    std::thread::available_parallelism()
        .map(std::num::NonZeroUsize::get)
        .unwrap_or(1)
        .saturating_sub(1)
        .max(1)
}

/// The most password hashes that ran at once on this node since it started.
pub fn hash_peak_in_flight() -> usize {
    hash_pool().peak.load(std::sync::atomic::Ordering::Relaxed)
}

/// Runs one argon2 operation on a hashing thread. The queue place travels with the job, not
/// with the caller: a client that disconnects drops its future, but the job it queued still
/// counts until a thread has taken it (and then skips the work if nobody waits any more).
async fn on_hash_thread<T: Send + 'static>(
    what: &'static str,
    priority: Priority,
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    use std::sync::atomic::Ordering;
    let pool = hash_pool();
    if pool.threads == 0 {
        return Err(ApiError::Internal(format!("{what}: no hashing thread")));
    }
    let busy = || ApiError::Unavailable("too many password checks in progress".into());
    let place = pool.places.try_acquire().map_err(|_| busy())?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job: HashJob = Box::new(move || {
        let _place = place;
        if tx.is_closed() {
            // The request went away (client gone, or its 10 s wait is over): the hash would
            // help nobody.
            return;
        }
        let now = pool.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        pool.peak.fetch_max(now, Ordering::Relaxed);
        let result = work();
        pool.in_flight.fetch_sub(1, Ordering::Relaxed);
        let _ = tx.send(result);
    });
    {
        let mut q = pool
            .queues
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let queue = match priority {
            Priority::KnownSource => &mut q.first,
            Priority::Normal => &mut q.rest,
        };
        queue.push_back(job);
    }
    pool.ready.notify_one();
    // The caller's own deadline, not the hashing thread's: a thread only sees a job's age when
    // it pops it, which under a flood on a loaded machine can be a whole hash later than the
    // promised wait. Dropping `rx` here closes the channel, so the thread skips the job.
    match tokio::time::timeout(HASH_QUEUE_WAIT, rx).await {
        Ok(answer) => {
            answer.map_err(|_| ApiError::Internal(format!("{what}: the hashing thread failed")))?
        }
        Err(_) => Err(busy()),
    }
}

pub async fn hash_password(password: String) -> Result<String, ApiError> {
    on_hash_thread("hashing", Priority::Normal, move || {
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| ApiError::Internal(format!("hashing password: {e}")))
    })
    .await
}

pub async fn verify_password(password: String, hash: String) -> Result<bool, ApiError> {
    verify_password_with(password, hash, Priority::Normal).await
}

/// [`verify_password`] in the given queue.
pub async fn verify_password_with(
    password: String,
    hash: String,
    priority: Priority,
) -> Result<bool, ApiError> {
    on_hash_thread("verify", priority, move || {
        let parsed = PasswordHash::new(&hash)
            .map_err(|e| ApiError::Internal(format!("stored hash: {e}")))?;
        Ok(Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok())
    })
    .await
}

static DUMMY_HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// An argon2id hash of a random password nobody knows: verifying unknown users against it
/// spends the same time as for real ones, so timing does not reveal which usernames exist.
pub async fn dummy_hash() -> Result<String, ApiError> {
    if let Some(h) = DUMMY_HASH.get() {
        return Ok(h.clone());
    }
    let h = hash_password(new_secret()).await?;
    Ok(DUMMY_HASH.get_or_init(|| h).clone())
}

/// A fresh random secret (the part of the token that is hashed).
pub fn new_secret() -> String {
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

pub fn token_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

pub fn make_token(secret: &str, index: u64) -> String {
    format!("cv1.{secret}.{index}")
}

/// Splits `cv1.<secret>.<index>`.
pub fn parse_token(token: &str) -> Option<(&str, u64)> {
    let rest = token.strip_prefix("cv1.")?;
    let (secret, index) = rest.split_once('.')?;
    if secret.len() != 64 || !secret.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some((secret, index.parse().ok()?))
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Auth {
    pub user: UserRecord,
    pub token_hash: String,
    /// The password was set by an admin and not yet changed: only the routes in
    /// [`ALLOWED_BEFORE_PASSWORD_CHANGE`] may be used.
    pub must_change_password: bool,
}

/// What an account with an admin-set password may still do: change it, or log out.
pub const ALLOWED_BEFORE_PASSWORD_CHANGE: &[&str] = &["/api/v1/me/password", "/api/v1/logout"];

impl Auth {
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.user.role != Role::Admin {
            return Err(ApiError::Forbidden("only admins may do this".into()));
        }
        Ok(())
    }
}

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| ApiError::Unauthorized("missing Authorization: Bearer token".into()))?;
        let value = header
            .to_str()
            .map_err(|_| ApiError::Unauthorized("malformed Authorization header".into()))?;
        let token = value.strip_prefix("Bearer ").ok_or_else(|| {
            ApiError::Unauthorized("Authorization must be 'Bearer <token>'".into())
        })?;
        let auth = authenticate(state, token.trim()).await?;
        if let Some(meta) = parts.extensions.get::<crate::security_log::RequestMeta>() {
            meta.set_user(&auth.user.username);
            if auth.user.role == Role::Admin {
                meta.set_admin();
            }
        }
        // The full path: inside the `/api/v1` nest, `parts.uri` has lost its prefix.
        let path = parts
            .extensions
            .get::<axum::extract::OriginalUri>()
            .map_or_else(|| parts.uri.path(), |u| u.0.path());
        if auth.must_change_password && !ALLOWED_BEFORE_PASSWORD_CHANGE.contains(&path) {
            return Err(ApiError::PasswordChangeRequired);
        }
        Ok(auth)
    }
}

/// Checks a bearer token (from the Authorization header or a WebSocket `auth` frame).
pub async fn authenticate(state: &AppState, token: &str) -> Result<Auth, ApiError> {
    let (secret, index) =
        parse_token(token).ok_or_else(|| ApiError::Unauthorized("malformed token".into()))?;
    let hash = token_hash(secret);
    let reader = state.node.reader();
    let mut session = reader.session(&hash)?;
    if session.is_none() {
        let applied = state
            .node
            .metrics()
            .last_applied
            .map(|l| l.index)
            .unwrap_or(0);
        if index > applied && index - applied <= MAX_INDEX_AHEAD {
            // Issued by another node moments ago: wait until we have applied it.
            if state.node.wait_applied(index, SESSION_WAIT).await.is_ok() {
                session = reader.session(&hash)?;
            }
        }
    }
    let session =
        session.ok_or_else(|| ApiError::Unauthorized("unknown or revoked token".into()))?;
    let now = crate::now_ms();
    let info = reader.session_info(&hash)?;
    let (deadline, end) = crate::session_use::deadline(
        &session,
        info.as_ref(),
        state.sessions.local_last_use(&hash),
    );
    if deadline <= now {
        return Err(ApiError::SessionExpired(end));
    }
    let user = reader
        .user(&session.username)?
        .ok_or_else(|| ApiError::Unauthorized("token's user no longer exists".into()))?;
    if user.disabled {
        return Err(ApiError::Unauthorized("user is disabled".into()));
    }
    let must_change_password = reader.must_change_password(&user.username)?;
    // Every authenticated request is a use of the session (idle timeout).
    state.sessions.record(&hash, now);
    Ok(Auth {
        user,
        token_hash: hash,
        must_change_password,
    })
}

/// When the session `token_hash` ends by what this node knows now (`None`: it is gone).
pub fn session_deadline(
    state: &AppState,
    token_hash: &str,
) -> Result<Option<(u64, cluster::SessionEnd)>, ApiError> {
    let reader = state.node.reader();
    let Some(session) = reader.session(token_hash)? else {
        return Ok(None);
    };
    let info = reader.session_info(token_hash)?;
    Ok(Some(crate::session_use::deadline(
        &session,
        info.as_ref(),
        state.sessions.local_last_use(token_hash),
    )))
}

/// Step-up for operations that move credentials or keys (issue 11, item 1): the request must
/// come over HTTPS (or from loopback on a node whose plain API is loopback-only, see
/// `ApiConfig::step_up_plain_loopback`) and carry the caller's current password, checked on
/// the bounded hashing pool. Failures are logged as `stepup.failure`.
pub async fn step_up(
    state: &AppState,
    meta: &crate::security_log::RequestMeta,
    auth: &Auth,
    current_password: Option<String>,
    operation: &'static str,
) -> Result<(), ApiError> {
    let https = meta.https;
    let loopback = meta.source.is_some_and(|a| a.is_loopback());
    let fail = |reason: &'static str| {
        crate::security_event!(meta, "stepup.failure", operation, reason);
    };
    let plain_allowed =
        state.config.step_up_plain_any || (state.config.step_up_plain_loopback && loopback);
    if !(https || plain_allowed) {
        fail("plain_http");
        return Err(ApiError::HttpsRequired(format!(
            "{operation} needs HTTPS: use the node's HTTPS address"
        )));
    }
    let Some(password) = current_password.filter(|p| !p.is_empty()) else {
        fail("missing_password");
        return Err(ApiError::StepUpFailed(format!(
            "{operation} needs your current password in `current_password`"
        )));
    };
    // Through the login throttle, like `/me/password`: a stolen admin token must not become an
    // unthrottled password oracle. A throttled attempt is a 429 with `Retry-After`.
    let attempt = crate::login_check::begin(
        state,
        meta,
        &auth.user.username,
        crate::login_check::During::StepUp,
    )?;
    match crate::login_check::verify(
        state,
        meta,
        attempt,
        Some(auth.user.clone()),
        password,
        crate::login_check::During::StepUp,
    )
    .await
    {
        Ok(_) => {}
        Err(ApiError::InvalidCredentials) => {
            fail("wrong_password");
            return Err(ApiError::StepUpFailed(
                "current_password is not your password".into(),
            ));
        }
        Err(e) => return Err(e),
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A check from a known source queued behind a burst of ordinary ones is served before
    /// the ordinary ones that were still waiting.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn known_sources_go_first() {
        let hash = hash_password("correct horse".into()).await.unwrap();
        let order = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let burst = 6 * hash_thread_count();
        let mut checks = Vec::new();
        for i in 0..burst {
            let (hash, order) = (hash.clone(), order.clone());
            checks.push(tokio::spawn(async move {
                verify_password_with("wrong".into(), hash, Priority::Normal)
                    .await
                    .unwrap();
                order.lock().unwrap().push(i);
            }));
        }
        // Every check of the burst is queued (holds a place) or done before the known one.
        let pool = hash_pool();
        while HASH_QUEUE - pool.places.available_permits() + order.lock().unwrap().len() < burst {
            tokio::task::yield_now().await;
        }
        let first = verify_password_with("correct horse".into(), hash, Priority::KnownSource)
            .await
            .unwrap();
        assert!(first);
        let done_before = order.lock().unwrap().len();
        for c in checks {
            c.await.unwrap();
        }
        assert!(
            done_before < burst - hash_thread_count(),
            "the known source waited for {done_before} of {burst} ordinary checks"
        );
    }

    /// A burst of password checks never runs more argon2 operations at once than there are
    /// hashing threads, and every one of them still completes correctly.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn password_work_is_bounded_by_the_slots() {
        let hash = hash_password("correct horse".into()).await.unwrap();
        let burst = 4 * hash_thread_count() + 2;
        let checks: Vec<_> = (0..burst)
            .map(|i| {
                let hash = hash.clone();
                let guess = if i % 2 == 0 { "correct horse" } else { "wrong" };
                tokio::spawn(verify_password(guess.into(), hash))
            })
            .collect();
        for (i, check) in checks.into_iter().enumerate() {
            assert_eq!(check.await.unwrap().unwrap(), i % 2 == 0, "check {i}");
        }
        let peak = hash_peak_in_flight();
        assert!(peak >= 1, "no hashing was counted");
        assert!(
            peak <= hash_thread_count(),
            "{peak} hashes ran at once with {} hashing threads",
            hash_thread_count()
        );
    }
}
