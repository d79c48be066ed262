//! Mutual TLS on the cluster port, over real sockets on 127.0.0.1: who is admitted, who is
//! refused (other CA, expired, revoked, not a member, removed, service certificate, no client
//! certificate, wrong server address), hot reload, and a 3-node cluster that elects, adds
//! members and commits a write with every Raft RPC over mutual TLS.
//!
//! Every refusal test first shows the same setup admitting a good peer, so a refusal cannot
//! come from a broken fixture.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod pki;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::routing::{get, post};
use axum::{Extension, Router};
use cluster::transport::network::{PeerHttp, TransportError};
use cluster::transport::rpc_server::serve_cluster_port;
use cluster::{PeerIdentity, PeerTls, PeerTlsError};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use pki::{Ca, Leaf};

const WS: &str = "chat.conclave.test";
const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const CALL_TIMEOUT: Duration = Duration::from_secs(3);
const WHOAMI: &str = "/test/whoami";

/// The test router: who the server thinks is calling, and the version probe.
fn router() -> Router {
    Router::new()
        .route(
            WHOAMI,
            post(|Extension(peer): Extension<PeerIdentity>| async move {
                bincode::serialize(&peer.node_id).unwrap()
            }),
        )
        .route(
            cluster::transport::rpc::PATH_VERSION,
            get(|| async { axum::Json(cluster::node::versions::VersionWire::current()) }),
        )
}

/// A cluster port served with `PeerTls` on 127.0.0.1:0; stops when dropped.
struct Server {
    addr: String,
    tls: Arc<PeerTls>,
    cancel: CancellationToken,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Server-side refusal reasons show with `RUST_LOG=warn cargo test -- --nocapture`.
fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

async fn serve(ca: &Ca, leaf: &Leaf, node_id: u64, members: &[u64]) -> Server {
    init_tracing();
    let tls = Arc::new(PeerTls::new(node_id, &ca.material(leaf, &[])).unwrap());
    tls.set_members(members.iter().copied().collect());
    let listener = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let cancel = CancellationToken::new();
    tokio::spawn(serve_cluster_port(
        listener,
        router(),
        Some(tls.clone()),
        cancel.clone(),
    ));
    Server { addr, tls, cancel }
}

fn client(node_id: u64, material: &cluster::PeerTlsMaterial) -> PeerHttp {
    let tls = Arc::new(PeerTls::new(node_id, material).unwrap());
    PeerHttp::with_tls(None, Some(tls)).unwrap()
}

async fn whoami(http: &PeerHttp, addr: &str) -> Result<u64, TransportError> {
    http.post_bin(addr, WHOAMI, &(), CALL_TIMEOUT).await
}

/// Polls `f` until it is true or `within` passes.
async fn eventually<F, Fut>(within: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if f().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_member_is_admitted_and_identified() {
    let ca = Ca::new(WS, "cluster");
    let server = serve(&ca, &ca.node(1, LOCALHOST), 1, &[1, 2, 3]).await;
    let http = client(2, &ca.material(&ca.node(2, LOCALHOST), &[]));
    assert_eq!(whoami(&http, &server.addr).await.unwrap(), 2);
    // The JSON probes every node uses go over the same client.
    http.version(&server.addr, CALL_TIMEOUT).await.unwrap();
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused() {
    let ca = Ca::new(WS, "cluster");
    let other = Ca::new(WS, "other");
    let server = serve(&ca, &ca.node(1, LOCALHOST), 1, &[1, 2]).await;
    // Trusts the cluster root (so it accepts the server) but presents another CA's node 2.
    let material = ca.material(&other.node(2, LOCALHOST), &[]);
    let refused = whoami(&client(2, &material), &server.addr).await;
    // A refused handshake is "unreachable" to openraft: it backs off instead of retrying.
    assert!(
        matches!(refused, Err(TransportError::Connect { .. })),
        "another CA's certificate: {refused:?}"
    );
    let good = ca.node(2, LOCALHOST);
    assert_eq!(
        whoami(&client(2, &ca.material(&good, &[])), &server.addr)
            .await
            .unwrap(),
        2
    );
}

#[tokio::test]
async fn an_expired_certificate_is_refused() {
    let ca = Ca::new(WS, "cluster");
    let server = serve(&ca, &ca.node(1, LOCALHOST), 1, &[1, 2]).await;
    let now = time::OffsetDateTime::now_utc();
    let expired = ca.node_valid(
        2,
        LOCALHOST,
        now - time::Duration::days(2),
        now - time::Duration::days(1),
    );
    let r = whoami(&client(2, &ca.material(&expired, &[])), &server.addr).await;
    assert!(r.is_err(), "an expired certificate was admitted");
    let fresh = ca.node(2, LOCALHOST);
    assert_eq!(
        whoami(&client(2, &ca.material(&fresh, &[])), &server.addr)
            .await
            .unwrap(),
        2
    );
}

#[tokio::test]
async fn a_revoked_certificate_is_refused_after_a_hot_crl_update() {
    let ca = Ca::new(WS, "cluster");
    let server_leaf = ca.node(1, LOCALHOST);
    let server = serve(&ca, &server_leaf, 1, &[1, 2, 3]).await;
    let node2 = ca.node(2, LOCALHOST);
    let node3 = ca.node(3, LOCALHOST);
    let http2 = client(2, &ca.material(&node2, &[]));
    let http3 = client(3, &ca.material(&node3, &[]));
    assert_eq!(whoami(&http2, &server.addr).await.unwrap(), 2);
    assert_eq!(whoami(&http3, &server.addr).await.unwrap(), 3);

    // The CA revokes node 2; the server swaps in the new CRL without a restart.
    server
        .tls
        .update(&ca.material(&server_leaf, &[&node2]))
        .unwrap();
    // A new connection is refused at once...
    let fresh = client(2, &ca.material(&node2, &[]));
    assert!(whoami(&fresh, &server.addr).await.is_err());
    // ...and node 2's pooled connection is closed by the server's re-check.
    eventually(
        Duration::from_secs(5),
        "revoked pooled connection closed",
        || {
            let http2 = http2.clone();
            let addr = server.addr.clone();
            async move { whoami(&http2, &addr).await.is_err() }
        },
    )
    .await;
    // Node 3 is unaffected.
    assert_eq!(whoami(&http3, &server.addr).await.unwrap(), 3);
}

#[tokio::test]
async fn the_client_drops_a_server_revoked_after_the_connection_opened() {
    let ca = Ca::new(WS, "cluster");
    let node1 = ca.node(1, LOCALHOST);
    let server = serve(&ca, &node1, 1, &[1, 2]).await;
    let node2 = ca.node(2, LOCALHOST);
    let tls2 = Arc::new(PeerTls::new(2, &ca.material(&node2, &[])).unwrap());
    let http2 = PeerHttp::with_tls(None, Some(tls2.clone())).unwrap();
    assert_eq!(whoami(&http2, &server.addr).await.unwrap(), 2);
    // Node 2 learns that node 1's certificate is revoked: its pooled connection, opened while
    // node 1 was trusted, must not be reused.
    tls2.update(&ca.material(&node2, &[&node1])).unwrap();
    let r = whoami(&http2, &server.addr).await;
    assert!(
        matches!(r, Err(TransportError::Connect { .. })),
        "a revoked server was still used: {r:?}"
    );
}

#[tokio::test]
async fn only_members_are_admitted_and_a_removed_member_is_cut_off() {
    let ca = Ca::new(WS, "cluster");
    let server = serve(&ca, &ca.node(1, LOCALHOST), 1, &[1, 2, 3]).await;
    let http9 = client(9, &ca.material(&ca.node(9, LOCALHOST), &[]));
    assert!(
        whoami(&http9, &server.addr).await.is_err(),
        "non-member admitted"
    );
    // The same certificate is admitted once node 9 is a member (so the refusal was membership).
    server.tls.set_members(BTreeSet::from([1, 2, 3, 9]));
    assert_eq!(whoami(&http9, &server.addr).await.unwrap(), 9);

    let http2 = client(2, &ca.material(&ca.node(2, LOCALHOST), &[]));
    assert_eq!(whoami(&http2, &server.addr).await.unwrap(), 2);
    server.tls.set_members(BTreeSet::from([1, 3, 9]));
    eventually(Duration::from_secs(5), "removed member cut off", || {
        let http2 = http2.clone();
        let addr = server.addr.clone();
        async move { whoami(&http2, &addr).await.is_err() }
    })
    .await;
    let fresh2 = client(2, &ca.material(&ca.node(2, LOCALHOST), &[]));
    assert!(whoami(&fresh2, &server.addr).await.is_err());
    assert_eq!(whoami(&http9, &server.addr).await.unwrap(), 9);
}

#[tokio::test]
async fn a_node_without_membership_admits_any_node_of_its_ca() {
    // The learner rule: a fresh node must let the leader in before it knows any membership.
    let ca = Ca::new(WS, "cluster");
    let server = serve(&ca, &ca.node(4, LOCALHOST), 4, &[]).await;
    let leader = client(1, &ca.material(&ca.node(1, LOCALHOST), &[]));
    assert_eq!(whoami(&leader, &server.addr).await.unwrap(), 1);
    let other = Ca::new(WS, "other");
    // Still only nodes of its own CA.
    let stranger = client(1, &ca.material(&other.node(1, LOCALHOST), &[]));
    assert!(whoami(&stranger, &server.addr).await.is_err());
}

/// A rustls client config trusting `ca`'s root, optionally presenting `leaf`.
fn raw_client(ca: &Ca, leaf: Option<&Leaf>) -> reqwest::Client {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca.root_pem().as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let mut config = match leaf {
        Some(leaf) => builder
            .with_client_auth_cert(chain(leaf), key(leaf))
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .build()
        .unwrap()
}

fn chain(leaf: &Leaf) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(leaf.chain_pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap()
}

fn key(leaf: &Leaf) -> PrivateKeyDer<'static> {
    PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap()
}

async fn raw_get(client: &reqwest::Client, addr: &str) -> Result<(), String> {
    let url = format!("https://{addr}{}", cluster::transport::rpc::PATH_VERSION);
    match client.get(url).timeout(CALL_TIMEOUT).send().await {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err(format!("HTTP {}", r.status())),
        Err(e) => Err(format!("{e:?}")),
    }
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused() {
    let ca = Ca::new(WS, "cluster");
    let server = serve(&ca, &ca.node(1, LOCALHOST), 1, &[1, 2]).await;
    assert!(raw_get(&raw_client(&ca, None), &server.addr).await.is_err());
    // The same raw client with a member's certificate gets through.
    let node2 = ca.node(2, LOCALHOST);
    raw_get(&raw_client(&ca, Some(&node2)), &server.addr)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_service_certificate_is_refused_as_a_client() {
    let ca = Ca::new(WS, "cluster");
    // Even with an empty member set (the most permissive state): a service is never a node.
    let server = serve(&ca, &ca.node(1, LOCALHOST), 1, &[]).await;
    // As the CA issues it (serverAuth only) and with clientAuth added: the EKU check and the
    // identity check each refuse it on their own.
    for client_auth in [false, true] {
        let wiki = ca.service("wiki", LOCALHOST, client_auth);
        let r = raw_get(&raw_client(&ca, Some(&wiki)), &server.addr).await;
        assert!(
            r.is_err(),
            "service cert admitted (clientAuth: {client_auth})"
        );
    }
    // PeerTls refuses to even present one as this node's identity.
    let wiki = ca.service("wiki", LOCALHOST, true);
    assert!(matches!(
        PeerTls::new(2, &ca.material(&wiki, &[])),
        Err(PeerTlsError::WrongIdentity { found: None, .. })
    ));
    let node2 = ca.node(2, LOCALHOST);
    raw_get(&raw_client(&ca, Some(&node2)), &server.addr)
        .await
        .unwrap();
}

/// A TLS server on 127.0.0.1:0 presenting `leaf` (any certificate), without client auth.
async fn raw_server(leaf: &Leaf) -> (String, CancellationToken) {
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain(leaf), key(leaf))
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = tokio::select! {
                _ = stop.cancelled() => return,
                a = listener.accept() => a.unwrap(),
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(|req| router().oneshot(req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (addr.to_string(), cancel)
}

#[tokio::test]
async fn a_service_certificate_is_refused_as_a_server() {
    let ca = Ca::new(WS, "cluster");
    let http = client(2, &ca.material(&ca.node(2, LOCALHOST), &[]));
    // Same CA, right address, serverAuth: only the missing node identity gives it away.
    let (wiki, stop_wiki) = raw_server(&ca.service("wiki", LOCALHOST, false)).await;
    let r = http.version(&wiki, CALL_TIMEOUT).await;
    assert!(r.is_err(), "a service certificate passed as a node: {r:?}");
    stop_wiki.cancel();
    // The same raw server with a node certificate is accepted by the same client.
    let (node1, stop_node1) = raw_server(&ca.node(1, LOCALHOST)).await;
    http.version(&node1, CALL_TIMEOUT).await.unwrap();
    stop_node1.cancel();
}

#[tokio::test]
async fn a_server_certificate_for_another_address_is_refused() {
    let ca = Ca::new(WS, "cluster");
    let elsewhere = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    // Node 1's certificate names 127.0.0.2, but we dial it on 127.0.0.1.
    let server = serve(&ca, &ca.node(1, elsewhere), 1, &[1, 2]).await;
    let http = client(2, &ca.material(&ca.node(2, LOCALHOST), &[]));
    let r = whoami(&http, &server.addr).await;
    assert!(r.is_err(), "a certificate for another address was accepted");
    let right = serve(&ca, &ca.node(1, LOCALHOST), 1, &[1, 2]).await;
    assert_eq!(whoami(&http, &right.addr).await.unwrap(), 2);
}

#[tokio::test]
async fn peer_tls_refuses_material_for_another_node() {
    let ca = Ca::new(WS, "cluster");
    let r = PeerTls::new(2, &ca.material(&ca.node(3, LOCALHOST), &[]));
    assert!(matches!(
        r,
        Err(PeerTlsError::WrongIdentity {
            expected: 2,
            found: Some(3)
        })
    ));
    // A workspace change is refused on update, and the node keeps its configuration.
    let tls = PeerTls::new(2, &ca.material(&ca.node(2, LOCALHOST), &[])).unwrap();
    let before = tls.generation();
    let mut other_ws = ca.material(&ca.node(2, LOCALHOST), &[]);
    other_ws.workspace = "elsewhere.test".into();
    assert!(tls.update(&other_ws).is_err());
    assert_eq!(tls.generation(), before);
}

mod three_nodes;
