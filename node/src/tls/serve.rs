//! The client API's accept loop, for the HTTPS port and the plain port alike: TCP accept, the
//! connection caps, the TLS handshake (HTTPS only), then HTTP/1.1 or HTTP/2 (with upgrades,
//! for WebSockets) served by the axum router, until the cancellation token fires.
//!
//! Owns the client-facing connections from accept to close. Must never run a handshake on
//! the accept path (a client that stalls its ClientHello would stall everyone), never let
//! handshakes or connections pile up without bound, never let one source take every place
//! (`cluster::transport::conn_limit`), and never keep a connection past the drain deadline
//! once shutdown starts.
//!
//! Shutdown: the listener is dropped at once (new connects are refused), handshakes in progress
//! are abandoned, established HTTP connections finish their in-flight requests (HTTP/1.1 closes
//! after the current response, HTTP/2 sends GOAWAY) for up to `drain_timeout`, then are closed.
//! Upgraded connections (WebSockets) have left hyper by then; the WebSocket hub closes them on
//! its own token.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use cluster::transport::conn_limit::{ConnLimiter, ConnPermit, RefusalLog};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// Limits of the accept loop.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// How long a client has, from TCP accept, to complete the TLS handshake.
    pub handshake_timeout: Duration,
    /// Handshakes in progress at once; further connections wait in the kernel's backlog.
    pub max_handshakes: usize,
    /// How long established connections get to finish their requests after cancellation.
    pub drain_timeout: Duration,
    /// Connections open at once on this listener; more are closed at accept.
    pub max_connections: usize,
    /// Connections open at once from one source (an IPv4 address, an IPv6 /64).
    pub max_connections_per_source: usize,
    /// How long a client has to send a request's headers (HTTP/1.1).
    pub header_read_timeout: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            // Room for a site's devices reconnecting at once after a network blip, while bounding
            // the sockets and buffers that a flood of silent connects can tie up.
            max_handshakes: 256,
            // Matches how long `run` waits for the plain API server today.
            drain_timeout: Duration::from_secs(5),
            // A few KiB to a few tens of KiB each (socket and TLS buffers): a bounded total,
            // with room for every user's WebSocket on a large site.
            max_connections: 4096,
            // Below `max_handshakes`, so one host can never hold every handshake slot; room for
            // a NAT or reverse proxy in front of many users (raise it for a proxy).
            max_connections_per_source: 128,
            // hyper's own default. It also ends keep-alive connections idle this long between
            // requests, so it must not be shorter than clients expect to reuse one.
            header_read_timeout: Duration::from_secs(30),
        }
    }
}

/// Serves `router` over TLS on `listener` until `cancel` fires, then drains (see the module
/// docs) and returns. Handlers see the client's address as `ConnectInfo<SocketAddr>`, as with
/// `axum::serve(..).into_make_service_with_connect_info()`, and the request carries `ViaHttps`.
pub async fn serve_https(
    listener: TcpListener,
    router: Router,
    tls: Arc<ServerConfig>,
    options: ServeOptions,
    cancel: CancellationToken,
) {
    serve(listener, router, Some(tls), options, cancel).await;
}

/// Serves `router` in plain HTTP on `listener`, with the same caps and timeouts as HTTPS (no
/// handshake), until `cancel` fires, then drains.
pub async fn serve_plain(
    listener: TcpListener,
    router: Router,
    options: ServeOptions,
    cancel: CancellationToken,
) {
    serve(listener, router, None, options, cancel).await;
}

#[tracing::instrument(skip_all, fields(addr = ?listener.local_addr().ok(), https = tls.is_some()))]
async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<ServerConfig>>,
    options: ServeOptions,
    cancel: CancellationToken,
) {
    let acceptor = tls.map(TlsAcceptor::from);
    let handshakes = Arc::new(Semaphore::new(options.max_handshakes.max(1)));
    let limiter = ConnLimiter::new(options.max_connections, options.max_connections_per_source);
    let refusals = RefusalLog::default();
    let connections = TaskTracker::new();
    // Fires when the drain deadline has passed: connections still open are then dropped.
    let force_close = CancellationToken::new();
    let mut http = auto::Builder::new(TokioExecutor::new());
    // A timer turns on hyper's header-read timeout for HTTP/1.1, so a client that opens a
    // connection and then dribbles a request cannot hold it forever.
    http.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout);
    http.http2().timer(TokioTimer::new());
    tracing::info!(
        max_connections = options.max_connections,
        max_connections_per_source = options.max_connections_per_source,
        "serving the client API"
    );

    loop {
        // Take the handshake slot before accepting: when all slots are busy, new clients wait
        // in the listen backlog instead of costing a task and a socket each. Plain HTTP has no
        // handshake and takes none.
        let permit = match &acceptor {
            None => None,
            Some(_) => tokio::select! {
                _ = cancel.cancelled() => break,
                permit = handshakes.clone().acquire_owned() => match permit {
                    Ok(p) => Some(p),
                    Err(_) => break, // the semaphore is never closed
                },
            },
        };
        let (tcp, peer) = tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    if !is_per_connection_error(&e) {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::error!(error = %e, "accept failed; retrying in 1 s");
                        tokio::select! {
                            _ = cancel.cancelled() => break,
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        }
                    }
                    continue;
                }
            },
        };
        let place = match limiter.admit(peer.ip()) {
            Ok(p) => p,
            Err(cap) => {
                // Closed at once: a refused client costs one accept, and the others keep
                // their places.
                if let Some(refused) = refusals.note() {
                    tracing::warn!(
                        %peer,
                        cap = cap.as_str(),
                        refused,
                        open = limiter.open(),
                        "client connections refused at their cap"
                    );
                }
                continue;
            }
        };
        // Small frames (acks, typing notices) must not wait for Nagle's algorithm.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY");
        }
        let conn = Connection {
            tcp,
            peer,
            permit,
            place,
            acceptor: acceptor.clone(),
            http: http.clone(),
            router: router.clone(),
            handshake_timeout: options.handshake_timeout,
            cancel: cancel.clone(),
            force_close: force_close.clone(),
        };
        cluster::spawn_named("api-connection", connections.track_future(conn.run()));
    }

    drop(listener);
    connections.close();
    let open = connections.len();
    tracing::info!(
        open_connections = open,
        "client API stopped accepting; draining"
    );
    if tokio::time::timeout(options.drain_timeout, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            open_connections = connections.len(),
            drain_timeout_ms = options.drain_timeout.as_millis() as u64,
            "closing client connections that did not finish in time"
        );
        force_close.cancel();
        connections.wait().await;
    }
    tracing::info!("client API stopped");
}

/// Errors that concern one connection (the client went away between SYN and accept), not the
/// listener.
fn is_per_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(
        e.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    )
}

/// One accepted TCP connection and what it needs to become an HTTP connection.
struct Connection {
    tcp: TcpStream,
    peer: SocketAddr,
    /// The handshake slot (HTTPS only), given back once the handshake is over.
    permit: Option<OwnedSemaphorePermit>,
    /// The connection's place under the caps, held until it closes.
    place: ConnPermit,
    acceptor: Option<TlsAcceptor>,
    http: auto::Builder<TokioExecutor>,
    router: Router,
    handshake_timeout: Duration,
    cancel: CancellationToken,
    force_close: CancellationToken,
}

impl Connection {
    async fn run(self) {
        let Connection {
            tcp,
            peer,
            permit,
            place,
            acceptor,
            http,
            router,
            handshake_timeout,
            cancel,
            force_close,
        } = self;
        let Some(acceptor) = acceptor else {
            serve_connection(tcp, peer, false, http, router, cancel, force_close).await;
            drop(place);
            return;
        };
        let handshake = tokio::time::timeout(handshake_timeout, acceptor.accept(tcp));
        let tls = tokio::select! {
            _ = cancel.cancelled() => return,
            done = handshake => match done {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    // Port scanners, plain HTTP sent to the TLS port, clients that do not trust
                    // the root: routine, and the client sees its own error.
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    crate::metrics::tls_handshake_failed(Some(&e));
                    return;
                }
                Err(_) => {
                    crate::metrics::tls_handshake_failed(None);
                    tracing::debug!(
                        %peer,
                        timeout_ms = handshake_timeout.as_millis() as u64,
                        "TLS handshake timed out"
                    );
                    return;
                }
            },
        };
        drop(permit);

        serve_connection(tls, peer, true, http, router, cancel, force_close).await;
        drop(place);
    }
}

/// Serves HTTP on one connection until it closes, or gracefully stops it on `cancel` (forcibly
/// on `force_close`).
async fn serve_connection<S>(
    io: S,
    peer: SocketAddr,
    https: bool,
    http: auto::Builder<TokioExecutor>,
    router: Router,
    cancel: CancellationToken,
    force_close: CancellationToken,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        if https {
            req.extensions_mut().insert(web::security_log::ViaHttps);
        }
        router.clone().oneshot(req)
    });
    let conn = http.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = cancel.cancelled() => {
            conn.as_mut().graceful_shutdown();
            tokio::select! {
                r = conn.as_mut() => r,
                _ = force_close.cancelled() => return,
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "client connection ended with an error");
    }
}
