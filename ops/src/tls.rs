//! Trusting a cluster's own root CA: [`TrustRoot`] turns the root certificate (PEM, as
//! `conclave init` writes it and `conclavectl ca root` downloads it) into the rustls client
//! configurations the REST client (reqwest) and the WebSocket connector (tokio-rustls) use,
//! and recognises a failure caused by a certificate the client does not trust.
//!
//! Owns the client side of TLS trust: only the given root is an anchor (never the system's
//! store, which on an air-gapped site holds nothing useful and would only widen who can
//! impersonate a node), ring is the only crypto provider, TLS 1.2 and 1.3 only. It must never
//! disable verification or fall back to plain HTTP on its own.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};

use crate::error::ClientError;

/// ALPN for WebSocket connections: RFC 8441 (WebSockets over HTTP/2) is not enabled on the
/// server, so a WebSocket must negotiate HTTP/1.1.
const ALPN_HTTP1: &[u8] = b"http/1.1";

/// The cluster root to trust for `https://` and `wss://` servers. Cheap to clone.
#[derive(Clone)]
pub struct TrustRoot {
    /// For reqwest. Offers only `http/1.1`: this build of reqwest has no HTTP/2 support, and
    /// offering `h2` would let the server pick a protocol the client cannot speak.
    rest: Arc<rustls::ClientConfig>,
    /// For WebSockets (`http/1.1` only, see [`ALPN_HTTP1`]). Kept apart from `rest` so that
    /// enabling HTTP/2 for REST later cannot break the upgrade.
    ws: Arc<rustls::ClientConfig>,
    /// How many certificates the PEM held (all of them are anchors: a root being rotated can
    /// be trusted next to the old one).
    anchors: usize,
}

impl std::fmt::Debug for TrustRoot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustRoot")
            .field("anchors", &self.anchors)
            .finish_non_exhaustive()
    }
}

impl TrustRoot {
    /// Trusts every certificate in `pem` (normally just the cluster root). Fails when the
    /// text holds no certificate or one that is not a usable trust anchor.
    pub fn from_pem(pem: &[u8]) -> Result<TrustRoot, ClientError> {
        let invalid = |reason: String| ClientError::InvalidTrustRoot { reason };
        let mut roots = rustls::RootCertStore::empty();
        let mut anchors = 0;
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| invalid(format!("not a PEM certificate: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| invalid(format!("not a usable root certificate: {e}")))?;
            anchors += 1;
        }
        if anchors == 0 {
            return Err(invalid("no certificate in the PEM text".to_owned()));
        }
        let roots = Arc::new(roots);
        Ok(TrustRoot {
            rest: Arc::new(client_config(Arc::clone(&roots), &[ALPN_HTTP1])?),
            ws: Arc::new(client_config(roots, &[ALPN_HTTP1])?),
            anchors,
        })
    }

    /// Reads a PEM file (see [`TrustRoot::from_pem`]).
    pub fn from_file(path: &std::path::Path) -> Result<TrustRoot, ClientError> {
        let pem = std::fs::read(path).map_err(|e| ClientError::InvalidTrustRoot {
            reason: format!("cannot read {}: {e}", path.display()),
        })?;
        TrustRoot::from_pem(&pem).map_err(|e| match e {
            ClientError::InvalidTrustRoot { reason } => ClientError::InvalidTrustRoot {
                reason: format!("{}: {reason}", path.display()),
            },
            other => other,
        })
    }

    /// The rustls configuration for HTTP/1.1 clients (what [`crate::Client`] hands reqwest's
    /// `use_preconfigured_tls`), for callers that build their own HTTP client.
    pub fn client_config(&self) -> rustls::ClientConfig {
        (*self.rest).clone()
    }

    pub(crate) fn rest_config(&self) -> rustls::ClientConfig {
        self.client_config()
    }

    pub(crate) fn ws_connector(&self) -> tokio_rustls::TlsConnector {
        tokio_rustls::TlsConnector::from(Arc::clone(&self.ws))
    }
}

/// What a node presented, once it passed verification (chain to the trusted root, name of the
/// address dialled, validity, serverAuth).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedCertificate {
    /// The leaf's `notAfter`, in seconds since the Unix epoch.
    pub not_after_unix: i64,
    /// Its subject alternative names (`DNS:…`, `IP:…`), for messages.
    pub names: Vec<String>,
}

impl VerifiedCertificate {
    /// Whole days from `now_unix` until the certificate expires (negative once expired).
    pub fn days_left(&self, now_unix: i64) -> i64 {
        (self.not_after_unix - now_unix).div_euclid(86_400)
    }
}

/// Opens a TLS connection to `addr` and verifies the certificate it presents against `root`
/// for the name `host` (an IP address or DNS name: what the caller dialled), then closes it.
/// A certificate problem is [`ClientError::CertificateNotTrusted`]; no answer within
/// `timeout` or a refused connection is [`ClientError::Unreachable`].
// Long on purpose: one TLS handshake and the checks on what it yields read best in order.
pub async fn verify_server_certificate(
    addr: std::net::SocketAddr,
    host: &str,
    root: &TrustRoot,
    timeout: std::time::Duration,
) -> Result<VerifiedCertificate, ClientError> {
    let server = format!("https://{addr}");
    let unreachable = |why: String| ClientError::Unreachable {
        servers: vec![server.clone()],
        last_error: why,
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let name = match bare.parse::<std::net::IpAddr>() {
        Ok(ip) => ServerName::IpAddress(ip.into()),
        Err(_) => {
            ServerName::try_from(host.to_owned()).map_err(|e| ClientError::InvalidServer {
                url: host.to_owned(),
                reason: format!("not a TLS server name: {e}"),
            })?
        }
    };
    let handshake = async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| unreachable(format!("connect failed: {e}")))?;
        root.ws_connector()
            .connect(name, tcp)
            .await
            .map_err(|e| match certificate_problem(&e) {
                Some(reason) => ClientError::CertificateNotTrusted {
                    server: server.clone(),
                    reason,
                },
                None => unreachable(format!("TLS handshake failed: {e}")),
            })
    };
    let stream = tokio::time::timeout(timeout, handshake)
        .await
        .map_err(|_| {
            unreachable(format!(
                "no TLS handshake within {} ms",
                timeout.as_millis()
            ))
        })??;
    let (_, session) = stream.get_ref();
    let leaf = session
        .peer_certificates()
        .and_then(|chain| chain.first())
        .ok_or_else(|| ClientError::CertificateNotTrusted {
            server: server.clone(),
            reason: "no certificate presented".to_owned(),
        })?;
    let (_, cert) =
        x509_parser::parse_x509_certificate(leaf.as_ref()).map_err(|e| ClientError::Decode {
            message: format!("{server} presented a certificate that does not parse: {e}"),
        })?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for general in &san.value.general_names {
            match general {
                x509_parser::extensions::GeneralName::DNSName(dns) => {
                    names.push(format!("DNS:{dns}"));
                }
                x509_parser::extensions::GeneralName::IPAddress(bytes) => {
                    let ip = match bytes.len() {
                        4 => <[u8; 4]>::try_from(*bytes).ok().map(std::net::IpAddr::from),
                        16 => <[u8; 16]>::try_from(*bytes)
                            .ok()
                            .map(std::net::IpAddr::from),
                        _ => None,
                    };
                    if let Some(ip) = ip {
                        names.push(format!("IP:{ip}"));
                    }
                }
                _ => {}
            }
        }
    }
    Ok(VerifiedCertificate {
        not_after_unix: cert.validity().not_after.timestamp(),
        names,
    })
}

/// The SHA-256 fingerprint of a DER certificate as `conclave init`, `conclavectl ca
/// fingerprint` and `openssl x509 -fingerprint -sha256` print it (`AB:CD:...`).
pub fn fingerprint_sha256(cert_der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, cert_der);
    api::fingerprint::to_colons(digest.as_ref())
}

/// The fingerprint of the first certificate in `bytes` (PEM or DER); `None` when it holds
/// none (an Apple profile, say).
pub fn root_fingerprint(bytes: &[u8]) -> Option<String> {
    if let Some(Ok(cert)) = CertificateDer::pem_slice_iter(bytes).next() {
        return Some(fingerprint_sha256(cert.as_ref()));
    }
    // DER: a certificate is one SEQUENCE; check it parses before vouching for its hash.
    x509_parser::parse_x509_certificate(bytes)
        .ok()
        .map(|_| fingerprint_sha256(bytes))
}

/// A client configuration with only `roots` as anchors and the ring provider.
fn client_config(
    roots: Arc<rustls::RootCertStore>,
    alpn: &[&[u8]],
) -> Result<rustls::ClientConfig, ClientError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::InvalidTrustRoot {
            reason: format!("cannot build a TLS configuration: {e}"),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// The TLS name to check a server's certificate against: an IP address for an IP host (node
/// certificates carry their addresses as IP SANs), a DNS name otherwise.
pub(crate) fn server_name(url: &reqwest::Url) -> Option<ServerName<'static>> {
    let host = url.host_str()?;
    // IPv6 hosts come bracketed ("[::1]") from the URL.
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<std::net::IpAddr>() {
        Ok(ip) => Some(ServerName::IpAddress(ip.into())),
        Err(_) => ServerName::try_from(host.to_owned()).ok(),
    }
}

/// The certificate problem behind a failed connection, if that is what failed it: the server's
/// certificate did not chain to a trusted root, did not name the address dialled, had expired,
/// or was revoked. `None` for every other failure (refused, reset, timeout).
pub(crate) fn certificate_problem(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(err);
    // Bounded: the chains seen in practice are a handful of links deep.
    for _ in 0..16 {
        let e = next?;
        if let Some(reason) = rustls_reason(e) {
            return Some(reason);
        }
        // `io::Error::source` skips the error it wraps (it returns the wrapped error's source),
        // and rustls errors reach us wrapped in one, sometimes twice (hyper-util wraps
        // tokio-rustls's io::Error in another): look inside explicitly.
        next = match e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner),
            None => e.source(),
        };
    }
    None
}

fn rustls_reason(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    match e.downcast_ref::<rustls::Error>()? {
        err @ (rustls::Error::InvalidCertificate(_)
        | rustls::Error::NoCertificatesPresented
        | rustls::Error::InvalidCertRevocationList(_)) => Some(err.to_string()),
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn refuses_text_without_certificates() {
        for bad in [&b""[..], b"hello", b"-----BEGIN CERTIFICATE-----\nAAAA\n"] {
            assert!(
                matches!(
                    TrustRoot::from_pem(bad),
                    Err(ClientError::InvalidTrustRoot { .. })
                ),
                "{:?} should be refused",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn accepts_a_generated_root() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(1));
        let root = params.self_signed(&key).unwrap();
        let trust = TrustRoot::from_pem(root.pem().as_bytes()).unwrap();
        assert_eq!(trust.anchors, 1);
        assert_eq!(
            trust.rest_config().alpn_protocols,
            vec![b"http/1.1".to_vec()]
        );
    }

    #[test]
    fn server_names_for_ip_and_dns_hosts() {
        let ip = reqwest::Url::parse("https://127.0.0.2:8443").unwrap();
        assert!(matches!(server_name(&ip), Some(ServerName::IpAddress(_))));
        let v6 = reqwest::Url::parse("https://[::1]:8443").unwrap();
        assert!(matches!(server_name(&v6), Some(ServerName::IpAddress(_))));
        let dns = reqwest::Url::parse("https://chat.corp.lan").unwrap();
        assert!(matches!(server_name(&dns), Some(ServerName::DnsName(_))));
    }

    #[test]
    fn certificate_problems_are_found_inside_io_errors() {
        let rustls_err = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, rustls_err);
        let reason = certificate_problem(&io).unwrap();
        assert!(reason.contains("UnknownIssuer"), "{reason}");
        let twice = std::io::Error::other(io);
        assert!(
            certificate_problem(&twice)
                .unwrap()
                .contains("UnknownIssuer")
        );
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(certificate_problem(&refused), None);
    }
}
