//! The CA's replicated state and its deterministic updates.
//!
//! Owns `CaState` and the records it holds (issuing CAs, issued and revoked certificates, signed
//! CRLs). Everything here is plain data (serde, bincode-friendly: no maps with non-string keys,
//! times as Unix seconds) so the next step can store it in the Raft state machine.
//!
//! Signing is randomised (ECDSA nonces, random serials, fresh keys), so it must never run inside
//! the state machine's `apply`: each node would produce different bytes. The split is: one node
//! (the one handling the request) signs, using the functions in `authority` and `revocation`, and
//! proposes the *result*; `apply` then calls the methods here, which only check and record and
//! are identical on every node. These methods must never sign, read a clock, or draw randomness.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::error::CaError;
use super::keywrap::SealedKey;
use super::names::IpRange;

/// Everything the cluster knows about its CA. Private keys appear only sealed under the KEK.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaState {
    /// The workspace DNS zone; also the issuing CA's permitted DNS subtree.
    pub workspace: String,
    /// The site's address ranges; the issuing CA's permitted IP subtrees.
    pub permitted_ips: Vec<IpRange>,
    /// Where leaves say the CRL is published (CRL distribution point), if configured.
    pub crl_url: Option<String>,
    pub root_cert_pem: String,
    /// Lower-case hex serial of the root certificate (part of the root key's sealing purpose).
    pub root_serial: String,
    /// `None` once the operator has taken the root key offline.
    pub root_key: Option<SealedKey>,
    /// The issuing CA in use.
    pub intermediate: IssuingCa,
    /// Earlier issuing CAs, kept (key still sealed) until they expire: chains for the leaves they
    /// signed can still be served, and they keep signing CRLs so those leaves stay revocable.
    /// They never sign new certificates.
    pub previous_intermediates: Vec<IssuingCa>,
    /// Certificates issued and not yet pruned, by lower-case hex serial.
    pub issued: BTreeMap<String, IssuedCert>,
    /// Revoked certificates, by lower-case hex serial.
    pub revoked: BTreeMap<String, RevokedCert>,
    /// Highest CRL number recorded for any issuing CA. One counter for all of them keeps each
    /// issuer's sequence increasing, which is all RFC 5280 asks.
    pub crl_number: u64,
    /// The last CRL of each issuing CA (current and retired), by issuing-CA serial; every node
    /// serves these bytes.
    pub crls: BTreeMap<String, SignedCrl>,
    /// Root-signed CRL over the issuing CAs. webpki checks revocation along the whole chain by
    /// default, so a verifier given only the intermediate's CRL fails every peer with
    /// `UnknownRevocationStatus`; the root signs one whenever its key is at hand (init, renewal)
    /// valid until the current intermediate expires, when the root key is needed anyway.
    pub root_crl: Option<SignedCrl>,
    pub root_crl_number: u64,
}

/// The online issuing CA: certificate and sealed key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuingCa {
    pub cert_pem: String,
    pub serial: String,
    pub not_after: i64,
    pub key: SealedKey,
}

/// Who a certificate was issued to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Holder {
    /// A cluster node; its identity SAN is `names::node_identity_name(id, workspace)`.
    Node(u64),
    /// Another service on the LAN, from a CSR.
    Service,
}

/// One issued certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedCert {
    pub serial: String,
    pub holder: Holder,
    pub dns_names: Vec<String>,
    pub ips: Vec<IpAddr>,
    pub not_before: i64,
    pub not_after: i64,
    /// Serial of the issuing CA that signed it (selects the chain to serve).
    pub issuer_serial: String,
    pub cert_pem: String,
}

/// Why a certificate was revoked (RFC 5280 reason codes we support; no certificateHold, since
/// we have no "unhold").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RevokeReason {
    Unspecified,
    KeyCompromise,
    CaCompromise,
    AffiliationChanged,
    Superseded,
    CessationOfOperation,
    PrivilegeWithdrawn,
}

impl RevokeReason {
    pub(crate) fn to_rcgen(self) -> rcgen::RevocationReason {
        use rcgen::RevocationReason as R;
        match self {
            Self::Unspecified => R::Unspecified,
            Self::KeyCompromise => R::KeyCompromise,
            Self::CaCompromise => R::CaCompromise,
            Self::AffiliationChanged => R::AffiliationChanged,
            Self::Superseded => R::Superseded,
            Self::CessationOfOperation => R::CessationOfOperation,
            Self::PrivilegeWithdrawn => R::PrivilegeWithdrawn,
        }
    }
}

/// A revocation entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokedCert {
    pub serial: String,
    pub reason: RevokeReason,
    pub revoked_at: i64,
    /// Kept so the entry can be dropped from the CRL once the certificate has expired anyway.
    pub not_after: i64,
}

/// A signed CRL as published.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedCrl {
    /// Serial of the CA certificate whose key signed it (an issuing CA, or the root).
    pub issuer_serial: String,
    pub number: u64,
    pub this_update: i64,
    pub next_update: i64,
    pub der: Vec<u8>,
}

impl SignedCrl {
    pub fn pem(&self) -> String {
        super::x509::to_pem("X509 CRL", &self.der)
    }
}

impl CaState {
    /// Record a certificate signed by `authority::issue_*` (the apply half of issuing).
    pub fn record_issued(&mut self, cert: IssuedCert) -> Result<(), CaError> {
        if self.issued.contains_key(&cert.serial) || self.revoked.contains_key(&cert.serial) {
            return Err(CaError::DuplicateSerial {
                serial: cert.serial,
            });
        }
        self.issued.insert(cert.serial.clone(), cert);
        Ok(())
    }

    /// Mark an issued certificate revoked. Deterministic: `now` comes from the proposal.
    /// Revoking twice keeps the first entry (idempotent under a retried proposal).
    pub fn revoke(&mut self, serial: &str, reason: RevokeReason, now: i64) -> Result<(), CaError> {
        let serial = serial.to_ascii_lowercase().replace(':', "");
        if self.revoked.contains_key(&serial) {
            return Ok(());
        }
        let cert = self
            .issued
            .get(&serial)
            .ok_or_else(|| CaError::UnknownSerial {
                serial: serial.clone(),
            })?;
        self.revoked.insert(
            serial.clone(),
            RevokedCert {
                serial,
                reason,
                revoked_at: now,
                not_after: cert.not_after,
            },
        );
        Ok(())
    }

    /// Whether a serial is revoked.
    pub fn is_revoked(&self, serial: &str) -> bool {
        self.revoked.contains_key(serial)
    }

    /// Record the CRLs signed by `revocation::sign_crls`; refuses a set with any number not above
    /// the last recorded one (a stale or replayed proposal), and changes nothing then.
    pub fn record_crls(&mut self, crls: Vec<SignedCrl>) -> Result<(), CaError> {
        for crl in &crls {
            if crl.number <= self.crl_number {
                return Err(CaError::StaleCrl {
                    got: crl.number,
                    have: self.crl_number,
                });
            }
        }
        for crl in crls {
            self.crl_number = self.crl_number.max(crl.number);
            self.crls.insert(crl.issuer_serial.clone(), crl);
        }
        Ok(())
    }

    /// Every CRL a verifier of this CA's chains needs: the issuing CAs' and the root's.
    pub fn verifier_crls(&self) -> Vec<&SignedCrl> {
        self.crls.values().chain(self.root_crl.as_ref()).collect()
    }

    /// Drop records of certificates that expired before `now` (short-lived node certificates
    /// would otherwise grow the state forever), including their CRL entries: RFC 5280 lets a CA
    /// leave expired certificates off its CRL. Also drops expired retired issuing CAs and their
    /// CRLs.
    pub fn prune_expired(&mut self, now: i64) {
        self.issued.retain(|_, c| c.not_after >= now);
        self.revoked.retain(|_, r| r.not_after >= now);
        self.previous_intermediates.retain(|c| c.not_after >= now);
        let live: Vec<&str> = std::iter::once(self.intermediate.serial.as_str())
            .chain(
                self.previous_intermediates
                    .iter()
                    .map(|c| c.serial.as_str()),
            )
            .collect();
        self.crls
            .retain(|issuer, _| live.contains(&issuer.as_str()));
    }

    /// The issuing CA certificate (current or retired) with this serial.
    #[cfg(test)]
    pub fn issuer_cert_pem(&self, serial: &str) -> Option<&str> {
        if self.intermediate.serial == serial {
            return Some(&self.intermediate.cert_pem);
        }
        self.previous_intermediates
            .iter()
            .find(|c| c.serial == serial)
            .map(|c| c.cert_pem.as_str())
    }

    /// Leaf plus its issuing CA, the chain a server presents (the root is installed by users).
    /// Test-only: issuance returns the chain itself (`Issued::chain_pem`).
    #[cfg(test)]
    pub fn chain_pem(&self, cert: &IssuedCert) -> Option<String> {
        let issuer = self.issuer_cert_pem(&cert.issuer_serial)?;
        Some(format!("{}{}", cert.cert_pem, issuer))
    }
}
