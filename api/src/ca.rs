//! The certificate authority's wire shapes (`/api/v1/ca/...`, docs/api.md): what the CA
//! endpoints answer and the bodies they take.
//!
//! Request bodies refuse unknown fields (a typo in an admin call must not be ignored); the
//! revoke body is optional, which the server handles before it gets here. Must never carry a
//! private key anywhere but the two fields built for it (`RootKeyEnvelope::root_key_pem`,
//! `RenewRequest::root_key_pem`); those types have no `Debug`.

use serde::{Deserialize, Serialize};

/// `GET /api/v1/ca/fingerprint` (and `POST /api/v1/ca/init`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CaFingerprint {
    /// SHA-256 of the root certificate's DER, `AB:CD:...` (see [`crate::fingerprint`]).
    pub fingerprint: String,
    pub workspace: String,
    /// Whether the root key is still held (sealed) by the cluster.
    pub root_key_online: bool,
    /// The issuing CA in use: hex serial and expiry (Unix seconds).
    pub intermediate_serial: String,
    pub intermediate_not_after: i64,
}

/// A certificate just signed from a CSR (`POST /api/v1/ca/sign`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SignedCert {
    pub serial: String,
    /// Unix seconds.
    pub not_after: i64,
    pub cert_pem: String,
    /// The leaf followed by the issuing CA (what a server presents).
    pub chain_pem: String,
}

/// A node certificate just issued (`POST /api/v1/ca/node-certs`): everything a node needs to
/// serve TLS and to verify its peers, except its key, which never left it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NodeCertIssued {
    pub serial: String,
    /// Unix seconds.
    pub not_after: i64,
    /// The node's certificate followed by the issuing CA.
    pub chain_pem: String,
    /// The cluster root (the trust anchor for peers and clients).
    pub root_pem: String,
    /// Every current CRL (issuing CA and root), concatenated PEM.
    pub crl_pem: String,
}

/// One issued certificate as `ca list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CertSummary {
    pub serial: String,
    /// `service` or `node N`.
    pub holder: String,
    pub dns_names: Vec<String>,
    pub ips: Vec<String>,
    pub not_before: i64,
    pub not_after: i64,
    pub issuer_serial: String,
    /// `Some(reason)` once revoked (RFC 5280 reason name in snake case).
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub revoked: Option<String>,
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub revoked_at: Option<i64>,
}

/// The new issuing CA after a renewal (`POST /api/v1/ca/renew-intermediate`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IntermediateSummary {
    pub serial: String,
    pub not_after: i64,
    pub cert_pem: String,
}

/// `GET /api/v1/ca/certs` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CertsEnvelope {
    pub certs: Vec<CertSummary>,
}

/// `POST /api/v1/ca/export-root-key` answer: the only copy of the root key.
#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RootKeyEnvelope {
    pub root_key_pem: String,
}

/// `POST /api/v1/ca/sign` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SignRequest {
    pub csr_pem: String,
    /// Defaults to the configured service lifetime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days: Option<u32>,
}

/// `POST /api/v1/ca/node-certs` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NodeCertRequest {
    pub node_id: u64,
    pub csr_pem: String,
}

/// `POST /api/v1/ca/certs/{serial}/revoke` body (optional as a whole).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    /// An RFC 5280 reason in snake case; `unspecified` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `POST /api/v1/ca/renew-intermediate` body: the operator's offline root key.
#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RenewRequest {
    pub root_key_pem: String,
    /// The admin's own password (step-up); the request must come over HTTPS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_password: Option<String>,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn bodies_round_trip_and_refuse_unknown_fields() {
        let sign = SignRequest {
            csr_pem: "CSR".into(),
            days: None,
        };
        let text = serde_json::to_string(&sign).unwrap();
        assert_eq!(text, r#"{"csr_pem":"CSR"}"#);
        assert_eq!(serde_json::from_str::<SignRequest>(&text).unwrap(), sign);
        assert!(serde_json::from_str::<SignRequest>(r#"{"csr_pem":"x","dayz":1}"#).is_err());
        let revoke: RevokeRequest = serde_json::from_str("{}").unwrap();
        assert_eq!(revoke, RevokeRequest::default());
        assert_eq!(serde_json::to_string(&revoke).unwrap(), "{}");
    }

    #[test]
    fn answers_round_trip() {
        let cert = CertSummary {
            serial: "0a".into(),
            holder: "node 2".into(),
            dns_names: vec!["2.nodes.example.lan".into()],
            ips: vec![],
            not_before: 1,
            not_after: 2,
            issuer_serial: "01".into(),
            revoked: None,
            revoked_at: None,
        };
        let env = CertsEnvelope {
            certs: vec![cert.clone()],
        };
        let text = serde_json::to_string(&env).unwrap();
        assert!(text.contains(r#""revoked":null"#), "{text}");
        assert_eq!(
            serde_json::from_str::<CertsEnvelope>(&text).unwrap().certs,
            vec![cert]
        );
    }
}
