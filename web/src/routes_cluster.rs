//! Cluster status, node membership, and the health endpoints.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cluster::NodeInfo;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::auth::Auth;
use crate::error::ApiError;
use crate::extract::JsonBody;
use crate::state::AppState;

#[derive(Serialize)]
pub struct NodeView {
    id: u64,
    api_addr: String,
    cluster_addr: String,
    voter: bool,
    role: String,
    term: Option<u64>,
    leader_id: Option<u64>,
    last_log_index: Option<u64>,
    last_applied: Option<u64>,
    healthy: bool,
    ready: bool,
    error: Option<String>,
}

#[derive(Serialize)]
pub struct ClusterView {
    node_id: u64,
    leader_id: Option<u64>,
    term: u64,
    nodes: Vec<NodeView>,
}

pub async fn cluster_view(s: &AppState) -> ClusterView {
    let m = s.node.metrics();
    let nodes = s
        .node
        .cluster_status()
        .await
        .into_iter()
        .map(|(id, info, voter, st)| match st {
            Ok(st) => NodeView {
                id,
                api_addr: info.api_addr,
                cluster_addr: info.cluster_addr,
                voter,
                role: st.state,
                term: Some(st.term),
                leader_id: st.leader_id,
                last_log_index: st.last_log_index,
                last_applied: st.last_applied,
                healthy: true,
                ready: st.ready,
                error: st.reason,
            },
            Err(e) => NodeView {
                id,
                api_addr: info.api_addr,
                cluster_addr: info.cluster_addr,
                voter,
                role: "unknown".into(),
                term: None,
                leader_id: None,
                last_log_index: None,
                last_applied: None,
                healthy: false,
                ready: false,
                error: Some(e),
            },
        })
        .collect();
    ClusterView {
        node_id: s.node.id(),
        leader_id: m.current_leader,
        term: m.current_term,
        nodes,
    }
}

pub async fn status(State(s): State<AppState>) -> Json<ClusterView> {
    Json(cluster_view(&s).await)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddNode {
    id: u64,
    api_addr: String,
    cluster_addr: String,
}

fn check_addr(what: &str, a: &str) -> Result<(), ApiError> {
    let ok = a
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0));
    if !ok {
        return Err(ApiError::InvalidRequest(format!(
            "{what} must be host:port, got '{a}'"
        )));
    }
    Ok(())
}

pub async fn add_node(
    State(s): State<AppState>,
    auth: Auth,
    JsonBody(req): JsonBody<AddNode>,
) -> Result<Json<ClusterView>, ApiError> {
    auth.require_admin()?;
    check_addr("api_addr", &req.api_addr)?;
    check_addr("cluster_addr", &req.cluster_addr)?;
    if req.id == 0 {
        return Err(ApiError::InvalidRequest(
            "node id must be at least 1".into(),
        ));
    }
    tracing::info!(new_node = req.id, by = %auth.user.username, "add node requested");
    s.node
        .add_node(
            req.id,
            NodeInfo {
                api_addr: req.api_addr,
                cluster_addr: req.cluster_addr,
            },
        )
        .await?;
    Ok(Json(cluster_view(&s).await))
}

pub async fn remove_node(
    State(s): State<AppState>,
    id: Result<Path<u64>, axum::extract::rejection::PathRejection>,
    auth: Auth,
) -> Result<Json<ClusterView>, ApiError> {
    let Path(id) =
        id.map_err(|_| ApiError::InvalidRequest("node id must be a positive integer".into()))?;
    auth.require_admin()?;
    tracing::info!(removed_node = id, by = %auth.user.username, "remove node requested");
    s.node.remove_node(id).await?;
    Ok(Json(cluster_view(&s).await))
}

pub async fn healthz(State(s): State<AppState>) -> Json<serde_json::Value> {
    Json(json!({"status": "ok", "node_id": s.node.id()}))
}

pub async fn readyz(State(s): State<AppState>) -> Response {
    let r = s.node.readiness();
    let status = if r.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({"ready": r.ready, "node_id": s.node.id(), "reason": r.reason})),
    )
        .into_response()
}
