//! `web::ca_api::CaApi` for the node's `CaService`: turns CA records into the HTTP shapes and
//! CA errors into the API's error codes. Also the CA as the plain port's trust page publishes
//! it (`CaTrust`), and the spelling of revocation reasons on the wire.
//!
//! Owns the classification of every `CaServiceError` as the client sees it (a name outside the
//! constraints is `name_not_permitted`, a missing KEK `ca_key_unavailable`, ...). Must never put
//! key material into a response other than `export_root_key`'s, or into an error message.

use std::sync::Arc;
use std::time::Duration;

use api::ca::{CaFingerprint, CertSummary, IntermediateSummary, NodeCertIssued, SignedCert};
use web::ca_api::{CaApi, CaApiError};

use super::{CaService, CaServiceError};
use crate::ca::{self, CaError, CaState, Holder, IssuedCert, RevokeReason};
use crate::tls::TrustMaterial;

impl From<CaServiceError> for CaApiError {
    fn from(e: CaServiceError) -> Self {
        let msg = e.to_string();
        match e {
            CaServiceError::NotInitialized => CaApiError::NotInitialized,
            CaServiceError::AlreadyInitialized => CaApiError::AlreadyInitialized,
            CaServiceError::KekMissing { .. } => CaApiError::KeyUnavailable(msg),
            CaServiceError::IpNotPermitted { .. } => CaApiError::NameNotPermitted(msg),
            CaServiceError::Busy { .. } => CaApiError::Busy(msg),
            CaServiceError::Cluster(c) => match c {
                cluster::ClusterError::Unavailable(_)
                | cluster::ClusterError::NotCaughtUp { .. }
                | cluster::ClusterError::DiskFull(_)
                | cluster::ClusterError::ShuttingDown => CaApiError::ClusterUnavailable(msg),
                _ => CaApiError::Internal(msg),
            },
            CaServiceError::Decode(_) | CaServiceError::Encode(_) | CaServiceError::Task(_) => {
                CaApiError::Internal(msg)
            }
            CaServiceError::Ca(c) => match c {
                CaError::NameOutsideZone { .. }
                | CaError::ReservedName { .. }
                | CaError::IpOutsideRanges { .. }
                | CaError::UnsupportedName { .. } => CaApiError::NameNotPermitted(msg),
                CaError::InvalidDnsName { .. }
                | CaError::NoNames
                | CaError::InvalidLifetime { .. }
                | CaError::InvalidCsr(_)
                | CaError::Parse { .. }
                | CaError::InvalidWorkspace { .. }
                | CaError::InvalidIpRange { .. } => CaApiError::InvalidRequest(msg),
                CaError::UnknownSerial { .. } => CaApiError::NotFound(msg),
                CaError::KeyMismatch { .. } => CaApiError::WrongKey(msg),
                CaError::RootKeyOffline => CaApiError::RootKeyOffline(
                    "the root key is not held by the cluster (it was exported); this operation needs it"
                        .into(),
                ),
                CaError::RootKeyOnline => CaApiError::InvalidRequest(msg),
                CaError::IssuerExpired => CaApiError::Unavailable(msg),
                CaError::Unseal { .. }
                | CaError::SealVersion(_)
                | CaError::KekIo { .. }
                | CaError::KekFormat { .. }
                | CaError::KekText { .. }
                | CaError::KekPermissions { .. }
                | CaError::KekAcl { .. } => CaApiError::KeyUnavailable(format!(
                    "{msg}: this node's key-encryption key does not open the CA's keys"
                )),
                CaError::DuplicateSerial { .. } | CaError::StaleCrl { .. } => {
                    CaApiError::Busy(msg)
                }
                CaError::Random | CaError::Rcgen(_) => CaApiError::Internal(msg),
            },
        }
    }
}

fn ca_err(e: CaError) -> CaApiError {
    CaServiceError::Ca(e).into()
}

fn summary(state: &CaState, c: &IssuedCert) -> CertSummary {
    let revoked = state.revoked.get(&c.serial);
    CertSummary {
        serial: c.serial.clone(),
        holder: match c.holder {
            Holder::Node(id) => format!("node {id}"),
            Holder::Service => "service".into(),
        },
        dns_names: c.dns_names.clone(),
        ips: c.ips.iter().map(|ip| ip.to_string()).collect(),
        not_before: c.not_before,
        not_after: c.not_after,
        issuer_serial: c.issuer_serial.clone(),
        revoked: revoked.map(|r| reason_name(r.reason).to_owned()),
        revoked_at: revoked.map(|r| r.revoked_at),
    }
}

fn fingerprint_of(state: &CaState) -> Result<CaFingerprint, CaApiError> {
    Ok(CaFingerprint {
        fingerprint: ca::root_fingerprint(state).map_err(ca_err)?,
        workspace: state.workspace.clone(),
        root_key_online: state.root_key.is_some(),
        intermediate_serial: state.intermediate.serial.clone(),
        intermediate_not_after: state.intermediate.not_after,
    })
}

impl CaService {
    /// Public reads come from local state: the root never changes and a CRL a moment old is
    /// still valid for days.
    fn public(&self) -> Result<CaState, CaApiError> {
        Ok(self.load()?.1)
    }
}

#[async_trait::async_trait]
impl CaApi for CaService {
    async fn init(&self) -> Result<CaFingerprint, CaApiError> {
        let (created, _) = self.ensure_initialized(true).await?;
        if !created {
            return Err(CaApiError::AlreadyInitialized);
        }
        fingerprint_of(&self.load()?.1)
    }

    async fn fingerprint(&self) -> Result<CaFingerprint, CaApiError> {
        fingerprint_of(&self.public()?)
    }

    async fn root_pem(&self) -> Result<String, CaApiError> {
        Ok(self.public()?.root_cert_pem)
    }

    async fn root_der(&self) -> Result<Vec<u8>, CaApiError> {
        ca::trust_formats::root_der(&self.public()?.root_cert_pem).map_err(ca_err)
    }

    async fn root_mobileconfig(&self) -> Result<String, CaApiError> {
        let state = self.public()?;
        ca::trust_formats::apple_mobileconfig(&state.root_cert_pem, &state.workspace)
            .map_err(ca_err)
    }

    async fn crl_pem(&self) -> Result<String, CaApiError> {
        let state = self.public()?;
        Ok(state.verifier_crls().iter().map(|c| c.pem()).collect())
    }

    async fn sign_csr(&self, csr_pem: String, days: Option<u32>) -> Result<SignedCert, CaApiError> {
        let lifetime = match days {
            Some(0) => {
                return Err(CaApiError::InvalidRequest("days must be at least 1".into()));
            }
            Some(d) => Some(Duration::from_secs(u64::from(d) * 86_400)),
            None => None,
        };
        let issued = CaService::sign_csr(self, csr_pem, lifetime).await?;
        Ok(SignedCert {
            serial: issued.record.serial.clone(),
            not_after: issued.record.not_after,
            cert_pem: issued.record.cert_pem.clone(),
            chain_pem: issued.chain_pem,
        })
    }

    async fn issue_node_cert(
        &self,
        node_id: u64,
        csr_pem: String,
    ) -> Result<NodeCertIssued, CaApiError> {
        let issued = CaService::issue_node_cert_for_csr(self, node_id, csr_pem).await?;
        let (_, state) = self.load()?;
        Ok(NodeCertIssued {
            serial: issued.record.serial.clone(),
            not_after: issued.record.not_after,
            chain_pem: issued.chain_pem,
            root_pem: state.root_cert_pem.clone(),
            crl_pem: state.verifier_crls().iter().map(|c| c.pem()).collect(),
        })
    }

    async fn list(&self) -> Result<Vec<CertSummary>, CaApiError> {
        let (_, state) = self.load_fresh().await?;
        let mut certs: Vec<CertSummary> =
            state.issued.values().map(|c| summary(&state, c)).collect();
        certs.sort_by(|a, b| (a.not_before, &a.serial).cmp(&(b.not_before, &b.serial)));
        Ok(certs)
    }

    async fn revoke(
        &self,
        serial: String,
        reason: Option<String>,
    ) -> Result<CertSummary, CaApiError> {
        let reason = parse_reason(reason.as_deref()).map_err(CaApiError::InvalidRequest)?;
        let cert = CaService::revoke(self, &serial, reason).await?;
        let (_, state) = self.load()?;
        Ok(summary(&state, &cert))
    }

    async fn export_root_key(&self) -> Result<String, CaApiError> {
        let pem = CaService::export_root_key(self).await?;
        Ok(pem.expose().to_owned())
    }

    async fn renew_intermediate(
        &self,
        root_key_pem: String,
    ) -> Result<IntermediateSummary, CaApiError> {
        let new_ca = CaService::renew_intermediate(self, root_key_pem).await?;
        Ok(IntermediateSummary {
            serial: new_ca.serial,
            not_after: new_ca.not_after,
            cert_pem: new_ca.cert_pem,
        })
    }
}

/// The replicated CA as the plain port's trust page publishes it.
pub struct CaTrust(pub Arc<CaService>);

impl TrustMaterial for CaTrust {
    fn workspace(&self) -> String {
        self.0.settings.workspace.clone()
    }
    fn root_pem(&self) -> Option<String> {
        self.0.load().ok().map(|(_, s)| s.root_cert_pem)
    }
    fn crl_pem(&self) -> Option<String> {
        let (_, state) = self.0.load().ok()?;
        let pem: String = state.verifier_crls().iter().map(|c| c.pem()).collect();
        (!pem.is_empty()).then_some(pem)
    }
}

/// Parse a revocation reason as the API and CLI spell it (RFC 5280 names in snake case).
pub fn parse_reason(reason: Option<&str>) -> Result<RevokeReason, String> {
    Ok(match reason.map(str::trim) {
        None | Some("") | Some("unspecified") => RevokeReason::Unspecified,
        Some("key_compromise") => RevokeReason::KeyCompromise,
        Some("ca_compromise") => RevokeReason::CaCompromise,
        Some("affiliation_changed") => RevokeReason::AffiliationChanged,
        Some("superseded") => RevokeReason::Superseded,
        Some("cessation_of_operation") => RevokeReason::CessationOfOperation,
        Some("privilege_withdrawn") => RevokeReason::PrivilegeWithdrawn,
        Some(other) => {
            return Err(format!(
                "unknown revocation reason {other:?}; expected one of unspecified, key_compromise, ca_compromise, affiliation_changed, superseded, cessation_of_operation, privilege_withdrawn"
            ));
        }
    })
}

pub fn reason_name(reason: RevokeReason) -> &'static str {
    match reason {
        RevokeReason::Unspecified => "unspecified",
        RevokeReason::KeyCompromise => "key_compromise",
        RevokeReason::CaCompromise => "ca_compromise",
        RevokeReason::AffiliationChanged => "affiliation_changed",
        RevokeReason::Superseded => "superseded",
        RevokeReason::CessationOfOperation => "cessation_of_operation",
        RevokeReason::PrivilegeWithdrawn => "privilege_withdrawn",
    }
}
