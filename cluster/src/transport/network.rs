//! Outgoing Raft RPC: openraft's `RaftNetworkFactory`/`RaftNetwork` over HTTP with bincode bodies.
//!
//! Owns the one pooled HTTP client every peer connection shares and the mapping of transport
//! failures to openraft's error kinds (that mapping decides how replication backs off). This is
//! the single module that knows how bytes reach a peer: with `PeerTls` configured it speaks
//! https with this node's certificate (see `peer_tls`), otherwise plain http.
//!
//! Must never: connect in `new_client` (it cannot fail), or report a refused connection as a
//! plain network error (openraft would retry it on every heartbeat instead of backing off).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Timeout, Unreachable,
};
use openraft::network::{RPCOption, RPCTypes, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::transport::peer_tls::PeerTls;
use crate::transport::rpc;
use crate::types::{NodeId, NodeInfo, TypeConfig};

/// Shared HTTP client for everything that goes to the cluster port of a peer.
#[derive(Clone)]
pub struct PeerHttp {
    inner: Arc<Inner>,
}

struct Inner {
    local_ip: Option<std::net::IpAddr>,
    tls: Option<Arc<PeerTls>>,
    /// The pooled client and the `PeerTls` generation it was built for. A `std` mutex: held
    /// only to compare a number and clone an `Arc`-backed client, never across `.await`.
    client: Mutex<(u64, reqwest::Client)>,
}

/// A transport-level failure talking to a peer.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("connection to {addr} failed: {source}")]
    Connect {
        addr: String,
        source: reqwest::Error,
    },
    #[error("request to {addr} timed out after {after:?}")]
    Timeout { addr: String, after: Duration },
    #[error("request to {addr} failed: {message}")]
    Other { addr: String, message: String },
}

impl TransportError {
    /// A one-line reason for status displays, without the HTTP library's internals.
    pub fn short(&self) -> String {
        match self {
            TransportError::Connect { addr, .. } => format!("unreachable at {addr}"),
            TransportError::Timeout { addr, after } => {
                format!("no answer from {addr} within {after:?}")
            }
            TransportError::Other { addr, message } => format!("{addr}: {message}"),
        }
    }
}

impl PeerHttp {
    /// `local_ip`: the address outgoing connections to peers start from (this node's cluster
    /// address), so that on a multi-homed host cluster traffic leaves through the cluster
    /// network, and so that firewall rules can tell the nodes apart.
    pub fn new(local_ip: Option<std::net::IpAddr>) -> Result<Self, reqwest::Error> {
        Self::with_tls(local_ip, None)
    }

    /// As `new`; with `tls`, every call goes over https with this node's certificate and
    /// trusts only the cluster root (see `peer_tls`).
    pub fn with_tls(
        local_ip: Option<std::net::IpAddr>,
        tls: Option<Arc<PeerTls>>,
    ) -> Result<Self, reqwest::Error> {
        let generation = tls.as_ref().map_or(0, |t| t.generation());
        let client = build_client(local_ip, tls.as_deref())?;
        Ok(Self {
            inner: Arc::new(Inner {
                local_ip,
                tls,
                client: Mutex::new((generation, client)),
            }),
        })
    }

    fn scheme(&self) -> &'static str {
        if self.inner.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// The pooled client, rebuilt first if the TLS material or the member set changed since
    /// it was built: a fresh client has no pooled connections, so a peer whose certificate was
    /// just revoked is not talked to again over a connection opened while it was trusted.
    fn client(&self) -> reqwest::Client {
        let mut current = self
            .inner
            .client
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some(tls) = &self.inner.tls else {
            return current.1.clone();
        };
        let generation = tls.generation();
        if current.0 != generation {
            match build_client(self.inner.local_ip, Some(tls)) {
                Ok(client) => *current = (generation, client),
                // Keep the old client rather than fail every call; the next change retries.
                Err(error) => {
                    tracing::error!(node_id = tls.node_id(), %error, "cannot rebuild the peer HTTP client")
                }
            }
        }
        current.1.clone()
    }

    /// POSTs a bincode body and decodes a bincode answer.
    pub async fn post_bin<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        addr: &str,
        path: &str,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, TransportError> {
        let body = crate::transport::rpc::encode(req).map_err(|e| TransportError::Other {
            addr: addr.to_string(),
            message: format!("encode: {e}"),
        })?;
        let bytes = self.post(addr, path, body.into(), timeout).await?;
        crate::transport::rpc::decode_limited(&bytes).map_err(|e| TransportError::Other {
            addr: addr.to_string(),
            message: format!("decode: {e}"),
        })
    }

    /// POSTs an opaque body and ignores the answer's body (ephemeral notices).
    pub async fn post_raw(
        &self,
        addr: &str,
        path: &str,
        body: bytes::Bytes,
        timeout: Duration,
    ) -> Result<(), TransportError> {
        self.post(addr, path, body, timeout).await.map(|_| ())
    }

    /// One POST to a peer's cluster port; a non-success status is an error with the start of
    /// the answer's body.
    async fn post(
        &self,
        addr: &str,
        path: &str,
        body: bytes::Bytes,
        timeout: Duration,
    ) -> Result<bytes::Bytes, TransportError> {
        self.send(reqwest::Method::POST, addr, path, body, timeout)
            .await
    }

    /// Stores a blob on a peer (`rpc::PATH_BLOBS`): returns once the peer has it on disk.
    pub async fn put_blob(
        &self,
        addr: &str,
        sha: &str,
        body: bytes::Bytes,
        timeout: Duration,
    ) -> Result<(), TransportError> {
        self.send(
            reqwest::Method::PUT,
            addr,
            &rpc::blob_path(sha),
            body,
            timeout,
        )
        .await
        .map(|_| ())
    }

    /// A blob from a peer: `None` if the peer does not have it. The answer is read up to `max`
    /// bytes; a longer one is an error (the caller checks the hash of what it got).
    pub async fn get_blob(
        &self,
        addr: &str,
        sha: &str,
        max: usize,
        timeout: Duration,
    ) -> Result<Option<bytes::Bytes>, TransportError> {
        let url = format!("{}://{addr}{}", self.scheme(), rpc::blob_path(sha));
        let resp = self
            .client()
            .get(url)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| classify(addr, timeout, e))?;
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(TransportError::Other {
                addr: addr.to_string(),
                message: format!("HTTP {status}"),
            });
        }
        let mut resp = resp;
        let mut out = Vec::new();
        while let Some(piece) = resp.chunk().await.map_err(|e| classify(addr, timeout, e))? {
            if out.len() + piece.len() > max {
                return Err(TransportError::Other {
                    addr: addr.to_string(),
                    message: format!("blob answer over {max} bytes"),
                });
            }
            out.extend_from_slice(&piece);
        }
        Ok(Some(out.into()))
    }

    /// One request with a raw body to a peer's cluster port; a non-success status is an error
    /// with the start of the answer's body.
    async fn send(
        &self,
        method: reqwest::Method,
        addr: &str,
        path: &str,
        body: bytes::Bytes,
        timeout: Duration,
    ) -> Result<bytes::Bytes, TransportError> {
        let url = format!("{}://{addr}{path}", self.scheme());
        let resp = self
            .client()
            .request(method, url)
            .timeout(timeout)
            .header("content-type", "application/octet-stream")
            .body(body)
            .send()
            .await
            .map_err(|e| classify(addr, timeout, e))?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| classify(addr, timeout, e))?;
        if !status.is_success() {
            return Err(TransportError::Other {
                addr: addr.to_string(),
                message: format!(
                    "HTTP {status}: {}",
                    String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
                ),
            });
        }
        Ok(bytes)
    }

    /// A peer's own view of itself (`GET /raft/v1/status`): every liveness, readiness and
    /// leadership probe between nodes goes through here.
    pub async fn status(
        &self,
        addr: &str,
        timeout: Duration,
    ) -> Result<rpc::NodeStatusWire, TransportError> {
        self.get_json(addr, rpc::PATH_STATUS, timeout).await
    }

    /// The command-set version a peer's binary understands (`GET /raft/v1/version`).
    pub async fn version(
        &self,
        addr: &str,
        timeout: Duration,
    ) -> Result<crate::node::versions::VersionWire, TransportError> {
        self.get_json(addr, rpc::PATH_VERSION, timeout).await
    }

    async fn get_json<Resp: DeserializeOwned>(
        &self,
        addr: &str,
        path: &str,
        timeout: Duration,
    ) -> Result<Resp, TransportError> {
        let url = format!("{}://{addr}{path}", self.scheme());
        let resp = self
            .client()
            .get(url)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| classify(addr, timeout, e))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(TransportError::Other {
                addr: addr.to_string(),
                message: format!("HTTP {status}"),
            });
        }
        resp.json().await.map_err(|e| classify(addr, timeout, e))
    }
}

fn build_client(
    local_ip: Option<std::net::IpAddr>,
    tls: Option<&PeerTls>,
) -> Result<reqwest::Client, reqwest::Error> {
    let mut builder = reqwest::Client::builder()
        .local_address(local_ip)
        .connect_timeout(Duration::from_millis(500))
        .pool_idle_timeout(Duration::from_secs(60))
        .tcp_nodelay(true);
    if let Some(tls) = tls {
        // reqwest takes the rustls config by value; it carries our verifier, client
        // certificate and ALPN (http/1.1).
        builder = builder
            .use_preconfigured_tls((*tls.client_config()).clone())
            .https_only(true);
    }
    builder.build()
}

/// Whether a TLS error is somewhere in the chain: the peer refused our certificate (or we
/// refused its). With TLS 1.3 the server's verdict on our certificate arrives after our side
/// of the handshake finished, so reqwest reports it as a request error, not a connect error.
fn is_tls_failure(e: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<rustls::Error>() {
            return true;
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && io
                .get_ref()
                .is_some_and(|inner| inner.is::<rustls::Error>())
        {
            return true;
        }
        source = err.source();
    }
    false
}

fn classify(addr: &str, timeout: Duration, e: reqwest::Error) -> TransportError {
    // A refused handshake is "unreachable" for openraft (back off, do not retry every
    // heartbeat), and nothing was delivered, so the batcher may retry a forward elsewhere.
    if e.is_connect() || is_tls_failure(&e) {
        TransportError::Connect {
            addr: addr.to_string(),
            source: e,
        }
    } else if e.is_timeout() {
        TransportError::Timeout {
            addr: addr.to_string(),
            after: timeout,
        }
    } else {
        TransportError::Other {
            addr: addr.to_string(),
            message: e.to_string(),
        }
    }
}

/// Creates one `PeerClient` per replication target; all share `PeerHttp`.
#[derive(Clone)]
pub struct NetworkFactory {
    pub(crate) local_id: NodeId,
    pub(crate) http: PeerHttp,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> PeerClient {
        PeerClient {
            local_id: self.local_id,
            target,
            addr: node.cluster_addr.clone(),
            http: self.http.clone(),
        }
    }
}

pub struct PeerClient {
    local_id: NodeId,
    target: NodeId,
    addr: String,
    http: PeerHttp,
}

impl PeerClient {
    async fn call<Req, Resp, E>(
        &self,
        path: &str,
        action: RPCTypes,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, NodeInfo, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let ttl = option.hard_ttl();
        let reply: Result<Resp, RaftError<NodeId, E>> = self
            .http
            .post_bin(&self.addr, path, req, ttl)
            .await
            .map_err(|e| match e {
                TransportError::Connect { .. } => RPCError::Unreachable(Unreachable::new(&e)),
                TransportError::Timeout { .. } => RPCError::Timeout(Timeout {
                    action,
                    id: self.local_id,
                    target: self.target,
                    timeout: ttl,
                }),
                TransportError::Other { .. } => RPCError::Network(NetworkError::new(&e)),
            })?;
        reply.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        self.call(rpc::PATH_APPEND, RPCTypes::AppendEntries, &rpc, &option)
            .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, NodeInfo, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call(rpc::PATH_SNAPSHOT, RPCTypes::InstallSnapshot, &rpc, &option)
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        self.call(rpc::PATH_VOTE, RPCTypes::Vote, &rpc, &option)
            .await
    }

    /// Capped exponential backoff for an unreachable peer: 50 ms doubling to 1 s. A dead node
    /// is then asked about once a second instead of on every 75 ms heartbeat, and a restarted
    /// one is found again within a second.
    fn backoff(&self) -> openraft::network::Backoff {
        let steps = (0u32..).map(|i| Duration::from_millis((50u64 << i.min(5)).min(1000)));
        openraft::network::Backoff::new(steps)
    }
}
