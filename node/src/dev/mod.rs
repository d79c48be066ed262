//! `conclave dev`: a local 3-node cluster as three real OS processes of this same binary, node N
//! on 127.0.0.N (HTTPS :8443, plain HTTP :8080, cluster :9080 with mutual TLS, DNS :8053 for
//! `chat.conclave.test`; `--no-tls` serves the API on :8080 in the clear instead). First run
//! initializes node 1 and joins nodes 2 and 3 the documented production way: an admin join
//! token each (`POST /api/v1/cluster/join-tokens`), then `conclave join --seed 127.0.0.1:8080`,
//! which checks node 1's root against the token, gets the node certificate over HTTPS and has
//! itself added as voter. Later runs reuse the data (a node that has none of its certificate
//! files yet, e.g. after turning TLS on, is provisioned the way `conclave provision` does). The
//! root certificate is written to `<data-dir>/ca.pem`.
//!
//! Owns child-process supervision for development. Must never be what production runs: the
//! admin password is kept in `<data-dir>/dev-credentials` so a rerun can print it.

mod supervisor;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;

use crate::signals;
use supervisor::Supervisor;

const NODES: u64 = 3;

/// Ports of the dev cluster; node N listens on 127.0.0.N.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub api: u16,
    /// HTTPS port; `None` runs without TLS.
    pub https: Option<u16>,
    pub cluster: u16,
    pub dns: u16,
}

impl Ports {
    fn api(&self, n: u64) -> String {
        format!("127.0.0.{n}:{}", self.api)
    }
    fn https(&self, n: u64) -> Option<String> {
        self.https.map(|p| format!("127.0.0.{n}:{p}"))
    }
    /// Where clients reach node `n`'s API.
    fn url(&self, n: u64) -> String {
        match self.https(n) {
            Some(a) => format!("https://{a}"),
            None => format!("http://{}", self.api(n)),
        }
    }
    fn cluster(&self, n: u64) -> String {
        format!("127.0.0.{n}:{}", self.cluster)
    }
    fn dns(&self, n: u64) -> String {
        format!("127.0.0.{n}:{}", self.dns)
    }
}

/// Each node's config sits in its own data directory, so the shared key-encryption key is put
/// explicitly in the dev directory above them: one KEK for the three nodes (in production it is
/// copied to each node), and never inside a node's `data_dir`.
fn node_config(n: u64, dir: &Path, ports: Ports, workspace: &str) -> String {
    let kek = dir.parent().unwrap_or(dir).join("conclave.kek");
    let tls = ports
        .https(n)
        .map(|a| format!("\n[tls]\nhttps_addr = \"{a}\"\n"))
        .unwrap_or_default();
    format!(
        "# Written by `conclave dev`; see docs/configuration.md.\nnode_id = {n}\ndata_dir = {dir:?}\napi_addr = \"{}\"\ncluster_addr = \"{}\"\n\n[dns]\naddr = \"{}\"\nworkspace = {workspace:?}\n\n[ca]\nkek_file = {kek:?}\n{tls}",
        ports.api(n),
        ports.cluster(n),
        ports.dns(n),
    )
}

/// What the steps of `dev` share: where things are and how the nodes are reached.
struct Layout {
    data_dir: PathBuf,
    configs: Vec<PathBuf>,
    ports: Ports,
    root_path: PathBuf,
}

pub async fn dev(
    data_dir: PathBuf,
    admin_password: Option<String>,
    ports: Ports,
    workspace: &str,
) -> anyhow::Result<()> {
    // Checked here too (init checks it again), so a weak password is one console line rather
    // than a failed init whose reason is in init.log. Only for a new cluster: an existing one
    // keeps the password it was made with.
    if let Some(p) = &admin_password
        && !data_dir.join("dev-credentials").exists()
    {
        web::password_policy::check("admin", Some(workspace), p)
            .map_err(|e| anyhow::anyhow!("--admin-password: {e}"))?;
    }
    // New directories are 0700 anyway (umask 077, see main); an existing one the developer
    // named is left as it is: only the nodes' own directories must be owner-only.
    std::fs::create_dir_all(&data_dir).with_context(|| format!("create {}", data_dir.display()))?;
    let data_dir = data_dir.canonicalize().context("resolve data dir")?;
    let exe = std::env::current_exe().context("locate the conclave binary")?;
    let mut configs = Vec::new();
    for n in 1..=NODES {
        let dir = data_dir.join(format!("node{n}"));
        owner_only_dir(&dir)?;
        let cfg = dir.join("conclave.toml");
        std::fs::write(&cfg, node_config(n, &dir, ports, workspace))?;
        configs.push(cfg);
    }
    let layout = Layout {
        root_path: data_dir.join("ca.pem"),
        data_dir,
        configs,
        ports,
    };
    let (password, fresh) = admin_credentials(&exe, &layout, admin_password)?;

    let mut children = Supervisor::new(exe, layout.data_dir.clone(), layout.configs.clone(), ports);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()?;
    let result = tokio::select! {
        r = start_nodes(&mut children, &layout, &http, &password, fresh) => r,
        _ = signals::shutdown_requested() => Err(anyhow::anyhow!("interrupted")),
    };
    if let Err(e) = result {
        children.stop();
        return Err(e.context(format!(
            "the dev cluster did not come up; logs are in {}",
            layout.data_dir.display()
        )));
    }
    emit(&banner(&children, &layout, &password, workspace));

    children.supervise(&http).await;
    emit("Stopping the nodes.\n");
    children.stop();
    emit("Stopped.\n");
    Ok(())
}

/// The admin password, and whether the cluster is new: the first run initializes node 1 with
/// `conclave init` and keeps the password in `<data-dir>/dev-credentials` for later runs.
fn admin_credentials(
    exe: &Path,
    layout: &Layout,
    admin_password: Option<String>,
) -> anyhow::Result<(String, bool)> {
    let creds_path = layout.data_dir.join("dev-credentials");
    if creds_path.exists() {
        let text = std::fs::read_to_string(&creds_path)?;
        let password = text.lines().nth(1).map(str::to_string).unwrap_or_default();
        return Ok((password, false));
    }
    let mut cmd = Command::new(exe);
    cmd.arg("init").arg("--config").arg(&layout.configs[0]);
    if let Some(p) = &admin_password {
        cmd.arg("--admin-password").arg(p);
    }
    // init logs like a node (openraft's INFO lines included): that goes to a file, and the
    // console gets one line if it fails.
    let init_log = layout.data_dir.join("init.log");
    let log = std::fs::File::create(&init_log)
        .with_context(|| format!("create {}", init_log.display()))?;
    let out = cmd.stderr(log).output().context("run conclave init")?;
    if !out.status.success() {
        bail!(
            "conclave init failed ({}); see {}",
            out.status,
            init_log.display()
        );
    }
    let password = match admin_password {
        Some(p) => p,
        None => String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("admin password: ").map(str::to_string))
            .context("conclave init did not print the generated password")?,
    };
    write_private(&creds_path, &format!("admin\n{password}\n"))?;
    Ok((password, true))
}

/// Starts the three nodes and waits until all are ready. Node 1 first: with TLS, nodes 2 and 3
/// get their certificates from it before they can start; a new cluster's nodes 2 and 3 join
/// with a token each, the way production does.
async fn start_nodes(
    children: &mut Supervisor,
    layout: &Layout,
    http: &reqwest::Client,
    password: &str,
    fresh: bool,
) -> anyhow::Result<()> {
    let ports = layout.ports;
    children.start(1, None)?;
    let api = if ports.https.is_some() {
        https_client_for_node1(layout, http, password, fresh).await?
    } else {
        http.clone()
    };
    if fresh {
        wait_ready(http, &[1], Duration::from_secs(30), ports).await?;
        let session = login(&api, password, ports).await?;
        for n in 2..=NODES {
            let token = join_token(&api, &session, ports).await?;
            children.start(n, Some(&token))?;
        }
    } else {
        for n in 2..=NODES {
            children.start(n, None)?;
        }
    }
    wait_ready(http, &[1, 2, 3], Duration::from_secs(60), ports).await
}

/// With TLS: writes node 1's root to `<data-dir>/ca.pem`, provisions the certificates of a
/// rerun's nodes that have none yet (TLS turned on later), and returns a client that trusts
/// only that root.
async fn https_client_for_node1(
    layout: &Layout,
    http: &reqwest::Client,
    password: &str,
    fresh: bool,
) -> anyhow::Result<reqwest::Client> {
    let ports = layout.ports;
    let node_dir = |n: u64| layout.data_dir.join(format!("node{n}"));
    let node1_root = crate::node_cert::tls_dir(&node_dir(1)).join(crate::node_cert::ROOT_FILE);
    std::fs::copy(&node1_root, &layout.root_path).with_context(|| {
        format!(
            "copy the root certificate to {}",
            layout.root_path.display()
        )
    })?;
    let root = std::fs::read_to_string(&layout.root_path)?;
    // A new cluster's nodes get their certificates by joining; only a rerun's nodes without
    // certificate files are provisioned.
    let unprovisioned: Vec<u64> = (2..=NODES)
        .filter(|n| {
            !fresh
                && !crate::node_cert::tls_dir(&node_dir(*n))
                    .join(crate::node_cert::CHAIN_FILE)
                    .exists()
        })
        .collect();
    // Node 1 must be ready to sign (a known limit: on a rerun it is ready only once a quorum
    // runs, so provisioning there needs the other nodes up first).
    if !unprovisioned.is_empty() {
        wait_ready(http, &[1], Duration::from_secs(30), ports).await?;
    }
    for n in unprovisioned {
        let cfg =
            crate::config::Config::load(&layout.configs[(n - 1) as usize], std::iter::empty())?;
        crate::node_cert::provision(&cfg, &ports.url(1), &layout.root_path, "admin", password)
            .await
            .with_context(|| format!("provision node {n}'s certificate"))?;
    }
    Ok(crate::node_cert::https_client(&root)?)
}

/// What the console shows once the cluster is ready: where each node is (and its pid, to kill
/// it), the root CA, the admin credentials and what to try.
fn banner(children: &Supervisor, layout: &Layout, password: &str, workspace: &str) -> String {
    let ports = layout.ports;
    let root_path = &layout.root_path;
    let mut out = String::new();
    out.push_str("Conclave dev cluster is ready (3 nodes).\n");
    for n in 1..=NODES {
        let plain = if ports.https.is_some() {
            format!("   (plain HTTP, trust page: http://{})", ports.api(n))
        } else {
            String::new()
        };
        out.push_str(&format!(
            "  node {n}: {}{plain}   (pid {}, log: {})\n",
            ports.url(n),
            children.pid(n).unwrap_or_default(),
            children.log_path(n).display()
        ));
    }
    if ports.https.is_some() {
        let fingerprint = std::fs::read_to_string(root_path)
            .ok()
            .and_then(|pem| crate::ca::x509::cert_der(&pem).ok())
            .map(|der| crate::ca::fingerprint_sha256(&der))
            .unwrap_or_else(|| "unknown".into());
        out.push_str(&format!(
            "  root CA: {} (SHA-256 {fingerprint})\n  try: curl --cacert {} {}/healthz\n",
            root_path.display(),
            root_path.display(),
            ports.url(1)
        ));
    }
    out.push_str(&format!(
        "  admin user: admin\n  admin password: {password}\n"
    ));
    // Over HTTPS conclavectl trusts only the root it is given (never the system store).
    let ca_arg = if ports.https.is_some() {
        format!(" --ca-file {}", root_path.display())
    } else {
        String::new()
    };
    out.push_str(&format!(
        "  try: conclavectl --server {}{ca_arg} login --username admin\n",
        ports.url(1)
    ));
    out.push_str(&format!(
        "  dns: each node answers for {workspace} on 127.0.0.N:{port}; try: dig @127.0.0.1 -p {port} {workspace}\n",
        port = ports.dns
    ));
    out.push_str(
        "  failover: kill any node (kill -9 PID) and the other two keep serving; it is restarted after 3 s and catches up.\n",
    );
    out.push_str("Press Ctrl-C to stop all three nodes.\n");
    out
}

#[allow(clippy::print_stdout)]
fn emit(s: &str) {
    print!("{s}");
}

async fn ready(http: &reqwest::Client, n: u64, ports: Ports) -> bool {
    http.get(format!("http://{}/readyz", ports.api(n)))
        .timeout(Duration::from_secs(1))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

async fn wait_ready(
    http: &reqwest::Client,
    nodes: &[u64],
    within: Duration,
    ports: Ports,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let mut all = true;
        for n in nodes {
            if !ready(http, *n, ports).await {
                all = false;
            }
        }
        if all {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("nodes {nodes:?} not ready after {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Logs in as admin on node 1 (`api`: HTTPS with TLS); returns the session token.
async fn login(api: &reqwest::Client, password: &str, ports: Ports) -> anyhow::Result<String> {
    let login: serde_json::Value = api
        .post(format!("{}/api/v1/login", ports.url(1)))
        .json(&json!({"username": "admin", "password": password}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(login["token"]
        .as_str()
        .context("login returned no token")?
        .to_string())
}

/// A single-use join token from node 1, valid for 10 minutes.
async fn join_token(api: &reqwest::Client, session: &str, ports: Ports) -> anyhow::Result<String> {
    let resp = api
        .post(format!("{}/api/v1/cluster/join-tokens", ports.url(1)))
        .bearer_auth(session)
        .json(&json!({"ttl_secs": 600}))
        .send()
        .await?;
    if !resp.status().is_success() {
        let status = resp.status();
        bail!(
            "creating a join token failed: {status} {}",
            resp.text().await.unwrap_or_default()
        );
    }
    let created: serde_json::Value = resp.json().await?;
    Ok(created["token"]
        .as_str()
        .context("the join-token answer has no token")?
        .to_string())
}

/// Creates `dir` and makes it owner-only (0700): nodes refuse a data directory other users can
/// reach, and a directory left by an older `conclave dev` (0755) is one this launcher owns.
fn owner_only_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("chmod 700 {}", dir.display()))?;
    }
    Ok(())
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)?;
        f.write_all(text.as_bytes())?;
        // The generated admin password is nowhere else: on disk before it is printed.
        f.sync_all()?;
    }
    #[cfg(not(unix))]
    std::fs::write(path, text)?;
    Ok(())
}
