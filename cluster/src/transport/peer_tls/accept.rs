//! The cluster port over mutual TLS: accept, handshake with the current `ServerConfig`, serve
//! the cluster router over HTTP/1.1 on each connection, and close a connection whose peer stops
//! passing the checks (revoked, expired, removed from the membership).
//!
//! Owns the per-connection tasks and their bound. Must never serve a request before the
//! handshake (and so the client certificate and membership checks) completed, and never block
//! the accept loop on one peer's handshake.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls::pki_types::CertificateDer;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::{PeerIdentity, PeerTls};
use crate::node::spawn_named;

/// A peer that has not finished its handshake by then is dropped (a half-open or hostile
/// connection must not hold a slot).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Open connections at once. A member keeps a few pooled connections to each peer; this is
/// far above what a cluster of a handful of nodes needs and bounds what a flood can take.
const MAX_CONNECTIONS: usize = 256;
/// Long-lived pooled connections re-check their peer this often even without a change, so a
/// certificate that expires while connected stops being served.
const RECHECK_PERIOD: Duration = Duration::from_secs(60);
/// How long shutdown waits for connections to finish their current request.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// The `security` log target (the same name as the `web` crate's `security_log::TARGET`, which
/// this layer cannot depend on): refused peers are security events.
const SECURITY: &str = "security";
/// Pause after a failed accept (out of file descriptors): retrying at once would spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Serves `router` on `listener` with mutual TLS until `cancel` fires, then drains.
#[tracing::instrument(skip_all, fields(node_id = tls.node_id()))]
pub(crate) async fn serve_tls(
    listener: TcpListener,
    router: Router,
    tls: Arc<PeerTls>,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let slot = tokio::select! {
            _ = cancel.cancelled() => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break, // never closed; the loop simply ends if it were
            },
        };
        let (tcp, peer) = tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(error) => {
                    tracing::warn!(node_id = tls.node_id(), %error, "cluster port: accept failed");
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => continue,
                    }
                }
            },
        };
        let (tls, router, cancel) = (tls.clone(), router.clone(), cancel.clone());
        spawn_named("cluster-conn", async move {
            serve_connection(tcp, peer, router, tls, cancel).await;
            drop(slot);
        });
    }
    // Refuse new connects while draining rather than leave them in the backlog.
    drop(listener);
    // Every connection task holds one slot until it ends: getting them all back means drained.
    let all = u32::try_from(MAX_CONNECTIONS).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, slots.acquire_many(all)).await;
    Ok(())
}

// Events carry `node_id` and `peer` themselves rather than through a span: a warn-only
// filter drops info-level spans, and a refusal without the peer's address is useless.
async fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    router: Router,
    tls: Arc<PeerTls>,
    cancel: CancellationToken,
) {
    let node_id = tls.node_id();
    if let Err(error) = tcp.set_nodelay(true) {
        tracing::debug!(node_id, %peer, %error, "cannot set TCP_NODELAY on a cluster connection");
    }
    let Some(stream) = handshake(tcp, peer, &tls, &cancel).await else {
        return;
    };
    let chain: Vec<CertificateDer<'static>> = stream
        .get_ref()
        .1
        .peer_certificates()
        .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
        .unwrap_or_default();
    // The verifier admitted this chain during the handshake; running the checks once more
    // yields the node id (rustls keeps only the certificates) and cannot disagree unless the
    // material changed in between, in which case refusing is right.
    let node = match tls.recheck(&chain) {
        Ok(node) => node,
        Err(reason) => {
            tracing::warn!(target: SECURITY, event = "peer.cert_refused", node_id, source = %peer, %reason, "cluster port: peer refused after the handshake");
            return;
        }
    };
    tracing::debug!(node_id, %peer, peer_node = node, "cluster port: peer connected");
    let identity = PeerIdentity { node_id: node };
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(identity);
        router.clone().oneshot(req)
    });
    let conn =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let mut changes = tls.subscribe();
    let mut recheck = tokio::time::interval(RECHECK_PERIOD);
    recheck.reset();
    loop {
        tokio::select! {
            done = conn.as_mut() => {
                if let Err(error) = done {
                    tracing::debug!(node_id, %peer, peer_node = node, %error, "cluster connection ended with an error");
                }
                return;
            }
            _ = cancel.cancelled() => {
                conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(DRAIN_TIMEOUT, conn.as_mut()).await;
                return;
            }
            // Never an error: this task holds the `PeerTls` that owns the sender.
            Ok(()) = changes.changed() => {
                if !still_admitted(&tls, &chain, node, peer) {
                    return;
                }
            }
            _ = recheck.tick() => {
                if !still_admitted(&tls, &chain, node, peer) {
                    return;
                }
            }
        }
    }
}

/// The TLS handshake, bounded by `HANDSHAKE_TIMEOUT`; `None` (logged) when it fails, times out
/// or the node shuts down.
async fn handshake(
    tcp: TcpStream,
    peer: SocketAddr,
    tls: &PeerTls,
    cancel: &CancellationToken,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let node_id = tls.node_id();
    // Read the configuration per connection: `PeerTls::update` swaps it behind the Arc.
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.server_config());
    tokio::select! {
        _ = cancel.cancelled() => None,
        r = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)) => match r {
            Ok(Ok(stream)) => Some(stream),
            Ok(Err(error)) => {
                // The client only sees an alert or a closed connection: the reason is here.
                // Also what a plain-HTTP request or a client without a certificate gets.
                tracing::warn!(target: SECURITY, event = "peer.cert_refused", node_id, source = %peer, reason = %describe(&error), "cluster port: TLS handshake refused");
                None
            }
            Err(_) => {
                tracing::warn!(node_id, %peer, timeout = ?HANDSHAKE_TIMEOUT, "cluster port: TLS handshake timed out");
                None
            }
        },
    }
}

/// Whether the peer still passes every check; logs why not. Returning false drops the
/// connection at once (no graceful close: the peer is no longer trusted with a reply).
fn still_admitted(
    tls: &PeerTls,
    chain: &[CertificateDer<'static>],
    node: u64,
    peer: SocketAddr,
) -> bool {
    match tls.recheck(chain) {
        Ok(_) => true,
        Err(reason) => {
            tracing::warn!(target: SECURITY, event = "peer.cert_refused", node_id = tls.node_id(), source = %peer, peer_node = node, %reason, "cluster port: closing the connection of a peer no longer admitted");
            false
        }
    }
}

/// The precise reason inside a handshake error: our own refusal text when it is ours, rustls's
/// message otherwise (its `Display` of a custom error is a nest of `Debug` wrappers).
fn describe(error: &std::io::Error) -> String {
    match error
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    {
        Some(tls) => super::reason(tls),
        None => error.to_string(),
    }
}
