//! The certificate authority's signing operations: creating the root and issuing CA, issuing
//! node certificates, signing CSRs for other LAN services, taking the root key offline and back,
//! and renewing the issuing CA.
//!
//! Owns certificate *profiles* (what every certificate we sign contains) and the rule that every
//! name is checked against the workspace zone and address ranges before signing. Each function
//! takes the current `CaState` and returns what a Raft proposal would carry (a new record or a
//! new state); none mutates shared state, reads the clock, or touches disk: `now` is a parameter.
//! Must never: sign a name outside the constraints, copy a CSR's extensions into a certificate,
//! or use a key without first checking it belongs to the certificate it signs as (rcgen does not
//! check).
//!
//! Profiles (ECDSA P-256 everywhere, so every browser and phone accepts the chain):
//! - root: CA pathLen 1 (pathLen 0 on a root breaks OpenSSL), keyCertSign + cRLSign, 10 years;
//! - issuing CA: CA pathLen 0, keyCertSign + cRLSign, name constraints (permitted DNS subtree =
//!   the workspace zone, permitted IP subtrees = the site ranges; with no ranges, all addresses
//!   are *excluded*, since an absent IP subtree would leave addresses unconstrained), 2 years;
//! - leaves: not a CA, digitalSignature, random 16-byte serial, AKI, backdated 5 minutes for
//!   clock skew, never outliving their issuer, at most 825 days (Apple's limit for TLS server
//!   certificates, which applies under user-installed roots too). Node certificates carry
//!   serverAuth + clientAuth (they are both ends of mTLS); service certificates only serverAuth,
//!   so a LAN service's certificate can never act as a cluster client.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, CidrSubnet,
    CrlDistributionPoint, DistinguishedName, DnType, ExtendedKeyUsagePurpose, GeneralSubtree, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, NameConstraints, PKCS_ECDSA_P256_SHA256, PublicKeyData,
    SanType,
};
use serde::{Deserialize, Serialize};

use super::error::CaError;
use super::keywrap::{Kek, SecretPem};
use super::names::{self, IpRange};
use super::revocation;
use super::state::{CaState, Holder, IssuedCert, IssuingCa};
use super::x509::{self, cert_info};

const DAY: u64 = 24 * 60 * 60;
pub const ROOT_LIFETIME: Duration = Duration::from_secs(3650 * DAY);
pub const INTERMEDIATE_LIFETIME: Duration = Duration::from_secs(730 * DAY);
/// Node certificates are short-lived and renewed automatically at two thirds of their life.
/// (The node's default comes from `[ca] node_cert_days`; the CA's tests use this one.)
#[cfg(test)]
pub const DEFAULT_NODE_CERT_LIFETIME: Duration = Duration::from_secs(7 * DAY);
pub const MAX_LEAF_LIFETIME: Duration = Duration::from_secs(825 * DAY);
/// Certificates start this far in the past, so a peer whose clock lags a little accepts them.
const BACKDATE: Duration = Duration::from_secs(5 * 60);

/// What `conclave init` needs to create the CA.
#[derive(Clone, Debug)]
pub struct InitParams {
    pub workspace: String,
    pub permitted_ips: Vec<IpRange>,
    pub crl_url: Option<String>,
    pub root_lifetime: Duration,
    pub intermediate_lifetime: Duration,
}

impl InitParams {
    pub fn new(workspace: &str, permitted_ips: &[IpRange]) -> Self {
        Self {
            workspace: workspace.to_owned(),
            permitted_ips: permitted_ips.to_vec(),
            crl_url: None,
            root_lifetime: ROOT_LIFETIME,
            intermediate_lifetime: INTERMEDIATE_LIFETIME,
        }
    }
}

/// A freshly signed certificate: the record to propose, and the chain to hand out.
#[derive(Clone, Debug)]
pub struct Issued {
    pub record: IssuedCert,
    /// Leaf followed by its issuing CA (the root is not included: clients install it).
    pub chain_pem: String,
}

/// A node's fresh key pair: the private key stays on the node; the CSR goes to the cluster.
/// Test-only: nodes make their key and CSR in `node_cert::new_key_and_csr`, with their names.
#[cfg(test)]
pub struct NodeKey {
    pub private_pem: SecretPem,
    pub csr_pem: String,
}

/// Generate a P-256 key and a CSR for it. The CSR only proves possession of the key: the cluster
/// decides the names, so the CSR's subject and extensions are ignored when it is signed.
#[cfg(test)]
pub fn generate_node_key() -> Result<NodeKey, CaError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = common_name("conclave node");
    let csr_pem = params.serialize_request(&key)?.pem()?;
    Ok(NodeKey {
        private_pem: SecretPem::new(key.serialize_pem()),
        csr_pem,
    })
}

/// Create the root and issuing CA for a workspace.
pub fn init(params: &InitParams, kek: &Kek, now: SystemTime) -> Result<CaState, CaError> {
    let workspace = names::validate_workspace(&params.workspace)?;
    let now = x509::unix(now);

    let root_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let (root_serial, root_serial_hex) = x509::random_serial()?;
    let mut root = CertificateParams::default();
    root.distinguished_name = common_name(&format!("Conclave root CA {workspace}"));
    root.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
    root.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    root.serial_number = Some(root_serial);
    root.not_before = x509::datetime(now - BACKDATE.as_secs() as i64)?;
    root.not_after = x509::datetime(x509::plus(now, params.root_lifetime))?;
    let root_cert = root.self_signed(&root_key)?;
    let root_cert_pem = root_cert.pem();
    let root_issuer = Issuer::new(root, root_key);

    let root_key_purpose = root_purpose(&root_serial_hex);
    let root_not_after = cert_info(&root_cert_pem)?.not_after;
    let intermediate = new_intermediate(
        &workspace,
        &params.permitted_ips,
        root_not_after,
        &root_issuer,
        kek,
        params.intermediate_lifetime,
        now,
    )?;
    let root_crl = revocation::sign_root_crl(
        &root_issuer,
        &root_serial_hex,
        1,
        now,
        intermediate.not_after,
    )?;
    let state = CaState {
        workspace,
        permitted_ips: params.permitted_ips.clone(),
        crl_url: params.crl_url.clone(),
        root_key: Some(
            kek.seal(
                SecretPem::new(root_issuer.key().serialize_pem())
                    .expose()
                    .as_bytes(),
                &root_key_purpose,
            )?,
        ),
        root_cert_pem,
        root_serial: root_serial_hex,
        intermediate,
        previous_intermediates: Vec::new(),
        issued: Default::default(),
        revoked: Default::default(),
        crl_number: 0,
        crls: Default::default(),
        root_crl: Some(root_crl),
        root_crl_number: 1,
    };
    Ok(state)
}

/// What a node asks for when it needs a certificate (at join and at every renewal).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeCertRequest {
    pub node_id: u64,
    /// Proves the node holds its key; its requested names and extensions are ignored.
    pub csr_pem: String,
    /// Extra DNS names, e.g. the workspace name and the node's host name; the identity
    /// `N.nodes.<workspace>` is always added first.
    pub dns_names: Vec<String>,
    /// The node's addresses.
    pub ips: Vec<IpAddr>,
    pub lifetime: Duration,
}

/// Issue a node's certificate. The names come from the request as the cluster (not the CSR)
/// decided them, and are checked like any other.
pub fn issue_node_cert(
    state: &CaState,
    kek: &Kek,
    req: &NodeCertRequest,
    now: SystemTime,
) -> Result<Issued, CaError> {
    let NodeCertRequest {
        node_id,
        ref csr_pem,
        ref dns_names,
        ref ips,
        lifetime,
    } = *req;
    let csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(CaError::InvalidCsr)?;
    let identity = names::node_identity_name(node_id, &state.workspace);
    let mut dns = vec![identity.clone()];
    for name in dns_names {
        let name = names::normalize_dns_name(name)?;
        // A node may carry its own identity but never another node's.
        if name != identity && names::in_zone(&name, &names::node_identity_zone(&state.workspace)) {
            return Err(CaError::ReservedName { name });
        }
        if !dns.contains(&name) {
            dns.push(name);
        }
    }
    let ips = dedup(ips);
    names::check_names(&dns, &ips, &state.workspace, &state.permitted_ips)?;
    sign_leaf(
        state,
        kek,
        &csr.public_key,
        LeafSpec {
            holder: Holder::Node(node_id),
            common_name: identity,
            dns,
            ips,
            ekus: vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            lifetime,
        },
        now,
    )
}

/// Sign a CSR from another LAN service. Only its subject alternative names (DNS names and IP
/// addresses) are taken from it, after checking them (inside the zone and ranges, and not the
/// workspace name or a node identity, which belong to the cluster); everything else a CSR may
/// ask for (CA:TRUE, key usages, validity, subject) is overwritten.
pub fn sign_csr(
    state: &CaState,
    kek: &Kek,
    csr_pem: &str,
    lifetime: Duration,
    now: SystemTime,
) -> Result<Issued, CaError> {
    let csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(CaError::InvalidCsr)?;
    let reserved = names::node_identity_zone(&state.workspace);
    let mut dns = Vec::new();
    // The workspace name itself is what clients connect to; a service certificate for it could
    // impersonate the chat cluster. Node identities likewise belong to the cluster alone.
    let mut ips = Vec::new();
    for san in &csr.params.subject_alt_names {
        match san {
            SanType::DnsName(name) => {
                let name = names::normalize_dns_name(name.as_str())?;
                if name == state.workspace || names::in_zone(&name, &reserved) {
                    return Err(CaError::ReservedName { name });
                }
                if !dns.contains(&name) {
                    dns.push(name);
                }
            }
            SanType::IpAddress(ip) => {
                if !ips.contains(ip) {
                    ips.push(*ip);
                }
            }
            SanType::Rfc822Name(_) => return Err(CaError::UnsupportedName { kind: "e-mail" }),
            SanType::URI(_) => return Err(CaError::UnsupportedName { kind: "URI" }),
            _ => return Err(CaError::UnsupportedName { kind: "other" }),
        }
    }
    names::check_names(&dns, &ips, &state.workspace, &state.permitted_ips)?;
    let common_name = match (dns.first(), ips.first()) {
        (Some(name), _) => name.clone(),
        (None, Some(ip)) => ip.to_string(),
        (None, None) => return Err(CaError::NoNames),
    };
    sign_leaf(
        state,
        kek,
        &csr.public_key,
        LeafSpec {
            holder: Holder::Service,
            common_name,
            dns,
            ips,
            ekus: vec![ExtendedKeyUsagePurpose::ServerAuth],
            lifetime,
        },
        now,
    )
}

/// Hand the root key to the operator and return the state without it. The issuing CA keeps
/// working; renewing it later needs the key back (`renew_intermediate` with `Some(pem)`).
pub fn export_root_key(state: &CaState, kek: &Kek) -> Result<(SecretPem, CaState), CaError> {
    let sealed = state.root_key.as_ref().ok_or(CaError::RootKeyOffline)?;
    let pem = kek.open(sealed, &root_purpose(&state.root_serial))?;
    // Prove the key is the root's before telling the operator it is safe to delete ours.
    check_key_matches(
        &state.root_cert_pem,
        &KeyPair::from_pem(pem.expose())?,
        "root",
    )?;
    let mut offline = state.clone();
    offline.root_key = None;
    Ok((pem, offline))
}

/// Put an exported root key back online (sealed under the KEK), after checking it is the root's.
/// Test-only: no route imports a root key; the lifecycle tests use it to show that an exported
/// key still is the root's.
#[cfg(test)]
pub fn import_root_key(state: &CaState, kek: &Kek, root_key_pem: &str) -> Result<CaState, CaError> {
    if state.root_key.is_some() {
        return Err(CaError::RootKeyOnline);
    }
    check_key_matches(
        &state.root_cert_pem,
        &KeyPair::from_pem(root_key_pem)?,
        "root",
    )?;
    let mut online = state.clone();
    online.root_key = Some(kek.seal(root_key_pem.as_bytes(), &root_purpose(&state.root_serial))?);
    Ok(online)
}

/// Replace the issuing CA with a new key and certificate, signed by the root: the online root
/// key, or `offline_root_key_pem` when it has been exported (used for this one operation and not
/// stored). The old issuing CA is kept until it expires, so leaves it signed keep verifying and
/// stay revocable; a new root-signed CRL is produced while the root key is at hand.
pub fn renew_intermediate(
    state: &CaState,
    kek: &Kek,
    offline_root_key_pem: Option<&str>,
    lifetime: Duration,
    now: SystemTime,
) -> Result<CaState, CaError> {
    let now = x509::unix(now);
    let root_issuer = root_issuer(state, kek, offline_root_key_pem)?;
    let mut next = state.clone();
    next.intermediate = new_intermediate(
        &state.workspace,
        &state.permitted_ips,
        cert_info(&state.root_cert_pem)?.not_after,
        &root_issuer,
        kek,
        lifetime,
        now,
    )?;
    next.previous_intermediates.push(state.intermediate.clone());
    next.root_crl_number = state.root_crl_number + 1;
    next.root_crl = Some(revocation::sign_root_crl(
        &root_issuer,
        &state.root_serial,
        next.root_crl_number,
        now,
        next.intermediate.not_after,
    )?);
    Ok(next)
}

/// The SHA-256 fingerprint of the root certificate, as operators compare it.
pub fn root_fingerprint(state: &CaState) -> Result<String, CaError> {
    Ok(x509::fingerprint_sha256(&x509::cert_der(
        &state.root_cert_pem,
    )?))
}

/// The root as an `Issuer`, from the online sealed key or the supplied offline one.
pub(super) fn root_issuer(
    state: &CaState,
    kek: &Kek,
    offline_root_key_pem: Option<&str>,
) -> Result<Issuer<'static, KeyPair>, CaError> {
    let key = match (&state.root_key, offline_root_key_pem) {
        (_, Some(pem)) => KeyPair::from_pem(pem)?,
        (Some(sealed), None) => KeyPair::from_pem(
            kek.open(sealed, &root_purpose(&state.root_serial))?
                .expose(),
        )?,
        (None, None) => return Err(CaError::RootKeyOffline),
    };
    check_key_matches(&state.root_cert_pem, &key, "root")?;
    Ok(Issuer::from_ca_cert_pem(&state.root_cert_pem, key)?)
}

/// The current issuing CA as an `Issuer`.
pub(super) fn intermediate_issuer(
    state: &CaState,
    kek: &Kek,
) -> Result<Issuer<'static, KeyPair>, CaError> {
    issuing_ca_issuer(&state.intermediate, kek)
}

/// An issuing CA (current or retired) as an `Issuer`.
pub(super) fn issuing_ca_issuer(
    ca: &IssuingCa,
    kek: &Kek,
) -> Result<Issuer<'static, KeyPair>, CaError> {
    let pem = kek.open(&ca.key, &intermediate_purpose(&ca.serial))?;
    let key = KeyPair::from_pem(pem.expose())?;
    check_key_matches(&ca.cert_pem, &key, "issuing CA")?;
    Ok(Issuer::from_ca_cert_pem(&ca.cert_pem, key)?)
}

fn new_intermediate(
    workspace: &str,
    permitted_ips: &[IpRange],
    root_not_after: i64,
    root: &Issuer<'_, KeyPair>,
    kek: &Kek,
    lifetime: Duration,
    now: i64,
) -> Result<IssuingCa, CaError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let (serial, serial_hex) = x509::random_serial()?;
    let not_after = x509::plus(now, lifetime).min(root_not_after);
    let mut p = CertificateParams::default();
    // The serial prefix keeps successive issuing CAs apart by name in chain building and in logs.
    p.distinguished_name = common_name(&format!(
        "Conclave issuing CA {} {}",
        workspace,
        &serial_hex[..8]
    ));
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.serial_number = Some(serial);
    p.not_before = x509::datetime(now - BACKDATE.as_secs() as i64)?;
    p.not_after = x509::datetime(not_after)?;
    p.use_authority_key_identifier_extension = true;
    p.name_constraints = Some(name_constraints(workspace, permitted_ips));
    let cert = p.signed_by(&key, root)?;
    Ok(IssuingCa {
        cert_pem: cert.pem(),
        key: kek.seal(
            SecretPem::new(key.serialize_pem()).expose().as_bytes(),
            &intermediate_purpose(&serial_hex),
        )?,
        serial: serial_hex,
        not_after,
    })
}

fn name_constraints(workspace: &str, permitted_ips: &[IpRange]) -> NameConstraints {
    let mut permitted = vec![GeneralSubtree::DnsName(workspace.to_owned())];
    let mut excluded = Vec::new();
    for range in permitted_ips {
        permitted.push(GeneralSubtree::IpAddress(CidrSubnet::from_addr_prefix(
            range.addr(),
            range.prefix(),
        )));
    }
    if permitted_ips.is_empty() {
        excluded.push(GeneralSubtree::IpAddress(CidrSubnet::from_v4_prefix(
            [0; 4], 0,
        )));
        excluded.push(GeneralSubtree::IpAddress(CidrSubnet::from_v6_prefix(
            [0; 16], 0,
        )));
    }
    NameConstraints {
        permitted_subtrees: permitted,
        excluded_subtrees: excluded,
    }
}

struct LeafSpec {
    holder: Holder,
    common_name: String,
    dns: Vec<String>,
    ips: Vec<IpAddr>,
    ekus: Vec<ExtendedKeyUsagePurpose>,
    lifetime: Duration,
}

fn sign_leaf(
    state: &CaState,
    kek: &Kek,
    public_key: &impl PublicKeyData,
    spec: LeafSpec,
    now: SystemTime,
) -> Result<Issued, CaError> {
    if spec.lifetime.is_zero() || spec.lifetime > MAX_LEAF_LIFETIME {
        return Err(CaError::InvalidLifetime {
            secs: spec.lifetime.as_secs(),
            max_secs: MAX_LEAF_LIFETIME.as_secs(),
        });
    }
    if spec.dns.is_empty() && spec.ips.is_empty() {
        return Err(CaError::NoNames);
    }
    let now = x509::unix(now);
    let issuer = intermediate_issuer(state, kek)?;
    let (serial, serial_hex) = x509::random_serial()?;
    let not_before = now - BACKDATE.as_secs() as i64;
    let not_after = x509::plus(now, spec.lifetime).min(state.intermediate.not_after);
    if not_after <= now {
        return Err(CaError::IssuerExpired);
    }

    let mut p = CertificateParams::default();
    p.distinguished_name = common_name(&spec.common_name);
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = spec.ekus;
    p.serial_number = Some(serial);
    p.not_before = x509::datetime(not_before)?;
    p.not_after = x509::datetime(not_after)?;
    p.use_authority_key_identifier_extension = true;
    for name in &spec.dns {
        p.subject_alt_names
            .push(SanType::DnsName(Ia5String::try_from(name.as_str())?));
    }
    for ip in &spec.ips {
        p.subject_alt_names.push(SanType::IpAddress(*ip));
    }
    if let Some(url) = &state.crl_url {
        p.crl_distribution_points = vec![CrlDistributionPoint {
            uris: vec![url.clone()],
        }];
    }
    let cert = p.signed_by(public_key, &issuer)?;
    let cert_pem = cert.pem();
    let record = IssuedCert {
        serial: serial_hex,
        holder: spec.holder,
        dns_names: spec.dns,
        ips: spec.ips,
        not_before,
        not_after,
        issuer_serial: state.intermediate.serial.clone(),
        cert_pem: cert_pem.clone(),
    };
    Ok(Issued {
        chain_pem: format!("{cert_pem}{}", state.intermediate.cert_pem),
        record,
    })
}

/// rcgen's `Issuer::from_ca_cert_pem` trusts that the key belongs to the certificate; a wrong key
/// would sign certificates nobody can verify. Compare the SubjectPublicKeyInfo bytes.
fn check_key_matches(cert_pem: &str, key: &KeyPair, role: &'static str) -> Result<(), CaError> {
    if cert_info(cert_pem)?.spki == key.subject_public_key_info() {
        Ok(())
    } else {
        Err(CaError::KeyMismatch { role })
    }
}

fn common_name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Conclave");
    dn.push(DnType::CommonName, cn);
    dn
}

fn root_purpose(serial: &str) -> String {
    format!("root:{serial}")
}

fn intermediate_purpose(serial: &str) -> String {
    format!("intermediate:{serial}")
}

fn dedup(ips: &[IpAddr]) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::with_capacity(ips.len());
    for ip in ips {
        if !out.contains(ip) {
            out.push(*ip);
        }
    }
    out
}
