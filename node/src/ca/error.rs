//! The CA layer's one error type. Owns the classification of everything that can go wrong while
//! creating, sealing, signing or revoking; it must never carry secret material (key bytes, PEM
//! bodies) in a message, because these errors end up in logs and HTTP responses.

use std::net::IpAddr;
use std::path::PathBuf;

/// Errors from the certificate authority and the key-encryption key.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// The workspace name is not a usable DNS zone (it becomes a name constraint).
    #[error("workspace name {name:?} is not a valid DNS name: {why}")]
    InvalidWorkspace { name: String, why: &'static str },

    /// A permitted address range has a prefix longer than its address family allows.
    #[error("address range {addr}/{prefix} is invalid")]
    InvalidIpRange { addr: IpAddr, prefix: u8 },

    /// A requested DNS name is malformed.
    #[error("{name:?} is not a valid DNS name")]
    InvalidDnsName { name: String },

    /// A requested DNS name lies outside the workspace zone the issuing CA is constrained to.
    #[error("{name:?} is outside the workspace zone {zone:?}; this CA only signs names in it")]
    NameOutsideZone { name: String, zone: String },

    /// A requested address lies outside every permitted range.
    #[error("address {addr} is outside the site's permitted address ranges")]
    IpOutsideRanges { addr: IpAddr },

    /// A CSR asked for the workspace name or a node-identity name; only the cluster holds those.
    #[error("{name:?} is reserved for the cluster itself and cannot be requested by a CSR")]
    ReservedName { name: String },

    /// A CSR asked for a name type we do not issue (e-mail, URI, other names).
    #[error(
        "the request contains a {kind} subject alternative name; only DNS names and IP addresses are issued"
    )]
    UnsupportedName { kind: &'static str },

    /// A request named nothing to certify (webpki ignores the CN, so SANs are required).
    #[error("the request names no DNS name or IP address")]
    NoNames,

    /// A requested lifetime is zero or longer than the maximum.
    #[error("certificate lifetime of {secs} s is outside 1 s ..= {max_secs} s")]
    InvalidLifetime { secs: u64, max_secs: u64 },

    /// The CSR could not be parsed or its signature (proof of key possession) did not verify.
    #[error("invalid certificate signing request: {0}")]
    InvalidCsr(#[source] rcgen::Error),

    /// A certificate or key in PEM/DER form could not be parsed.
    #[error("cannot parse {what}")]
    Parse { what: &'static str },

    /// rcgen refused to build or sign something.
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),

    /// A private key does not belong to the certificate it was offered for.
    #[error("the {role} key does not match the {role} certificate")]
    KeyMismatch { role: &'static str },

    /// The operation needs the root key, and it has been taken offline.
    #[error("the root key is offline; supply it for this operation")]
    RootKeyOffline,

    /// The root key is already online, so importing it again makes no sense.
    #[error("the root key is already online")]
    RootKeyOnline,

    /// A sealed key did not open: wrong key-encryption key, tampered blob, or wrong purpose.
    #[error("cannot unseal the {purpose} key: wrong key-encryption key or damaged data")]
    Unseal { purpose: String },

    /// A sealed blob has a format version this build does not know.
    #[error("sealed key has unknown format version {0}")]
    SealVersion(u8),

    /// The system random number generator failed.
    #[error("the system random number generator failed")]
    Random,

    /// The issuing CA has expired (or expires now); renew it before issuing.
    #[error("the issuing CA expired; renew it (this needs the root key)")]
    IssuerExpired,

    /// No certificate with this serial was issued by this CA.
    #[error("no certificate with serial {serial} was issued by this CA")]
    UnknownSerial { serial: String },

    /// The serial is already in the issued list (a duplicate proposal, or a 2^-126 collision).
    #[error("serial {serial} is already recorded")]
    DuplicateSerial { serial: String },

    /// A CRL or state update is older than what the state already holds.
    #[error("stale update: CRL number {got} is not above {have}")]
    StaleCrl { got: u64, have: u64 },

    /// Reading or writing the key-encryption key file failed.
    #[error("key-encryption key file {path}: {source}")]
    KekIo {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The key-encryption key file is malformed.
    #[error("key-encryption key file {path} is malformed: {why}")]
    KekFormat { path: PathBuf, why: &'static str },

    /// A key-encryption key received as text (e.g. in the join exchange) is malformed.
    #[error("malformed key-encryption key: {why}")]
    KekText { why: &'static str },

    /// The key-encryption key file is readable by group or others.
    #[error("key-encryption key file {path} has mode {mode:o}; run `chmod 600` on it")]
    KekPermissions { path: PathBuf, mode: u32 },

    /// Windows: the key-encryption key file's DACL lets a broad group reach it.
    #[error(
        "key-encryption key file {path}: {why}; run `{remedy}`",
        remedy = cluster::storage::owner_acl::AclRefusal::remedy(&.path.display(), false)
    )]
    KekAcl {
        path: PathBuf,
        why: cluster::storage::owner_acl::AclRefusal,
    },
}
