//! Mutual TLS between nodes: the rustls configurations for the cluster port (server) and for
//! `PeerHttp` (client), built from the cluster CA's PEM material and swapped on renewal,
//! revocation or membership change.
//!
//! What a connection must prove, both ways: a chain to the cluster root (the only trust
//! anchor), valid now, not revoked by the root's or the issuing CA's CRL, and a node identity
//! `N.nodes.<workspace>` (so a service certificate from the same CA never passes as a node).
//! The server also requires `N` to be a current member (`identity::admits`: an empty member
//! set, i.e. a node not yet added, admits any node of this CA). The client additionally checks
//! the server certificate against the dialled address, as any webpki client does.
//!
//! Owns the current configurations and the member set. Must never: hand out a server config
//! that does not require a client certificate, trust anything but the configured roots, allow
//! TLS session resumption (a resumed session skips the certificate checks, so a revocation or
//! expiry would not apply to it), or log key material.

mod accept;
mod identity;
mod members;

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, UnixTime};
use rustls::server::{NoServerSessionStorage, WebPkiClientVerifier};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

pub(crate) use accept::{MAX_CONNECTIONS, MAX_CONNECTIONS_PER_SOURCE, serve_tls};
use identity::{MemberClientVerifier, MemberSet, NodeServerVerifier};
pub(crate) use members::{member_ids, run as run_member_sync};

use crate::types::NodeId;

/// ALPN for both ends: reqwest over a preconfigured rustls config speaks HTTP/1.1 only, and
/// the accept loop serves HTTP/1.1 only, so say so explicitly rather than negotiate nothing.
const ALPN_HTTP11: &[u8] = b"http/1.1";

/// Everything mutual TLS is built from, as the CA hands it out (PEM text).
#[derive(Clone)]
pub struct PeerTlsMaterial {
    /// The cluster root certificate(s): the only trust anchors, for both directions.
    pub roots_pem: String,
    /// This node's certificate first, then the issuing CA's certificate.
    pub chain_pem: String,
    /// This node's private key (PKCS#8, SEC1 or PKCS#1 PEM).
    pub key_pem: String,
    /// Every CRL to check against, as concatenated `X509 CRL` PEM blocks. Must include the
    /// root-signed CRL as well as the issuing CA's: webpki checks revocation along the whole
    /// chain and refuses every peer as `UnknownRevocationStatus` if a level has no CRL.
    pub crls_pem: String,
    /// The workspace zone (`chat.example.lan`); identities are `N.nodes.<workspace>`.
    pub workspace: String,
}

impl std::fmt::Debug for PeerTlsMaterial {
    // Never print the key; the rest is public but long.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerTlsMaterial")
            .field("workspace", &self.workspace)
            .finish_non_exhaustive()
    }
}

/// Why TLS material could not be used, or why a peer was refused.
#[derive(Debug, thiserror::Error)]
pub enum PeerTlsError {
    /// A PEM block could not be read (`what`: which part of the material).
    #[error("cannot read {what}: {message}")]
    Pem { what: &'static str, message: String },
    /// A part of the material that must not be empty is.
    #[error("no {what} in the TLS material")]
    Missing { what: &'static str },
    /// A certificate could not be parsed or names two identities.
    #[error("{0}")]
    Certificate(String),
    /// This node's own certificate is not for this node.
    #[error("this node's certificate identifies {found:?}, not node {expected}")]
    WrongIdentity {
        expected: NodeId,
        found: Option<NodeId>,
    },
    /// rustls refused to build a verifier (bad root or CRL).
    #[error("cannot build a certificate verifier: {0}")]
    Verifier(#[from] rustls::client::VerifierBuilderError),
    /// rustls refused the configuration (for example a key that does not match the certificate).
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    /// A peer was refused after the standard checks passed (identity or membership).
    #[error("{0}")]
    Refused(String),
}

/// The configurations built from one version of the material.
struct Built {
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    /// The server-side verifier, kept to re-check open connections after a change.
    verifier: Arc<MemberClientVerifier>,
}

/// The verified identity of the node at the other end of a cluster-port connection, put into
/// every request's extensions by the TLS accept loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerIdentity {
    pub node_id: NodeId,
}

/// Mutual TLS state for one node. Share it as `Arc<PeerTls>` between `ClusterConfig` (for the
/// client side and the member-set task) and the cluster-port server.
pub struct PeerTls {
    node_id: NodeId,
    workspace: String,
    built: RwLock<Arc<Built>>,
    members: MemberSet,
    /// Bumped on every change that can withdraw trust (new material, new member set): open
    /// server connections re-check their peer, and `PeerHttp` rebuilds its pooled client.
    generation: tokio::sync::watch::Sender<u64>,
}

impl std::fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerTls")
            .field("node_id", &self.node_id)
            .field("workspace", &self.workspace)
            .field("generation", &*self.generation.borrow())
            .finish_non_exhaustive()
    }
}

impl PeerTls {
    /// Builds both configurations for node `node_id`. Refuses material whose own certificate
    /// does not carry `node_id`'s identity: serving it would only get this node refused by
    /// every peer, with a much vaguer error.
    pub fn new(node_id: NodeId, material: &PeerTlsMaterial) -> Result<Self, PeerTlsError> {
        let members: MemberSet = Arc::new(RwLock::new(BTreeSet::new()));
        let built = build(node_id, material, &members)?;
        Ok(Self {
            node_id,
            workspace: material.workspace.to_ascii_lowercase(),
            built: RwLock::new(Arc::new(built)),
            members,
            generation: tokio::sync::watch::Sender::new(0),
        })
    }

    /// Swaps in new material (a renewed certificate, a new CRL, a new root). New connections
    /// use it at once; open server connections re-check their peer against it and close if it
    /// no longer passes; `PeerHttp` drops its pooled connections. On error nothing changes.
    pub fn update(&self, material: &PeerTlsMaterial) -> Result<(), PeerTlsError> {
        if material.workspace.to_ascii_lowercase() != self.workspace {
            return Err(PeerTlsError::Certificate(format!(
                "the workspace cannot change ({} -> {})",
                self.workspace, material.workspace
            )));
        }
        let built = build(self.node_id, material, &self.members)?;
        *self.built.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(built);
        self.generation.send_modify(|g| *g += 1);
        tracing::info!(node_id = self.node_id, "peer TLS material updated");
        Ok(())
    }

    /// Sets the node ids admitted on the cluster port (voters and learners). A change
    /// re-checks open connections, so a removed node loses its pooled connections too.
    pub fn set_members(&self, ids: BTreeSet<NodeId>) {
        {
            let mut set = self.members.write().unwrap_or_else(|p| p.into_inner());
            if *set == ids {
                return;
            }
            tracing::info!(node_id = self.node_id, members = ?ids, "peer TLS member set changed");
            *set = ids;
        }
        self.generation.send_modify(|g| *g += 1);
    }

    /// The admitted node ids (empty: not a member of anything yet, admits any node).
    pub fn members(&self) -> BTreeSet<NodeId> {
        self.members
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The configuration for the next accepted connection.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.current().server.clone()
    }

    /// The configuration `PeerHttp` builds its client from.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.current().client.clone()
    }

    /// A counter that changes whenever trust may have been withdrawn.
    pub fn generation(&self) -> u64 {
        *self.generation.borrow()
    }

    pub(crate) fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Re-runs every check of the handshake (chain, validity, CRLs, identity, membership) on
    /// a peer's chain with the current material; the node id if it still passes.
    pub(crate) fn recheck(&self, chain: &[CertificateDer<'static>]) -> Result<NodeId, String> {
        let Some((end_entity, intermediates)) = chain.split_first() else {
            return Err("no client certificate".into());
        };
        self.current()
            .verifier
            .check(end_entity, intermediates, UnixTime::now())
            .map_err(|e| reason(&e))
    }

    fn current(&self) -> Arc<Built> {
        self.built.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// A rustls verification error as one readable line, unwrapping our own `Refused` reasons.
pub(crate) fn reason(error: &rustls::Error) -> String {
    if let rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other)) = error {
        return other.0.to_string();
    }
    error.to_string()
}

fn build(
    node_id: NodeId,
    material: &PeerTlsMaterial,
    members: &MemberSet,
) -> Result<Built, PeerTlsError> {
    let workspace = material.workspace.to_ascii_lowercase();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = Arc::new(root_store(&material.roots_pem)?);
    let chain = certs(&material.chain_pem, "this node's certificate chain")?;
    let key = PrivateKeyDer::from_pem_slice(material.key_pem.as_bytes()).map_err(|e| {
        PeerTlsError::Pem {
            what: "this node's private key",
            message: e.to_string(),
        }
    })?;
    let crls = crls(&material.crls_pem)?;
    let own = chain.first().ok_or(PeerTlsError::Missing {
        what: "node certificate",
    })?;
    match identity::node_identity(own, &workspace)? {
        Some(id) if id == node_id => {}
        found => {
            return Err(PeerTlsError::WrongIdentity {
                expected: node_id,
                found,
            });
        }
    }

    let client_verifier =
        WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .with_crls(crls.clone())
            .build()?;
    let verifier = Arc::new(MemberClientVerifier {
        inner: client_verifier,
        workspace: workspace.clone(),
        members: members.clone(),
    });
    let mut server = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier.clone())
        .with_single_cert(chain.clone(), key.clone_key())?;
    server.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    server.session_storage = Arc::new(NoServerSessionStorage {});
    server.send_tls13_tickets = 0;

    let server_verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
            .with_crls(crls)
            .build()?;
    let mut client = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NodeServerVerifier {
            inner: server_verifier,
            workspace,
        }))
        .with_client_auth_cert(chain, key)?;
    client.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    client.resumption = rustls::client::Resumption::disabled();

    Ok(Built {
        server: Arc::new(server),
        client: Arc::new(client),
        verifier,
    })
}

fn root_store(pem: &str) -> Result<RootCertStore, PeerTlsError> {
    let mut store = RootCertStore::empty();
    for cert in certs(pem, "the cluster root certificate")? {
        store.add(cert)?;
    }
    Ok(store)
}

fn certs(pem: &str, what: &'static str) -> Result<Vec<CertificateDer<'static>>, PeerTlsError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PeerTlsError::Pem {
            what,
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(PeerTlsError::Missing { what });
    }
    Ok(certs)
}

fn crls(pem: &str) -> Result<Vec<CertificateRevocationListDer<'static>>, PeerTlsError> {
    let crls = CertificateRevocationListDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PeerTlsError::Pem {
            what: "the CRLs",
            message: e.to_string(),
        })?;
    // Without CRLs every peer would fail with UnknownRevocationStatus: say so up front.
    if crls.is_empty() {
        return Err(PeerTlsError::Missing { what: "CRL" });
    }
    Ok(crls)
}
