//! The runtime side of the certificate authority: the replicated `CaState` read from Raft,
//! changed with the pure functions of `ca`, and written back by compare-and-swap.
//!
//! Owns the load -> modify -> `CaUpdate { expect }` loop (retried on conflict), the clock reads
//! (`now` is read here and passed down; never inside apply), and the key-encryption key in
//! memory. Signing runs on blocking threads. The periodic maintenance task is in `maintenance`.
//! Must never: write a private key or the KEK into the Raft log or a log line, sign without the
//! KEK, or let two nodes' concurrent updates overwrite each other (the CAS refuses the second).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use cluster::{ApplyError, ClusterError, ClusterNode};

use super::CaServiceError;
use crate::ca::{self, CaError, CaState, IpRange, Kek, RevokeReason};

/// How long a CRL is valid; verifiers treat an expired CRL as "status unknown".
pub const CRL_VALIDITY: Duration = Duration::from_secs(7 * 86_400);
/// Lifetime of a renewed issuing CA.
const INTERMEDIATE_LIFETIME: Duration = ca::authority::INTERMEDIATE_LIFETIME;
/// Attempts of one update under concurrent changes before giving up with `Busy`.
const CAS_ATTEMPTS: u32 = 5;
const WRITE_WAIT: Duration = Duration::from_secs(5);
const SYNC_WAIT: Duration = Duration::from_secs(3);

/// Settings of the CA service, from the node's config.
#[derive(Debug, Clone)]
pub struct CaSettings {
    pub workspace: String,
    pub permitted_ips: Vec<IpRange>,
    pub crl_url: Option<String>,
    pub kek_path: PathBuf,
    pub node_cert_lifetime: Duration,
    pub service_cert_lifetime: Duration,
}

impl CaSettings {
    /// `None` when the config names no workspace: then the node runs without a CA.
    pub fn from_config(config: &crate::config::Config) -> Option<Self> {
        Some(Self {
            workspace: config.workspace.clone()?,
            permitted_ips: config.permitted_ip_ranges(),
            crl_url: config.ca.crl_url.clone(),
            kek_path: config.kek_path(),
            node_cert_lifetime: config.node_cert_lifetime(),
            service_cert_lifetime: config.service_cert_lifetime(),
        })
    }
}

/// The CA as one node runs it.
pub struct CaService {
    pub(super) node: Arc<ClusterNode>,
    /// `Err(why)` on a node without a usable KEK file: it serves the public parts only, and
    /// looks for the file again whenever it is asked to sign (an operator may copy it in
    /// without a restart). A std lock: held only to clone or replace the `Arc`, never across
    /// an await.
    kek: std::sync::RwLock<Result<Arc<Kek>, String>>,
    pub settings: CaSettings,
}

/// What a modification returns besides the new state.
type Modified<T> = (CaState, T);

impl CaService {
    /// A service using `kek` (already loaded, e.g. by `init`).
    pub fn new(node: Arc<ClusterNode>, kek: Option<Kek>, settings: CaSettings) -> Self {
        let kek = kek.map(Arc::new).ok_or_else(|| "not loaded".to_owned());
        Self {
            node,
            kek: std::sync::RwLock::new(kek),
            settings,
        }
    }

    /// A service whose KEK is read from the configured file. A missing or unusable file is
    /// not fatal: the node still serves the root, CRLs and the list, and says why it cannot sign.
    pub fn open(node: Arc<ClusterNode>, settings: CaSettings) -> Self {
        let kek = match Kek::load(&settings.kek_path) {
            Ok(k) => Ok(Arc::new(k)),
            Err(e) => {
                tracing::warn!(path = %settings.kek_path.display(), error = %e, "no usable key-encryption key: this node serves the CA's public parts but cannot sign");
                Err(match e {
                    CaError::KekIo { source, .. } => source.to_string(),
                    other => other.to_string(),
                })
            }
        };
        Self {
            node,
            kek: std::sync::RwLock::new(kek),
            settings,
        }
    }

    fn cached_kek(&self) -> Result<Arc<Kek>, String> {
        match self.kek.read() {
            Ok(k) => k.clone(),
            Err(_) => Err("the KEK lock is poisoned".into()),
        }
    }

    fn store_kek(&self, kek: Arc<Kek>) {
        if let Ok(mut slot) = self.kek.write() {
            *slot = Ok(kek);
        }
    }

    /// The KEK; if this node has none yet, reads the file again. With `create`, writes a new
    /// file when there is none (only for creating a CA on a cluster that has none).
    async fn kek(&self, create: bool) -> Result<Arc<Kek>, CaServiceError> {
        if let Ok(k) = self.cached_kek() {
            return Ok(k);
        }
        let path = self.settings.kek_path.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            if create {
                Kek::load_or_create(&path)
            } else {
                Kek::load(&path)
            }
        })
        .await
        .map_err(|e| CaServiceError::Task(e.to_string()))?;
        match loaded {
            Ok(k) => {
                let k = Arc::new(k);
                tracing::info!(path = %self.settings.kek_path.display(), "key-encryption key loaded");
                self.store_kek(k.clone());
                Ok(k)
            }
            Err(e) => Err(CaServiceError::KekMissing {
                path: self.settings.kek_path.clone(),
                why: match e {
                    CaError::KekIo { source, .. } => source.to_string(),
                    other => other.to_string(),
                },
            }),
        }
    }

    /// The CA state as this node has applied it, with its version.
    pub fn load(&self) -> Result<(u64, CaState), CaServiceError> {
        let (version, blob) = self
            .node
            .ca_state()?
            .ok_or(CaServiceError::NotInitialized)?;
        let state =
            bincode::deserialize(&blob).map_err(|e| CaServiceError::Decode(e.to_string()))?;
        Ok((version, state))
    }

    /// The state, after catching up with the leader (a read-index round), so a read through a
    /// follower sees what another node just wrote. Falls back to local state without a leader.
    pub async fn load_fresh(&self) -> Result<(u64, CaState), CaServiceError> {
        if let Err(e) = self.node.sync_with_leader(SYNC_WAIT).await {
            tracing::debug!(error = %e, "CA read from local state without catching up");
        }
        self.load()
    }

    /// Load, modify on a blocking thread with the KEK and the current time, and propose the
    /// result built on the loaded version; on a conflict (another node changed the CA
    /// meanwhile) start over from the new state.
    pub(super) async fn modify<T, F>(&self, f: F) -> Result<T, CaServiceError>
    where
        T: Send + 'static,
        F: Fn(&CaState, &Kek, SystemTime) -> Result<Modified<T>, CaServiceError>
            + Send
            + Sync
            + 'static,
    {
        let kek = self.kek(false).await?;
        let f = Arc::new(f);
        for _ in 0..CAS_ATTEMPTS {
            let (version, state) = self.load_fresh().await?;
            let (kek, f) = (kek.clone(), f.clone());
            let (next, out) = tokio::task::spawn_blocking(move || {
                f(&state, &kek, SystemTime::now()).and_then(|(next, out)| {
                    let blob = bincode::serialize(&next)
                        .map_err(|e| CaServiceError::Encode(e.to_string()))?;
                    Ok((blob, out))
                })
            })
            .await
            .map_err(|e| CaServiceError::Task(e.to_string()))??;
            match self.node.ca_update(version, next, WRITE_WAIT).await {
                Ok(_) => return Ok(out),
                Err(ClusterError::Rejected(ApplyError::Conflict(_))) => {
                    tracing::debug!(version, "CA state changed meanwhile; retrying the update");
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(CaServiceError::Busy {
            attempts: CAS_ATTEMPTS,
        })
    }

    /// Creates the CA unless the cluster has one. Returns whether it was created, and the root
    /// fingerprint. With `create_kek`, a missing KEK file is created first (an existing
    /// cluster getting its CA through the API; `conclave init` has made the file already).
    pub async fn ensure_initialized(
        &self,
        create_kek: bool,
    ) -> Result<(bool, String), CaServiceError> {
        match self.load_fresh().await {
            Ok((_, state)) => return Ok((false, ca::root_fingerprint(&state)?)),
            Err(CaServiceError::NotInitialized) => {}
            Err(e) => return Err(e),
        }
        let kek = self.kek(create_kek).await?;
        let settings = self.settings.clone();
        let state = tokio::task::spawn_blocking(move || -> Result<CaState, CaServiceError> {
            let now = SystemTime::now();
            let mut params = ca::InitParams::new(&settings.workspace, &settings.permitted_ips);
            params.crl_url = settings.crl_url.clone();
            let mut state = ca::init(&params, &kek, now)?;
            // The issuing CA publishes a (still empty) CRL from the start: verifiers that check
            // revocation need one for every CA in the chain.
            let crls = ca::sign_crls(&state, &kek, now, CRL_VALIDITY)?;
            state.record_crls(crls)?;
            Ok(state)
        })
        .await
        .map_err(|e| CaServiceError::Task(e.to_string()))??;
        let fingerprint = ca::root_fingerprint(&state)?;
        let blob = bincode::serialize(&state).map_err(|e| CaServiceError::Encode(e.to_string()))?;
        match self.node.ca_update(0, blob, WRITE_WAIT).await {
            Ok(_) => Ok((true, fingerprint)),
            // Another node created one at the same moment: theirs stands.
            Err(ClusterError::Rejected(ApplyError::Conflict(_))) => {
                let (_, state) = self.load_fresh().await?;
                Ok((false, ca::root_fingerprint(&state)?))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Signs a CSR from another LAN service and records the certificate.
    pub async fn sign_csr(
        &self,
        csr_pem: String,
        lifetime: Option<Duration>,
    ) -> Result<ca::Issued, CaServiceError> {
        let lifetime = lifetime.unwrap_or(self.settings.service_cert_lifetime);
        self.modify(move |state, kek, now| {
            let issued = ca::sign_csr(state, kek, &csr_pem, lifetime, now)
                .map_err(|e| with_ranges(e, state))?;
            let mut next = state.clone();
            next.record_issued(issued.record.clone())?;
            Ok((next, issued))
        })
        .await
    }

    /// Revokes a certificate and publishes new CRLs in the same update.
    pub async fn revoke(
        &self,
        serial: &str,
        reason: RevokeReason,
    ) -> Result<ca::IssuedCert, CaServiceError> {
        let serial = normalize_serial(serial);
        self.modify(move |state, kek, now| {
            let cert =
                state
                    .issued
                    .get(&serial)
                    .cloned()
                    .ok_or_else(|| CaError::UnknownSerial {
                        serial: serial.clone(),
                    })?;
            let mut next = state.clone();
            next.revoke(&serial, reason, ca::x509::unix(now))?;
            let crls = ca::sign_crls(&next, kek, now, CRL_VALIDITY)?;
            next.record_crls(crls)?;
            Ok((next, cert))
        })
        .await
    }

    /// Issues a node's certificate (names decided by the cluster, key proved by the CSR) with
    /// the configured node lifetime, and records it.
    pub async fn issue_node_cert(
        &self,
        node_id: u64,
        csr_pem: String,
        dns_names: Vec<String>,
        ips: Vec<std::net::IpAddr>,
    ) -> Result<ca::Issued, CaServiceError> {
        let req = ca::NodeCertRequest {
            node_id,
            csr_pem,
            dns_names,
            ips,
            lifetime: self.settings.node_cert_lifetime,
        };
        self.modify(move |state, kek, now| {
            let issued =
                ca::issue_node_cert(state, kek, &req, now).map_err(|e| with_ranges(e, state))?;
            let mut next = state.clone();
            next.record_issued(issued.record.clone())?;
            Ok((next, issued))
        })
        .await
    }

    /// Issues a node certificate for a CSR sent by the node itself (`conclave provision`):
    /// the names it asks for (its addresses, `nodeN.<ws>`, the workspace) are taken from the
    /// CSR's subject alternative names and checked like any other; the identity is added.
    pub async fn issue_node_cert_for_csr(
        &self,
        node_id: u64,
        csr_pem: String,
    ) -> Result<ca::Issued, CaServiceError> {
        let (dns_names, ips) = csr_names(&csr_pem)?;
        self.issue_node_cert(node_id, csr_pem, dns_names, ips).await
    }

    /// Signs this node's own certificate from the locally applied CA state, without a Raft
    /// write: renewal must work even when the cluster has no quorum (every node's certificate
    /// expired while the site was powered off, so no peer accepts anyone). The caller installs
    /// it and then records it with [`CaService::record_issued`] once the cluster can commit.
    pub async fn sign_own_node_cert(
        &self,
        csr_pem: String,
        dns_names: Vec<String>,
        ips: Vec<std::net::IpAddr>,
    ) -> Result<ca::Issued, CaServiceError> {
        let kek = self.kek(false).await?;
        let (_, state) = self.load()?;
        let req = ca::NodeCertRequest {
            node_id: self.node.id(),
            csr_pem,
            dns_names,
            ips,
            lifetime: self.settings.node_cert_lifetime,
        };
        tokio::task::spawn_blocking(move || {
            ca::issue_node_cert(&state, &kek, &req, SystemTime::now())
                .map_err(|e| with_ranges(e, &state))
        })
        .await
        .map_err(|e| CaServiceError::Task(e.to_string()))?
    }

    /// Records a certificate signed outside `modify` (bookkeeping, so `ca list` shows it and
    /// `ca revoke` finds it). Already recorded is success.
    pub async fn record_issued(&self, record: ca::IssuedCert) -> Result<(), CaServiceError> {
        let record = Arc::new(record);
        self.modify(move |state, _kek, _now| {
            let mut next = state.clone();
            if !next.issued.contains_key(&record.serial) {
                next.record_issued((*record).clone())?;
            }
            Ok((next, ()))
        })
        .await
    }

    /// The key-encryption key, for sealing this node's own key file.
    pub async fn sealing_kek(&self) -> Result<Arc<Kek>, CaServiceError> {
        self.kek(false).await
    }

    /// Hands out the root key and removes it from the replicated state (once).
    pub async fn export_root_key(&self) -> Result<ca::SecretPem, CaServiceError> {
        let pem = self
            .modify(|state, kek, _now| {
                let (pem, next) = ca::export_root_key(state, kek)?;
                Ok((next, pem))
            })
            .await?;
        // Older log entries and the last snapshot still hold the *sealed* root key: every
        // node's maintenance task (this one's included) compacts its log within a tick of
        // seeing the root go offline (docs/security.md says what that does and does not erase).
        Ok(pem)
    }

    /// Replaces the issuing CA, signed with the operator's (offline) root key, and publishes
    /// the new CA's CRL.
    pub async fn renew_intermediate(
        &self,
        root_key_pem: String,
    ) -> Result<ca::state::IssuingCa, CaServiceError> {
        if rcgen::KeyPair::from_pem(&root_key_pem).is_err() {
            return Err(CaError::Parse {
                what: "the root key (expected a PEM private key)",
            }
            .into());
        }
        let key = ca::SecretPem::new(root_key_pem);
        let key = Arc::new(key);
        self.modify(move |state, kek, now| {
            let mut next =
                ca::renew_intermediate(state, kek, Some(key.expose()), INTERMEDIATE_LIFETIME, now)?;
            let crls = ca::sign_crls(&next, kek, now, CRL_VALIDITY)?;
            next.record_crls(crls)?;
            let new_ca = next.intermediate.clone();
            Ok((next, new_ca))
        })
        .await
    }
}

/// The DNS names and addresses a CSR asks for (its subject alternative names); anything else in
/// it is ignored.
pub fn csr_names(csr_pem: &str) -> Result<(Vec<String>, Vec<std::net::IpAddr>), CaServiceError> {
    let csr =
        rcgen::CertificateSigningRequestParams::from_pem(csr_pem).map_err(CaError::InvalidCsr)?;
    let mut dns = Vec::new();
    let mut ips = Vec::new();
    for san in &csr.params.subject_alt_names {
        match san {
            rcgen::SanType::DnsName(name) => dns.push(name.as_str().to_owned()),
            rcgen::SanType::IpAddress(ip) => ips.push(*ip),
            // URIs, e-mail addresses and other names have no place in a node certificate.
            _ => {
                return Err(CaError::UnsupportedName {
                    kind: "non-DNS, non-IP",
                }
                .into());
            }
        }
    }
    Ok((dns, ips))
}

/// Serials are shown as lower-case hex; accept `AB:CD` and upper case too.
pub fn normalize_serial(serial: &str) -> String {
    serial.trim().to_ascii_lowercase().replace(':', "")
}

/// An address refusal names the ranges that are permitted, so the operator sees what to use.
fn with_ranges(e: CaError, state: &CaState) -> CaServiceError {
    match e {
        CaError::IpOutsideRanges { addr } => CaServiceError::IpNotPermitted {
            addr,
            ranges: if state.permitted_ips.is_empty() {
                "none: this CA certifies no addresses".into()
            } else {
                state
                    .permitted_ips
                    .iter()
                    .map(|r| format!("{}/{}", r.addr(), r.prefix()))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        },
        other => other.into(),
    }
}
