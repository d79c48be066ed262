//! [`DockerCluster`]: three containers of the image under test on the test's own network,
//! brought up as docs/operations.md ("Docker") and `ops/dist/docker/compose.yaml` say: the
//! shipped `compose/nodeN.toml` with the test's subnet in place of 10.53.0.0/24, `conclave init`
//! on node 1 in a one-shot container, the root fetched from node 1's plain port and checked
//! against the fingerprint `init` printed, join tokens for nodes 2 and 3 (`conclave join` in a
//! one-shot container, stopped once it is a voter), then `conclave run` (the image's CMD) in
//! long-lived containers.
//!
//! The test talks to the nodes only the way a LAN client does: DNS queries to port 53, HTTPS on
//! 443 trusting nothing but the cluster root, the plain port (80) for `/readyz` and the root.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use tempfile::TempDir;

use super::image::{TestImage, docker_dir};
use super::network::TestNetwork;
use super::{DockerEnv, PREFIX, docker, docker_async, docker_async_env, new_suffix};
use crate::wait::{Waiting, poll_until};

/// The workspace of the shipped configs.
pub const WORKSPACE: &str = "chat.corp.lan";
/// The address range the shipped configs use, replaced by the test's own.
const SHIPPED_PREFIX: &str = "10.53.0.";
/// Where the image expects its configuration.
const CONFIG_IN_CONTAINER: &str = "/etc/conclave/conclave.toml";
/// Generous: several containers start at once on a 2-core machine.
pub(super) const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// Lines of each node's log printed when a test fails.
const LOG_TAIL: &str = "60";

/// One node: its container and address.
#[derive(Clone, Debug)]
pub struct NodeInfo {
    pub id: u64,
    pub container: String,
    pub ip: Ipv4Addr,
    pub(super) config: PathBuf,
    pub(super) data_volume: String,
    pub(super) kek_volume: String,
}

/// Three nodes in containers; everything removed on drop (see the module docs of `docker`).
pub struct DockerCluster {
    pub(super) suffix: String,
    pub(super) nodes: Vec<NodeInfo>,
    /// One-shot containers (init, join) and volumes, removed on drop if still there.
    extra_containers: Mutex<Vec<String>>,
    pub(super) root: Option<ops::TrustRoot>,
    pub(super) root_pem: Vec<u8>,
    pub(super) fingerprint: String,
    pub(super) admin_token: String,
    _configs: TempDir,
    // Dropped after `Drop::drop` removed the containers, in this order.
    pub(super) net: TestNetwork,
    pub(super) image: TestImage,
}

impl DockerCluster {
    /// Builds the image, creates the network and brings up three nodes. Panics (after removing
    /// what it created and printing the nodes' logs) when that fails.
    pub async fn start(env: &DockerEnv) -> DockerCluster {
        match Self::try_start(env).await {
            Ok(c) => c,
            Err(e) => panic!("docker cluster did not come up: {e:#}"),
        }
    }

    pub async fn try_start(env: &DockerEnv) -> Result<DockerCluster> {
        Self::try_start_in(env, 29).await
    }

    /// [`DockerCluster::start`] on a /24 of 172.`second`.0.0/16 (each part of the suite has
    /// its own range; the browser scenario uses 172.27).
    pub async fn start_in(env: &DockerEnv, second: u8) -> DockerCluster {
        match Self::try_start_in(env, second).await {
            Ok(c) => c,
            Err(e) => panic!("docker cluster did not come up: {e:#}"),
        }
    }

    pub async fn try_start_in(env: &DockerEnv, second: u8) -> Result<DockerCluster> {
        let suffix = new_suffix();
        let image = TestImage::build(env, &suffix).await?;
        let net = TestNetwork::create_in(&suffix, second).await?;
        let configs = tempfile::Builder::new()
            .prefix("conclave-docker-")
            .tempdir()
            .context("temp dir for configs")?;
        let mut nodes = Vec::new();
        for id in 1..=3u64 {
            let shipped = docker_dir().join(format!("compose/node{id}.toml"));
            let text = std::fs::read_to_string(&shipped)
                .with_context(|| format!("read {}", shipped.display()))?;
            let config = configs.path().join(format!("node{id}.toml"));
            std::fs::write(&config, text.replace(SHIPPED_PREFIX, &net.prefix()))?;
            let name = format!("{PREFIX}{suffix}-node{id}");
            nodes.push(NodeInfo {
                id,
                ip: net.ip(10 + id as u8),
                data_volume: format!("{name}-data"),
                kek_volume: format!("{name}-kek"),
                container: name,
                config,
            });
        }
        // The container's user (uid 10001) reads the config through the bind mount.
        world_readable(configs.path())?;
        let mut cluster = DockerCluster {
            suffix,
            nodes,
            extra_containers: Mutex::new(Vec::new()),
            root: None,
            root_pem: Vec::new(),
            fingerprint: String::new(),
            admin_token: String::new(),
            _configs: configs,
            net,
            image,
        };
        if let Err(e) = cluster.bring_up().await {
            // Dropping `cluster` on the way out removes everything; the logs say why first.
            return Err(e.context(cluster.diagnostics()));
        }
        Ok(cluster)
    }

    async fn bring_up(&mut self) -> Result<()> {
        // 1. init on node 1, in a one-shot container on node 1's address and volumes.
        let init_name = format!("{PREFIX}{}-init", self.suffix);
        self.remember_extra(&init_name);
        let mut args = self.node_args(1, &init_name);
        args.splice(0..0, ["run".to_owned(), "--rm".to_owned()]);
        args.extend(
            [
                "-e",
                "CONCLAVE_ADMIN_PASSWORD",
                &self.image.tag,
                "init",
                "--config",
            ]
            .map(str::to_owned),
        );
        args.push(CONFIG_IN_CONTAINER.to_owned());
        let out = docker_async_env(
            &as_strs(&args),
            &[("CONCLAVE_ADMIN_PASSWORD", crate::ADMIN_PASSWORD)],
        )
        .await
        .context("conclave init in a one-shot container")?;
        self.fingerprint = out
            .lines()
            .find_map(|l| l.strip_prefix("root CA SHA-256 fingerprint: "))
            .map(|f| f.trim().to_owned())
            .ok_or_else(|| anyhow!("`conclave init` printed no root fingerprint: {out}"))?;

        // 2. node 1 runs.
        self.run_node(1).await?;
        self.wait_ready(1).await?;

        // 3. The root from the plain port, trusted only if it is the one init printed.
        let plain = ops::Client::new(vec![self.plain_url(1)])?;
        let pem = plain.ca_root(ops::RootFormat::Pem).await?;
        let got = ops::root_fingerprint(&pem)
            .ok_or_else(|| anyhow!("node 1's /ca.pem holds no certificate"))?;
        if got != self.fingerprint {
            bail!(
                "node 1 serves a root with fingerprint {got}, init printed {}",
                self.fingerprint
            );
        }
        self.root = Some(ops::TrustRoot::from_pem(&pem)?);
        self.root_pem = pem;
        self.admin_token = self.login(1).await?;

        // 4. Join tokens for nodes 2 and 3, one node at a time (operations.md).
        for id in 2..=3 {
            self.join(id).await?;
        }
        for id in self.ids() {
            self.wait_ready(id).await?;
        }
        // 5. The image's HEALTHCHECK (`conclave healthcheck`) agrees.
        for n in &self.nodes {
            super::wait_health(&n.container, "healthy", READY_TIMEOUT).await?;
        }
        Ok(())
    }

    /// `conclave join` for node `id` in a one-shot container with a fresh token (through the
    /// environment), stopped once node 1 lists it as a voter; then the node's own container.
    async fn join(&self, id: u64) -> Result<()> {
        let token = self
            .client(&[1])
            .create_join_token(600)
            .await
            .context("join token")?;
        let name = format!("{PREFIX}{}-join{id}", self.suffix);
        self.remember_extra(&name);
        let mut args = self.node_args(id, &name);
        args.splice(0..0, ["run".to_owned(), "-d".to_owned()]);
        args.extend(["-e", "CONCLAVE_JOIN_TOKEN", &self.image.tag, "join"].map(str::to_owned));
        args.extend([
            "--config".to_owned(),
            CONFIG_IN_CONTAINER.to_owned(),
            "--seed".to_owned(),
            format!("{}:80", self.ip(1)),
        ]);
        docker_async_env(&as_strs(&args), &[("CONCLAVE_JOIN_TOKEN", &token.token)]).await?;
        let voter = poll_until(
            &format!("node {id} to join as a voter"),
            READY_TIMEOUT,
            || async {
                let status = self
                    .client(&[1])
                    .cluster()
                    .await
                    .map_err(|e| e.to_string())?;
                if status.nodes.iter().any(|n| n.id == id && n.voter) {
                    Ok(())
                } else {
                    let running = docker_async(&["inspect", "-f", "{{.State.Running}}", &name])
                        .await
                        .unwrap_or_default();
                    if running.trim() == "false" {
                        return Err(Waiting::Abort(format!(
                            "the join container exited: {}",
                            logs_of(&name)
                        )));
                    }
                    Err(Waiting::NotYet(format!("members {:?}", status.nodes)))
                }
            },
        )
        .await;
        if let Err(e) = voter {
            bail!("{e:#}\njoin container log:\n{}", logs_of(&name));
        }
        docker_async(&["stop", "-t", "20", &name]).await?;
        docker_async(&["rm", "-v", &name]).await?;
        self.run_node(id).await?;
        self.wait_ready(id).await
    }

    /// `docker run -d` node `id`'s long-lived container (the image's CMD: `conclave run`).
    async fn run_node(&self, id: u64) -> Result<()> {
        let node = self.node(id);
        let mut args = self.node_args(id, &node.container);
        args.splice(0..0, ["run".to_owned(), "-d".to_owned()]);
        args.push(self.image.tag.clone());
        docker_async(&as_strs(&args)).await?;
        Ok(())
    }

    /// Network, address, sysctl and mounts of node `id`, for a container named `name`.
    fn node_args(&self, id: u64, name: &str) -> Vec<String> {
        let n = self.node(id);
        vec![
            "--name".into(),
            name.into(),
            "--hostname".into(),
            format!("node{id}"),
            "--network".into(),
            self.net.name.clone(),
            "--ip".into(),
            n.ip.to_string(),
            // What compose.yaml sets: ports below 1024 for uid 10001 without capabilities.
            "--sysctl".into(),
            "net.ipv4.ip_unprivileged_port_start=0".into(),
            "-v".into(),
            format!("{}:{CONFIG_IN_CONTAINER}:ro", n.config.display()),
            "-v".into(),
            format!("{}:/var/lib/conclave", n.data_volume),
            "-v".into(),
            format!("{}:/etc/conclave/kek", n.kek_volume),
        ]
    }

    fn remember_extra(&self, name: &str) {
        self.extra_containers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(name.to_owned());
    }

    /// Logs in as the admin over HTTPS on node `id`, changing an admin-set password away and
    /// back if the server asks for it.
    async fn login(&self, id: u64) -> Result<String> {
        let r = poll_until("admin login over HTTPS", READY_TIMEOUT, || async {
            let mut c = self.client_without_token(&[id]);
            match c.login(crate::ADMIN_USER, crate::ADMIN_PASSWORD).await {
                Ok(resp) if resp.must_change_password => {
                    crate::settle_admin_set_password(&c, crate::ADMIN_PASSWORD)
                        .await
                        .map_err(|e| Waiting::Abort(e.to_string()))?;
                    Ok(resp.token)
                }
                Ok(resp) => Ok(resp.token),
                Err(e) if crate::load::retryable(&e) => Err(Waiting::NotYet(e.to_string())),
                Err(e) => Err(Waiting::Abort(e.to_string())),
            }
        })
        .await?;
        Ok(r)
    }
}

/// `docker logs --tail` of a container (stdout and stderr), or why not.
pub fn logs_of(container: &str) -> String {
    match std::process::Command::new("docker")
        .args(["logs", "--tail", LOG_TAIL, container])
        .output()
    {
        Ok(o) => format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => format!("(no logs: {e})"),
    }
}

fn as_strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[cfg(unix)]
fn world_readable(dir: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    for e in std::fs::read_dir(dir)? {
        std::fs::set_permissions(e?.path(), std::fs::Permissions::from_mode(0o644))?;
    }
    Ok(())
}

#[cfg(not(unix))]
fn world_readable(_dir: &std::path::Path) -> Result<()> {
    Ok(())
}

impl Drop for DockerCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "docker cluster {} at failure:{}",
                self.suffix,
                self.diagnostics()
            );
        }
        let extra = std::mem::take(
            &mut *self
                .extra_containers
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        let mut containers: Vec<String> = self.nodes.iter().map(|n| n.container.clone()).collect();
        containers.extend(extra);
        // A paused container cannot be removed by `rm -f` on every engine: unpause first.
        for c in &containers {
            let _ = docker(&["unpause", c]);
        }
        let mut rm = vec!["rm", "-f", "-v"];
        rm.extend(containers.iter().map(String::as_str));
        if let Err(e) = docker(&rm) {
            let msg = format!("{e:#}");
            if !msg.contains("No such container") {
                eprintln!("cleanup: {msg}");
            }
        }
        let mut vols = vec!["volume", "rm", "-f"];
        for n in &self.nodes {
            vols.push(&n.data_volume);
            vols.push(&n.kek_volume);
        }
        if let Err(e) = docker(&vols) {
            eprintln!("cleanup: {e:#}");
        }
        // `net` and `image` drop next: the network, then the image.
    }
}
