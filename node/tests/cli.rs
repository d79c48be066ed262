//! The `conclave` binary's command line: config errors are one clear line with exit code 2,
//! `--validate` accepts a good file, `init` refuses to run twice on the same data, and `join`
//! refuses a bad token, an unreachable seed and a used data directory in one line.

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
    let err = String::from_utf8_lossy(&short.stderr);
    assert!(err.contains("12 to 128"), "{err}");

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

#[test]
fn init_creates_the_kek_and_the_ca_and_prints_the_fingerprint() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "workspace = \"chat.cli.test\"\n");
    let out = conclave()
        .args([
            "init",
            "--admin-password",
            "cli-setup-pass-phrase",
            "--config",
        ])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let fp = stdout
        .lines()
        .find_map(|l| l.strip_prefix("root CA SHA-256 fingerprint: "))
        .unwrap_or_else(|| panic!("no fingerprint line in {stdout:?}"));
    // 32 bytes as upper-case hex pairs joined by ':'.
    assert_eq!(fp.len(), 95, "{fp}");
    assert!(fp.split(':').all(|b| {
        b.len() == 2
            && b.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_lowercase())
    }));
    let kek = dir.path().join("conclave.kek");
    assert!(kek.is_file(), "the KEK file is created next to the config");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&kek).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    assert!(
        !stdout.contains("conclave-kek"),
        "the KEK must never be printed"
    );
}

#[test]
fn kek_file_inside_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let kek = dir.path().join("data").join("k");
    let cfg = write_config(
        dir.path(),
        &format!("workspace = \"chat.cli.test\"\n\n[ca]\nkek_file = {kek:?}\n"),
    );
    let out = conclave()
        .args(["run", "--validate", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("inside data_dir"), "{err}");
}

/// `conclave join` refusals that need no cluster: one `conclave: ...` line, exit 1, the token's
/// secret never printed, and nothing written (no KEK, no TLS files).
#[test]
fn join_refusals_are_one_line_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "workspace = \"chat.join.test\"\n");
    let secret = "ef".repeat(32);
    let token = format!(
        "conclave-join:{}:{}:{secret}",
        "ab".repeat(32),
        "cd".repeat(8)
    );
    let run = |token: &str| {
        let out = conclave()
            .args(["join", "--config"])
            .arg(&cfg)
            .args(["--seed", "127.0.0.1:1"])
            .env("CONCLAVE_JOIN_TOKEN", token)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(!err.contains(&secret), "the secret was printed: {err}");
        err.lines()
            .rev()
            .find(|l| l.starts_with("conclave: "))
            .unwrap_or_default()
            .to_owned()
    };
    let last = run("conclave-join:nonsense");
    assert!(last.contains("invalid join token"), "{last}");
    let last = run(&token);
    assert!(last.contains("cannot reach the seed"), "{last}");
    std::fs::create_dir_all(dir.path().join("data").join("log")).unwrap();
    let last = run(&token);
    assert!(last.contains("belongs to a node that ran"), "{last}");
    #[cfg(unix)]
    {
        // A data directory others can reach is refused before the seed is contacted.
        use std::os::unix::fs::PermissionsExt;
        std::fs::remove_dir(dir.path().join("data").join("log")).unwrap();
        let data = dir.path().join("data");
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
        let last = run(&token);
        assert!(last.contains("chmod 700"), "{last}");
    }
    assert!(!dir.path().join("conclave.kek").exists());
    assert!(!dir.path().join("data").join("tls").exists());
}

#[test]
fn dev_refuses_a_weak_admin_password_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    // `conclave dev`'s workspace is chat.conclave.test: a password built from it is refused
    // before anything starts.
    for (password, says) in [
        ("my-conclave-pass", "workspace name"),
        ("elevenchars", "12 to 128"),
        ("1qaz2wsx3edc4rfv", "most common"),
    ] {
        let out = conclave()
            .env_remove("CONCLAVE_ADMIN_PASSWORD")
            .args(["dev", "--admin-password", password, "--data-dir"])
            .arg(dir.path().join("dev"))
            .output()
            .unwrap();
        assert!(!out.status.success(), "{password} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{password}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(!err.contains(password), "the password is echoed: {err}");
        assert!(
            !dir.path().join("dev").exists(),
            "{password}: the data dir was created"
        );
    }
}

/// The `toml` block that follows `heading` in docs/configuration.md.
fn doc_block(heading: &str) -> String {
    let doc = include_str!("../../docs/configuration.md");
    let at = doc
        .find(heading)
        .unwrap_or_else(|| panic!("docs/configuration.md has no {heading:?}"));
    let start = at + doc[at..].find("```toml\n").expect("a toml block") + 8;
    let end = start + doc[start..].find("```").expect("closing fence");
    doc[start..end].to_owned()
}

/// The documented production template and the full example pass `conclave run --validate` as
/// they are, so the docs and the code cannot drift: both have TLS on, on LAN addresses.
#[test]
fn documented_production_template_validates() {
    for heading in ["## Production template", "## Example (every field"] {
        let dir = tempfile::tempdir().unwrap();
        let text = doc_block(heading);
        assert!(text.contains("[tls]"), "{heading}: TLS on");
        let path = dir.path().join("conclave.toml");
        std::fs::write(&path, &text).unwrap();
        let out = conclave()
            .args(["run", "--validate", "--config"])
            .arg(&path)
            .env_remove("CONCLAVE_INSECURE_PLAINTEXT")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{heading}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The same file without [tls] is refused: it is TLS that makes it valid.
        let plain = text.split("\n[tls]").next().unwrap_or_default().to_owned();
        std::fs::write(&path, plain).unwrap();
        let out = conclave()
            .args(["run", "--validate", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{heading} without [tls]");
    }
}

/// The template ops/dist ships (the .deb's /etc/conclave/conclave.toml) is the documented one.
#[test]
fn shipped_config_template_is_the_documented_one_and_validates() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../ops/dist/conclave.toml");
    let shipped: toml::Value = toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let documented: toml::Value = toml::from_str(&doc_block("## Production template")).unwrap();
    assert_eq!(
        shipped, documented,
        "ops/dist/conclave.toml and the production template in docs/configuration.md differ"
    );
    let out = conclave()
        .args(["run", "--validate", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `run`, `init` and `join` refuse plain HTTP on a non-loopback address in one line naming the
/// setting, before touching the data directory; `insecure_plaintext = true` lets it validate.
#[test]
fn lan_address_without_tls_is_one_line_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("127.0.0.1:1", "10.11.12.13:9080");
    std::fs::write(&cfg, &text).unwrap();
    for args in [
        &["run", "--config"][..],
        &["run", "--validate", "--config"],
        &["init", "--config"],
    ] {
        let out = conclave().args(args).arg(&cfg).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.contains("cluster_addr 10.11.12.13:9080 is not a loopback address")
                && err.contains("insecure_plaintext = true"),
            "{args:?}: {err}"
        );
    }
    assert!(!dir.path().join("data").exists(), "nothing was created");
    std::fs::write(&cfg, format!("insecure_plaintext = true\n{text}")).unwrap();
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

/// `init` leaves an owner-only data directory (0700 directories, 0600 files: sled's files
/// included) whatever the caller's umask, and a node refuses a data directory others can reach.
#[cfg(unix)]
#[test]
fn data_dir_is_owner_only_and_a_shared_one_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "workspace = \"chat.cli.test\"\n");
    let out = conclave()
        .args([
            "init",
            "--admin-password",
            "cli-superuser-secret",
            "--config",
        ])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let data = dir.path().join("data");
    let mut seen = 0;
    let mut stack = vec![data.clone()];
    while let Some(p) = stack.pop() {
        let meta = std::fs::symlink_metadata(&p).unwrap();
        let mode = meta.permissions().mode() & 0o777;
        assert_eq!(mode & 0o077, 0, "{} has mode {mode:o}", p.display());
        seen += 1;
        if meta.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        }
    }
    assert!(
        seen > 5,
        "init wrote the log, sled's files and tls/ ({seen} entries)"
    );
    assert_eq!(
        std::fs::metadata(&data).unwrap().permissions().mode() & 0o777,
        0o700
    );

    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = conclave()
        .args(["init", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err
        .lines()
        .rev()
        .find(|l| l.starts_with("conclave: "))
        .unwrap_or_default();
    assert!(
        last.contains("has mode 755") && last.contains("chmod 700"),
        "{err}"
    );
}
