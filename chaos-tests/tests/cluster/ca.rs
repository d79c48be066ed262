//! The built-in certificate authority against a real 3-node cluster, checked with the
//! `openssl` command line:
//! - `ca_lifecycle_through_ctl`: `conclave init` created the KEK file outside every data dir;
//!   every node serves the same root (PEM, DER, Apple profile) matching the fingerprint;
//!   `conclavectl ca issue` through one node gives a chain `openssl verify` accepts, with the
//!   key (0600) matching the certificate; names outside the constraints (another zone, an
//!   address outside the ranges, the reserved workspace name) are refused with exit 1 and one
//!   line, and issue nothing; another node lists the certificate; a revocation through one
//!   node shows in the CRL served by a third and fails `openssl verify -crl_check` while a
//!   sibling certificate passes; a garbage CSR is 400 `invalid_request` and a second `ca init`
//!   is refused (`ca_exists`); `export-root-key` works once (0600 file, second attempt
//!   refused and leaves no file) and every node then compacts its log; issuing goes on; `renew-intermediate` refuses a wrong key,
//!   accepts the right one, and old and new certificates verify; non-admins get 403;
//!   finally no file under any data dir holds a private key in the clear (PEM markers,
//!   PKCS#8 EC key headers, the exported root key's DER), while the same scan does find the
//!   root certificate (so it reads the right files);
//! - `ca_routes_without_a_workspace`: a node configured without a workspace answers the CA
//!   routes with 503 `ca_unavailable`.
//!
//! Every wait polls with a deadline.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use chaos_tests::{ADMIN_PASSWORD, ClusterOptions, TestCluster};
use serde_json::Value;

use super::ctl::{Ctl, expect_failure, expect_ok};
use super::util::send;

const WS: &str = "chat.ca.test";
const WAIT: Duration = Duration::from_secs(20);
const MEMBER: &str = "ca-member";
const MEMBER_PASSWORD: &str = "long-pass-phrase-1";

/// The header of a PKCS#8 EC P-256 private key: its AlgorithmIdentifier followed by the OCTET
/// STRING that wraps the key (a certificate's SubjectPublicKeyInfo has a BIT STRING there).
pub(crate) const PKCS8_EC_HEADER: &[u8] = &[
    0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48,
    0xce, 0x3d, 0x03, 0x01, 0x07, 0x04,
];
/// SEC1 `ECPrivateKey` for P-256 starts like this (version 1, 32-byte OCTET STRING).
pub(crate) const SEC1_EC_HEADER: &[u8] = &[0x30, 0x77, 0x02, 0x01, 0x01, 0x04, 0x20];

fn openssl(cluster: &TestCluster, args: &[&str]) -> std::process::Output {
    Command::new("openssl")
        .args(args)
        .output()
        .unwrap_or_else(|e| cluster.fail(&format!("cannot run openssl (install it): {e}")))
}

fn openssl_ok(cluster: &TestCluster, args: &[&str]) -> String {
    let out = openssl(cluster, args);
    if !out.status.success() {
        cluster.fail(&format!(
            "openssl {} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 temp path")
}

/// `openssl verify` of `dir/cert.pem` against `root`, with `dir/chain.pem` as untrusted
/// intermediates and, if given, the CRLs (leaf revocation checked).
fn verify(cluster: &TestCluster, root: &Path, dir: &Path, crl: Option<&Path>) -> (bool, String) {
    let cert = dir.join("cert.pem");
    let chain = dir.join("chain.pem");
    let mut args = vec!["verify", "-CAfile", p(root), "-untrusted", p(&chain)];
    if let Some(crl) = crl {
        args.extend(["-crl_check", "-CRLfile", p(crl)]);
    }
    args.push(p(&cert));
    let out = openssl(cluster, &args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success() && text.contains(": OK"), text)
}

fn fingerprint_of(cluster: &TestCluster, file: &Path, der: bool) -> String {
    let mut args = vec!["x509", "-noout", "-fingerprint", "-sha256", "-in", p(file)];
    if der {
        args.extend(["-inform", "DER"]);
    }
    let out = openssl_ok(cluster, &args);
    out.trim()
        .split_once('=')
        .map(|(_, fp)| fp.to_owned())
        .unwrap_or_else(|| cluster.fail(&format!("no fingerprint in {out:?}")))
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).expect("stat").permissions().mode() & 0o777
}

pub(crate) fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

pub(crate) fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_lifecycle_through_ctl() {
    let bin = Ctl::locate();
    let opts = ClusterOptions::default()
        .top_level("workspace", &format!("\"{WS}\""))
        .top_level(
            "ca",
            "{ permitted_ip_ranges = [\"10.0.0.0/8\", \"127.0.0.0/8\"], service_cert_days = 30 }",
        );
    let cluster = TestCluster::start_with(3, opts).await;
    let ctl = Ctl::new(bin, &cluster);
    let work = cluster.root().join("ca-work");
    std::fs::create_dir_all(&work).unwrap();
    let data_dirs: Vec<PathBuf> = cluster
        .ids()
        .iter()
        .map(|id| cluster.node(*id).spec.data_dir.clone())
        .collect();

    // ---- the KEK file: created by init next to the configs, 0600, outside every data dir ----
    let kek = cluster.root().join("conclave.kek");
    if !kek.is_file() {
        cluster.fail(&format!("init did not create {}", kek.display()));
    }
    #[cfg(unix)]
    assert_eq!(mode(&kek), 0o600, "KEK file mode");
    for d in &data_dirs {
        assert!(
            !kek.starts_with(d),
            "KEK {} is under {}",
            kek.display(),
            d.display()
        );
    }

    let (u1, u2, u3) = (cluster.url(1), cluster.url(2), cluster.url(3));
    expect_ok(&cluster, &ctl.login(&u1).await);

    // ---- one root everywhere, in three formats, matching the fingerprint ----
    let mut fingerprints = Vec::new();
    for id in cluster.ids() {
        let raw = send(
            cluster
                .http()
                .get(format!("{}/api/v1/ca/fingerprint", cluster.url(id))),
        )
        .await;
        assert_eq!(raw.status, 200, "node {id}: {}", raw.body);
        let v: Value = serde_json::from_str(&raw.body).unwrap();
        assert_eq!(v["workspace"], WS);
        assert_eq!(v["root_key_online"], true);
        fingerprints.push(v["fingerprint"].as_str().unwrap().to_owned());
    }
    assert!(
        fingerprints.iter().all(|f| *f == fingerprints[0]),
        "{fingerprints:?}"
    );
    let fp = fingerprints[0].clone();
    let out = ctl.run(&["--server", &u2, "ca", "fingerprint"]).await;
    let text = expect_ok(&cluster, &out);
    assert!(
        text.contains(&format!("root CA SHA-256 fingerprint: {fp}")),
        "{text}"
    );

    let root = work.join("root.pem");
    let root_der = work.join("root.crt");
    let profile = work.join("root.mobileconfig");
    for (format, file) in [
        ("pem", &root),
        ("der", &root_der),
        ("mobileconfig", &profile),
    ] {
        let out = ctl
            .run(&[
                "--server",
                &u3,
                "ca",
                "root",
                "--format",
                format,
                "--out",
                p(file),
            ])
            .await;
        expect_ok(&cluster, &out);
    }
    assert_eq!(fingerprint_of(&cluster, &root, false), fp);
    assert_eq!(fingerprint_of(&cluster, &root_der, true), fp);
    let b64 = openssl_ok(&cluster, &["base64", "-A", "-in", p(&root_der)]);
    let profile_text = std::fs::read_to_string(&profile).unwrap();
    let data: String = profile_text
        .split("<data>")
        .nth(1)
        .and_then(|rest| rest.split("</data>").next())
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        data,
        b64.trim(),
        "the Apple profile must carry the same root"
    );
    // A phone's download gets the right content type.
    let raw = cluster
        .http()
        .get(format!("{u1}/api/v1/ca/root.mobileconfig"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        raw.headers()["content-type"],
        "application/x-apple-aspen-config"
    );

    // ---- issue through node 1; openssl accepts the chain; the key matches ----
    let wiki = work.join("wiki");
    let name = format!("wiki.{WS}");
    let out = ctl
        .run(&[
            "--server",
            &u1,
            "--json",
            "ca",
            "issue",
            "--dns",
            &name,
            "--ip",
            "10.1.2.3",
            "--out",
            p(&wiki),
        ])
        .await;
    let issued: Value = serde_json::from_str(expect_ok(&cluster, &out)).unwrap();
    let serial = issued["serial"].as_str().unwrap().to_owned();
    let (ok, text) = verify(&cluster, &root, &wiki, None);
    assert!(ok, "openssl verify: {text}");
    #[cfg(unix)]
    assert_eq!(mode(&wiki.join("key.pem")), 0o600);
    let cert_pub = openssl_ok(
        &cluster,
        &[
            "x509",
            "-noout",
            "-pubkey",
            "-in",
            p(&wiki.join("cert.pem")),
        ],
    );
    let key_pub = openssl_ok(
        &cluster,
        &["pkey", "-pubout", "-in", p(&wiki.join("key.pem"))],
    );
    assert_eq!(cert_pub, key_pub, "key.pem does not belong to cert.pem");
    let sans = openssl_ok(
        &cluster,
        &[
            "x509",
            "-noout",
            "-ext",
            "subjectAltName",
            "-in",
            p(&wiki.join("cert.pem")),
        ],
    );
    assert!(sans.contains(&name) && sans.contains("10.1.2.3"), "{sans}");
    // How openssl prints this serial (in the CRL too).
    let ossl_serial = openssl_ok(
        &cluster,
        &[
            "x509",
            "-noout",
            "-serial",
            "-in",
            p(&wiki.join("cert.pem")),
        ],
    );
    let ossl_serial = ossl_serial.trim().trim_start_matches("serial=").to_owned();

    // ---- refusals: one line, exit 1, nothing issued ----
    let refused = [
        (
            vec!["--dns", "wiki.example.com"],
            vec!["wiki.example.com", WS],
        ),
        (
            vec!["--dns", "db.chat.ca.test", "--ip", "192.168.7.7"],
            vec!["192.168.7.7", "10.0.0.0/8"],
        ),
        (vec!["--dns", WS], vec![WS, "reserved"]),
    ];
    for (i, (args, words)) in refused.iter().enumerate() {
        let dir = work.join(format!("refused-{i}"));
        let mut cmd = vec!["--server", u1.as_str(), "ca", "issue"];
        cmd.extend(args.iter().copied());
        cmd.extend(["--out", p(&dir)]);
        let out = ctl.run(&cmd).await;
        let line = expect_failure(&cluster, &out, 1, "conclavectl: error: ");
        for w in words {
            assert!(line.contains(w), "refusal line should name {w:?}: {line}");
        }
        assert!(!dir.join("key.pem").exists(), "a refused issue wrote a key");
    }

    // ---- another node lists exactly the one certificate ----
    let listed: Vec<Value> = cluster
        .wait_until("node 2 lists the certificate", WAIT, || async {
            let out = ctl.run(&["--server", &u2, "--json", "ca", "list"]).await;
            let v: Value =
                serde_json::from_str(&out.stdout).map_err(|e| format!("{e}: {}", out.stdout))?;
            let certs = v.as_array().cloned().unwrap_or_default();
            if certs.iter().any(|c| c["serial"] == serial.as_str()) {
                Ok::<_, String>(certs)
            } else {
                Err(format!("listed: {v}"))
            }
        })
        .await;
    assert_eq!(
        listed.len(),
        1,
        "refused requests must issue nothing: {listed:?}"
    );

    // ---- a sibling that stays valid, then revoke the first through node 1 ----
    let docs = work.join("docs");
    let docs_name = format!("docs.{WS}");
    expect_ok(
        &cluster,
        &ctl.run(&[
            "--server",
            &u1,
            "ca",
            "issue",
            "--dns",
            &docs_name,
            "--out",
            p(&docs),
        ])
        .await,
    );
    let out = ctl
        .run(&[
            "--server",
            &u1,
            "ca",
            "revoke",
            &serial,
            "--reason",
            "key_compromise",
        ])
        .await;
    expect_ok(&cluster, &out);
    let crl = work.join("crl.pem");
    cluster
        .wait_until("node 3's CRL lists the revoked serial", WAIT, || async {
            let raw = send(cluster.http().get(format!("{u3}/api/v1/ca/crl.pem"))).await;
            if raw.status != 200 {
                return Err(format!("HTTP {}: {}", raw.status, raw.body));
            }
            std::fs::write(&crl, &raw.body).unwrap();
            let mut listed = false;
            for block in raw.body.split_inclusive("-----END X509 CRL-----\n") {
                let f = work.join("one-crl.pem");
                std::fs::write(&f, block).unwrap();
                let text = openssl_ok(&cluster, &["crl", "-noout", "-text", "-in", p(&f)]);
                listed |= text.contains(&ossl_serial);
            }
            if listed {
                Ok(())
            } else {
                Err("not listed yet".to_owned())
            }
        })
        .await;
    let (ok, text) = verify(&cluster, &root, &wiki, Some(&crl));
    assert!(
        !ok && text.contains("revoked"),
        "a revoked certificate verified: {text}"
    );
    let (ok, text) = verify(&cluster, &root, &docs, Some(&crl));
    assert!(ok, "a valid certificate failed the CRL check: {text}");

    // ---- a CSR that does not parse is invalid_request; a second CA is refused ----
    let raw = send(
        cluster
            .http()
            .post(format!("{u3}/api/v1/ca/sign"))
            .bearer_auth(cluster.admin_token())
            .json(&serde_json::json!({ "csr_pem": "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n" })),
    )
    .await;
    assert_eq!(
        (raw.status, raw.code.as_deref()),
        (400, Some("invalid_request")),
        "{}",
        raw.body
    );
    let out = ctl.run(&["--server", &u2, "ca", "init"]).await;
    let line = expect_failure(&cluster, &out, 1, "conclavectl: error: ");
    assert!(line.contains("ca_exists"), "{line}");

    // ---- non-admins are refused ----
    let admin = cluster.client(1);
    admin
        .create_user(MEMBER, MEMBER_PASSWORD, ops::Role::Member)
        .await
        .expect("create member");
    let member = cluster.login_client(2, MEMBER, MEMBER_PASSWORD).await;
    let token = member.token().unwrap().to_owned();
    for (method, path) in [
        ("GET", "/api/v1/ca/certs"),
        ("POST", "/api/v1/ca/export-root-key"),
        ("POST", "/api/v1/ca/init"),
    ] {
        let req = match method {
            "GET" => cluster.http().get(format!("{u2}{path}")),
            _ => cluster.http().post(format!("{u2}{path}")),
        };
        let raw = send(req.bearer_auth(&token)).await;
        assert_eq!(
            (raw.status, raw.code.as_deref()),
            (403, Some("forbidden")),
            "{path}: {}",
            raw.body
        );
    }
    let raw = send(
        cluster
            .http()
            .post(format!("{u2}/api/v1/ca/sign"))
            .bearer_auth(&token)
            .json(&serde_json::json!({ "csr_pem": "x" })),
    )
    .await;
    assert_eq!(raw.status, 403, "{}", raw.body);

    // ---- the root key goes offline once ----
    let root_key = work.join("root-key.pem");
    let out = ctl
        .run_env(
            &[
                "--server",
                &u2,
                "ca",
                "export-root-key",
                "--out",
                p(&root_key),
            ],
            &[("CONCLAVE_PASSWORD", ADMIN_PASSWORD)],
        )
        .await;
    expect_ok(&cluster, &out);
    #[cfg(unix)]
    assert_eq!(mode(&root_key), 0o600);
    assert!(
        std::fs::read_to_string(&root_key)
            .unwrap()
            .contains("PRIVATE KEY")
    );
    let again = work.join("root-key-again.pem");
    let out = ctl
        .run_env(
            &["--server", &u3, "ca", "export-root-key", "--out", p(&again)],
            &[("CONCLAVE_PASSWORD", ADMIN_PASSWORD)],
        )
        .await;
    let line = expect_failure(&cluster, &out, 1, "conclavectl: error: ");
    assert!(line.contains("root key"), "{line}");
    assert!(!again.exists(), "a refused export left a file behind");
    let out = ctl.run(&["--server", &u3, "ca", "fingerprint"]).await;
    assert!(expect_ok(&cluster, &out).contains("offline"));
    // Every node compacts its log once it sees the root key leave the state.
    cluster
        .wait_until(
            "every node compacted its log after the export",
            WAIT,
            || async {
                let pending: Vec<u64> = cluster
                    .ids()
                    .into_iter()
                    .filter(|id| {
                        !cluster
                            .node(*id)
                            .log_tail(100_000)
                            .contains("the root key left the CA state")
                    })
                    .collect();
                if pending.is_empty() {
                    Ok(())
                } else {
                    Err(format!("not yet on nodes {pending:?}"))
                }
            },
        )
        .await;
    for d in &data_dirs {
        assert!(
            d.join("snapshot.bin").is_file(),
            "no snapshot in {}",
            d.display()
        );
    }
    let out = ctl
        .run_env(
            &[
                "--server",
                &u1,
                "ca",
                "export-root-key",
                "--out",
                p(&root_key),
            ],
            &[("CONCLAVE_PASSWORD", ADMIN_PASSWORD)],
        )
        .await;
    expect_failure(&cluster, &out, 1, "conclavectl: error: ");

    // ---- issuing goes on without the root key ----
    let after = work.join("after-export");
    expect_ok(
        &cluster,
        &ctl.run(&[
            "--server",
            &u3,
            "ca",
            "issue",
            "--dns",
            &format!("git.{WS}"),
            "--out",
            p(&after),
        ])
        .await,
    );
    assert!(verify(&cluster, &root, &after, None).0);

    // ---- renewal: a wrong key is refused, the right one works, old certificates verify ----
    let wrong = work.join("wrong-key.pem");
    openssl_ok(
        &cluster,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            p(&wrong),
        ],
    );
    let out = ctl
        .run_env(
            &[
                "--server",
                &u1,
                "ca",
                "renew-intermediate",
                "--root-key",
                p(&wrong),
            ],
            &[("CONCLAVE_PASSWORD", ADMIN_PASSWORD)],
        )
        .await;
    let line = expect_failure(&cluster, &out, 1, "conclavectl: error: ");
    assert!(line.contains("does not match"), "{line}");
    let before: Value = serde_json::from_str(
        &send(cluster.http().get(format!("{u1}/api/v1/ca/fingerprint")))
            .await
            .body,
    )
    .unwrap();
    let out = ctl
        .run_env(
            &[
                "--server",
                &u1,
                "ca",
                "renew-intermediate",
                "--root-key",
                p(&root_key),
            ],
            &[("CONCLAVE_PASSWORD", ADMIN_PASSWORD)],
        )
        .await;
    expect_ok(&cluster, &out);
    let renewed: Value = cluster
        .wait_until("node 3 uses the new issuing CA", WAIT, || async {
            let raw = send(cluster.http().get(format!("{u3}/api/v1/ca/fingerprint"))).await;
            let v: Value = serde_json::from_str(&raw.body).map_err(|e| e.to_string())?;
            if v["intermediate_serial"] != before["intermediate_serial"] {
                Ok(v)
            } else {
                Err(format!("still {v}"))
            }
        })
        .await;
    assert_eq!(
        renewed["fingerprint"],
        fp.as_str(),
        "the root must not change"
    );
    assert_eq!(
        renewed["root_key_online"], false,
        "renewal must not put the root key back"
    );
    let new_cert = work.join("after-renewal");
    expect_ok(
        &cluster,
        &ctl.run(&[
            "--server",
            &u2,
            "ca",
            "issue",
            "--dns",
            &format!("mail.{WS}"),
            "--out",
            p(&new_cert),
        ])
        .await,
    );
    let raw = send(cluster.http().get(format!("{u2}/api/v1/ca/crl.pem"))).await;
    std::fs::write(&crl, &raw.body).unwrap();
    for dir in [&docs, &after, &new_cert] {
        let (ok, text) = verify(&cluster, &root, dir, Some(&crl));
        assert!(ok, "{}: {text}", dir.display());
    }
    let (ok, _) = verify(&cluster, &root, &wiki, Some(&crl));
    assert!(!ok, "the revoked certificate verified after the renewal");

    // ---- no private key in the clear in any data dir ----
    let key_der = work.join("root-key.der");
    openssl_ok(
        &cluster,
        &[
            "pkey",
            "-in",
            p(&root_key),
            "-outform",
            "DER",
            "-out",
            p(&key_der),
        ],
    );
    let key_der = std::fs::read(&key_der).unwrap();
    let mut files = Vec::new();
    for d in &data_dirs {
        files_under(d, &mut files);
    }
    let mut saw_root_cert = false;
    let mut bytes_scanned = 0usize;
    for f in &files {
        let Ok(bytes) = std::fs::read(f) else {
            continue;
        };
        bytes_scanned += bytes.len();
        for (what, needle) in [
            ("a PEM private key marker", b"PRIVATE KEY".as_slice()),
            ("a PKCS#8 EC private key", PKCS8_EC_HEADER),
            ("a SEC1 EC private key", SEC1_EC_HEADER),
            ("the exported root key", key_der.as_slice()),
        ] {
            if contains(&bytes, needle) {
                cluster.fail(&format!("{} holds {what} in the clear", f.display()));
            }
        }
        saw_root_cert |= contains(&bytes, b"BEGIN CERTIFICATE");
    }
    assert!(bytes_scanned > 0, "nothing scanned");
    assert!(
        saw_root_cert,
        "the scan found no certificate in {} files: it is not reading the CA state",
        files.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_routes_without_a_workspace() {
    let cluster = TestCluster::start(1).await;
    for path in [
        "/api/v1/ca/fingerprint",
        "/api/v1/ca/root.pem",
        "/api/v1/ca/crl.pem",
    ] {
        let raw = send(cluster.http().get(format!("{}{path}", cluster.url(1)))).await;
        assert_eq!(
            (raw.status, raw.code.as_deref()),
            (503, Some("ca_unavailable")),
            "{path}: {}",
            raw.body
        );
    }
    assert!(
        !cluster.root().join("conclave.kek").exists(),
        "no workspace, no CA: init must not create a KEK"
    );
}
