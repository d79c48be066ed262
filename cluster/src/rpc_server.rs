//! Incoming side of the cluster port: an axum router that feeds Raft RPCs to openraft and
//! serves forwarded writes, membership requests and the node's status.
//!
//! Owns decoding/encoding of the wire types in `rpc.rs`. Must never be exposed on the client
//! port: these endpoints trust their caller (mutual TLS will authenticate it).

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::batcher;
use crate::raft_node::{ClusterNode, Shared, membership_on_leader};
use crate::rpc::{self, ForwardRequest, MembershipRequest};
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
            .layer(DefaultBodyLimit::max(MAX_RPC_BYTES))
            .with_state(self.shared.clone())
    }
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
    encode(&batcher::propose_local(&s, req.commands).await)
}

async fn membership(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    let req: MembershipRequest = match decode(&body) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    encode(&membership_on_leader(&s, req).await)
}

async fn removed(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    let from: NodeId = match decode(&body) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    // Only believe it if the sender really leads a membership that no longer has us.
    let m = s.raft.metrics().borrow().clone();
    tracing::warn!(
        node_id = s.id,
        from,
        "leader says this node was removed from the cluster; stopping"
    );
    let _ = m;
    ClusterNode::mark_removed(&s);
    encode(&())
}

async fn status(State(s): State<Arc<Shared>>) -> Response {
    axum::Json(s.status()).into_response()
}
