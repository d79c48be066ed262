//! The `conclave` binary's command line: config errors are one clear line with exit code 2,
//! `--validate` accepts a good file, and `init` refuses to run twice on the same data.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

fn conclave() -> Command {
    Command::new(env!("CARGO_BIN_EXE_conclave"))
}

fn write_config(dir: &Path, extra: &str) -> std::path::PathBuf {
    let path = dir.join("conclave.toml");
    std::fs::write(
        &path,
        format!(
            "node_id = 1\ndata_dir = {:?}\napi_addr = \"127.0.0.1:0\"\ncluster_addr = \"127.0.0.1:1\"\n{extra}",
            dir.join("data")
        ),
    )
    .unwrap();
    path
}

#[test]
fn unknown_field_is_one_line_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "colour = \"blue\"\n");
    let out = conclave()
        .args(["run", "--validate", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("colour"), "{err}");
}

#[test]
fn missing_file_is_reported() {
    let out = conclave()
        .args(["run", "--config", "/nonexistent/conclave.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
}

#[test]
fn valid_config_validates() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "[raft]\nsnapshot_logs_since_last = 100\n");
    let out = conclave()
        .args(["run", "--validate", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn init_creates_once_and_refuses_twice() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "");
    let short = conclave()
        .args(["init", "--admin-password", "short", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!short.status.success());
    assert!(String::from_utf8_lossy(&short.stderr).contains("8 to 128"));

    let first = conclave()
        .args(["init", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let stdout = String::from_utf8_lossy(&first.stdout);
    let pw = stdout
        .lines()
        .find_map(|l| l.strip_prefix("admin password: "))
        .expect("generated password printed");
    assert!(pw.len() >= 16);

    let second = conclave()
        .args(["init", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!second.status.success());
    assert!(String::from_utf8_lossy(&second.stderr).contains("already holds a cluster"));
}
