//! `ops/dist/docker/compose.yaml` brought up exactly as its header (and operations.md,
//! "Docker") says, with Debian's `docker-compose`: `run --rm node1 init`, `up -d node1`, the
//! root fetched with `conclavectl ca root` and its fingerprint compared with init's, `conclavectl
//! login` and `node join-token`, `run -d --name ... node2 join` (token in the environment) until
//! it logs that it is a voter, then `up -d node2`, the same for node 3, then `up -d`. Checks: `conclavectl status`
//! exits 0 with three voters, every node's DNS on 53 lists the three, every container is
//! healthy (`conclave healthcheck`), HTTPS on 443 serves a certificate of the root. Then `down
//! -v`, and nothing of the test is left in Docker.
//!
//! Runs on a copy of the folder whose 10.53.0.0/24 is replaced by a free /24 of 172.29.0.0/16,
//! under a compose project named after the test's suffix, with the image built from
//! `$CONCLAVE_DIST` (CONCLAVE_IMAGE selects it, as the header documents).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use chaos_tests::docker::{self, DockerEnv, TestImage, TestNetwork};
use chaos_tests::wait::poll_until;

const TEST: &str = "docker_compose_bring_up_as_documented";
const CONFIG: &str = "/etc/conclave/conclave.toml";
const NEW_PASSWORD: &str = "compose-admin-pass-9182";

/// A compose project of this test: `down -v` and removal of its one-shot containers on drop.
struct Project {
    dir: tempfile::TempDir,
    name: String,
    image: String,
    suffix: String,
}

impl Project {
    fn compose(&self) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new("docker-compose");
        cmd.current_dir(self.dir.path())
            .args(["-p", &self.name, "-f", "compose.yaml"])
            .env("CONCLAVE_IMAGE", &self.image)
            .kill_on_drop(true);
        cmd
    }

    fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let down = std::process::Command::new("docker-compose")
            .current_dir(self.dir.path())
            .args([
                "-p",
                &self.name,
                "-f",
                "compose.yaml",
                "down",
                "-v",
                "--remove-orphans",
            ])
            .env("CONCLAVE_IMAGE", &self.image)
            .output();
        match down {
            Ok(o) if !o.status.success() => {
                eprintln!(
                    "cleanup: docker-compose down: {}",
                    String::from_utf8_lossy(&o.stderr)
                )
            }
            Err(e) => eprintln!("cleanup: docker-compose down: {e}"),
            _ => {}
        }
        // The one-shot join containers (named by the test), if a failure left them.
        for n in [2, 3] {
            let _ = docker::docker(&["rm", "-f", "-v", &join_name(&self.suffix, n)]);
        }
    }
}

fn join_name(suffix: &str, n: u32) -> String {
    format!("{}{suffix}-join-node{n}", docker::PREFIX)
}

/// Runs `cmd`; its stdout, or an error with both streams.
async fn output(mut cmd: tokio::process::Command, what: &str) -> Result<String> {
    let out = cmd
        .output()
        .await
        .with_context(|| format!("cannot run {what}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "{what} exited with {}: {}{stdout}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(stdout)
}

/// Copies compose.yaml and compose/ with `10.53.0.` replaced by `prefix`.
fn copy_rewritten(to: &Path, prefix: &str) -> Result<()> {
    let from = chaos_tests::docker::docker_dir();
    std::fs::create_dir_all(to.join("compose"))?;
    let mut files = vec!["compose.yaml".to_owned()];
    files.extend((1..=3).map(|n| format!("compose/node{n}.toml")));
    for f in files {
        let text = std::fs::read_to_string(from.join(&f)).with_context(|| f.clone())?;
        std::fs::write(to.join(&f), text.replace("10.53.0.", prefix))?;
    }
    #[cfg(unix)]
    {
        // The node (uid 10001) reads its config through the bind mount.
        use std::os::unix::fs::PermissionsExt;
        for d in [to.to_path_buf(), to.join("compose")] {
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755))?;
        }
        for n in 1..=3 {
            let p = to.join(format!("compose/node{n}.toml"));
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o644))?;
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_compose_bring_up_as_documented() {
    let Some(env) = DockerEnv::detect(TEST) else {
        return;
    };
    let which = std::process::Command::new("docker-compose")
        .arg("version")
        .output();
    if !which.is_ok_and(|o| o.status.success()) {
        if std::env::var(docker::REQUIRE_ENV).is_ok_and(|v| v == "1") {
            panic!(
                "{TEST}: {}=1 but docker-compose is not installed",
                docker::REQUIRE_ENV
            );
        }
        eprintln!("SKIP {TEST}: docker-compose is not installed");
        return;
    }
    let started = Instant::now();
    let suffix = docker::new_suffix();
    let image = TestImage::build(&env, &suffix).await.unwrap();
    // A /24 nobody uses right now: create and remove a network on it, then hand it to compose.
    let prefix = {
        let probe = TestNetwork::create(&format!("{suffix}-probe"))
            .await
            .unwrap();
        probe.prefix()
    };
    let project = Project {
        dir: tempfile::Builder::new()
            .prefix("conclave-compose-")
            .tempdir()
            .unwrap(),
        name: format!("{}{suffix}", docker::PREFIX),
        image: image.tag.clone(),
        suffix: suffix.clone(),
    };
    copy_rewritten(project.dir.path(), &prefix).unwrap();
    std::fs::create_dir_all(project.home()).unwrap();
    let ip = |n: u32| format!("{prefix}1{n}");
    let ctl = env.dist.join("conclavectl");

    let result = bring_up(&project, &ctl, &ip).await;
    if let Err(e) = result {
        let logs = output(
            {
                let mut c = project.compose();
                c.args(["logs", "--no-color", "--tail", "60"]);
                c
            },
            "docker-compose logs",
        )
        .await
        .unwrap_or_else(|e| format!("{e:#}"));
        panic!("{e:#}\ncompose logs:\n{logs}");
    }
    eprintln!(
        "{TEST}: documented bring-up and checks took {:.1?}",
        started.elapsed()
    );

    let down = output(
        {
            let mut c = project.compose();
            c.args(["down", "-v"]);
            c
        },
        "docker-compose down -v",
    )
    .await;
    down.unwrap();
    drop(project);
    drop(image);
    docker::assert_nothing_left(&suffix);
}

async fn bring_up(project: &Project, ctl: &Path, ip: &dyn Fn(u32) -> String) -> Result<()> {
    // 1. init on node 1, one-shot.
    let mut c = project.compose();
    c.args(["run", "-T", "--rm", "node1", "init", "--config", CONFIG]);
    let init = output(c, "docker-compose run --rm node1 init").await?;
    let field = |name: &str| {
        init.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_owned())
            .with_context(|| format!("init printed no {name:?}: {init}"))
    };
    let password = field("admin password: ")?;
    let fingerprint = field("root CA SHA-256 fingerprint: ")?;

    // 2. node 1 runs.
    let mut c = project.compose();
    c.args(["up", "-d", "node1"]);
    output(c, "docker-compose up -d node1").await?;

    // 3. The root over the plain port, its fingerprint compared; login; join tokens.
    let ctl_cmd = |args: &[&str]| {
        let mut c = tokio::process::Command::new(ctl);
        c.args(args)
            .current_dir(project.dir.path())
            .env("HOME", project.home())
            .env("CONCLAVE_CA_FILE", project.dir.path().join("root.pem"))
            .env("CONCLAVE_SERVER", format!("https://{}", ip(1)))
            .kill_on_drop(true);
        c
    };
    let plain = format!("http://{}", ip(1));
    let root = poll_until(
        "conclavectl ca root from node 1",
        Duration::from_secs(60),
        || async {
            output(
                ctl_cmd(&["--server", &plain, "ca", "root", "--out", "root.pem"]),
                "conclavectl ca root",
            )
            .await
            .map_err(|e| format!("{e:#}"))
        },
    )
    .await?;
    if !root.contains(&fingerprint) {
        bail!("the root fetched from node 1 ({root}) is not the one init printed ({fingerprint})");
    }
    let mut login = ctl_cmd(&["login", "--username", "admin"]);
    login
        .env("CONCLAVE_PASSWORD", &password)
        .env("CONCLAVE_NEW_PASSWORD", NEW_PASSWORD);
    output(login, "conclavectl login").await?;

    // 4. Join nodes 2 and 3 with a token each, one at a time.
    for n in [2u32, 3] {
        let out = output(
            ctl_cmd(&["node", "join-token", "--ttl", "1h"]),
            "conclavectl node join-token",
        )
        .await?;
        let token = out
            .lines()
            .next()
            .filter(|l| l.starts_with("conclave-join:"))
            .with_context(|| format!("no token in: {out}"))?
            .to_owned();
        let name = join_name(&project.suffix, n);
        let service = format!("node{n}");
        let seed = format!("{}:80", ip(1));
        let mut c = project.compose();
        c.env("CONCLAVE_JOIN_TOKEN", &token).args([
            "run", "-d", "--name", &name, &service, "join", "--config", CONFIG, "--seed", &seed,
        ]);
        output(c, &format!("docker-compose run -d {service} join")).await?;
        poll_until(
            &format!("{name} to log that it is a voter"),
            Duration::from_secs(120),
            || async {
                let logs = chaos_tests::docker::logs_of(&name);
                if logs.contains("joined: this node is a voter") {
                    Ok(())
                } else {
                    Err(format!("log tail: {}", logs.lines().last().unwrap_or("")))
                }
            },
        )
        .await?;
        docker::docker_async(&["stop", &name]).await?;
        docker::docker_async(&["rm", &name]).await?;
        let mut c = project.compose();
        c.args(["up", "-d", &service]);
        output(c, &format!("docker-compose up -d {service}")).await?;
    }

    // 5. Everything up.
    let mut c = project.compose();
    c.args(["up", "-d"]);
    output(c, "docker-compose up -d").await?;

    // Checks: status (exit 0 = healthy), three voters, DNS, health, HTTPS.
    let status = poll_until(
        "conclavectl status healthy",
        Duration::from_secs(120),
        || async {
            output(ctl_cmd(&["status"]), "conclavectl status")
                .await
                .map_err(|e| format!("{e:#}"))
        },
    )
    .await?;
    eprintln!("conclavectl status:\n{status}");
    let root = ops::TrustRoot::from_file(&project.dir.path().join("root.pem"))?;
    let https: Vec<String> = (1..=3).map(|n| format!("https://{}", ip(n))).collect();
    let client = ops::Client::new_trusting(https.clone(), Some(root.clone()))?;
    let mut admin = client.clone();
    admin.login("admin", NEW_PASSWORD).await?;
    let cluster = admin.cluster().await?;
    let voters: Vec<u64> = cluster
        .nodes
        .iter()
        .filter(|n| n.voter)
        .map(|n| n.id)
        .collect();
    if voters != [1, 2, 3] {
        bail!("voters {voters:?}, expected [1, 2, 3]: {cluster:?}");
    }
    let want: std::collections::BTreeSet<std::net::IpAddr> = (1..=3)
        .map(|n| {
            ip(n)
                .parse()
                .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into())
        })
        .collect();
    for n in 1..=3 {
        let server: std::net::SocketAddr = format!("{}:53", ip(n)).parse()?;
        poll_until(
            &format!("node{n}'s DNS to list all three"),
            Duration::from_secs(30),
            || async {
                let a = ops::dns_query::query(
                    server,
                    docker_workspace(),
                    ops::dns_query::DnsQuestion::A,
                    Duration::from_secs(2),
                )
                .await
                .map_err(|e| e.to_string())?;
                let got: std::collections::BTreeSet<_> = a.addresses().into_iter().collect();
                if got == want {
                    Ok(())
                } else {
                    Err(format!("{} {got:?}", a.rcode))
                }
            },
        )
        .await?;
        let addr: std::net::SocketAddr = format!("{}:443", ip(n)).parse()?;
        let cert =
            ops::verify_server_certificate(addr, &ip(n), &root, Duration::from_secs(5)).await?;
        eprintln!(
            "node{n}: HTTPS on 443 verified against the root ({} days left)",
            cert.days_left(unix_now())
        );
    }
    let mut ps = project.compose();
    ps.args(["ps", "-q"]);
    let ids = output(ps, "docker-compose ps -q").await?;
    for id in ids.lines().filter(|l| !l.trim().is_empty()) {
        docker::wait_health(id.trim(), "healthy", Duration::from_secs(90)).await?;
    }
    Ok(())
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn docker_workspace() -> &'static str {
    chaos_tests::docker::WORKSPACE
}
