//! The node's own TLS identity: its key and certificate in `<data_dir>/tls/`, how they get
//! there (`conclave init` on the first node, `conclave provision` or `conclave join` on the
//! others) and how they are loaded at startup. The `cert-renewal` task that renews them at two
//! thirds of their life and pushes new certificates and CRLs into the HTTPS and cluster ports
//! is in `renewal`.
//!
//! Files: `node-key.sealed` (the node's ECDSA key sealed with the KEK, purpose
//! `conclave-node-key:<id>`, mode 0600), `node-chain.pem` (leaf + issuing CA), `ca.pem` (the
//! cluster root), `crl.pem` (the CRLs of the root and the issuing CA: the cluster port needs
//! them before the node's replicated state is open). Every write is atomic (temp file, fsync,
//! rename, directory fsync), and so is the switch to a new key and chain as a pair: the new key
//! is first written as `node-key.next.sealed`, then the chain (the switch), then the key is
//! renamed into place; a start that finds `node-key.next.sealed` finishes the switch when it
//! belongs to the chain and drops it otherwise, so a power cut at any point leaves a key that
//! matches its chain.
//!
//! Must never: write the node's private key in the clear, send it over the network (only the
//! CSR leaves the machine), or log it.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use cluster::PeerTlsMaterial;
use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256, PublicKeyData, SanType};

use crate::ca::{self, CaError, Kek, SealedKey, SecretPem};
use crate::ca_runtime::{CaService, CaServiceError};
use crate::config::Config;

mod renewal;

pub use renewal::{Renewal, renew_at, spawn_renewal};

pub const TLS_DIR: &str = "tls";
pub const KEY_FILE: &str = "node-key.sealed";
/// The new key of a switch in progress (module doc).
pub const NEXT_KEY_FILE: &str = "node-key.next.sealed";
pub const CHAIN_FILE: &str = "node-chain.pem";
pub const ROOT_FILE: &str = "ca.pem";
pub const CRL_FILE: &str = "crl.pem";

/// Errors of the node-certificate layer.
#[derive(Debug, thiserror::Error)]
pub enum NodeCertError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// TLS is on but the files are not there yet.
    #[error(
        "TLS is on ([tls] in the config) but {dir} holds no node certificate; run `conclave provision --config CONFIG --seed https://NODE:PORT --ca-file ROOT.pem` (admin credentials) or `conclave join` (a join token) on this machine first"
    )]
    Missing { dir: PathBuf },
    #[error("{path}: {why}")]
    Invalid { path: PathBuf, why: String },
    #[error(transparent)]
    Ca(#[from] CaError),
    #[error(transparent)]
    Service(#[from] CaServiceError),
    /// Talking to the seed node failed (`conclave provision`).
    #[error("{0}")]
    Provision(String),
    #[error(transparent)]
    PeerTls(#[from] cluster::PeerTlsError),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// The data directory cannot be created owner-only, or others can reach it.
    #[error(transparent)]
    DataDir(#[from] cluster::storage::private_dir::PrivateDirError),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> NodeCertError + '_ {
    move |source| NodeCertError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The node's TLS material, as read from or written to `<data_dir>/tls/`.
pub struct NodeFiles {
    pub key_pem: SecretPem,
    pub chain_pem: String,
    pub root_pem: String,
    pub crl_pem: String,
}

// By hand: `SecretPem` is deliberately not `Clone` (each copy wipes itself on drop); the renewal
// task needs a copy for the write task and one in memory.
impl Clone for NodeFiles {
    fn clone(&self) -> Self {
        Self {
            key_pem: SecretPem::new(self.key_pem.expose().to_owned()),
            chain_pem: self.chain_pem.clone(),
            root_pem: self.root_pem.clone(),
            crl_pem: self.crl_pem.clone(),
        }
    }
}

impl std::fmt::Debug for NodeFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeFiles").finish_non_exhaustive()
    }
}

impl NodeFiles {
    /// The cluster port's material.
    pub fn peer_material(&self, workspace: &str) -> PeerTlsMaterial {
        PeerTlsMaterial {
            roots_pem: self.root_pem.clone(),
            chain_pem: self.chain_pem.clone(),
            key_pem: self.key_pem.expose().to_owned(),
            crls_pem: self.crl_pem.clone(),
            workspace: workspace.to_owned(),
        }
    }
}

pub fn tls_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(TLS_DIR)
}

/// The sealing purpose binds the sealed key to this node: another node's file does not open.
pub fn key_purpose(node_id: u64) -> String {
    format!("conclave-node-key:{node_id}")
}

/// Writes `bytes` to `path` atomically and durably with `mode` (Unix). On Windows a mode without
/// group/other bits (the sealed key's 0600) becomes the owner-only DACL; other files inherit
/// the data directory's, which is owner-only too.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), NodeCertError> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(mode);
    }
    let open = || -> std::io::Result<std::fs::File> {
        #[cfg(windows)]
        if mode & 0o077 == 0 {
            // CreateFileW ignores the security descriptor when it reopens an existing file, so
            // a temp file left by a crash goes first.
            match std::fs::remove_file(&tmp) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            return cluster::storage::owner_acl::create_file_private(&tmp);
        }
        opts.open(&tmp)
    };
    let result = (|| {
        let mut f = open()?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        cluster::storage::fsutil::rename_durable(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io_err(path))
}

/// Writes the node's files (key sealed with `kek`). Used by `init`, `provision`, `join` and the
/// renewal task. The key goes last: a reader that finds a key finds the chain it belongs to or
/// the previous one, and the previous key is kept in memory until the swap succeeded.
pub fn write_node_files(
    data_dir: &Path,
    node_id: u64,
    kek: &Kek,
    files: &NodeFiles,
) -> Result<(), NodeCertError> {
    // `provision` and `join` write here before the node ever started: the data directory is
    // created owner-only (0700) now, as `ClusterNode::start` would, and refused if shared.
    cluster::storage::private_dir::ensure_private_dir(data_dir)?;
    let dir = tls_dir(data_dir);
    // The `tls` entry itself must survive a power cut, not only the files inside it.
    cluster::storage::fsutil::create_dir_all_durable(&dir, &mut std::fs::DirBuilder::new())
        .map_err(io_err(&dir))?;
    let sealed = kek.seal(files.key_pem.expose().as_bytes(), &key_purpose(node_id))?;
    let sealed = bincode::serialize(&sealed).map_err(|e| NodeCertError::Invalid {
        path: dir.join(KEY_FILE),
        why: format!("encoding the sealed key: {e}"),
    })?;
    write_atomic(&dir.join(ROOT_FILE), files.root_pem.as_bytes(), 0o644)?;
    write_atomic(&dir.join(CRL_FILE), files.crl_pem.as_bytes(), 0o644)?;
    // Key and chain switch as a pair (module doc): next key, chain, key into place.
    let next = dir.join(NEXT_KEY_FILE);
    write_atomic(&next, &sealed, 0o600)?;
    write_atomic(&dir.join(CHAIN_FILE), files.chain_pem.as_bytes(), 0o644)?;
    finish_key_switch(&dir)
}

/// The last step of a key switch: the next key becomes the key, durably.
fn finish_key_switch(dir: &Path) -> Result<(), NodeCertError> {
    let key_path = dir.join(KEY_FILE);
    cluster::storage::fsutil::rename_durable(&dir.join(NEXT_KEY_FILE), &key_path)
        .map_err(io_err(&key_path))
}

/// Reads and opens a sealed key file.
fn open_key_file(path: &Path, node_id: u64, kek: &Kek) -> Result<SecretPem, NodeCertError> {
    let sealed = std::fs::read(path).map_err(io_err(path))?;
    let sealed: SealedKey = bincode::deserialize(&sealed).map_err(|e| NodeCertError::Invalid {
        path: path.to_path_buf(),
        why: format!("not a sealed key file: {e}"),
    })?;
    kek.open(&sealed, &key_purpose(node_id))
        .map_err(|e| NodeCertError::Invalid {
            path: path.to_path_buf(),
            why: format!("{e} (wrong KEK, or the file belongs to another node id than {node_id})"),
        })
}

/// Whether `key_pem` is the key of the first certificate (the leaf) in `chain_pem`.
fn key_matches_chain(key_pem: &SecretPem, chain_pem: &str) -> bool {
    let Ok(key) = KeyPair::from_pem(key_pem.expose()) else {
        return false;
    };
    ca::x509::cert_info(chain_pem).is_ok_and(|leaf| leaf.spki == key.subject_public_key_info())
}

/// A key switch a power cut interrupted (module doc): finished when the next key belongs to
/// the chain (the chain was switched), dropped otherwise (it was not).
fn recover_key_switch(
    dir: &Path,
    node_id: u64,
    kek: &Kek,
    chain_pem: &str,
) -> Result<(), NodeCertError> {
    let next = dir.join(NEXT_KEY_FILE);
    if !next.exists() {
        return Ok(());
    }
    let belongs =
        open_key_file(&next, node_id, kek).is_ok_and(|k| key_matches_chain(&k, chain_pem));
    if belongs {
        tracing::warn!(node_id, path = %next.display(), "finishing a node key switch a crash interrupted (the chain was already switched)");
        finish_key_switch(dir)
    } else {
        tracing::warn!(node_id, path = %next.display(), "dropping the new key of a node key switch a crash interrupted (the chain was not switched yet)");
        std::fs::remove_file(&next)
            .and_then(|()| cluster::storage::fsutil::sync_dir(dir))
            .map_err(io_err(&next))
    }
}

/// Writes only the CRL file (the renewal task, after a revocation).
pub(super) fn write_crl_file(data_dir: &Path, crl_pem: &str) -> Result<(), NodeCertError> {
    write_atomic(&tls_dir(data_dir).join(CRL_FILE), crl_pem.as_bytes(), 0o644)
}

/// Loads the node's files; `Missing` when there is no key or chain yet.
pub fn load_node_files(
    data_dir: &Path,
    node_id: u64,
    kek: &Kek,
) -> Result<NodeFiles, NodeCertError> {
    let dir = tls_dir(data_dir);
    let key_path = dir.join(KEY_FILE);
    let chain_path = dir.join(CHAIN_FILE);
    if !chain_path.exists() {
        return Err(NodeCertError::Missing { dir });
    }
    let read = |p: &Path| std::fs::read_to_string(p).map_err(io_err(p));
    let chain_pem = read(&chain_path)?;
    // Before looking for the key: a first write cut short may have left only the next key.
    recover_key_switch(&dir, node_id, kek, &chain_pem)?;
    if !key_path.exists() {
        return Err(NodeCertError::Missing { dir });
    }
    let key_pem = open_key_file(&key_path, node_id, kek)?;
    if !key_matches_chain(&key_pem, &chain_pem) {
        return Err(NodeCertError::Invalid {
            path: key_path,
            why: format!(
                "the key does not belong to the certificate in {}; provision this node again",
                chain_path.display()
            ),
        });
    }
    Ok(NodeFiles {
        key_pem,
        chain_pem,
        root_pem: read(&dir.join(ROOT_FILE))?,
        crl_pem: read(&dir.join(CRL_FILE))?,
    })
}

/// The names node `config.node_id` asks for: the workspace, `node<N>.<workspace>`, and every
/// IP address it listens on or advertises (peers dial the cluster address by IP and check it
/// against the certificate, clients may type an address). Host names it advertises are
/// included when they lie inside the workspace zone (the CA refuses others).
pub fn requested_names(config: &Config) -> (Vec<String>, Vec<IpAddr>) {
    let Some(ws) = config.workspace.as_deref().map(str::to_ascii_lowercase) else {
        return (Vec::new(), Vec::new());
    };
    let mut dns = vec![ws.clone(), format!("node{}.{ws}", config.node_id)];
    let mut ips: Vec<IpAddr> = Vec::new();
    let mut bound = vec![config.api_addr, config.cluster_addr];
    if let Some(t) = &config.tls {
        bound.push(t.https_addr);
    }
    let mut advertised = vec![config.advertised_api(), config.advertised_cluster()];
    advertised.extend(config.advertised_https());
    for a in &advertised {
        match a.parse::<SocketAddr>() {
            Ok(sa) => bound.push(sa),
            Err(_) => {
                let host = a.rsplit_once(':').map_or(a.as_str(), |(h, _)| h);
                let host = host.to_ascii_lowercase();
                let zone_suffix = format!(".{ws}");
                let node_zone = format!(".nodes.{ws}");
                if host.ends_with(&zone_suffix) && !host.ends_with(&node_zone) {
                    dns.push(host);
                }
            }
        }
    }
    for sa in bound {
        let ip = sa.ip();
        if !ip.is_unspecified() && !ips.contains(&ip) {
            ips.push(ip);
        }
    }
    dns.dedup();
    (dns, ips)
}

/// A fresh P-256 key and a CSR asking for `dns` and `ips`.
pub fn new_key_and_csr(
    dns: &[String],
    ips: &[IpAddr],
) -> Result<(SecretPem, String), NodeCertError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(CaError::from)?;
    let mut params = CertificateParams::default();
    let mut sans = Vec::new();
    for name in dns {
        let name = rcgen::string::Ia5String::try_from(name.as_str()).map_err(CaError::from)?;
        sans.push(SanType::DnsName(name));
    }
    sans.extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
    params.subject_alt_names = sans;
    let csr = params
        .serialize_request(&key)
        .and_then(|r| r.pem())
        .map_err(CaError::from)?;
    Ok((SecretPem::new(key.serialize_pem()), csr))
}

/// The CRLs verifiers need (the root's and the issuing CAs'), concatenated PEM.
pub(super) fn crls_of(state: &ca::CaState) -> String {
    state.verifier_crls().iter().map(|c| c.pem()).collect()
}

/// `conclave init` with `[tls]`: the first node issues its own certificate from the CA it just
/// created (recorded in the CA state like any other) and writes its files.
pub async fn issue_at_init(
    config: &Config,
    service: &CaService,
    kek: &Kek,
) -> Result<String, NodeCertError> {
    let (dns, ips) = requested_names(config);
    let (key_pem, csr) = new_key_and_csr(&dns, &ips)?;
    let issued = service
        .issue_node_cert(config.node_id, csr, dns, ips)
        .await?;
    let (_, state) = service.load()?;
    let files = NodeFiles {
        key_pem,
        chain_pem: issued.chain_pem,
        root_pem: state.root_cert_pem.clone(),
        crl_pem: crls_of(&state),
    };
    write_node_files(&config.data_dir, config.node_id, kek, &files)?;
    Ok(issued.record.serial)
}

/// What `conclave provision` reports.
pub struct Provisioned {
    pub serial: String,
    pub not_after: i64,
    pub dir: PathBuf,
}

/// `conclave provision`: generates this node's key locally, sends only a CSR to `seed` (an
/// HTTPS node of the cluster, verified against `ca_file`), and writes the files. Needs the KEK
/// named in the config (copied from another node), since the key file is sealed with it.
pub async fn provision(
    config: &Config,
    seed: &str,
    ca_file: &Path,
    user: &str,
    password: &str,
) -> Result<Provisioned, NodeCertError> {
    let kek_path = config.kek_path();
    let kek = tokio::task::spawn_blocking(move || Kek::load(&kek_path))
        .await
        .map_err(|e| NodeCertError::Provision(format!("KEK task: {e}")))?
        .map_err(|e| {
            NodeCertError::Provision(format!(
                "{e}; copy the cluster's key-encryption key file to {} (mode 0600) first",
                config.kek_path().display()
            ))
        })?;
    let root_pem = std::fs::read_to_string(ca_file).map_err(io_err(ca_file))?;
    let http = https_client(&root_pem)?;
    let seed = seed.trim_end_matches('/');
    if !seed.starts_with("https://") {
        return Err(NodeCertError::Provision(format!(
            "--seed {seed:?} must be an https:// URL of a cluster node"
        )));
    }
    let login: serde_json::Value = call(
        http.post(format!("{seed}/api/v1/login"))
            .json(&serde_json::json!({"username": user, "password": password})),
        "log in",
    )
    .await?;
    let token = login["token"]
        .as_str()
        .ok_or_else(|| NodeCertError::Provision("login returned no token".into()))?
        .to_owned();
    let (dns, ips) = requested_names(config);
    let (key_pem, csr_pem) = new_key_and_csr(&dns, &ips)?;
    let issued: api::ca::NodeCertIssued = call(
        http.post(format!("{seed}/api/v1/ca/node-certs"))
            .bearer_auth(&token)
            .json(&serde_json::json!({"node_id": config.node_id, "csr_pem": csr_pem})),
        "request the node certificate",
    )
    .await?;
    // The seed proved itself with a chain to `ca_file`; the root it hands back must be that
    // same root, or this node would trust something the operator did not choose.
    if ca::x509::cert_der(&issued.root_pem)? != ca::x509::cert_der(&root_pem)? {
        return Err(NodeCertError::Provision(format!(
            "the seed returned a root certificate that is not the one in {}",
            ca_file.display()
        )));
    }
    let files = NodeFiles {
        key_pem,
        chain_pem: issued.chain_pem,
        root_pem: issued.root_pem,
        crl_pem: issued.crl_pem,
    };
    let data_dir = config.data_dir.clone();
    let node_id = config.node_id;
    tokio::task::spawn_blocking(move || write_node_files(&data_dir, node_id, &kek, &files))
        .await
        .map_err(|e| NodeCertError::Provision(format!("write task: {e}")))??;
    Ok(Provisioned {
        serial: issued.serial,
        not_after: issued.not_after,
        dir: tls_dir(&config.data_dir),
    })
}

/// A client that trusts only `root_pem` (ring provider, ALPN http/1.1).
pub fn https_client(root_pem: &str) -> Result<reqwest::Client, NodeCertError> {
    let mut roots = rustls::RootCertStore::empty();
    let der = ca::x509::cert_der(root_pem)?;
    roots
        .add(rustls::pki_types::CertificateDer::from(der))
        .map_err(|e| NodeCertError::Provision(format!("the root certificate: {e}")))?;
    let mut tls = rustls::ClientConfig::builder_with_provider(crate::tls::ring_provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| NodeCertError::Provision(format!("TLS configuration: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| NodeCertError::Provision(format!("HTTP client: {e}")))
}

async fn call<T: serde::de::DeserializeOwned>(
    req: reqwest::RequestBuilder,
    what: &str,
) -> Result<T, NodeCertError> {
    let resp = req
        .send()
        .await
        .map_err(|e| NodeCertError::Provision(format!("cannot {what}: {e}")))?;
    let status = resp.status();
    if !status.is_success() {
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        let msg = body["error"]["message"].as_str().unwrap_or("no details");
        return Err(NodeCertError::Provision(format!(
            "cannot {what}: {status}: {msg}"
        )));
    }
    resp.json()
        .await
        .map_err(|e| NodeCertError::Provision(format!("cannot {what}: bad reply: {e}")))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn the_csr_asks_for_the_workspace_the_node_name_and_its_addresses() {
        let text = r#"
node_id = 2
data_dir = "/tmp/x"
workspace = "Chat.Corp.lan"
api_addr = "10.0.0.2:8080"
cluster_addr = "0.0.0.0:9080"
advertise_cluster_addr = "10.0.0.2:9080"
[tls]
https_addr = "10.0.0.2:8443"
advertise_https_addr = "chat2.chat.corp.lan:8443"
"#;
        let config = Config::parse(text, Path::new("/etc/conclave/c.toml"), Vec::new()).unwrap();
        let (dns, ips) = requested_names(&config);
        assert_eq!(
            dns,
            [
                "chat.corp.lan",
                "node2.chat.corp.lan",
                "chat2.chat.corp.lan"
            ]
        );
        // The unspecified bind address is left out; the advertised one is in.
        assert_eq!(ips, ["10.0.0.2".parse::<IpAddr>().unwrap()]);
        let (_, csr) = new_key_and_csr(&dns, &ips).unwrap();
        let (csr_dns, csr_ips) = crate::ca_runtime::csr_names(&csr).unwrap();
        assert_eq!(csr_dns, dns);
        assert_eq!(csr_ips, ips);
    }

    #[test]
    fn files_round_trip_sealed_and_never_in_the_clear() {
        let root = tempfile::tempdir().unwrap();
        // A data directory the writer creates (0700): the temp dir itself may be 0755.
        let data = root.path().join("data");
        let dir = data.as_path();
        let kek = Kek::generate().unwrap();
        let files = test_files();
        let key_pem = SecretPem::new(files.key_pem.expose().to_owned());
        write_node_files(dir, 3, &kek, &files).unwrap();
        let raw = std::fs::read(tls_dir(dir).join(KEY_FILE)).unwrap();
        assert!(!String::from_utf8_lossy(&raw).contains("PRIVATE KEY"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(tls_dir(dir).join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let back = load_node_files(dir, 3, &kek).unwrap();
        assert_eq!(back.key_pem.expose(), key_pem.expose());
        assert_eq!(back.chain_pem, files.chain_pem);
        // Another node id (purpose) or another KEK does not open it.
        assert!(load_node_files(dir, 4, &kek).is_err());
        assert!(load_node_files(dir, 3, &Kek::generate().unwrap()).is_err());
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(
            load_node_files(empty.path(), 3, &kek),
            Err(NodeCertError::Missing { .. })
        ));
    }

    /// A fresh key and a self-signed certificate of it as the chain.
    fn test_files() -> NodeFiles {
        let (key_pem, _csr) = new_key_and_csr(&["a.lan".into()], &[]).unwrap();
        let key = KeyPair::from_pem(key_pem.expose()).unwrap();
        let cert = CertificateParams::new(vec!["a.lan".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        NodeFiles {
            key_pem,
            chain_pem: cert.pem(),
            root_pem: "root".into(),
            crl_pem: "crl".into(),
        }
    }

    /// A power cut between the steps of a key switch leaves a key that matches its chain:
    /// before the chain was written the old pair stays, after it the new pair is finished.
    #[test]
    fn an_interrupted_key_switch_ends_in_a_matching_pair() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("data");
        let kek = Kek::generate().unwrap();
        let old = test_files();
        write_node_files(&dir, 3, &kek, &old).unwrap();
        let tls = tls_dir(&dir);
        let new = test_files();
        let sealed = bincode::serialize(
            &kek.seal(new.key_pem.expose().as_bytes(), &key_purpose(3))
                .unwrap(),
        )
        .unwrap();

        // Cut after the next key, before the chain: the old pair, the next key dropped.
        std::fs::write(tls.join(NEXT_KEY_FILE), &sealed).unwrap();
        let back = load_node_files(&dir, 3, &kek).unwrap();
        assert_eq!(back.key_pem.expose(), old.key_pem.expose());
        assert_eq!(back.chain_pem, old.chain_pem);
        assert!(!tls.join(NEXT_KEY_FILE).exists());

        // Cut after the chain, before the key's rename: the new pair, finished.
        std::fs::write(tls.join(NEXT_KEY_FILE), &sealed).unwrap();
        std::fs::write(tls.join(CHAIN_FILE), &new.chain_pem).unwrap();
        let back = load_node_files(&dir, 3, &kek).unwrap();
        assert_eq!(back.key_pem.expose(), new.key_pem.expose());
        assert_eq!(back.chain_pem, new.chain_pem);
        assert!(!tls.join(NEXT_KEY_FILE).exists());

        // A key that belongs to no certificate here is refused with a clear reason.
        std::fs::write(tls.join(CHAIN_FILE), &old.chain_pem).unwrap();
        let err = load_node_files(&dir, 3, &kek).err().unwrap();
        assert!(err.to_string().contains("does not belong"), "{err}");
    }
}
