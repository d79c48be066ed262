//! Errors of the TLS layer: loading or replacing the server certificate and building the
//! rustls configuration. Serving never fails as a whole (a bad connection is logged and
//! dropped), so the accept loop has no error type of its own.

use rustls::pki_types::pem;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM block of the certificate chain could not be decoded.
    #[error("the certificate chain PEM is malformed: {source}")]
    ChainPem { source: pem::Error },
    /// The chain PEM holds no `CERTIFICATE` block at all.
    #[error("the certificate chain holds no certificate")]
    EmptyChain,
    /// A certificate of the chain is not valid X.509 DER.
    #[error("certificate {index} of the chain cannot be parsed")]
    CertParse { index: usize },
    /// The private key PEM could not be decoded.
    #[error("the private key PEM is malformed: {source}")]
    KeyPem { source: pem::Error },
    /// The key decoded but the ring provider cannot sign with it.
    #[error("the private key cannot be used: {source}")]
    UnsupportedKey { source: rustls::Error },
    /// The key is not the one the leaf certificate was issued for.
    #[error("the private key does not match the leaf certificate's public key")]
    KeyMismatch,
    /// The leaf certificate's validity ended before now (Unix seconds).
    #[error("the leaf certificate expired at {not_after} (Unix time), now is {now}")]
    Expired { not_after: i64, now: i64 },
    /// rustls refused the server configuration.
    #[error("building the TLS server configuration: {source}")]
    Config { source: rustls::Error },
}
