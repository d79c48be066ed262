//! Incoming side of the cluster port: an axum router that feeds Raft RPCs to openraft and
//! serves forwarded writes, membership requests and the node's status.
//!
//! Owns decoding/encoding of the wire types in `rpc.rs` and `serve_cluster_port`, the one way
//! the port is served (mutual TLS when `PeerTls` is configured, plain HTTP otherwise). Must
//! never be exposed on the client port: these endpoints trust their caller.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Extension, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::node::membership::membership_on_leader;
use crate::node::raft_node::ClusterNode;
use crate::node::shared::Shared;
use crate::transport::peer_tls::{PeerIdentity, PeerTls};
use crate::transport::rpc::{self, ForwardError, ForwardReply, ForwardRequest, MembershipRequest};
use crate::types::{NodeId, TypeConfig};

/// Snapshot chunks and large AppendEntries batches must fit.
const MAX_RPC_BYTES: usize = 256 * 1024 * 1024;

impl ClusterNode {
    /// The router to serve on the cluster port.
    pub fn rpc_router(self: &Arc<Self>) -> Router {
        Router::new()
            .route(rpc::PATH_APPEND, post(append))
            .route(rpc::PATH_VOTE, post(vote))
            .route(rpc::PATH_SNAPSHOT, post(snapshot))
            .route(rpc::PATH_FORWARD, post(forward))
            .route(rpc::PATH_MEMBERSHIP, post(membership))
            .route(rpc::PATH_REMOVED, post(removed))
            .route(rpc::PATH_STATUS, get(status))
            .route(rpc::PATH_EPHEMERAL, post(ephemeral))
            .route(rpc::PATH_VERSION, get(version))
            .layer(DefaultBodyLimit::max(MAX_RPC_BYTES))
            .with_state(self.shared.clone())
    }
}

/// Serves `router` (from `ClusterNode::rpc_router`) on the cluster port until `cancel` fires.
///
/// With `tls`: every connection must complete a mutual TLS handshake that proves a current
/// member (see `peer_tls`), handshakes time out after 5 s, at most 256 connections are open,
/// 32 per source address, and each request carries the peer's `PeerIdentity`. Without (a
/// loopback-only lab setup): plain HTTP/1.1 under the same connection caps.
pub async fn serve_cluster_port(
    listener: tokio::net::TcpListener,
    router: Router,
    tls: Option<Arc<PeerTls>>,
    cancel: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    match tls {
        Some(tls) => crate::transport::peer_tls::serve_tls(listener, router, tls, cancel).await,
        None => serve_plain(listener, router, cancel).await,
    }
}

/// The plain cluster port: accept, the connection caps, HTTP/1.1;
/// on `cancel`, stop accepting and give open connections a moment to finish.
async fn serve_plain(
    listener: tokio::net::TcpListener,
    router: Router,
    cancel: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    use crate::transport::conn_limit::{ConnLimiter, RefusalLog};
    use crate::transport::peer_tls::{MAX_CONNECTIONS, MAX_CONNECTIONS_PER_SOURCE};
    use tower::ServiceExt;
    let limiter = ConnLimiter::new(MAX_CONNECTIONS, MAX_CONNECTIONS_PER_SOURCE);
    let refusals = RefusalLog::default();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(error) => {
                    tracing::warn!(%error, "cluster port: accept failed");
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tokio::time::sleep(std::time::Duration::from_millis(100)) => continue,
                    }
                }
            },
        };
        let place = match limiter.admit(peer.ip()) {
            Ok(p) => p,
            Err(cap) => {
                if let Some(refused) = refusals.note() {
                    tracing::warn!(%peer, cap = cap.as_str(), refused, "cluster port: connections refused at their cap");
                }
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let (router, cancel) = (router.clone(), cancel.clone());
        crate::node::spawn_named("cluster-conn", async move {
            let service = hyper::service::service_fn(move |req| router.clone().oneshot(req));
            // No header-read timeout, as with mutual TLS: it would also close pooled peer
            // connections idle between requests (peers keep them 60 s) and race their reuse.
            // The per-source cap is what bounds a slow client here.
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tcp), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = cancel.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), conn.as_mut()).await;
                }
            }
            drop(place);
        });
    }
    drop(listener);
    // Every connection holds its place until it ends: none left open means drained.
    let drained = async {
        while limiter.open() > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(3), drained).await;
    Ok(())
}

fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, Response> {
    bincode::deserialize(body)
        .map_err(|e| (StatusCode::BAD_REQUEST, format!("bad rpc body: {e}")).into_response())
}

fn encode<T: Serialize>(value: &T) -> Response {
    match bincode::serialize(value) {
        Ok(bytes) => ([("content-type", "application/octet-stream")], bytes).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("encode: {e}")).into_response(),
    }
}

async fn append(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    let req: openraft::raft::AppendEntriesRequest<TypeConfig> = match decode(&body) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    if let Ok(mut t) = s.last_leader_contact.lock() {
        *t = std::time::Instant::now();
    }
    encode(&s.raft.append_entries(req).await)
}

async fn vote(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    let req: openraft::raft::VoteRequest<NodeId> = match decode(&body) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    encode(&s.raft.vote(req).await)
}

async fn snapshot(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    let req: openraft::raft::InstallSnapshotRequest<TypeConfig> = match decode(&body) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    encode(&s.raft.install_snapshot(req).await)
}

async fn forward(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    let req: ForwardRequest = match decode(&body) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let leader = s.raft.metrics().borrow().current_leader;
    if leader != Some(s.id) {
        return encode(&ForwardReply::Err(ForwardError::NotLeader { leader }));
    }
    // Into the leader's own batcher: commands forwarded by every follower and the leader's own
    // clients then share one entry, one fsync per node and one replication round.
    let results =
        futures::future::join_all(req.commands.iter().cloned().map(|cmd| s.submit(cmd))).await;
    let mut outcomes = Vec::with_capacity(results.len());
    let mut index = 0;
    for r in results {
        match r {
            Ok((outcome, i)) => {
                index = index.max(i);
                outcomes.push(outcome);
            }
            Err(e) => return encode(&ForwardReply::Err(ForwardError::Unavailable(e.to_string()))),
        }
    }
    encode(&ForwardReply::Ok(rpc::ForwardOk {
        index,
        response: crate::command::Response { outcomes },
    }))
}

async fn membership(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    let req: MembershipRequest = match decode(&body) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    encode(&membership_on_leader(&s, req).await)
}

async fn removed(
    State(s): State<Arc<Shared>>,
    identity: Option<Extension<PeerIdentity>>,
    body: Bytes,
) -> Response {
    let from: NodeId = match decode(&body) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    // Over mutual TLS the sender's certificate names it: one member cannot speak for another.
    let authenticated = match identity {
        Some(Extension(peer)) if peer.node_id != from => {
            return (
                StatusCode::FORBIDDEN,
                format!(
                    "the sender's certificate is node {}'s, not node {from}'s",
                    peer.node_id
                ),
            )
                .into_response();
        }
        Some(_) => true,
        None => false,
    };
    // Never take the claim on trust (it would let anyone on the cluster port stop a member):
    // ask the sender, at the address our own membership has for it, whether it leads a
    // membership without us.
    let Some(info) = s.node_info(from) else {
        return (
            StatusCode::FORBIDDEN,
            "sender is not a member known to this node",
        )
            .into_response();
    };
    let verdict = s
        .http
        .status(&info.cluster_addr, std::time::Duration::from_secs(2))
        .await;
    match verdict {
        Ok(st) if st.id == from && st.state == "leader" && !st.members.contains(&s.id) => {
            tracing::warn!(
                node_id = s.id,
                from,
                "the leader removed this node from the cluster; stopping"
            );
            ClusterNode::mark_removed(&s);
            encode(&())
        }
        Ok(_) => (
            StatusCode::CONFLICT,
            "the sender does not lead a membership without this node",
        )
            .into_response(),
        // With mutual TLS the leader refuses our connection once it has applied our removal
        // (we are no longer a member), so the check above cannot succeed. The notice itself
        // came over a connection authenticated as `from`, a member in our own membership; a
        // member can already do far worse than stop us, so its word is enough here.
        Err(e) if authenticated => {
            tracing::warn!(
                node_id = s.id,
                from,
                error = %e.short(),
                "an authenticated member says this node was removed, and it no longer admits us; stopping"
            );
            ClusterNode::mark_removed(&s);
            encode(&())
        }
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("cannot verify the removal: {e}"),
        )
            .into_response(),
    }
}

async fn ephemeral(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    // No receivers (no WebSocket layer on this node) is fine: the notice is simply dropped.
    let _ = s.ephemeral.send(body);
    axum::http::StatusCode::NO_CONTENT.into_response()
}

async fn version() -> Response {
    axum::Json(crate::node::versions::VersionWire::current()).into_response()
}

async fn status(State(s): State<Arc<Shared>>) -> Response {
    axum::Json(s.status()).into_response()
}
