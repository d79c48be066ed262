//! Shared state of the HTTP API handlers.

use std::sync::Arc;

use cluster::ClusterNode;

/// Settings of the client API (from the node's config file).
#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub session_ttl_ms: u64,
    pub max_request_bytes: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            session_ttl_ms: 7 * 24 * 3600 * 1000,
            max_request_bytes: 64 * 1024,
        }
    }
}

#[derive(Clone)]
pub struct AppState {
    pub node: Arc<ClusterNode>,
    pub config: Arc<ApiConfig>,
}
