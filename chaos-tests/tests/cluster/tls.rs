//! TLS wired into real nodes: HTTPS for clients, the plain-HTTP port, and mutual TLS
//! on the cluster port, against 3-node clusters started with `ClusterOptions::tls` (node 1's
//! certificate from `conclave init`, nodes 2 and 3 from `conclave provision`).
//!
//! - `https_plain_port_and_mutual_tls`: a client trusting only the cluster root logs in and
//!   posts through every node over HTTPS, and every node lists every node's `https_addr`; a
//!   client trusting nothing is refused; `curl --cacert root.pem` works; the plain port
//!   redirects the API (301) and serves the trust page (with the fingerprint), `/ca.crt` and
//!   `/readyz`. On the cluster port (checked with `openssl s_client` sending a status request):
//!   no client certificate, a certificate from a foreign CA claiming a member's identity, are
//!   refused; a node certificate for member 2 issued through `POST /api/v1/ca/node-certs` is
//!   admitted, then refused once revoked (CRLs propagate); one for member 3 is refused once
//!   node 3 is removed. The leader is SIGKILLed: the others elect and replicate over mutual
//!   TLS, and the killed node restarts from its sealed key and catches up.
//! - `node_certificates_renew_without_dropping_connections`: with a 20 s node certificate
//!   lifetime, node 1 serves a new serial to new handshakes before the old one expires, while a
//!   WebSocket and an HTTPS keep-alive connection opened before the renewal keep working; the
//!   cluster still commits across renewed certificates; a client certificate that expired is
//!   refused on the cluster port; node 3, killed at the start and restarted once its own
//!   certificate has expired, renews it from its local CA state, is admitted and catches up.
//!
//! Needs `openssl` and `curl`. Every wait polls with a deadline.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use chaos_tests::cluster::{HTTPS_PORT, TLS_WORKSPACE};
use chaos_tests::{ClusterOptions, TestCluster};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);

/// Runs a command (bounded by coreutils `timeout`) with `stdin`, returning (success, stdout,
/// stderr). Blocking: call from `spawn_blocking`.
fn run(args: &[&str], stdin: &[u8]) -> (bool, String, String) {
    use std::io::Write;
    let mut child = Command::new("timeout")
        .arg("10")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
    if let Some(mut input) = child.stdin.take() {
        let _ = input.write_all(stdin);
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn run_async(args: Vec<String>, stdin: Vec<u8>) -> (bool, String, String) {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(&args, &stdin)
    })
    .await
    .unwrap()
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| (*x).to_owned()).collect()
}

/// A client certificate for `openssl s_client`: leaf, the chain above it, and the key.
struct ClientCert {
    leaf: PathBuf,
    chain: PathBuf,
    key: PathBuf,
    serial: String,
}

/// Asks node `via`'s cluster port for its status over mutual TLS, presenting `cert` (or none).
/// Returns whether a 200 came back, and the output for diagnostics.
async fn cluster_port_admits(
    cluster: &TestCluster,
    via: u64,
    cert: Option<&ClientCert>,
) -> (bool, String) {
    let ca = cluster.ca_file().unwrap().to_str().unwrap().to_owned();
    let mut args = s(&[
        "openssl",
        "s_client",
        "-quiet",
        "-verify_return_error",
        "-connect",
    ]);
    args.push(cluster.cluster_addr(via).to_string());
    args.extend(s(&["-CAfile", &ca]));
    if let Some(c) = cert {
        args.extend([
            "-cert".into(),
            c.leaf.display().to_string(),
            "-cert_chain".into(),
            c.chain.display().to_string(),
            "-key".into(),
            c.key.display().to_string(),
        ]);
    }
    let req = b"GET /raft/v1/status HTTP/1.1\r\nHost: peer\r\nConnection: close\r\n\r\n".to_vec();
    let (_, out, err) = run_async(args, req).await;
    (out.contains("HTTP/1.1 200"), format!("{out}\n{err}"))
}

/// Polls until node `via`'s cluster port admits (`want`) or refuses `cert`.
async fn wait_admission(
    cluster: &TestCluster,
    via: u64,
    cert: Option<&ClientCert>,
    want: bool,
    what: &str,
    within: Duration,
) {
    cluster
        .wait_until(what, within, || async {
            let (admitted, out) = cluster_port_admits(cluster, via, cert).await;
            if admitted == want {
                Ok(())
            } else {
                Err(format!("admitted={admitted}: {}", tail(&out)))
            }
        })
        .await
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(6)..].join(" | ")
}

/// A fresh P-256 key and CSR in `dir`, named `name`.
async fn key_and_csr(dir: &Path, name: &str) -> (PathBuf, String) {
    let key = dir.join(format!("{name}.key"));
    let csr = dir.join(format!("{name}.csr"));
    let (ok, _, err) = run_async(
        s(&[
            "openssl",
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            "/CN=test",
            "-keyout",
            key.to_str().unwrap(),
            "-out",
            csr.to_str().unwrap(),
        ]),
        Vec::new(),
    )
    .await;
    assert!(ok, "openssl req: {err}");
    (key, std::fs::read_to_string(&csr).unwrap())
}

/// Splits a PEM chain into its first certificate and the rest.
fn split_chain(chain: &str) -> (String, String) {
    const END: &str = "-----END CERTIFICATE-----";
    let i = chain.find(END).expect("a certificate") + END.len();
    (
        format!("{}\n", chain[..i].trim()),
        chain[i..].trim_start().to_owned(),
    )
}

/// A node certificate for `node_id` issued by the cluster through the REST API (admin), for a
/// key generated here.
async fn issue_node_cert(cluster: &TestCluster, via: u64, node_id: u64, name: &str) -> ClientCert {
    let dir = cluster.root().join("tls-test");
    std::fs::create_dir_all(&dir).unwrap();
    let (key, csr) = key_and_csr(&dir, name).await;
    let resp = cluster
        .http()
        .post(format!("{}/api/v1/ca/node-certs", cluster.url(via)))
        .bearer_auth(cluster.admin_token())
        .json(&json!({"node_id": node_id, "csr_pem": csr}))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(status, 201, "node-certs: {body}");
    let (leaf_pem, rest) = split_chain(body["chain_pem"].as_str().unwrap());
    assert!(
        body["root_pem"]
            .as_str()
            .unwrap()
            .contains("BEGIN CERTIFICATE")
    );
    assert!(body["crl_pem"].as_str().unwrap().contains("X509 CRL"));
    let leaf = dir.join(format!("{name}.pem"));
    let chain = dir.join(format!("{name}-chain.pem"));
    std::fs::write(&leaf, leaf_pem).unwrap();
    std::fs::write(&chain, rest).unwrap();
    ClientCert {
        leaf,
        chain,
        key,
        serial: body["serial"].as_str().unwrap().to_owned(),
    }
}

/// A CA nobody trusts and a leaf from it claiming node `node_id`'s identity.
async fn foreign_cert(cluster: &TestCluster, node_id: u64) -> ClientCert {
    let dir = cluster.root().join("tls-foreign");
    std::fs::create_dir_all(&dir).unwrap();
    let p = |n: &str| dir.join(n).display().to_string();
    let steps: Vec<Vec<String>> = vec![
        s(&[
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=Foreign root",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout",
            &p("ca.key"),
            "-out",
            &p("ca.pem"),
        ]),
        s(&[
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=impostor",
            "-CA",
            &p("ca.pem"),
            "-CAkey",
            &p("ca.key"),
            "-addext",
            &format!("subjectAltName=DNS:{node_id}.nodes.{TLS_WORKSPACE}"),
            "-addext",
            "extendedKeyUsage=clientAuth,serverAuth",
            "-keyout",
            &p("leaf.key"),
            "-out",
            &p("leaf.pem"),
        ]),
    ];
    for step in steps {
        let (ok, _, err) = run_async(step, Vec::new()).await;
        assert!(ok, "openssl: {err}");
    }
    ClientCert {
        leaf: dir.join("leaf.pem"),
        chain: dir.join("ca.pem"),
        key: dir.join("leaf.key"),
        serial: String::new(),
    }
}

/// The serial (lower-case hex) node `id` presents to a new full handshake on its HTTPS port.
async fn https_serial(cluster: &TestCluster, id: u64) -> Result<String, String> {
    let ca = cluster.ca_file().unwrap().to_str().unwrap().to_owned();
    let addr = format!("{}:{HTTPS_PORT}", cluster.ip(id));
    let (_, out, err) = run_async(
        s(&[
            "openssl",
            "s_client",
            "-verify_return_error",
            "-connect",
            &addr,
            "-CAfile",
            &ca,
        ]),
        Vec::new(),
    )
    .await;
    let begin = out
        .find("-----BEGIN CERTIFICATE-----")
        .ok_or_else(|| format!("no certificate from {addr}: {}", tail(&err)))?;
    let (ok, serial, err) = run_async(
        s(&["openssl", "x509", "-noout", "-serial"]),
        out.as_bytes()[begin..].to_vec(),
    )
    .await;
    if !ok {
        return Err(err);
    }
    Ok(serial
        .trim()
        .trim_start_matches("serial=")
        .trim_start_matches('0')
        .to_ascii_lowercase())
}

async fn get_json(cluster: &TestCluster, url: String) -> (u16, Value) {
    // A node that is down (or restarting) answers nothing: status 0, for the caller's poll.
    let Ok(resp) = cluster
        .http()
        .get(url)
        .bearer_auth(cluster.admin_token())
        .send()
        .await
    else {
        return (0, Value::Null);
    };
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn post_via(cluster: &TestCluster, id: u64, channel: &str, body: &str) -> Result<(), String> {
    let resp = cluster
        .http()
        .post(format!(
            "{}/api/v1/channels/{channel}/messages",
            cluster.url(id)
        ))
        .bearer_auth(cluster.admin_token())
        .json(&json!({"body": body, "client_msg_id": body.replace(' ', "-")}))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    match resp.status().as_u16() {
        200 | 201 => Ok(()),
        s => Err(format!("{s}: {}", resp.text().await.unwrap_or_default())),
    }
}

/// Waits until node `id` has message `body` in `channel`.
async fn wait_message(cluster: &TestCluster, id: u64, channel: &str, body: &str) {
    cluster
        .wait_until(&format!("node {id} has {body:?}"), WAIT, || async {
            let (status, page) = get_json(
                cluster,
                format!(
                    "{}/api/v1/channels/{channel}/messages?after=0",
                    cluster.url(id)
                ),
            )
            .await;
            let found = page["messages"]
                .as_array()
                .is_some_and(|m| m.iter().any(|m| m["body"] == body));
            if found {
                Ok(())
            } else {
                Err(format!("{status} {page}"))
            }
        })
        .await
}

async fn create_channel(cluster: &TestCluster, name: &str) {
    cluster
        .wait_until(&format!("channel {name}"), WAIT, || async {
            let resp = cluster
                .http()
                .post(format!("{}/api/v1/channels", cluster.url(1)))
                .bearer_auth(cluster.admin_token())
                .json(&json!({"name": name}))
                .send()
                .await
                .map_err(|e| e.to_string())?;
            match resp.status().as_u16() {
                201 | 409 => Ok(()),
                s => Err(format!("{s}")),
            }
        })
        .await
}

/// A reqwest client trusting no root at all.
fn untrusting_client() -> reqwest::Client {
    reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .no_proxy()
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_plain_port_and_mutual_tls() {
    let cluster = TestCluster::start_with(3, ClusterOptions::default().tls()).await;
    let root_pem = std::fs::read_to_string(cluster.ca_file().unwrap()).unwrap();

    // HTTPS: log in and post through every node with a client trusting only the root.
    create_channel(&cluster, "tls").await;
    for id in 1..=3 {
        let token: Value = cluster
            .http()
            .post(format!("{}/api/v1/login", cluster.url(id)))
            .json(&json!({"username": chaos_tests::ADMIN_USER, "password": chaos_tests::ADMIN_PASSWORD}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(token["token"].is_string(), "login via node {id}: {token}");
        let body = format!("over https via {id}");
        cluster
            .wait_until(&format!("post via {id}"), WAIT, || {
                post_via(&cluster, id, "tls", &body)
            })
            .await;
        let (_, view) = get_json(&cluster, format!("{}/api/v1/cluster", cluster.url(id))).await;
        let https: Vec<String> = view["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|n| n["https_addr"].as_str().map(str::to_owned))
            .collect();
        assert_eq!(https.len(), 3, "https_addr of every node via {id}: {view}");
    }
    wait_message(&cluster, 2, "tls", "over https via 3").await;

    // A client that trusts nothing is refused at the handshake.
    let err = untrusting_client()
        .get(format!("{}/healthz", cluster.url(1)))
        .send()
        .await;
    assert!(err.is_err(), "an untrusting client got through: {err:?}");

    // curl with the root file.
    let ca = cluster.ca_file().unwrap().to_str().unwrap().to_owned();
    let (ok, out, err) = run_async(
        s(&[
            "curl",
            "-sS",
            "--noproxy",
            "*",
            "--cacert",
            &ca,
            &format!("{}/healthz", cluster.url(2)),
        ]),
        Vec::new(),
    )
    .await;
    assert!(ok && out.contains("ok"), "curl --cacert: {out} {err}");

    // The plain port: redirect, trust page, root downloads, readiness.
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    let r = plain
        .get(format!("{}/api/v1/cluster", cluster.plain_url(1)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 301);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(
        location,
        format!("{}/api/v1/cluster", cluster.url(1)),
        "redirect target"
    );
    let page = plain
        .get(format!("{}/", cluster.plain_url(1)))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let page = page.text().await.unwrap();
    let (_, fp) = get_json(
        &cluster,
        format!("{}/api/v1/ca/fingerprint", cluster.url(1)),
    )
    .await;
    assert!(
        // The page allows line breaks between byte pairs (`:<wbr>`).
        page.replace("<wbr>", "")
            .contains(fp["fingerprint"].as_str().unwrap()),
        "the trust page shows the root fingerprint"
    );
    let der = plain
        .get(format!("{}/ca.crt", cluster.plain_url(3)))
        .send()
        .await
        .unwrap();
    assert_eq!(der.status(), 200);
    assert_eq!(der.bytes().await.unwrap()[0], 0x30, "DER");
    let pem = plain
        .get(format!("{}/ca.pem", cluster.plain_url(2)))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(pem.trim(), root_pem.trim());
    let ready = plain
        .get(format!("{}/readyz", cluster.plain_url(2)))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);

    // Mutual TLS on the cluster port.
    let (admitted, out) = cluster_port_admits(&cluster, 1, None).await;
    assert!(!admitted, "no client certificate was admitted: {out}");
    let foreign = foreign_cert(&cluster, 2).await;
    let (admitted, out) = cluster_port_admits(&cluster, 1, Some(&foreign)).await;
    assert!(!admitted, "a foreign CA's certificate was admitted: {out}");
    let as2 = issue_node_cert(&cluster, 2, 2, "member2").await;
    wait_admission(
        &cluster,
        1,
        Some(&as2),
        true,
        "member 2's certificate admitted",
        WAIT,
    )
    .await;
    let as3 = issue_node_cert(&cluster, 1, 3, "member3").await;
    wait_admission(
        &cluster,
        1,
        Some(&as3),
        true,
        "member 3's certificate admitted",
        WAIT,
    )
    .await;

    // Revoked: refused once the CRL reached node 1's cluster port.
    let r = cluster
        .http()
        .post(format!(
            "{}/api/v1/ca/certs/{}/revoke",
            cluster.url(3),
            as2.serial
        ))
        .bearer_auth(cluster.admin_token())
        .json(&json!({"reason": "key_compromise"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "revoke");
    wait_admission(
        &cluster,
        1,
        Some(&as2),
        false,
        "a revoked certificate refused",
        WAIT,
    )
    .await;
    // Node 2 itself (another serial) still replicates.
    create_channel(&cluster, "after-revoke").await;
    cluster
        .wait_until("post via 2 after the revocation", WAIT, || {
            post_via(&cluster, 2, "after-revoke", "still a member")
        })
        .await;

    // SIGKILL the leader: the rest elect and replicate over mutual TLS; it comes back.
    let leader = cluster.wait_for_leader(&[]).await;
    cluster.kill(leader);
    let new_leader = cluster.wait_for_leader(&[leader]).await;
    assert_ne!(new_leader, leader);
    let other = (1..=3).find(|i| *i != leader && *i != new_leader).unwrap();
    cluster
        .wait_until("post after the leader was killed", WAIT, || {
            post_via(&cluster, other, "tls", "after the kill")
        })
        .await;
    wait_message(&cluster, new_leader, "tls", "after the kill").await;
    cluster.restart(leader).await;
    cluster.wait_all_ready().await;
    wait_message(&cluster, leader, "tls", "after the kill").await;

    // Removed: node 3 leaves; a certificate naming it is refused from then on.
    let survivor = if cluster.wait_for_leader(&[]).await == 3 {
        2
    } else {
        1
    };
    let r = cluster
        .http()
        .delete(format!("{}/api/v1/cluster/nodes/3", cluster.url(survivor)))
        .bearer_auth(cluster.admin_token())
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "remove node 3: {}", r.status());
    wait_admission(
        &cluster,
        survivor,
        Some(&as3),
        false,
        "a removed node's certificate refused",
        WAIT,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_certificates_renew_without_dropping_connections() {
    let cluster = TestCluster::start_with(
        3,
        ClusterOptions::default().tls_field("node_cert_secs", "20"),
    )
    .await;
    // Node 3 goes down now and stays down until its certificate has expired: at restart it
    // must renew from its local CA state and rejoin (checked at the end).
    cluster.kill(3);
    // Issued now, expired in 20 s: checked at the end.
    let short = issue_node_cert(&cluster, 1, 2, "short").await;
    wait_admission(
        &cluster,
        1,
        Some(&short),
        true,
        "a fresh node certificate admitted",
        WAIT,
    )
    .await;

    // Connections opened before the renewal.
    let mut ws = cluster.ws_connect(1).await.unwrap();
    ws.auth(cluster.admin_token()).await.unwrap();
    let ca = cluster.ca_file().unwrap().to_str().unwrap().to_owned();
    let addr = format!("{}:{HTTPS_PORT}", cluster.ip(1));
    let mut keepalive = tokio::process::Command::new("openssl")
        .args([
            "s_client",
            "-quiet",
            "-verify_return_error",
            "-connect",
            &addr,
            "-CAfile",
            &ca,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut ka_in = keepalive.stdin.take().unwrap();
    let mut ka_out = keepalive.stdout.take().unwrap();
    let req = b"GET /healthz HTTP/1.1\r\nHost: node1\r\n\r\n";
    async fn read_response(out: &mut tokio::process::ChildStdout) -> String {
        use tokio::io::AsyncReadExt;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let text = String::from_utf8_lossy(&buf).into_owned();
            // The health body is a small JSON object: done once it is complete.
            if text.contains("HTTP/1.1") && text.trim_end().ends_with('}') {
                return text;
            }
            match tokio::time::timeout_at(deadline, out.read(&mut chunk)).await {
                Ok(Ok(0)) | Err(_) => return text,
                Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
                Ok(Err(_)) => return text,
            }
        }
    }
    {
        use tokio::io::AsyncWriteExt;
        ka_in.write_all(req).await.unwrap();
        ka_in.flush().await.unwrap();
    }
    let first = read_response(&mut ka_out).await;
    assert!(
        first.contains("HTTP/1.1 200"),
        "keep-alive first answer: {first}"
    );

    let before = https_serial(&cluster, 1).await.unwrap();
    let after = cluster
        .wait_until(
            "node 1 renews its certificate",
            Duration::from_secs(30),
            || async {
                match https_serial(&cluster, 1).await {
                    Ok(serial) if serial != before => Ok(serial),
                    Ok(serial) => Err(format!("still {serial}")),
                    Err(e) => Err(e),
                }
            },
        )
        .await;
    assert_ne!(before, after);

    // The keep-alive connection answers again on the old session.
    {
        use tokio::io::AsyncWriteExt;
        ka_in.write_all(req).await.unwrap();
        ka_in.flush().await.unwrap();
    }
    let second = read_response(&mut ka_out).await;
    assert!(
        second.contains("HTTP/1.1 200"),
        "keep-alive answer after the renewal: {second}"
    );
    // The WebSocket is still open: a message posted now arrives on it.
    create_channel(&cluster, "renewal").await;
    cluster
        .wait_until("post after the renewal", WAIT, || {
            post_via(&cluster, 2, "renewal", "after renewal")
        })
        .await;
    wait_message(&cluster, 1, "renewal", "after renewal").await;
    assert!(
        ws.close_code().is_none(),
        "the WebSocket was closed: {:?}",
        ws.close_info()
    );
    let frame = ws.next_text(Duration::from_secs(5)).await;
    assert!(
        matches!(frame, Ok(_) | Err(ops::WsError::Timeout(_))),
        "the WebSocket did not survive the renewal: {frame:?}"
    );

    // The certificate issued at the start has expired by now (or will within seconds).
    wait_admission(
        &cluster,
        1,
        Some(&short),
        false,
        "an expired certificate refused",
        Duration::from_secs(30),
    )
    .await;
    drop(ka_in);
    let _ = keepalive.kill().await;

    // Node 3's certificate expired while it was down; it starts anyway, renews from local
    // state, is admitted again and catches up.
    let chain = cluster
        .node(3)
        .spec
        .data_dir
        .join("tls")
        .join("node-chain.pem");
    let chain = chain.to_str().unwrap().to_owned();
    cluster
        .wait_until(
            "node 3's certificate to expire",
            Duration::from_secs(30),
            || async {
                let (valid, out, _) = run_async(
                    s(&["openssl", "x509", "-noout", "-checkend", "0", "-in", &chain]),
                    Vec::new(),
                )
                .await;
                if valid { Err(out) } else { Ok(()) }
            },
        )
        .await;
    cluster.restart(3).await;
    cluster
        .wait_until("post through the restarted node 3", WAIT, || {
            post_via(&cluster, 3, "renewal", "node 3 is back")
        })
        .await;
    wait_message(&cluster, 3, "renewal", "node 3 is back").await;
    wait_message(&cluster, 1, "renewal", "node 3 is back").await;

    // Every node now holds at least two generations of its own key (issued, then renewed at
    // least once): none of them, nor anything else, is in the clear under any data dir.
    let mut files = Vec::new();
    for id in cluster.ids() {
        let dir = cluster.node(id).spec.data_dir.clone();
        assert!(
            dir.join("tls").join("node-key.sealed").is_file(),
            "node {id} has no sealed key"
        );
        super::ca::files_under(&dir, &mut files);
    }
    let mut bad = Vec::new();
    for f in &files {
        let Ok(bytes) = std::fs::read(f) else {
            continue;
        };
        for (what, needle) in [
            ("a PEM private key marker", b"PRIVATE KEY".as_slice()),
            ("a PKCS#8 EC private key", super::ca::PKCS8_EC_HEADER),
            ("a SEC1 EC private key", super::ca::SEC1_EC_HEADER),
        ] {
            if super::ca::contains(&bytes, needle) {
                bad.push(format!("{} holds {what}", f.display()));
            }
        }
    }
    assert!(!files.is_empty(), "nothing scanned");
    assert!(bad.is_empty(), "private keys in the clear: {bad:?}");
}
