//! Cluster status, node membership, draining, and the health endpoints.
//!
//! Owns the HTTP shape of the cluster view and of `/readyz`. Draining only takes a node out of
//! `/readyz` (and, elsewhere, DNS answers); must never make a draining node refuse requests,
//! since its existing clients keep using it until they move.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use cluster::{Command, NodeInfo};
use serde_json::json;

use std::sync::Arc;

use crate::auth::Auth;
use crate::error::ApiError;
use crate::extract::JsonBody;
use crate::state::AppState;
use crate::validate;
use api::rest::AddNodeRequest;
use api::rest::{ClusterStatus, NodeStatus, Readyz};

/// The cluster as this node's member-health probe sees it. The probe runs now (operators and
/// the client failover want the truth, not a view up to a second old) and is published as the
/// shared view, so DNS answers and this reply come from the same probe.
pub async fn cluster_view(s: &AppState) -> ClusterStatus {
    let hv = s.node.refresh_health().await;
    render(s, &hv)
}

/// Coalesces the probes of anonymous `GET /api/v1/cluster` requests: one probe at a time,
/// and a request is answered by the first probe that started after it arrived, so every answer
/// is as fresh as its own probe would have been, while a flood of requests costs one probe of
/// the members at a time instead of one per request.
#[derive(Default)]
pub struct ProbeGate {
    /// Held while probing; waiters queue here in arrival order.
    running: tokio::sync::Mutex<()>,
    /// When the last gated probe started, and what it saw. A std mutex: read or replaced in
    /// one step, never held across an `.await`.
    last: std::sync::Mutex<Option<(tokio::time::Instant, Arc<cluster::HealthView>)>>,
}

/// The cluster view for an anonymous caller, through the node's [`ProbeGate`].
pub async fn gated_cluster_view(s: &AppState) -> ClusterStatus {
    let arrived = tokio::time::Instant::now();
    let gate = &s.cluster_probe;
    let _turn = gate.running.lock().await;
    let seen = gate
        .last
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    if let Some((started, hv)) = seen
        && started >= arrived
    {
        return render(s, &hv);
    }
    let started = tokio::time::Instant::now();
    let hv = s.node.refresh_health().await;
    *gate
        .last
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((started, hv.clone()));
    render(s, &hv)
}

fn render(s: &AppState, hv: &cluster::HealthView) -> ClusterStatus {
    let m = s.node.metrics();
    let nodes = hv
        .members
        .iter()
        .map(|member| {
            let serving = member.serving();
            let (id, info, voter) = (member.id, member.info.clone(), member.voter);
            match &member.status {
                Ok(st) => NodeStatus {
                    id,
                    api_addr: info.api_addr,
                    cluster_addr: info.cluster_addr,
                    https_addr: st.https_addr.clone(),
                    voter,
                    role: st.state.clone(),
                    term: Some(st.term),
                    leader_id: st.leader_id,
                    last_log_index: st.last_log_index,
                    last_applied: st.last_applied,
                    healthy: true,
                    ready: st.ready,
                    draining: member.draining,
                    serving: Some(serving),
                    error: st.reason.clone(),
                    insecure_plaintext: st.insecure_plaintext,
                    storage: st.storage.as_ref().map(|s| api::rest::StorageStatus {
                        free_bytes: s.free_bytes,
                        min_free_bytes: s.min_free_bytes,
                        state: s.state.clone(),
                        reason: s.reason.clone(),
                    }),
                },
                Err(e) => NodeStatus {
                    id,
                    api_addr: info.api_addr,
                    cluster_addr: info.cluster_addr,
                    https_addr: None,
                    voter,
                    role: "unknown".into(),
                    term: None,
                    leader_id: None,
                    last_log_index: None,
                    last_applied: None,
                    healthy: false,
                    ready: false,
                    draining: member.draining,
                    serving: Some(serving),
                    error: Some(e.clone()),
                    insecure_plaintext: false,
                    storage: None,
                },
            }
        })
        .collect();
    ClusterStatus {
        node_id: s.node.id(),
        leader_id: m.current_leader,
        term: m.current_term,
        periodic_probe_ms_ago: Some(
            u64::try_from(s.node.periodic_probe_age().as_millis()).unwrap_or(u64::MAX),
        ),
        nodes,
    }
}

#[utoipa::path(
    get,
    path = "/api/v1/cluster",
    tag = "cluster",
    responses(
        (status = 200, description = "the cluster as a probe of every member started after the request arrived sees it; anonymous requests share probes (one at a time)", body = api::rest::ClusterStatus)
    )
)]
pub async fn status(State(s): State<AppState>, headers: HeaderMap) -> Json<ClusterStatus> {
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    // The route stays public: a missing or bad token just means the cached view.
    let authenticated = match token {
        Some(t) => crate::auth::authenticate(&s, t.trim()).await.is_ok(),
        None => false,
    };
    if authenticated {
        Json(cluster_view(&s).await)
    } else {
        Json(gated_cluster_view(&s).await)
    }
}

#[utoipa::path(
    post,
    path = "/api/v1/cluster/nodes",
    tag = "cluster",
    request_body = api::rest::AddNodeRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the cluster with the new voter", body = api::rest::ClusterStatus),
        (status = 400, description = "`invalid_request`: a bad id or address, or the node does not answer on its cluster port", body = api::error::ErrorBody),
        (status = 403, description = "`forbidden`: admins only", body = api::error::ErrorBody),
        (status = 404, description = "`not_found`: not a member", body = api::error::ErrorBody),
        (status = 409, description = "`membership_change_in_progress` or `unsafe_membership_change`", body = api::error::ErrorBody),
        (status = 503, description = "`unavailable`: no leader or quorum right now, or `disk_full`: free space below the watermark here or on a majority of voters; nothing was written, retrying is safe", body = api::error::ErrorBody)
    )
)]
pub async fn add_node(
    State(s): State<AppState>,
    auth: Auth,
    body: Result<JsonBody<AddNodeRequest>, ApiError>,
) -> Result<Json<ClusterStatus>, ApiError> {
    auth.require_admin()?;
    // Non-admins are refused before the body is read: they learn nothing of its shape.
    let JsonBody(req) = body?;
    validate::host_port("api_addr", &req.api_addr)?;
    validate::host_port("cluster_addr", &req.cluster_addr)?;
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

#[utoipa::path(
    delete,
    path = "/api/v1/cluster/nodes/{id}",
    tag = "cluster",
    params(("id" = u64, Path, description = "the node id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the cluster without the node", body = api::rest::ClusterStatus),
        (status = 400, description = "`invalid_request`: a bad id or address, or the node does not answer on its cluster port", body = api::error::ErrorBody),
        (status = 403, description = "`forbidden`: admins only", body = api::error::ErrorBody),
        (status = 404, description = "`not_found`: not a member", body = api::error::ErrorBody),
        (status = 409, description = "`membership_change_in_progress` or `unsafe_membership_change`", body = api::error::ErrorBody),
        (status = 503, description = "`unavailable`: no leader or quorum right now, or `disk_full`: free space below the watermark here or on a majority of voters; nothing was written, retrying is safe", body = api::error::ErrorBody)
    )
)]
pub async fn remove_node(
    State(s): State<AppState>,
    id: Result<Path<u64>, axum::extract::rejection::PathRejection>,
    auth: Auth,
) -> Result<Json<ClusterStatus>, ApiError> {
    let Path(id) =
        id.map_err(|_| ApiError::InvalidRequest("node id must be a positive integer".into()))?;
    auth.require_admin()?;
    tracing::info!(removed_node = id, by = %auth.user.username, "remove node requested");
    s.node.remove_node(id).await?;
    Ok(Json(cluster_view(&s).await))
}

/// `POST /api/v1/cluster/nodes/{id}/drain`.
#[utoipa::path(
    post,
    path = "/api/v1/cluster/nodes/{id}/drain",
    tag = "cluster",
    params(("id" = u64, Path, description = "the node id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the cluster, `draining` set on the node", body = api::rest::ClusterStatus),
        (status = 400, description = "`invalid_request`: the id is not a number", body = api::error::ErrorBody),
        (status = 403, description = "`forbidden`: admins only", body = api::error::ErrorBody),
        (status = 404, description = "`not_found`: not a member", body = api::error::ErrorBody),
        (status = 503, description = "`unavailable`: no leader or quorum right now, or `disk_full`: free space below the watermark here or on a majority of voters; nothing was written, retrying is safe", body = api::error::ErrorBody)
    )
)]
pub async fn drain(
    State(s): State<AppState>,
    id: Result<Path<u64>, axum::extract::rejection::PathRejection>,
    auth: Auth,
) -> Result<Json<ClusterStatus>, ApiError> {
    set_draining(s, id, auth, true).await
}

/// `DELETE /api/v1/cluster/nodes/{id}/drain`.
#[utoipa::path(
    delete,
    path = "/api/v1/cluster/nodes/{id}/drain",
    tag = "cluster",
    params(("id" = u64, Path, description = "the node id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the cluster, `draining` cleared on the node", body = api::rest::ClusterStatus),
        (status = 400, description = "`invalid_request`: the id is not a number", body = api::error::ErrorBody),
        (status = 403, description = "`forbidden`: admins only", body = api::error::ErrorBody),
        (status = 404, description = "`not_found`: not a member", body = api::error::ErrorBody),
        (status = 503, description = "`unavailable`: no leader or quorum right now, or `disk_full`: free space below the watermark here or on a majority of voters; nothing was written, retrying is safe", body = api::error::ErrorBody)
    )
)]
pub async fn undrain(
    State(s): State<AppState>,
    id: Result<Path<u64>, axum::extract::rejection::PathRejection>,
    auth: Auth,
) -> Result<Json<ClusterStatus>, ApiError> {
    set_draining(s, id, auth, false).await
}

async fn set_draining(
    s: AppState,
    id: Result<Path<u64>, axum::extract::rejection::PathRejection>,
    auth: Auth,
    draining: bool,
) -> Result<Json<ClusterStatus>, ApiError> {
    let Path(id) =
        id.map_err(|_| ApiError::InvalidRequest("node id must be a positive integer".into()))?;
    auth.require_admin()?;
    // Refused here without a write when the id is not a member, after catching up with the
    // leader once (a node added through another node a moment ago must not be refused). The
    // state machine checks membership again at apply, since a removal may race with this.
    let is_member = || s.node.members().iter().any(|(m, _)| *m == id);
    if !is_member() {
        s.node
            .sync_with_leader(std::time::Duration::from_secs(3))
            .await?;
        if !is_member() {
            return Err(ApiError::NotFound(format!("node {id} is not a member")));
        }
    }
    s.write_applied(Command::SetDraining {
        node_id: id,
        draining,
    })
    .await?;
    tracing::info!(node = id, draining, by = %auth.user.username, "drain flag set");
    Ok(Json(cluster_view(&s).await))
}

#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    responses(
        (status = 200, description = "the process runs", body = crate::openapi::Healthz)
    )
)]
pub async fn healthz(State(s): State<AppState>) -> Json<serde_json::Value> {
    Json(json!({"status": "ok", "node_id": s.node.id()}))
}

/// 200 only when this node is ready and not draining. A draining node says so (load balancers
/// and reconnecting clients skip it) but keeps serving every request it gets.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    responses(
        (status = 200, description = "ready", body = api::rest::Readyz),
        (status = 503, description = "not ready (no leader, catching up, free space below the watermark) or draining", body = api::rest::Readyz)
    )
)]
pub async fn readyz(State(s): State<AppState>) -> Response {
    let r = s.node.readiness();
    let draining = s.node.is_draining();
    let ready = r.ready && !draining;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    // The operator's decision is named first: a drained node that is also catching up is
    // reported as draining, the state that will not change by itself.
    let reason = if draining {
        Some("draining".to_owned())
    } else {
        r.reason
    };
    (
        status,
        Json(Readyz {
            draining,
            node_id: Some(s.node.id()),
            ready,
            reason,
        }),
    )
        .into_response()
}
