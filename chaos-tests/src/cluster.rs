//! [`TestCluster`]: an N-node Conclave cluster of real `conclave` processes on a private
//! loopback block, built the way an operator builds one (`init` on node 1, `run` everywhere,
//! `POST /api/v1/cluster/nodes` for nodes 2..N), plus the faults tests inject (SIGKILL,
//! SIGTERM, restart) and the waits they need (ready, leader elected, nodes converged).
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
use crate::node::{NodeProcess, NodeSpec, RaftOptions, conclave_bin};
use crate::wait::{Waiting, poll_until};

/// Admin created by `conclave init`.
pub const ADMIN_USER: &str = "admin";
/// Its password (8..=128 chars as the API requires).
pub const ADMIN_PASSWORD: &str = "chaos-admin-password";
/// Lines of each node's log included in a failure message.
pub const LOG_TAIL_LINES: usize = 40;

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
}

/// A running test cluster. Field order matters: nodes are dropped (killed) before the temp dir
/// is removed, and the address block is released last.
pub struct TestCluster {
    pub(crate) nodes: BTreeMap<u64, NodeProcess>,
    dir: Option<TempDir>,
    pub(crate) root: PathBuf,
    admin_token: String,
    http: reqwest::Client,
    opts: ClusterOptions,
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
        for id in 1..=n {
            let spec = NodeSpec::new(id, block.api_addr(id), block.cluster_addr(id), &root);
            spec.write_config(&opts.raft, &opts.top_level)?;
            nodes.insert(id, NodeProcess::new(spec, bin.clone(), opts.env.clone()));
        }
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(3))
            .build()
            .context("build HTTP client")?;
        let mut cluster = TestCluster {
            nodes,
            dir: Some(dir),
            root,
            admin_token: String::new(),
            http,
            opts,
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

    /// Logs in through node `id` (retrying while it is unavailable) and returns the token.
    async fn login_token(&self, id: u64, user: &str, password: &str) -> Result<String> {
        poll_until(
            &format!("login as {user} on node {id}"),
            self.opts.ready_timeout,
            || async {
                let mut c = self
                    .try_client_without_token(&[id])
                    .map_err(|e| e.to_string())?;
                match c.login(user, password).await {
                    Ok(resp) => Ok(Ok(resp.token)),
                    Err(e) if crate::load::retryable(&e) => Err(e.to_string()),
                    // A definite refusal (4xx) will not change by retrying.
                    Err(e) => Ok(Err(anyhow!("login as {user} on node {id} refused: {e}"))),
                }
            },
        )
        .await?
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

    pub fn url(&self, id: u64) -> String {
        self.node(id).spec.base_url()
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

    /// Raw HTTP client (no proxy, 3 s timeout) for requests the ops client cannot make.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// An ops client over `ids` (in that order), not logged in.
    pub fn try_client_without_token(&self, ids: &[u64]) -> Result<ops::Client> {
        let servers = ids.iter().map(|id| self.url(*id)).collect();
        let client = ops::Client::new(servers).map_err(|e| anyhow!("ops::Client::new: {e}"))?;
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
        let spec = NodeSpec::new(
            id,
            self.block.api_addr(id),
            self.block.cluster_addr(id),
            &self.root,
        );
        spec.write_config(&self.opts.raft, &self.opts.top_level)?;
        self.nodes
            .insert(id, NodeProcess::new(spec, bin, self.opts.env.clone()));
        self.node(id)
            .spawn()
            .with_context(|| format!("start extra node {id}"))
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
        // CONCLAVE_CHAOS_KEEP=1 keeps a failing test's dir, =always every test's.
        let keep = std::env::var("CONCLAVE_CHAOS_KEEP").unwrap_or_default();
        if (std::thread::panicking() && !keep.is_empty()) || keep == "always" {
            let kept = self.keep_data_dir();
            eprintln!("CONCLAVE_CHAOS_KEEP: kept {}", kept.display());
        }
    }
}
