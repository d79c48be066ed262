//! The seam between the HTTP layer and the certificate authority: the `CaApi` trait the `node`
//! crate's `CaService` implements, and its error type. The shapes it returns are the wire
//! types of `api::ca`.
//!
//! Why a trait: `web` sits below `node` and must not depend on it (nor on rcgen); the router
//! receives an `Option<Arc<dyn CaApi>>` through `ApiConfig::ca`. Owns the HTTP status and code
//! of every CA error. Must never carry a private key anywhere but the one field built for it
//! (`export_root_key`'s return value), and never put key material into an error message.

use std::sync::Arc;

use api::ca::{CaFingerprint, CertSummary, IntermediateSummary, NodeCertIssued, SignedCert};
use axum::http::StatusCode;

/// Errors of CA operations, each with one HTTP status and code (see docs/api.md).
#[derive(Debug, Clone, thiserror::Error)]
pub enum CaApiError {
    /// This node runs without a CA service (no `workspace` configured).
    #[error("{0}")]
    Unavailable(String),
    /// The cluster has no CA yet.
    #[error(
        "the cluster has no certificate authority yet; an admin can create one with POST /api/v1/ca/init"
    )]
    NotInitialized,
    /// `init` on a cluster that already has a CA.
    #[error("the cluster already has a certificate authority")]
    AlreadyInitialized,
    /// A requested name or address lies outside the CA's constraints, or is reserved for the
    /// cluster itself.
    #[error("{0}")]
    NameNotPermitted(String),
    /// Malformed input: a CSR that does not parse or verify, a bad lifetime, an unknown reason.
    #[error("{0}")]
    InvalidRequest(String),
    /// No such certificate.
    #[error("{0}")]
    NotFound(String),
    /// This node cannot use the CA's private keys: its key-encryption key file is missing or
    /// wrong. Other nodes may be able to.
    #[error("{0}")]
    KeyUnavailable(String),
    /// The operation needs the root key and it has been exported (or it is already exported).
    #[error("{0}")]
    RootKeyOffline(String),
    /// A supplied key is not the one the operation needs (e.g. not the root's).
    #[error("{0}")]
    WrongKey(String),
    /// The CA state kept changing under concurrent updates; retrying later is safe.
    #[error("{0}")]
    Busy(String),
    /// The cluster could not commit the update (no leader, no quorum).
    #[error("{0}")]
    ClusterUnavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl CaApiError {
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "ca_unavailable"),
            Self::NotInitialized => (StatusCode::NOT_FOUND, "ca_not_initialized"),
            Self::AlreadyInitialized => (StatusCode::CONFLICT, "ca_exists"),
            Self::NameNotPermitted(_) => (StatusCode::BAD_REQUEST, "name_not_permitted"),
            Self::InvalidRequest(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::KeyUnavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "ca_key_unavailable"),
            Self::RootKeyOffline(_) => (StatusCode::CONFLICT, "root_key_offline"),
            Self::WrongKey(_) => (StatusCode::BAD_REQUEST, "wrong_key"),
            Self::Busy(_) => (StatusCode::SERVICE_UNAVAILABLE, "ca_busy"),
            Self::ClusterUnavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

/// The certificate authority as the HTTP layer sees it. Implementations do the signing off the
/// async workers and replicate every change through Raft before returning.
#[async_trait::async_trait]
pub trait CaApi: Send + Sync {
    /// Creates the CA if the cluster has none (admin; normally done by `conclave init`).
    async fn init(&self) -> Result<CaFingerprint, CaApiError>;
    async fn fingerprint(&self) -> Result<CaFingerprint, CaApiError>;
    async fn root_pem(&self) -> Result<String, CaApiError>;
    async fn root_der(&self) -> Result<Vec<u8>, CaApiError>;
    async fn root_mobileconfig(&self) -> Result<String, CaApiError>;
    /// Every current CRL (each issuing CA's and the root's), concatenated PEM.
    async fn crl_pem(&self) -> Result<String, CaApiError>;
    /// Signs a CSR from another LAN service; `days` defaults to the configured service lifetime.
    async fn sign_csr(&self, csr_pem: String, days: Option<u32>) -> Result<SignedCert, CaApiError>;
    /// Issues node `node_id`'s certificate for the key that signed `csr_pem`. The identity
    /// `N.nodes.<workspace>` is always added; the CSR's other names (its addresses, `nodeN.<ws>`,
    /// the workspace) are checked against the constraints like any other.
    async fn issue_node_cert(
        &self,
        node_id: u64,
        csr_pem: String,
    ) -> Result<NodeCertIssued, CaApiError>;
    async fn list(&self) -> Result<Vec<CertSummary>, CaApiError>;
    async fn revoke(
        &self,
        serial: String,
        reason: Option<String>,
    ) -> Result<CertSummary, CaApiError>;
    /// Hands out the root key (PEM) and removes it from the cluster. Works once.
    async fn export_root_key(&self) -> Result<String, CaApiError>;
    /// Replaces the issuing CA, signed with the operator's offline root key.
    async fn renew_intermediate(
        &self,
        root_key_pem: String,
    ) -> Result<IntermediateSummary, CaApiError>;
}

/// `ApiConfig` is `Debug`; the CA service shows as an opaque handle.
impl std::fmt::Debug for dyn CaApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CaApi")
    }
}

/// How the router holds the CA service.
pub type SharedCa = Arc<dyn CaApi>;
