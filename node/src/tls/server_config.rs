//! The rustls configuration of the client-facing HTTPS port: which protocol versions, which
//! application protocols, where the certificate comes from, and how sessions resume.
//!
//! Owns those choices and nothing else. Must never enable client authentication here (clients
//! log in with passwords; node-to-node mTLS is configured in `cluster`), 0-RTT early data
//! (replayable), or a crypto provider other than ring.

use std::sync::Arc;

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::ServerSessionMemoryCache;

use super::cert_store::CertStore;
use super::error::TlsError;

/// ALPN protocol ids, most preferred first. rustls leaves the list empty by default, and an
/// empty list silently means HTTP/1.1 only.
pub const ALPN_H2: &[u8] = b"h2";
pub const ALPN_HTTP11: &[u8] = b"http/1.1";

/// Server-side session-id cache entries (TLS 1.2 clients that do not take tickets). An entry is
/// a few hundred bytes; this covers a site's devices reconnecting after a network blip.
const SESSION_CACHE_ENTRIES: usize = 4096;

/// The one crypto provider of the whole process.
pub fn ring_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The HTTPS server configuration: TLS 1.2 and 1.3 with rustls's default cipher suites, no
/// client certificates, ALPN `h2` then `http/1.1`, the certificate from `certs` (so replacing
/// it there takes effect on the next full handshake), and session resumption.
pub fn https_server_config(
    provider: Arc<CryptoProvider>,
    certs: Arc<CertStore>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Config { source })?
        .with_no_client_auth()
        .with_cert_resolver(certs);
    config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()];
    // Resumption skips the certificate and the signature, which is most of a handshake's cost
    // for phones that reconnect often. TLS 1.3 and ticket-capable TLS 1.2 clients get
    // stateless tickets (keys rotate every 6 hours inside rustls); other TLS 1.2 clients
    // resume by session id from the bounded cache.
    config.ticketer =
        rustls::crypto::ring::Ticketer::new().map_err(|source| TlsError::Config { source })?;
    config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE_ENTRIES);
    // `max_early_data_size` stays 0: 0-RTT data can be replayed, and a replayed POST is a
    // duplicate write.
    Ok(Arc::new(config))
}
