//! The certificate authority's HTTP routes (`/api/v1/ca/...`).
//!
//! Public, no authentication (a device installing the root has no account, and the CRL must be
//! fetchable by any verifier): `root.pem`, `root.crt` (DER), `root.mobileconfig`, `crl.pem`,
//! `fingerprint`. Admin only: `sign`, `node-certs`, `certs`, `certs/{serial}/revoke`, `export-root-key`,
//! `renew-intermediate`, `init`. Owns the HTTP shapes and content types; the work is done by the
//! `CaApi` implementation the node passes in. Must never log a CSR, a certificate body or a key.

use api::ca::{
    CertsEnvelope, NodeCertRequest, RenewRequest, RevokeRequest, RootKeyEnvelope, SignRequest,
};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::auth::Auth;
use crate::ca_api::{CaApiError, SharedCa};
use crate::error::ApiError;
use crate::extract::JsonBody;
use crate::state::AppState;

fn ca(s: &AppState) -> Result<SharedCa, ApiError> {
    s.config.ca.clone().ok_or_else(|| {
        ApiError::Ca(CaApiError::Unavailable(
            "this node runs without a certificate authority: set `workspace` in its configuration"
                .into(),
        ))
    })
}

fn text(content_type: &'static str, body: impl IntoResponse) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

#[utoipa::path(
    get,
    path = "/api/v1/ca/root.pem",
    tag = "ca",
    responses(
        (status = 200, description = "the root certificate (PEM)", body = String, content_type = "application/x-pem-file"),
        (status = 404, description = "`ca_not_initialized`: the cluster has no CA yet", body = api::error::ErrorBody),
        (status = 503, description = "`ca_unavailable` (no CA service on this node), `ca_key_unavailable`, `ca_busy` or `unavailable`", body = api::error::ErrorBody),
        (status = 500, description = "`internal`: a bug or a storage failure", body = api::error::ErrorBody)
    )
)]
pub async fn root_pem(State(s): State<AppState>) -> Result<Response, ApiError> {
    let pem = ca(&s)?.root_pem().await?;
    Ok(text("application/x-pem-file", pem))
}

#[utoipa::path(
    get,
    path = "/api/v1/ca/root.crt",
    tag = "ca",
    responses(
        (status = 200, description = "the root certificate (DER)", body = Vec<u8>, content_type = "application/pkix-cert"),
        (status = 404, description = "`ca_not_initialized`: the cluster has no CA yet", body = api::error::ErrorBody),
        (status = 503, description = "`ca_unavailable` (no CA service on this node), `ca_key_unavailable`, `ca_busy` or `unavailable`", body = api::error::ErrorBody),
        (status = 500, description = "`internal`: a bug or a storage failure", body = api::error::ErrorBody)
    )
)]
pub async fn root_der(State(s): State<AppState>) -> Result<Response, ApiError> {
    let der = ca(&s)?.root_der().await?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/pkix-cert"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"conclave-root.crt\"",
            ),
        ],
        der,
    )
        .into_response())
}

#[utoipa::path(
    get,
    path = "/api/v1/ca/root.mobileconfig",
    tag = "ca",
    responses(
        (status = 200, description = "an unsigned Apple configuration profile holding the root", body = String, content_type = "application/x-apple-aspen-config"),
        (status = 404, description = "`ca_not_initialized`: the cluster has no CA yet", body = api::error::ErrorBody),
        (status = 503, description = "`ca_unavailable` (no CA service on this node), `ca_key_unavailable`, `ca_busy` or `unavailable`", body = api::error::ErrorBody),
        (status = 500, description = "`internal`: a bug or a storage failure", body = api::error::ErrorBody)
    )
)]
pub async fn root_mobileconfig(State(s): State<AppState>) -> Result<Response, ApiError> {
    let profile = ca(&s)?.root_mobileconfig().await?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-apple-aspen-config"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"conclave-root.mobileconfig\"",
            ),
        ],
        profile,
    )
        .into_response())
}

#[utoipa::path(
    get,
    path = "/api/v1/ca/crl.pem",
    tag = "ca",
    responses(
        (status = 200, description = "every current CRL, concatenated PEM", body = String, content_type = "application/x-pem-file"),
        (status = 404, description = "`ca_not_initialized`: the cluster has no CA yet", body = api::error::ErrorBody),
        (status = 503, description = "`ca_unavailable` (no CA service on this node), `ca_key_unavailable`, `ca_busy` or `unavailable`", body = api::error::ErrorBody),
        (status = 500, description = "`internal`: a bug or a storage failure", body = api::error::ErrorBody)
    )
)]
pub async fn crl_pem(State(s): State<AppState>) -> Result<Response, ApiError> {
    let pem = ca(&s)?.crl_pem().await?;
    Ok(text("application/x-pem-file", pem))
}

#[utoipa::path(
    get,
    path = "/api/v1/ca/fingerprint",
    tag = "ca",
    responses(
        (status = 200, description = "the root's fingerprint and the issuing CA", body = api::ca::CaFingerprint),
        (status = 404, description = "`ca_not_initialized`: the cluster has no CA yet", body = api::error::ErrorBody),
        (status = 503, description = "`ca_unavailable` (no CA service on this node), `ca_key_unavailable`, `ca_busy` or `unavailable`", body = api::error::ErrorBody),
        (status = 500, description = "`internal`: a bug or a storage failure", body = api::error::ErrorBody)
    )
)]
pub async fn fingerprint(State(s): State<AppState>) -> Result<Response, ApiError> {
    Ok(Json(ca(&s)?.fingerprint().await?).into_response())
}

#[utoipa::path(
    post,
    path = "/api/v1/ca/init",
    tag = "ca",
    security(("bearer" = [])),
    responses(
        (status = 201, description = "the new CA", body = api::ca::CaFingerprint),
        (status = 403, description = "`forbidden`: admins only", body = api::error::ErrorBody),
        (status = 409, description = "`ca_exists`", body = api::error::ErrorBody),
        (status = 503, description = "`ca_unavailable` (no CA service on this node), `ca_key_unavailable`, `ca_busy` or `unavailable`", body = api::error::ErrorBody)
    )
)]
pub async fn init(State(s): State<AppState>, auth: Auth) -> Result<Response, ApiError> {
    auth.require_admin()?;
    let fp = ca(&s)?.init().await?;
    tracing::info!(fingerprint = %fp.fingerprint, by = %auth.user.username, "certificate authority created");
    Ok((axum::http::StatusCode::CREATED, Json(fp)).into_response())
}

#[utoipa::path(
    post,
    path = "/api/v1/ca/sign",
    tag = "ca",
    request_body = api::ca::SignRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "the certificate and its chain", body = api::ca::SignedCert),
        (status = 400, description = "`invalid_request` or `name_not_permitted`", body = api::error::ErrorBody),
        (status = 403, description = "`forbidden`: admins only", body = api::error::ErrorBody),
        (status = 404, description = "`ca_not_initialized`: the cluster has no CA yet", body = api::error::ErrorBody),
        (status = 409, description = "`root_key_offline`", body = api::error::ErrorBody),
        (status = 503, description = "`ca_unavailable` (no CA service on this node), `ca_key_unavailable`, `ca_busy` or `unavailable`", body = api::error::ErrorBody)
    )
)]
pub async fn sign(
    State(s): State<AppState>,
    auth: Auth,
    body: Result<JsonBody<SignRequest>, ApiError>,
) -> Result<Response, ApiError> {
    auth.require_admin()?;
    // Non-admins are refused before the body is read: they learn nothing of its shape.
    let JsonBody(req) = body?;
    let signed = ca(&s)?.sign_csr(req.csr_pem, req.days).await?;
    tracing::info!(serial = %signed.serial, not_after = signed.not_after, by = %auth.user.username, "certificate issued from a CSR");
    Ok((axum::http::StatusCode::CREATED, Json(signed)).into_response())
}

/// Issues a node certificate (`conclave provision`): admin only, since the certificate admits
/// its holder to the cluster port.
#[utoipa::path(
    post,
    path = "/api/v1/ca/node-certs",
    tag = "ca",
    request_body = api::ca::NodeCertRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "the node certificate, root and CRLs", body = api::ca::NodeCertIssued),
        (status = 400, description = "`invalid_request` or `name_not_permitted`", body = api::error::ErrorBody),
        (status = 403, description = "`forbidden`: admins only", body = api::error::ErrorBody),
        (status = 404, description = "`ca_not_initialized`: the cluster has no CA yet", body = api::error::ErrorBody),
        (status = 409, description = "`root_key_offline`", body = api::error::ErrorBody),
        (status = 503, description = "`ca_unavailable` (no CA service on this node), `ca_key_unavailable`, `ca_busy` or `unavailable`", body = api::error::ErrorBody)
    )
)]
pub async fn node_cert(
    State(s): State<AppState>,
    auth: Auth,
    body: Result<JsonBody<NodeCertRequest>, ApiError>,
) -> Result<Response, ApiError> {
    auth.require_admin()?;
    // Non-admins are refused before the body is read: they learn nothing of its shape.
    let JsonBody(req) = body?;
    if req.node_id == 0 {
        return Err(ApiError::InvalidRequest(
            "node_id must be at least 1".into(),
        ));
    }
    let issued = ca(&s)?.issue_node_cert(req.node_id, req.csr_pem).await?;
    tracing::info!(node_id = req.node_id, serial = %issued.serial, not_after = issued.not_after, by = %auth.user.username, "node certificate issued");
    Ok((axum::http::StatusCode::CREATED, Json(issued)).into_response())
}

#[utoipa::path(
    get,
    path = "/api/v1/ca/certs",
    tag = "ca",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "certificates not yet expired, oldest first", body = api::ca::CertsEnvelope),
        (status = 403, description = "`forbidden`: admins only", body = api::error::ErrorBody),
        (status = 404, description = "`ca_not_initialized`: the cluster has no CA yet", body = api::error::ErrorBody),
        (status = 503, description = "`ca_unavailable` (no CA service on this node), `ca_key_unavailable`, `ca_busy` or `unavailable`", body = api::error::ErrorBody)
    )
)]
pub async fn list(State(s): State<AppState>, auth: Auth) -> Result<Response, ApiError> {
    auth.require_admin()?;
    let certs = ca(&s)?.list().await?;
    Ok(Json(CertsEnvelope { certs }).into_response())
}

/// The body is optional (`{}` or nothing at all revokes with reason "unspecified").
#[utoipa::path(
    post,
    path = "/api/v1/ca/certs/{serial}/revoke",
    tag = "ca",
    params(("serial" = String, Path, description = "lower-case hex (colons and upper case accepted)")),
    request_body = Option<api::ca::RevokeRequest>,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the certificate as listed", body = api::ca::CertSummary),
        (status = 400, description = "`invalid_json` or `invalid_request` (unknown reason)", body = api::error::ErrorBody),
        (status = 403, description = "`forbidden`: admins only", body = api::error::ErrorBody),
        (status = 404, description = "`not_found` (no such serial) or `ca_not_initialized`", body = api::error::ErrorBody),
        (status = 409, description = "`root_key_offline`", body = api::error::ErrorBody),
        (status = 503, description = "`ca_unavailable` (no CA service on this node), `ca_key_unavailable`, `ca_busy` or `unavailable`", body = api::error::ErrorBody)
    )
)]
pub async fn revoke(
    State(s): State<AppState>,
    Path(serial): Path<String>,
    auth: Auth,
    body: Bytes,
) -> Result<Response, ApiError> {
    auth.require_admin()?;
    let req: RevokeRequest = if body.iter().all(u8::is_ascii_whitespace) {
        RevokeRequest::default()
    } else {
        serde_json::from_slice::<crate::json_object::ObjectOnly<_>>(&body)
            .map_err(|e| ApiError::InvalidJson(e.to_string()))?
            .0
    };
    let cert = ca(&s)?.revoke(serial, req.reason).await?;
    tracing::info!(serial = %cert.serial, reason = ?cert.revoked, by = %auth.user.username, "certificate revoked");
    Ok(Json(cert).into_response())
}

#[utoipa::path(
    post,
    path = "/api/v1/ca/export-root-key",
    tag = "ca",
    request_body = api::rest::StepUpRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the root key; the cluster no longer holds it", body = api::ca::RootKeyEnvelope),
        (status = 400, description = "`invalid_json`: the body with `current_password` is missing", body = api::error::ErrorBody),
        (status = 403, description = "`forbidden`: admins only; `https_required`: over plain HTTP; `step_up_failed`: wrong `current_password`", body = api::error::ErrorBody),
        (status = 404, description = "`ca_not_initialized`: the cluster has no CA yet", body = api::error::ErrorBody),
        (status = 409, description = "`root_key_offline`: exported before", body = api::error::ErrorBody),
        (status = 503, description = "`ca_unavailable` (no CA service on this node), `ca_key_unavailable`, `ca_busy` or `unavailable`", body = api::error::ErrorBody)
    )
)]
pub async fn export_root_key(
    State(s): State<AppState>,
    axum::Extension(meta): axum::Extension<crate::security_log::RequestMeta>,
    auth: Auth,
    body: Result<JsonBody<api::rest::StepUpRequest>, ApiError>,
) -> Result<Response, ApiError> {
    // Who may ask is answered before what was sent: a member gets 403 whatever the body.
    auth.require_admin()?;
    let JsonBody(req) = body?;
    crate::auth::step_up(
        &s,
        &meta,
        &auth,
        Some(req.current_password),
        "exporting the root key",
    )
    .await?;
    let pem = ca(&s)?.export_root_key().await?;
    tracing::warn!(by = %auth.user.username, "root CA key exported and removed from the cluster");
    Ok((
        [(header::CACHE_CONTROL, "no-store")],
        Json(RootKeyEnvelope { root_key_pem: pem }),
    )
        .into_response())
}

#[utoipa::path(
    post,
    path = "/api/v1/ca/renew-intermediate",
    tag = "ca",
    request_body = api::ca::RenewRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the new issuing CA", body = api::ca::IntermediateSummary),
        (status = 400, description = "`invalid_request` or `wrong_key`", body = api::error::ErrorBody),
        (status = 403, description = "`forbidden`: admins only; `https_required`: over plain HTTP; `step_up_failed`: `current_password` missing or wrong", body = api::error::ErrorBody),
        (status = 404, description = "`ca_not_initialized`: the cluster has no CA yet", body = api::error::ErrorBody),
        (status = 409, description = "`root_key_offline`", body = api::error::ErrorBody),
        (status = 503, description = "`ca_unavailable` (no CA service on this node), `ca_key_unavailable`, `ca_busy` or `unavailable`", body = api::error::ErrorBody)
    )
)]
pub async fn renew_intermediate(
    State(s): State<AppState>,
    axum::Extension(meta): axum::Extension<crate::security_log::RequestMeta>,
    auth: Auth,
    body: Result<JsonBody<RenewRequest>, ApiError>,
) -> Result<Response, ApiError> {
    auth.require_admin()?;
    // Non-admins are refused before the body is read: they learn nothing of its shape.
    let JsonBody(req) = body?;
    crate::auth::step_up(
        &s,
        &meta,
        &auth,
        req.current_password.clone(),
        "renewing the issuing CA",
    )
    .await?;
    let renewed = ca(&s)?.renew_intermediate(req.root_key_pem).await?;
    tracing::info!(serial = %renewed.serial, not_after = renewed.not_after, by = %auth.user.username, "issuing CA renewed");
    Ok(Json(renewed).into_response())
}
