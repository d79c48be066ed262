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

pub async fn hash_password(password: String) -> Result<String, ApiError> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| ApiError::Internal(format!("hashing password: {e}")))
    })
    .await
    .map_err(|e| ApiError::Internal(format!("hashing task: {e}")))?
}

pub async fn verify_password(password: String, hash: String) -> Result<bool, ApiError> {
    tokio::task::spawn_blocking(move || {
        let parsed = PasswordHash::new(&hash)
            .map_err(|e| ApiError::Internal(format!("stored hash: {e}")))?;
        Ok(Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok())
    })
    .await
    .map_err(|e| ApiError::Internal(format!("verify task: {e}")))?
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
}

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
        authenticate(state, token.trim()).await
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
    if session.expires_at_ms <= crate::now_ms() {
        return Err(ApiError::Unauthorized("token expired; log in again".into()));
    }
    let user = reader
        .user(&session.username)?
        .ok_or_else(|| ApiError::Unauthorized("token's user no longer exists".into()))?;
    if user.disabled {
        return Err(ApiError::Unauthorized("user is disabled".into()));
    }
    Ok(Auth {
        user,
        token_hash: hash,
    })
}
