//! `GET /metrics` (the Prometheus text format) and the client layer's metrics: WebSocket
//! connections, deliveries and slow-consumer disconnects, logins by outcome.
//!
//! Owns those definitions, their registration ([`register`]) and the scrape endpoint: the
//! optional bearer token (`[metrics] bearer_token_file`), compared in constant time, and the
//! encoding of the node's one `Registry`, which the `node` crate builds and hands over in
//! [`crate::ApiConfig::metrics`]. The counters are process-wide statics for the reason given in
//! `cluster::metrics`.
//!
//! Must never label a metric with a user name, channel name or message id (unbounded and
//! personal), never log or echo the scrape token, and never let a user's session token stand
//! in for it: a scraper is not a user.

use std::sync::{Arc, LazyLock};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::state::AppState;

type OneLabel = [(&'static str, &'static str); 1];

struct Metrics {
    ws_open: Gauge,
    ws_delivered: Counter,
    ws_slow: Counter,
    logins: Family<OneLabel, Counter>,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| Metrics {
    ws_open: Gauge::default(),
    ws_delivered: Counter::default(),
    ws_slow: Counter::default(),
    logins: Family::default(),
});

/// A WebSocket took a place on this node (upgrade accepted).
pub(crate) fn ws_opened() {
    METRICS.ws_open.inc();
}

/// A WebSocket gave its place back.
pub(crate) fn ws_closed() {
    METRICS.ws_open.dec();
}

/// Event frames written to a WebSocket client.
pub(crate) fn ws_delivered(frames: usize) {
    METRICS.ws_delivered.inc_by(frames as u64);
}

/// A WebSocket closed as a slow consumer (4008).
pub(crate) fn ws_slow_consumer() {
    METRICS.ws_slow.inc();
}

/// The outcome of one `POST /api/v1/login`.
pub(crate) fn login<T>(result: &Result<T, ApiError>) {
    let outcome = match result {
        Ok(_) => "success",
        Err(ApiError::InvalidCredentials) => "invalid_credentials",
        Err(ApiError::TooManyAttempts(_)) => "throttled",
        Err(_) => "error",
    };
    METRICS.logins.get_or_create(&[("outcome", outcome)]).inc();
}

/// Registers the client layer's metrics into `registry`.
pub fn register(registry: &mut Registry) {
    let m = &*METRICS;
    registry.register(
        "conclave_ws_connections",
        "WebSocket connections open on this node (from upgrade to close)",
        m.ws_open.clone(),
    );
    registry.register(
        "conclave_ws_delivered_frames",
        "Event frames this node delivered to WebSocket clients",
        m.ws_delivered.clone(),
    );
    registry.register(
        "conclave_ws_slow_consumer_disconnects",
        "WebSockets this node closed because the client did not keep up (close code 4008)",
        m.ws_slow.clone(),
    );
    registry.register(
        "conclave_logins",
        "Login attempts on this node by outcome (success, invalid_credentials, throttled, error)",
        m.logins.clone(),
    );
}

/// The scrape token, kept as its SHA-256: comparing fixed-length digests in constant time
/// says nothing about the token's length or prefix.
#[derive(Clone)]
pub struct ScrapeToken([u8; 32]);

impl ScrapeToken {
    pub fn new(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }

    fn matches(&self, presented: &str) -> bool {
        let other: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        self.0
            .iter()
            .zip(other.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

impl std::fmt::Debug for ScrapeToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScrapeToken(<redacted>)")
    }
}

/// What `GET /metrics` serves: the node's registry and, when configured, the token a scraper
/// must present.
#[derive(Debug)]
pub struct MetricsEndpoint {
    pub registry: Registry,
    pub token: Option<ScrapeToken>,
}

pub type SharedMetrics = Arc<MetricsEndpoint>;

/// `GET /metrics`: the Prometheus text format (0.0.4). 404 when `[metrics] enabled = false`;
/// 401 without the configured bearer token.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "health",
    responses(
        (status = 200, description = "this node's metrics in the Prometheus text format 0.0.4 (docs/operations.md, Monitoring)", body = String, content_type = "text/plain"),
        (status = 401, description = "`unauthorized`: `[metrics] bearer_token_file` is set and the request lacks `Authorization: Bearer <that token>`", body = api::error::ErrorBody),
        (status = 404, description = "`not_found`: `[metrics] enabled = false` on this node", body = api::error::ErrorBody)
    )
)]
pub async fn scrape(State(s): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let Some(endpoint) = s.config.metrics.clone() else {
        return Err(ApiError::NotFound(
            "metrics are disabled on this node ([metrics] enabled = false)".into(),
        ));
    };
    if let Some(token) = &endpoint.token {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !presented.is_some_and(|p| token.matches(p.trim())) {
            return Err(ApiError::Unauthorized(
                "metrics need the scrape token: Authorization: Bearer <[metrics] bearer_token_file>"
                    .into(),
            ));
        }
    }
    // Collectors read a few files (log segments, the snapshot, /proc): off the async workers.
    let body = tokio::task::spawn_blocking(move || {
        let mut out = String::with_capacity(16 * 1024);
        prometheus_client::encoding::prometheus_text::encode(&mut out, &endpoint.registry)
            .map(|()| out)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("metrics task: {e}")))?
    .map_err(|_| ApiError::Internal("cannot encode the metrics".into()))?;
    Ok((
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        )],
        body,
    )
        .into_response())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_token_matches_only_itself() {
        let t = ScrapeToken::new("s3cret-scrape");
        assert!(t.matches("s3cret-scrape"));
        assert!(!t.matches("s3cret-scrapf"));
        assert!(!t.matches(""));
        assert!(!format!("{t:?}").contains("s3cret"));
    }

    #[test]
    fn client_metrics_encode_with_their_documented_names() {
        login::<()>(&Err(ApiError::InvalidCredentials));
        login(&Ok(()));
        ws_opened();
        ws_delivered(2);
        let mut registry = Registry::default();
        register(&mut registry);
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &registry).unwrap();
        for needle in [
            "conclave_logins_total{outcome=\"invalid_credentials\"}",
            "conclave_logins_total{outcome=\"success\"}",
            "# TYPE conclave_ws_connections gauge",
            "conclave_ws_delivered_frames_total",
            "conclave_ws_slow_consumer_disconnects_total",
        ] {
            assert!(out.contains(needle), "{needle} missing from\n{out}");
        }
        ws_closed();
    }
}
