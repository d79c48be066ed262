//! The built-in authoritative DNS server for the workspace zone: binds UDP and TCP,
//! runs the health task and hickory's server until the node's cancellation token fires.
//!
//! Owns the DNS server's lifetime and its one error type. Must never run when `[dns] addr` is
//! absent, and never resolve names outside the workspace zone (see `zone`).

pub mod handler;
pub mod health;
pub mod ratelimit;
pub mod zone;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cluster::ClusterNode;
use tokio_util::sync::CancellationToken;

use crate::config::DnsSection;

/// How long an idle DNS-over-TCP connection is kept.
const TCP_IDLE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// The UDP or TCP socket could not be bound.
    #[error("cannot listen for DNS on {addr} ({proto}): {source}")]
    Bind {
        addr: SocketAddr,
        proto: &'static str,
        source: std::io::Error,
    },
    /// `[dns] workspace` is not a usable zone name (validation should have caught it).
    #[error("dns.workspace {workspace:?} is not a domain name: {message}")]
    Workspace { workspace: String, message: String },
}

/// Binds the DNS sockets (so a port conflict fails start-up) and spawns the server and the
/// health task; the returned handle ends after `cancel` fires and the server has stopped.
pub async fn start(
    cfg: &DnsSection,
    node: Arc<ClusterNode>,
    cancel: CancellationToken,
) -> Result<Option<tokio::task::JoinHandle<()>>, DnsError> {
    let Some(addr) = cfg.addr else {
        return Ok(None);
    };
    let workspace = cfg.workspace.clone().unwrap_or_default();
    let bad = |message: String| DnsError::Workspace {
        workspace: workspace.clone(),
        message,
    };
    let apex = zone::parse_zone(&workspace).map_err(|e| bad(e.to_string()))?;
    let zone =
        zone::Zone::new(apex.clone(), cfg.ttl_secs, node.id()).map_err(|e| bad(e.to_string()))?;
    let udp = tokio::net::UdpSocket::bind(addr)
        .await
        .map_err(|source| DnsError::Bind {
            addr,
            proto: "udp",
            source,
        })?;
    let tcp = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| DnsError::Bind {
            addr,
            proto: "tcp",
            source,
        })?;
    let view = health::SharedView::new();
    let handler = handler::Handler {
        zone,
        view: view.clone(),
        limiter: Arc::new(ratelimit::RateLimiter::new(
            cfg.rate_limit_qps,
            cfg.rate_limit_burst,
        )),
    };
    let mut server = hickory_server::Server::new(handler);
    server.register_socket(udp);
    server.register_listener(tcp, TCP_IDLE, 64);
    tracing::info!(%addr, zone = %workspace, ttl_secs = cfg.ttl_secs, "dns server listening");
    let health_task =
        cluster::spawn_named("dns-health", health::run(node, apex, view, cancel.clone()));
    Ok(Some(cluster::spawn_named("dns-server", async move {
        cancel.cancelled().await;
        if let Err(error) = server.shutdown_gracefully().await {
            tracing::warn!(%error, "dns server stopped with an error");
        }
        let _ = health_task.await;
    })))
}
