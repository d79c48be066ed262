//! Test fixtures for the TLS layer: a CA from `crate::ca`, node certificates for 127.0.0.1,
//! rustls clients with chosen trust, versions and ALPN, an HTTPS server on port 0, and small
//! HTTP/1.1 and HTTP/2 clients. Test-only; must never be compiled into the binary.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::body::Body;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::response::Response;
use axum::routing::get;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore, SupportedProtocolVersion};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_util::sync::CancellationToken;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::{CertStore, ServeOptions, https_server_config, ring_provider, serve_https};
use crate::ca::{self, InitParams, IpRange, Kek, NodeCertRequest};

pub const WS: &str = "chat.corp.lan";
pub const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// Every wait in these tests is bounded by this.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// A CA for the test workspace, allowed to issue for 127.0.0.0/8.
pub struct Pki {
    pub state: ca::CaState,
    pub kek: Kek,
}

/// A node certificate chain and its key, as PEM, with the leaf's serial.
pub struct Leaf {
    pub chain_pem: String,
    pub key_pem: String,
    pub serial: String,
}

impl Pki {
    pub fn new() -> Self {
        let kek = Kek::generate().unwrap();
        let ranges = [IpRange::new("127.0.0.0".parse().unwrap(), 8).unwrap()];
        let state = ca::init(&InitParams::new(WS, &ranges), &kek, SystemTime::now()).unwrap();
        Self { state, kek }
    }

    pub fn root_pem(&self) -> &str {
        &self.state.root_cert_pem
    }

    pub fn fingerprint(&self) -> String {
        ca::root_fingerprint(&self.state).unwrap()
    }

    /// A fresh key and a one-day certificate for node 1 at 127.0.0.1.
    pub fn leaf(&self) -> Leaf {
        let key = ca::generate_node_key().unwrap();
        let req = NodeCertRequest {
            node_id: 1,
            csr_pem: key.csr_pem.clone(),
            dns_names: vec![WS.to_owned()],
            ips: vec![LOCALHOST],
            lifetime: Duration::from_secs(86_400),
        };
        let issued = ca::issue_node_cert(&self.state, &self.kek, &req, SystemTime::now()).unwrap();
        Leaf {
            serial: issued.record.serial.clone(),
            chain_pem: issued.chain_pem,
            key_pem: key.private_pem.expose().to_owned(),
        }
    }

    /// A client that trusts only this CA's root.
    pub fn client(
        &self,
        versions: &[&'static SupportedProtocolVersion],
        alpn: &[&[u8]],
    ) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from(
                ca::x509::cert_der(self.root_pem()).unwrap(),
            ))
            .unwrap();
        client_with_roots(roots, versions, alpn)
    }
}

pub fn client_with_roots(
    roots: RootCertStore,
    versions: &[&'static SupportedProtocolVersion],
    alpn: &[&[u8]],
) -> Arc<ClientConfig> {
    let mut config = ClientConfig::builder_with_provider(ring_provider())
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

pub const BOTH: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];
pub const H1: &[&[u8]] = &[b"http/1.1"];

/// Connects to `addr` over TLS, naming the server by its IP (the leaf carries 127.0.0.1).
pub async fn tls_connect(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let connect = TlsConnector::from(config).connect(ServerName::IpAddress(addr.ip().into()), tcp);
    tokio::time::timeout(DEADLINE, connect)
        .await
        .map_err(|_| std::io::Error::other("TLS handshake took longer than the test deadline"))?
}

/// The serial (lower-case hex) of the certificate the server presented.
pub fn peer_serial(stream: &TlsStream<TcpStream>) -> String {
    let certs = stream.get_ref().1.peer_certificates().unwrap();
    let (_, cert) = X509Certificate::from_der(certs[0].as_ref()).unwrap();
    hex::encode(cert.raw_serial())
}

/// An HTTP/1.1 keep-alive connection over any stream.
pub async fn h1<S>(stream: S) -> http1::SendRequest<Body>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender
}

/// An HTTP/2 connection over any stream.
pub async fn h2<S>(stream: S) -> http2::SendRequest<Body>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender
}

/// A response with its body read to the end.
pub struct Reply {
    pub status: u16,
    pub headers: axum::http::HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub async fn read_reply(resp: hyper::Response<hyper::body::Incoming>) -> Reply {
    let (parts, body) = resp.into_parts();
    let body = axum::body::to_bytes(Body::new(body), 1 << 20)
        .await
        .unwrap();
    Reply {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: body.to_vec(),
    }
}

/// A request for `path` with the given Host header (or none) and method.
pub fn request(method: &str, path: &str, host: Option<&str>) -> hyper::Request<Body> {
    let mut b = hyper::Request::builder().method(method).uri(path);
    if let Some(h) = host {
        b = b.header("host", h);
    }
    b.body(Body::empty()).unwrap()
}

pub async fn get1(sender: &mut http1::SendRequest<Body>, path: &str) -> Reply {
    sender.ready().await.unwrap();
    let resp = tokio::time::timeout(
        DEADLINE,
        sender.send_request(request("GET", path, Some("127.0.0.1"))),
    )
    .await
    .unwrap()
    .unwrap();
    read_reply(resp).await
}

/// Hooks of the `/slow` route: it reports when it started and answers once released.
#[derive(Clone)]
pub struct Slow {
    pub started: mpsc::UnboundedSender<()>,
    pub release: Arc<Notify>,
}

/// The router the HTTPS tests serve: `/` says hello, `/peer` echoes the client address,
/// `/ws` echoes WebSocket frames, `/slow` waits for the test.
pub fn test_router(slow: Slow) -> Router {
    Router::new()
        .route("/", get(|| async { "hello" }))
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/peer",
            get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }),
        )
        .route("/ws", get(ws_echo))
        .route("/slow", get(slow_handler))
        .with_state(slow)
}

async fn ws_echo(ws: WebSocketUpgrade) -> Response {
    ws.on_upgrade(|mut socket: WebSocket| async move {
        while let Some(Ok(msg)) = socket.recv().await {
            if matches!(msg, Message::Text(_) | Message::Binary(_))
                && socket.send(msg).await.is_err()
            {
                break;
            }
        }
    })
}

async fn slow_handler(State(slow): State<Slow>) -> &'static str {
    let _ = slow.started.send(());
    slow.release.notified().await;
    "done"
}

/// An HTTPS server on 127.0.0.1:0, cancelled when dropped.
pub struct Server {
    pub addr: SocketAddr,
    pub certs: Arc<CertStore>,
    pub cancel: CancellationToken,
    pub task: Option<tokio::task::JoinHandle<()>>,
    pub slow_started: mpsc::UnboundedReceiver<()>,
    pub slow_release: Arc<Notify>,
}

impl Server {
    pub async fn start(leaf: &Leaf, options: ServeOptions) -> Self {
        let certs =
            Arc::new(CertStore::new(ring_provider(), &leaf.chain_pem, &leaf.key_pem).unwrap());
        let tls = https_server_config(ring_provider(), certs.clone()).unwrap();
        let listener = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (started, slow_started) = mpsc::unbounded_channel();
        let slow_release = Arc::new(Notify::new());
        let router = test_router(Slow {
            started,
            release: slow_release.clone(),
        });
        let cancel = CancellationToken::new();
        let task = tokio::spawn(serve_https(listener, router, tls, options, cancel.clone()));
        Self {
            addr,
            certs,
            cancel,
            task: Some(task),
            slow_started,
            slow_release,
        }
    }

    /// Cancels and waits (bounded) for the accept loop to return.
    pub async fn stop(&mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(DEADLINE, task)
                .await
                .expect("serve_https did not return after cancel")
                .unwrap();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Polls `check` every 20 ms until it holds or the deadline passes.
pub async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = Instant::now() + DEADLINE;
    while !check().await {
        assert!(Instant::now() < end, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
