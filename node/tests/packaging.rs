//! What ops/dist ships about `conclave`: `--version` names the release, the commit (as git
//! says it) and the command version; the completions and man pages the hidden `generate`
//! subcommand writes parse and render; the systemd unit keeps its exposure score low; and, when
//! `$CONCLAVE_DIST` names a build.sh output, the bundle and the .deb hold what they promise.
//!
//! Tools that may be missing on a developer's machine (groff, zsh, fish, systemd-analyze,
//! dpkg-deb) skip their check with a printed reason. `CONCLAVE_DIST` unset skips the bundle
//! check; set (as `.ci/run` does), it must be complete. The shipped config template is checked
//! against docs/configuration.md in `cli.rs`, next to the documented template's own check.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

#[path = "../../build-support/packaging_checks.rs"]
mod packaging_checks;

use packaging_checks::{check_man_renders, check_shell_parses, generate, tool};

#[test]
fn version_names_release_commit_and_command_version() {
    packaging_checks::check_version_line(
        env!("CARGO_BIN_EXE_conclave"),
        "conclave",
        env!("CARGO_PKG_VERSION"),
        env!("CARGO_MANIFEST_DIR"),
        &format!("command version {}", cluster::command::COMMAND_VERSION),
    );
}

#[test]
fn generated_completions_parse_and_man_pages_render() {
    let dir = tempfile::tempdir().unwrap();
    let c = dir.path().join("completions");
    generate(env!("CARGO_BIN_EXE_conclave"), "completions", &c);
    // How each shell's script names a subcommand it completes.
    for (f, join, generate) in [
        ("conclave.bash", "__subcmd__join", "__subcmd__generate"),
        ("_conclave", "'join:", "'generate:"),
        ("conclave.fish", "-a \"join\"", "-a \"generate\""),
    ] {
        let text = std::fs::read_to_string(c.join(f)).unwrap();
        assert!(text.contains(join), "{f} completes the subcommands");
        assert!(
            !text.contains(generate),
            "{f}: the hidden subcommand stays hidden"
        );
    }
    for (shell, file) in [
        ("bash", "conclave.bash"),
        ("zsh", "_conclave"),
        ("fish", "conclave.fish"),
    ] {
        check_shell_parses(shell, &c.join(file));
    }

    let m = dir.path().join("man");
    let listed = generate(env!("CARGO_BIN_EXE_conclave"), "man", &m);
    for page in [
        "conclave.1",
        "conclave-run.1",
        "conclave-init.1",
        "conclave-join.1",
    ] {
        assert!(m.join(page).is_file(), "{page} written");
        assert!(listed.contains(page), "{page} listed on stdout");
    }
    assert!(
        !m.join("conclave-generate.1").exists(),
        "no page for the hidden subcommand"
    );
    check_man_renders(&m.join("conclave-run.1"));
}

#[test]
fn systemd_unit_is_hardened() {
    let unit = repo().join("ops/dist/systemd/conclave.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    for line in [
        "Type=notify",
        "User=conclave",
        "ExecStart=/usr/bin/conclave run --config /etc/conclave/conclave.toml",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/conclave",
    ] {
        assert!(text.lines().any(|l| l == line), "the unit has {line:?}");
    }
    let Some(out) = tool(
        "systemd-analyze",
        &[
            "security",
            "--offline=yes",
            "--no-pager",
            unit.to_str().unwrap(),
        ],
    ) else {
        return;
    };
    let report = String::from_utf8_lossy(&out.stdout);
    let score: f64 = report
        .lines()
        .find_map(|l| l.split_once("Overall exposure level for conclave.service:"))
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no exposure score in {report}"));
    // 1.6 when written (docs/operations.md, "Packaging"); "OK" is below 4.
    assert!(score <= 2.0, "exposure {score}:\n{report}");
}

/// Checks a build.sh output named by `$CONCLAVE_DIST` (skipped when unset).
#[test]
fn dist_bundle_and_deb_hold_what_they_promise() {
    let Some(dist) = std::env::var_os("CONCLAVE_DIST").map(PathBuf::from) else {
        println!("SKIP: CONCLAVE_DIST is not set (run ops/dist/build.sh and point it at --out)");
        return;
    };
    let version = env!("CARGO_PKG_VERSION");
    let name = format!("conclave-{version}-x86_64-linux");
    let deb = format!("conclave_{version}_amd64.deb");
    let tarball = format!("{name}.tar.gz");
    for f in [
        "conclave",
        "conclavectl",
        deb.as_str(),
        tarball.as_str(),
        "SHA256SUMS",
    ] {
        assert!(dist.join(f).is_file(), "{} has {f}", dist.display());
    }
    let sums = Command::new("sha256sum")
        .args(["--check", "--strict", "SHA256SUMS"])
        .current_dir(&dist)
        .output()
        .unwrap();
    assert!(
        sums.status.success(),
        "{}",
        String::from_utf8_lossy(&sums.stdout)
    );
    let sums = std::fs::read_to_string(dist.join("SHA256SUMS")).unwrap();
    assert!(sums.contains(&tarball) && sums.contains(&deb));

    for b in ["conclave", "conclavectl"] {
        if let Some(file) = tool("file", &["-b", dist.join(b).to_str().unwrap()]) {
            let desc = String::from_utf8_lossy(&file.stdout);
            assert!(desc.contains("static"), "{b}: {desc}");
        }
    }
    let version_line = Command::new(dist.join("conclave"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&version_line.stdout)
            .starts_with(&format!("conclave {version} (commit "))
    );

    // The tarball: one top directory with everything, and its own checksums verify.
    let unpacked = tempfile::tempdir().unwrap();
    let tar = Command::new("tar")
        .arg("-xzf")
        .arg(dist.join(&tarball))
        .arg("-C")
        .arg(unpacked.path())
        .status()
        .unwrap();
    assert!(tar.success());
    let top = unpacked.path().join(&name);
    for f in [
        "conclave",
        "conclavectl",
        deb.as_str(),
        "SHA256SUMS",
        "conclave.toml",
        "systemd/conclave.service",
        "backup/conclave-backup.service",
        "backup/conclave-backup.timer",
        "docs/operations.md",
        "docs/configuration.md",
        "completions/conclave.bash",
        "completions/_conclavectl",
        "completions/conclavectl.fish",
        "man/conclave.1",
        "man/conclave-run.1",
        "man/conclavectl.1",
    ] {
        assert!(top.join(f).is_file(), "the bundle has {name}/{f}");
    }
    let inner = Command::new("sha256sum")
        .args(["--check", "--strict", "--quiet", "SHA256SUMS"])
        .current_dir(&top)
        .output()
        .unwrap();
    assert!(
        inner.status.success(),
        "{}",
        String::from_utf8_lossy(&inner.stdout)
    );

    // The .deb: files where Debian expects them, and the maintainer scripts.
    let Some(contents) = tool(
        "dpkg-deb",
        &["--contents", dist.join(&deb).to_str().unwrap()],
    ) else {
        return;
    };
    let listing = String::from_utf8_lossy(&contents.stdout);
    for path in [
        "./usr/bin/conclave",
        "./usr/bin/conclavectl",
        "./usr/lib/systemd/system/conclave.service",
        "./etc/conclave/conclave.toml",
        "./usr/share/man/man1/conclave-run.1.gz",
        "./usr/share/man/man1/conclavectl.1.gz",
        "./usr/share/bash-completion/completions/conclave",
        "./usr/share/zsh/vendor-completions/_conclave",
        "./usr/share/fish/vendor_completions.d/conclavectl.fish",
        "./usr/share/doc/conclave/operations.md",
    ] {
        assert!(
            listing.lines().any(|l| l.ends_with(path)),
            "the .deb has {path}:\n{listing}"
        );
    }
    let info = Command::new("dpkg-deb")
        .args(["--info"])
        .arg(dist.join(&deb))
        .output()
        .unwrap();
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(info.contains(&format!("Version: {version}\n")), "{info}");
    for script in ["postinst", "postrm", "conffiles"] {
        assert!(info.contains(script), "the .deb has {script}:\n{info}");
    }
}
