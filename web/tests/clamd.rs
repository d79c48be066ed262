//! The clamd client against a REAL ClamAV daemon (Debian's `clamav-daemon`).
//!
//! No signature database can be downloaded here (nor at an air-gapped site, which imports its
//! own), so the test gives clamd a database of its own: a `.hdb` made by `sigtool --md5` from
//! the EICAR test file, in a temp dir next to clamd's config and socket. clamd runs in the
//! foreground as a child of the test and is killed at the end (or on a panic).
//!
//! Checked: EICAR is `Infected` with our signature's name, a clean file is `Clean`, a file over
//! clamd's `StreamMaxLength` is `ScanSizeLimit`, and an absent socket (and a daemon that died)
//! is `ScannerUnavailable`.
//!
//! Needs `clamd` and `sigtool` (`apt-get install -y clamav-daemon clamav`). Without them the
//! test prints why and passes, unless `CHAOS_REQUIRE_CLAMD=1` (`.ci/run` sets it).
#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use web::files_inspect::{InspectError, ScanVerdict, scan_file};

/// The in-process router fixture of the route tests, for the upload-route test below.
#[allow(dead_code)]
#[path = "routes/harness.rs"]
mod harness;

/// The EICAR anti-malware test file (68 bytes), in two halves so this source file is not
/// itself the test string.
fn eicar() -> Vec<u8> {
    let a = r"X5O!P%@AP[4\PZX54(P^)7CC)7}$";
    let b = "EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";
    format!("{a}{b}").into_bytes()
}

/// Signature name written into the test database.
const SIGNATURE: &str = "Conclave-Test-EICAR";

fn find(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A clamd child process; killed and reaped on drop.
struct Clamd {
    child: Child,
    log: PathBuf,
}

impl Drop for Clamd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Clamd {
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

/// Writes the database and config into `dir` and starts clamd; returns once it accepts
/// connections on `dir/clamd.sock`.
async fn start_clamd(clamd: &Path, sigtool: &Path, dir: &Path) -> Clamd {
    let db = dir.join("db");
    std::fs::create_dir_all(&db).unwrap();
    std::fs::write(dir.join("eicar.com"), eicar()).unwrap();
    let out = Command::new(sigtool)
        .arg("--md5")
        .arg("eicar.com")
        .current_dir(dir)
        .output()
        .expect("run sigtool");
    assert!(out.status.success(), "sigtool --md5: {out:?}");
    // `md5:size:name`: keep the hash and size, name the signature ourselves.
    let line = String::from_utf8(out.stdout).unwrap();
    let mut fields = line.trim().split(':');
    let (md5, size) = (fields.next().unwrap(), fields.next().unwrap());
    assert_eq!(md5.len(), 32, "sigtool printed {line:?}");
    assert_eq!(size, "68", "sigtool printed {line:?}");
    std::fs::write(
        db.join("conclave-test.hdb"),
        format!("{md5}:{size}:{SIGNATURE}\n"),
    )
    .unwrap();

    let sock = dir.join("clamd.sock");
    let log = dir.join("clamd.log");
    let conf = dir.join("clamd.conf");
    std::fs::write(
        &conf,
        format!(
            "LocalSocket {}\nDatabaseDirectory {}\nTemporaryDirectory {}\nLogFile {}\n\
             Foreground yes\nStreamMaxLength 1M\nMaxThreads 2\nSelfCheck 0\n",
            sock.display(),
            db.display(),
            dir.display(),
            log.display(),
        ),
    )
    .unwrap();
    let child = Command::new(clamd)
        .arg("-c")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn clamd");
    let mut daemon = Clamd { child, log };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if tokio::net::UnixStream::connect(&sock).await.is_ok() {
            return daemon;
        }
        if let Ok(Some(status)) = daemon.child.try_wait() {
            panic!(
                "clamd exited with {status} before listening:\n{}",
                daemon.log_tail()
            );
        }
        if Instant::now() > deadline {
            panic!(
                "clamd not listening on {} after 60 s:\n{}",
                sock.display(),
                daemon.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// clamd and sigtool, or `None` after saying why the test is skipped (a failure instead with
/// `CHAOS_REQUIRE_CLAMD=1`).
fn clamd_tools() -> Option<(PathBuf, PathBuf)> {
    let (Some(clamd), Some(sigtool)) = (find("clamd"), find("sigtool")) else {
        if std::env::var("CHAOS_REQUIRE_CLAMD").is_ok_and(|v| v == "1") {
            panic!(
                "CHAOS_REQUIRE_CLAMD=1 but clamd or sigtool is not installed (apt-get install -y clamav-daemon clamav)"
            );
        }
        eprintln!(
            "SKIPPED clamd test: clamd or sigtool not found (apt-get install -y clamav-daemon \
             clamav; with CHAOS_REQUIRE_CLAMD=1 the test fails instead)"
        );
        return None;
    };
    Some((clamd, sigtool))
}

#[tokio::test]
async fn scans_with_a_real_clamd() {
    let Some((clamd, sigtool)) = clamd_tools() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let daemon = start_clamd(&clamd, &sigtool, dir.path()).await;
    let sock = dir.path().join("clamd.sock");
    let files = tempfile::tempdir().unwrap();

    let infected = files.path().join("upload-1");
    std::fs::write(&infected, eicar()).unwrap();
    match scan_file(&sock, &infected).await {
        // clamd marks signatures from a database it did not get from ClamAV as `.UNOFFICIAL`.
        Ok(ScanVerdict::Infected(name)) => {
            assert!(name.starts_with(SIGNATURE), "signature {name:?}")
        }
        other => panic!("EICAR: {other:?}\n{}", daemon.log_tail()),
    }

    let clean = files.path().join("upload-2");
    std::fs::write(
        &clean,
        b"quarterly report, nothing to see here\n".repeat(3000),
    )
    .unwrap();
    match scan_file(&sock, &clean).await {
        Ok(ScanVerdict::Clean) => {}
        other => panic!("clean file: {other:?}\n{}", daemon.log_tail()),
    }

    // Over StreamMaxLength (1 MiB here): clamd says so, possibly while we are still writing.
    let big = files.path().join("upload-3");
    std::fs::write(&big, vec![b'a'; 3 * 1024 * 1024]).unwrap();
    match scan_file(&sock, &big).await {
        Err(InspectError::ScanSizeLimit) => {}
        other => panic!(
            "file over StreamMaxLength: {other:?}\n{}",
            daemon.log_tail()
        ),
    }

    // The daemon still works after that.
    match scan_file(&sock, &infected).await {
        Ok(ScanVerdict::Infected(_)) => {}
        other => panic!("EICAR again: {other:?}\n{}", daemon.log_tail()),
    }

    // No socket at that path.
    match scan_file(&files.path().join("absent.sock"), &clean).await {
        Err(InspectError::ScannerUnavailable { .. }) => {}
        other => panic!("absent socket: {other:?}"),
    }

    // The daemon dies: its socket file stays behind, nothing listens.
    drop(daemon);
    match scan_file(&sock, &clean).await {
        Err(InspectError::ScannerUnavailable { .. }) => {}
        other => panic!("dead daemon: {other:?}"),
    }
}

/// The upload route with scanning on and a real clamd: EICAR is refused with 422
/// `malware_detected` and writes nothing (no message, no file); a clean file goes through. With
/// the daemon gone, `block` refuses with 503 `scanner_unavailable`, also writing nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_route_refuses_eicar_when_scanning() {
    use axum::http::StatusCode;
    use sha2::Digest;
    let Some((clamd, sigtool)) = clamd_tools() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let daemon = start_clamd(&clamd, &sigtool, dir.path()).await;
    let mut config = web::ApiConfig::default();
    config.files.scan = web::files_config::ScanMode::Block;
    config.files.clamd_socket = dir.path().join("clamd.sock");
    let h = harness::Harness::start_with(config).await;
    let alice = h.member("alice").await;
    h.channel(&alice, "inbox", "public").await;
    let post = |name: &'static str, bytes: Vec<u8>| {
        let h = &h;
        let alice = alice.clone();
        async move {
            let sha = hex::encode(sha2::Sha256::digest(&bytes));
            let r = h
                .raw(
                    "PUT",
                    &format!("/api/v1/blobs/{sha}"),
                    Some(&alice),
                    Some(("application/octet-stream", bytes.clone())),
                )
                .await;
            assert_eq!(r.status, StatusCode::CREATED, "chunk: {}", r.json);
            h.call(
                "POST",
                "/api/v1/channels/inbox/files",
                Some(&alice),
                Some(serde_json::json!({
                    "name": name, "size": bytes.len(), "sha256": sha, "chunks": [sha],
                    "body": "", "client_msg_id": format!("scan-{name}"),
                })),
            )
            .await
        }
    };
    let before = h.messages(&alice, "inbox").await.len();
    let r = post("eicar.com", eicar()).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.json);
    assert_eq!(r.json["error"]["code"], "malware_detected", "{}", r.json);
    assert_eq!(
        h.messages(&alice, "inbox").await.len(),
        before,
        "EICAR wrote a message"
    );
    let r = post("report.txt", b"quarterly numbers\n".repeat(100)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    drop(daemon);
    let r = post("later.txt", b"written while the scanner is down\n".to_vec()).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.json);
    assert_eq!(r.json["error"]["code"], "scanner_unavailable", "{}", r.json);
    assert_eq!(h.messages(&alice, "inbox").await.len(), before + 1);
}
