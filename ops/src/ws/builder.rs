//! [`SessionBuilder`]: configures a [`ChatSession`] (servers, token, subscriptions, timeouts,
//! backoff, rate limit, trust root) and starts its background task.
//!
//! Owns the session's defaults. Must never print, never put the token anywhere but the task's
//! configuration, and never block: `start` only spawns, `connect` waits for the first `hello`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::session::{ChatSession, ConnState};
use super::state::{ReconnectBackoff, Subscriptions};
use super::task::{Config, Links, Shared, Task};
use crate::client::Client;
use crate::error::WsError;
use crate::servers::{display_server, normalize_server};
use crate::tls::TrustRoot;
use api::ws::PresenceStatus;

const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(45);
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_AUTH_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(1);
const DEFAULT_CONNECT_DEADLINE: Duration = Duration::from_secs(10);
/// A connection that lived this long resets the reconnect backoff: the failure after it is a
/// new incident, not the next step of the last one.
const DEFAULT_STABLE_AFTER: Duration = Duration::from_secs(5);
/// Below the server's 20 frames/s and burst of 60, with room for its own rounding.
const DEFAULT_RATE_PER_SEC: f64 = 16.0;
const DEFAULT_RATE_BURST: u32 = 40;
/// Configures and starts a [`ChatSession`].
#[derive(Clone)]
pub struct SessionBuilder {
    servers: Vec<String>,
    token: String,
    subscriptions: Vec<(String, Option<u64>)>,
    read_timeout: Duration,
    connect_timeout: Duration,
    auth_timeout: Duration,
    probe_timeout: Duration,
    connect_deadline: Duration,
    stable_after: Duration,
    rate: Option<(f64, u32)>,
    backoff: ReconnectBackoff,
    presence: Option<PresenceStatus>,
    tls: Option<TrustRoot>,
}

impl std::fmt::Debug for SessionBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionBuilder")
            .field("servers", &self.servers)
            .field("token", &"<redacted>")
            .field("subscriptions", &self.subscriptions)
            .field("read_timeout", &self.read_timeout)
            .field("rate", &self.rate)
            .finish_non_exhaustive()
    }
}

impl SessionBuilder {
    /// `servers` are the addresses [`Client::new`] accepts; `token` a bearer token from
    /// `login`.
    pub fn new(servers: Vec<String>, token: impl Into<String>) -> SessionBuilder {
        SessionBuilder {
            servers,
            token: token.into(),
            subscriptions: Vec::new(),
            read_timeout: DEFAULT_READ_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            auth_timeout: DEFAULT_AUTH_TIMEOUT,
            probe_timeout: DEFAULT_PROBE_TIMEOUT,
            connect_deadline: DEFAULT_CONNECT_DEADLINE,
            stable_after: DEFAULT_STABLE_AFTER,
            rate: Some((DEFAULT_RATE_PER_SEC, DEFAULT_RATE_BURST)),
            backoff: ReconnectBackoff::default(),
            presence: None,
            tls: None,
        }
    }

    /// The servers and token of a logged-in [`Client`].
    pub fn from_client(client: &Client) -> Result<SessionBuilder, WsError> {
        let token = client.token().ok_or(WsError::NotLoggedIn)?;
        Ok(SessionBuilder::new(client.servers().to_vec(), token)
            .trust_root(client.trust_root().cloned()))
    }

    /// The cluster root that `https://` servers are checked against (none: no `https://`
    /// server is trusted).
    pub fn trust_root(mut self, root: Option<TrustRoot>) -> SessionBuilder {
        self.tls = root;
        self
    }

    /// Subscribes `channel` "from now" (no replay).
    pub fn subscribe(mut self, channel: impl Into<String>) -> SessionBuilder {
        self.subscriptions.push((channel.into(), None));
        self
    }

    /// Subscribes `channel` with a replay of every event after `after` (0: all of them).
    pub fn subscribe_after(mut self, channel: impl Into<String>, after: u64) -> SessionBuilder {
        self.subscriptions.push((channel.into(), Some(after)));
        self
    }

    /// No frame for this long means the connection is dead (default 45 s).
    pub fn read_timeout(mut self, d: Duration) -> SessionBuilder {
        self.read_timeout = d;
        self
    }

    /// Bound on TCP connect plus upgrade, per node (default 5 s).
    pub fn connect_timeout(mut self, d: Duration) -> SessionBuilder {
        self.connect_timeout = d;
        self
    }

    /// How long to wait for `hello` after `auth` (default 10 s).
    pub fn auth_timeout(mut self, d: Duration) -> SessionBuilder {
        self.auth_timeout = d;
        self
    }

    /// Bound on each `GET /readyz` probe (default 1 s).
    pub fn probe_timeout(mut self, d: Duration) -> SessionBuilder {
        self.probe_timeout = d;
        self
    }

    /// How long [`SessionBuilder::connect`] tries before giving up (default 10 s).
    pub fn connect_deadline(mut self, d: Duration) -> SessionBuilder {
        self.connect_deadline = d;
        self
    }

    /// The reconnect backoff: `first` doubling to `cap`, ±50% (default 100 ms to 5 s).
    pub fn backoff(mut self, first: Duration, cap: Duration) -> SessionBuilder {
        self.backoff = ReconnectBackoff { first, cap };
        self
    }

    /// Client-side limit on outgoing frames (default 16/s, burst 40: under the server's 20/s,
    /// burst 60).
    pub fn rate_limit(mut self, per_sec: f64, burst: u32) -> SessionBuilder {
        self.rate = Some((per_sec, burst));
        self
    }

    /// No client-side rate limit (for tests of the server's limit).
    pub fn no_rate_limit(mut self) -> SessionBuilder {
        self.rate = None;
        self
    }

    /// A presence status to announce on every connection.
    pub fn presence(mut self, status: PresenceStatus) -> SessionBuilder {
        self.presence = Some(status);
        self
    }

    /// Starts the session and waits until it is connected and authenticated (first node that
    /// is ready, trying for the connect deadline). An invalid token fails with
    /// [`WsError::AuthLost`]; no reachable node with [`WsError::Unreachable`].
    pub async fn connect(self) -> Result<ChatSession, WsError> {
        let deadline = self.connect_deadline;
        let session = self.start()?;
        let mut state = session.state_rx.clone();
        let waited = tokio::time::timeout(
            deadline,
            state.wait_for(|s| matches!(s, ConnState::Connected(_) | ConnState::Ended)),
        )
        .await
        .map(|r| r.map(|s| s.clone()));
        match waited {
            Ok(Ok(ConnState::Connected(_))) => Ok(session),
            Ok(_) => Err(session.end_error().unwrap_or(WsError::SessionEnded)),
            Err(_) => {
                let (tried, last_error) = {
                    let shared = session.lock();
                    (
                        shared.tried.clone(),
                        shared
                            .last_error
                            .clone()
                            .unwrap_or_else(|| "no answer".to_owned()),
                    )
                };
                session.close().await;
                Err(WsError::Unreachable { tried, last_error })
            }
        }
    }

    /// Starts the session without waiting for a connection: sends made before it connects are
    /// queued. Must be called inside a tokio runtime.
    pub fn start(self) -> Result<ChatSession, WsError> {
        let seeds = self.seeds()?;
        if self.token.is_empty() {
            return Err(WsError::NotLoggedIn);
        }
        let secure = seeds.iter().any(|s| s.starts_with("https://"));
        let http = self.probe_client(&seeds)?;

        let mut subs = Subscriptions::default();
        let mut shared = Shared::default();
        for (channel, after) in &self.subscriptions {
            subs.want(channel, *after);
        }
        shared.cursors = subs.cursors();

        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let (event_tx, event_rx) = mpsc::unbounded_channel();
        let (state_tx, state_rx) = watch::channel(ConnState::Connecting);
        let state_tx = Arc::new(state_tx);
        let shared = Arc::new(Mutex::new(shared));
        let cancel = CancellationToken::new();

        let cfg = Config {
            seeds,
            token: self.token,
            http,
            tls: self.tls,
            secure,
            read_timeout: self.read_timeout,
            connect_timeout: self.connect_timeout,
            auth_timeout: self.auth_timeout,
            probe_timeout: self.probe_timeout,
            stable_after: self.stable_after,
            rate: self.rate,
            backoff: self.backoff,
        };
        let links = Links {
            commands: cmd_rx,
            events: event_tx,
            shared: Arc::clone(&shared),
            state: Arc::clone(&state_tx),
            cancel: cancel.clone(),
        };
        let task = Task::new(cfg, links, subs, self.presence);
        let handle = tokio::spawn(task.run());
        Ok(ChatSession {
            commands: cmd_tx,
            events: event_rx,
            backlog: VecDeque::new(),
            shared,
            state_tx,
            state_rx,
            cancel,
            task: Some(handle),
        })
    }

    /// The configured servers as display names (`http://host:port`), without repeats.
    fn seeds(&self) -> Result<Vec<String>, WsError> {
        let mut seeds = Vec::new();
        for server in &self.servers {
            let url = normalize_server(server).map_err(|e| WsError::InvalidServer {
                url: server.clone(),
                reason: e.to_string(),
            })?;
            let name = display_server(&url);
            if !seeds.contains(&name) {
                seeds.push(name);
            }
        }
        if seeds.is_empty() {
            return Err(WsError::InvalidServer {
                url: String::new(),
                reason: "no servers given".to_owned(),
            });
        }
        Ok(seeds)
    }

    /// The HTTP client that asks candidate nodes `GET /readyz`.
    fn probe_client(&self, seeds: &[String]) -> Result<reqwest::Client, WsError> {
        let mut http = reqwest::Client::builder();
        if let Some(root) = &self.tls {
            http = http.use_preconfigured_tls(root.rest_config());
        }
        http
            // `/readyz` is answered on every port; anything else is not a ready node.
            .redirect(reqwest::redirect::Policy::none())
            // Same reason as in `Client::new`: never send LAN cluster traffic to a proxy.
            .no_proxy()
            .user_agent(concat!("conclave-ops/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| WsError::InvalidServer {
                url: seeds.join(","),
                reason: format!("cannot build HTTP client: {e}"),
            })
    }
}
