//! Shared state of the HTTP API handlers: the node, the API configuration (limits, the CA and
//! join seams) and the WebSocket hub.
//!
//! Must never hold per-request or per-connection state; everything here is shared by every
//! handler and cloned cheaply (`Arc`s).

use std::sync::Arc;

use std::time::Duration;

use cluster::{ClusterNode, StateError, StateReader};

use crate::error::ApiError;

/// Settings of the client API (from the node's config file).
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Absolute session lifetime (default 12 h).
    pub session_ttl_ms: u64,
    /// Idle timeout: a session with no authenticated request and no WebSocket frame for this
    /// long ends (default 30 min; 0: none).
    pub session_idle_ms: u64,
    /// How often a node replicates the last use of its sessions (default 60 s): the coarse
    /// granularity of the idle timeout.
    pub session_touch_interval_ms: u64,
    /// Let step-up operations (root-key export, intermediate renewal, password resets, role
    /// changes, disabling) run over plain HTTP when the request comes from a loopback address.
    /// The node sets it only when its plain API listener is bound to loopback (`conclave dev
    /// --no-tls`, test clusters); anything else requires HTTPS. See docs/security.md.
    pub step_up_plain_loopback: bool,
    /// Let step-up operations run over plain HTTP from any source: set only on a node the
    /// operator started with `insecure_plaintext = true` (a lab without TLS, where nothing is
    /// protected in transit anyway and HTTPS does not exist to step up to).
    pub step_up_plain_any: bool,
    pub max_request_bytes: usize,
    /// Browser origins allowed besides the cluster's own (e.g. a reverse proxy's name).
    pub allowed_origins: Vec<String>,
    pub ws: crate::ws::hub::WsLimits,
    /// The certificate authority (`/api/v1/ca/...`); `None` on a node without one, whose CA
    /// routes then answer 503 `ca_unavailable`.
    pub ca: Option<crate::ca_api::SharedCa>,
    /// Token-based join (`/api/v1/join`, `/api/v1/cluster/join-tokens`); `None` on a node
    /// without a CA, whose join routes then answer 503 `ca_unavailable`.
    pub join: Option<crate::join_api::SharedJoin>,
    /// The workspace name (`chat.corp.lan`): with TLS, `https://<workspace>` (on a member's
    /// HTTPS port) is one of the cluster's own origins.
    pub workspace: Option<String>,
    /// `GET /metrics`: the node's registry and scrape token; `None` when `[metrics] enabled =
    /// false` (the route then answers 404).
    pub metrics: Option<crate::metrics::SharedMetrics>,
    /// `[files]`: size limit and malware scanning of attachments.
    pub files: crate::files_config::FilesConfig,
    /// Where this node keeps its search index (`<data_dir>/search`); `None`: in RAM, rebuilt
    /// from the state at every start (tests).
    pub search_dir: Option<std::path::PathBuf>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            session_ttl_ms: 12 * 3600 * 1000,
            session_idle_ms: 30 * 60 * 1000,
            session_touch_interval_ms: 60 * 1000,
            step_up_plain_loopback: false,
            step_up_plain_any: false,
            max_request_bytes: 64 * 1024,
            allowed_origins: Vec::new(),
            ws: crate::ws::hub::WsLimits::default(),
            ca: None,
            join: None,
            workspace: None,
            metrics: None,
            files: crate::files_config::FilesConfig::default(),
            search_dir: None,
        }
    }
}

#[derive(Clone)]
pub struct AppState {
    pub node: Arc<ClusterNode>,
    pub config: Arc<ApiConfig>,
    pub hub: Arc<crate::ws::hub::Hub>,
    /// This node's login throttle (login and the current-password check of `/me/password`).
    pub login_throttle: Arc<crate::login_throttle::LoginThrottle>,
    /// Coalesces the member probes of anonymous `GET /api/v1/cluster` requests.
    pub cluster_probe: Arc<crate::routes::cluster::ProbeGate>,
    /// This node's record of session use (idle timeout).
    pub sessions: Arc<crate::session_use::SessionUse>,
    /// This node's full-text index (`None`: it could not be opened; search answers 503).
    pub search: Option<Arc<search::SearchIndex>>,
}

/// How long a handler may wait to catch up with the leader before answering "not found".
const SYNC_TIMEOUT: Duration = Duration::from_secs(3);

impl AppState {
    /// Reads from this node's state; when that finds nothing, catches up with the leader once
    /// (a read-index round) and reads again. A follower may lag a moment behind a user, channel
    /// or membership created through another node; a "does not exist" must never be only that.
    pub async fn read_fresh<T>(
        &self,
        read: impl Fn(&StateReader) -> Result<Option<T>, StateError>,
    ) -> Result<Option<T>, ApiError> {
        if let Some(found) = read(self.node.reader())? {
            return Ok(Some(found));
        }
        self.node.sync_with_leader(SYNC_TIMEOUT).await?;
        Ok(read(self.node.reader())?)
    }

    /// Writes through Raft and waits until this node has applied the entry, so the caller can
    /// answer with a view read from local state.
    pub async fn write_applied(
        &self,
        cmd: cluster::Command,
    ) -> Result<(cluster::Applied, u64), ApiError> {
        let (applied, index) = self.node.write(cmd).await?;
        self.node.wait_applied(index, SYNC_TIMEOUT).await?;
        Ok((applied, index))
    }

    /// Whether `user` may read `channel` (`None`: no such channel), catching up with the
    /// leader before any refusal: a membership granted through another node a moment ago must
    /// not be refused here.
    pub async fn can_read_fresh(
        &self,
        channel: &str,
        user: &str,
    ) -> Result<Option<bool>, ApiError> {
        let granted = self
            .read_fresh(|r| Ok(r.can_read(channel, user)?.filter(|ok| *ok)))
            .await?;
        if granted.is_some() {
            return Ok(granted);
        }
        Ok(self.node.reader().can_read(channel, user)?)
    }
}
