//! The certificate-authority endpoints of [`Client`] (`/api/v1/ca/...`, docs/api.md); the
//! bodies are `api::ca`'s.
//!
//! Public downloads (root, CRL, fingerprint) are sent without a token and always retried. Of the
//! admin writes, `revoke` is idempotent (revoking twice keeps the first entry) and retried;
//! signing, `init`, `export-root-key` and `renew-intermediate` are retried only if never sent.
//! `export-root-key` hands out the only copy of the root key: a caller must have somewhere to
//! put it before calling. Must never log or print a key.

use api::ca::{
    CaFingerprint, CertSummary, CertsEnvelope, IntermediateSummary, RenewRequest, RevokeRequest,
    RootKeyEnvelope, SignRequest, SignedCert,
};
use reqwest::Method;

use super::{Client, decode};
use crate::error::ClientError;
use crate::request::{ApiRequest, Retry};

/// The root certificate's download formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootFormat {
    Pem,
    Der,
    Mobileconfig,
}

impl RootFormat {
    fn file(self) -> &'static str {
        match self {
            RootFormat::Pem => "root.pem",
            RootFormat::Der => "root.crt",
            RootFormat::Mobileconfig => "root.mobileconfig",
        }
    }

    /// The same download on a TLS node's plain-HTTP port, which serves only these (and
    /// redirects the API, `/api/v1/ca/...` included, to HTTPS).
    fn plain_port_file(self) -> &'static str {
        match self {
            RootFormat::Pem => "ca.pem",
            RootFormat::Der => "ca.crt",
            RootFormat::Mobileconfig => "ca.mobileconfig",
        }
    }
}

impl Client {
    /// A public download: no token, retried anywhere.
    async fn public_get(&self, file: &str) -> Result<Vec<u8>, ClientError> {
        let path = ["api", "v1", "ca", file];
        let req = ApiRequest::new(Method::GET, &path, Retry::Always);
        Ok(self.send(&req).await?.body)
    }

    /// The root CA's fingerprint and the issuing CA in use (public).
    pub async fn ca_fingerprint(&self) -> Result<CaFingerprint, ClientError> {
        let path = ["api", "v1", "ca", "fingerprint"];
        let req = ApiRequest::new(Method::GET, &path, Retry::Always);
        decode(&self.send(&req).await?)
    }

    /// The root certificate in one of its formats (public). Through a TLS node's plain-HTTP
    /// port (`http://NODE:8080`) too, before the caller trusts the root: the API redirects to
    /// HTTPS there (a redirect this client does not follow), so the plain port's own download
    /// (`/ca.pem`, ...) is fetched instead. Anything fetched in the clear can have been
    /// tampered with: compare its fingerprint with one obtained out of band.
    pub async fn ca_root(&self, format: RootFormat) -> Result<Vec<u8>, ClientError> {
        match self.public_get(format.file()).await {
            Err(ClientError::Redirected { .. } | ClientError::CertificateNotTrusted { .. })
                if self.current_server().starts_with("http://") =>
            {
                let path = [format.plain_port_file()];
                let req = ApiRequest::new(Method::GET, &path, Retry::Always);
                Ok(self.send(&req).await?.body)
            }
            other => other,
        }
    }

    /// Every current CRL, concatenated PEM (public).
    pub async fn ca_crl_pem(&self) -> Result<String, ClientError> {
        let body = self.public_get("crl.pem").await?;
        String::from_utf8(body).map_err(|_| ClientError::Decode {
            message: "the CRL download is not text".into(),
        })
    }

    /// Creates the CA on a cluster without one (admin; `conclave init` normally does this).
    pub async fn ca_init(&self) -> Result<CaFingerprint, ClientError> {
        let reply = self
            .write::<()>(&["api", "v1", "ca", "init"], Method::POST, None)
            .await?;
        decode(&reply)
    }

    /// Signs a CSR (admin); `days` defaults to the server's `ca.service_cert_days`.
    pub async fn ca_sign(
        &self,
        csr_pem: &str,
        days: Option<u32>,
    ) -> Result<SignedCert, ClientError> {
        let reply = self
            .write(
                &["api", "v1", "ca", "sign"],
                Method::POST,
                Some(&SignRequest {
                    csr_pem: csr_pem.to_owned(),
                    days,
                }),
            )
            .await?;
        decode(&reply)
    }

    /// Every issued certificate not yet expired (admin).
    pub async fn ca_list(&self) -> Result<Vec<CertSummary>, ClientError> {
        let envelope: CertsEnvelope = self.get(&["api", "v1", "ca", "certs"]).await?;
        Ok(envelope.certs)
    }

    /// Revokes a certificate (admin); `reason` is an RFC 5280 name in snake case.
    pub async fn ca_revoke(
        &self,
        serial: &str,
        reason: Option<&str>,
    ) -> Result<CertSummary, ClientError> {
        self.call(
            &["api", "v1", "ca", "certs", serial, "revoke"],
            Method::POST,
            Some(&RevokeRequest {
                reason: reason.map(str::to_owned),
            }),
            Retry::Always,
        )
        .await
    }

    /// Takes the root key out of the cluster and returns it (admin; works once). Step-up:
    /// `current_password` is the admin's own, and the server refuses plain HTTP.
    pub async fn ca_export_root_key(&self, current_password: &str) -> Result<String, ClientError> {
        let body = api::rest::StepUpRequest {
            current_password: current_password.to_owned(),
        };
        let reply = self
            .write(
                &["api", "v1", "ca", "export-root-key"],
                Method::POST,
                Some(&body),
            )
            .await?;
        let envelope: RootKeyEnvelope = decode(&reply)?;
        Ok(envelope.root_key_pem)
    }

    /// Replaces the issuing CA, signed with the offline root key (admin).
    pub async fn ca_renew_intermediate(
        &self,
        root_key_pem: &str,
        current_password: &str,
    ) -> Result<IntermediateSummary, ClientError> {
        let reply = self
            .write(
                &["api", "v1", "ca", "renew-intermediate"],
                Method::POST,
                Some(&RenewRequest {
                    root_key_pem: root_key_pem.to_owned(),
                    current_password: Some(current_password.to_owned()),
                }),
            )
            .await?;
        decode(&reply)
    }
}
