//! HTTPS for clients: the hot-reloadable server certificate, the rustls server
//! configuration, the TLS accept loop that serves the client API router, and the plain-HTTP
//! port (redirects plus the root-certificate trust page).
//!
//! Owns everything between a bound TCP listener and the axum router. Uses only the ring crypto
//! provider. Must never read or hold the CA's signing keys (it only sees this node's own leaf
//! key), never accept a certificate whose key does not match or that has expired, and never
//! let one slow or silent client hold up the accept loop.
//!
//! Layout: `cert_store` (the current certificate, swapped atomically), `server_config`
//! (protocols, ALPN, session resumption), `serve` (accept loop, handshake timeout, graceful
//! shutdown), `plain_http` (the plain port's router) with `trust_page` (its HTML), `error`;
//! `tests` and `plain_tests` run both ports over real sockets.

pub mod cert_store;
pub mod error;
pub mod plain_http;
pub mod serve;
pub mod server_config;
mod trust_page;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod plain_tests;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod test_support;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;

pub use cert_store::CertStore;
pub use error::TlsError;
pub use plain_http::{TrustMaterial, plain_router};
pub use serve::{ServeOptions, serve_https, serve_plain};
pub use server_config::{https_server_config, ring_provider};
