//! Token-based join: `POST /api/v1/cluster/join-tokens` (admin) creates a single-use token;
//! `POST /api/v1/join` consumes it for a new node and hands out the cluster's root (and, over
//! HTTPS only, the node's certificate and the KEK); `POST /api/v1/join/complete`, called by the
//! joiner once it is up and serving, adds it as learner and then voter.
//!
//! Why two calls: a node can only be added while it runs (the leader must reach it), and it
//! can only run once it has its files; the token itself authenticates the second call, which
//! adds exactly the node id and addresses recorded when the token was used.
//!
//! Owns the HTTP shapes and codes of joining. Must never log a token secret or the KEK, never
//! hand out the KEK or a node certificate over plain HTTP, never consume a token for a request
//! it is about to refuse for another reason (bad addresses, wrong cluster, a member id), and
//! never write to the Raft log for a token that the local state already refuses (the join
//! routes are unauthenticated).

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cluster::command::JoinTokenRefusal;
use cluster::{Applied, Command, NodeInfo};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::auth::Auth;
use crate::ca_api::{CaApiError, SharedCa};
use crate::error::ApiError;
use crate::extract::JsonBody;
use crate::join_api::{SharedJoin, generate_token, secret_hash};
use crate::state::AppState;
use crate::validate;
use api::fingerprint::{colons as fingerprint_colons, to_hex as fingerprint_hex};
use api::join::{
    CreateJoinToken, JoinComplete, JoinGrant, JoinRequest, JoinToken, JoinTokenCreated,
};

pub const DEFAULT_TTL_SECS: u64 = 3600;
pub const MAX_TTL_SECS: u64 = 7 * 86_400;
/// How long after the token was used the joiner may ask to be added. Bounds what a leaked,
/// used token can still do (re-adding a node that an admin removed meanwhile).
pub const COMPLETE_WINDOW_MS: u64 = 3_600_000;

/// HTTP status and code of each refusal (docs/api.md).
pub fn refusal_status(r: &JoinTokenRefusal) -> (StatusCode, &'static str) {
    match r {
        JoinTokenRefusal::Unknown { .. } => (StatusCode::FORBIDDEN, "join_token_unknown"),
        JoinTokenRefusal::WrongSecret { .. } => (StatusCode::FORBIDDEN, "join_token_invalid"),
        JoinTokenRefusal::Expired { .. } => (StatusCode::GONE, "join_token_expired"),
        JoinTokenRefusal::Used { .. } => (StatusCode::CONFLICT, "join_token_used"),
        JoinTokenRefusal::AlreadyMember { .. } => (StatusCode::CONFLICT, "already_member"),
        JoinTokenRefusal::Exists { .. } => (StatusCode::CONFLICT, "conflict"),
        JoinTokenRefusal::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid_join_token"),
    }
}

/// The join service and the CA; a node without a CA cannot admit anyone.
fn services(s: &AppState) -> Result<(SharedJoin, SharedCa), ApiError> {
    match (s.config.join.clone(), s.config.ca.clone()) {
        (Some(j), Some(c)) => Ok((j, c)),
        _ => Err(ApiError::Ca(CaApiError::Unavailable(
            "this node cannot admit joining nodes: it runs without a certificate authority (set `workspace`)"
                .into(),
        ))),
    }
}

fn parse_token(text: &str) -> Result<JoinToken, ApiError> {
    JoinToken::parse(text).map_err(|e| ApiError::JoinToken(JoinTokenRefusal::Invalid(e.0)))
}

#[utoipa::path(
    post,
    path = "/api/v1/cluster/join-tokens",
    tag = "join",
    request_body = api::join::CreateJoinToken,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "the token, shown once", body = api::join::JoinTokenCreated),
        (status = 400, description = "`invalid_request`: ttl_secs out of range", body = api::error::ErrorBody),
        (status = 403, description = "`forbidden`: admins only", body = api::error::ErrorBody),
        (status = 404, description = "`ca_not_initialized`", body = api::error::ErrorBody),
        (status = 409, description = "`conflict`", body = api::error::ErrorBody),
        (status = 503, description = "`ca_unavailable` (no CA service on this node), `ca_key_unavailable`, `ca_busy` or `unavailable`", body = api::error::ErrorBody)
    )
)]
pub async fn create_token(
    State(s): State<AppState>,
    auth: Auth,
    body: Result<JsonBody<CreateJoinToken>, ApiError>,
) -> Result<Response, ApiError> {
    auth.require_admin()?;
    // Non-admins are refused before the body is read: they learn nothing of its shape.
    let JsonBody(req) = body?;
    let ttl = req.ttl_secs.unwrap_or(DEFAULT_TTL_SECS);
    if ttl == 0 || ttl > MAX_TTL_SECS {
        return Err(ApiError::InvalidRequest(format!(
            "ttl_secs must be between 1 and {MAX_TTL_SECS} (7 days)"
        )));
    }
    let (_, ca) = services(&s)?;
    let fingerprint = ca.fingerprint().await?.fingerprint;
    let token = generate_token(&fingerprint);
    // The expiry is computed here, by the proposer; apply compares it with the entry's time.
    let expires_ms = crate::now_ms().saturating_add(ttl.saturating_mul(1000));
    s.write_applied(Command::CreateJoinToken {
        id: token.id.clone(),
        secret_hash: secret_hash(&token),
        expires_ms,
        by: auth.user.username.clone(),
    })
    .await?;
    tracing::info!(token_id = %token.id, expires_ms, by = %auth.user.username, "join token created");
    let body = JoinTokenCreated {
        token: token.to_text(),
        id: token.id.clone(),
        expires_ms,
        fingerprint: fingerprint_colons(&fingerprint),
    };
    Ok((
        StatusCode::CREATED,
        [(axum::http::header::CACHE_CONTROL, "no-store")],
        Json(body),
    )
        .into_response())
}

/// Refuses a token made by another cluster before anything is written.
async fn check_cluster(ca: &SharedCa, token: &JoinToken) -> Result<String, ApiError> {
    let fp = ca.fingerprint().await?;
    let ours = fingerprint_hex(&fp.fingerprint);
    if ours != token.fingerprint {
        return Err(ApiError::Forbidden(format!(
            "this token was made by another cluster (CA fingerprint {}); this cluster's is {}",
            fingerprint_colons(&token.fingerprint),
            fingerprint_colons(&ours)
        )));
    }
    Ok(fp.workspace)
}

// Long on purpose: the join checks in the order that keeps a refused request from writing.
#[utoipa::path(
    post,
    path = "/api/v1/join",
    tag = "join",
    request_body = api::join::JoinRequest,
    responses(
        (status = 200, description = "what the new node needs to start", body = api::join::JoinGrant),
        (status = 400, description = "`invalid_join_token` or `invalid_request`", body = api::error::ErrorBody),
        (status = 403, description = "`forbidden`, `join_token_unknown` or `join_token_invalid`", body = api::error::ErrorBody),
        (status = 404, description = "`not_found` or `ca_not_initialized`", body = api::error::ErrorBody),
        (status = 409, description = "`join_token_used`, `already_member`, `membership_change_in_progress` or `unsafe_membership_change`", body = api::error::ErrorBody),
        (status = 410, description = "`join_token_expired`", body = api::error::ErrorBody),
        (status = 503, description = "`ca_unavailable` (no CA service on this node), `ca_key_unavailable`, `ca_busy` or `unavailable`", body = api::error::ErrorBody),
        (status = 500, description = "`internal`: a bug or a storage failure", body = api::error::ErrorBody)
    )
)]
pub async fn join(
    State(s): State<AppState>,
    JsonBody(req): JsonBody<JoinRequest>,
) -> Result<Response, ApiError> {
    let token = parse_token(&req.token)?;
    let (api, ca) = services(&s)?;
    validate::host_port("api_addr", &req.api_addr)?;
    validate::host_port("cluster_addr", &req.cluster_addr)?;
    if let Some(h) = &req.https_addr {
        validate::host_port("https_addr", h)?;
    }
    let workspace = check_cluster(&ca, &token).await?;
    let tls = api.serves_tls();
    if req.csr_pem.is_some() && !tls {
        return Err(ApiError::InvalidRequest(
            "this node serves plain HTTP: node certificates and the KEK are only handed out over HTTPS; join without a CSR and copy the KEK file by hand"
                .into(),
        ));
    }
    // A seed that cannot hand out the KEK (or sign: both need the KEK file) says so before
    // the token is spent.
    let kek = match (&req.csr_pem, tls) {
        (Some(_), true) => Some(api.kek_text().await?),
        _ => None,
    };
    precheck(&s, &token).await?;
    // The member set as the leader has it, so "already a member" and the next free id are
    // not a lagging follower's view.
    s.node.sync_with_leader(Duration::from_secs(3)).await?;
    let members: Vec<u64> = s.node.members().iter().map(|(id, _)| *id).collect();
    let node_id = match req.node_id {
        Some(0) => {
            return Err(ApiError::InvalidRequest(
                "node id must be at least 1".into(),
            ));
        }
        Some(id) => id,
        None => members.iter().max().copied().unwrap_or(0).saturating_add(1),
    };
    if members.contains(&node_id) {
        return Err(ApiError::JoinToken(JoinTokenRefusal::AlreadyMember {
            node_id,
        }));
    }
    let (applied, _) = s
        .write_applied(Command::UseJoinToken {
            id: token.id.clone(),
            secret_hash: secret_hash(&token),
            node_id,
            api_addr: req.api_addr.clone(),
            cluster_addr: req.cluster_addr.clone(),
        })
        .await?;
    if !matches!(applied, Applied::JoinTokenUsed { .. }) {
        return Err(ApiError::Internal(format!(
            "unexpected outcome of a join: {applied:?}"
        )));
    }
    tracing::info!(token_id = %token.id, node_id, api_addr = %req.api_addr, cluster_addr = %req.cluster_addr, tls, "join token used");
    let mut grant = JoinGrant {
        node_id,
        workspace: Some(workspace),
        root_pem: ca.root_pem().await?,
        chain_pem: None,
        crl_pem: None,
        kek: None,
    };
    if let (Some(csr), Some(kek)) = (req.csr_pem, kek) {
        // The token is spent by now: a failure here needs a new token (the message says so).
        // The certificate's names are the CSR's, checked by the CA like any node's.
        let cert = ca
            .issue_node_cert(node_id, csr)
            .await
            .map_err(|e| spent(&token, e))?;
        grant.chain_pem = Some(cert.chain_pem);
        grant.crl_pem = Some(cert.crl_pem);
        grant.kek = Some(kek);
    }
    Ok((
        [(axum::http::header::CACHE_CONTROL, "no-store")],
        Json(grant),
    )
        .into_response())
}

/// Refuses an unknown id, a wrong secret or a used token from the local state (after catching
/// up with the leader) without writing: the route is unauthenticated, and guesses must not put
/// entries into the Raft log. The state machine checks everything again at apply, where expiry
/// is judged against the entry's time, not this node's clock.
async fn precheck(s: &AppState, token: &JoinToken) -> Result<(), ApiError> {
    let id = token.id.clone();
    let record = s
        .read_fresh(|r| r.join_token(&token.id))
        .await?
        .ok_or(ApiError::JoinToken(JoinTokenRefusal::Unknown { id }))?;
    if !same_hash(&secret_hash(token), &record.secret_hash) {
        return Err(ApiError::JoinToken(JoinTokenRefusal::WrongSecret {
            id: token.id.clone(),
        }));
    }
    if let Some(u) = record.used {
        return Err(ApiError::JoinToken(JoinTokenRefusal::Used {
            id: token.id.clone(),
            node_id: u.node_id,
        }));
    }
    Ok(())
}

/// Hashing both sides first makes the comparison time independent of where they differ.
fn same_hash(a: &str, b: &str) -> bool {
    Sha256::digest(a.as_bytes()) == Sha256::digest(b.as_bytes())
}

fn spent(token: &JoinToken, e: CaApiError) -> ApiError {
    tracing::warn!(token_id = %token.id, error = %e, "join failed after its token was used");
    let message = format!(
        "{e} (join token {} is used up; ask for a new one)",
        token.id
    );
    ApiError::Ca(match e {
        CaApiError::InvalidRequest(_) => CaApiError::InvalidRequest(message),
        CaApiError::NameNotPermitted(_) => CaApiError::NameNotPermitted(message),
        _ => CaApiError::Unavailable(message),
    })
}

#[utoipa::path(
    post,
    path = "/api/v1/join/complete",
    tag = "join",
    request_body = api::join::JoinComplete,
    responses(
        (status = 200, description = "the node is a voter", body = crate::openapi::JoinCompleted),
        (status = 400, description = "`invalid_join_token` or `invalid_request`", body = api::error::ErrorBody),
        (status = 403, description = "`forbidden`, `join_token_unknown` or `join_token_invalid`", body = api::error::ErrorBody),
        (status = 404, description = "`not_found` or `ca_not_initialized`", body = api::error::ErrorBody),
        (status = 409, description = "`join_token_used`, `already_member`, `membership_change_in_progress` or `unsafe_membership_change`", body = api::error::ErrorBody),
        (status = 410, description = "`join_token_expired`", body = api::error::ErrorBody),
        (status = 503, description = "`ca_unavailable` (no CA service on this node), `ca_key_unavailable`, `ca_busy` or `unavailable`", body = api::error::ErrorBody),
        (status = 500, description = "`internal`: a bug or a storage failure", body = api::error::ErrorBody)
    )
)]
pub async fn complete(
    State(s): State<AppState>,
    JsonBody(req): JsonBody<JoinComplete>,
) -> Result<Response, ApiError> {
    let token = parse_token(&req.token)?;
    let record = s
        .read_fresh(|r| r.join_token(&token.id))
        .await?
        .ok_or_else(|| {
            ApiError::JoinToken(JoinTokenRefusal::Unknown {
                id: token.id.clone(),
            })
        })?;
    if !same_hash(&secret_hash(&token), &record.secret_hash) {
        return Err(ApiError::JoinToken(JoinTokenRefusal::WrongSecret {
            id: token.id.clone(),
        }));
    }
    let Some(used) = record.used.filter(|u| u.node_id == req.node_id) else {
        return Err(ApiError::Forbidden(format!(
            "join token {} was not used for node {}; call POST /api/v1/join first",
            token.id, req.node_id
        )));
    };
    if crate::now_ms().saturating_sub(used.at_ms) > COMPLETE_WINDOW_MS {
        return Err(ApiError::Forbidden(format!(
            "join token {} was used more than an hour ago; ask for a new token",
            token.id
        )));
    }
    let voter = |s: &AppState| {
        s.node
            .metrics()
            .membership_config
            .membership()
            .voter_ids()
            .any(|v| v == req.node_id)
    };
    if !voter(&s) {
        tracing::info!(token_id = %token.id, node_id = req.node_id, "adding joined node");
        s.node
            .add_node(
                req.node_id,
                NodeInfo {
                    api_addr: used.api_addr,
                    cluster_addr: used.cluster_addr,
                },
            )
            .await?;
    }
    Ok(Json(json!({ "node_id": req.node_id, "voter": true })).into_response())
}
