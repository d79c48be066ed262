//! The HTTPS server certificate, replaceable while the server runs: a rustls
//! `ResolvesServerCert` that hands every new full handshake the current chain and key.
//!
//! Owns the node's current leaf certificate, its chain and its private key (in rustls's signing
//! form). Must never install a chain whose key does not match its leaf, that does not parse, or
//! that has expired: `replace` checks all three and leaves the old certificate in place when any
//! check fails, so a bad renewal can never take HTTPS down.
//!
//! Hot reload applies to new full handshakes only: connections already open keep the
//! certificate they were established with, and resumed sessions (tickets, session ids) do not
//! present a certificate at all. That is what lets renewal happen without dropping anyone.

use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{Error as RustlsError, InconsistentKeys};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::error::TlsError;

/// What the renewal loop needs to know about the certificate being served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeafInfo {
    /// Lower-case hex of the serial's content octets (the CA state's spelling).
    pub serial: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl LeafInfo {
    /// When to renew: two thirds into the certificate's life, so a renewal that fails has a
    /// third of the lifetime left for retries. Test-only: the renewal task uses
    /// `node_cert::renew_at`, which also caps the life at the configured lifetime.
    #[cfg(test)]
    pub fn renew_after(&self) -> SystemTime {
        let life = self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or(Duration::ZERO);
        self.not_before + life.mul_f64(2.0 / 3.0)
    }
}

/// A chain and key that passed the checks, with the facts read from the leaf.
struct Loaded {
    key: Arc<CertifiedKey>,
    info: LeafInfo,
}

/// The hot-reloadable server certificate. Share it as `Arc<CertStore>` between the rustls
/// configuration (as its resolver) and whoever renews the certificate.
pub struct CertStore {
    provider: Arc<CryptoProvider>,
    // A std lock, not tokio's: it is held only to clone or swap an `Arc`, never across an
    // `.await`, and `resolve` is called synchronously from inside the TLS handshake.
    current: RwLock<Arc<Loaded>>,
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertStore")
            .field("leaf", &self.leaf())
            .finish_non_exhaustive()
    }
}

impl CertStore {
    /// Loads a PEM chain (leaf first, then the issuing CA) and the leaf's PEM private key
    /// (PKCS#8 or SEC1), checked against the current time. Test-only: a node loads its
    /// certificate with [`CertStore::new_at`].
    #[cfg(test)]
    pub fn new(
        provider: Arc<CryptoProvider>,
        chain_pem: &str,
        key_pem: &str,
    ) -> Result<Self, TlsError> {
        Self::new_at(provider, chain_pem, key_pem, SystemTime::now())
    }

    /// Loads a PEM chain (leaf first, then the issuing CA) and the leaf's PEM private key
    /// (PKCS#8 or SEC1), checked against `now`.
    pub fn new_at(
        provider: Arc<CryptoProvider>,
        chain_pem: &str,
        key_pem: &str,
        now: SystemTime,
    ) -> Result<Self, TlsError> {
        let loaded = load(&provider, chain_pem, key_pem, now)?;
        Ok(Self {
            provider,
            current: RwLock::new(Arc::new(loaded)),
        })
    }

    /// Replaces the certificate for new handshakes once the new chain and key pass the checks;
    /// on any error the current certificate stays. Returns the new leaf's facts.
    pub fn replace(&self, chain_pem: &str, key_pem: &str) -> Result<LeafInfo, TlsError> {
        self.replace_at(chain_pem, key_pem, SystemTime::now())
    }

    /// [`CertStore::replace`] checked against `now`.
    pub fn replace_at(
        &self,
        chain_pem: &str,
        key_pem: &str,
        now: SystemTime,
    ) -> Result<LeafInfo, TlsError> {
        // All parsing and checking happens before the lock is taken.
        let loaded = Arc::new(load(&self.provider, chain_pem, key_pem, now)?);
        let info = loaded.info.clone();
        let previous = std::mem::replace(&mut *self.write(), loaded);
        tracing::info!(
            old_serial = %previous.info.serial,
            new_serial = %info.serial,
            not_after = crate::ca::x509::unix(info.not_after),
            "HTTPS certificate replaced; new handshakes use it"
        );
        Ok(info)
    }

    /// The facts of the certificate new handshakes get.
    pub fn leaf(&self) -> LeafInfo {
        self.read().info.clone()
    }

    /// The current leaf's serial (lower-case hex).
    pub fn serial(&self) -> String {
        self.read().info.serial.clone()
    }

    fn read(&self) -> Arc<Loaded> {
        // A panic while holding the lock cannot leave a half-written value (the guarded value is
        // one `Arc`), so a poisoned lock is still safe to use.
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Arc<Loaded>> {
        self.current.write().unwrap_or_else(PoisonError::into_inner)
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.read().key.clone())
    }
}

fn load(
    provider: &CryptoProvider,
    chain_pem: &str,
    key_pem: &str,
    now: SystemTime,
) -> Result<Loaded, TlsError> {
    let chain = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::ChainPem { source })?;
    let Some(leaf_der) = chain.first() else {
        return Err(TlsError::EmptyChain);
    };
    for (index, cert) in chain.iter().enumerate() {
        X509Certificate::from_der(cert.as_ref()).map_err(|_| TlsError::CertParse { index })?;
    }
    let info = leaf_info(leaf_der)?;
    let now_unix = crate::ca::x509::unix(now);
    let not_after = crate::ca::x509::unix(info.not_after);
    if not_after <= now_unix {
        return Err(TlsError::Expired {
            not_after,
            now: now_unix,
        });
    }
    let key_der = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|source| TlsError::KeyPem { source })?;
    let signing_key = provider
        .key_provider
        .load_private_key(key_der)
        .map_err(|source| TlsError::UnsupportedKey { source })?;
    let key = CertifiedKey::new(chain, signing_key);
    // Unlike `CertifiedKey::from_der`, an undecidable comparison is a refusal: serving a key
    // that may not match the certificate would fail every handshake.
    match key.keys_match() {
        Ok(()) => {}
        Err(RustlsError::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
            return Err(TlsError::KeyMismatch);
        }
        Err(source) => return Err(TlsError::UnsupportedKey { source }),
    }
    Ok(Loaded {
        key: Arc::new(key),
        info,
    })
}

fn leaf_info(der: &CertificateDer<'_>) -> Result<LeafInfo, TlsError> {
    let (_, cert) =
        X509Certificate::from_der(der.as_ref()).map_err(|_| TlsError::CertParse { index: 0 })?;
    let validity = cert.validity();
    Ok(LeafInfo {
        serial: hex::encode(cert.raw_serial()),
        not_before: system_time(validity.not_before.timestamp()),
        not_after: system_time(validity.not_after.timestamp()),
    })
}

/// Unix seconds to `SystemTime`; times before 1970 (which no certificate of ours carries)
/// clamp to the epoch.
fn system_time(unix: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(u64::try_from(unix).unwrap_or(0))
}
