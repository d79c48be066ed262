//! Static DNS records of the workspace zone (`/api/v1/dns/records`), admin only.
//!
//! Owns the HTTP shape of records (`{"name","type","ttl","value"}`, value in zone-file
//! presentation form) and the check of every field before anything is proposed, so a refused
//! request writes nothing. The state machine checks again at apply (`cluster::state::dns_records`) and
//! alone decides conflicts (a CNAME beside other records). Must never know the workspace name:
//! names here are relative to the zone, as stored.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cluster::state::dns_records::{self, DnsRecord, DnsRecordData, DnsRecordType};
use cluster::{Applied, Command};
use serde::Deserialize;

use crate::auth::Auth;
use crate::error::ApiError;
use crate::extract::{INDEX_HEADER, JsonBody, MinIndex};
use crate::state::AppState;
use crate::wire;
use api::rest::NewDnsRecordRequest;
use api::rest::{DnsRecordsEnvelope, RemovedEnvelope};

/// One record as the API shows it (the value in zone-file form).
fn wire_record(r: &DnsRecord) -> api::rest::DnsRecord {
    api::rest::DnsRecord {
        name: r.name.clone(),
        rtype: r.rtype().as_str().to_owned(),
        ttl: r.ttl,
        value: r.data.presentation(),
    }
}

fn parse_type(t: &str) -> Result<DnsRecordType, ApiError> {
    DnsRecordType::parse(t).ok_or_else(|| {
        ApiError::InvalidRequest(format!(
            "unknown record type {t:?}; expected A, AAAA, CNAME, SRV or TXT"
        ))
    })
}

#[utoipa::path(
    get,
    path = "/api/v1/dns/records",
    tag = "dns",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "sorted by name, then type", body = api::rest::DnsRecordsEnvelope),
        (status = 403, description = "`forbidden`: admins only", body = api::error::ErrorBody)
    )
)]
pub async fn list(
    State(s): State<AppState>,
    _min: MinIndex,
    auth: Auth,
) -> Result<Json<serde_json::Value>, ApiError> {
    auth.require_admin()?;
    let records = s.node.dns_records()?;
    wire::as_value(&DnsRecordsEnvelope {
        records: records.iter().map(wire_record).collect(),
    })
}

#[utoipa::path(
    post,
    path = "/api/v1/dns/records",
    tag = "dns",
    request_body = api::rest::NewDnsRecordRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "the record as stored (normalised)", body = api::rest::DnsRecord),
        (status = 400, description = "`invalid_request` (bad name, type, value or TTL) or `reserved_name`", body = api::error::ErrorBody),
        (status = 403, description = "`forbidden`: admins only", body = api::error::ErrorBody),
        (status = 409, description = "`conflict`: a CNAME beside other records, or the zone is full", body = api::error::ErrorBody),
        (status = 503, description = "`unavailable`: no leader or quorum right now, or `disk_full`: free space below the watermark here or on a majority of voters; nothing was written, retrying is safe", body = api::error::ErrorBody)
    )
)]
pub async fn create(
    State(s): State<AppState>,
    auth: Auth,
    body: Result<JsonBody<NewDnsRecordRequest>, ApiError>,
) -> Result<Response, ApiError> {
    auth.require_admin()?;
    // Non-admins are refused before the body is read: they learn nothing of its shape.
    let JsonBody(req) = body?;
    let rtype = parse_type(&req.rtype)?;
    let data = DnsRecordData::parse(rtype, &req.value)?;
    let record = dns_records::validate(&DnsRecord {
        name: req.name,
        ttl: req.ttl.unwrap_or(dns_records::DEFAULT_TTL),
        data,
    })?;
    let (applied, index) = s.write_applied(Command::PutDnsRecord { record }).await?;
    let Applied::DnsRecordPut { record } = applied else {
        return Err(ApiError::Internal(
            "unexpected outcome of PutDnsRecord".into(),
        ));
    };
    tracing::info!(name = %record.name, rtype = %record.rtype(), value = %record.data.presentation(), ttl = record.ttl, by = %auth.user.username, "DNS record put");
    Ok((
        StatusCode::CREATED,
        [(INDEX_HEADER, index.to_string())],
        Json(wire_record(&record)),
    )
        .into_response())
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RemoveQuery {
    name: String,
    #[serde(rename = "type")]
    rtype: String,
    #[serde(default)]
    value: Option<String>,
}

#[utoipa::path(
    delete,
    path = "/api/v1/dns/records",
    tag = "dns",
    params(crate::routes::dns::RemoveQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "how many records were removed", body = api::rest::RemovedEnvelope),
        (status = 400, description = "`invalid_request` or `reserved_name`", body = api::error::ErrorBody),
        (status = 403, description = "`forbidden`: admins only", body = api::error::ErrorBody),
        (status = 404, description = "`not_found`: nothing matched", body = api::error::ErrorBody),
        (status = 503, description = "`unavailable`: no leader or quorum right now, or `disk_full`: free space below the watermark here or on a majority of voters; nothing was written, retrying is safe", body = api::error::ErrorBody)
    )
)]
pub async fn remove(
    State(s): State<AppState>,
    auth: Auth,
    query: Result<Query<RemoveQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    auth.require_admin()?;
    let Query(q) = query.map_err(|e| {
        ApiError::InvalidRequest(format!(
            "{}; expected ?name=NAME&type=TYPE[&value=VALUE]",
            e.body_text()
        ))
    })?;
    let name = dns_records::normalize_name(&q.name)?;
    let rtype = parse_type(&q.rtype)?;
    let data = match q.value.as_deref() {
        Some(v) => Some(DnsRecordData::parse(rtype, v)?),
        None => None,
    };
    let (applied, index) = s
        .write_applied(Command::RemoveDnsRecords { name, rtype, data })
        .await?;
    let Applied::DnsRecordsRemoved { name, removed } = applied else {
        return Err(ApiError::Internal(
            "unexpected outcome of RemoveDnsRecords".into(),
        ));
    };
    tracing::info!(%name, %rtype, value = ?q.value, removed, by = %auth.user.username, "DNS records removed");
    Ok((
        StatusCode::OK,
        [(INDEX_HEADER, index.to_string())],
        wire::as_value(&RemovedEnvelope {
            removed: u64::from(removed),
        })?,
    )
        .into_response())
}
