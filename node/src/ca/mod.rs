//! The built-in certificate authority: a root CA, an online name-constrained issuing CA,
//! node and service certificates, revocation, and the root in the formats devices install.
//!
//! Owns certificate creation and the CA's replicable state; it is a pure library: no sockets, no
//! Raft, no clock reads (callers pass `now`), and disk access only for the key-encryption key file
//! (`keywrap`). It must never hand out a private key except the node's own freshly generated one
//! and the root key on explicit export, and never sign a name outside the workspace zone or the
//! site's address ranges.
//!
//! Layout: `state` (replicated data, deterministic updates), `authority` (signing), `revocation`
//! (CRLs), `names` (constraints and node identity names), `keywrap` (KEK and sealed keys),
//! `trust_formats` (DER and Apple profile), `x509` (parsing helpers), `error`; `tests` and
//! `lifecycle_tests` check it all against `openssl` and rustls/webpki.

pub mod authority;
pub mod error;
pub mod keywrap;
pub mod names;
pub mod revocation;
pub mod state;
pub mod trust_formats;
pub mod x509;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod lifecycle_tests;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod test_support;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;

#[cfg(test)]
pub use authority::{DEFAULT_NODE_CERT_LIFETIME, generate_node_key, import_root_key};
pub use authority::{
    InitParams, Issued, NodeCertRequest, export_root_key, init, issue_node_cert,
    renew_intermediate, root_fingerprint, sign_csr,
};
pub use error::CaError;
pub use keywrap::{Kek, SealedKey, SecretPem};
pub use names::IpRange;
pub use revocation::sign_crls;
pub use state::{CaState, Holder, IssuedCert, RevokeReason};
pub use x509::fingerprint_sha256;
