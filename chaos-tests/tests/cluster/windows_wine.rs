//! The Windows build under Wine: three `conclave.exe` nodes (cross-built by
//! `ops/windows/build.sh`) on 127.0.0.x with TLS, a chat through `conclavectl.exe` (also under
//! Wine), a real kill of one node, failover and catch-up, with the same history check as the
//! Linux chaos tests: no acknowledged message lost or duplicated, the same order on every node.
//!
//! Needs `CONCLAVE_WINDOWS_DIST` (the directory holding both .exe files), `wine`, and the Wine
//! prefix `ops/windows/toolchain.sh` made (`WINEPREFIX`, default /var/tmp/conclave-wine; it
//! holds the bcryptprimitives.dll stub Wine lacks). Without them the test prints why and
//! passes, unless `CHAOS_REQUIRE_WINE=1` (set by `.ci/run`).
//!
//! How a node is killed for real: `wine X.exe` execs the Wine loader in place, so the process
//! the harness spawned *is* the Windows process (same pid); SIGKILL on it ends it with no
//! shutdown code, as a crash or `taskkill /f` would, and wineserver reaps its Windows side. The
//! test proves it died by binding the node's ports itself before restarting it.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use chaos_tests::checks::{self, Msg};
use chaos_tests::{ClusterOptions, Load, LoadConfig, TestCluster};

use crate::util::{create_channel, max_index, max_seq, settle, spread_clients, wait_acks};

const CH: &str = "wine";
const CTL_MESSAGES_BEFORE: usize = 3;
const CTL_MESSAGES_AFTER: usize = 3;
/// A Windows process under Wine starts slower than a Linux one (wineserver, DLL loading).
const READY: Duration = Duration::from_secs(120);
const CTL_TIMEOUT: Duration = Duration::from_secs(60);

struct Wine {
    dist: PathBuf,
    prefix: PathBuf,
}

/// The .exe directory and Wine prefix, or `None` (after saying why) when the test cannot run.
fn wine_setup() -> Option<Wine> {
    let required = std::env::var("CHAOS_REQUIRE_WINE").is_ok_and(|v| v == "1");
    let skip = |why: String| -> Option<Wine> {
        if required {
            panic!("CHAOS_REQUIRE_WINE=1 but {why}");
        }
        eprintln!("SKIP windows_wine: {why} (ops/windows/build.sh builds it; CI sets it up)");
        None
    };
    let Some(dist) = std::env::var_os("CONCLAVE_WINDOWS_DIST").map(PathBuf::from) else {
        return skip("CONCLAVE_WINDOWS_DIST is not set".into());
    };
    for exe in ["conclave.exe", "conclavectl.exe"] {
        if !dist.join(exe).is_file() {
            return skip(format!("{} has no {exe}", dist.display()));
        }
    }
    let wine_runs = std::process::Command::new("wine")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !wine_runs {
        return skip("wine is not installed".into());
    }
    let prefix = std::env::var_os("WINEPREFIX")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/conclave-wine"));
    let stub = prefix.join("drive_c/windows/system32/bcryptprimitives.dll");
    if !stub.is_file() {
        return skip(format!(
            "the Wine prefix {} lacks the bcryptprimitives.dll stub",
            prefix.display()
        ));
    }
    Some(Wine { dist, prefix })
}

/// A shell script that `exec`s Wine on `exe`, so the harness's pid is the Windows process.
fn wrapper(dir: &Path, exe: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("conclave-under-wine.sh");
    let script = format!("#!/bin/sh\nexec wine '{}' \"$@\"\n", exe.display());
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Runs `conclavectl.exe ARGS` under Wine against every node; returns stdout, fails the test
/// (with its stderr) on a non-zero exit.
async fn ctl(cluster: &TestCluster, wine: &Wine, token: &Path, args: &[&str]) -> String {
    let servers: Vec<String> = cluster.ids().iter().map(|id| cluster.url(*id)).collect();
    let ca = cluster.ca_file().expect("TLS cluster has a root");
    let mut cmd = tokio::process::Command::new("wine");
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("CONCLAVE_") {
            cmd.env_remove(key);
        }
    }
    cmd.arg(wine.dist.join("conclavectl.exe"))
        .arg("--server")
        .arg(servers.join(","))
        // Unix paths are Wine's Z: drive.
        .arg("--ca-file")
        .arg(format!("Z:{}", ca.display()))
        .arg("--token-file")
        .arg(format!("Z:{}", token.display()))
        .args(args)
        .env("WINEPREFIX", &wine.prefix)
        .env("WINEDEBUG", "-all")
        .env("CONCLAVE_PASSWORD", chaos_tests::ADMIN_PASSWORD)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(CTL_TIMEOUT, cmd.output())
        .await
        .unwrap_or_else(|_| cluster.fail(&format!("conclavectl.exe {args:?}: no exit in time")))
        .unwrap_or_else(|e| cluster.fail(&format!("spawn wine conclavectl.exe: {e}")));
    if !out.status.success() {
        cluster.fail(&format!(
            "conclavectl.exe {args:?} exited {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Posts `n` messages through `conclavectl.exe --json send`, ids `<tag>-<i>`, and returns
/// what each acknowledgement said (its sequence number is what the history check holds every
/// node to).
async fn ctl_send(
    cluster: &TestCluster,
    wine: &Wine,
    token: &Path,
    tag: &str,
    n: usize,
) -> Vec<Msg> {
    let mut acked = Vec::with_capacity(n);
    for i in 0..n {
        let id = format!("{tag}-{i}");
        let body = format!("hello from Windows {tag} {i}");
        let out = ctl(
            cluster,
            wine,
            token,
            &["--json", "send", CH, "--id", &id, "--", &body],
        )
        .await;
        let outcome: ops::PostOutcome = serde_json::from_str(&out)
            .unwrap_or_else(|e| cluster.fail(&format!("conclavectl.exe --json send: {e}: {out}")));
        acked.push(Msg::from(&outcome.message));
    }
    acked
}

/// Waits until nothing listens on node `id`'s ports any more: the killed process is gone.
async fn wait_ports_free(cluster: &TestCluster, id: u64) {
    let addrs = [cluster.api_addr(id), cluster.cluster_addr(id)];
    cluster
        .wait_until(
            &format!("node {id}'s ports to be free after the kill"),
            Duration::from_secs(30),
            || async move {
                for a in addrs {
                    TcpListener::bind(a).map_err(|e| format!("{a}: {e}"))?;
                }
                Ok::<(), String>(())
            },
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_nodes_under_wine_chat_fail_over_and_catch_up() {
    let Some(wine) = wine_setup() else {
        return;
    };
    let scripts = tempfile::tempdir().unwrap();
    let bin = wrapper(scripts.path(), &wine.dist.join("conclave.exe"));
    let mut opts = ClusterOptions::default()
        .tls()
        .binary(bin)
        .env("WINEPREFIX", &wine.prefix.to_string_lossy())
        .env("WINEDEBUG", "-all");
    opts.ready_timeout = READY;
    // Slower Raft timing than the Linux tests' 50 ms heartbeat: every cluster RPC crosses
    // Wine's emulated Winsock and TLS in a debug build, and on a busy 2-core machine a 50 ms
    // AppendEntries timeout made elections churn (seen once: no leader for a minute). The
    // test is about the Windows build working, not about election speed.
    opts.raft.heartbeat_interval_ms = 250;
    opts.raft.election_timeout_min_ms = 1500;
    opts.raft.election_timeout_max_ms = 3000;
    let cluster = TestCluster::try_start_with(3, opts)
        .await
        .unwrap_or_else(|e| panic!("three conclave.exe nodes under Wine: {e:#}"));
    create_channel(&cluster, CH).await;

    // Chat through the Windows CLI: log in, post, read back.
    let token = cluster.root().join("ctl-token");
    ctl(
        &cluster,
        &wine,
        &token,
        &["login", "--username", chaos_tests::ADMIN_USER],
    )
    .await;
    let ctl_before = ctl_send(&cluster, &wine, &token, "ctl-before", CTL_MESSAGES_BEFORE).await;
    let page = ctl(&cluster, &wine, &token, &["--json", "tail", CH]).await;
    for i in 0..CTL_MESSAGES_BEFORE {
        let body = format!("hello from Windows ctl-before {i}");
        assert!(page.contains(&body), "tail lacks {body:?}:\n{page}");
    }

    // Load through failover clients, then kill the leader for real.
    let started = Instant::now();
    let load = Load::start(spread_clients(&cluster, 3), LoadConfig::new(CH, "wl"));
    wait_acks(&cluster, &load, started, 10, "acks before the kill").await;
    let victim = cluster.wait_for_leader(&[]).await;
    let victim_url = cluster.url(victim);
    cluster.kill(victim);
    let killed_at = Instant::now();
    wait_ports_free(&cluster, victim).await;
    cluster.wait_for_leader(&[victim]).await;
    wait_acks(
        &cluster,
        &load,
        killed_at,
        20,
        "posting to continue through the survivors",
    )
    .await;
    // The Windows CLI fails over too (its server list still names the dead node first).
    let ctl_after = ctl_send(&cluster, &wine, &token, "ctl-after", CTL_MESSAGES_AFTER).await;
    let report = load.stop().await;
    for a in report.acks.iter().filter(|a| a.sent_at > killed_at) {
        assert_ne!(a.server, victim_url, "the dead node acknowledged a post");
    }

    // The killed node, restarted, catches up to the same history.
    cluster.restart(victim).await;
    let mut acked = settle(&cluster, CH, &report).await;
    let ids = cluster.ids();
    let views = cluster
        .wait_converged(CH, &ids, max_index(&report), max_seq(&acked))
        .await;
    // The CLI's messages were acknowledged too, with the sequence numbers its answers gave.
    let mut sent = report.sent_ids();
    for m in ctl_before.into_iter().chain(ctl_after) {
        sent.insert(m.client_msg_id.clone());
        acked.push(m);
    }
    cluster.check(checks::all_core(&acked, &views));
    cluster.check(checks::nothing_unsent_written(&sent, &views));
    eprintln!(
        "windows_wine: node {victim} killed and caught up; {} acknowledged messages on {} nodes",
        acked.len(),
        views.len()
    );
}
