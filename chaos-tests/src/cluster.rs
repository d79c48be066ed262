//! [`TestCluster`]: an N-node Conclave cluster of real `conclave` processes on a private
//! loopback block, built the way an operator builds one (`init` on node 1, `run` everywhere,
//! `POST /api/v1/cluster/nodes` for nodes 2..N), plus the faults tests inject (SIGKILL,
//! SIGTERM, restart) and the waits they need (ready, leader elected, nodes converged).
//!
//! With [`ClusterOptions::tls`] every node also gets `[tls] https_addr = "<its ip>:8443"`:
//! node 1 gets its certificate from `init`, nodes 2..N from `conclave provision` before they
//! start, and every client the harness hands out (ops clients, [`TestCluster::http`],
//! [`TestCluster::url`]) speaks HTTPS trusting only the cluster root
//! ([`TestCluster::trust_root`], [`TestCluster::ca_file`]).
//!
//! Every wait polls state with a deadline. Methods come in pairs: `try_*` returns an error
//! that already carries each node's state and log tail (the benchmark uses these), the plain
//! name panics with that error (tests use these). Dropping the cluster kills and reaps every
//! node, then removes the temp dir.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;
use tempfile::TempDir;

use crate::addr::{self, AddrBlock};
use crate::faultfs::{CutReport, FaultFs, Tear};
use crate::node::{NodeProcess, NodeSpec, RaftOptions, conclave_bin};
use crate::wait::{Waiting, poll_until};

/// Admin created by `conclave init`.
pub const ADMIN_USER: &str = "admin";
/// Its password (8..=128 chars as the API requires).
pub const ADMIN_PASSWORD: &str = "root-pass-phrase-7731";
/// Lines of each node's log included in a failure message.
pub const LOG_TAIL_LINES: usize = 40;
/// HTTPS port of every node when TLS is on (the `conclave dev` port).
pub const HTTPS_PORT: u16 = 8443;
/// The workspace a TLS cluster gets when the test sets none: certificates need one.
pub const TLS_WORKSPACE: &str = "chaos.test";

/// How to build a cluster. `ClusterOptions::default()` is the documented production config.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    pub raft: RaftOptions,
    /// Extra top-level config entries, `key = <raw TOML value>`.
    pub top_level: Vec<(String, String)>,
    /// Extra environment for every node process.
    pub env: Vec<(String, String)>,
    /// Server binary; default [`conclave_bin`].
    pub binary: Option<PathBuf>,
    /// Budget for start-up, restarts and other "the cluster heals" waits.
    pub ready_timeout: Duration,
    /// How long a SIGTERMed node may take to exit.
    pub stop_timeout: Duration,
    /// Per-request timeout of the ops clients the harness hands out.
    pub request_timeout: Duration,
    /// Failover deadline of the ops clients the harness hands out.
    pub failover_deadline: Duration,
    /// Serve the client API over HTTPS (see [`ClusterOptions::tls`]).
    pub tls: bool,
    /// More `[tls]` keys, `key = <raw TOML value>`.
    pub tls_fields: Vec<(String, String)>,
    /// Every node's data dir is a [`FaultFs`] mount (see [`ClusterOptions::faultfs`]).
    pub faultfs: bool,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            raft: RaftOptions::default(),
            top_level: Vec::new(),
            env: Vec::new(),
            binary: None,
            ready_timeout: Duration::from_secs(60),
            stop_timeout: Duration::from_secs(20),
            request_timeout: Duration::from_secs(10),
            failover_deadline: Duration::from_secs(15),
            tls: false,
            tls_fields: Vec::new(),
            faultfs: false,
        }
    }
}

impl ClusterOptions {
    pub fn snapshot_logs_since_last(mut self, n: u64) -> Self {
        self.raft.snapshot_logs_since_last = n;
        self
    }

    pub fn max_in_snapshot_log_to_keep(mut self, n: u64) -> Self {
        self.raft.max_in_snapshot_log_to_keep = n;
        self
    }

    /// A top-level config entry; `value` is raw TOML (`"1"`, `"\"text\""`).
    pub fn top_level(mut self, key: &str, value: &str) -> Self {
        self.top_level.push((key.to_owned(), value.to_owned()));
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    pub fn binary(mut self, path: PathBuf) -> Self {
        self.binary = Some(path);
        self
    }

    pub fn request_timeout(mut self, d: Duration) -> Self {
        self.request_timeout = d;
        self
    }

    pub fn failover_deadline(mut self, d: Duration) -> Self {
        self.failover_deadline = d;
        self
    }

    /// TLS on: `[tls] https_addr = "<node ip>:8443"` on every node (and `workspace =
    /// "chaos.test"` unless the test set one), certificates from `init` (node 1) and
    /// `conclave provision` (the others), and HTTPS clients trusting the cluster root.
    pub fn tls(mut self) -> Self {
        self.tls = true;
        self
    }

    /// A `[tls]` key besides `https_addr` (turns TLS on); `value` is raw TOML.
    pub fn tls_field(mut self, key: &str, value: &str) -> Self {
        self.tls = true;
        self.tls_fields.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Every node's data dir (`<root>/n<id>`) is a [`FaultFs`] mount over
    /// `<root>/backing/n<id>`, for power cuts and disk faults ([`TestCluster::fs`],
    /// [`TestCluster::power_cut`]). Node logs and configs stay outside the mounts. Needs
    /// root and FUSE: call [`crate::faultfs::require`] first.
    pub fn faultfs(mut self) -> Self {
        self.faultfs = true;
        self
    }

    /// The config entries every node gets: the test's, plus a workspace when TLS needs one.
    fn config_entries(&self) -> Vec<(String, String)> {
        let mut entries = self.top_level.clone();
        // `[dns] workspace` names the workspace too (a second, different one is an error).
        let named = entries
            .iter()
            .any(|(k, v)| k == "workspace" || (k == "dns" && v.contains("workspace")));
        if self.tls && !named {
            entries.push(("workspace".to_owned(), format!("\"{TLS_WORKSPACE}\"")));
        }
        entries
    }

    /// Node `id`'s files and addresses on `block`, with the TLS settings of these options.
    fn spec(&self, id: u64, block: &AddrBlock, root: &Path) -> NodeSpec {
        let mut spec = NodeSpec::new(id, block.api_addr(id), block.cluster_addr(id), root);
        if self.tls {
            spec.https_addr = Some(SocketAddr::new(block.ip(id).into(), HTTPS_PORT));
            spec.tls_fields = self.tls_fields.clone();
        }
        spec
    }
}

/// The harness's raw HTTP client, trusting `root` for `https://` when given.
fn raw_http(root: Option<&ops::TrustRoot>) -> Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder();
    if let Some(root) = root {
        builder = builder.use_preconfigured_tls(root.client_config());
    }
    builder
        .no_proxy()
        .timeout(Duration::from_secs(3))
        .build()
        .context("build HTTP client")
}

/// A running test cluster. Field order matters: nodes are dropped (killed) before the fault
/// filesystems are unmounted, those before the temp dir is removed, and the address block is
/// released last.
pub struct TestCluster {
    pub(crate) nodes: BTreeMap<u64, NodeProcess>,
    /// With [`ClusterOptions::faultfs`]: each node's data-dir mount.
    mounts: BTreeMap<u64, FaultFs>,
    dir: Option<TempDir>,
    pub(crate) root: PathBuf,
    admin_token: String,
    /// Every password and token this harness used: no node's log may contain one (checked
    /// when the cluster is dropped, so every chaos test is also a secret-leak test).
    secrets: std::sync::Mutex<Vec<String>>,
    http: reqwest::Client,
    opts: ClusterOptions,
    /// With TLS: the cluster root (node 1's `tls/ca.pem` after `init`) and its path.
    trust: Option<(ops::TrustRoot, PathBuf)>,
    block: AddrBlock,
}

/// Unwraps a harness result, panicking with its (already annotated) error.
pub(crate) fn or_panic<T>(r: Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("{e:#}"))
}

impl TestCluster {
    // ----- building -------------------------------------------------------------------------

    /// `n` nodes with the default config; panics (with logs) if the cluster does not come up.
    pub async fn start(n: u64) -> TestCluster {
        or_panic(Self::try_start_with(n, ClusterOptions::default()).await)
    }

    pub async fn start_with(n: u64, opts: ClusterOptions) -> TestCluster {
        or_panic(Self::try_start_with(n, opts).await)
    }

    /// Creates the temp dir and configs, `init`s node 1, starts every node, adds 2..=n as
    /// voters through the API and waits until all are ready and node 1 lists n voters.
    pub async fn try_start_with(n: u64, opts: ClusterOptions) -> Result<TestCluster> {
        let bin = match &opts.binary {
            Some(b) => b.clone(),
            None => conclave_bin()?,
        };
        let block = addr::allocate(n)?;
        let dir = tempfile::Builder::new()
            .prefix(&format!("conclave-chaos-127.{}.{}-", block.a, block.b))
            .tempdir()
            .context("create temp dir")?;
        let root = dir.path().to_path_buf();
        let mut nodes = BTreeMap::new();
        let mut mounts = BTreeMap::new();
        let entries = opts.config_entries();
        for id in 1..=n {
            let spec = opts.spec(id, &block, &root);
            spec.write_config(&opts.raft, &entries)?;
            if opts.faultfs {
                mounts.insert(id, mount_faultfs(&root, &spec.data_dir, id)?);
            }
            nodes.insert(id, NodeProcess::new(spec, bin.clone(), opts.env.clone()));
        }
        let http = raw_http(None)?;
        let mut cluster = TestCluster {
            nodes,
            mounts,
            dir: Some(dir),
            root,
            admin_token: String::new(),
            secrets: std::sync::Mutex::new(vec![ADMIN_PASSWORD.to_owned()]),
            http,
            opts,
            trust: None,
            block,
        };
        if let Err(e) = cluster.bootstrap(n).await {
            return Err(cluster.annotate(e.context(format!("starting a {n}-node cluster"))));
        }
        Ok(cluster)
    }

    async fn bootstrap(&mut self, n: u64) -> Result<()> {
        let timeout = self.opts.ready_timeout;
        let stdout = self
            .node(1)
            .init(ADMIN_USER, ADMIN_PASSWORD, timeout)
            .await?;
        if stdout.contains("admin password:") {
            bail!(
                "`conclave init --admin-password` must not print a generated password, got: {stdout}"
            );
        }
        if self.opts.tls {
            return self.bootstrap_tls(n).await;
        }
        for node in self.nodes.values() {
            node.spawn()?;
        }
        self.try_wait_ready_inner(1).await?;
        self.admin_token = self.login_token(1, ADMIN_USER, ADMIN_PASSWORD).await?;
        for id in 2..=n {
            self.add_voter(id).await?;
        }
        self.try_wait_membership(n).await
    }

    /// The TLS variant: node 1 runs alone until it serves HTTPS with its `init` certificate;
    /// then each other node is provisioned through it (a node cannot start its TLS listeners
    /// without a certificate) and started and added.
    async fn bootstrap_tls(&mut self, n: u64) -> Result<()> {
        let ca_file = self.node(1).spec.ca_pem_path();
        let root = ops::TrustRoot::from_file(&ca_file).map_err(|e| {
            anyhow!("TLS is on, but `conclave init` left no usable cluster root: {e}")
        })?;
        self.http = raw_http(Some(&root))?;
        self.trust = Some((root, ca_file));
        self.node(1).spawn()?;
        self.try_wait_ready_inner(1).await?;
        self.admin_token = self.login_token(1, ADMIN_USER, ADMIN_PASSWORD).await?;
        for id in 2..=n {
            self.try_provision(id).await?;
            self.node(id).spawn()?;
        }
        for id in 2..=n {
            self.add_voter(id).await?;
        }
        self.try_wait_membership(n).await
    }

    /// `conclave provision` for node `id` with node 1 (or the first live node) as the seed.
    async fn try_provision(&self, id: u64) -> Result<()> {
        let Some((_, ca_file)) = &self.trust else {
            bail!("provisioning node {id} needs TLS on");
        };
        let seed = self
            .live_ids()
            .into_iter()
            .find(|live| *live != id)
            .map_or_else(|| self.url(1), |live| self.url(live));
        self.node(id)
            .provision(
                &seed,
                ca_file,
                (ADMIN_USER, ADMIN_PASSWORD),
                self.opts.ready_timeout,
            )
            .await
    }

    /// Logs in through node `id` (retrying while it is unavailable) and returns the token.
    async fn login_token(&self, id: u64, user: &str, password: &str) -> Result<String> {
        let token: String = poll_until(
            &format!("login as {user} on node {id}"),
            self.opts.ready_timeout,
            || async {
                let mut c = self
                    .try_client_without_token(&[id])
                    .map_err(|e| e.to_string())?;
                match c.login(user, password).await {
                    Ok(resp) if resp.must_change_password => {
                        match crate::settle_admin_set_password(&c, password).await {
                            Ok(index) => {
                                // Every node holds the final password before anyone logs in.
                                self.wait_applied_everywhere(index.unwrap_or(0), &resp.token)
                                    .await;
                                Ok(Ok(resp.token))
                            }
                            Err(e) => Ok(Err(anyhow!("first login of {user} on node {id}: {e}"))),
                        }
                    }
                    Ok(resp) => Ok(Ok(resp.token)),
                    Err(e) if crate::load::retryable(&e) => Err(e.to_string()),
                    // A definite refusal (4xx) will not change by retrying.
                    Err(e) => Ok(Err(anyhow!("login as {user} on node {id} refused: {e}"))),
                }
            },
        )
        .await??;
        self.remember_secret(password);
        // The token's secret part (`cv1.<secret>.<index>`) is what must never be logged.
        self.remember_secret(token.split('.').nth(1).unwrap_or(&token));
        Ok(token)
    }

    /// Adds a password or token that no node's log may contain (see `Drop`).
    pub fn remember_secret(&self, secret: &str) {
        if secret.len() >= 8
            && let Ok(mut secrets) = self.secrets.lock()
        {
            secrets.push(secret.to_owned());
        }
    }

    /// Node ids whose log contains one of the remembered secrets.
    pub fn nodes_logging_secrets(&self) -> Vec<u64> {
        let secrets = self.secrets.lock().map(|s| s.clone()).unwrap_or_default();
        self.nodes
            .iter()
            .filter(|(_, node)| {
                let log = node.log_text();
                secrets.iter().any(|secret| log.contains(secret.as_str()))
            })
            .map(|(id, _)| *id)
            .collect()
    }

    /// Waits (up to the ready timeout) until every live node has applied `index`: a
    /// `GET /api/v1/users` with `X-Conclave-Min-Index` returns only then.
    async fn wait_applied_everywhere(&self, index: u64, token: &str) {
        for id in self.live_ids() {
            let url = format!("{}/api/v1/users", self.url(id));
            let _ = poll_until(
                &format!("node {id} to apply index {index}"),
                self.opts.ready_timeout,
                || async {
                    match self
                        .http()
                        .get(&url)
                        .bearer_auth(token)
                        .header("x-conclave-min-index", index.to_string())
                        .send()
                        .await
                    {
                        Ok(r) if r.status().is_success() => Ok(()),
                        Ok(r) => Err(format!("status {}", r.status())),
                        Err(e) => Err(e.to_string()),
                    }
                },
            )
            .await;
        }
    }

    /// `POST /api/v1/cluster/nodes` on node 1 until `id` is a voter.
    async fn add_voter(&self, id: u64) -> Result<()> {
        let api = self.api_addr(id).to_string();
        let cluster = self.cluster_addr(id).to_string();
        poll_until(
            &format!("node {id} to become a voter"),
            self.opts.ready_timeout,
            || async {
                if self
                    .voters(1)
                    .await
                    .map_err(|e| e.to_string())?
                    .contains(&id)
                {
                    return Ok(());
                }
                let client = self
                    .try_client(&[1])
                    .map_err(|e| e.to_string())?
                    .with_request_timeout(self.opts.ready_timeout);
                match client.add_node(id, &api, &cluster).await {
                    Ok(_) => Ok(()),
                    // 409 membership_change_in_progress / 503 / transport errors: try again.
                    Err(e) => Err(format!("add_node({id}) failed: {e}")),
                }
            },
        )
        .await
    }

    async fn try_wait_membership(&self, n: u64) -> Result<()> {
        let want: Vec<u64> = (1..=n).collect();
        poll_until(
            &format!("{n} voters, all ready"),
            self.opts.ready_timeout,
            || async {
                let voters = self.voters(1).await.map_err(|e| e.to_string())?;
                if voters != want {
                    return Err(format!("node 1 lists voters {voters:?}"));
                }
                for id in 1..=n {
                    if !self.readyz(id).await {
                        return Err(format!("node {id} is not ready"));
                    }
                }
                Ok(())
            },
        )
        .await
    }

    // ----- addresses, clients ---------------------------------------------------------------

    pub fn ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    /// Nodes whose process is running.
    pub fn live_ids(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.is_running())
            .map(|(id, _)| *id)
            .collect()
    }

    pub fn is_running(&self, id: u64) -> bool {
        self.node(id).is_running()
    }

    pub fn node(&self, id: u64) -> &NodeProcess {
        self.nodes
            .get(&id)
            .unwrap_or_else(|| panic!("no node {id} in this cluster"))
    }

    /// Node `id`'s client API: `http://<api_addr>`, or `https://<ip>:8443` with TLS.
    pub fn url(&self, id: u64) -> String {
        self.node(id).spec.base_url()
    }

    /// Node `id`'s plain-HTTP port (the client API without TLS; redirects and the trust page
    /// with it).
    pub fn plain_url(&self, id: u64) -> String {
        self.node(id).spec.plain_url()
    }

    /// Whether the cluster serves HTTPS ([`ClusterOptions::tls`]).
    pub fn is_tls(&self) -> bool {
        self.opts.tls
    }

    /// The cluster root the harness's clients trust (TLS only).
    pub fn trust_root(&self) -> Option<ops::TrustRoot> {
        self.trust.as_ref().map(|(root, _)| root.clone())
    }

    /// The cluster root's PEM file (node 1's `tls/ca.pem`), for `--ca-file` (TLS only).
    pub fn ca_file(&self) -> Option<&Path> {
        self.trust.as_ref().map(|(_, path)| path.as_path())
    }

    /// WebSocket connect options trusting the cluster root (the defaults without TLS).
    pub fn ws_options(&self) -> ops::WsConnectOptions {
        ops::WsConnectOptions {
            tls: self.trust_root(),
            ..ops::WsConnectOptions::default()
        }
    }

    /// A raw WebSocket to node `id` (wss:// with TLS), not authenticated.
    pub async fn ws_connect(&self, id: u64) -> std::result::Result<ops::WsConn, ops::WsError> {
        ops::WsConn::connect_with(&self.url(id), &self.ws_options()).await
    }

    /// A chat session builder over `ids` with `token`, trusting the cluster root.
    pub fn session_builder(&self, ids: &[u64], token: &str) -> ops::SessionBuilder {
        let servers = ids.iter().map(|id| self.url(*id)).collect();
        ops::SessionBuilder::new(servers, token).trust_root(self.trust_root())
    }

    pub fn api_addr(&self, id: u64) -> SocketAddr {
        self.node(id).spec.api_addr
    }

    pub fn cluster_addr(&self, id: u64) -> SocketAddr {
        self.node(id).spec.cluster_addr
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The `127.a.b` prefix of this cluster's addresses.
    /// Loopback address of node `id`.
    pub fn ip(&self, id: u64) -> std::net::Ipv4Addr {
        self.block.ip(id)
    }

    pub fn block(&self) -> (u8, u8) {
        (self.block.a, self.block.b)
    }

    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// Logs in as admin again through node `id` and makes that the token of every client this
    /// harness hands out (after a restore revoked the old sessions).
    pub async fn relogin_admin(&mut self, id: u64) {
        let token = self.login_token(id, ADMIN_USER, ADMIN_PASSWORD).await;
        self.admin_token = or_panic(token.map_err(|e| self.annotate(e)));
    }

    /// Raw HTTP client (no proxy, 3 s timeout, trusting the cluster root with TLS) for
    /// requests the ops client cannot make.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// An ops client over `ids` (in that order), not logged in.
    pub fn try_client_without_token(&self, ids: &[u64]) -> Result<ops::Client> {
        let servers = ids.iter().map(|id| self.url(*id)).collect();
        let client = ops::Client::new_trusting(servers, self.trust_root())
            .map_err(|e| anyhow!("ops::Client::new: {e}"))?;
        Ok(client
            .with_request_timeout(self.opts.request_timeout)
            .with_failover_deadline(self.opts.failover_deadline))
    }

    /// An ops client over `ids` carrying the admin token.
    pub fn try_client(&self, ids: &[u64]) -> Result<ops::Client> {
        Ok(self
            .try_client_without_token(ids)?
            .with_token(self.admin_token.clone()))
    }

    /// A single-server client for node `id`, logged in as admin (talks only to that node).
    pub fn client(&self, id: u64) -> ops::Client {
        or_panic(self.try_client(&[id]))
    }

    /// A failover client over `ids`, in that order (the first is tried first), as admin.
    pub fn client_over(&self, ids: &[u64]) -> ops::Client {
        or_panic(self.try_client(ids))
    }

    /// A failover client over every live node, logged in as admin.
    pub fn client_all(&self) -> ops::Client {
        or_panic(self.try_client(&self.live_ids()))
    }

    /// A fresh login as `user` through node `id` (the returned client talks only to node `id`).
    pub async fn login_client(&self, id: u64, user: &str, password: &str) -> ops::Client {
        let token = or_panic(
            self.login_token(id, user, password)
                .await
                .map_err(|e| self.annotate(e)),
        );
        or_panic(self.try_client_without_token(&[id])).with_token(token)
    }

    // ----- faults -----------------------------------------------------------------------------

    /// SIGKILL node `id` (a crash) and reap it.
    pub fn kill(&self, id: u64) {
        or_panic(self.node(id).kill().map_err(|e| self.annotate(e)))
    }

    pub fn kill_all(&self) {
        for id in self.ids() {
            self.kill(id);
        }
    }

    /// Node `id`'s fault filesystem (the cluster must use [`ClusterOptions::faultfs`]).
    pub fn fs(&self, id: u64) -> &FaultFs {
        match self.mounts.get(&id) {
            Some(fs) => fs,
            None => self.fail(&format!(
                "node {id} has no fault filesystem (ClusterOptions::faultfs)"
            )),
        }
    }

    /// Power loss on node `id`: SIGKILL (and reap), then [`FaultFs::power_cut`]: everything
    /// it had not made durable is gone. Does not restart it ([`TestCluster::spawn`] or
    /// [`TestCluster::start_all`] does).
    pub fn power_cut(&self, id: u64, tear: Tear) -> CutReport {
        self.kill(id);
        self.node(id).mark("power cut");
        let report = self.fs(id).power_cut(tear);
        self.node(id).mark(&format!("power cut done: {report:?}"));
        report
    }

    /// SIGSTOP node `id`: the process is frozen, its sockets stay open but nothing answers.
    /// Dropping the cluster SIGKILLs it like any other node (SIGKILL works on a stopped process).
    pub fn freeze(&self, id: u64) {
        or_panic(self.node(id).freeze().map_err(|e| self.annotate(e)))
    }

    /// SIGCONT node `id` after [`TestCluster::freeze`].
    pub fn thaw(&self, id: u64) {
        or_panic(self.node(id).thaw().map_err(|e| self.annotate(e)))
    }

    /// SIGTERM node `id` and wait (bounded) for it to exit; it must exit successfully.
    pub async fn terminate(&self, id: u64) {
        or_panic(self.try_terminate(id).await)
    }

    pub async fn try_terminate(&self, id: u64) -> Result<()> {
        let status = self
            .node(id)
            .terminate(self.opts.stop_timeout)
            .await
            .map_err(|e| self.annotate(e))?;
        if !status.success() {
            return Err(self.annotate(anyhow!("node {id} exited with {status} after SIGTERM")));
        }
        Ok(())
    }

    /// SIGTERM every running node at once and wait for all of them.
    pub async fn stop_all(&self) {
        let live = self.live_ids();
        let results =
            futures::future::join_all(live.iter().map(|id| self.try_terminate(*id))).await;
        for r in results {
            or_panic(r);
        }
    }

    /// Starts node `id`'s process (it must not be running); does not wait.
    pub fn spawn(&self, id: u64) {
        or_panic(self.node(id).spawn().map_err(|e| self.annotate(e)))
    }

    /// Adds node `id` (1..=254, not yet in this cluster) on the cluster's address block with
    /// the cluster's config and starts it with `conclave run`, uninitialized: it waits, not
    /// ready, until it is added through the API. Does not wait. Killed on drop like the others.
    pub fn spawn_extra(&mut self, id: u64) {
        let r = self.try_spawn_extra(id);
        or_panic(r.map_err(|e| self.annotate(e)))
    }

    pub fn try_spawn_extra(&mut self, id: u64) -> Result<()> {
        if !(1..=254).contains(&id) {
            bail!("node ids on an address block are 1..=254, asked for {id}");
        }
        if self.nodes.contains_key(&id) {
            bail!("node {id} already exists in this cluster");
        }
        let bin = match &self.opts.binary {
            Some(b) => b.clone(),
            None => conclave_bin()?,
        };
        let spec = self.opts.spec(id, &self.block, &self.root);
        spec.write_config(&self.opts.raft, &self.opts.config_entries())?;
        if self.opts.faultfs {
            let fs = mount_faultfs(&self.root, &spec.data_dir, id)?;
            self.mounts.insert(id, fs);
        }
        self.nodes
            .insert(id, NodeProcess::new(spec, bin, self.opts.env.clone()));
        if self.opts.tls {
            // `provision` is async and this method is not (its callers are many); the chaos
            // tests run on the multi-threaded runtime, where blocking this worker is allowed.
            let handle = tokio::runtime::Handle::current();
            tokio::task::block_in_place(|| handle.block_on(self.try_provision(id)))
                .with_context(|| format!("provision extra node {id}"))?;
        }
        self.node(id)
            .spawn()
            .with_context(|| format!("start extra node {id}"))
    }

    /// Adds node `id` (as `spawn_extra` does: config written, killed on drop) without starting
    /// or provisioning it, for tests that start it themselves (e.g. `NodeProcess::spawn_join`).
    pub fn try_register_extra(&mut self, id: u64) -> Result<()> {
        if !(1..=254).contains(&id) {
            bail!("node ids on an address block are 1..=254, asked for {id}");
        }
        if self.nodes.contains_key(&id) {
            bail!("node {id} already exists in this cluster");
        }
        let bin = match &self.opts.binary {
            Some(b) => b.clone(),
            None => conclave_bin()?,
        };
        let spec = self.opts.spec(id, &self.block, &self.root);
        spec.write_config(&self.opts.raft, &self.opts.config_entries())?;
        if self.opts.faultfs {
            let fs = mount_faultfs(&self.root, &spec.data_dir, id)?;
            self.mounts.insert(id, fs);
        }
        self.nodes
            .insert(id, NodeProcess::new(spec, bin, self.opts.env.clone()));
        Ok(())
    }

    /// Makes node `id` (stopped) start with `bin` from now on: the binary swap of a rolling
    /// upgrade. Its data dir and config stay as they are.
    pub fn set_binary(&mut self, id: u64, bin: PathBuf) {
        if self.is_running(id) {
            self.fail(&format!("set_binary: node {id} is still running"));
        }
        match self.nodes.get_mut(&id) {
            Some(node) => {
                node.mark(&format!("binary is now {}", bin.display()));
                node.set_binary(bin);
            }
            None => self.fail(&format!("set_binary: no node {id}")),
        }
    }

    /// Starts node `id` again (SIGTERMing it first if it runs) and waits until it is ready.
    pub async fn restart(&self, id: u64) {
        or_panic(self.try_restart(id).await)
    }

    pub async fn try_restart(&self, id: u64) -> Result<()> {
        if self.is_running(id) {
            self.try_terminate(id).await?;
        }
        self.node(id).spawn().map_err(|e| self.annotate(e))?;
        self.try_wait_ready(id).await
    }

    /// Starts every stopped node and waits until all nodes are ready.
    pub async fn start_all(&self) {
        or_panic(self.try_start_all().await)
    }

    pub async fn try_start_all(&self) -> Result<()> {
        for (id, node) in &self.nodes {
            if !node.is_running() {
                node.spawn()
                    .map_err(|e| self.annotate(e.context(format!("start node {id}"))))?;
            }
        }
        self.try_wait_all_ready().await
    }

    // ----- state ------------------------------------------------------------------------------

    /// `GET /readyz` answered 200.
    pub async fn readyz(&self, id: u64) -> bool {
        let url = format!("{}/readyz", self.url(id));
        matches!(self.http.get(url).send().await, Ok(r) if r.status() == reqwest::StatusCode::OK)
    }

    /// `GET /api/v1/cluster` from node `id`, as JSON.
    pub async fn cluster_json(&self, id: u64) -> Result<Value> {
        let url = format!("{}/api/v1/cluster", self.url(id));
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        let status = resp.status();
        let body = resp
            .text()
            .await
            .with_context(|| format!("read body of GET {url}"))?;
        if !status.is_success() {
            bail!("GET {url}: {status}: {body}");
        }
        serde_json::from_str(&body).with_context(|| format!("GET {url}: not JSON: {body}"))
    }

    /// Voter ids in node `id`'s view, sorted.
    pub async fn voters(&self, id: u64) -> Result<Vec<u64>> {
        let v = self.cluster_json(id).await?;
        let nodes = v["nodes"]
            .as_array()
            .ok_or_else(|| anyhow!("no `nodes` array in {v}"))?;
        let mut voters: Vec<u64> = nodes
            .iter()
            .filter(|n| n["voter"].as_bool() == Some(true))
            .filter_map(|n| n["id"].as_u64())
            .collect();
        voters.sort_unstable();
        Ok(voters)
    }

    /// The leader a majority of live nodes agree on, if that leader is live.
    pub async fn leader_id(&self) -> Option<u64> {
        self.leader_state().await.ok()
    }

    async fn leader_state(&self) -> std::result::Result<u64, String> {
        let live = self.live_ids();
        let mut votes: BTreeMap<u64, usize> = BTreeMap::new();
        let mut seen = Vec::new();
        for id in &live {
            match self.cluster_json(*id).await {
                Ok(v) => {
                    let leader = v["leader_id"].as_u64();
                    seen.push(format!("node {id} says leader {leader:?}"));
                    if let Some(l) = leader {
                        *votes.entry(l).or_default() += 1;
                    }
                }
                Err(e) => seen.push(format!("node {id}: {e}")),
            }
        }
        votes
            .into_iter()
            .find(|(l, count)| *count * 2 > live.len() && live.contains(l))
            .map(|(l, _)| l)
            .ok_or_else(|| seen.join("; "))
    }

    /// Waits until the live nodes agree on a live leader that is not in `excluding`.
    pub async fn wait_for_leader(&self, excluding: &[u64]) -> u64 {
        or_panic(self.try_wait_for_leader(excluding).await)
    }

    pub async fn try_wait_for_leader(&self, excluding: &[u64]) -> Result<u64> {
        let r = poll_until("an agreed leader", self.opts.ready_timeout, || async {
            let l = self.leader_state().await?;
            if excluding.contains(&l) {
                return Err(format!("leader is still {l}"));
            }
            Ok(l)
        })
        .await;
        r.map_err(|e| self.annotate(e))
    }

    /// A live node other than the leader.
    pub async fn a_follower(&self) -> u64 {
        let leader = self.wait_for_leader(&[]).await;
        self.live_ids()
            .into_iter()
            .find(|id| *id != leader)
            .unwrap_or_else(|| self.fail("no live follower"))
    }

    pub async fn wait_ready(&self, id: u64) {
        or_panic(self.try_wait_ready(id).await)
    }

    pub async fn try_wait_ready(&self, id: u64) -> Result<()> {
        let r = self.try_wait_ready_inner(id).await;
        r.map_err(|e| self.annotate(e))
    }

    async fn try_wait_ready_inner(&self, id: u64) -> Result<()> {
        poll_until(
            &format!("node {id} /readyz 200"),
            self.opts.ready_timeout,
            || async {
                if let Some(status) = self.node(id).exit_status() {
                    return Err(Waiting::Abort(format!(
                        "node {id} exited by itself ({status})"
                    )));
                }
                if !self.is_running(id) {
                    return Err(Waiting::Abort(format!("node {id} is not running")));
                }
                if self.readyz(id).await {
                    Ok(())
                } else {
                    Err(Waiting::NotYet("503 or no answer".into()))
                }
            },
        )
        .await
    }

    /// Every live node answers /readyz 200.
    pub async fn wait_all_ready(&self) {
        or_panic(self.try_wait_all_ready().await)
    }

    pub async fn try_wait_all_ready(&self) -> Result<()> {
        for id in self.live_ids() {
            self.try_wait_ready(id).await?;
        }
        Ok(())
    }

    /// Polls `check` until it returns `Ok`, panicking with every node's log tail on timeout.
    /// `Err(state)` means "not yet" and says what was seen.
    pub async fn wait_until<T, E, F, Fut>(&self, what: &str, timeout: Duration, check: F) -> T
    where
        E: Into<Waiting>,
        F: FnMut() -> Fut,
        Fut: Future<Output = std::result::Result<T, E>>,
    {
        let r = poll_until(what, timeout, check).await;
        or_panic(r.map_err(|e| self.annotate(e)))
    }

    /// The budget for "the cluster heals" waits.
    pub fn ready_timeout(&self) -> Duration {
        self.opts.ready_timeout
    }

    /// Keeps the data dir (and logs) after the cluster is dropped; returns its path.
    /// (Done on drop for a failing test when `CONCLAVE_CHAOS_KEEP` is set, for every test
    /// when it is `always`.)
    pub fn keep_data_dir(&mut self) -> PathBuf {
        match self.dir.take() {
            Some(dir) => dir.keep(),
            None => self.root.clone(),
        }
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        // Kill nodes first (their own Drop would, too) so the data dir is quiescent.
        for node in self.nodes.values() {
            let _ = node.kill();
        }
        // Then unmount the fault filesystems (the data stays in `<root>/backing`).
        self.mounts.clear();
        let leaked = if std::thread::panicking() {
            Vec::new()
        } else {
            self.nodes_logging_secrets()
        };
        // CONCLAVE_CHAOS_KEEP=1 keeps a failing test's dir, =always every test's.
        let keep = std::env::var("CONCLAVE_CHAOS_KEEP").unwrap_or_default();
        if (std::thread::panicking() && !keep.is_empty()) || keep == "always" {
            let kept = self.keep_data_dir();
            eprintln!("CONCLAVE_CHAOS_KEEP: kept {}", kept.display());
        }
        assert!(
            leaked.is_empty(),
            "the logs of nodes {leaked:?} contain a password or token the test used"
        );
    }
}

/// Creates `<root>/backing/n<id>` (0700, as the node wants its data dir) and the mountpoint
/// `data_dir`, and mounts a fault filesystem there.
fn mount_faultfs(root: &Path, data_dir: &Path, id: u64) -> Result<FaultFs> {
    use std::os::unix::fs::DirBuilderExt;
    let backing = root.join("backing").join(format!("n{id}"));
    for dir in [&backing, &data_dir.to_path_buf()] {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("create {}", dir.display()))?;
    }
    FaultFs::mount(&backing, data_dir)
        .with_context(|| format!("mount the fault filesystem of node {id}"))
}
