//! `conclavectl check` end to end: the real binary against a real 3-node cluster with the
//! built-in DNS on (each node answers on its own loopback address, port [`DNS_PORT`]; every
//! test cluster has its own `127.a.b.0/24`, so this never collides with `dns_health` running
//! alongside).
//!
//! - `ctl_check_passes_and_explains_failures`: a full pass (every step PASS except `tls`,
//!   SKIP on this plain-HTTP cluster; the round trip goes between two different nodes), the
//!   same with `--json` and the password on stdin, a wrong workspace (FAIL at `dns` with
//!   REFUSED, exit 1), a wrong password (`dns` and `nodes` pass, FAIL at `login`), and usage
//!   errors (exit 2);
//! - `ctl_check_passes_again_after_a_node_dies`: after SIGKILL of one node, a check through a
//!   survivor's DNS passes again (with two nodes) once the dead node has left the answer; the
//!   dead node's DNS address fails at `dns` (nothing answers); with a second node killed, the
//!   last one answers SERVFAIL and the check explains it.
//!
//! - `ctl_check_verifies_tls`: on a cluster with TLS on, a check without `--ca-file` fails at
//!   `tls` (saying how to get the root) and skips login and roundtrip; with the cluster root
//!   every step passes, `tls` reporting each node's HTTPS address verified with days left, and
//!   the round trip runs over HTTPS and `wss://`.
//!
//! Needs `conclavectl` next to the test binary (`cargo build -p ops`) or `CONCLAVECTL_BIN`.

use std::fmt;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use chaos_tests::node::conclavectl_bin;
use chaos_tests::{ADMIN_PASSWORD, ADMIN_USER, ClusterOptions, TestCluster};
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const WS: &str = "chat.check.test";
const DNS_PORT: u16 = 8053;
/// Short, so a killed node leaves the answers quickly.
const TTL_SECS: u64 = 1;
/// Upper bound for one `conclavectl check` run (five steps of at most `--timeout` each).
const RUN_TIMEOUT: Duration = Duration::from_secs(60);
const STEPS: [&str; 5] = ["dns", "nodes", "tls", "login", "roundtrip"];

fn dns_options() -> ClusterOptions {
    ClusterOptions::default().top_level(
        "dns",
        &format!(
            "{{ addr = \"{{node_ip}}:{DNS_PORT}\", workspace = \"{WS}\", ttl_secs = {TTL_SECS} }}"
        ),
    )
}

fn dns_server(cluster: &TestCluster, id: u64) -> String {
    format!("{}:{DNS_PORT}", cluster.ip(id))
}

struct Run {
    args: Vec<String>,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl fmt::Display for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`conclavectl {}` exited with {:?}\n--- stdout:\n{}--- stderr:\n{}---",
            self.args.join(" "),
            self.code,
            self.stdout,
            self.stderr
        )
    }
}

impl Run {
    /// The output line of `step` as `(status, rest)`; the test fails if it is missing.
    fn step(&self, step: &str) -> (&str, &str) {
        for line in self.stdout.lines() {
            let mut parts = line.splitn(2, "  ");
            let (Some(status), Some(rest)) = (parts.next(), parts.next()) else {
                continue;
            };
            if let Some(rest) = rest.strip_prefix(step)
                && rest.starts_with(' ')
            {
                return (status, rest.trim_start());
            }
        }
        panic!("no `{step}` line in the output:\n{self}");
    }

    fn statuses(&self) -> Vec<&str> {
        STEPS.iter().map(|s| self.step(s).0).collect()
    }
}

struct Ctl {
    bin: PathBuf,
    token_file: PathBuf,
}

impl Ctl {
    /// Runs `conclavectl check args...` with no inherited `CONCLAVE_*` variable, `env` on top,
    /// and `stdin` (or nothing) as standard input; reaps it (SIGKILL after [`RUN_TIMEOUT`]).
    async fn check(&self, args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Run {
        let mut cmd = tokio::process::Command::new(&self.bin);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("CONCLAVE_") {
                cmd.env_remove(key);
            }
        }
        let mut all = vec!["check"];
        all.extend_from_slice(args);
        cmd.env("CONCLAVE_TOKEN_FILE", &self.token_file)
            .envs(env.iter().copied())
            .args(&all)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let shown = all.join(" ");
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {} {shown}: {e}", self.bin.display()));
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(text.as_bytes())
                .await
                .unwrap_or_else(|e| panic!("write stdin of {shown}: {e}"));
            // Dropping the pipe closes it: end of input.
        }
        let stdout = drain(child.stdout.take());
        let stderr = drain(child.stderr.take());
        let status = match tokio::time::timeout(RUN_TIMEOUT, child.wait()).await {
            Ok(status) => status.unwrap_or_else(|e| panic!("wait for conclavectl {shown}: {e}")),
            Err(_) => {
                let _ = child.kill().await;
                panic!("`conclavectl {shown}` did not exit within {RUN_TIMEOUT:?}");
            }
        };
        Run {
            args: all.iter().map(|a| (*a).to_owned()).collect(),
            code: status.code(),
            stdout: stdout.await.unwrap_or_default(),
            stderr: stderr.await.unwrap_or_default(),
        }
    }

    /// A check as admin through `dns` (password from the environment).
    async fn check_admin(&self, workspace: &str, dns: &str, password: &str) -> Run {
        self.check(
            &[
                "--workspace",
                workspace,
                "--dns",
                dns,
                "--user",
                ADMIN_USER,
                "--timeout",
                "5",
            ],
            &[("CONCLAVE_PASSWORD", password)],
            None,
        )
        .await
    }
}

fn drain<R>(pipe: Option<R>) -> tokio::task::JoinHandle<String>
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes).await;
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Exit code 1, exactly one stderr line naming the failed step.
fn expect_failed_at(cluster: &TestCluster, run: &Run, step: &str) {
    let lines: Vec<&str> = run.stderr.lines().collect();
    let prefix = format!("conclavectl: error: check failed at step {step}: ");
    if run.code != Some(1) || lines.len() != 1 || !lines[0].starts_with(&prefix) {
        cluster.fail(&format!(
            "expected exit 1 and one stderr line starting with {prefix:?}:\n{run}"
        ));
    }
}

/// Exit code 2 (usage), nothing on stdout, one stderr line containing `needle`.
fn expect_usage(cluster: &TestCluster, run: &Run, needle: &str) {
    let lines: Vec<&str> = run.stderr.lines().collect();
    let ok = run.code == Some(2)
        && run.stdout.is_empty()
        && lines.len() == 1
        && lines[0].starts_with("conclavectl: error: ")
        && lines[0].contains(needle);
    if !ok {
        cluster.fail(&format!(
            "expected exit 2 and one stderr line containing {needle:?}:\n{run}"
        ));
    }
}

/// Node ids named as `node N (` in a roundtrip detail, in order (sender, receiver).
fn roundtrip_nodes(detail: &str) -> Vec<u64> {
    detail
        .split("node ")
        .skip(1)
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_check_passes_and_explains_failures() {
    let bin = conclavectl_bin().unwrap_or_else(|e| panic!("{e:#}"));
    let cluster = TestCluster::start_with(3, dns_options()).await;
    let ctl = Ctl {
        bin,
        token_file: cluster.root().join("ctl-check").join("token"),
    };
    let dns1 = dns_server(&cluster, 1);
    let ips: Vec<String> = (1..=3).map(|id| cluster.ip(id).to_string()).collect();

    // Right after start-up a node may not list every peer yet: poll for the first full pass.
    let run = cluster
        .wait_until(
            "conclavectl check passes",
            cluster.ready_timeout(),
            || async {
                let run = ctl.check_admin(WS, &dns1, ADMIN_PASSWORD).await;
                if run.code == Some(0) && run.stdout.contains("(3 nodes") {
                    Ok(run)
                } else {
                    Err(run.to_string())
                }
            },
        )
        .await;
    assert!(run.stderr.is_empty(), "{run}");
    assert_eq!(
        run.statuses(),
        ["PASS", "PASS", "SKIP", "PASS", "PASS"],
        "{run}"
    );
    let (_, dns) = run.step("dns");
    assert!(dns.starts_with(&format!("{WS} -> ")), "{run}");
    for ip in &ips {
        assert!(dns.contains(ip.as_str()), "{ip} missing:\n{run}");
    }
    assert!(
        dns.contains("API port 8080 from SRV") && dns.contains(&format!("via {dns1}")),
        "{run}"
    );
    assert!(dns.ends_with(" ms"), "{run}");
    assert!(run.step("nodes").1.starts_with("3/3 ready"), "{run}");
    assert_eq!(run.step("tls").1, "cluster serves plain HTTP", "{run}");
    assert!(
        run.step("login")
            .1
            .starts_with(&format!("logged in as {ADMIN_USER} (admin) on node ")),
        "{run}"
    );
    let (_, roundtrip) = run.step("roundtrip");
    assert!(roundtrip.starts_with("#conclave-check"), "{run}");
    let between = roundtrip_nodes(roundtrip);
    assert!(
        between.len() == 2 && between[0] != between[1],
        "round trip not between two different nodes:\n{run}"
    );
    eprintln!("ctl_check: passing run:\n{}", run.stdout);

    // The default channel was created private, and holds the check's message.
    let channel = cluster
        .client_all()
        .get_channel("conclave-check")
        .await
        .unwrap_or_else(|e| panic!("conclave-check channel: {e}"));
    assert_eq!(channel.kind, ops::ChannelKind::Private);
    assert!(channel.last_seq >= 1);

    // --json, password on stdin: one array of five steps, nothing else on stdout.
    let run = ctl
        .check(
            &[
                "--workspace",
                WS,
                "--dns",
                &dns1,
                "--user",
                ADMIN_USER,
                "--password-stdin",
                "--json",
            ],
            &[],
            Some(&format!("{ADMIN_PASSWORD}\n")),
        )
        .await;
    assert_eq!(run.code, Some(0), "{run}");
    let steps: Value = serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {run}"));
    let got: Vec<(&str, &str)> = steps
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {run}"))
        .iter()
        .map(|s| {
            (
                s["step"].as_str().unwrap_or_default(),
                s["status"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("dns", "pass"),
            ("nodes", "pass"),
            ("tls", "skip"),
            ("login", "pass"),
            ("roundtrip", "pass")
        ],
        "{run}"
    );
    assert!(steps[4]["ms"].is_u64(), "{run}");

    // A workspace the server does not serve: REFUSED, nothing after dns runs.
    let run = ctl
        .check_admin("chat.other.test", &dns1, ADMIN_PASSWORD)
        .await;
    expect_failed_at(&cluster, &run, "dns");
    assert_eq!(
        run.statuses(),
        ["FAIL", "SKIP", "SKIP", "SKIP", "SKIP"],
        "{run}"
    );
    assert!(run.step("dns").1.contains("REFUSED"), "{run}");
    assert!(run.stderr.contains("REFUSED"), "{run}");
    eprintln!("ctl_check: wrong workspace:\n{run}");

    // A wrong password: DNS and the nodes are fine, the login fails.
    let run = ctl.check_admin(WS, &dns1, "not-the-password").await;
    expect_failed_at(&cluster, &run, "login");
    assert_eq!(
        run.statuses(),
        ["PASS", "PASS", "SKIP", "FAIL", "SKIP"],
        "{run}"
    );
    assert!(
        run.step("login").1.contains("wrong user name or password"),
        "{run}"
    );
    eprintln!("ctl_check: wrong password:\n{run}");

    // Usage errors are found before anything is sent.
    let run = ctl
        .check(&["--workspace", WS, "--dns", "ns1.example.lan"], &[], None)
        .await;
    expect_usage(&cluster, &run, "not an IP address");
    let run = ctl
        .check(&["--workspace", "chat..test", "--dns", &dns1], &[], None)
        .await;
    expect_usage(&cluster, &run, "not a domain name");
    let run = ctl
        .check(
            &["--workspace", WS, "--dns", &dns1, "--user", ADMIN_USER],
            &[],
            None,
        )
        .await;
    expect_usage(&cluster, &run, "CONCLAVE_PASSWORD");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_check_passes_again_after_a_node_dies() {
    let bin = conclavectl_bin().unwrap_or_else(|e| panic!("{e:#}"));
    let cluster = TestCluster::start_with(3, dns_options()).await;
    let ctl = Ctl {
        bin,
        token_file: cluster.root().join("ctl-check").join("token"),
    };
    let dns1 = dns_server(&cluster, 1);
    cluster
        .wait_until(
            "conclavectl check passes with 3 nodes",
            cluster.ready_timeout(),
            || async {
                let run = ctl.check_admin(WS, &dns1, ADMIN_PASSWORD).await;
                if run.code == Some(0) && run.stdout.contains("(3 nodes") {
                    Ok(())
                } else {
                    Err(run.to_string())
                }
            },
        )
        .await;

    let victim = 3;
    let victim_ip = cluster.ip(victim).to_string();
    cluster.kill(victim);
    // Until the survivors drop it (about one probe period plus the TTL), a check may fail at
    // `nodes`; then it must pass with the two survivors, the round trip between them.
    let run = cluster
        .wait_until(
            "conclavectl check passes without the killed node",
            cluster.ready_timeout(),
            || async {
                let run = ctl.check_admin(WS, &dns1, ADMIN_PASSWORD).await;
                if run.code == Some(0) {
                    Ok(run)
                } else {
                    Err(run.to_string())
                }
            },
        )
        .await;
    assert_eq!(
        run.statuses(),
        ["PASS", "PASS", "SKIP", "PASS", "PASS"],
        "{run}"
    );
    let (_, dns) = run.step("dns");
    assert!(
        dns.contains("(2 nodes") && !dns.contains(victim_ip.as_str()),
        "{run}"
    );
    let between = roundtrip_nodes(run.step("roundtrip").1);
    assert!(
        between.len() == 2 && between[0] != between[1] && !between.contains(&victim),
        "{run}"
    );
    eprintln!("ctl_check: after the kill:\n{}", run.stdout);

    // The dead node's own DNS address: nothing listens, and the check says so at once.
    let run = ctl
        .check_admin(WS, &dns_server(&cluster, victim), ADMIN_PASSWORD)
        .await;
    expect_failed_at(&cluster, &run, "dns");
    assert!(run.step("dns").1.contains("nothing answers DNS"), "{run}");

    // Without a majority, node 1 answers SERVFAIL, and the check explains what that means.
    cluster.kill(2);
    let run = cluster
        .wait_until(
            "conclavectl check fails with SERVFAIL",
            cluster.ready_timeout(),
            || async {
                let run = ctl.check_admin(WS, &dns1, ADMIN_PASSWORD).await;
                // While node 1's view changes, its A and SRV answers can come from two
                // different views (a transient "no SRV record" failure); wait for SERVFAIL.
                if run.code == Some(1)
                    && run.step("dns").0 == "FAIL"
                    && run.step("dns").1.contains("SERVFAIL")
                {
                    Ok(run)
                } else {
                    Err(run.to_string())
                }
            },
        )
        .await;
    expect_failed_at(&cluster, &run, "dns");
    let (_, dns) = run.step("dns");
    assert!(
        dns.contains("SERVFAIL") && dns.contains("cut off from the cluster majority"),
        "{run}"
    );
    eprintln!("ctl_check: without a majority:\n{}", run.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_check_verifies_tls() {
    let bin = conclavectl_bin().unwrap_or_else(|e| panic!("{e:#}"));
    let cluster = TestCluster::start_with(3, dns_options().tls()).await;
    let ctl = Ctl {
        bin,
        token_file: cluster.root().join("ctl-check").join("token"),
    };
    let dns1 = dns_server(&cluster, 1);
    let ca_file = cluster
        .ca_file()
        .and_then(|p| p.to_str())
        .expect("a TLS cluster has a root")
        .to_owned();
    let args = [
        "--workspace",
        WS,
        "--dns",
        dns1.as_str(),
        "--user",
        ADMIN_USER,
        "--timeout",
        "5",
    ];

    // With the root: every step passes once every node is in the answer.
    let run = cluster
        .wait_until(
            "conclavectl check passes over TLS",
            cluster.ready_timeout(),
            || async {
                let run = ctl
                    .check(
                        &args,
                        &[
                            ("CONCLAVE_PASSWORD", ADMIN_PASSWORD),
                            ("CONCLAVE_CA_FILE", ca_file.as_str()),
                        ],
                        None,
                    )
                    .await;
                if run.code == Some(0) && run.stdout.contains("(3 nodes") {
                    Ok(run)
                } else {
                    Err(run.to_string())
                }
            },
        )
        .await;
    assert_eq!(
        run.statuses(),
        ["PASS", "PASS", "PASS", "PASS", "PASS"],
        "{run}"
    );
    let (_, tls) = run.step("tls");
    assert!(tls.starts_with("3/3 verified: "), "{run}");
    for id in 1..=3 {
        assert!(
            tls.contains(&format!("node {id} ({}:8443) (", cluster.ip(id))),
            "node {id} missing:\n{run}"
        );
    }
    assert!(tls.contains("days left"), "{run}");
    let (_, roundtrip) = run.step("roundtrip");
    assert!(
        roundtrip.contains(":8443)"),
        "the round trip used HTTPS:\n{run}"
    );

    // Without the root: the nodes serve HTTPS, so `tls` fails (it is no skip) and says how to
    // get the root; login and roundtrip do not run.
    let run = ctl
        .check(&args, &[("CONCLAVE_PASSWORD", ADMIN_PASSWORD)], None)
        .await;
    assert_eq!(
        run.statuses(),
        ["PASS", "PASS", "FAIL", "SKIP", "SKIP"],
        "{run}"
    );
    assert!(run.step("tls").1.contains("--ca-file"), "{run}");
    expect_failed_at(&cluster, &run, "tls");
}
