//! The 3-host harness: real containers of the shipped image (`ops/dist/docker/Dockerfile`, the
//! static binaries from `$CONCLAVE_DIST`), each with its own address on a bridge network the
//! test creates, brought up the production way (`conclave init` on node 1, join tokens for the
//! others, TLS on, DNS on 53, HTTPS on 443), and faults a host sees: `docker kill`, `pause`,
//! `network disconnect`, iptables inside one container's network namespace, stop/start.
//!
//! Using it from a test (`tests/cluster/docker_*.rs`, the browser scenario too):
//! ```ignore
//! let Some(env) = DockerEnv::detect("my_test") else { return };   // prints why it skips
//! let cluster = DockerCluster::start(&env).await;                 // image, network, 3 nodes
//! let ips = cluster.resolve(1).await;          // A records from node 1's DNS on port 53
//! let client = cluster.admin_client();         // HTTPS on 443, trusting only the root
//! cluster.kill(2).await?; cluster.start_node(2).await?;
//! let suffix = cluster.suffix().to_owned();
//! drop(cluster);                               // removes containers, volumes, network, image
//! docker::assert_nothing_left(&suffix);
//! ```
//!
//! Owns everything named `conclave-test-<suffix>*` that it creates and removes all of it in
//! `Drop`, also when the test panics (then it prints every node's log tail first). Must never
//! touch a container, network, volume or image it did not create, pull anything (there is no
//! registry), or send traffic anywhere but the test's own network.

mod cluster;
mod faults;
mod image;
mod network;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{Context, Result, bail};

pub use cluster::{DockerCluster, NodeInfo, WORKSPACE, logs_of};
pub use faults::iptables_available;
pub use image::{TestImage, docker_dir};
pub use network::TestNetwork;

/// Every name the harness creates starts with this (common.md: the shared prefix).
pub const PREFIX: &str = "conclave-test-";
/// `CHAOS_REQUIRE_DOCKER=1`: a missing engine or dist is a failure, not a skip (`.ci/run`).
pub const REQUIRE_ENV: &str = "CHAOS_REQUIRE_DOCKER";
/// Where the static `conclave` and `conclavectl` are (`ops/dist/build.sh --out`).
pub const DIST_ENV: &str = "CONCLAVE_DIST";

/// What a Docker test needs: an engine that answers and the static binaries.
#[derive(Clone, Debug)]
pub struct DockerEnv {
    /// Directory holding the static `conclave` and `conclavectl`.
    pub dist: PathBuf,
}

impl DockerEnv {
    /// The environment, or `None` after printing why `test` skips. Panics instead of skipping
    /// when `CHAOS_REQUIRE_DOCKER=1`.
    pub fn detect(test: &str) -> Option<DockerEnv> {
        match Self::check() {
            Ok(env) => Some(env),
            Err(why) if require() => panic!("{test}: {REQUIRE_ENV}=1 but {why:#}"),
            Err(why) => {
                eprintln!("SKIP {test}: {why:#} (set {REQUIRE_ENV}=1 to make this a failure)");
                None
            }
        }
    }

    fn check() -> Result<DockerEnv> {
        let dist = std::env::var_os(DIST_ENV)
            .map(PathBuf::from)
            .with_context(|| format!("{DIST_ENV} is not set (a directory with the static conclave and conclavectl: ops/dist/build.sh)"))?;
        for bin in ["conclave", "conclavectl"] {
            let p = dist.join(bin);
            if !p.is_file() {
                bail!(
                    "{} does not exist ({DIST_ENV}={})",
                    p.display(),
                    dist.display()
                );
            }
        }
        docker(&["info", "--format", "{{.ServerVersion}}"])
            .context("no Docker engine answers `docker info`")?;
        Ok(DockerEnv { dist })
    }
}

fn require() -> bool {
    std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1")
}

/// A fresh random suffix for this test's names (lower case, so valid in image names).
pub fn new_suffix() -> String {
    format!("{:08x}", rand_u32())
}

fn rand_u32() -> u32 {
    // No `rand` dependency in the harness: the OS's random bytes are enough for names.
    let mut b = [0u8; 4];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut b);
    }
    u32::from_le_bytes(b) ^ std::process::id().rotate_left(16)
}

fn describe(args: &[&str], out: &Output) -> String {
    format!(
        "`docker {}` exited with {}: {}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim(),
        String::from_utf8_lossy(&out.stdout).trim()
    )
}

/// Runs `docker ARGS` to completion; its stdout, or an error with stderr.
pub fn docker(args: &[&str]) -> Result<String> {
    let out = Command::new("docker")
        .args(args)
        .output()
        .with_context(|| format!("cannot run `docker {}`", args.join(" ")))?;
    if !out.status.success() {
        bail!("{}", describe(args, &out));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// [`docker`] without blocking the runtime's threads (the CLI can take seconds).
pub async fn docker_async(args: &[&str]) -> Result<String> {
    docker_async_env(args, &[]).await
}

/// [`docker_async`] with extra environment for the CLI itself (e.g. a secret passed through
/// with `-e NAME`, so it is not on any command line).
pub async fn docker_async_env(args: &[&str], env: &[(&str, &str)]) -> Result<String> {
    let mut cmd = tokio::process::Command::new("docker");
    cmd.args(args).kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd
        .output()
        .await
        .with_context(|| format!("cannot run `docker {}`", args.join(" ")))?;
    if !out.status.success() {
        bail!("{}", describe(args, &out));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Everything named `conclave-test-<suffix>*` that still exists: containers, networks,
/// volumes, images. Empty after a harness value was dropped.
pub fn leftovers(suffix: &str) -> Vec<String> {
    let name = format!("{PREFIX}{suffix}");
    let lists: [(&str, Vec<&str>); 4] = [
        ("container", vec!["ps", "-a", "--format", "{{.Names}}"]),
        ("network", vec!["network", "ls", "--format", "{{.Name}}"]),
        ("volume", vec!["volume", "ls", "--format", "{{.Name}}"]),
        (
            "image",
            vec!["images", "--format", "{{.Repository}}:{{.Tag}}"],
        ),
    ];
    let mut left = Vec::new();
    for (kind, args) in lists {
        match docker(&args) {
            Ok(out) => left.extend(
                out.lines()
                    .filter(|l| l.contains(&name))
                    .map(|l| format!("{kind} {l}")),
            ),
            Err(e) => left.push(format!("cannot list {kind}s: {e:#}")),
        }
    }
    left
}

/// Fails the test if anything of `suffix` survived its harness.
pub fn assert_nothing_left(suffix: &str) {
    let left = leftovers(suffix);
    assert!(
        left.is_empty(),
        "the test left Docker objects behind: {left:?}"
    );
}

/// Polls `docker inspect` until the container reports `want` as its health status.
pub async fn wait_health(container: &str, want: &str, timeout: Duration) -> Result<()> {
    crate::wait::poll_until(
        &format!("container {container} to be {want}"),
        timeout,
        || async {
            let s = docker_async(&["inspect", "-f", "{{.State.Health.Status}}", container])
                .await
                .map_err(|e| e.to_string())?;
            let s = s.trim().to_owned();
            if s == want {
                Ok(())
            } else {
                Err(format!("health {s}"))
            }
        },
    )
    .await
}
