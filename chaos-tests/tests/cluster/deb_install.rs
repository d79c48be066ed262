//! The `.deb` on a clean Debian machine (issue 12, acceptance items 1 and 3): the package from
//! `$CONCLAVE_DIST` installed with `dpkg -i` into a container booted from a debootstrap root
//! filesystem with systemd as PID 1, the node initialized the way the install guide says, the
//! unit started with `systemctl start`, and the node checked from the host as a client would:
//! DNS on port 53 answers the node's address for the workspace, HTTPS on 443 answers with a
//! certificate of the cluster root `conclave init` printed the fingerprint of. Inside, the
//! service runs as the user `conclave` with `CAP_NET_BIND_SERVICE` as its only capability:
//! that is "`conclave run` as the systemd unit runs it binds 53 and 443 without root".
//! `systemctl start` must return with `/readyz` already ready (Type=notify; systemd's own log
//! shows READY=1 from the node), and `systemctl stop` must end with STOPPING=1 received, the
//! node's shutdown run to its last log line and `Result=success`.
//!
//! No image can be pulled: `chaos-tests/debian/rootfs.sh` builds the root filesystem tarball
//! (cached under /var/tmp/conclave-debian), this test `docker import`s it under a unique tag.
//! Everything the test creates (image, network in 172.28.0.0/16, container) is removed by
//! [`Docker`]'s `Drop`, also when the test fails.
//!
//! If systemd does not boot in this Docker at all (see [`Mode`]), the test still installs,
//! initializes and removes the package in a container without systemd and prints precisely
//! what it could not exercise; `CHAOS_REQUIRE_SYSTEMD=1` makes that a failure instead (set by
//! `.ci/run`: systemd boots on the CI machine). `unit_privileges` checks the unit's user and
//! capabilities on the host, without Docker.
//!
//! Needs docker (a daemon that may create networks and grant CAP_SYS_ADMIN), the cached tarball and
//! `$CONCLAVE_DIST/conclave_<version>_amd64.deb` (`ops/dist/build.sh`). Without one of them it
//! prints why and passes, unless `CHAOS_REQUIRE_DOCKER` is set (`.ci/run` sets it): then it
//! fails. Linux only (it reads `/proc/<pid>/status` of the service).
//!
//! Must never touch a container, network or image it did not create (all names carry a random
//! suffix), nor send traffic anywhere but the network it created.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use chaos_tests::wait::{Waiting, poll_until};
use ops::dns_query::{self, DnsQuestion};

/// `CAP_NET_BIND_SERVICE` is capability 10: the only bit the unit may leave in any set.
const CAP_NET_BIND_SERVICE_MASK: &str = "0000000000000400";
/// The template's workspace, kept: the test changes only what is specific to this host.
const WORKSPACE: &str = "chat.corp.lan";
const ADMIN_PASSWORD: &str = "deb-install-pass-phrase-1";
/// systemd's boot in a container: a few seconds; generous for a loaded CI machine.
const BOOT_WAIT: Duration = Duration::from_secs(60);
/// One `docker exec`, `dpkg -i` or `systemctl start` (the unit's own start timeout is longer,
/// but a single new node is ready in well under this).
const STEP_WAIT: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deb_installs_and_the_unit_serves_dns_and_https_without_root() {
    let Some(inputs) = inputs() else {
        return;
    };
    let started = Instant::now();
    let docker = Docker::create(&inputs.rootfs)
        .await
        .unwrap_or_else(|e| panic!("setting up the container: {e:#}"));
    eprintln!(
        "deb_install: container {} at {} booted in {:.1?} ({})",
        docker.container,
        docker.ip,
        started.elapsed(),
        docker.mode.describe()
    );
    assert!(
        docker.mode.has_systemd() || std::env::var_os("CHAOS_REQUIRE_SYSTEMD").is_none(),
        "CHAOS_REQUIRE_SYSTEMD is set but systemd did not boot in this Docker (see above)"
    );
    if let Err(e) = scenario(&docker, &inputs.deb).await {
        let journal = docker
            .exec(&["journalctl", "-u", "conclave", "--no-pager", "-n", "60"])
            .await
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        panic!("{e:#}\n--- journalctl -u conclave (last 60 lines) ---\n{journal}");
    }
    eprintln!("deb_install: passed in {:.1?}", started.elapsed());
}

struct Inputs {
    rootfs: PathBuf,
    deb: PathBuf,
}

/// What the test needs from outside, or `None` (and why, printed) when something is missing
/// and `CHAOS_REQUIRE_DOCKER` is not set.
fn inputs() -> Option<Inputs> {
    let found = (|| -> std::result::Result<Inputs, String> {
        let docker_ok = std::process::Command::new("docker")
            .args(["version", "--format", "{{.Server.Version}}"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !docker_ok {
            return Err("docker is missing or its daemon does not answer".into());
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("debian/rootfs.sh");
        let out = std::process::Command::new(&script)
            .arg("--cached")
            .output()
            .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
        if !out.status.success() {
            return Err(format!(
                "no Debian root filesystem: {} (build it with {})",
                String::from_utf8_lossy(&out.stderr).trim(),
                script.display()
            ));
        }
        let rootfs = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        let dist = std::env::var_os("CONCLAVE_DIST")
            .ok_or("CONCLAVE_DIST is not set (ops/dist/build.sh --out DIR writes the .deb)")?;
        let deb =
            Path::new(&dist).join(format!("conclave_{}_amd64.deb", env!("CARGO_PKG_VERSION")));
        if !deb.is_file() {
            return Err(format!("{} is missing (ops/dist/build.sh)", deb.display()));
        }
        Ok(Inputs { rootfs, deb })
    })();
    match found {
        Ok(inputs) => Some(inputs),
        Err(why) => {
            chaos_tests::require::skip("deb_install", &["CHAOS_REQUIRE_DOCKER"], &why);
            None
        }
    }
}

/// The install, start, checks, stop and removal, in the order an operator does them.
async fn scenario(docker: &Docker, deb: &Path) -> Result<()> {
    let ip = docker.ip;

    // Install: dpkg -i, as the install guide says for an offline site.
    docker.copy_in(deb, "/tmp/conclave.deb").await?;
    docker.exec_ok(&["dpkg", "-i", "/tmp/conclave.deb"]).await?;

    // What the package put in place.
    let passwd = docker.exec_ok(&["getent", "passwd", "conclave"]).await?;
    let fields: Vec<&str> = passwd.trim().split(':').collect();
    anyhow::ensure!(
        fields.len() == 7 && fields[6].ends_with("nologin"),
        "the user conclave is a system user without a login shell: {passwd}"
    );
    let uid: u32 = fields[2].parse().context("uid of conclave")?;
    let gid: u32 = fields[3].parse().context("gid of conclave")?;
    anyhow::ensure!(
        uid != 0 && uid < 1000,
        "conclave is a system user (uid {uid})"
    );
    expect_stat(docker, "/var/lib/conclave", "700 conclave conclave").await?;
    expect_stat(docker, "/etc/conclave/conclave.toml", "640 root conclave").await?;
    for path in [
        "/usr/bin/conclave",
        "/usr/bin/conclavectl",
        "/usr/share/bash-completion/completions/conclave",
        "/usr/share/bash-completion/completions/conclavectl",
        "/usr/share/zsh/vendor-completions/_conclave",
        "/usr/share/fish/vendor_completions.d/conclave.fish",
    ] {
        docker
            .exec_ok(&["test", "-s", path])
            .await
            .with_context(|| format!("{path} installed"))?;
    }
    // cargo-deb may gzip man pages; either form is what `man` reads.
    for page in ["conclave", "conclavectl"] {
        let glob = format!("ls /usr/share/man/man1/{page}.1 /usr/share/man/man1/{page}.1.gz");
        let out = docker.exec(&["sh", "-c", &glob]).await?;
        anyhow::ensure!(
            !out.stdout.is_empty(),
            "man page {page}(1) installed under /usr/share/man/man1"
        );
    }
    // The unit file, wherever cargo-deb put it (/lib is /usr/lib on a merged-/usr system).
    let unit = docker
        .exec_ok(&[
            "sh",
            "-c",
            "cat /usr/lib/systemd/system/conclave.service || cat /lib/systemd/system/conclave.service",
        ])
        .await?;
    anyhow::ensure!(
        unit.contains("Type=notify") && unit.contains("User=conclave"),
        "the installed unit runs as conclave, Type=notify:\n{unit}"
    );
    if docker.mode.has_systemd() {
        // Not enabled, not started: a node must be initialized or joined first.
        let enabled = docker
            .exec_stdout(&["systemctl", "is-enabled", "conclave"])
            .await?;
        anyhow::ensure!(
            enabled.trim() == "disabled",
            "unit not enabled by dpkg -i: {enabled}"
        );
        let active = docker
            .exec_stdout(&["systemctl", "is-active", "conclave"])
            .await?;
        anyhow::ensure!(
            active.trim() == "inactive",
            "unit not started by dpkg -i: {active}"
        );
    }
    let version = docker.exec_ok(&["conclave", "--version"]).await?;
    anyhow::ensure!(
        version.contains(env!("CARGO_PKG_VERSION")),
        "conclave --version names this version: {version}"
    );

    // Configure from the template the package installed: this host's address everywhere, the
    // standard ports (HTTPS 443, DNS 53, plain HTTP 80), the site's subnet for the CA.
    let net = docker.subnet_prefix();
    let edit = format!(
        "s/10\\.0\\.0\\.1:/{ip}:/; \
         s#10\\.0\\.0\\.0/24#{net}.0/24#"
    );
    docker
        .exec_ok(&["sed", "-i", &edit, "/etc/conclave/conclave.toml"])
        .await?;
    let config = docker
        .exec_ok(&["cat", "/etc/conclave/conclave.toml"])
        .await?;
    for want in [
        format!("api_addr = \"{ip}:80\""),
        format!("cluster_addr = \"{ip}:9080\""),
        format!("https_addr = \"{ip}:443\""),
        format!("addr = \"{ip}:53\""),
        format!("workspace = \"{WORKSPACE}\""),
    ] {
        anyhow::ensure!(config.contains(&want), "config has {want}:\n{config}");
    }
    anyhow::ensure!(
        !config.contains("10.0.0."),
        "no template address left:\n{config}"
    );
    expect_stat(docker, "/etc/conclave/conclave.toml", "640 root conclave").await?;
    let as_conclave = ["runuser", "-u", "conclave", "--"];
    let validate = [
        &as_conclave[..],
        &[
            "conclave",
            "run",
            "--config",
            "/etc/conclave/conclave.toml",
            "--validate",
        ],
    ]
    .concat();
    docker.exec_ok(&validate).await?;

    // Initialize as the service's user, so every file it writes is the service's
    // (operations.md: `sudo -u conclave conclave init ...`; runuser is the same switch without
    // sudo, which a minimal Debian does not have).
    let init = [
        &as_conclave[..],
        &[
            "conclave",
            "init",
            "--config",
            "/etc/conclave/conclave.toml",
            "--admin-password",
            ADMIN_PASSWORD,
        ],
    ]
    .concat();
    let init_out = docker.exec_ok(&init).await?;
    let fingerprint = init_out
        .lines()
        .find_map(|l| l.strip_prefix("root CA SHA-256 fingerprint: "))
        .map(|f| f.trim().to_owned())
        .with_context(|| format!("conclave init prints the root fingerprint:\n{init_out}"))?;
    expect_stat(
        docker,
        "/etc/conclave/conclave.kek",
        "600 conclave conclave",
    )
    .await?;

    if !docker.mode.has_systemd() {
        remove(docker).await?;
        eprintln!(
            "deb_install: NOT EXERCISED: systemd did not boot in this Docker (see above), so \
             `systemctl start` under Type=notify, the unit's sandbox, and DNS/HTTPS/capabilities \
             of the service as the unit runs it were not checked here. The install, the files, \
             the user, the permissions, the config, `conclave init` as the user conclave and \
             `dpkg -r` were. unit_privileges checks the unit's user and capabilities on the host."
        );
        return Ok(());
    }

    // Start. Type=notify: `systemctl start` returns only once the node sent READY=1, which it
    // sends when /readyz turns ready, so the very first /readyz after it must say ready. No
    // polling here on purpose: a wait would hide a unit that reports ready too early.
    // systemd logs the notifications it receives at debug level only: raised, so the journal
    // shows READY=1 and later STOPPING=1 arriving from the node itself.
    docker
        .exec_ok(&["systemd-analyze", "log-level", "debug"])
        .await?;
    let t = Instant::now();
    docker.exec_ok(&["systemctl", "start", "conclave"]).await?;
    let start_took = t.elapsed();
    let start_returned = Instant::now();
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()?;
    let readyz = http.get(format!("http://{ip}:80/readyz")).send().await?;
    let ready_status = readyz.status();
    let ready_body = readyz.text().await.unwrap_or_default();
    anyhow::ensure!(
        ready_status == 200,
        "/readyz right after `systemctl start` returned (after {start_took:.1?}): \
         {ready_status} {ready_body}"
    );
    eprintln!("deb_install: systemctl start returned after {start_took:.1?}; /readyz 200");
    let active = docker
        .exec_stdout(&["systemctl", "is-active", "conclave"])
        .await?;
    anyhow::ensure!(active.trim() == "active", "systemctl is-active: {active}");
    let journal = docker
        .exec_ok(&["journalctl", "-u", "conclave", "--no-pager", "-o", "cat"])
        .await?;
    anyhow::ensure!(
        journal
            .lines()
            .any(|l| l.contains("Got notification message") && l.contains("READY=1")),
        "systemd received READY=1 from the node:\n{journal}"
    );

    // The service as the unit runs it: user conclave, one capability, no new privileges.
    let pid = docker
        .exec_ok(&["systemctl", "show", "-p", "MainPID", "--value", "conclave"])
        .await?
        .trim()
        .to_owned();
    anyhow::ensure!(
        pid != "0" && !pid.is_empty(),
        "the unit has a main pid: {pid:?}"
    );
    let status = docker
        .exec_ok(&["cat", &format!("/proc/{pid}/status")])
        .await?;
    let field = |name: &str| -> Result<String> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .with_context(|| format!("{name} in /proc/{pid}/status"))
    };
    anyhow::ensure!(
        field("Name")? == "conclave",
        "the main process is conclave:\n{status}"
    );
    anyhow::ensure!(
        field("Uid")? == format!("{uid} {uid} {uid} {uid}"),
        "runs as conclave (uid {uid}), real, effective, saved and fs: {}",
        field("Uid")?
    );
    anyhow::ensure!(
        field("Gid")? == format!("{gid} {gid} {gid} {gid}"),
        "runs with group conclave (gid {gid}): {}",
        field("Gid")?
    );
    for set in ["CapEff", "CapPrm", "CapBnd", "CapAmb"] {
        anyhow::ensure!(
            field(set)? == CAP_NET_BIND_SERVICE_MASK,
            "{set} is CAP_NET_BIND_SERVICE only ({CAP_NET_BIND_SERVICE_MASK}): {}",
            field(set)?
        );
    }
    anyhow::ensure!(field("NoNewPrivs")? == "1", "NoNewPrivileges=yes applied");
    // ProtectSystem=strict really applied: systemd silently skips mount namespaces where it
    // lacks CAP_SYS_ADMIN (a plain container), so read the service's own mount table: `/`
    // read-only, the data directory (ReadWritePaths=) the one writable path. (Its mountinfo is
    // readable by root without entering the namespace, which would need CAP_SYS_PTRACE.)
    let mounts = docker
        .exec_ok(&["cat", &format!("/proc/{pid}/mountinfo")])
        .await?;
    let options_of = |mount_point: &str| -> Option<String> {
        // Fields: id parent major:minor root mount-point options ...; the last entry for a
        // mount point is the one on top (hence from the end).
        mounts
            .lines()
            .rev()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.get(4) == Some(&mount_point)).then(|| f.get(5).map(|o| o.to_string()))
            })
            .next()
            .flatten()
    };
    let root_opts = options_of("/").unwrap_or_default();
    let data_opts = options_of("/var/lib/conclave").unwrap_or_default();
    anyhow::ensure!(
        root_opts.split(',').any(|o| o == "ro") && data_opts.split(',').any(|o| o == "rw"),
        "the service sees / read-only ({root_opts:?}) and /var/lib/conclave writable \
         ({data_opts:?}): ProtectSystem=strict and ReadWritePaths= applied:\n{mounts}"
    );

    // From the host, as a client on the site's LAN: DNS on 53 names the node. Polled: the DNS
    // server answers SERVFAIL until its first health view (refreshed every second,
    // docs/health.md), which may land just after READY=1; how long that took is printed.
    let dns_server = SocketAddr::new(IpAddr::V4(ip), 53);
    let answer = poll_until(
        &format!("{dns_server} to answer {WORKSPACE} with {ip}"),
        Duration::from_secs(10),
        || async {
            match dns_query::query(
                dns_server,
                WORKSPACE,
                DnsQuestion::A,
                Duration::from_secs(2),
            )
            .await
            {
                Ok(a) if a.addresses() == vec![IpAddr::V4(ip)] && a.authoritative => Ok(a),
                Ok(a) => Err(format!("{a:?}")),
                Err(e) => Err(e.to_string()),
            }
        },
    )
    .await?;
    eprintln!(
        "deb_install: DNS answered {WORKSPACE} -> {ip} {:.1?} after systemctl start returned",
        start_returned.elapsed()
    );
    // ... the plain port serves the root whose fingerprint init printed (the trust page's
    // download; checked against the out-of-band fingerprint, as devices are told to) ...
    let root_pem = http
        .get(format!("http://{ip}:80/ca.pem"))
        .send()
        .await?
        .error_for_status()?
        .bytes()
        .await?;
    let served_fp = ops::root_fingerprint(&root_pem).context("ca.pem holds a certificate")?;
    anyhow::ensure!(
        served_fp == fingerprint,
        "the served root {served_fp} is the one init printed ({fingerprint})"
    );
    // ... and HTTPS on 443, by the workspace name resolved through that DNS answer, trusting
    // only that root.
    let root = ops::TrustRoot::from_pem(&root_pem)?;
    let https = reqwest::Client::builder()
        .use_preconfigured_tls(root.client_config())
        .resolve(WORKSPACE, SocketAddr::new(answer.addresses()[0], 443))
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()?;
    let healthz = https
        .get(format!("https://{WORKSPACE}/healthz"))
        .send()
        .await?;
    anyhow::ensure!(
        healthz.status() == 200,
        "https://{WORKSPACE}/healthz: {}",
        healthz.status()
    );
    let healthz_ip = https
        .get(format!("https://{ip}:443/healthz"))
        .send()
        .await?;
    anyhow::ensure!(
        healthz_ip.status() == 200,
        "https://{ip}/healthz: {}",
        healthz_ip.status()
    );

    // Stop: SIGTERM; the node says STOPPING=1, drains, runs its whole shutdown and exits by
    // itself well inside TimeoutStopSec (no SIGKILL).
    let t = Instant::now();
    docker.exec_ok(&["systemctl", "stop", "conclave"]).await?;
    let stop_took = t.elapsed();
    let shown = docker
        .exec_ok(&[
            "systemctl",
            "show",
            "conclave",
            "-p",
            "ActiveState,Result,StatusText",
        ])
        .await?;
    let journal = docker
        .exec_ok(&["journalctl", "-u", "conclave", "--no-pager", "-o", "cat"])
        .await?;
    eprintln!("deb_install: systemctl stop returned after {stop_took:.1?}:\n{shown}");
    for want in ["ActiveState=inactive", "Result=success"] {
        anyhow::ensure!(
            shown.lines().any(|l| l.trim() == want),
            "after systemctl stop ({stop_took:.1?}): {want}:\n{shown}"
        );
    }
    anyhow::ensure!(
        journal
            .lines()
            .any(|l| l.contains("Got notification message") && l.contains("STOPPING=1")),
        "systemd received STOPPING=1 from the node:\n{journal}"
    );
    anyhow::ensure!(
        journal.contains("shutdown requested") && journal.contains("node stopped"),
        "the node ran its shutdown to the end (its own last log line), not killed mid-way"
    );
    for bad in ["SIGKILL", "timed out", "Failed with result"] {
        anyhow::ensure!(!journal.contains(bad), "no {bad:?} in the unit's journal");
    }

    remove(docker).await
}

/// `dpkg -r` (not purge): binaries and unit go, the data, the KEK and the user stay.
async fn remove(docker: &Docker) -> Result<()> {
    docker.exec_ok(&["dpkg", "-r", "conclave"]).await?;
    for gone in [
        "/usr/bin/conclave",
        "/usr/bin/conclavectl",
        "/usr/lib/systemd/system/conclave.service",
        "/lib/systemd/system/conclave.service",
    ] {
        let out = docker.exec(&["test", "-e", gone]).await?;
        anyhow::ensure!(!out.status.success(), "{gone} removed by dpkg -r");
    }
    expect_stat(docker, "/var/lib/conclave", "700 conclave conclave").await?;
    let data = docker.exec_ok(&["ls", "-A", "/var/lib/conclave"]).await?;
    anyhow::ensure!(
        data.contains("log") && data.contains("tls"),
        "data kept by dpkg -r: {data}"
    );
    expect_stat(
        docker,
        "/etc/conclave/conclave.kek",
        "600 conclave conclave",
    )
    .await?;
    docker.exec_ok(&["getent", "passwd", "conclave"]).await?;
    Ok(())
}

/// `stat -c '%a %U %G' path` is `want`.
async fn expect_stat(docker: &Docker, path: &str, want: &str) -> Result<()> {
    let got = docker.exec_ok(&["stat", "-c", "%a %U %G", path]).await?;
    anyhow::ensure!(
        got.trim() == want,
        "{path}: mode owner group {:?}, want {want:?}",
        got.trim()
    );
    Ok(())
}

/// How the systemd container was started: the first of [`Mode::ALL`] that boots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// The smallest set that boots systemd and lets it sandbox the unit on the CI machine (see
    /// [`Mode::run_args`]).
    Minimal,
    /// The same with the host's cgroup tree writable: what systemd needs on a pure cgroup v2
    /// host (untested here: the CI machine is cgroup v1).
    CgroupRw,
    /// `--privileged`. On the CI machine this does not even start ("unable to apply caps": the
    /// Docker daemon itself runs without some capabilities), one more reason for the minimal
    /// set; kept for hosts where the two above do not boot.
    Privileged,
    /// No systemd at all (`sleep` as PID 1): the last resort when none of the above boots. The
    /// package is still installed, initialized and removed; what needs systemd is reported as
    /// not exercised (and is a failure with `CHAOS_REQUIRE_SYSTEMD` set).
    NoSystemd,
}

impl Mode {
    const ALL: [Mode; 4] = [
        Mode::Minimal,
        Mode::CgroupRw,
        Mode::Privileged,
        Mode::NoSystemd,
    ];

    fn has_systemd(self) -> bool {
        self != Mode::NoSystemd
    }

    /// `docker run` flags for systemd as PID 1. Measured on the CI machine (Docker engine
    /// 20.10, cgroup v1 "hybrid" host with the cgroupfs driver, systemd 252 in the container):
    /// - `--tmpfs /run --tmpfs /run/lock`: systemd refuses to boot without a writable /run it
    ///   can mount over, and would otherwise leave state in the image's layer.
    /// - `-v /sys/fs/cgroup:/sys/fs/cgroup:ro`: systemd needs the cgroup hierarchies (its own
    ///   `name=systemd` one writable: the bind is recursive and `ro` only applies to the
    ///   top-level tmpfs, so the hierarchies below stay writable) to create a cgroup per unit.
    /// - `--cap-add SYS_ADMIN`: without it systemd boots and runs the unit, but cannot create
    ///   mount namespaces and SILENTLY skips ProtectSystem=, ProtectHome=, PrivateTmp=,
    ///   ReadWritePaths= (only ProtectHostname= is logged as ignored): the service could then
    ///   write /etc. With it (Docker then also allows mount(2) in its seccomp profile) the
    ///   sandbox is applied, and the test checks that it is.
    ///
    /// Not needed: `--privileged`, `--cgroupns` (the default "host" on a cgroup v1 host), a
    /// `container=docker` variable (systemd detects Docker by itself).
    fn run_args(self) -> &'static [&'static str] {
        match self {
            Mode::Minimal => &[
                "--cap-add",
                "SYS_ADMIN",
                "--tmpfs",
                "/run",
                "--tmpfs",
                "/run/lock",
                "-v",
                "/sys/fs/cgroup:/sys/fs/cgroup:ro",
            ],
            Mode::CgroupRw => &[
                "--cap-add",
                "SYS_ADMIN",
                "--cgroupns",
                "host",
                "--tmpfs",
                "/run",
                "--tmpfs",
                "/run/lock",
                "-v",
                "/sys/fs/cgroup:/sys/fs/cgroup:rw",
            ],
            Mode::NoSystemd => &[],
            Mode::Privileged => &[
                "--privileged",
                "--cgroupns",
                "host",
                "--tmpfs",
                "/run",
                "--tmpfs",
                "/run/lock",
                "-v",
                "/sys/fs/cgroup:/sys/fs/cgroup:rw",
            ],
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Mode::Minimal => "systemd as PID 1 with CAP_SYS_ADMIN, tmpfs /run, host cgroups",
            Mode::CgroupRw => {
                "systemd as PID 1 with CAP_SYS_ADMIN and the host cgroup tree writable \
                 (the minimal set did not boot)"
            }
            Mode::Privileged => {
                "systemd as PID 1 in a --privileged container (the smaller sets did not boot)"
            }
            Mode::NoSystemd => "NO systemd: sleep as PID 1 (systemd did not boot in any mode)",
        }
    }
}

/// The image, network and container of one test run; `Drop` removes all three (container
/// first: a network with a container attached cannot be removed).
struct Docker {
    image: String,
    network: Option<String>,
    container: String,
    /// The container's address on `network`.
    ip: Ipv4Addr,
    mode: Mode,
}

impl Docker {
    /// Imports the root filesystem, creates a network in 172.28.0.0/16 (a random free /24)
    /// and boots systemd in a container on it, waiting until systemd reports the system up.
    async fn create(rootfs: &Path) -> Result<Docker> {
        let suffix = format!("{:012x}", random_u64() & 0xffff_ffff_ffff);
        let mut docker = Docker {
            image: format!("conclave-test-debian:{suffix}"),
            network: None,
            container: format!("conclave-test-deb-{suffix}"),
            ip: Ipv4Addr::UNSPECIFIED,
            mode: Mode::Minimal,
        };
        let rootfs = rootfs
            .to_str()
            .context("root filesystem path is not UTF-8")?;
        run("docker", &["import", rootfs, &docker.image]).await?;
        let (network, ip) = create_network(&format!("conclave-test-deb-{suffix}")).await?;
        docker.network = Some(network);
        docker.ip = ip;
        let mut failures = Vec::new();
        for mode in Mode::ALL {
            docker.mode = mode;
            match docker.boot().await {
                Ok(()) => return Ok(docker),
                Err(e) => {
                    eprintln!("deb_install: systemd did not boot with {mode:?}: {e:#}");
                    failures.push(format!("{mode:?}: {e:#}"));
                    // The name and address are reused by the next attempt.
                    let _ = run("docker", &["rm", "-f", &docker.container]).await;
                }
            }
        }
        bail!("systemd did not boot in any mode:\n{}", failures.join("\n"))
    }

    /// `docker run` with systemd as PID 1, then wait for `systemctl is-system-running`.
    async fn boot(&self) -> Result<()> {
        let ip = self.ip.to_string();
        let network = self.network.as_deref().context("network created")?;
        let mut args = vec![
            "run",
            "-d",
            "--name",
            &self.container,
            "--hostname",
            "conclave-deb",
            "--network",
            network,
            "--ip",
            &ip,
        ];
        args.extend_from_slice(self.mode.run_args());
        if self.mode.has_systemd() {
            args.extend_from_slice(&[&self.image, "/sbin/init"]);
        } else {
            args.extend_from_slice(&[&self.image, "sleep", "infinity"]);
        }
        run("docker", &args).await?;
        if !self.mode.has_systemd() {
            return Ok(());
        }
        let state = poll_until(
            "systemd in the container to finish booting",
            BOOT_WAIT,
            || async {
                let running = run(
                    "docker",
                    &["inspect", "-f", "{{.State.Running}}", &self.container],
                )
                .await
                .map_err(|e| Waiting::Abort(format!("{e:#}")))?;
                if running.trim() != "true" {
                    let logs = run("docker", &["logs", "--tail", "20", &self.container])
                        .await
                        .unwrap_or_default();
                    return Err(Waiting::Abort(format!("the container exited: {logs}")));
                }
                // Exit status is non-zero for anything but "running"; the word is what counts.
                let out = self
                    .exec(&["systemctl", "is-system-running"])
                    .await
                    .map_err(|e| Waiting::Abort(format!("{e:#}")))?;
                let state = String::from_utf8_lossy(&out.stdout).trim().to_owned();
                match state.as_str() {
                    "running" | "degraded" => Ok(state),
                    _ => Err(Waiting::NotYet(format!("is-system-running: {state}"))),
                }
            },
        )
        .await?;
        if state == "degraded" {
            // Not the package's doing (it is not installed yet): say which, and go on.
            let failed = self
                .exec_stdout(&["systemctl", "--failed", "--no-legend"])
                .await?;
            eprintln!("deb_install: systemd booted degraded; failed units: {failed}");
        }
        Ok(())
    }

    /// The first three octets of the network, e.g. "172.28.41".
    fn subnet_prefix(&self) -> String {
        let [a, b, c, _] = self.ip.octets();
        format!("{a}.{b}.{c}")
    }

    /// `docker exec <container> cmd...`, whatever its exit status.
    async fn exec(&self, cmd: &[&str]) -> Result<Output> {
        let mut args = vec!["exec", self.container.as_str()];
        args.extend_from_slice(cmd);
        let fut = tokio::process::Command::new("docker").args(&args).output();
        tokio::time::timeout(STEP_WAIT, fut)
            .await
            .with_context(|| format!("docker exec {cmd:?} still running after {STEP_WAIT:?}"))?
            .with_context(|| format!("docker exec {cmd:?}"))
    }

    /// Stdout of `cmd`, whatever its exit status (`systemctl is-*` answer with both).
    async fn exec_stdout(&self, cmd: &[&str]) -> Result<String> {
        Ok(String::from_utf8_lossy(&self.exec(cmd).await?.stdout).into_owned())
    }

    /// Stdout of `cmd`, which must succeed.
    async fn exec_ok(&self, cmd: &[&str]) -> Result<String> {
        let out = self.exec(cmd).await?;
        if !out.status.success() {
            bail!(
                "in the container, {cmd:?} failed ({}):\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    async fn copy_in(&self, from: &Path, to: &str) -> Result<()> {
        let from = from.to_str().context("path is not UTF-8")?;
        run("docker", &["cp", from, &format!("{}:{to}", self.container)]).await?;
        Ok(())
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        // Synchronous on purpose: Drop cannot await, and the runtime may be shutting down.
        let quiet = |args: &[&str]| {
            let _ = std::process::Command::new("docker")
                .args(args)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        };
        quiet(&["rm", "-f", "-v", &self.container]);
        if let Some(network) = &self.network {
            quiet(&["network", "rm", network]);
        }
        quiet(&["rmi", "-f", &self.image]);
    }
}

/// A user-defined bridge network on a random free /24 of 172.28.0.0/16 (this part's range;
/// other tests use 172.27 and 172.29), and the address the container gets on it.
async fn create_network(name: &str) -> Result<(String, Ipv4Addr)> {
    let mut last = String::new();
    for _ in 0..20 {
        let third = (random_u64() % 254 + 1) as u8;
        let subnet = format!("172.28.{third}.0/24");
        let gateway = format!("172.28.{third}.1");
        let out = tokio::process::Command::new("docker")
            .args([
                "network",
                "create",
                "--subnet",
                &subnet,
                "--gateway",
                &gateway,
                name,
            ])
            .output()
            .await
            .context("docker network create")?;
        if out.status.success() {
            return Ok((name.to_owned(), Ipv4Addr::new(172, 28, third, 10)));
        }
        last = String::from_utf8_lossy(&out.stderr).into_owned();
        // Another run (or another test) holds that /24: pick another one.
        if !last.contains("overlap") {
            break;
        }
    }
    bail!("docker network create {name}: {last}")
}

/// `program args`, which must succeed; its stdout.
async fn run(program: &str, args: &[&str]) -> Result<String> {
    let out = tokio::time::timeout(
        STEP_WAIT,
        tokio::process::Command::new(program).args(args).output(),
    )
    .await
    .with_context(|| format!("{program} {args:?} still running after {STEP_WAIT:?}"))?
    .with_context(|| format!("{program} {args:?}"))?;
    if !out.status.success() {
        bail!(
            "{program} {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Randomness for names and subnets without a dependency: std's per-process random hash keys.
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.finish()
}
