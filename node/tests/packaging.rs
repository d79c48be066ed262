//! What ops/dist ships about `conclave`: `--version` names the release, the commit (as git
//! says it) and the command version; the completions and man pages the hidden `generate`
//! subcommand writes parse and render; the production config template validates and is the
//! one docs/configuration.md shows; the systemd unit keeps its exposure score low; and, when
//! `$CONCLAVE_DIST` names a build.sh output, the bundle and the .deb hold what they promise.
//!
//! Tools that may be missing on a developer's machine (groff, zsh, fish, systemd-analyze,
//! dpkg-deb) skip their check with a printed reason. `CONCLAVE_DIST` unset skips the bundle
//! check; set (as `.ci/run` does), it must be complete.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn conclave() -> Command {
    Command::new(env!("CARGO_BIN_EXE_conclave"))
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// Runs `program args`; None (with a printed skip) when the program is not installed.
fn tool(program: &str, args: &[&str]) -> Option<std::process::Output> {
    match Command::new(program).args(args).output() {
        Ok(out) => Some(out),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            println!("SKIP part of this test: {program} is not installed");
            None
        }
        Err(e) => panic!("{program}: {e}"),
    }
}

#[test]
fn version_names_release_commit_and_command_version() {
    let out = conclave().arg("--version").output().unwrap();
    assert!(out.status.success());
    let line = String::from_utf8(out.stdout).unwrap();
    let line = line.trim_end();
    // conclave 0.1.0 (commit 2e69964d0a00, command version 6)
    let rest = line
        .strip_prefix(&format!("conclave {} (commit ", env!("CARGO_PKG_VERSION")))
        .unwrap_or_else(|| panic!("{line:?}"));
    let (commit, rest) = rest.split_once(", ").unwrap_or_else(|| panic!("{line:?}"));
    assert_eq!(
        rest,
        format!("command version {})", cluster::command::COMMAND_VERSION),
        "{line:?}"
    );
    let hash = commit.strip_suffix("-dirty").unwrap_or(commit);
    match tool(
        "git",
        &[
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "rev-parse",
            "--short=12",
            "HEAD",
        ],
    ) {
        Some(git) if git.status.success() => {
            assert_eq!(
                hash,
                String::from_utf8_lossy(&git.stdout).trim(),
                "{line:?}"
            );
        }
        _ => assert_eq!(commit, "unknown", "outside git: {line:?}"),
    }
}

#[test]
fn generated_completions_parse_and_man_pages_render() {
    let dir = tempfile::tempdir().unwrap();
    let out = conclave()
        .args(["generate", "completions", "--out"])
        .arg(dir.path().join("completions"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let c = dir.path().join("completions");
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
        let path = c.join(file);
        if let Some(check) = tool(shell, &["-n", path.to_str().unwrap()]) {
            assert!(
                check.status.success(),
                "{shell} -n {file}: {}",
                String::from_utf8_lossy(&check.stderr)
            );
        }
    }

    let out = conclave()
        .args(["generate", "man", "--out"])
        .arg(dir.path().join("man"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = String::from_utf8(out.stdout).unwrap();
    let m = dir.path().join("man");
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
    let run = m.join("conclave-run.1");
    // -ww: every warning; -z: format, discard the output.
    if let Some(groff) = tool(
        "groff",
        &["-man", "-Tutf8", "-ww", "-z", run.to_str().unwrap()],
    ) {
        assert!(groff.status.success());
        assert!(
            groff.stderr.is_empty(),
            "groff warns: {}",
            String::from_utf8_lossy(&groff.stderr)
        );
    }
}

/// The first ```toml block after `heading` in docs/configuration.md.
fn doc_block(heading: &str) -> String {
    let doc = std::fs::read_to_string(repo().join("docs/configuration.md")).unwrap();
    let at = doc.find(heading).unwrap();
    let start = at + doc[at..].find("```toml\n").unwrap() + 8;
    let end = start + doc[start..].find("```").unwrap();
    doc[start..end].to_owned()
}

#[test]
fn shipped_config_template_is_the_documented_one_and_validates() {
    let path = repo().join("ops/dist/conclave.toml");
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
