//! Faults on [`DockerCluster`] nodes, as a host sees them: SIGKILL, the cgroup freezer, leaving
//! the network, one-way packet loss by iptables inside one container's network namespace
//! (entered from the host with `nsenter`, since the image has no iptables), stop and start.
//!
//! Must never change the host's own firewall: every iptables rule goes into a container's
//! namespace, and that namespace disappears with the container.

use anyhow::{Context, Result, bail};

use super::cluster::DockerCluster;
use super::docker_async;

impl DockerCluster {
    /// `docker kill -s KILL`: the process dies at once; the container and its volumes stay.
    pub async fn kill(&self, id: u64) -> Result<()> {
        docker_async(&["kill", "-s", "KILL", &self.node(id).container]).await?;
        Ok(())
    }

    /// `docker stop` (SIGTERM, then SIGKILL after `grace_secs`).
    pub async fn stop(&self, id: u64, grace_secs: u32) -> Result<()> {
        let grace = grace_secs.to_string();
        docker_async(&["stop", "-t", &grace, &self.node(id).container]).await?;
        Ok(())
    }

    /// `docker start` of a stopped or killed node (its CMD again: `conclave run`).
    pub async fn start_node(&self, id: u64) -> Result<()> {
        docker_async(&["start", &self.node(id).container]).await?;
        Ok(())
    }

    /// Stops every node at once (SIGTERM), then starts every node at once.
    pub async fn restart_all(&self, grace_secs: u32) -> Result<()> {
        let ids = self.ids();
        for r in futures::future::join_all(ids.iter().map(|id| self.stop(*id, grace_secs))).await {
            r?;
        }
        for r in futures::future::join_all(ids.iter().map(|id| self.start_node(*id))).await {
            r?;
        }
        Ok(())
    }

    /// `docker pause`: every process of the node frozen (cgroup freezer); sockets stay open.
    pub async fn pause(&self, id: u64) -> Result<()> {
        docker_async(&["pause", &self.node(id).container]).await?;
        Ok(())
    }

    pub async fn unpause(&self, id: u64) -> Result<()> {
        docker_async(&["unpause", &self.node(id).container]).await?;
        Ok(())
    }

    /// `docker network disconnect`: the node loses its only interface but keeps running.
    pub async fn disconnect(&self, id: u64) -> Result<()> {
        docker_async(&[
            "network",
            "disconnect",
            &self.network().name,
            &self.node(id).container,
        ])
        .await?;
        Ok(())
    }

    /// Reconnects a disconnected node with its own address.
    pub async fn connect(&self, id: u64) -> Result<()> {
        let ip = self.ip(id).to_string();
        docker_async(&[
            "network",
            "connect",
            "--ip",
            &ip,
            &self.network().name,
            &self.node(id).container,
        ])
        .await?;
        Ok(())
    }

    /// The host pid of node `id`'s process (for `nsenter`).
    pub async fn pid(&self, id: u64) -> Result<u32> {
        let out =
            docker_async(&["inspect", "-f", "{{.State.Pid}}", &self.node(id).container]).await?;
        let pid: u32 = out.trim().parse().context("container pid")?;
        if pid == 0 {
            bail!("node {id}'s container is not running");
        }
        Ok(pid)
    }

    /// `iptables ARGS` inside node `id`'s network namespace.
    pub async fn iptables(&self, id: u64, args: &[&str]) -> Result<()> {
        let pid = self.pid(id).await?.to_string();
        let mut cmd = tokio::process::Command::new("nsenter");
        cmd.args(["-t", &pid, "-n", "iptables", "-w"]).args(args);
        let out = cmd
            .output()
            .await
            .context("cannot run nsenter (util-linux) with iptables")?;
        if !out.status.success() {
            bail!(
                "nsenter -t {pid} -n iptables {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// One-way cut: node `id` drops every packet that comes from node `from` (TCP handshakes
    /// from `from` fail; `id`'s own packets still reach `from`, but no answer comes back).
    pub async fn drop_from(&self, id: u64, from: u64) -> Result<()> {
        let src = self.ip(from).to_string();
        self.iptables(id, &["-A", "INPUT", "-s", &src, "-j", "DROP"])
            .await
    }

    /// Removes every rule [`DockerCluster::drop_from`] added in node `id`'s namespace.
    pub async fn heal_iptables(&self, id: u64) -> Result<()> {
        self.iptables(id, &["-F", "INPUT"]).await
    }
}

/// Whether the host can cut links inside a container's namespace (`nsenter` and `iptables`
/// on the PATH, root). `Err` says what is missing.
pub fn iptables_available() -> Result<()> {
    for tool in ["nsenter", "iptables"] {
        let found = std::env::var_os("PATH")
            .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(tool).is_file()));
        if !found {
            bail!("{tool} is not on the PATH");
        }
    }
    #[cfg(unix)]
    {
        // The effective uid from procfs: no unsafe libc call for a yes/no question.
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let root = status
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(2))
            .is_some_and(|euid| euid == "0");
        if !root {
            bail!("entering a container's network namespace needs root");
        }
    }
    Ok(())
}
