//! `conclave dev` end to end: three real node processes come up on 127.0.0.1-3 with HTTPS and
//! mutual TLS, answer over HTTPS to a client trusting only `<data-dir>/ca.pem`, stop on SIGTERM
//! (no process left behind), and a second run reuses the data; a node killed with SIGKILL is
//! reported and restarted while the other two keep serving, and the console carries no log
//! lines. `--no-tls` stays on loopback: nodes 2 and 3 join node 1 with `--insecure`, every
//! address is 127.0.0.N and no node says `insecure_plaintext`. Linux only (it binds 127.0.0.2 and 127.0.0.3 and sends signals).

#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use serde_json::{Value, json};

const PASSWORD: &str = "dev-test-password";

/// The dev launcher and, through its process group, the three nodes it starts.
struct Dev {
    child: Child,
    lines: mpsc::Receiver<String>,
    output: Vec<String>,
    /// Everything the launcher wrote to stderr (its console log lines).
    stderr: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Dev {
    fn start(dir: &std::path::Path, api: u16, cluster: u16) -> Dev {
        Dev::start_with(dir, api, cluster, &[])
    }

    /// `conclave dev` with more arguments (`--no-tls`).
    fn start_with(dir: &std::path::Path, api: u16, cluster: u16, extra: &[&str]) -> Dev {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_conclave"));
        // The server reads CONCLAVE_* variables as config overrides; the test's environment
        // must not leak into it.
        for (k, _) in std::env::vars() {
            if k.starts_with("CONCLAVE_") {
                cmd.env_remove(k);
            }
        }
        let mut child = cmd
            .args(["dev", "--admin-password", PASSWORD])
            .arg("--data-dir")
            .arg(dir)
            .args([
                "--api-port",
                &api.to_string(),
                "--cluster-port",
                &cluster.to_string(),
                // The port after the cluster port is free too (`free_ports`): never the default
                // 8053, which a developer's own `conclave dev` may hold.
                "--dns-port",
                &(cluster + 1).to_string(),
                "--https-port",
                &(cluster + 2).to_string(),
            ])
            .args(extra)
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let err_pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err_pipe).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Dev {
            child,
            lines,
            output: Vec::new(),
            stderr,
        }
    }

    /// Waits until the launcher prints a line containing `what`; returns that line.
    fn wait_line(&mut self, what: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            if let Some(l) = self.output.iter().find(|l| l.contains(what)) {
                return l.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.output.push(line),
                Err(e) => panic!(
                    "no line with {what:?} within {within:?} ({e:?}); printed:\n{}",
                    self.output.join("\n")
                ),
            }
        }
    }

    /// The pid `conclave dev` printed for node `n` in its banner.
    fn node_pid(&self, n: u8) -> i32 {
        let prefix = format!("  node {n}: ");
        let line = self
            .output
            .iter()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no banner line for node {n}"));
        let pid = line
            .split("(pid ")
            .nth(1)
            .unwrap()
            .split(',')
            .next()
            .unwrap();
        pid.parse().unwrap()
    }

    /// Waits for the "ready" banner; returns everything printed so far.
    fn wait_ready(&mut self, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.output.push(line);
                    if self.output.iter().any(|l| l.starts_with("Press Ctrl-C")) {
                        return self.output.join("\n");
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => panic!(
                    "conclave dev exited ({:?}) before it was ready; printed:\n{}",
                    self.child.try_wait(),
                    self.output.join("\n")
                ),
                Err(mpsc::RecvTimeoutError::Timeout) => panic!(
                    "conclave dev not ready within {within:?}; printed:\n{}",
                    self.output.join("\n")
                ),
            }
        }
    }

    /// SIGTERM the launcher and wait for it to exit on its own.
    fn terminate(&mut self, within: Duration) -> std::process::ExitStatus {
        signal(self.child.id() as i32, libc::SIGTERM);
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "conclave dev did not stop within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        // Kill the whole process group (launcher and nodes) if a test failed midway.
        signal(-(self.child.id() as i32), libc::SIGKILL);
        let _ = self.child.wait();
    }
}

#[allow(unsafe_code)]
fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// A port that is free on 127.0.0.1-3, and the three after it (plain API, cluster, DNS, HTTPS).
fn free_ports() -> (u16, u16) {
    for _ in 0..200 {
        let base = 20_000 + (rand::random::<u16>() % 40_000);
        let all_free = (1..=3).all(|n| {
            [base, base + 1, base + 2, base + 3]
                .iter()
                .all(|p| TcpListener::bind(SocketAddr::from(([127, 0, 0, n], *p))).is_ok())
        });
        if all_free {
            return (base, base + 1);
        }
    }
    panic!("no free port pair on 127.0.0.1-3");
}

fn url(n: u8, port: u16, path: &str) -> String {
    format!("http://127.0.0.{n}:{port}{path}")
}

fn surl(n: u8, port: u16, path: &str) -> String {
    format!("https://127.0.0.{n}:{port}{path}")
}

/// A client that trusts only the dev cluster's root.
fn https_client(root_pem: &str) -> reqwest::Client {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(root_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn login(http: &reqwest::Client, n: u8, https: u16) -> String {
    let login: Value = http
        .post(surl(n, https, "/api/v1/login"))
        .json(&json!({"username": "admin", "password": PASSWORD}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    login["token"].as_str().unwrap().to_string()
}

async fn create_channel(http: &reqwest::Client, n: u8, https: u16, token: &str, name: &str) {
    let r = http
        .post(surl(n, https, "/api/v1/channels"))
        .bearer_auth(token)
        .json(&json!({"name": name}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "create channel {name} on node {n}");
}

/// Every port the three nodes listen on.
fn node_ports(api: u16, cluster: u16, https: u16) -> Vec<(u8, u16)> {
    (1..=3u8)
        .flat_map(|n| [(n, api), (n, cluster), (n, https)])
        .collect()
}

/// SIGTERM the launcher: it exits with success and leaves nothing listening.
async fn stop_cleanly(dev: &mut Dev, ports: &[(u8, u16)]) {
    let status = dev.terminate(Duration::from_secs(30));
    assert!(status.success(), "dev exited with {status}");
    wait_until_closed(ports, Duration::from_secs(10)).await;
}

async fn wait_until_closed(ports: &[(u8, u16)], within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let open: Vec<_> = ports
            .iter()
            .filter(|(n, p)| TcpStream::connect(SocketAddr::from(([127, 0, 0, *n], *p))).is_ok())
            .collect();
        if open.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "still listening after stop: {open:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_cluster_starts_stops_and_reuses_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let (api, cluster) = free_ports();
    let https = cluster + 2;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    let mut dev = Dev::start(dir.path(), api, cluster);
    let banner = dev.wait_ready(Duration::from_secs(120));
    let root = std::fs::read_to_string(dir.path().join("ca.pem")).unwrap();
    let secure = https_client(&root);
    for n in 1..=3u8 {
        assert!(
            banner.contains(&format!("https://127.0.0.{n}:{https}")),
            "{banner}"
        );
        // The plain port: readiness, and a redirect to HTTPS for the API.
        let r = http.get(url(n, api, "/readyz")).send().await.unwrap();
        assert_eq!(r.status(), 200, "node {n} not ready");
        let r = http
            .get(url(n, api, "/api/v1/cluster"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 301, "node {n}: plain API redirects");
        assert!(
            r.headers().get("strict-transport-security").is_none(),
            "node {n}: HSTS over plain HTTP"
        );
        let r = secure.get(surl(n, https, "/readyz")).send().await.unwrap();
        assert_eq!(r.status(), 200, "node {n} not ready over HTTPS");
        // Every HTTPS answer carries HSTS (issue 11, item 6).
        assert_eq!(
            r.headers()
                .get("strict-transport-security")
                .map(|v| v.to_str().unwrap()),
            Some("max-age=31536000"),
            "node {n}: HSTS over HTTPS"
        );
        // What the README tells people to run: curl trusting only the written root.
        let ca = dir.path().join("ca.pem");
        let out = std::process::Command::new("curl")
            .args(["-sS", "--fail", "--cacert"])
            .arg(&ca)
            .arg(surl(n, https, "/healthz"))
            .output()
            .expect("curl is needed for this test (apt-get install -y curl)");
        assert!(
            out.status.success(),
            "curl --cacert against node {n}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // And without the root, curl refuses the certificate.
        let out = std::process::Command::new("curl")
            .args(["-sS", "--fail"])
            .arg(surl(n, https, "/healthz"))
            .output()
            .expect("curl");
        assert!(
            !out.status.success(),
            "curl trusted node {n} without the root"
        );
    }
    assert!(
        banner.contains(&format!("admin password: {PASSWORD}")),
        "{banner}"
    );
    let view: Value = secure
        .get(surl(2, https, "/api/v1/cluster"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let voters = view["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["voter"] == true)
        .count();
    assert_eq!(voters, 3, "{view}");
    for node in view["nodes"].as_array().unwrap() {
        assert!(node["https_addr"].is_string(), "{view}");
    }
    assert!(view["leader_id"].as_u64().is_some(), "{view}");
    // The page's CSP lets the client connect to the three nodes over HTTPS and WSS, and to no
    // other host (the members' HTTPS addresses come from the periodic health view: poll).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = secure.get(surl(1, https, "/")).send().await.unwrap();
        let csp = r
            .headers()
            .get("content-security-policy")
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        let connect = csp
            .split(';')
            .map(str::trim)
            .find(|d| d.starts_with("connect-src"))
            .unwrap()
            .to_owned();
        let all = (1..=3u8).all(|m| {
            connect.contains(&format!(" https://127.0.0.{m}:{https}"))
                && connect.contains(&format!(" wss://127.0.0.{m}:{https}"))
        });
        if all {
            for wildcard in [" http: ", " https: ", " ws: ", " wss: ", "*"] {
                assert!(!format!("{connect} ").contains(wildcard), "{connect}");
            }
            assert!(
                !connect.contains("http://"),
                "plain HTTP from an HTTPS page: {connect}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "CSP never named the three nodes: {connect}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let token = login(&secure, 1, https).await;
    create_channel(&secure, 3, https, &token, "kept").await;
    let r = secure
        .post(surl(3, https, "/api/v1/channels/kept/messages"))
        .bearer_auth(&token)
        .json(&json!({"body": "survives a restart", "client_msg_id": "dev-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    let listening = node_ports(api, cluster, https);
    stop_cleanly(&mut dev, &listening).await;
    drop(dev);

    // Second run: same data, same admin, the message is still there.
    let mut dev = Dev::start(dir.path(), api, cluster);
    let banner = dev.wait_ready(Duration::from_secs(120));
    assert!(
        banner.contains(&format!("admin password: {PASSWORD}")),
        "{banner}"
    );
    let token = login(&secure, 2, https).await;
    let page: Value = secure
        .get(surl(2, https, "/api/v1/channels/kept/messages?after=0"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["messages"][0]["body"], "survives a restart", "{page}");
    assert_eq!(page["messages"][0]["seq"], 1, "{page}");
    stop_cleanly(&mut dev, &listening).await;
}

async fn post(http: &reqwest::Client, n: u8, https: u16, token: &str, body: &str) -> u16 {
    let id: String = body.chars().filter(char::is_ascii_alphanumeric).collect();
    match http
        .post(surl(n, https, "/api/v1/channels/watch/messages"))
        .bearer_auth(token)
        .json(&json!({"body": body, "client_msg_id": id}))
        .send()
        .await
    {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    }
}

async fn bodies(http: &reqwest::Client, n: u8, https: u16, token: &str) -> Vec<String> {
    let Ok(r) = http
        .get(surl(n, https, "/api/v1/channels/watch/messages?after=0"))
        .bearer_auth(token)
        .send()
        .await
    else {
        return Vec::new();
    };
    let page: Value = r.json().await.unwrap_or_default();
    page["messages"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter_map(|m| m["body"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Kill one node of the dev cluster the way a developer would to watch failover: the launcher
/// says so, the other two keep taking writes, and the killed node comes back and catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_cluster_restarts_a_killed_node_while_the_others_serve() {
    let dir = tempfile::tempdir().unwrap();
    let (api, cluster) = free_ports();
    let https = cluster + 2;
    let mut dev = Dev::start(dir.path(), api, cluster);
    dev.wait_ready(Duration::from_secs(120));
    let root = std::fs::read_to_string(dir.path().join("ca.pem")).unwrap();
    let secure = https_client(&root);
    let token = login(&secure, 1, https).await;
    create_channel(&secure, 1, https, &token, "watch").await;
    assert_eq!(
        post(&secure, 1, https, &token, "before the kill").await,
        201
    );

    let victim = dev.node_pid(2);
    signal(victim, libc::SIGKILL);
    let exited = dev.wait_line("node 2 exited", Duration::from_secs(10));
    assert!(exited.contains("killed by signal 9"), "{exited}");
    assert!(exited.contains("nodes 1 and 3 keep serving"), "{exited}");

    // The survivors take a write while node 2 is down (a new leader may need a moment; the
    // same client_msg_id makes the retry safe).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if post(&secure, 3, https, &token, "while node 2 was down").await == 201 {
            break;
        }
        assert!(Instant::now() < deadline, "nodes 1 and 3 took no write");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let on_1 = bodies(&secure, 1, https, &token).await;
    assert_eq!(on_1, ["before the kill", "while node 2 was down"]);

    let restarted = dev.wait_line("node 2 restarted", Duration::from_secs(30));
    assert!(
        !restarted.contains(&format!("pid {victim})")),
        "{restarted}"
    );
    dev.wait_line("node 2 is back", Duration::from_secs(60));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let on_2 = bodies(&secure, 2, https, &token).await;
        if on_2 == ["before the kill", "while node 2 was down"] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node 2 did not catch up: {on_2:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        dev.child.try_wait().unwrap().is_none(),
        "the launcher must keep running"
    );

    let listening = node_ports(api, cluster, https);
    stop_cleanly(&mut dev, &listening).await;
    // The console is for the developer: no node or openraft log line leaks onto it.
    let console = dev.stderr.lock().unwrap().join("\n");
    assert!(
        !console.contains("INFO") && !console.contains("openraft"),
        "log lines on the console:\n{console}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_without_tls_stays_on_loopback() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let (api, cluster) = free_ports();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut dev = Dev::start_with(dir.path(), api, cluster, &["--no-tls"]);
    let banner = dev.wait_ready(Duration::from_secs(120));
    assert!(banner.contains(&url(1, api, "")), "{banner}");
    let view: Value = http
        .get(url(3, api, "/api/v1/cluster"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let nodes = view["nodes"].as_array().unwrap();
    assert_eq!(
        nodes.iter().filter(|n| n["voter"] == true).count(),
        3,
        "nodes 2 and 3 joined the plain seed (--insecure): {view}"
    );
    for node in nodes {
        for field in ["api_addr", "cluster_addr"] {
            let addr: SocketAddr = node[field].as_str().unwrap().parse().unwrap();
            assert!(addr.ip().is_loopback(), "{field}: {view}");
        }
        assert_eq!(node["insecure_plaintext"], false, "{view}");
        assert!(node["https_addr"].is_null(), "{view}");
    }
    for n in 1..=3 {
        let mode = std::fs::metadata(dir.path().join(format!("node{n}")))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700, "node{n}'s data directory");
    }
    let listening: Vec<(u8, u16)> = (1..=3u8).flat_map(|n| [(n, api), (n, cluster)]).collect();
    stop_cleanly(&mut dev, &listening).await;
}
