//! Node identity inside a certificate, and the two verifiers that insist on it.
//!
//! Owns: reading `N.nodes.<workspace>` out of a certificate's DNS SANs (node/src/ca/names.rs
//! defines that form), the client-side wrapper that refuses a server without a node identity,
//! and the server-side wrapper that refuses a client whose identity is not a current member.
//! Must never accept on the identity alone: both wrappers run the standard webpki chain,
//! expiry, EKU and CRL checks first and only then look at the name.

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, OtherError};
use rustls::{Error as TlsError, SignatureScheme};

use super::PeerTlsError;
use crate::types::NodeId;

/// The label under the workspace zone that holds node identities (node/src/ca/names.rs).
const NODES_LABEL: &str = "nodes";

/// The node id a certificate identifies, from its `N.nodes.<workspace>` DNS SAN.
///
/// `Ok(None)`: no identity name at all (a service certificate from the same CA: the CA never
/// signs a name under `nodes.<workspace>` for a CSR). Two different identities in one
/// certificate are an error: the CA never issues that, so such a certificate is not ours.
pub(crate) fn node_identity(
    cert: &CertificateDer<'_>,
    workspace: &str,
) -> Result<Option<NodeId>, PeerTlsError> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|e| PeerTlsError::Certificate(format!("unparsable certificate: {e}")))?;
    let san = parsed
        .subject_alternative_name()
        .map_err(|e| PeerTlsError::Certificate(format!("bad subjectAltName: {e}")))?;
    let suffix = format!(".{NODES_LABEL}.{}", workspace.to_ascii_lowercase());
    let mut ids = BTreeSet::new();
    for name in san.iter().flat_map(|s| s.value.general_names.iter()) {
        let x509_parser::extensions::GeneralName::DNSName(dns) = name else {
            continue;
        };
        let dns = dns.trim_end_matches('.').to_ascii_lowercase();
        let Some(head) = dns.strip_suffix(&suffix) else {
            continue;
        };
        // Only a plain decimal label is an identity; `*.nodes.<ws>` or `a.b.nodes.<ws>` is not.
        if head.is_empty() || !head.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if let Ok(id) = head.parse::<NodeId>() {
            ids.insert(id);
        }
    }
    let mut it = ids.into_iter();
    match (it.next(), it.next()) {
        (None, _) => Ok(None),
        (Some(id), None) => Ok(Some(id)),
        (Some(a), Some(b)) => Err(PeerTlsError::Certificate(format!(
            "certificate names two node identities ({a} and {b})"
        ))),
    }
}

/// A rustls error carrying our own reason, so the handshake log says what was wrong.
fn refused(reason: String) -> TlsError {
    TlsError::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(
        PeerTlsError::Refused(reason),
    ))))
}

/// Client side: webpki verification against the dialled address, then "is it a node?".
///
/// Without the second step a service certificate for a wiki, issued by the same CA for an
/// address a node once had, would pass as a cluster member.
#[derive(Debug)]
pub(crate) struct NodeServerVerifier {
    pub inner: Arc<rustls::client::WebPkiServerVerifier>,
    pub workspace: String,
}

impl ServerCertVerifier for NodeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        let verified = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        match node_identity(end_entity, &self.workspace) {
            Ok(Some(_)) => Ok(verified),
            Ok(None) => Err(refused(format!(
                "the server at {server_name:?} has no node identity (*.{NODES_LABEL}.{})",
                self.workspace
            ))),
            Err(e) => Err(refused(e.to_string())),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The member set the server admits, shared between `PeerTls`, every `MemberClientVerifier`
/// built from it, and the task that mirrors Raft's membership into it.
///
/// A `std` lock: it is held only to copy or compare a handful of ids, never across `.await`.
pub(crate) type MemberSet = Arc<RwLock<BTreeSet<NodeId>>>;

/// Whether `id` may use the cluster port now. An empty set means this node has no membership
/// yet (a fresh node waiting to be added): it admits any node of the cluster CA, because the
/// leader must reach it (status probe, then the log) before it can know who the members are.
pub(crate) fn admits(members: &MemberSet, id: NodeId) -> Result<(), String> {
    let set = members
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if set.is_empty() || set.contains(&id) {
        Ok(())
    } else {
        Err(format!("node {id} is not a member of this cluster"))
    }
}

/// Server side: webpki verification (chain to the cluster root, validity, clientAuth EKU,
/// CRLs along the whole chain), then the identity must be a current member.
///
/// Doing the membership check inside the handshake (rather than after it) makes a refused
/// node fail at connect time, which openraft treats as unreachable and backs off from.
#[derive(Debug)]
pub(crate) struct MemberClientVerifier {
    pub inner: Arc<dyn ClientCertVerifier>,
    pub workspace: String,
    pub members: MemberSet,
}

impl MemberClientVerifier {
    /// The node the chain identifies, if it is admitted right now.
    pub fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<NodeId, TlsError> {
        self.inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let id = match node_identity(end_entity, &self.workspace) {
            Ok(Some(id)) => id,
            Ok(None) => {
                return Err(refused(format!(
                    "client certificate has no node identity (*.{NODES_LABEL}.{})",
                    self.workspace
                )));
            }
            Err(e) => return Err(refused(e.to_string())),
        };
        admits(&self.members, id).map_err(refused)?;
        Ok(id)
    }
}

impl ClientCertVerifier for MemberClientVerifier {
    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, TlsError> {
        self.check(end_entity, intermediates, now)
            .map(|_| ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn cert_with(names: &[&str]) -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn the_identity_is_the_decimal_label_under_nodes() {
        let ws = "chat.example.lan";
        let id = |names: &[&str]| node_identity(&cert_with(names), ws).unwrap();
        assert_eq!(id(&["3.nodes.chat.example.lan", "127.0.0.1"]), Some(3));
        // Case and a trailing dot do not matter; the same id twice is one identity.
        assert_eq!(
            id(&["3.NODES.Chat.Example.Lan", "3.nodes.chat.example.lan."]),
            Some(3)
        );
        // Wildcards, nested labels, non-decimal labels, other zones: no identity.
        assert_eq!(id(&["*.nodes.chat.example.lan"]), None);
        assert_eq!(id(&["1.2.nodes.chat.example.lan"]), None);
        assert_eq!(id(&["x1.nodes.chat.example.lan"]), None);
        assert_eq!(
            id(&["nodes.chat.example.lan", "wiki.chat.example.lan"]),
            None
        );
        assert_eq!(id(&["3.nodes.other.example.lan"]), None);
        // Two identities in one certificate: not something our CA issues.
        assert!(
            node_identity(
                &cert_with(&["1.nodes.chat.example.lan", "2.nodes.chat.example.lan"]),
                ws
            )
            .is_err()
        );
    }

    #[test]
    fn an_empty_member_set_admits_anyone_a_filled_one_only_members() {
        let members: MemberSet = Arc::new(RwLock::new(BTreeSet::new()));
        assert!(admits(&members, 7).is_ok());
        *members.write().unwrap() = BTreeSet::from([1, 2]);
        assert!(admits(&members, 2).is_ok());
        assert!(admits(&members, 7).is_err());
    }
}
