//! `conclave run` with exactly the systemd unit's privileges, on the host, without Docker
//! (issue 12, acceptance item 3; `deb_install` checks the same under the real unit in a
//! container). The node runs under `setpriv` the way `ops/dist/systemd/conclave.service` runs
//! it: an unprivileged uid and gid and no supplementary groups (User=, Group=),
//! `CAP_NET_BIND_SERVICE` as the only capability in every set (AmbientCapabilities=,
//! CapabilityBoundingSet=), no new privileges (NoNewPrivileges=), and it binds DNS on 53,
//! HTTPS on 443 and plain HTTP on 80 in a network namespace the test creates (linked to the
//! host by a veth pair on 172.28.255.0/30). The test then resolves the workspace through that
//! DNS and fetches /healthz over HTTPS trusting only the cluster root, and reads the process's
//! /proc status. A control run without the capability must be refused the port: otherwise the
//! namespace lets anyone bind low ports and the check above would prove nothing.
//!
//! Needs root (network namespace, setpriv); without it the test prints why and passes, unless
//! `CHAOS_REQUIRE_DOCKER` is set (`.ci/run` sets it for the packaging tests), when it fails.
//! Linux only. Must never leave the namespace, the process or the temp dir behind ([`Netns`],
//! [`Node`] and `TempDir` clean up in `Drop`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use chaos_tests::wait::{Waiting, poll_until};
use ops::dns_query::{self, DnsQuestion};

/// Not a user of this machine: nothing else runs as it, and it owns nothing but the test's dir.
const UID: u32 = 64_123;
const WORKSPACE: &str = "chat.corp.lan";
/// The host end and the namespace end of the veth pair. 172.28.255.0/24 is never picked by
/// `deb_install` (it picks 172.28.1-254.0/24), so the two tests may run at once.
const HOST_IP: Ipv4Addr = Ipv4Addr::new(172, 28, 255, 1);
const NODE_IP: Ipv4Addr = Ipv4Addr::new(172, 28, 255, 2);
const READY_WAIT: Duration = Duration::from_secs(60);
/// `CAP_NET_BIND_SERVICE` is capability 10.
const CAP_NET_BIND_SERVICE_MASK: &str = "0000000000000400";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conclave_run_with_the_units_user_and_capability_binds_53_and_443_without_root() {
    let Some(bin) = prerequisites() else {
        return;
    };
    let netns = Netns::create().unwrap_or_else(|e| panic!("network namespace: {e:#}"));
    let dir = tempfile::Builder::new()
        .prefix("conclave-unit-privileges")
        .tempdir()
        .unwrap();
    // The unprivileged user must reach the config and its own directories, and nothing else.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = dir.path().join("data");
    let etc = dir.path().join("etc");
    for d in [&data, &etc] {
        std::fs::create_dir(d).unwrap();
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::chown(d, Some(UID), Some(UID)).unwrap();
    }
    let config = etc.join("conclave.toml");
    std::fs::write(&config, node_config(&data, &etc)).unwrap();
    std::os::unix::fs::chown(&config, Some(UID), Some(UID)).unwrap();

    // init with the same privileges (it binds nothing; it writes the KEK and the certificate
    // as the service's user, as the install guide has the operator do).
    let init = netns
        .command(&bin, true)
        .args(["init", "--config"])
        .arg(&config)
        .args(["--admin-password", "unit-privileges-pass-phrase-1"])
        .output()
        .unwrap();
    let init_out = String::from_utf8_lossy(&init.stdout);
    assert!(
        init.status.success(),
        "conclave init as uid {UID}: {}\n{init_out}{}",
        init.status,
        String::from_utf8_lossy(&init.stderr)
    );
    let fingerprint = init_out
        .lines()
        .find_map(|l| l.strip_prefix("root CA SHA-256 fingerprint: "))
        .expect("init prints the root fingerprint")
        .trim()
        .to_owned();

    // Control: the same user without the capability may not bind port 80 in this namespace.
    let denied = netns
        .command(&bin, false)
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let denied_err = String::from_utf8_lossy(&denied.stderr);
    assert!(
        !denied.status.success() && denied_err.contains("Permission denied"),
        "without CAP_NET_BIND_SERVICE the node is refused its ports: {} {denied_err}",
        denied.status
    );

    let log = dir.path().join("run.log");
    let node = Node::spawn(&netns, &bin, &config, &log).unwrap();
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    let readyz = format!("http://{NODE_IP}:80/readyz");
    poll_until(
        "the node's /readyz on port 80 to say ready",
        READY_WAIT,
        || async {
            let exited = node.child.lock().unwrap().try_wait().unwrap();
            if let Some(status) = exited {
                return Err(Waiting::Abort(format!(
                    "conclave run exited ({status}): {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )));
            }
            match http.get(&readyz).send().await {
                Ok(r) if r.status() == 200 => Ok(()),
                Ok(r) => Err(Waiting::NotYet(format!("{}", r.status()))),
                Err(e) => Err(Waiting::NotYet(e.to_string())),
            }
        },
    )
    .await
    .unwrap_or_else(|e| {
        panic!(
            "{e:#}\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        )
    });

    // The process: uid and gid of the unit's user, no groups, one capability, no new privileges.
    let status = std::fs::read_to_string(format!("/proc/{}/status", node.pid)).unwrap();
    let field = |name: &str| -> String {
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_else(|| panic!("{name} in /proc/{}/status", node.pid))
    };
    assert_eq!(field("Uid"), format!("{UID} {UID} {UID} {UID}"), "uid");
    assert_eq!(field("Gid"), format!("{UID} {UID} {UID} {UID}"), "gid");
    assert_eq!(field("Groups"), "", "no supplementary groups");
    for set in ["CapEff", "CapPrm", "CapBnd", "CapAmb"] {
        assert_eq!(
            field(set),
            CAP_NET_BIND_SERVICE_MASK,
            "{set}: CAP_NET_BIND_SERVICE only"
        );
    }
    assert_eq!(field("NoNewPrivs"), "1", "no new privileges");

    // DNS on 53 answers the node's address for the workspace (polled: SERVFAIL until the
    // node's first health view, up to about a second after /readyz turns ready) ...
    let dns = SocketAddr::new(IpAddr::V4(NODE_IP), 53);
    let answer = poll_until(
        &format!("{dns} to answer {WORKSPACE} with {NODE_IP}"),
        Duration::from_secs(10),
        || async {
            match dns_query::query(dns, WORKSPACE, DnsQuestion::A, Duration::from_secs(2)).await {
                Ok(a) if a.addresses() == vec![IpAddr::V4(NODE_IP)] => Ok(a),
                Ok(a) => Err(format!("{a:?}")),
                Err(e) => Err(e.to_string()),
            }
        },
    )
    .await
    .unwrap();
    // ... and HTTPS on 443 answers by that name with a certificate of the root init printed.
    let root_pem = std::fs::read(data.join("tls/ca.pem")).unwrap();
    assert_eq!(
        ops::root_fingerprint(&root_pem).as_deref(),
        Some(fingerprint.as_str())
    );
    let root = ops::TrustRoot::from_pem(&root_pem).unwrap();
    let https = reqwest::Client::builder()
        .use_preconfigured_tls(root.client_config())
        .resolve(WORKSPACE, SocketAddr::new(answer.addresses()[0], 443))
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let healthz = https
        .get(format!("https://{WORKSPACE}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(healthz.status(), 200, "https://{WORKSPACE}/healthz");
}

/// The server binary, or `None` (why printed) when the test cannot run here.
fn prerequisites() -> Option<PathBuf> {
    let found = (|| -> std::result::Result<PathBuf, String> {
        let whoami = Command::new("id")
            .arg("-u")
            .output()
            .map_err(|e| e.to_string())?;
        if String::from_utf8_lossy(&whoami.stdout).trim() != "0" {
            return Err("needs root (ip netns, setpriv to another uid)".into());
        }
        for tool in ["ip", "setpriv"] {
            let ok = Command::new(tool)
                .arg("-V")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok();
            if !ok {
                return Err(format!("{tool} is missing (iproute2, util-linux)"));
            }
        }
        chaos_tests::node::conclave_bin().map_err(|e| format!("{e:#}"))
    })();
    match found {
        Ok(bin) => Some(bin),
        Err(why) => {
            chaos_tests::require::skip("unit_privileges", &["CHAOS_REQUIRE_DOCKER"], &why);
            None
        }
    }
}

/// The production template's settings (TLS on), on the namespace's address, standard ports.
fn node_config(data: &Path, etc: &Path) -> String {
    format!(
        "node_id = 1\n\
         data_dir = \"{data}\"\n\
         workspace = \"{WORKSPACE}\"\n\
         api_addr = \"{NODE_IP}:80\"\n\
         cluster_addr = \"{NODE_IP}:9080\"\n\
         \n\
         [ca]\n\
         kek_file = \"{kek}\"\n\
         permitted_ip_ranges = [\"172.28.255.0/30\"]\n\
         \n\
         [tls]\n\
         https_addr = \"{NODE_IP}:443\"\n\
         \n\
         [dns]\n\
         addr = \"{NODE_IP}:53\"\n",
        data = data.display(),
        kek = etc.join("conclave.kek").display(),
    )
}

/// A network namespace with a veth pair to the host; `Drop` deletes the namespace (which
/// deletes the pair with it).
struct Netns {
    name: String,
}

impl Netns {
    fn create() -> Result<Netns> {
        let suffix = std::process::id();
        let netns = Netns {
            name: format!("conclave-test-unit-{suffix}"),
        };
        // Interface names are at most 15 bytes.
        let host_if = format!("ctu{suffix}h");
        let ns_if = format!("ctu{suffix}n");
        let host_cidr = format!("{HOST_IP}/30");
        let node_cidr = format!("{NODE_IP}/30");
        ip(&["netns", "add", &netns.name])?;
        let n = netns.name.as_str();
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if, "netns", n,
        ])?;
        ip(&["addr", "add", &host_cidr, "dev", &host_if])?;
        ip(&["link", "set", &host_if, "up"])?;
        ip(&["-n", n, "addr", "add", &node_cidr, "dev", &ns_if])?;
        ip(&["-n", n, "link", "set", &ns_if, "up"])?;
        ip(&["-n", n, "link", "set", "lo", "up"])?;
        // The control run relies on the namespace's own default: ports below 1024 are
        // privileged. A fresh namespace starts at 1024 whatever the host has set.
        let start = Command::new("ip")
            .args([
                "netns",
                "exec",
                n,
                "cat",
                "/proc/sys/net/ipv4/ip_unprivileged_port_start",
            ])
            .output()?;
        let start = String::from_utf8_lossy(&start.stdout).trim().to_owned();
        if start.parse::<u32>().map_or(true, |p| p <= 53) {
            bail!("ip_unprivileged_port_start in the namespace is {start:?}, want above 53");
        }
        Ok(netns)
    }

    /// `conclave` in the namespace as the unit runs it: `User=`/`Group=` (no supplementary
    /// groups), `NoNewPrivileges=yes`, and with `cap` `AmbientCapabilities=` and
    /// `CapabilityBoundingSet=` CAP_NET_BIND_SERVICE, else no capability at all.
    fn command(&self, bin: &Path, cap: bool) -> Command {
        let caps = if cap {
            "-all,+net_bind_service"
        } else {
            "-all"
        };
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, "setpriv"])
            .arg(format!("--reuid={UID}"))
            .arg(format!("--regid={UID}"))
            .arg("--clear-groups")
            .arg(format!("--inh-caps={caps}"))
            .arg(format!("--ambient-caps={caps}"))
            .arg(format!("--bounding-set={caps}"))
            .arg("--no-new-privs")
            .arg(bin)
            .stdin(Stdio::null());
        // The server reads every CONCLAVE_* variable as a config override and rejects unknown
        // ones (CONCLAVE_DIST, CONCLAVE_BIN from the test's environment).
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("CONCLAVE_") {
                cmd.env_remove(key);
            }
        }
        cmd
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// `conclave run` in the namespace; `Drop` kills it (SIGKILL to the process itself: `ip netns
/// exec` and `setpriv` exec into it, so the child is the server).
struct Node {
    child: std::sync::Mutex<Child>,
    pid: u32,
}

impl Node {
    fn spawn(netns: &Netns, bin: &Path, config: &Path, log: &Path) -> Result<Node> {
        let out = std::fs::File::create(log)?;
        let child = netns
            .command(bin, true)
            .args(["run", "--config"])
            .arg(config)
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("spawn conclave run")?;
        let pid = child.id();
        Ok(Node {
            child: std::sync::Mutex::new(child),
            pid,
        })
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Ok(mut child) = self.child.lock() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip").args(args).output().context("run ip")?;
    if !out.status.success() {
        bail!(
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
