//! CRL signing. Owns turning the revoked list into signed CRLs: the issuing CA's CRL over leaves,
//! and the root's CRL over issuing CAs.
//!
//! Strategy: CRLs are signed by one node and *recorded* in `CaState` through Raft
//! (`CaState::record_crls`), so every node serves the same bytes and the CRL number only grows.
//! The root-signed CRL is produced whenever the root key is at hand (init and issuing-CA renewal)
//! and is valid until the current issuing CA expires; webpki checks revocation along the whole
//! chain and fails with `UnknownRevocationStatus` without it, and OpenSSL's `-crl_check_all` the
//! same. Must never sign with a key it has not checked against its certificate (the `*_issuer`
//! helpers do that), and must never list a serial this CA did not issue.

use std::time::{Duration, SystemTime};

use rcgen::{CertificateRevocationListParams, Issuer, KeyIdMethod, KeyPair, RevokedCertParams};

use super::authority;
use super::error::CaError;
use super::keywrap::Kek;
use super::state::{CaState, SignedCrl};
use super::x509;

/// Sign the next CRL of every issuing CA that has not expired (the current one and retired ones
/// whose leaves may still be in use), numbered from `state.crl_number + 1`, each listing the
/// revoked leaves that CA issued. Propose the result; `CaState::record_crls` applies it.
pub fn sign_crls(
    state: &CaState,
    kek: &Kek,
    now: SystemTime,
    valid_for: Duration,
) -> Result<Vec<SignedCrl>, CaError> {
    let now = x509::unix(now);
    let next_update = x509::plus(now, valid_for);
    let cas = std::iter::once(&state.intermediate)
        .chain(&state.previous_intermediates)
        .filter(|ca| ca.not_after >= now);
    let mut number = state.crl_number;
    let mut out = Vec::new();
    for ca in cas {
        let issuer = authority::issuing_ca_issuer(ca, kek)?;
        let mut revoked = Vec::new();
        for entry in state.revoked.values() {
            let signed_by_ca = state
                .issued
                .get(&entry.serial)
                .is_some_and(|c| c.issuer_serial == ca.serial);
            if signed_by_ca {
                revoked.push(RevokedCertParams {
                    serial_number: x509::serial_from_hex(&entry.serial)?,
                    revocation_time: x509::datetime(entry.revoked_at)?,
                    reason_code: Some(entry.reason.to_rcgen()),
                    invalidity_date: None,
                });
            }
        }
        number += 1;
        out.push(sign(
            &issuer,
            &ca.serial,
            number,
            now,
            next_update,
            revoked,
        )?);
    }
    Ok(out)
}

/// Sign the root's CRL over issuing CAs (none are revoked yet: renewal retires an issuing CA by
/// letting it expire, so old leaves keep verifying).
pub(super) fn sign_root_crl(
    root: &Issuer<'_, KeyPair>,
    root_serial: &str,
    number: u64,
    now: i64,
    next_update: i64,
) -> Result<SignedCrl, CaError> {
    sign(root, root_serial, number, now, next_update, Vec::new())
}

fn sign(
    issuer: &Issuer<'_, KeyPair>,
    issuer_serial: &str,
    number: u64,
    this_update: i64,
    next_update: i64,
    revoked_certs: Vec<RevokedCertParams>,
) -> Result<SignedCrl, CaError> {
    let params = CertificateRevocationListParams {
        this_update: x509::datetime(this_update)?,
        next_update: x509::datetime(next_update)?,
        crl_number: rcgen::SerialNumber::from_slice(&number.to_be_bytes()),
        issuing_distribution_point: None,
        revoked_certs,
        // Must derive the same identifier as the issuer certificate's SKI (rcgen's default).
        key_identifier_method: KeyIdMethod::Sha256,
    };
    let crl = params.signed_by(issuer)?;
    Ok(SignedCrl {
        issuer_serial: issuer_serial.to_owned(),
        number,
        this_update,
        next_update,
        der: crl.der().to_vec(),
    })
}
