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
use axum::routing::{MethodRouter, get, post, put};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::node::membership::membership_on_leader;
use crate::node::raft_node::ClusterNode;
use crate::node::shared::Shared;
use crate::transport::peer_tls::{PeerIdentity, PeerTls};
use crate::transport::rpc::{self, ForwardError, ForwardReply, ForwardRequest, MembershipRequest};
use crate::transport::snapshot_keepalive;
use crate::types::{NodeId, TypeConfig};

/// Snapshot chunks and large AppendEntries batches must fit (up to `max_payload_entries`
/// entries, each a whole write batch).
const MAX_RAFT_BYTES: usize = 256 * 1024 * 1024;
/// Forwarded writes: one follower batch of client commands (`write.batch_max_bytes`, 1 MiB by
/// default, each command at most a client request of `max_request_bytes`), with a wide margin
/// for operators who raise both.
const MAX_FORWARD_BYTES: usize = 64 * 1024 * 1024;
/// Votes, membership requests, removal notices and ephemeral notices are a few hundred bytes.
const MAX_SMALL_BYTES: usize = 1024 * 1024;
/// A blob pushed by a peer: at most one chunk.
const MAX_BLOB_BYTES: usize = crate::blobs::CHUNK_MAX;

impl ClusterNode {
    /// The router to serve on the cluster port. Each route has its own body limit (a body over
    /// it is refused with 413 before it is read in full), and every bincode body is decoded
    /// with a size limit (`decode`).
    pub fn rpc_router(self: &Arc<Self>) -> Router {
        Router::new()
            .route(rpc::PATH_APPEND, limited(post(append), MAX_RAFT_BYTES))
            .route(rpc::PATH_VOTE, limited(post(vote), MAX_SMALL_BYTES))
            .route(rpc::PATH_SNAPSHOT, limited(post(snapshot), MAX_RAFT_BYTES))
            .route(rpc::PATH_FORWARD, limited(post(forward), MAX_FORWARD_BYTES))
            .route(
                rpc::PATH_MEMBERSHIP,
                limited(post(membership), MAX_SMALL_BYTES),
            )
            .route(rpc::PATH_REMOVED, limited(post(removed), MAX_SMALL_BYTES))
            .route(rpc::PATH_STATUS, get(status))
            .route(
                rpc::PATH_EPHEMERAL,
                limited(post(ephemeral), MAX_SMALL_BYTES),
            )
            .route(rpc::PATH_VERSION, get(version))
            .route(
                &format!("{}/{{sha}}", rpc::PATH_BLOBS),
                limited(put(put_blob), MAX_BLOB_BYTES).get(get_blob),
            )
            .route(
                crate::node::handover::PATH_CAMPAIGN,
                limited(post(campaign), MAX_SMALL_BYTES),
            )
            .with_state(self.shared.clone())
    }
}

/// `route` with a body limit of `max` bytes: a `Content-Length` over it is answered 413 before
/// the body is read (`announced_length`), and a body that grows over it while streaming (chunked)
/// is cut off by `DefaultBodyLimit`.
fn limited(route: MethodRouter<Arc<Shared>>, max: usize) -> MethodRouter<Arc<Shared>> {
    route
        .layer(DefaultBodyLimit::max(max))
        .layer(axum::middleware::from_fn_with_state(max, announced_length))
}

/// `DefaultBodyLimit` only stops reading once `max` bytes arrived, so a sender that announces
/// 1 GiB and then sends nothing would keep the request (and its connection slot) waiting;
/// refuse the announcement itself.
async fn announced_length(
    State(max): State<usize>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let announced = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > u64::try_from(max).unwrap_or(u64::MAX)) {
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is over this route's limit of {max} bytes"),
        )
            .into_response();
    }
    next.run(req).await
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

/// Decodes a request body with the size limit of [`rpc::decode_limited`]: a length prefix that
/// claims more than the body holds is refused before anything is allocated for it.
fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, Response> {
    rpc::decode_limited(body)
        .map_err(|e| (StatusCode::BAD_REQUEST, format!("bad rpc body: {e}")).into_response())
}

/// An AppendEntries a member sends that this binary cannot decode almost always carries entries
/// of a newer binary (commands this one does not know). Nothing of it is appended, so this node
/// falls behind rather than diverge; the leader retries every heartbeat, so this says why at
/// most every 10 s.
fn report_undecodable_append(s: &Shared, bytes: usize, error: &bincode::Error) {
    static LAST: std::sync::Mutex<Option<std::time::Instant>> = std::sync::Mutex::new(None);
    let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
    if last.is_some_and(|t| t.elapsed() < std::time::Duration::from_secs(10)) {
        return;
    }
    *last = Some(std::time::Instant::now());
    tracing::error!(
        node_id = s.id,
        bytes,
        %error,
        speaks_up_to = crate::command::COMMAND_VERSION,
        "cannot decode an append-entries request from the leader: it most likely carries log entries of a newer command version than this binary speaks; upgrade this node"
    );
}

fn encode<T: Serialize>(value: &T) -> Response {
    match rpc::encode(value) {
        Ok(bytes) => ([("content-type", "application/octet-stream")], bytes).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("encode: {e}")).into_response(),
    }
}

async fn append(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    let req: openraft::raft::AppendEntriesRequest<TypeConfig> = match rpc::decode_limited(&body) {
        Ok(r) => r,
        Err(e) => {
            report_undecodable_append(&s, body.len(), &e);
            return (StatusCode::BAD_REQUEST, format!("bad rpc body: {e}")).into_response();
        }
    };
    let arrived = std::time::Instant::now();
    let (vote, leader_commit) = (req.vote, req.leader_commit);
    let resp = s.raft.append_entries(req).await;
    // Only a leader Raft accepted counts as contact (for the election gate and the pre-vote
    // answer): a deposed leader's stale heartbeats must not hold back an election. And a
    // healing node learns how far it must catch up from such a leader only.
    if let Ok(r) = &resp
        && !matches!(r, openraft::raft::AppendEntriesResponse::HigherVote(_))
    {
        s.note_leader_contact(arrived);
        s.heal.note_append(&vote, leader_commit.as_ref());
    }
    encode(&resp)
}

async fn vote(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    let req: openraft::raft::VoteRequest<NodeId> = match decode(&body) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    // A node healing from quarantined storage may have lost entries it acknowledged: its vote
    // could elect a leader that lacks them (see `heal_gate`).
    if let Some(reason) = s.heal.reason() {
        tracing::info!(node_id = s.id, candidate = ?req.vote.leader_id.voted_for(), term = req.vote.leader_id.term, "refusing a vote request while healing");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not voting: {reason}"),
        )
            .into_response();
    }
    encode(&s.raft.vote(req).await)
}

async fn snapshot(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    let req: openraft::raft::InstallSnapshotRequest<TypeConfig> = match decode(&body) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    // Every chunk, and the wait for the last one's install, counts as the leader's heartbeat
    // (see `snapshot_keepalive`): otherwise this follower campaigns mid-transfer and resets it.
    let vote = req.vote;
    snapshot_keepalive::note_chunk(&s, vote);
    let install = s.raft.install_snapshot(req);
    tokio::pin!(install);
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(
        s.config.election_timeout_min_ms.max(10),
    ));
    let resp = loop {
        tokio::select! {
            r = &mut install => break r,
            _ = tick.tick() => snapshot_keepalive::note_chunk(&s, vote),
        }
    };
    snapshot_keepalive::note_chunk(&s, vote);
    encode(&resp)
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
    // During a leadership handover: answered once it ended, with the new leader (`handover`).
    let Some(_ticket) = s.handover.admit_forward().await else {
        let leader = s.raft.metrics().borrow().current_leader;
        return encode(&ForwardReply::Err(ForwardError::NotLeader { leader }));
    };
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

/// A leader hands over leadership to this node (`handover`): start an election now.
async fn campaign(
    State(s): State<Arc<Shared>>,
    identity: Option<Extension<PeerIdentity>>,
    body: Bytes,
) -> Response {
    let req: crate::node::handover::CampaignRequest = match decode(&body) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let peer = identity.map(|Extension(p)| p.node_id);
    encode(&crate::node::handover::on_campaign(&s, req, peer).await)
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

/// A peer pushes a blob (`rpc::PATH_BLOBS`): 204 once it is durably on disk here, 400 when the
/// bytes do not hash to the name.
async fn put_blob(
    State(s): State<Arc<Shared>>,
    axum::extract::Path(sha): axum::extract::Path<String>,
    body: Bytes,
) -> Response {
    let store = s.blobs.clone();
    match tokio::task::spawn_blocking(move || store.put(&sha, &body)).await {
        Ok(Ok(_)) => StatusCode::NO_CONTENT.into_response(),
        Ok(Err(
            e
            @ (crate::blobs::BlobError::BadName(_) | crate::blobs::BlobError::HashMismatch { .. }),
        )) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// A peer asks for a blob: its bytes (checked against the name first) or 404.
async fn get_blob(
    State(s): State<Arc<Shared>>,
    axum::extract::Path(sha): axum::extract::Path<String>,
) -> Response {
    let store = s.blobs.clone();
    match tokio::task::spawn_blocking(move || store.read_verified(&sha)).await {
        Ok(Ok(bytes)) => ([("content-type", "application/octet-stream")], bytes).into_response(),
        Ok(Err(crate::blobs::BlobError::NotFound(_) | crate::blobs::BlobError::BadName(_))) => {
            StatusCode::NOT_FOUND.into_response()
        }
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn version() -> Response {
    axum::Json(crate::node::versions::VersionWire::current()).into_response()
}

async fn status(State(s): State<Arc<Shared>>) -> Response {
    axum::Json(s.status()).into_response()
}
