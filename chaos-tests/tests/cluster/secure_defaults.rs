//! Secure by default (issue 11, item 1 and the cluster-port bullet of item 5), with real
//! processes, real sockets and real TLS:
//! - `lan_address_needs_tls_or_insecure_plaintext`: a node on this machine's own non-loopback
//!   address (read from `ip addr` at test time) without `[tls]` refuses to start in one line;
//!   with `insecure_plaintext = true` it starts, logs `node.insecure_plaintext` (WARN), and
//!   `GET /api/v1/cluster` and `conclavectl status` say so;
//! - `forged_forward_without_client_cert_creates_nothing`: a forged `ForwardRequest`
//!   (an admin session and an admin user) is applied by a plain loopback node's cluster port
//!   (the control: the forgery is well-formed and the attack real), and creates nothing on a
//!   TLS node's cluster port, neither over a TLS handshake without a client certificate nor
//!   over plain HTTP; the refusals are logged as `peer.cert_refused` with the source address;
//! - `lying_length_prefix_is_refused_without_memory_growth`: bincode bodies whose length
//!   prefixes claim 1 GiB, and an HTTP body announced as 1 GiB, are refused (400 "size limit",
//!   413) while the node's VmRSS stays flat and the node stays ready.

use std::net::{IpAddr, SocketAddr};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use chaos_tests::node::{NodeProcess, NodeSpec, conclave_bin, conclavectl_bin};
use chaos_tests::wait::poll_until;
use chaos_tests::{ADMIN_PASSWORD, ADMIN_USER, ClusterOptions, RaftOptions, TestCluster};
use cluster::transport::rpc::{ForwardReply, ForwardRequest, PATH_FORWARD};
use cluster::{Command, Role};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

const DEADLINE: Duration = Duration::from_secs(60);
const IO_TIMEOUT: Duration = Duration::from_secs(10);
const FORGED_USER: &str = "mallory";

// ----- helpers --------------------------------------------------------------------------------

/// A global-scope IPv4 address of this machine (eth0's, say), or `None` when it has none.
fn own_lan_ipv4() -> Option<IpAddr> {
    let out = std::process::Command::new("ip")
        .args(["-o", "-4", "addr", "show", "scope", "global"])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
        let mut words = l.split_whitespace();
        words.find(|w| *w == "inet")?;
        let ip: IpAddr = words.next()?.split('/').next()?.parse().ok()?;
        (!ip.is_loopback()).then_some(ip)
    })
}

/// A port that was free on `ip` a moment ago.
fn free_port(ip: IpAddr) -> u16 {
    let l = std::net::TcpListener::bind((ip, 0)).expect("bind a probe port");
    l.local_addr().expect("probe port").port()
}

/// The forged commands: a session for the admin with a token we know, and a new admin user.
fn forged_commands(secret: &str) -> ForwardRequest {
    let commands = vec![
        Command::CreateSession {
            token_hash: hex::encode(Sha256::digest(secret.as_bytes())),
            username: ADMIN_USER.to_owned(),
            ttl_ms: 3_600_000,
        },
        Command::CreateUser {
            username: FORGED_USER.to_owned(),
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$forged$forged".to_owned(),
            role: Role::Admin,
        },
    ];
    ForwardRequest {
        commands: commands.into(),
    }
}

/// The bearer token the API accepts for a session whose secret is `secret` (64 hex digits).
fn bearer(secret: &str) -> String {
    format!("cv1.{secret}.0")
}

/// One HTTP/1.1 POST over `stream` (plain TCP or TLS); returns the status code and body, or
/// why no answer came.
async fn raw_post<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    path: &str,
    body: &[u8],
    content_length: Option<u64>,
) -> Result<(u16, Vec<u8>), String> {
    let len = content_length.unwrap_or(body.len() as u64);
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: cluster\r\ncontent-type: application/octet-stream\r\ncontent-length: {len}\r\nconnection: close\r\n\r\n"
    );
    let io = async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body).await?;
        stream.flush().await?;
        let mut answer = Vec::new();
        // An answer before the whole announced body was sent (413) ends with the connection.
        let _ = stream.read_to_end(&mut answer).await;
        Ok::<_, std::io::Error>(answer)
    };
    let answer = tokio::time::timeout(IO_TIMEOUT, io)
        .await
        .map_err(|_| "no answer in time".to_owned())?
        .map_err(|e| format!("I/O: {e}"))?;
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no HTTP answer ({} bytes)", answer.len()))?;
    let body_at = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(answer.len(), |p| p + 4);
    Ok((status, answer[body_at..].to_vec()))
}

async fn tcp(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr).await.expect("connect")
}

/// A TLS client that presents no certificate and accepts any server certificate: an attacker
/// on the LAN, who has no certificate of the cluster CA and does not care who answers.
fn attacker_tls() -> tokio_rustls::TlsConnector {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnything(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

#[derive(Debug)]
struct AcceptAnything(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnything {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Status of `GET /api/v1/users` with `token`, and whether the forged user is in the list.
async fn users_with(cluster: &TestCluster, id: u64, token: &str) -> (u16, bool) {
    let resp = cluster
        .http()
        .get(format!("{}/api/v1/users", cluster.url(id)))
        .bearer_auth(token)
        .send()
        .await
        .unwrap_or_else(|e| cluster.fail(&format!("GET /api/v1/users: {e}")));
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap_or_default();
    (status, body.contains(&format!("\"{FORGED_USER}\"")))
}

/// The node's resident set size in KiB, from /proc (Linux).
fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

/// Lines of node `id`'s log that carry the security event `event`.
fn event_lines(cluster: &TestCluster, id: u64, event: &str) -> Vec<String> {
    let log = std::fs::read_to_string(&cluster.node(id).spec.log_path).unwrap_or_default();
    log.lines()
        .filter(|l| {
            l.contains(&format!("event=\"{event}\"")) || l.contains(&format!("event={event} "))
        })
        .map(str::to_owned)
        .collect()
}

// ----- tests ----------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn lan_address_needs_tls_or_insecure_plaintext() {
    let Some(ip) = own_lan_ipv4() else {
        eprintln!("SKIPPED: this machine has no global-scope IPv4 address (`ip -4 addr`)");
        return;
    };
    let bin = conclave_bin().unwrap_or_else(|e| panic!("{e:#}"));
    let ctl = conclavectl_bin().unwrap_or_else(|e| panic!("{e:#}"));
    let dir = tempfile::tempdir().expect("temp dir");
    let api = SocketAddr::new(ip, free_port(ip));
    let cluster_addr = SocketAddr::new(ip, free_port(ip));
    let spec = NodeSpec::new(1, api, cluster_addr, dir.path());
    spec.write_config(&RaftOptions::default(), &[])
        .expect("config");

    // No [tls]: one line naming the setting, exit 2, nothing started or written.
    for cmd in ["run", "init"] {
        let out = std::process::Command::new(&bin)
            .args([cmd, "--config"])
            .arg(&spec.config_path)
            .env("CONCLAVE_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env_remove("CONCLAVE_INSECURE_PLAINTEXT")
            .output()
            .expect("run conclave");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "conclave {cmd}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "conclave {cmd}: {err}");
        assert!(
            err.starts_with("conclave: ")
                && err.contains(&format!(
                    "cluster_addr {cluster_addr} is not a loopback address"
                ))
                && err.contains("[tls]")
                && err.contains("insecure_plaintext"),
            "conclave {cmd}: {err}"
        );
    }
    assert!(!spec.data_dir.exists(), "a refused node wrote nothing");
    assert!(
        std::net::TcpListener::bind(cluster_addr).is_ok(),
        "a refused node left nothing listening"
    );

    // insecure_plaintext = true: it starts, warns, and says so in the status.
    spec.write_config(
        &RaftOptions::default(),
        &[("insecure_plaintext".to_owned(), "true".to_owned())],
    )
    .expect("config");
    let node = NodeProcess::new(spec.clone(), bin, Vec::new());
    node.init(ADMIN_USER, ADMIN_PASSWORD, DEADLINE)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    node.spawn().unwrap_or_else(|e| panic!("{e:#}"));
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(3))
        .build()
        .expect("http client");
    let url = format!("http://{api}");
    let status: Value = poll_until("the LAN node to be ready", DEADLINE, || async {
        let ready = http.get(format!("{url}/readyz")).send().await;
        if !matches!(&ready, Ok(r) if r.status().is_success()) {
            return Err(format!("readyz: {ready:?}"));
        }
        http.get(format!("{url}/api/v1/cluster"))
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json::<Value>()
            .await
            .map_err(|e| e.to_string())
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", node.log_tail(40)));
    assert_eq!(
        status["nodes"][0]["insecure_plaintext"],
        Value::Bool(true),
        "{status}"
    );
    let log = std::fs::read_to_string(&spec.log_path).unwrap_or_default();
    let warned: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("node.insecure_plaintext"))
        .collect();
    assert_eq!(warned.len(), 1, "one WARN per start:\n{log}");

    let token_file = dir.path().join("ctl-token");
    let mut cmd = tokio::process::Command::new(&ctl);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("CONCLAVE_") {
            cmd.env_remove(key);
        }
    }
    let out = cmd
        .env("CONCLAVE_TOKEN_FILE", &token_file)
        .args(["--server", &url, "status"])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(DEADLINE, out)
        .await
        .expect("conclavectl status exits")
        .expect("run conclavectl");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("WARNING: insecure_plaintext = true on node(s) 1:")),
        "conclavectl status:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A restart warns again.
    node.terminate(Duration::from_secs(20))
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    node.spawn().unwrap_or_else(|e| panic!("{e:#}"));
    poll_until("the second start's warning", DEADLINE, || async {
        let log = std::fs::read_to_string(&spec.log_path).unwrap_or_default();
        let n = log
            .lines()
            .filter(|l| l.contains("WARN") && l.contains("node.insecure_plaintext"))
            .count();
        if n == 2 {
            Ok(())
        } else {
            Err(format!("{n} warnings"))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    drop(node);
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_forward_without_client_cert_creates_nothing() {
    let plain_secret = "aa".repeat(32);
    let body = bincode::serialize(&forged_commands(&plain_secret)).expect("encode");

    // The control: a plain node (loopback, as only plain nodes may be) applies the forgery.
    // This is why plain HTTP is refused on any other address.
    let plain = TestCluster::start(1).await;
    let (status, answer) = raw_post(tcp(plain.cluster_addr(1)).await, PATH_FORWARD, &body, None)
        .await
        .unwrap_or_else(|e| plain.fail(&e));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    let reply: ForwardReply = bincode::deserialize(&answer).expect("a ForwardReply");
    assert!(reply.is_ok(), "{reply:?}");
    assert_eq!(
        users_with(&plain, 1, &bearer(&plain_secret)).await,
        (200, true),
        "the control forgery works: a session and an admin user out of thin air"
    );
    drop(plain);

    // TLS: the same bytes, from a host without a certificate of the cluster CA.
    let tls = TestCluster::start_with(1, ClusterOptions::default().tls()).await;
    let addr = tls.cluster_addr(1);
    let secret = "bb".repeat(32);
    let body = bincode::serialize(&forged_commands(&secret)).expect("encode");
    let server_name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let over_tls = match attacker_tls().connect(server_name, tcp(addr).await).await {
        Ok(stream) => raw_post(stream, PATH_FORWARD, &body, None).await,
        Err(e) => Err(format!("handshake: {e}")),
    };
    assert!(
        over_tls.is_err(),
        "a TLS client without a certificate got an answer: {over_tls:?}"
    );
    let over_plain = raw_post(tcp(addr).await, PATH_FORWARD, &body, None).await;
    assert!(
        over_plain.is_err(),
        "plain HTTP to the TLS cluster port got an answer: {over_plain:?}"
    );

    // Nothing was created: the token is unknown and the user does not exist.
    let admin = tls.admin_token().to_owned();
    let (status, forged_user) = users_with(&tls, 1, &admin).await;
    assert_eq!(status, 200);
    assert!(!forged_user, "the forged admin user exists");
    assert_eq!(users_with(&tls, 1, &bearer(&secret)).await.0, 401);
    let login = tls
        .http()
        .post(format!("{}/api/v1/login", tls.url(1)))
        .json(&serde_json::json!({"username": FORGED_USER, "password": "anything-at-all"}))
        .send()
        .await
        .unwrap_or_else(|e| tls.fail(&format!("login: {e}")));
    assert_eq!(login.status().as_u16(), 401);

    // Both refusals are security events naming the source.
    let refused = poll_until("two peer.cert_refused events", DEADLINE, || async {
        let lines = event_lines(&tls, 1, "peer.cert_refused");
        if lines.len() >= 2 {
            Ok(lines)
        } else {
            Err(format!("{} so far", lines.len()))
        }
    })
    .await
    .unwrap_or_else(|e| tls.fail(&format!("{e:#}")));
    for line in &refused {
        assert!(
            line.contains("WARN") && line.contains("source=127."),
            "event without its fields: {line}"
        );
    }

    // The plain port of a TLS node serves no API: only redirects (and the trust page, health).
    let plain_port = tls.plain_url(1);
    let no_redirects = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    for (method, path) in [
        (reqwest::Method::GET, "/api/v1/cluster"),
        (reqwest::Method::GET, "/api/v1/users"),
        (reqwest::Method::POST, "/api/v1/login"),
        (reqwest::Method::GET, "/api/v1/ws"),
    ] {
        let resp = no_redirects
            .request(method.clone(), format!("{plain_port}{path}"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap_or_else(|e| tls.fail(&format!("{method} {path}: {e}")));
        assert!(
            resp.status().is_redirection(),
            "{method} {path} on the plain port: {}",
            resp.status()
        );
        let location = resp
            .headers()
            .get("location")
            .and_then(|l| l.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(location.starts_with("https://"), "{path}: {location}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn lying_length_prefix_is_refused_without_memory_growth() {
    const GIB: u64 = 1 << 30;
    let cluster = TestCluster::start(1).await;
    let addr = cluster.cluster_addr(1);
    let pid = cluster.node(1).pid().expect("node 1 runs");

    // A ForwardRequest with one CreateUser whose username claims 1 GiB, and one whose command
    // list claims 2^30 commands; both bodies are a few dozen bytes.
    let honest = bincode::serialize(&forged_commands("x")).expect("encode");
    let mut long_string = Vec::new();
    long_string.extend_from_slice(&1u64.to_le_bytes()); // one command
    long_string.extend_from_slice(&honest[8..12]); // its variant (CreateSession's index)
    long_string.extend_from_slice(&GIB.to_le_bytes()); // token_hash: "1 GiB follows"
    long_string.extend_from_slice(b"not really");
    let mut many = Vec::new();
    many.extend_from_slice(&GIB.to_le_bytes());
    many.extend_from_slice(&honest[8..]);

    let before = vm_rss_kib(pid);
    for round in 0..20 {
        for (what, body) in [("string", &long_string), ("sequence", &many)] {
            let (status, answer) = raw_post(tcp(addr).await, PATH_FORWARD, body, None)
                .await
                .unwrap_or_else(|e| cluster.fail(&format!("{what} #{round}: {e}")));
            let text = String::from_utf8_lossy(&answer);
            assert_eq!(status, 400, "{what}: {text}");
            if what == "string" {
                // The decoder's limit, not the end of the input, stopped it.
                assert!(text.contains("size limit"), "{what}: {text}");
            }
        }
        // An HTTP body announced as 1 GiB: refused before it is read.
        let (status, _) = raw_post(tcp(addr).await, PATH_FORWARD, b"abc", Some(GIB))
            .await
            .unwrap_or_else(|e| cluster.fail(&format!("content-length #{round}: {e}")));
        assert_eq!(status, 413, "content-length 1 GiB");
    }
    let after = vm_rss_kib(pid);
    assert!(
        after < before + 64 * 1024,
        "VmRSS grew from {before} KiB to {after} KiB"
    );
    assert!(cluster.node(1).is_running(), "node 1 crashed");
    assert!(cluster.readyz(1).await, "node 1 is no longer ready");
    // The honest encoding still goes through the same decoder.
    let (status, _) = raw_post(tcp(addr).await, PATH_FORWARD, &honest, None)
        .await
        .unwrap_or_else(|e| cluster.fail(&e));
    assert_eq!(status, 200);
    eprintln!("VmRSS before {before} KiB, after {after} KiB");
}
